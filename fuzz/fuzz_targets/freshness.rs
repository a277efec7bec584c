//! `lacquer::cache::freshness::assess` on fuzzed response headers.
//!
//! Input, as text lines (bytes after the first line may be any octets a header value allows):
//!
//! ```text
//! 200 60            <- status, then an optional heuristic TTL in seconds (cache.default_ttl)
//! Cache-Control: max-age=5
//! Expires: Thu, 01 Jan 2026 00:00:00 GMT
//! ```
//!
//! Lines that are not `name: value` with a valid name and value are skipped; a value has its
//! surrounding spaces and tabs removed, as an HTTP/1 parser would.
//!
//! Properties (beyond "never panics"):
//! - 1xx, 206, 304, `Set-Cookie`, `Vary: *` and a too large `Content-Length` are never stored.
//! - The governing field is `CDN-Cache-Control` when it is a valid Structured Field Dictionary
//!   (read here with `sfv`: not empty, each lifetime directive a non-negative Integer; RFC 9213
//!   section 2.1), else `Cache-Control`, whose reading here needs plain `token` /
//!   `token=token` directives only. Read that way, it must agree:
//!   `no-store` or a bare `private` is never stored; a bare `no-cache` stores with lifetime 0;
//!   the lifetime never exceeds the first `s-maxage` (else the first `max-age`; RFC 9111
//!   section 4.2.1: a duplicated directive means "use the first" or "stale"; a Dictionary
//!   keeps one of each), an invalid value allows 0; without either, it never exceeds
//!   `Expires - Date` (0 when `Expires` is duplicated or cannot be a date at all; not checked
//!   when `Expires` or `Date` is in a form or case `httpdate` refuses, which lacquer reads by
//!   rules of its own: obsolete forms, any case, RFC 9110 section 5.6.7), and without any,
//!   only the heuristic TTL of a heuristically
//!   cacheable status; `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid stale
//!   windows, and a stale window never exceeds the first `stale-while-revalidate` /
//!   `stale-if-error` value (0 when invalid), or the configured default when there is none.
//! - `Age`: absent is 0; a value of digits only is honoured, and one too large for the
//!   cache's arithmetic counts as at least 2^31 seconds (RFC 9111 section 1.2.2), never as 0.
#![no_main]

use std::time::{Duration, SystemTime};

use lacquer::cache::freshness::{assess, FreshnessDefaults, Storability};
use libfuzzer_sys::fuzz_target;
use pingora_http::ResponseHeader;

/// RFC 9111 section 1.2.2: a delta-seconds too large to represent counts as 2^31 (pingora uses
/// 2^31 - 1) or the greatest value the cache can represent, so an `Age` at least this large
/// must be read as at least this.
const DELTA_OVERFLOW: u64 = i32::MAX as u64;
const MAX_OBJECT_SIZE: u64 = 1 << 20;
const DEFAULT_SWR: u32 = 7;
const DEFAULT_SIE: u32 = 11;

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b' ' && *b != b'\t');
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(start);
    &v[start..=end]
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One directive of a plain field: lower-cased name and optional value.
type Directive = (String, Option<String>);

/// The directives of a field when every list member is `token` or `token=token`; `None` when
/// any member is something else (quoted strings, spaces inside a member, ...).
fn plain_directives(lines: &[&[u8]]) -> Option<Vec<Directive>> {
    let mut out = Vec::new();
    for line in lines {
        for member in line.split(|b| *b == b',' || *b == b';') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let (name, value) = match member.iter().position(|b| *b == b'=') {
                Some(i) => (&member[..i], Some(&member[i + 1..])),
                None => (member, None),
            };
            if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                return None;
            }
            if let Some(v) = value {
                if v.is_empty() || !v.iter().all(|b| is_tchar(*b)) {
                    return None;
                }
            }
            let name = String::from_utf8(name.to_ascii_lowercase()).ok()?;
            let value = value.map(|v| String::from_utf8_lossy(v).into_owned());
            out.push((name, value));
        }
    }
    Some(out)
}

/// delta-seconds (RFC 9111 section 1.2.2): digits only, saturating; anything else is invalid.
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::MAX))
}

/// The lifetime directives: in a targeted field, non-negative Integers or the field is invalid.
const LIFETIMES: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// `CDN-Cache-Control` read with `sfv`, when it governs (present, a non-empty Dictionary, the
/// lifetimes non-negative Integers): each key with its Integer, String or Token value.
fn targeted_directives(lines: &[&[u8]]) -> Option<Vec<Directive>> {
    if lines.is_empty() {
        return None;
    }
    let dict = sfv::Parser::parse_dictionary(&lines.join(&b", "[..])).ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (key, member) in dict {
        let bare = match member {
            sfv::ListEntry::Item(i) => Some(i.bare_item),
            sfv::ListEntry::InnerList(_) => None,
        };
        let lifetime = LIFETIMES.contains(&key.as_str());
        let value = match bare {
            Some(sfv::BareItem::Integer(n)) if lifetime && n >= 0 => Some(n.to_string()),
            _ if lifetime => return None,
            Some(sfv::BareItem::String(v) | sfv::BareItem::Token(v)) => Some(v),
            _ => None,
        };
        out.push((key, value));
    }
    Some(out)
}

/// What a date field allows the oracle to say: `Some(Some(t))` for an IMF-fixdate `httpdate`
/// reads, `Some(None)` for a value that cannot be an HTTP-date in any form (its length fits
/// none), `None` for anything else (an obsolete form, another case), which is not checked.
fn http_date(v: &[u8]) -> Option<Option<SystemTime>> {
    let text = std::str::from_utf8(v).ok().map(str::trim);
    let len = text.map_or(v.len(), str::len);
    match text.and_then(|t| httpdate::parse_http_date(t).ok()) {
        Some(t) if len == 29 => Some(Some(t)),
        // asctime is 24 bytes, IMF-fixdate 29, RFC 850 30 to 33
        _ if len != 24 && !(29..=33).contains(&len) => Some(None),
        _ => None,
    }
}

fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let first = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("");
    let mut words = first.split_ascii_whitespace();
    let status: u16 = words.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let default_ttl: Option<u64> = words.next().and_then(|s| s.parse().ok());
    let Ok(mut resp) = ResponseHeader::build(status, None) else {
        return;
    };
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = trim_ows(&line[..colon]);
        let value = trim_ows(&line[colon + 1..]);
        let Ok(name) = http::HeaderName::from_bytes(name) else {
            continue;
        };
        let Ok(value) = http::HeaderValue::from_bytes(value) else {
            continue;
        };
        if resp.append_header(name, value).is_err() {
            return;
        }
    }

    let defaults = FreshnessDefaults {
        default_ttl: default_ttl.map(Duration::from_secs),
        stale_while_revalidate: Duration::from_secs(DEFAULT_SWR.into()),
        stale_if_error: Duration::from_secs(DEFAULT_SIE.into()),
        max_object_size: MAX_OBJECT_SIZE,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let outcome = assess(&resp, &defaults, now);
    let Storability::Store(fresh) = outcome else {
        return;
    };

    // --- refusals that do not depend on Cache-Control
    let h = &resp.headers;
    assert!(
        !(status < 200 || status == 206 || status == 304),
        "status {status} stored: {fresh:?}"
    );
    assert!(!h.contains_key("set-cookie"), "Set-Cookie stored");
    let vary_star = h.get_all("vary").iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    });
    assert!(!vary_star, "Vary: * stored");
    if let Some(len) = h
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        assert!(len <= MAX_OBJECT_SIZE, "Content-Length {len} stored");
    }

    // --- Age
    match h.get("age") {
        None => assert_eq!(fresh.initial_age, Duration::ZERO, "Age absent"),
        Some(v) => {
            let text = std::str::from_utf8(v.as_bytes()).unwrap_or("").trim();
            if let Some(age) = delta_seconds(text) {
                let age = age.min(DELTA_OVERFLOW);
                assert!(
                    fresh.initial_age.as_secs() >= age,
                    "Age {text:?} read as {:?}",
                    fresh.initial_age
                );
            }
        }
    }

    // --- the governing directives, read independently when they are plain
    let cdn_lines: Vec<&[u8]> = h
        .get_all("cdn-cache-control")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let targeted = targeted_directives(&cdn_lines);
    let field = if targeted.is_some() {
        "cdn-cache-control"
    } else {
        "cache-control"
    };
    let directives = match targeted {
        Some(d) => d,
        None => {
            let lines: Vec<&[u8]> = h.get_all(field).iter().map(|v| v.as_bytes()).collect();
            let Some(d) = plain_directives(&lines) else {
                return;
            };
            d
        }
    };
    let targeted = field == "cdn-cache-control";
    let has = |n: &str| directives.iter().any(|(k, _)| k == n);
    let bare = |n: &str| directives.iter().any(|(k, v)| k == n && v.is_none());
    let first = |n: &str| directives.iter().find(|(k, _)| k == n).map(|(_, v)| v);
    let lifetime = fresh.lifetime.as_secs();
    let ctx = || format!("{field}: {directives:?} -> {fresh:?}");

    assert!(!has("no-store"), "no-store stored: {}", ctx());
    assert!(!bare("private"), "bare private stored: {}", ctx());
    if bare("no-cache") {
        assert_eq!(
            lifetime,
            0,
            "bare no-cache stored with a lifetime: {}",
            ctx()
        );
    }
    if has("must-revalidate") || has("proxy-revalidate") || has("s-maxage") {
        assert_eq!(
            (fresh.stale_while_revalidate, fresh.stale_if_error),
            (0, 0),
            "stale allowed despite a directive forbidding it: {}",
            ctx()
        );
    }

    for (name, got, default) in [
        (
            "stale-while-revalidate",
            fresh.stale_while_revalidate,
            DEFAULT_SWR,
        ),
        ("stale-if-error", fresh.stale_if_error, DEFAULT_SIE),
    ] {
        let bound = match first(name) {
            Some(Some(value)) => delta_seconds(value).unwrap_or(0),
            _ => u64::from(default),
        };
        assert!(
            u64::from(got) <= bound,
            "{name} window {got}s exceeds what the headers allow ({bound}s): {}",
            ctx()
        );
    }

    let explicit = first("s-maxage").or_else(|| first("max-age"));
    let bound = if let Some(value) = explicit {
        value.as_deref().and_then(delta_seconds).unwrap_or(0)
    } else if !targeted && h.contains_key("expires") {
        let expires: Vec<_> = h.get_all("expires").iter().collect();
        let date = match h.get("date").map(|d| http_date(d.as_bytes())) {
            None | Some(Some(None)) => Some(now),
            Some(Some(Some(d))) => Some(d),
            Some(None) => None,
        };
        match (expires.len(), http_date(expires[0].as_bytes()), date) {
            (1, Some(Some(at)), Some(date)) => at.duration_since(date).map_or(0, |d| d.as_secs()),
            (1, None, _) | (1, _, None) => return,
            _ => 0,
        }
    } else if bare("no-cache") {
        0
    } else {
        assert!(
            heuristically_cacheable(status) && default_ttl.is_some(),
            "stored without any lifetime: status {status}, {}",
            ctx()
        );
        default_ttl.unwrap_or(0)
    };
    assert!(
        lifetime <= bound,
        "lifetime {lifetime}s exceeds what the headers allow ({bound}s): {}",
        ctx()
    );
});
