//! The cache key: `scheme://host/path?query`, with the host lower-cased and its default port
//! dropped, and tracking parameters (`utm_*`, `gclid`, ...) left out of the query.
//!
//! The key never contains the method, so GET, HEAD and PURGE of one URL name one object. A host
//! cannot contain `/`, so the text is unambiguous. Not here: Vary (see `vary.rs`).

use crate::config::NamePattern;
use pingora_cache::key::CacheHashKey;
use pingora_http::RequestHeader;

/// Why no key could be built: the request is malformed and gets a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No Host header and no authority in the request target.
    MissingHost,
    /// A Host that is not a valid host name, IP literal or port.
    InvalidHost,
    /// More than one Host header.
    DuplicateHost,
    /// A request target that is neither origin-form (`/path?query`, valid UTF-8) nor
    /// absolute-form (`http://host/path`).
    InvalidTarget,
}

impl KeyError {
    /// A short text for the error response and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyError::MissingHost => "missing Host header",
            KeyError::InvalidHost => "invalid Host header",
            KeyError::DuplicateHost => "duplicate Host header",
            KeyError::InvalidTarget => "invalid request target",
        }
    }
}

/// The hash of a URL's primary key (scheme, host, path, query), shared by all its Vary
/// variants: what a URL purge and the variant index name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UrlHash(pub u128);

impl UrlHash {
    /// The primary key hash of `key`, as pingora-cache computes it.
    pub fn of(key: &impl CacheHashKey) -> UrlHash {
        UrlHash(u128::from_be_bytes(key.primary_bin()))
    }

    /// The hash of the primary key text `primary`: pingora-cache's (BLAKE2b with a 16-byte
    /// digest), computed with a vectorised BLAKE2b. pingora's own takes 2,100 instructions for
    /// a 40-byte key, this one 900 (per request on the hit path). Equal by construction, and
    /// checked: keys are shared with the cluster's other nodes and its tier.
    pub fn of_text(primary: &str) -> UrlHash {
        let digest = blake2b_simd::Params::new()
            .hash_length(16)
            .hash(primary.as_bytes());
        let mut bin = [0u8; 16];
        bin.copy_from_slice(digest.as_bytes());
        UrlHash(u128::from_be_bytes(bin))
    }
}

/// The hash of one stored variant: the primary key and the Vary variance together. What the
/// storage is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VariantHash(pub u128);

impl VariantHash {
    /// The combined hash of `key`, as pingora-cache computes it.
    pub fn of(key: &impl CacheHashKey) -> VariantHash {
        VariantHash(u128::from_be_bytes(key.combined_bin()))
    }
}

/// The parts of a request that name a cached object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Lower-cased host, with a non-default port kept (`example.com:8080`).
    pub host: String,
    /// Path and query with tracking parameters removed.
    pub path_and_query: String,
    /// Whether tracking parameters were removed from the query.
    pub stripped: bool,
}

impl RequestKey {
    /// Build the key of `req`, received on a listener speaking `scheme`.
    pub fn from_request(
        scheme: &'static str,
        req: &RequestHeader,
        tracking: &[NamePattern],
    ) -> Result<RequestKey, KeyError> {
        // RFC 9112 section 3.2.2: an absolute-form target's authority overrides Host, and it is
        // what pingora forwards as Host, so it must be what the key uses
        let authority = target_authority(req);
        let raw_host = match &authority {
            Some(a) => a.as_str(),
            None => {
                let mut hosts = req.headers.get_all(http::header::HOST).iter();
                let first = hosts.next().ok_or(KeyError::MissingHost)?;
                if hosts.next().is_some() {
                    return Err(KeyError::DuplicateHost);
                }
                first.to_str().map_err(|_| KeyError::InvalidHost)?
            }
        };
        let host = normalize_host(raw_host, scheme).ok_or(KeyError::InvalidHost)?;
        // the key is taken from the target exactly as it is forwarded to the app: pingora
        // parses a target such as `index.html` or `a:b` as `/` but forwards it raw, so keying
        // on the parsed URI would let any client store its own page under `/`
        let raw = req.raw_path();
        let (path, query) = if raw.first() == Some(&b'/') {
            let text = std::str::from_utf8(raw).map_err(|_| KeyError::InvalidTarget)?;
            match text.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (text, None),
            }
        } else if is_absolute_form(raw) {
            let path = req.uri.path();
            (if path.is_empty() { "/" } else { path }, req.uri.query())
        } else {
            return Err(KeyError::InvalidTarget);
        };
        let (query, stripped) = match query {
            Some(q) => strip_params(q, tracking),
            None => (None, false),
        };
        let path_and_query = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        Ok(RequestKey {
            scheme,
            host,
            path_and_query,
            stripped,
        })
    }

    /// The primary key text: `scheme://host/path?query`.
    pub fn primary(&self) -> String {
        let mut key = String::with_capacity(
            self.scheme.len() + 3 + self.host.len() + self.path_and_query.len(),
        );
        key.push_str(self.scheme);
        key.push_str("://");
        key.push_str(&self.host);
        key.push_str(&self.path_and_query);
        key
    }

    /// The primary key hash pingora-cache and the storage use for this URL.
    pub fn primary_hash(&self) -> UrlHash {
        UrlHash::of_text(&self.primary())
    }

    /// The cache key pingora-cache and the storage use for this URL, hashed (`hash`, this
    /// key's `primary_hash`, when it was taken already).
    pub fn cache_key(&self, hash: Option<UrlHash>) -> pingora_cache::CacheKey {
        let primary = self.primary();
        let hash = hash.unwrap_or_else(|| UrlHash::of_text(&primary));
        let mut key = pingora_cache::CacheKey::new(primary, "");
        // hashed once: the predictor, the lock, the hit-for-miss check and the storage's
        // lookups (the primary slot, then a Vary variant, whose hash combines this one) all
        // take it
        key.set_primary_bin_override(hash.0.to_be_bytes());
        key
    }

    /// The primary key hashes of this URL under both schemes, this key's first: what a purge
    /// of "this URL" removes, whether it was stored for an `http` or an `https` visitor.
    pub fn both_scheme_hashes(&self) -> [UrlHash; 2] {
        let other = RequestKey {
            scheme: if self.scheme == "https" {
                "http"
            } else {
                "https"
            },
            ..self.clone()
        };
        [self.primary_hash(), other.primary_hash()]
    }

    /// The key of an absolute URL (`http://host/path?query`), as a request for it would get.
    pub fn from_url(url: &str, tracking: &[NamePattern]) -> Result<RequestKey, KeyError> {
        let uri: http::Uri = url.parse().map_err(|_| KeyError::InvalidHost)?;
        let scheme: &'static str = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            _ => return Err(KeyError::MissingHost),
        };
        let authority = uri.authority().ok_or(KeyError::MissingHost)?;
        let mut req = RequestHeader::build("GET", b"/", None).map_err(|_| KeyError::InvalidHost)?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        req.set_raw_path(target.as_bytes())
            .map_err(|_| KeyError::InvalidHost)?;
        req.insert_header(http::header::HOST, authority.as_str())
            .map_err(|_| KeyError::InvalidHost)?;
        RequestKey::from_request(scheme, &req, tracking)
    }
}

/// The authority of an absolute-form request target (`GET http://host/path`), if any.
/// Whether a request target starts with `http://` or `https://` (any case).
fn is_absolute_form(raw: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        raw.len() >= prefix.len() && raw[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    starts(b"http://") || starts(b"https://")
}

fn target_authority(req: &RequestHeader) -> Option<String> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str().to_string());
    }
    let raw = req.raw_path();
    if !is_absolute_form(raw) {
        return None;
    }
    let uri = http::Uri::try_from(raw).ok()?;
    // an absolute-form target without a usable authority is answered as a bad Host
    Some(
        uri.authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
    )
}

/// Lower-case a Host value and drop the scheme's default port. `None` when it is not a valid
/// `host[:port]` (RFC 9110 section 7.2): no user info, no path, only host-name characters or an
/// IP literal in brackets.
pub fn normalize_host(raw: &str, scheme: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 255 {
        return None;
    }
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", literal.to_ascii_lowercase()), port)
    } else {
        let (name, port) = match raw.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (raw, None),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return None;
        }
        // (room for a port kept after it: one allocation)
        let mut lower = String::with_capacity(raw.len());
        lower.push_str(name.trim_end_matches('.'));
        // (ASCII only, checked above: lower-cased in place, not a character at a time)
        lower.make_ascii_lowercase();
        (lower, port)
    };
    if name.is_empty() {
        return None;
    }
    match port {
        None | Some("") => Some(name),
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u32 = p.parse().ok()?;
            if n == 0 || n > 65535 {
                return None;
            }
            let default = match scheme {
                "https" => 443,
                _ => 80,
            };
            let mut name = name;
            if n != default {
                name.push(':');
                name.push_str(p.trim_start_matches('0'));
            }
            Some(name)
        }
    }
}

/// Remove the parameters whose names match `tracking` from a query string, keeping the order of
/// the others. Returns the new query (`None` when nothing is left) and whether anything was
/// removed.
pub fn strip_params(query: &str, tracking: &[NamePattern]) -> (Option<String>, bool) {
    if tracking.is_empty() {
        return (Some(query.to_string()), false);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut stripped = false;
    for pair in query.split('&') {
        let name = pair.split('=').next().unwrap_or(pair);
        if !name.is_empty() && tracking.iter().any(|p| p.matches(name)) {
            stripped = true;
        } else {
            kept.push(pair);
        }
    }
    if !stripped {
        return (Some(query.to_string()), false);
    }
    let kept: Vec<&str> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    if kept.is_empty() {
        (None, true)
    } else {
        (Some(kept.join("&")), true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_hashes_as_pingora_cache_hashes_it() {
        // keys are shared with other nodes (and builds) through the tier and purges
        let long = format!("https://site.example/{}", "a/b?c=d&".repeat(40));
        for text in [
            "",
            "http://h/",
            "http://127.0.0.1:8080/1k/x?y=1",
            long.as_str(),
        ] {
            let pingora = UrlHash::of(&pingora_cache::CacheKey::new(text, ""));
            assert_eq!(UrlHash::of_text(text), pingora, "{text}");
        }
        let key = RequestKey::from_url("http://Site.Example/p?q", &[]).unwrap();
        let cache_key = key.cache_key(None);
        assert_eq!(UrlHash::of(&cache_key), key.primary_hash());
        assert_eq!(
            UrlHash::of(&cache_key),
            UrlHash::of(&pingora_cache::CacheKey::new(key.primary(), ""))
        );
    }

    #[test]
    fn a_target_that_is_not_origin_or_absolute_form_has_no_key() {
        let key = |target: &[u8]| {
            let mut req = RequestHeader::build("GET", target, None).unwrap();
            req.insert_header("Host", "site.example").unwrap();
            RequestKey::from_request("http", &req, &[])
        };
        // pingora parses these as `/` but forwards them raw: keyed as `/`, any client could
        // store its own page for every visitor of the front page
        for bad in [&b"index.html"[..], b"foo:bar", b"*", b"/\xff", b"/\xfe"] {
            assert_eq!(
                key(bad),
                Err(KeyError::InvalidTarget),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(key(b"/a?b=1").unwrap().path_and_query, "/a?b=1");
        assert_eq!(key(b"/").unwrap().path_and_query, "/");
        let abs = key(b"http://Other.Example/x?y").unwrap();
        assert_eq!(
            (abs.host.as_str(), abs.path_and_query.as_str()),
            ("other.example", "/x?y")
        );
    }

    use super::*;

    fn tracking() -> Vec<NamePattern> {
        ["utm_*", "gclid", "fbclid"]
            .iter()
            .map(|p| NamePattern::new(p))
            .collect()
    }

    fn key(target: &str, host: Option<&str>) -> Result<String, KeyError> {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        if let Some(h) = host {
            req.insert_header("Host", h).unwrap();
        }
        RequestKey::from_request("http", &req, &tracking()).map(|k| k.primary())
    }

    #[test]
    fn keys() {
        let cases: &[(&str, Option<&str>, Result<&str, KeyError>)] = &[
            (
                "/a?b=1",
                Some("Example.COM"),
                Ok("http://example.com/a?b=1"),
            ),
            ("/a", Some("example.com:80"), Ok("http://example.com/a")),
            (
                "/a",
                Some("example.com:8080"),
                Ok("http://example.com:8080/a"),
            ),
            // a port is written the one way, whatever zeros lead it
            (
                "/a",
                Some("example.com:08080"),
                Ok("http://example.com:8080/a"),
            ),
            ("/a", Some("example.com:0080"), Ok("http://example.com/a")),
            ("/a", Some("example.com."), Ok("http://example.com/a")),
            ("/", Some("[::1]:80"), Ok("http://[::1]/")),
            (
                "/p?utm_source=x&id=2&gclid=9",
                Some("h"),
                Ok("http://h/p?id=2"),
            ),
            ("/p?utm_source=x", Some("h"), Ok("http://h/p")),
            ("/p?a=1&b=2", Some("h"), Ok("http://h/p?a=1&b=2")),
            ("/p?b=2&a=1", Some("h"), Ok("http://h/p?b=2&a=1")),
            (
                "http://other.example/x",
                Some("h"),
                Ok("http://other.example/x"),
            ),
            (
                "HTTP://Other.Example:80/x?utm_a=1",
                Some("h"),
                Ok("http://other.example/x"),
            ),
            ("http://user@evil/x", Some("h"), Err(KeyError::InvalidHost)),
            ("/a", None, Err(KeyError::MissingHost)),
            ("/a", Some("evil.com/x"), Err(KeyError::InvalidHost)),
            ("/a", Some("user@evil.com"), Err(KeyError::InvalidHost)),
            ("/a", Some("h:99999"), Err(KeyError::InvalidHost)),
            ("/a", Some("h:x"), Err(KeyError::InvalidHost)),
            ("/a", Some(""), Err(KeyError::InvalidHost)),
        ];
        for (target, host, want) in cases {
            let got = key(target, *host);
            assert_eq!(got, want.map(|s| s.to_string()), "{target} {host:?}");
        }
    }

    #[test]
    fn keys_from_urls_match_keys_from_requests() {
        let from_url =
            RequestKey::from_url("http://Example.com:80/a?utm_source=x&b=1", &tracking()).unwrap();
        assert_eq!(
            from_url.primary(),
            key("/a?b=1", Some("example.com")).unwrap()
        );
        assert_eq!(
            RequestKey::from_url("/relative", &[]),
            Err(KeyError::MissingHost)
        );
        assert_eq!(
            RequestKey::from_url("ftp://h/x", &[]),
            Err(KeyError::MissingHost)
        );
    }

    #[test]
    fn duplicate_host_is_rejected() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Host", "a").unwrap();
        req.append_header("Host", "b").unwrap();
        assert_eq!(
            RequestKey::from_request("http", &req, &[]),
            Err(KeyError::DuplicateHost)
        );
    }

    #[test]
    fn different_hosts_never_share_a_key() {
        assert_ne!(key("/x", Some("a.example")), key("/x", Some("b.example")));
        assert_ne!(
            key("/x", Some("a.example:81")),
            key("/x", Some("a.example"))
        );
    }

    #[test]
    fn stripping_is_idempotent() {
        let (once, _) = strip_params("a=1&utm_x=2&&b", &tracking());
        let (twice, again) = strip_params(once.as_deref().unwrap(), &tracking());
        assert_eq!(once, twice);
        assert!(!again);
    }
}
