//! Bans, Varnish's semantics: a set of conditions (regular expressions, unanchored) that every
//! object stored before the ban is tested against; the ones that match are purged. A ban takes
//! effect at once for every lookup (the storage checks the outstanding bans on a hit) while a
//! background sweep removes the matches and then retires it, so a ban on a big cache never
//! stalls a hit (see `storage/purge.rs`).
//!
//! Not here: reading a ban off a client's request (`purge/wire.rs`).

use pingora_http::ResponseHeader;
use regex::Regex;

/// The most compiled-program memory one pattern may take: a client's pattern must not be able
/// to take the process's memory (the `regex` crate refuses larger ones).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Compile a client's pattern as Varnish would use it: unanchored, case-sensitive.
pub fn pattern(text: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(text)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression {text:?}: {e}"))
}

/// Every condition of one ban; an absent condition holds for every object (the default:
/// a ban on everything).
#[derive(Debug, Clone, Default)]
pub struct Ban {
    /// The host of the object's URL (Varnish's `req.http.host`).
    pub host: Option<Regex>,
    /// Its path and query (`req.url`).
    pub url: Option<Regex>,
    /// Its `Content-Type`.
    pub content_type: Option<Regex>,
    /// Response header fields (lower-case names) and what their value must match.
    pub headers: Vec<(String, Regex)>,
    /// Its tags: one of them must match.
    pub tags: Option<Regex>,
}

impl PartialEq for Ban {
    fn eq(&self, other: &Ban) -> bool {
        let text = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_string());
        text(&self.host) == text(&other.host)
            && text(&self.url) == text(&other.url)
            && text(&self.content_type) == text(&other.content_type)
            && text(&self.tags) == text(&other.tags)
            && self.headers.len() == other.headers.len()
            && self
                .headers
                .iter()
                .zip(&other.headers)
                .all(|((a, x), (b, y))| a == b && x.as_str() == y.as_str())
    }
}

impl Eq for Ban {}

impl Ban {
    /// Whether the ban looks at response header fields (which cost a decode of the stored
    /// header to test).
    pub fn needs_header(&self) -> bool {
        self.content_type.is_some() || !self.headers.is_empty()
    }

    /// What the ban holds in memory, its patterns' text included (for the purge log's bound).
    pub fn text_bytes(&self) -> usize {
        let len = |r: &Option<Regex>| r.as_ref().map_or(0, |r| r.as_str().len());
        len(&self.host)
            + len(&self.url)
            + len(&self.content_type)
            + len(&self.tags)
            + self
                .headers
                .iter()
                .map(|(n, r)| n.len() + r.as_str().len())
                .sum::<usize>()
    }

    /// Whether an object with primary key `url` (`scheme://host/path?query`), `tags` and
    /// response `header` matches. `header` is asked for only when a condition needs it.
    pub fn matches(
        &self,
        url: &str,
        tags: &[Box<str>],
        header: impl FnOnce() -> Option<ResponseHeader>,
    ) -> bool {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if self.host.as_ref().is_some_and(|r| !r.is_match(host)) {
            return false;
        }
        if self.url.as_ref().is_some_and(|r| !r.is_match(path)) {
            return false;
        }
        if let Some(r) = &self.tags {
            if !tags.iter().any(|t| r.is_match(t)) {
                return false;
            }
        }
        if !self.needs_header() {
            return true;
        }
        let Some(header) = header() else {
            return false;
        };
        let value = |name: &str| {
            header
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(r) = &self.content_type {
            if !r.is_match(&value("content-type")) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, r)| header.headers.contains_key(name.as_str()) && r.is_match(&value(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban() -> Ban {
        Ban::default()
    }

    #[test]
    fn conditions_are_unanchored_and_all_must_hold() {
        let no_header = || None;
        let tags: Vec<Box<str>> = vec!["node:10".into(), "front".into()];
        let b = Ban {
            url: Some(pattern("/blog/").unwrap()),
            ..ban()
        };
        assert!(b.matches("http://a.test/en/blog/1?x", &[], no_header));
        assert!(!b.matches("http://a.test/en/news/1", &[], no_header));
        let b = Ban {
            host: Some(pattern("^a\\.test$").unwrap()),
            tags: Some(pattern("node:1").unwrap()),
            ..ban()
        };
        assert!(
            b.matches("https://a.test/", &tags, no_header),
            "node:1 matches node:10"
        );
        assert!(!b.matches("https://b.test/", &tags, no_header));
        assert!(!b.matches("https://a.test/", &[], no_header));
    }

    #[test]
    fn header_conditions_read_the_stored_header() {
        let b = Ban {
            content_type: Some(pattern("^image/").unwrap()),
            headers: vec![("x-pool".into(), pattern("^blog$").unwrap())],
            ..ban()
        };
        let header = |ct: &str, pool: Option<&str>| {
            let mut h = ResponseHeader::build(200, None).unwrap();
            h.insert_header("Content-Type", ct).unwrap();
            if let Some(p) = pool {
                h.insert_header("X-Pool", p).unwrap();
            }
            Some(h)
        };
        assert!(b.matches("http://a/", &[], || header("image/png", Some("blog"))));
        assert!(!b.matches("http://a/", &[], || header("text/html", Some("blog"))));
        assert!(!b.matches("http://a/", &[], || header("image/png", None)));
        assert!(pattern("(").is_err());
    }
}
