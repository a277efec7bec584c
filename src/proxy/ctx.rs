//! [`RequestCtx`]: what lacquer knows about one request as it moves through pingora's phases.
//! Each hook in `proxy.rs` reads and records here; nothing outside the proxy touches it.

use std::sync::Arc;
use std::time::Instant;

use pingora_http::ResponseHeader;

use crate::cache::key::RequestKey;
use crate::cache::policy::BypassReason;
use crate::cache::status::CacheStatus;
use crate::edge::Client;
use crate::live::Live;
use crate::metrics::metrics;
use crate::services::InFlight;

/// What lacquer knows about one request as it moves through the phases.
pub(crate) struct RequestCtx {
    /// The config generation this request runs under.
    pub(crate) live: Arc<Live>,
    /// Keeps the request counted as in flight (graceful stop).
    pub(crate) _in_flight: InFlight,
    /// When the request arrived, on the monotonic clock (the access log's wall-clock time is
    /// taken back from it when the entry is written: one clock read less per request).
    pub(crate) started: Instant,
    /// The client, as the TCP peer or a trusted proxy tells (`edge.rs`).
    pub(crate) client: Client,
    /// The request target as received, when lacquer rewrote it (tracking parameters).
    pub(crate) original_target: Option<String>,
    /// The app server asked last (its address).
    pub(crate) upstream: Option<String>,
    /// When the attempt on it began.
    pub(crate) upstream_started: Option<Instant>,
    /// Time to its response header.
    pub(crate) upstream_time: Option<std::time::Duration>,
    /// Whether that attempt is already in the upstream metrics.
    pub(crate) upstream_counted: bool,
    /// The cache key, for requests that use the cache.
    pub(crate) key: Option<RequestKey>,
    /// Why the request does not use the cache.
    pub(crate) bypass: Option<BypassReason>,
    /// Why the response was not stored.
    pub(crate) no_store: Option<&'static str>,
    /// The origin's status, when the origin was asked.
    pub(crate) upstream_status: Option<u16>,
    /// Connection attempts to app servers so far.
    pub(crate) tries: usize,
    /// The outcome, once the response header is sent.
    pub(crate) status: Option<CacheStatus>,
    /// The key is remembered as uncacheable (hit-for-miss): a label only; the request still
    /// looked up and took the cache lock.
    pub(crate) hit_for_miss: bool,
    /// A 304 from the origin while revalidating, to merge into the stored header.
    pub(crate) not_modified: Option<Box<ResponseHeader>>,
    /// The request was a PURGE.
    pub(crate) purge: bool,
    /// The index of the rule that applies (`rules:`), if any.
    pub(crate) rule: Option<usize>,
    /// Fetch anew and replace the stored copy (a refresh from a client allowed to purge).
    pub(crate) refresh: bool,
    /// The fill for a HEAD ended itself at a header with nothing to store (not an error to log).
    pub(crate) head_fill_ended: bool,
    /// The hit was read from the shared tier (`detail=shared`).
    pub(crate) shared_hit: bool,
    /// The URL's primary key hash, when request_filter needed it before the cache key.
    pub(crate) url_hash: Option<crate::cache::key::UrlHash>,
}

impl RequestCtx {
    /// Count the current app-server attempt as failed (no response), once.
    pub(super) fn count_upstream_failure(&mut self) {
        if let (Some(u), false) = (&self.upstream, self.upstream_counted) {
            metrics()
                .upstream_requests
                .with_label_values(&[u.as_str(), "error"])
                .inc();
            self.upstream_counted = true;
        }
    }
}
