//! `lacquer::cache::tags::response_tags` (and `split_tags`) on fuzzed tag headers, with the
//! default `purge.tag_headers` (`surrogate-key`, `xkey`, `cache-tag`).
//!
//! Input: text lines `name: value` (values may hold any octets a header value allows); lines
//! that are not a valid header are skipped.
//!
//! Properties (beyond "never panics"):
//! - At most `MAX_TAGS` tags; each is non-empty, at most `MAX_TAG_LEN` bytes, visible ASCII (no
//!   whitespace, no comma); no tag twice.
//! - Exactly the valid tags of the configured headers, de-duplicated, in header order, cut at
//!   `MAX_TAGS` (computed here independently): nothing valid is lost below the limit.
//! - Every tag `split_tags` yields is non-empty and trimmed.
#![no_main]

use lacquer::cache::tags::{response_tags, split_tags, MAX_TAGS, MAX_TAG_LEN};
use lacquer::config::raw::default_tag_headers;
use libfuzzer_sys::fuzz_target;
use pingora_http::ResponseHeader;

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b' ' && *b != b'\t');
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(start);
    &v[start..=end]
}

/// The expected tags, from the documented rules alone.
fn expected(resp: &ResponseHeader, names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let comma_only = name == "cache-tag";
        for value in resp.headers.get_all(name.as_str()) {
            // only values of visible ASCII, spaces and tabs are read
            let bytes = value.as_bytes();
            if !bytes
                .iter()
                .all(|b| (0x20..0x7f).contains(b) || *b == b'\t')
            {
                continue;
            }
            let text = String::from_utf8_lossy(bytes);
            let candidates =
                text.split(|c: char| c == ',' || (!comma_only && (c == ' ' || c == '\t')));
            for t in candidates {
                let t = t.trim_matches(|c: char| c == ' ' || c == '\t');
                let valid = !t.is_empty()
                    && t.len() <= MAX_TAG_LEN
                    && t.bytes().all(|b| b.is_ascii_graphic());
                if valid && !out.iter().any(|x| x == t) {
                    out.push(t.to_string());
                }
            }
        }
    }
    out.truncate(MAX_TAGS);
    out
}

fuzz_target!(|data: &[u8]| {
    // the default purge.tag_headers, lower-cased as Config stores them
    let names: Vec<String> = default_tag_headers()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let Ok(mut resp) = ResponseHeader::build(200, None) else {
        return;
    };
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Ok(name) = http::HeaderName::from_bytes(trim_ows(&line[..colon])) else {
            continue;
        };
        let Ok(value) = http::HeaderValue::from_bytes(trim_ows(&line[colon + 1..])) else {
            continue;
        };
        if resp.append_header(name, value).is_err() {
            return;
        }
    }

    for name in &names {
        for value in resp.headers.get_all(name.as_str()) {
            if let Ok(v) = value.to_str() {
                for t in split_tags(name, v) {
                    assert!(!t.is_empty(), "empty split from {v:?}");
                    assert_eq!(t, t.trim(), "untrimmed split from {v:?}");
                }
            }
        }
    }

    let tags = response_tags(&resp, &names);
    assert!(tags.len() <= MAX_TAGS, "{} tags", tags.len());
    for (i, t) in tags.iter().enumerate() {
        assert!(!t.is_empty(), "empty tag");
        assert!(t.len() <= MAX_TAG_LEN, "tag of {} bytes", t.len());
        assert!(
            t.bytes().all(|b| b.is_ascii_graphic()) && !t.contains(','),
            "tag {t:?} has whitespace, a comma or a non-ASCII byte"
        );
        assert!(!tags[..i].contains(t), "tag {t:?} twice");
    }
    let got: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        got,
        expected(&resp, &names),
        "tags differ from the documented rules"
    );
});
