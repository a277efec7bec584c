//! What a finished request leaves behind: its metrics (with the `cache_status` and `reason`
//! labels) and its access log line.

use pingora_error::Error;
use pingora_proxy::Session;

use super::{LacquerProxy, RequestCtx};
use crate::access_log::{arrival, Entry, RequestFields};
use crate::cache::status::CacheStatus;
use crate::metrics::metrics;

impl LacquerProxy {
    /// The `cache_status` and `reason` labels of a finished request.
    fn outcome_labels(&self, ctx: &RequestCtx, e: Option<&Error>) -> (&'static str, &'static str) {
        if ctx.purge {
            return ("purge", "");
        }
        if let (Some(s), Some(_)) = (ctx.status, e) {
            // the response began, then broke off (a broken upstream body, a client gone)
            return (s.as_str(), "incomplete");
        }
        match ctx.status {
            Some(CacheStatus::Bypass(reason)) => ("bypass", reason.as_str()),
            Some(CacheStatus::HitForMiss) => ("hit_for_miss", ctx.no_store.unwrap_or("")),
            Some(CacheStatus::Hit) if ctx.shared_hit => ("hit", "shared"),
            Some(s @ (CacheStatus::Miss | CacheStatus::Expired)) => {
                (s.as_str(), ctx.no_store.unwrap_or(""))
            }
            Some(s) => (s.as_str(), ""),
            None => ("error", if ctx.tries > 0 { "upstream" } else { "request" }),
        }
    }

    /// Count a finished request and write its access log line.
    pub(super) fn record_finished(
        &self,
        session: &Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        // (its ticket for the cluster's shared tier, and the fill lock with the last ticket)
        self.cache
            .storage
            .shared_done(session.cache.maybe_cache_key());
        ctx.count_upstream_failure();
        let m = metrics();
        if super::head::is_head_fill(session) {
            // the HEAD it filled for is counted and logged as the client request
            return;
        }
        if session.subrequest_ctx.is_some() {
            // a background refresh of a stale object, not a client request
            let result = if e.is_none() { "ok" } else { "error" };
            m.background_revalidations
                .with_label_values(&[result])
                .inc();
            return;
        }
        let (cache_status, reason) = self.outcome_labels(ctx, e);
        let duration = ctx.started.elapsed();
        m.request(cache_status, reason, duration);
        if let Some(wait) = session.cache.lock_duration() {
            m.coalesced.inc();
            m.coalesced_wait.observe(wait.as_secs_f64());
        }
        if !self.access_log.enabled() {
            return;
        }
        let request = RequestFields::of(session.req_header(), ctx.original_target.as_deref());
        self.access_log.log(&Entry {
            time: arrival(duration),
            client: ctx.client.addr,
            method: request.method,
            host: request.host,
            target: &request.target,
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes: session.as_ref().body_bytes_sent(),
            duration,
            cache_status,
            upstream: ctx.upstream.as_deref(),
            upstream_time: ctx.upstream_time,
            referer: request.referer,
            user_agent: request.user_agent,
        });
    }
}
