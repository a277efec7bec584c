//! A `HEAD` that misses fills the cache with a `GET` in the background and is answered from
//! what it stored, as Varnish does.
//!
//! pingora turns the miss's upstream request into a GET, but it relays the body only as the
//! client takes it, and a HEAD client takes none: once the header is out the fetch is
//! dropped, so the object was stored only when the app happened to write the body together
//! with the header (gunicorn writes them apart, so a cold HEAD said `stored` and stored
//! nothing, most of the time). Here a background GET subrequest reads the whole body into
//! the cache while the HEAD, still holding the miss's cache lock, waits for it; the HEAD is
//! then answered with the stored header. When nothing could be stored, the HEAD goes to the
//! app as it is.

use std::time::SystemTime;

use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::subrequest;
use pingora_proxy::Session;

use super::{LacquerProxy, RequestCtx};
use crate::cache::status::{CacheStatus, Outcome};
use crate::cache::vary;

/// Marks a subrequest that fills the cache for a HEAD: it asks the app with GET.
pub(crate) struct HeadFill;

/// Whether this (sub)request is the GET that fills the cache for a HEAD.
pub(super) fn is_head_fill(session: &Session) -> bool {
    session
        .subrequest_ctx
        .as_ref()
        .and_then(|c| c.user_ctx())
        .is_some_and(|u| u.is::<HeadFill>())
}

impl LacquerProxy {
    /// For a HEAD that holds the cache lock of a miss (or of an expired object): fill with a
    /// GET in the background, then answer from the stored header. `Ok(true)`: answered here;
    /// `Ok(false)`: go to the app as usual.
    pub(super) async fn answer_head_from_fill(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if session.req_header().method != http::Method::HEAD
            || session.subrequest_ctx.is_some()
            || !session.cache.enabled()
            || !session.cache.is_cache_lock_writer()
            || session.subrequest_spawner.is_none()
        {
            return Ok(false);
        }
        // the HEAD keeps the cache lock, so requests for the URL wait for the fill as they
        // would for any miss; the fill itself takes no lock (pingora hands a lock to a
        // subrequest only for an expired object, and a miss's subrequest would wait on it)
        let key = session.cache.cache_key().clone();
        // a URL whose last answer was not storable would be downloaded for nothing: the HEAD
        // goes to the app as it is
        if self
            .cache
            .remembered_uncacheable(crate::cache::key::UrlHash::of(&key))
        {
            return Ok(false);
        }
        let sub = subrequest::Ctx::builder()
            .user_ctx(Box::new(HeadFill))
            .build();
        let Some(spawner) = session.subrequest_spawner.as_ref() else {
            return Ok(false);
        };
        let fill = spawner.spawn_background_subrequest(session.as_ref(), sub);
        // no longer than a waiter would wait for any fill; a fill whose answer is not storable
        // ends at its header (see `response_filter`), a failed one leaves nothing stored
        let bound = ctx.live.config.cache.lock_timeout;
        match tokio::time::timeout(bound, fill).await {
            Ok(Err(e)) => log::warn!("the GET filling the cache for a HEAD failed: {e}"),
            Err(_) => log::debug!("the GET filling the cache for a HEAD took over {bound:?}"),
            Ok(Ok(())) => {}
        }
        let storage = self.cache.storage;
        let trace = Span::inactive().handle();
        let mut found = storage.lookup(&key, &trace).await.ok().flatten();
        if let Some((meta, _)) = &found {
            // the variant this HEAD asks for: pingora keeps a URL's first variant under the
            // plain key, the others under their variance
            let variance = vary::variance(meta.response_header(), session.req_header());
            if variance.is_some() && variance != meta.variance() {
                let mut variant = key.clone();
                if let Some(v) = variance {
                    variant.set_variance_key(v);
                }
                found = storage.lookup(&variant, &trace).await.ok().flatten();
            }
        }
        let Some((meta, _)) = found.filter(|(m, _)| m.is_fresh(SystemTime::now())) else {
            // nothing storable came back: the HEAD asks the app itself, uncached
            session
                .cache
                .disable(pingora_cache::NoCacheReason::Custom("head-fill"));
            return Ok(false);
        };
        let mut header: ResponseHeader = meta.response_header_copy();
        let status = header.status.as_u16();
        let outcome = Outcome {
            status: CacheStatus::Miss,
            ttl: None,
            fwd_status: Some(status),
            stored: true,
            collapsed: false,
            detail: None,
        };
        // as a hit on the object would say: its age (the origin's Age counted in) and the
        // Date it was stored with, which pingora's writer would otherwise replace
        header.insert_header(http::header::AGE, meta.age().as_secs().to_string())?;
        header.insert_header("Cache-Status", outcome.header_value())?;
        super::strip_cache_only_fields(&mut header, &ctx.live.config.purge);
        if let Some(date) = header.headers.get(http::header::DATE) {
            crate::guard::keep_date(session.as_downstream_mut(), date);
        }
        ctx.status = Some(CacheStatus::Miss);
        ctx.upstream_status = Some(status);
        session
            .write_response_header(Box::new(header), true)
            .await?;
        Ok(true)
    }
}
