//! Invalidation requests and their authorisation.
//!
//! - `PURGE`, `BAN` and `PURGEKEYS` on the proxy listener, in the forms of Varnish's purge
//!   clients (WordPress, Magento, Drupal, FOSHttpCache, Shopware, TYPO3; read by
//!   `purge/wire.rs`): URLs (the request's host), tags (every host), tag patterns, bans.
//! - `POST /purge` on the admin listener takes JSON:
//!   `{"urls": [...], "tags": [...], "prefixes": [...], "all": false, "soft": false}`.
//! - Both are accepted from `purge.allow` networks or with `Authorization: Bearer <token>`.
//! - A successful unsafe request (POST, PUT, PATCH, DELETE, or any method RFC 9110 does not
//!   call safe, such as `M-SEARCH`) invalidates its URL, and with
//!   `purge.invalidate_locations` the same-host URLs in its `Location` and `Content-Location`
//!   (RFC 9111 section 4.4).
//!
//! Parts: `purge/gate.rs` (who may purge, how often), `purge/api.rs` (the admin API's body),
//! `purge/wire.rs` (the purge clients' requests); here running purges and unsafe-method
//! invalidation. The storage side (indexes, purge log, bans, soft expiry) is
//! `cache/storage.rs`.

mod api;
mod gate;
pub mod wire;

use http::Method;
use serde::Serialize;

pub use api::{normalize_prefix, PurgeApiRequest, MAX_API_ENTRIES, MAX_PREFIX_LEN};
pub use gate::{PurgeGate, Refusal};

use crate::cache::key::RequestKey;
use crate::cache::storage::PurgeScope;
use crate::cache::CacheRuntime;
use crate::config::NamePattern;
use crate::metrics::metrics;

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
    /// Bans added (their objects are removed in the background).
    #[serde(skip_serializing_if = "is_zero")]
    pub bans: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where a purge came from, for metrics: an explicit request, or a successful unsafe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeSource {
    /// PURGE or the admin API.
    Request,
    /// RFC 9111 section 4.4 invalidation after a successful unsafe request (POST, PUT, ...).
    Unsafe,
}

/// Run purges, totalling each kind into a report and the metrics.
pub async fn run(
    cache: &'static CacheRuntime,
    scopes: &[PurgeScope],
    soft: bool,
    source: PurgeSource,
) -> PurgeReport {
    let storage = cache.storage;
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
            PurgeScope::Url(_) | PurgeScope::AnySchemeUrl(_) => "url",
            PurgeScope::Tag(_) => "tag",
            PurgeScope::All => "all",
            PurgeScope::Ban(_) => "ban",
        };
        let n = storage.purge_scope(scope, soft).await;
        // a purged URL starts afresh: its next answer decides, not its last uncacheable one;
        // not after an unsafe request (a form's POST says nothing about its page's GET, and
        // the page must keep getting its visitors' CSRF cookies)
        match scope {
            _ if source == PurgeSource::Unsafe => {}
            PurgeScope::Url(h) => cache.forget_uncacheable(*h),
            PurgeScope::AnySchemeUrl(hashes) => {
                hashes.iter().for_each(|h| cache.forget_uncacheable(*h))
            }
            _ => {}
        }
        match scope {
            PurgeScope::Url(_) | PurgeScope::AnySchemeUrl(_) => report.urls += n,
            PurgeScope::Tag(_) => report.tags += n,
            PurgeScope::Ban(_) => report.bans += 1,
            _ => report.all += n,
        }
        let kind = label(kind);
        m.purges.with_label_values(&[kind, "ok"]).inc();
        m.purged_objects.with_label_values(&[kind]).inc_by(n as u64);
    }
    report
}

/// Count a purge request that was refused (`denied`: not authorised; `rate_limited`: over
/// `purge.rate_limit`; `invalid`: malformed).
pub fn count_refused(result: &'static str) {
    metrics()
        .purges
        .with_label_values(&["unknown", result])
        .inc();
}

/// Run what a Varnish purge client's request asks for (`wire::parse`): its URL, tag and
/// "everything" purges, its tag patterns over the index's distinct tags, and its bans.
pub async fn run_order(
    cache: &'static CacheRuntime,
    order: &wire::PurgeOrder,
    source: PurgeSource,
) -> PurgeReport {
    let mut report = run(cache, &order.scopes, order.soft, source).await;
    let m = metrics();
    for pattern in &order.tag_patterns {
        // checked when the request was read
        let Ok(re) = crate::cache::ban::pattern(pattern) else {
            continue;
        };
        let n = cache.storage.purge_tag_pattern(&re, order.soft);
        report.tags += n;
        m.purges.with_label_values(&["tag_pattern", "ok"]).inc();
        m.purged_objects
            .with_label_values(&["tag_pattern"])
            .inc_by(n as u64);
    }
    for ban in &order.bans {
        cache.storage.ban(ban.clone(), order.soft);
        report.bans += 1;
        m.purges.with_label_values(&["ban", "ok"]).inc();
    }
    report
}

/// Whether `method` invalidates on success: every method that RFC 9110 (section 9.2.1) does
/// not define as safe, so an extension method (`M-SEARCH`, `FOO`) too (RFC 9111 section 4.4).
/// `PURGE` never gets here: lacquer answers it itself.
pub fn invalidating_method(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
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
    fn every_method_but_the_safe_ones_invalidates() {
        for (method, invalidates) in [
            ("GET", false),
            ("HEAD", false),
            ("OPTIONS", false),
            ("TRACE", false),
            ("POST", true),
            ("PUT", true),
            ("PATCH", true),
            ("DELETE", true),
            ("M-SEARCH", true),
            ("FOO", true),
        ] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(invalidating_method(&m), invalidates, "{method}");
        }
    }
}
