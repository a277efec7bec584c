//! The one `impl ProxyHttp`: lacquer's path through pingora's phases. Each hook is thin and
//! delegates: who may use the cache to `cache::policy`, the key to `cache::key`, storability to
//! `cache::freshness`, Vary to `cache::vary`, the header to `cache::status`, app servers to
//! `upstream`, rules to `rules`. Parts: `proxy/ctx.rs` (the request context), `proxy/head.rs`
//! (a HEAD answered from its fill), `proxy/purging.rs` (purge requests, unsafe invalidation),
//! `proxy/report.rs` (metrics and the access log), `proxy/respond.rs` (lacquer's own answers).
//! See docs/ARCHITECTURE.md for the phase-by-phase walk.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use pingora_cache::key::HashBinary;
use pingora_cache::predictor::CacheablePredictor;
use pingora_cache::{CacheKey, CacheMeta, CacheOptionOverrides, NoCacheReason, RespCacheable};
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, RangeType, Session};

mod ctx;
mod head;
mod purging;
mod report;
mod respond;

use respond::{keep_date, respond_json, strip_cache_only_fields};

use crate::access_log::AccessLog;
use crate::cache::freshness::{self, NoStoreReason, Storability};
use crate::cache::key::RequestKey;
use crate::cache::policy::{self, BypassReason, RequestDecision};
use crate::cache::status::{CacheStatus, Outcome};
use crate::cache::storage::{self, FetchStamp};
use crate::cache::stored_header::{build_meta, merge_not_modified};
use crate::cache::{conditional, range, vary, CacheRuntime};
use crate::cluster::Cluster;
use crate::edge::{self, Client};
use crate::guard;
use crate::live::SharedLive;
use crate::metrics::{metrics, status_class};
use crate::request;
use crate::rules;
use crate::services::InFlight;
use crate::upstream;
pub(crate) use ctx::RequestCtx;

/// The scheme of lacquer's listeners (plain HTTP; a TLS terminator in front of lacquer says
/// `https` through `X-Forwarded-Proto`, believed from `trusted_proxies`).
const SCHEME: &str = "http";

/// What lacquer announces to the app it understands (tags for purging).
const SURROGATE_CAPABILITY: &str = "lacquer=\"Surrogate/1.0 tags/1\"";

/// The proxy: the reloadable config and app servers, the cache, the access log.
#[derive(Clone)]
pub(crate) struct LacquerProxy {
    live: SharedLive,
    cache: &'static CacheRuntime,
    access_log: Arc<AccessLog>,
    /// The other nodes purges are published to, when `cluster` is set.
    cluster: Option<&'static Cluster>,
}

impl LacquerProxy {
    /// A proxy serving `live`'s current config from the process's cache.
    pub(crate) fn new(
        live: SharedLive,
        cache: &'static CacheRuntime,
        access_log: Arc<AccessLog>,
        cluster: Option<&'static Cluster>,
    ) -> LacquerProxy {
        LacquerProxy {
            live,
            cache,
            access_log,
            cluster,
        }
    }
}

#[async_trait]
impl ProxyHttp for LacquerProxy {
    type CTX = RequestCtx;

    /// No downstream modules. pingora's default adds its response compression module switched
    /// off, which lacquer never switches on (pages go out as the app encoded them, so a stored
    /// variant and its `Vary: Accept-Encoding` stay what the app sent); left in, it still costs
    /// every request a context to allocate, two boxed filter calls and their frees.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Only a HEAD may spawn a subrequest: the GET that fills the cache for it (proxy/head.rs).
    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &RequestCtx) -> bool {
        session.req_header().method == http::Method::HEAD && session.subrequest_ctx.is_none()
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            live: self.live.load_full(),
            _in_flight: InFlight::enter(),
            started: Instant::now(),
            client: Client {
                addr: None,
                via_trusted: false,
                scheme: SCHEME,
            },
            original_target: None,
            upstream: None,
            upstream_started: None,
            upstream_time: None,
            upstream_counted: false,
            key: None,
            bypass: None,
            no_store: None,
            upstream_status: None,
            tries: 0,
            status: None,
            hit_for_miss: false,
            not_modified: None,
            purge: false,
            rule: None,
            refresh: false,
            head_fill_ended: false,
            shared_hit: false,
            url_hash: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if head::is_head_fill(session) {
            // the background fill for a HEAD asks for the whole object (proxy/head.rs)
            session.req_header_mut().set_method(http::Method::GET);
        }
        if !ctx.live.config.limits.underscores_in_headers {
            request::drop_underscore_fields(session.req_header_mut());
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // a TLS listener's requests are https whatever a header says
        let listener_scheme = match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
            Some(_) => "https",
            None => SCHEME,
        };
        ctx.client = edge::resolve(
            peer,
            session.req_header(),
            &ctx.live.config.trusted_proxies,
            listener_scheme,
        );
        let config = &ctx.live.config;
        if !config.rules.is_empty()
            && !matches!(
                session.req_header().method.as_str(),
                "PURGE" | "BAN" | "PURGEKEYS"
            )
        {
            ctx.rule = rules::find(&config.rules, session.req_header());
        }
        let rule = ctx.rule.and_then(|i| config.rules.get(i));
        let decision = policy::request_decision(session.req_header(), &config.bypass, rule);
        let strip_cookies = match decision {
            RequestDecision::Bypass(reason) => {
                ctx.bypass = Some(reason);
                return Ok(false);
            }
            RequestDecision::Purge => {
                ctx.purge = true;
                let live = ctx.live.clone();
                // boxed: a purge's state (parsing, bans, the cluster's acknowledgements) must
                // not enlarge every request's future, which pingora moves on each request
                Box::pin(self.handle_purge(session, &live, ctx.client)).await?;
                return Ok(true);
            }
            RequestDecision::Cache {
                strip_cookies,
                refresh,
            } => {
                // FOSHttpCache's refresh: fetch anew and replace, for a client allowed to purge
                ctx.refresh = refresh
                    && ctx
                        .live
                        .purge
                        .may_refresh(ctx.client.addr, session.req_header());
                strip_cookies
            }
        };
        let key = match RequestKey::from_request(
            ctx.client.scheme,
            session.req_header(),
            &ctx.live.config.cache.tracking_params,
        ) {
            Ok(k) => k,
            Err(e) => {
                session
                    .respond_error_with_body(400, bytes::Bytes::from_static(e.as_str().as_bytes()))
                    .await?;
                return Ok(true);
            }
        };
        // cookies only matter for what the cache serves: a URL whose last answer was not
        // storable goes to the app with all of them (Django's csrftoken, a flash message), and
        // its answer, rendered for them, is never stored
        if strip_cookies {
            // (hashed once: cache_key_callback takes this hash)
            let url = key.primary_hash();
            ctx.url_hash = Some(url);
            if self.cache.remembered_uncacheable(url) {
                ctx.bypass = Some(BypassReason::HitForMissCookies);
                return Ok(false);
            }
        }
        ctx.original_target = request::prepare_for_cache(
            session.req_header_mut(),
            &key,
            &ctx.live.config.cache,
            strip_cookies,
        )?;
        ctx.key = Some(key);
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.key.is_none() {
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(ctx.live.config.cache.lock_timeout);
        session.cache.enable(
            self.cache.storage,
            None, // moka bounds memory and evicts; pingora's eviction managers would drift
            // no predictor: a URL remembered as uncacheable still takes the cache lock, so a
            // stampede on it makes one fetch when its answer turns out cacheable after all
            // (waiters are released at once when it is not); see `hit_for_miss` below
            None,
            // the fill for a HEAD runs while the HEAD holds the lock (proxy/head.rs)
            (!head::is_head_fill(session)).then_some(self.cache.lock),
            Some(overrides),
        );
        let max = usize::try_from(ctx.live.config.cache.max_object_size).unwrap_or(usize::MAX);
        session.cache.set_max_file_size_bytes(max);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let key = ctx.key.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "cache enabled without a key")
        })?;
        // (request_filter may have hashed it already)
        let mut key = key.cache_key(ctx.url_hash);
        // the fetch's place in time relative to purges: a fill stamped before a purge that
        // covers it is not stored (compare before set, see cache/storage.rs)
        key.extensions
            .insert(FetchStamp(self.cache.storage.stamp()));
        Ok(key)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit_handler: &mut pingora_cache::storage::HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        ctx.shared_hit = self.cluster.is_some() && storage::is_shared_hit(hit_handler);
        // a refresh from a client allowed to purge: fetched anew, and the answer replaces it
        Ok(ctx
            .refresh
            .then_some(pingora_cache::ForcedFreshness::ForceMiss))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        vary::variance(meta.response_header(), req)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let now = SystemTime::now();
        // revalidation: pingora hands us the stored header with a few fields of the 304 merged
        let merged = match ctx.not_modified.take() {
            Some(nm) if resp.status.as_u16() != 304 => Some(merge_not_modified(resp, &nm)),
            _ => None,
        };
        let resp = merged.as_ref().unwrap_or(resp);
        // a 5xx never replaces a good stored object, whatever its Cache-Control says: the
        // stored copy stays for stale-if-error and the next revalidation
        if resp.status.is_server_error() && session.cache.maybe_cache_meta().is_some() {
            let reason = NoStoreReason::ErrorOverStored;
            ctx.no_store = Some(reason.as_str());
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                reason.as_str(),
            )));
        }
        let key = session.cache.maybe_cache_key();
        let defaults = Self::freshness_defaults(&ctx.live.config, ctx.rule);
        match freshness::assess(resp, &defaults, now) {
            Storability::Store(f) => {
                if let Some(k) = key {
                    self.cache.predictor.mark_cacheable(k);
                }
                Ok(RespCacheable::Cacheable(build_meta(resp, &f, now)))
            }
            Storability::DontStore(reason) => {
                ctx.no_store = Some(reason.as_str());
                let pingora_reason = match reason {
                    NoStoreReason::TooLarge => NoCacheReason::ResponseTooLarge,
                    other => NoCacheReason::Custom(other.as_str()),
                };
                if let Some(k) = key {
                    // (the predictor's own filter leaves out errors: see cache/mod.rs)
                    self.cache.predictor.mark_uncacheable(k, pingora_reason);
                    // the other nodes waiting for this fill stop waiting
                    self.cache.storage.shared_pass(k);
                }
                Ok(RespCacheable::Uncacheable(pingora_reason))
            }
        }
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // boxed, as purges are: only a HEAD holds this state
        if session.req_header().method == http::Method::HEAD
            && Box::pin(self.answer_head_from_fill(session, ctx)).await?
        {
            return Ok(false);
        }
        if session.cache.enabled() {
            // the URL's last answer was not storable: only a label (Cache-Status, metrics)
            ctx.hit_for_miss = session
                .cache
                .maybe_cache_key()
                .is_some_and(|k| !self.cache.predictor.cacheable_prediction(k));
            // a fetch for the cache, that other requests may be waiting for (coalescing): it
            // completes and is stored even if this client leaves (undone in response_filter
            // when the response is not stored)
            guard::keep_filling_without_client(
                session.as_downstream_mut(),
                ctx.live.config.cache.max_object_size,
            );
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.tries += 1;
        // an error here is the origin's side failing: stale-if-error may cover it
        let (peer, label) = ctx
            .live
            .upstreams_for(ctx.rule)
            .next_peer()
            .map_err(|e| e.into_up())?;
        ctx.upstream = Some(label);
        ctx.upstream_started = Some(Instant::now());
        ctx.upstream_counted = false;
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.count_upstream_failure();
        let m = metrics();
        // nothing was sent, so any method may try the next app server, once per server
        if ctx.tries <= ctx.live.config.retries {
            e.set_retry(true);
            m.upstream_retries.inc();
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        ctx.count_upstream_failure();
        let m = metrics();
        // a reset or timeout before any response: an idempotent request may try another app
        // server (pingora's default only retries on reused connections); anything else, or
        // once the response has begun, fails as it is
        let retry = session.req_header().method.is_idempotent()
            && ctx.upstream_status.is_none()
            && !session.as_ref().retry_buffer_truncated()
            && ctx.tries <= ctx.live.config.retries;
        e.set_retry(retry);
        if retry {
            m.upstream_retries.inc();
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(value) = edge::forwarded_for(peer, upstream_request, ctx.client.via_trusted) {
            upstream_request.insert_header("X-Forwarded-For", value)?;
        }
        // set, never passed through from an untrusted client: nobody may make the app believe
        // a request came over TLS
        upstream_request.insert_header("X-Forwarded-Proto", ctx.client.scheme)?;
        // Edge Architecture's capability header: WordPress's purge plugin sends its tags
        // (X-Cache-Tags) only to a cache that announces it understands them
        upstream_request.insert_header("Surrogate-Capability", SURROGATE_CAPABILITY)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(why) = upstream::unrelayable(upstream_response, session.req_header()) {
            // never relayed, never stored: the app server's answer cannot be framed as sent
            return Err(Error::explain(ErrorType::InvalidHTTPHeader, why).into_up());
        }
        if !upstream_response.status.is_informational() {
            let status = upstream_response.status.as_u16();
            ctx.upstream_status = Some(status);
            if let (Some(u), Some(t)) = (&ctx.upstream, ctx.upstream_started) {
                let elapsed = t.elapsed();
                ctx.upstream_time = Some(elapsed);
                let m = metrics();
                m.upstream_requests
                    .with_label_values(&[u.as_str(), status_class(status)])
                    .inc();
                m.upstream_response
                    .with_label_values(&[u.as_str()])
                    .observe(elapsed.as_secs_f64());
                ctx.upstream_counted = true;
            }
        }
        if upstream_response.status.as_u16() == 304 && session.cache.maybe_cache_meta().is_some() {
            ctx.not_modified = Some(Box::new(upstream_response.clone()));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let mut outcome = Outcome::from_cache(
            &session.cache,
            ctx.bypass,
            ctx.upstream_status,
            ctx.no_store,
        );
        if ctx.hit_for_miss && !outcome.stored {
            outcome.mark_hit_for_miss();
        }
        if ctx.shared_hit && outcome.status == CacheStatus::Hit {
            outcome.detail = Some("shared");
        }
        upstream_response.insert_header("Cache-Status", outcome.header_value())?;
        ctx.status = Some(outcome.status);
        if ctx.upstream_status.is_some() && !outcome.stored && head::is_head_fill(session) {
            // the GET filling for a HEAD has nothing to store: its body is not fetched for
            // nothing, and the HEAD (holding the lock) is released at once
            ctx.head_fill_ended = true;
            return Err(Error::explain(
                ErrorType::InternalError,
                "the fill for a HEAD is not storable",
            ));
        }
        // (a hit never went to the app, so it has nothing to undo)
        if ctx.upstream_status.is_some() && !outcome.stored {
            guard::fill_only_for_client(session.as_downstream_mut());
        }
        if outcome.status == CacheStatus::StaleIfError {
            // pingora closes the client connection after serving stale for a failed upstream;
            // say so, or a client would reuse it and see the close as an error
            session.set_keepalive(None);
            upstream_response.insert_header(http::header::CONNECTION, "close")?;
        }
        strip_cache_only_fields(upstream_response, &ctx.live.config.purge);
        if ctx.bypass == Some(BypassReason::Method) && session.subrequest_ctx.is_none() {
            let live = ctx.live.clone();
            Box::pin(self.invalidate_after_unsafe(session, upstream_response, &live, ctx.client))
                .await;
        }
        // last, so that nothing fails between this and the writing of the header
        keep_date(session, upstream_response, !outcome.served_from_memory());
        Ok(())
    }

    /// The fill for a HEAD that ends itself at an unstorable header is no failure.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        ctx.head_fill_ended
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.record_finished(session, e, ctx);
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // None: the client is gone, nothing can be sent
        let code = match upstream::failure_status(e) {
            Some((code, detail)) => {
                self.respond_failure(session, ctx, code, detail).await;
                code
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client's `If-None-Match` / `If-Modified-Since` against a stored response, with dates
    /// read as a cache must (see `cache/conditional.rs`).
    fn cache_not_modified_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<bool> {
        Ok(conditional::not_modified(
            session.req_header(),
            resp,
            SystemTime::now(),
        ))
    }

    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> RangeType {
        range::header_filter(session, resp)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // stale-while-revalidate: the stored object's own window decides (pingora checks it)
            None => true,
            // stale-if-error: only for failures of the origin side
            Some(e) => e.esource() == &ErrorSource::Upstream,
        }
    }
}
