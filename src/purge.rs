//! Invalidation requests and their authorisation.
//!
//! - `PURGE /path` on the proxy listener (Varnish's convention) removes every variant of that
//!   URL; with `xkey-purge: tag1 tag2` (Varnish xkey's convention) it purges by tag instead;
//!   with `Soft-Purge: 1` it marks stale instead of removing.
//! - `POST /purge` on the admin listener takes JSON:
//!   `{"urls": [...], "tags": [...], "prefixes": [...], "all": false, "soft": false}`.
//! - Both are accepted from `purge.allow` networks or with `Authorization: Bearer <token>`.
//! - A successful unsafe request (POST, PUT, PATCH, DELETE) invalidates its URL and the
//!   same-host URLs in its `Location` and `Content-Location` (RFC 9111 section 4.4).
//!
//! The storage side (indexes, purge log, soft expiry) is `cache/storage.rs`.

use std::net::IpAddr;

use http::Method;
use pingora_http::RequestHeader;
use serde::{Deserialize, Serialize};

use crate::cache::key::{normalize_host, RequestKey};
use crate::cache::storage::{MemoryStorage, PurgeScope};
use crate::cache::tags::MAX_TAG_LEN;
use crate::config::{Cidr, NamePattern, PurgeConfig};
use crate::metrics::metrics;

/// Who may purge.
pub struct PurgeAuth {
    allow: Vec<Cidr>,
    token: Option<String>,
}

impl PurgeAuth {
    /// The rules of `config`.
    pub fn new(config: &PurgeConfig) -> PurgeAuth {
        PurgeAuth {
            allow: config.allow.clone(),
            token: config.token.clone(),
        }
    }

    /// Whether this request may purge: its TCP peer (never a forwarded header) and its
    /// `Authorization`.
    pub fn allows_request(
        &self,
        peer: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
        req: &RequestHeader,
    ) -> bool {
        let client = peer.and_then(|a| a.as_inet()).map(|a| a.ip());
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.allows(client, authorization)
    }

    /// Whether a purge from `client` with this `Authorization` value is allowed.
    pub fn allows(&self, client: Option<IpAddr>, authorization: Option<&[u8]>) -> bool {
        if let (Some(token), Some(auth)) = (&self.token, authorization) {
            let presented = auth
                .strip_prefix(b"Bearer ")
                .or_else(|| auth.strip_prefix(b"bearer "));
            if presented.is_some_and(|p| constant_time_eq(p.trim_ascii(), token.as_bytes())) {
                return true;
            }
        }
        client.is_some_and(|ip| self.allow.iter().any(|net| net.contains(ip)))
    }
}

/// Compare without an early exit, so the time taken does not reveal how much of a guessed
/// token was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

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

/// How many objects each part of a purge removed (or, soft, marked stale).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Whether objects were marked stale rather than removed.
    pub soft: bool,
    /// Objects matched by `urls`.
    pub urls: usize,
    /// Objects matched by `tags`.
    pub tags: usize,
    /// Objects matched by `prefixes`.
    pub prefixes: usize,
    /// Objects matched by `all`.
    pub all: usize,
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

/// Where a purge came from, for metrics: an explicit request, or a successful unsafe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeSource {
    /// PURGE or the admin API.
    Request,
    /// RFC 9111 section 4.4 invalidation after POST/PUT/PATCH/DELETE.
    Unsafe,
}

/// Run purges, totalling each kind into a report and the metrics.
pub async fn run(
    storage: &'static MemoryStorage,
    scopes: &[PurgeScope],
    soft: bool,
    source: PurgeSource,
) -> PurgeReport {
    let mut report = PurgeReport {
        soft,
        ..PurgeReport::default()
    };
    let m = metrics();
    // every prefix of the call in one walk over the cache, not one walk each
    let prefixes: Vec<String> = scopes
        .iter()
        .filter_map(|s| match s {
            PurgeScope::Prefix(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let label = |kind: &'static str| match source {
        PurgeSource::Unsafe => "unsafe",
        PurgeSource::Request => kind,
    };
    if !prefixes.is_empty() {
        let n = storage.purge_prefixes(&prefixes, soft);
        report.prefixes += n;
        let kind = label("prefix");
        m.purges
            .with_label_values(&[kind, "ok"])
            .inc_by(prefixes.len() as u64);
        m.purged_objects.with_label_values(&[kind]).inc_by(n as u64);
    }
    for scope in scopes {
        let kind = match scope {
            PurgeScope::Prefix(_) => continue,
            PurgeScope::Url(_) => "url",
            PurgeScope::Tag(_) => "tag",
            PurgeScope::All => "all",
        };
        let n = storage.purge_scope(scope, soft).await;
        match scope {
            PurgeScope::Url(_) => report.urls += n,
            PurgeScope::Tag(_) => report.tags += n,
            _ => report.all += n,
        }
        let kind = label(kind);
        m.purges.with_label_values(&[kind, "ok"]).inc();
        m.purged_objects.with_label_values(&[kind]).inc_by(n as u64);
    }
    report
}

/// Why a purge request was refused: the status and JSON body to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 403 (not authorised) or 429 (over `purge.rate_limit`).
    pub status: http::StatusCode,
    /// The JSON body.
    pub body: &'static str,
}

/// Whether a purge request may go ahead, on either listener: authorised by its TCP peer or
/// token (403 otherwise), then within `purge.rate_limit` (429). Checked before any other
/// work, the body included, so a refused purge costs nothing and uses up no rate; refusals
/// are counted.
pub fn admit(
    live: &crate::live::Live,
    peer: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
    req: &RequestHeader,
) -> Result<(), Refusal> {
    if !live.auth.allows_request(peer, req) {
        count_refused("denied");
        return Err(Refusal {
            status: http::StatusCode::FORBIDDEN,
            body: r#"{"error":"purge not allowed"}"#,
        });
    }
    if !live.purge_rate.try_take() {
        count_refused("rate_limited");
        return Err(Refusal {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            body: r#"{"error":"too many purges, see purge.rate_limit"}"#,
        });
    }
    Ok(())
}

/// Count a purge request that was refused (`denied`: not authorised; `rate_limited`: over
/// `purge.rate_limit`; `invalid`: malformed).
pub fn count_refused(result: &'static str) {
    metrics()
        .purges
        .with_label_values(&["unknown", result])
        .inc();
}

/// What a `PURGE` request on the proxy listener asks for.
pub fn proxy_purge_scopes(req: &RequestHeader, key: &RequestKey) -> (Vec<PurgeScope>, bool) {
    let soft = req
        .headers
        .get("soft-purge")
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"1");
    let mut tags: Vec<PurgeScope> = Vec::new();
    for v in req.headers.get_all("xkey-purge") {
        if let Ok(v) = v.to_str() {
            for t in v.split(|c: char| c.is_ascii_whitespace() || c == ',') {
                // a tag longer than any stored object's cannot match anything
                if !t.is_empty() && t.len() <= MAX_TAG_LEN {
                    tags.push(PurgeScope::Tag(t.to_string()));
                }
            }
        }
    }
    if !tags.is_empty() {
        return (tags, soft);
    }
    (vec![PurgeScope::Url(key.primary_hash())], soft)
}

/// Whether `method` is unsafe in RFC 9110's sense and invalidates on success.
pub fn invalidating_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The same-host URL a `Location`/`Content-Location` value points at, as a key.
pub fn location_key(
    value: &str,
    request: &RequestKey,
    tracking: &[NamePattern],
) -> Option<RequestKey> {
    let value = value.trim();
    let absolute = if value.contains("://") {
        value.to_string()
    } else if let Some(rest) = value.strip_prefix("//") {
        format!("{}://{rest}", request.scheme)
    } else if value.starts_with('/') {
        format!("{}://{}{value}", request.scheme, request.host)
    } else {
        // relative to the request's directory
        let path = request.path_and_query.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}://{}{dir}{value}", request.scheme, request.host)
    };
    let key = RequestKey::from_url(&absolute, tracking).ok()?;
    // RFC 9111 section 4.4: only same-origin URLs, or a response could purge another site
    (key.host == request.host && key.scheme == request.scheme).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(allow: &[&str], token: Option<&str>) -> PurgeAuth {
        PurgeAuth {
            allow: allow.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn authorisation() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "203.0.113.9".parse().unwrap();
        let a = auth(&["127.0.0.1/32"], Some("0123456789abcdef"));
        assert!(a.allows(Some(lo), None));
        assert!(!a.allows(Some(far), None));
        assert!(a.allows(Some(far), Some(b"Bearer 0123456789abcdef")));
        assert!(!a.allows(Some(far), Some(b"Bearer 0123456789abcdeX")));
        assert!(!a.allows(Some(far), Some(b"Basic 0123456789abcdef")));
        assert!(!a.allows(None, None));
        let no_token = auth(&[], None);
        assert!(!no_token.allows(Some(lo), Some(b"Bearer anything")));
    }

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

    #[test]
    fn locations() {
        let req = RequestKey::from_url("http://shop.example/cart/add?x=1", &[]).unwrap();
        let k = |v: &str| location_key(v, &req, &[]).map(|k| k.primary());
        assert_eq!(k("/cart"), Some("http://shop.example/cart".into()));
        assert_eq!(k("view"), Some("http://shop.example/cart/view".into()));
        assert_eq!(
            k("http://SHOP.example:80/"),
            Some("http://shop.example/".into())
        );
        assert_eq!(k("//shop.example/a"), Some("http://shop.example/a".into()));
        assert_eq!(k("http://evil.example/"), None);
    }

    #[test]
    fn proxy_purges() {
        let key = RequestKey::from_url("http://h/a", &[]).unwrap();
        let mut req = RequestHeader::build("PURGE", b"/a", None).unwrap();
        assert_eq!(
            proxy_purge_scopes(&req, &key),
            (vec![PurgeScope::Url(key.primary_hash())], false)
        );
        req.insert_header("xkey-purge", "t1 t2").unwrap();
        req.insert_header("Soft-Purge", "1").unwrap();
        assert_eq!(
            proxy_purge_scopes(&req, &key),
            (
                vec![PurgeScope::Tag("t1".into()), PurgeScope::Tag("t2".into())],
                true
            )
        );
    }
}
