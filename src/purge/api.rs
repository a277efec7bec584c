//! The admin API's `POST /purge` body: `{"urls": [...], "tags": [...], "prefixes": [...],
//! "all": false, "soft": false}`, every entry checked before anything is purged.

use serde::Deserialize;

use crate::cache::key::{normalize_host, RequestKey};
use crate::cache::storage::PurgeScope;
use crate::cache::tags::MAX_TAG_LEN;
use crate::config::NamePattern;

/// The admin API's request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeApiRequest {
    /// Absolute URLs; every variant of each is purged.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Tags (surrogate keys).
    #[serde(default)]
    pub tags: Vec<String>,
    /// URL prefixes with scheme and host: `http://host/blog/`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Purge everything.
    #[serde(default)]
    pub all: bool,
    /// Mark stale instead of removing.
    #[serde(default)]
    pub soft: bool,
}

/// The most entries one API call may name.
pub const MAX_API_ENTRIES: usize = 10_000;

/// The longest URL prefix a purge may name: no stored URL is longer (`limits.max_url_length`
/// is at most 1 MiB, but pingora and the key keep URLs well below; 16 KiB covers the default
/// 8 KiB target with any host).
pub const MAX_PREFIX_LEN: usize = 16 * 1024;

impl PurgeApiRequest {
    /// Parse and check a JSON body; every URL and prefix must be valid before anything is
    /// purged.
    pub fn parse(
        body: &[u8],
        tracking: &[NamePattern],
    ) -> Result<(PurgeApiRequest, Vec<PurgeScope>), String> {
        let req: PurgeApiRequest =
            serde_json::from_slice(body).map_err(|e| format!("invalid purge request: {e}"))?;
        let entries = req.urls.len() + req.tags.len() + req.prefixes.len();
        if entries > MAX_API_ENTRIES {
            return Err(format!(
                "invalid purge request: {entries} entries, at most {MAX_API_ENTRIES} per call"
            ));
        }
        if entries == 0 && !req.all {
            return Err(
                "invalid purge request: nothing to purge (give urls, tags, prefixes or all)".into(),
            );
        }
        let mut scopes = Vec::with_capacity(entries + 1);
        for (i, url) in req.urls.iter().enumerate() {
            let key = RequestKey::from_url(url, tracking)
                .map_err(|e| format!("urls[{i}]: {}: {url:?}", e.as_str()))?;
            scopes.push(PurgeScope::Url(key.primary_hash()));
        }
        for (i, tag) in req.tags.iter().enumerate() {
            if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("tags[{i}]: not a valid tag: {tag:?}"));
            }
            // no stored object carries a longer tag (cache/tags.rs), and the purge log
            // would keep the text
            if tag.len() > MAX_TAG_LEN {
                return Err(format!(
                    "tags[{i}]: longer than {MAX_TAG_LEN} bytes, the longest tag lacquer keeps"
                ));
            }
            scopes.push(PurgeScope::Tag(tag.clone()));
        }
        for (i, prefix) in req.prefixes.iter().enumerate() {
            if prefix.len() > MAX_PREFIX_LEN {
                return Err(format!(
                    "prefixes[{i}]: longer than {MAX_PREFIX_LEN} bytes (no stored URL is)"
                ));
            }
            let p = normalize_prefix(prefix).ok_or_else(|| {
                format!("prefixes[{i}]: expected a URL prefix like \"http://host/blog/\", got {prefix:?}")
            })?;
            scopes.push(PurgeScope::Prefix(p));
        }
        if req.all {
            scopes.push(PurgeScope::All);
        }
        Ok((req, scopes))
    }
}

/// `http://Host:80/blog/` -> `http://host/blog/`, the form stored URLs start with.
pub fn normalize_prefix(prefix: &str) -> Option<String> {
    let (scheme, rest) = prefix.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = normalize_host(host, scheme)?;
    Some(format!("{scheme}://{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_bodies() {
        let (_, scopes) = PurgeApiRequest::parse(
            br#"{"urls": ["http://h/a"], "tags": ["t"], "prefixes": ["http://H:80/blog/"], "soft": true}"#,
            &[],
        )
        .unwrap();
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[2], PurgeScope::Prefix("http://h/blog/".into()));
        let bad = [
            &br#"{"urls": ["/relative"]}"#[..],
            br#"{"tags": ["has space"]}"#,
            br#"{"prefixes": ["blog/"]}"#,
            br#"{"url": ["http://h/a"]}"#,
            br#"{"urls": "http://h/a"}"#,
            br#"{}"#,
            b"not json",
        ];
        for body in bad {
            let err = PurgeApiRequest::parse(body, &[]).unwrap_err();
            assert!(!err.is_empty());
        }
        let (req, scopes) = PurgeApiRequest::parse(br#"{"all": true}"#, &[]).unwrap();
        assert!(req.all);
        assert_eq!(scopes, vec![PurgeScope::All]);
    }
}
