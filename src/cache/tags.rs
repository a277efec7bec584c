//! Tags (surrogate keys) a response gives itself: `Surrogate-Key` (Fastly) and `xkey` (Varnish)
//! are space separated, `Cache-Tag` (Cloudflare) is comma separated. Which headers are read is
//! `purge.tag_headers`. At most [`MAX_TAGS`] tags of at most [`MAX_TAG_LEN`] bytes are kept per
//! object, so no response can make the tag index grow without bound.

use pingora_http::ResponseHeader;

/// Tags kept per object; further tags are ignored.
pub const MAX_TAGS: usize = 64;
/// Longest tag kept; longer ones are ignored.
pub const MAX_TAG_LEN: usize = 128;

/// Split one tag header value. `cache-tag` is comma separated, every other header space (or
/// comma) separated.
pub fn split_tags<'a>(header: &str, value: &'a str) -> impl Iterator<Item = &'a str> {
    let comma_only = header.eq_ignore_ascii_case("cache-tag");
    value
        .split(move |c: char| c == ',' || (!comma_only && c.is_ascii_whitespace()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether `tag` can be stored and purged: visible ASCII, at most [`MAX_TAG_LEN`] bytes.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= MAX_TAG_LEN && tag.bytes().all(|b| b.is_ascii_graphic())
}

/// The tags of a response, de-duplicated, in header order.
pub fn response_tags(resp: &ResponseHeader, headers: &[String]) -> Vec<Box<str>> {
    let mut tags: Vec<Box<str>> = Vec::new();
    for name in headers {
        for v in resp.headers.get_all(name.as_str()) {
            let Ok(v) = v.to_str() else { continue };
            for t in split_tags(name, v) {
                if tags.len() >= MAX_TAGS {
                    return tags;
                }
                if valid_tag(t) && !tags.iter().any(|x| &**x == t) {
                    tags.push(t.into());
                }
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["surrogate-key".into(), "xkey".into(), "cache-tag".into()]
    }

    fn tags(headers: &[(&str, &str)]) -> Vec<String> {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        response_tags(&r, &names())
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn each_header_has_its_separator() {
        assert_eq!(tags(&[("Surrogate-Key", "a b  c")]), vec!["a", "b", "c"]);
        assert_eq!(tags(&[("xkey", "post-1 front")]), vec!["post-1", "front"]);
        assert_eq!(tags(&[("Cache-Tag", "a,b , c")]), vec!["a", "b", "c"]);
        assert_eq!(
            tags(&[
                ("Surrogate-Key", "a b"),
                ("xkey", "b c"),
                ("Cache-Tag", "c,d")
            ]),
            vec!["a", "b", "c", "d"]
        );
        assert!(tags(&[("X-Other", "a")]).is_empty());
    }

    #[test]
    fn limits_hold() {
        let many: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        assert_eq!(tags(&[("xkey", &many.join(" "))]).len(), MAX_TAGS);
        let long = "x".repeat(MAX_TAG_LEN + 1);
        assert_eq!(tags(&[("xkey", &format!("{long} ok"))]), vec!["ok"]);
    }
}
