//! Whether a response may be stored, and for how long: RFC 9111 for a shared cache, as pure
//! functions over the response header.
//!
//! - `CDN-Cache-Control` (RFC 9213) replaces `Cache-Control` and `Expires` when present and a
//!   valid Structured Field (see `directives.rs`); an invalid one is ignored as a whole.
//! - `no-store`, `private`, `Set-Cookie` and `Vary: *` are never stored, nor error statuses
//!   other than 404 and 410 (a client can provoke them: cache-poisoned denial of service).
//! - Lifetime: `s-maxage`, then `max-age`, then `Expires - Date`; an invalid value means already
//!   stale (RFC 9111 section 4.2.1); `no-cache` stores but always revalidates. Heuristic freshness
//!   only when `cache.default_ttl` (or a rule's `ttl`) gives one for the status.
//! - A rule's `force_ttl` replaces all of that; `strip_set_cookie` stores despite `Set-Cookie`.
//! - The origin's `Age` counts against the lifetime (section 4.2.3).
//! - `Expires` and `Date` are read in all three HTTP-date forms, case-insensitively
//!   (`http_date.rs`).
//!
//! Not here: request-side bypass (`policy.rs`) and building pingora's `CacheMeta` (`mod.rs`).

use std::time::{Duration, SystemTime};

use super::directives::{parse_delta_seconds, Directives};
use super::http_date;
use crate::config::TtlTable;
use pingora_http::ResponseHeader;

/// Why a response is not stored. Reaches `Cache-Status` (`detail=`) and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStoreReason {
    /// A status that is never stored (1xx, 206, 304).
    Status,
    /// `Set-Cookie` present.
    SetCookie,
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Vary: *`.
    VaryStar,
    /// No explicit lifetime and heuristic freshness is off.
    NoFreshness,
    /// Larger than `cache.max_object_size`.
    TooLarge,
    /// A server error while a good object is stored: it must not replace it.
    ErrorOverStored,
    /// An error status other than 404 and 410: never stored, whatever its headers say.
    ErrorStatus,
}

impl NoStoreReason {
    /// The label used in headers, logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoStoreReason::Status => "status",
            NoStoreReason::SetCookie => "set-cookie",
            NoStoreReason::Private => "private",
            NoStoreReason::NoStore => "no-store",
            NoStoreReason::VaryStar => "vary-star",
            NoStoreReason::NoFreshness => "no-freshness",
            NoStoreReason::TooLarge => "too-large",
            NoStoreReason::ErrorOverStored => "error-over-stored",
            NoStoreReason::ErrorStatus => "error-status",
        }
    }
}

/// The freshness facts of a storable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime (RFC 9111 section 4.2.1).
    pub lifetime: Duration,
    /// Age when received (the origin's `Age`).
    pub initial_age: Duration,
    /// stale-while-revalidate window in seconds.
    pub stale_while_revalidate: u32,
    /// stale-if-error window in seconds.
    pub stale_if_error: u32,
}

impl Freshness {
    /// Whether the response is still fresh when it arrives.
    pub fn fresh_on_arrival(&self) -> bool {
        self.lifetime > self.initial_age
    }
}

/// The knobs of the freshness policy that come from the config and the request's rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreshnessDefaults<'a> {
    /// Heuristic lifetimes for responses without explicit freshness, by status (empty: off).
    pub default_ttl: Option<&'a TtlTable>,
    /// Lifetimes that replace whatever the app says (a rule's `force_ttl`), by status.
    pub force_ttl: Option<&'a TtlTable>,
    /// A `Set-Cookie` does not prevent storing: the stored copy goes without it (a rule's
    /// `strip_set_cookie`).
    pub strip_set_cookie: bool,
    /// stale-while-revalidate when the origin gives none.
    pub stale_while_revalidate: Duration,
    /// stale-if-error when the origin gives none.
    pub stale_if_error: Duration,
    /// Responses larger than this (by `Content-Length`) are not stored.
    pub max_object_size: u64,
}

/// The outcome of [`assess`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storability {
    /// May be stored with this freshness.
    Store(Freshness),
    /// Must not be stored.
    DontStore(NoStoreReason),
}

/// The directives that govern this cache: `CDN-Cache-Control` when present and valid (RFC
/// 9213), otherwise `Cache-Control`, every occurrence kept (see `directives.rs`). The flag
/// says whether the targeted field was used.
fn governing(resp: &ResponseHeader) -> (Option<Directives>, bool) {
    match Directives::targeted(resp, "cdn-cache-control") {
        Some(d) => (Some(d), true),
        None => (Directives::of(resp, "cache-control"), false),
    }
}

/// Decide whether `resp` may be stored and for how long.
pub fn assess(resp: &ResponseHeader, defaults: &FreshnessDefaults, now: SystemTime) -> Storability {
    use NoStoreReason::*;
    let status = resp.status.as_u16();
    if status < 200 || status == 206 || status == 304 {
        return Storability::DontStore(Status);
    }
    if status >= 400 && status != 404 && status != 410 {
        // cache-poisoned denial of service: a client can often make the app fail with input
        // outside the key (an odd header, a method override, a WAF rule, a size limit), and a
        // stored 400/403/413/431/500/503 would then be served to every visitor of the URL.
        // RFC 9111 permits storing them with explicit freshness; no site needs it. 404 and 410
        // depend on the URL, which is keyed, and spare the app a lot of work.
        return Storability::DontStore(ErrorStatus);
    }
    // Set-Cookie2 (RFC 2965, obsolete) still sets a cookie in the clients that know it
    if !defaults.strip_set_cookie
        && (resp.headers.contains_key(http::header::SET_COOKIE)
            || resp.headers.contains_key("set-cookie2"))
    {
        return Storability::DontStore(SetCookie);
    }
    if vary_star(resp) {
        return Storability::DontStore(VaryStar);
    }
    if let Some(len) = content_length(resp) {
        if len > defaults.max_object_size {
            return Storability::DontStore(TooLarge);
        }
    }
    // a rule's forced lifetime overrides what the app says (private, no-store, no-cache,
    // max-age=0), as Varnish's `beresp.ttl` does; the request was anonymous (a bypassed one
    // never gets here) and Set-Cookie was refused above unless the rule strips it
    if let Some(lifetime) = defaults.force_ttl.and_then(|t| t.lifetime(status)) {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        return Storability::Store(Freshness {
            lifetime,
            initial_age: Duration::ZERO,
            stale_while_revalidate: secs(defaults.stale_while_revalidate),
            stale_if_error: secs(defaults.stale_if_error),
        });
    }
    let (dirs, targeted) = governing(resp);
    if dirs.as_ref().is_some_and(|d| d.has("no-store")) {
        return Storability::DontStore(NoStore);
    }
    // a bare `private` anywhere makes the whole response private, even next to a qualified
    // `private="..."` (pingora keeps only the last of the two)
    if dirs.as_ref().is_some_and(|d| d.has_bare("private")) {
        return Storability::DontStore(Private);
    }

    let explicit = explicit_lifetime(dirs.as_ref(), resp, targeted, now);
    let no_cache = dirs.as_ref().is_some_and(|d| d.has_bare("no-cache"));
    let lifetime = match explicit {
        Some(l) => l,
        None if no_cache => Duration::ZERO,
        None => match defaults.default_ttl.and_then(|t| t.lifetime(status)) {
            Some(ttl) => ttl,
            None => return Storability::DontStore(NoFreshness),
        },
    };
    let lifetime = if no_cache { Duration::ZERO } else { lifetime };

    let (swr, sie) = stale_windows(dirs.as_ref(), defaults, no_cache);
    Storability::Store(Freshness {
        lifetime,
        initial_age: age_header(resp),
        stale_while_revalidate: swr,
        stale_if_error: sie,
    })
}

/// `Some(lifetime)` when the response states one: s-maxage, max-age, then Expires (ignored
/// when the targeted `CDN-Cache-Control` governs). Invalid or duplicated values give zero.
fn explicit_lifetime(
    dirs: Option<&Directives>,
    resp: &ResponseHeader,
    targeted: bool,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(d) = dirs {
        for name in ["s-maxage", "max-age"] {
            // the first occurrence; an invalid value means stale (RFC 9111 section 4.2.1)
            if let Some(secs) = d.delta_seconds(name) {
                return Some(Duration::from_secs(secs.unwrap_or(0)));
            }
        }
    }
    if targeted {
        return None;
    }
    let mut expires = resp.headers.get_all(http::header::EXPIRES).iter();
    let first = expires.next()?;
    if expires.next().is_some() {
        return Some(Duration::ZERO);
    }
    let Some(expires_at) = http_date::parse(first.as_bytes(), now) else {
        // RFC 9111 section 5.3: an invalid Expires means "already expired"
        return Some(Duration::ZERO);
    };
    // freshness_lifetime = expires_value - date_value (section 4.2.1), so origin clock skew
    // does not matter; without a usable Date, our own clock stands in
    let date = resp
        .headers
        .get(http::header::DATE)
        .and_then(|d| http_date::parse(d.as_bytes(), now))
        .unwrap_or(now);
    Some(expires_at.duration_since(date).unwrap_or(Duration::ZERO))
}

fn stale_windows(
    dirs: Option<&Directives>,
    defaults: &FreshnessDefaults,
    no_cache: bool,
) -> (u32, u32) {
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let Some(d) = dirs else {
        return (
            secs(defaults.stale_while_revalidate),
            secs(defaults.stale_if_error),
        );
    };
    // must-revalidate, proxy-revalidate and s-maxage forbid serving stale (RFC 9111 4.2.4,
    // 5.2.2.2, 5.2.2.8, 5.2.2.10)
    if d.has("must-revalidate") || d.has("proxy-revalidate") || d.has("s-maxage") {
        return (0, 0);
    }
    let window = |name: &str, default: Duration| match d.delta_seconds(name) {
        Some(Some(s)) => u32::try_from(s).unwrap_or(u32::MAX),
        Some(None) => 0,
        None if !no_cache => secs(default),
        None => 0,
    };
    (
        window("stale-while-revalidate", defaults.stale_while_revalidate),
        window("stale-if-error", defaults.stale_if_error),
    )
}

/// Whether the response forbids being served stale (`must-revalidate`, `proxy-revalidate`,
/// `s-maxage`, `no-cache`; RFC 9111 sections 4.2.4 and 5.2.2).
pub fn stale_forbidden(resp: &ResponseHeader) -> bool {
    governing(resp).0.is_some_and(|d| {
        d.has("must-revalidate")
            || d.has("proxy-revalidate")
            || d.has_bare("no-cache")
            || d.has("s-maxage")
    })
}

/// Whether any `Vary` field value lists `*`.
pub fn vary_star(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == b"*")
    })
}

/// The origin's `Age` in seconds (RFC 9111 section 5.1): the first member of a list, a
/// number too large to represent is 2^31 (section 1.2.2), an invalid one is ignored (zero).
pub fn age_header(resp: &ResponseHeader) -> Duration {
    resp.headers
        .get(http::header::AGE)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.split(',').next())
        .and_then(|s| parse_delta_seconds(s.trim()))
        .map_or(Duration::ZERO, Duration::from_secs)
}

fn content_length(resp: &ResponseHeader) -> Option<u64> {
    let v = resp.headers.get(http::header::CONTENT_LENGTH)?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// Remove the header fields named by `private="..."` and `no-cache="..."` from a response about
/// to be stored (RFC 9111 sections 5.2.2.4 and 5.2.2.7).
pub fn strip_qualified_fields(resp: &mut ResponseHeader) {
    let Some(dirs) = governing(resp).0 else {
        return;
    };
    let names: Vec<String> = ["private", "no-cache"]
        .into_iter()
        .flat_map(|name| dirs.values(name))
        .flat_map(|list| list.split(','))
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect();
    for name in names {
        resp.remove_header(&name);
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests;
