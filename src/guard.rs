//! Client limits that pingora does not enforce itself: the whole request header within
//! `limits.header_timeout` (slowloris), a bounded header size, header count and URL length,
//! and an idle timeout for keep-alive connections.
//!
//! pingora 0.9 reads a request header with a per-read timeout (60 s) and a 1 MiB cap, both
//! fixed: a client sending one byte every 59 s holds a connection and its buffer for a very
//! long time. So every accepted connection is wrapped in a [`GuardedStream`] that watches the
//! bytes of each request header *before* pingora's parser sees them, and answers itself:
//! `408` when the header is not complete in time, `414` for a request target over
//! `limits.max_url_length`, `431` for a header over `limits.max_header_size` or with more than
//! `limits.max_headers` fields; then the connection is closed. A connection that sends nothing
//! for `limits.idle_timeout` is closed silently (Varnish's `timeout_idle`, nginx's
//! `keepalive_timeout`).
//!
//! The stream cannot know where a request's body ends, so it stops watching at the end of
//! each header; [`PerRequest`] re-arms it when pingora starts on the connection's next
//! request (after the previous body was drained). Bodies (uploads) are never timed here:
//! pingora's per-read timeout covers them.
//!
//! The same stream puts a response's own `Date` back in the head pingora wrote, where pingora
//! sets its clock (`guard/date.rs`).
//!
//! HTTP/1 connections are looped over here rather than in pingora: each request's pingora
//! session (and its large per-request future) is made only once the request's first bytes are
//! in, so an idle keep-alive connection holds little more than its stream.
//!
//! Parts: `guard/scan.rs` (the pure header watch), `guard/date.rs` (the `Date` in a response
//! head), `guard/stream.rs` (the guarded stream);
//! here the pingora app wrappers that put every accepted connection behind one, and the
//! connection cap. Not here: the limits' config keys (`config.rs`, `LimitsConfig`) and what
//! happens to a request once its header is in (`proxy.rs`).

mod date;
mod scan;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp,
};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::{Shutdown, SocketDigest, Stream};
use pingora_core::protocols::{Ssl, ALPN};
use pingora_core::server::ShutdownWatch;

use crate::edge::proxy_protocol;
use crate::fast_path::FastPath;
use crate::live::SharedLive;
use crate::metrics::metrics;
use stream::guarded;
pub(crate) use stream::GuardedStream;
pub(crate) use stream::{fill_only_for_client, keep_date, keep_filling_without_client};

/// A pingora HTTP app behind [`GuardedStream`]s: each accepted connection is wrapped under
/// the limits of the config generation current at accept time, and re-armed before each
/// request's header is read.
pub(crate) struct LimitedApp<H> {
    inner: Arc<PerRequest<H>>,
    live: SharedLive,
    /// Connections of this listener service open now (`limits.max_connections`).
    open: Arc<AtomicUsize>,
    /// Every connection opens with a PROXY protocol header carrying the client's address.
    proxy_protocol: bool,
    /// Plain fresh hits answered before pingora's session is made (the proxy listeners).
    fast: Option<FastPath>,
}

/// One open connection, counted until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer to a connection over `limits.max_connections`, before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl<H> LimitedApp<H> {
    /// Wrap `inner`, reading the limits from `live`; HTTP/1 requests are offered to `fast`
    /// first.
    pub(crate) fn new(
        inner: H,
        live: SharedLive,
        proxy_protocol: bool,
        fast: Option<FastPath>,
    ) -> LimitedApp<H> {
        LimitedApp {
            inner: Arc::new(PerRequest {
                inner: Arc::new(inner),
            }),
            live,
            open: Arc::default(),
            proxy_protocol,
            fast,
        }
    }
}

#[async_trait]
impl<H: HttpServerApp + Send + Sync + 'static> ServerApp for LimitedApp<H> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.live.load().config.limits;
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let _counted = OpenConnection(self.open.clone());
        if open > limits.max_connections {
            // a clear refusal instead of a silent stall: memory stays bounded, and a client
            // (or the load balancer in front) can try again or elsewhere
            metrics()
                .client_limit_rejections
                .with_label_values(&["max_connections"])
                .inc();
            let mut stream = stream;
            let refuse = async {
                use tokio::io::AsyncWriteExt;
                stream.write_all(TOO_MANY_CONNECTIONS).await?;
                stream.flush().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
            stream.shutdown().await;
            return None;
        }
        let mut stream = stream;
        let mut early = Vec::new();
        if self.proxy_protocol {
            // before anything else, within the header timeout: a connection that does not
            // open with a valid header is closed unanswered (it is not speaking to us)
            match proxy_protocol::read_header(&mut stream, limits.header_timeout).await {
                Ok((client, rest)) => {
                    if let Some(addr) = client {
                        // what pingora, the purge gate and the log take as the peer
                        let digest = SocketDigest::from_raw_fd(stream.id());
                        let _ = digest.peer_addr.set(Some(PeerAddr::Inet(addr)));
                        stream.set_socket_digest(digest);
                    }
                    early = rest;
                }
                Err(e) => {
                    log::debug!("PROXY protocol: {e}");
                    // a connection closed before its header is a TCP probe (a load
                    // balancer's health check), not a refusal
                    if e.kind() != std::io::ErrorKind::UnexpectedEof {
                        metrics()
                            .client_limit_rejections
                            .with_label_values(&["proxy_protocol"])
                            .inc();
                    }
                    stream.shutdown().await;
                    return None;
                }
            }
        }
        let guarded = Box::new(GuardedStream::new(stream, limits, early));
        let custom = self
            .inner
            .server_options()
            .is_some_and(|o| o.h2c || o.force_custom);
        let h1 = !custom
            && !matches!(
                guarded.selected_alpn_proto(),
                Some(ALPN::H2 | ALPN::Custom(_))
            );
        if !h1 {
            // HTTP/2 (TLS with ALPN h2): pingora's own connection handling
            let stream: Stream = guarded;
            return self.inner.process_new(stream, shutdown).await;
        }
        self.serve_http1(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

impl<H: HttpServerApp + Send + Sync + 'static> LimitedApp<H> {
    /// An HTTP/1 connection, request after request, as pingora's own loop does it, but each
    /// request's session (and pingora's per-request future with it, about 14 KB) is made only
    /// once the request's first bytes are in: an idle keep-alive connection holds its stream
    /// and this loop, nothing more.
    async fn serve_http1(
        self: &Arc<Self>,
        mut guarded: Box<GuardedStream>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // (with HTTP/1.1 pipelining switched on, the settings could carry the next request's
        // bytes already read: then `next_request` would wait for bytes that never come and
        // those would bypass the guard's watch. Neither lacquer nor pingora-proxy enables it.)
        guarded.follow_http1_framing();
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut stopping = shutdown.clone();
        // one wait for the stop for the whole connection, not one made (and registered with
        // the watch) for each request
        let stop = stopping.changed();
        tokio::pin!(stop);
        let request_limit = self
            .inner
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        loop {
            let begins = tokio::select! {
                biased;
                b = guarded.next_request() => b,
                // a graceful stop closes idle connections
                _ = &mut stop => false,
            };
            if !begins {
                // dropped, which closes it (as pingora did): no TLS close_notify to wait on
                // for a client that reset or stopped reading
                return None;
            }
            // (not when stopping: pingora then closes after the response; not with a request
            // limit per connection, which pingora's sessions count)
            let stopping_now = *shutdown.borrow();
            if let (Some(fast), false, None) = (&self.fast, stopping_now, request_limit) {
                // boxed: its state while it writes (the answer, the request kept for the log)
                // lives only while it runs, not in every idle connection's future
                match Box::pin(guarded.serve_fast(fast)).await {
                    Some(true) => continue,
                    Some(false) => {
                        // as pingora ends a connection after `Connection: close`: a FIN (and
                        // a TLS close_notify) after the answer, bounded for a client that
                        // stopped reading
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), guarded.shutdown()).await;
                        return None;
                    }
                    None => {}
                }
            }
            let stream: Stream = guarded;
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    // as pingora's own loop: 60 s, none when stopping, its request limit
                    let keepalive = (!*shutdown.borrow()).then_some(60);
                    session.set_keepalive(keepalive);
                    session.set_keepalive_reuses_remaining(request_limit);
                }
            }
            let (stream, next) = self
                .inner
                .process_new_http(session, shutdown)
                .await?
                .consume();
            settings = next;
            guarded = stream.into_any().downcast::<GuardedStream>().ok()?;
        }
    }
}

/// The HTTP app inside: pingora calls it once per request on a connection, after the previous
/// request's body was drained and before the next header is read, which is exactly where
/// the watch over a new header must begin.
pub(crate) struct PerRequest<H> {
    inner: Arc<H>,
}

/// The future of one request, as pingora's `async_trait`-based traits return it.
type RequestFuture<'a> = Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'a>>;

#[async_trait]
impl<H: HttpServerApp + Send + Sync + 'static> HttpServerApp for PerRequest<H> {
    // Written out rather than `async fn`: this re-arms the guard and hands back the inner
    // app's own boxed future, instead of boxing a second future around it (one allocation and
    // one copy of the session fewer per request; docs/benchmarks.md).
    fn process_new_http<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        session: ServerSession,
        shutdown: &'life1 ShutdownWatch,
    ) -> RequestFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        if let Some(g) = guarded(&session) {
            g.rearm();
        }
        self.inner.process_new_http(session, shutdown)
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}
