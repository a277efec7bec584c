//! What the cache did with a request: the [`CacheStatus`] that labels metrics and logs, and the
//! RFC 9211 `Cache-Status` header value sent to clients
//! (`lacquer; hit; ttl=42`, `lacquer; fwd=miss; fwd-status=200; stored`, ...).

use std::fmt::Write as _;
use std::time::SystemTime;

use pingora_cache::{CachePhase, HttpCache, NoCacheReason};

use super::policy::BypassReason;

/// The outcome of one client request, as far as the cache is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    /// Served fresh from memory.
    Hit,
    /// Served stale from memory while one background fetch refreshes it.
    StaleWhileRevalidate,
    /// Served stale from memory because the origin failed.
    StaleIfError,
    /// Fetched from the origin (and stored if `stored`).
    Miss,
    /// A stored object was stale; the origin sent a new one.
    Expired,
    /// A stored object was stale; the origin answered 304 and it was served.
    Revalidated,
    /// The request was not eligible for the cache.
    Bypass(BypassReason),
    /// The key is remembered as uncacheable (hit-for-miss) and its answer was again not
    /// stored. It still went through the cache lock: concurrent requests wait for the first
    /// answer's header and are released at once when it is not storable.
    HitForMiss,
}

impl CacheStatus {
    /// The label used in logs and metrics.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::StaleWhileRevalidate => "stale",
            CacheStatus::StaleIfError => "stale_if_error",
            CacheStatus::Miss => "miss",
            CacheStatus::Expired => "expired",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Bypass(_) => "bypass",
            CacheStatus::HitForMiss => "hit_for_miss",
        }
    }
}

/// Everything the `Cache-Status` header says about one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// What happened.
    pub(crate) status: CacheStatus,
    /// Remaining freshness in seconds (negative when stale), for responses from memory.
    pub(crate) ttl: Option<i64>,
    /// The origin's status, when the origin was asked.
    pub(crate) fwd_status: Option<u16>,
    /// Whether the response is being stored.
    pub(crate) stored: bool,
    /// Whether this request waited for another request's fetch.
    pub(crate) collapsed: bool,
    /// Why it was not stored or not looked up.
    pub(crate) detail: Option<&'static str>,
}

impl Outcome {
    /// Read the outcome off pingora's cache state for this request.
    pub(crate) fn from_cache(
        cache: &HttpCache,
        bypass: Option<BypassReason>,
        fwd_status: Option<u16>,
        no_store: Option<&'static str>,
    ) -> Outcome {
        let mut o = Outcome {
            status: CacheStatus::Miss,
            ttl: None,
            fwd_status,
            stored: false,
            collapsed: cache.lock_duration().is_some(),
            detail: no_store,
        };
        if let Some(reason) = bypass {
            o.status = CacheStatus::Bypass(reason);
            o.detail = Some(reason.as_str());
            o.collapsed = false;
            return o;
        }
        let ttl = || {
            let until = cache.cache_meta().fresh_until();
            let now = SystemTime::now();
            match until.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            }
        };
        match cache.phase() {
            CachePhase::Hit => {
                o.status = CacheStatus::Hit;
                o.ttl = Some(ttl());
                o.fwd_status = None;
            }
            CachePhase::StaleUpdating => {
                o.status = CacheStatus::StaleWhileRevalidate;
                o.ttl = Some(ttl());
                o.fwd_status = None;
                o.detail = Some("stale-while-revalidate");
            }
            CachePhase::Stale => {
                o.status = CacheStatus::StaleIfError;
                o.ttl = Some(ttl());
                o.detail = Some("stale-if-error");
            }
            CachePhase::Miss => {
                o.status = CacheStatus::Miss;
                o.stored = true;
            }
            CachePhase::Expired => {
                o.status = CacheStatus::Expired;
                o.stored = true;
            }
            CachePhase::Revalidated => {
                o.status = CacheStatus::Revalidated;
                o.stored = true;
            }
            CachePhase::RevalidatedNoCache(reason) => {
                o.status = CacheStatus::Revalidated;
                o.detail = o.detail.or(Some(reason_label(reason)));
            }
            CachePhase::Bypass => {
                o.status = CacheStatus::HitForMiss;
                o.detail = Some("hit-for-miss");
            }
            CachePhase::Disabled(reason) => {
                o.status = CacheStatus::Miss;
                o.detail = o.detail.or(Some(reason_label(reason)));
            }
            CachePhase::Uninit | CachePhase::CacheKey => {}
        }
        o
    }

    /// Whether the response comes from memory without a word from the app (a hit, fresh
    /// or stale; not a revalidation, whose 304 updated the header).
    pub(crate) fn served_from_memory(&self) -> bool {
        matches!(
            self.status,
            CacheStatus::Hit | CacheStatus::StaleWhileRevalidate | CacheStatus::StaleIfError
        )
    }

    /// Record that the key is remembered as uncacheable and this answer was not stored either.
    pub(crate) fn mark_hit_for_miss(&mut self) {
        self.status = CacheStatus::HitForMiss;
        self.detail = Some("hit-for-miss");
    }

    /// The `Cache-Status` field value (RFC 9211 section 2).
    pub(crate) fn header_value(&self) -> String {
        let mut v = String::with_capacity(48);
        v.push_str("lacquer");
        match self.status {
            CacheStatus::Hit | CacheStatus::StaleWhileRevalidate | CacheStatus::StaleIfError => {
                v.push_str("; hit")
            }
            CacheStatus::Miss | CacheStatus::HitForMiss => v.push_str("; fwd=miss"),
            CacheStatus::Expired | CacheStatus::Revalidated => v.push_str("; fwd=stale"),
            CacheStatus::Bypass(BypassReason::Method) => v.push_str("; fwd=method"),
            CacheStatus::Bypass(_) => v.push_str("; fwd=bypass"),
        }
        if self.status == CacheStatus::StaleIfError {
            v.push_str("; fwd=stale");
        }
        // (numbers by itoa, not `write!`: this is on every hit)
        if let Some(s) = self.fwd_status {
            v.push_str("; fwd-status=");
            v.push_str(itoa::Buffer::new().format(s));
        }
        if let Some(t) = self.ttl {
            v.push_str("; ttl=");
            v.push_str(itoa::Buffer::new().format(t));
        }
        if self.stored {
            v.push_str("; stored");
        }
        if self.collapsed {
            v.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            let _ = write!(v, "; detail={d}");
        }
        v
    }
}

/// A token for pingora's reasons not to cache.
fn reason_label(reason: NoCacheReason) -> &'static str {
    match reason {
        NoCacheReason::Custom(s) => s,
        NoCacheReason::OriginNotCache => "origin-not-cache",
        NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge => "too-large",
        NoCacheReason::CacheLockTimeout => "lock-timeout",
        NoCacheReason::CacheLockGiveUp => "uncacheable",
        NoCacheReason::CacheLockRetryLimit => "lock-retry-limit",
        NoCacheReason::UpstreamError => "upstream-error",
        NoCacheReason::StorageError => "storage-error",
        NoCacheReason::InternalError => "internal-error",
        NoCacheReason::Deferred => "deferred",
        NoCacheReason::DeclinedToUpstream => "declined",
        NoCacheReason::NeverEnabled => "not-cacheable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: CacheStatus) -> Outcome {
        Outcome {
            status,
            ttl: None,
            fwd_status: None,
            stored: false,
            collapsed: false,
            detail: None,
        }
    }

    #[test]
    fn header_values() {
        let hit = Outcome {
            ttl: Some(42),
            ..outcome(CacheStatus::Hit)
        };
        assert_eq!(hit.header_value(), "lacquer; hit; ttl=42");
        let miss = Outcome {
            fwd_status: Some(200),
            stored: true,
            ..outcome(CacheStatus::Miss)
        };
        assert_eq!(
            miss.header_value(),
            "lacquer; fwd=miss; fwd-status=200; stored"
        );
        let bypass = Outcome {
            detail: Some("cookie"),
            fwd_status: Some(200),
            ..outcome(CacheStatus::Bypass(BypassReason::Cookie))
        };
        assert_eq!(
            bypass.header_value(),
            "lacquer; fwd=bypass; fwd-status=200; detail=cookie"
        );
        let method = outcome(CacheStatus::Bypass(BypassReason::Method));
        assert_eq!(method.header_value(), "lacquer; fwd=method");
        let reval = Outcome {
            fwd_status: Some(304),
            stored: true,
            ..outcome(CacheStatus::Revalidated)
        };
        assert_eq!(
            reval.header_value(),
            "lacquer; fwd=stale; fwd-status=304; stored"
        );
    }
}
