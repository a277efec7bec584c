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
//! Not here: the limits' config keys (`config/mod.rs`) and what happens to a request once
//! its header is in (`proxy.rs`).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::live::SharedLive;
use crate::metrics::metrics;

/// The limits one connection is held to (`limits:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Request line and header fields together, in bytes.
    pub max_header_size: usize,
    /// Header fields (lines after the request line).
    pub max_headers: usize,
    /// The request target (path and query, or absolute form), in bytes.
    pub max_url_length: usize,
    /// From the first byte of a request to the end of its header.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request started is closed after this long.
    pub idle_timeout: Duration,
    /// Client connections open at once (proxy listeners); one more is answered 503 and closed.
    pub max_connections: usize,
    /// Fills that may go on at once after their clients left (each keeps its app request).
    pub max_orphan_fills: usize,
    /// Forward header fields whose names contain `_` (nginx's `underscores_in_headers`). Off:
    /// they are dropped, since CGI-style servers read `X_Forwarded_Host` as `X-Forwarded-Host`.
    pub underscores_in_headers: bool,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_header_size: 32 * 1024,
            max_headers: 100,
            max_url_length: 8 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16384,
            max_orphan_fills: 64,
            underscores_in_headers: false,
        }
    }
}

/// Why a request header was refused; the `reason` label of
/// `lacquer_client_limit_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBreach {
    /// The header did not arrive within `header_timeout`: 408.
    HeaderTimeout,
    /// The request target is longer than `max_url_length`: 414.
    UrlTooLong,
    /// The header is larger than `max_header_size`: 431.
    HeaderTooLarge,
    /// More than `max_headers` fields: 431.
    TooManyHeaders,
}

impl LimitBreach {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitBreach::HeaderTimeout => "header_timeout",
            LimitBreach::UrlTooLong => "url_too_long",
            LimitBreach::HeaderTooLarge => "header_too_large",
            LimitBreach::TooManyHeaders => "too_many_headers",
        }
    }

    /// The whole response sent before closing the connection.
    fn response(self) -> &'static [u8] {
        match self {
            LimitBreach::HeaderTimeout => {
                b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            LimitBreach::UrlTooLong => {
                b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            LimitBreach::HeaderTooLarge | LimitBreach::TooManyHeaders => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

/// Where the watch over one request header stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Inside a line.
    Text,
    /// Just after a line feed.
    AfterLf,
    /// A line feed then a carriage return: a further line feed ends the header.
    AfterLfCr,
}

/// Counts over the bytes of one request header, as they arrive. Line ends are LF with an
/// optional CR, as httparse accepts them, so the header ends where pingora's parser ends it.
#[derive(Debug, Clone)]
struct HeaderScan {
    bytes: usize,
    /// Lines completed, the request line included.
    lines: usize,
    /// Spaces seen on the request line (the target is between the first and the second).
    spaces: usize,
    target: usize,
    /// A byte other than CR or LF has been seen (empty lines before a request are skipped).
    content: bool,
    state: LineState,
}

/// What [`HeaderScan::feed`] found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// All bytes belong to an unfinished header.
    More,
    /// The header ended within the bytes fed.
    Complete,
    /// A limit was passed.
    Breach(LimitBreach),
}

impl HeaderScan {
    fn new() -> HeaderScan {
        HeaderScan {
            bytes: 0,
            lines: 0,
            spaces: 0,
            target: 0,
            content: false,
            state: LineState::AfterLf,
        }
    }

    fn feed(&mut self, data: &[u8], limits: &ClientLimits) -> Scan {
        let mut rest = data;
        while !rest.is_empty() {
            // within a line, ordinary bytes only add to the lengths: take a run of them in
            // one search instead of stepping through the state machine byte by byte (a header
            // field line runs to its LF; the request line stops at spaces and CR too)
            if self.state == LineState::Text {
                let run = if self.lines > 0 {
                    rest.iter().position(|&b| b == b'\n')
                } else {
                    rest.iter()
                        .position(|&b| b == b'\n' || b == b' ' || b == b'\r')
                }
                .unwrap_or(rest.len());
                // the byte of the run at which each limit would be passed (1-based): the one
                // passed first is the answer, the size limit on a tie, as byte by byte
                let in_target = self.lines == 0 && self.spaces == 1;
                let size_at = (limits.max_header_size + 1).saturating_sub(self.bytes);
                let url_at = if in_target {
                    (limits.max_url_length + 1).saturating_sub(self.target)
                } else {
                    usize::MAX
                };
                if run >= size_at.min(url_at) {
                    return Scan::Breach(if size_at <= url_at {
                        LimitBreach::HeaderTooLarge
                    } else {
                        LimitBreach::UrlTooLong
                    });
                }
                self.bytes += run;
                if in_target {
                    self.target += run;
                }
                rest = &rest[run..];
                if rest.is_empty() {
                    break;
                }
            }
            let b = rest[0];
            rest = &rest[1..];
            self.bytes += 1;
            if self.bytes > limits.max_header_size {
                return Scan::Breach(LimitBreach::HeaderTooLarge);
            }
            match b {
                b'\n' => {
                    if !self.content {
                        continue;
                    }
                    if self.state != LineState::Text {
                        return Scan::Complete;
                    }
                    self.lines += 1;
                    // the request line is not a header field
                    if self.lines > limits.max_headers + 1 {
                        return Scan::Breach(LimitBreach::TooManyHeaders);
                    }
                    self.state = LineState::AfterLf;
                }
                b'\r' => {
                    if self.state == LineState::AfterLf && self.content {
                        self.state = LineState::AfterLfCr;
                    }
                }
                _ => {
                    self.content = true;
                    self.state = LineState::Text;
                    if self.lines == 0 {
                        if b == b' ' {
                            self.spaces += 1;
                        } else if self.spaces == 1 {
                            self.target += 1;
                            if self.target > limits.max_url_length {
                                return Scan::Breach(LimitBreach::UrlTooLong);
                            }
                        }
                    }
                }
            }
        }
        Scan::More
    }
}

/// The watch over a connection between two requests.
#[derive(Debug)]
enum Phase {
    /// Waiting for the first byte of a request, since the instant given.
    Idle(Instant),
    /// Reading a request header that began at the instant given.
    Header(Instant, HeaderScan),
    /// The header is in: body and response bytes pass unwatched until re-armed.
    Passthrough,
    /// A limit was passed: its response is being written.
    Refusing(LimitBreach),
}

/// A client connection held to [`ClientLimits`]. Everything but reads passes straight through.
pub struct GuardedStream {
    inner: Stream,
    limits: ClientLimits,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    /// Set by [`PerRequest`] when pingora starts the next request: the next bytes are a header.
    rearm: AtomicBool,
    /// Bytes of response this request may still discard if its client goes away mid-fill
    /// (0: the client's departure ends the request, as usual). See [`keep_filling_without_client`].
    fill_budget: AtomicU64,
    /// The client is gone: writes are discarded (within the budget), reads see the end.
    gone: Option<u64>,
    /// This connection holds one of the `max_orphan_fills` places.
    orphan: bool,
    /// A small write (a response header) held back to go out with what follows in one
    /// `writev`; see [`HOLD_MAX`].
    held: Vec<u8>,
}

/// Writes are held back while together they stay within this size, until the next write or a
/// flush. pingora writes a response header and its body separately and flushes at the end;
/// with the header held, a cached response leaves in one send whatever its size (a small one
/// as one held buffer, a larger one as header and body in one `writev`, the body not copied),
/// without a per-connection write buffer (32 KiB that every idle keep-alive connection kept).
const HOLD_MAX: usize = 4096;

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl GuardedStream {
    /// Watch `inner` under `limits`, starting idle.
    pub fn new(inner: Stream, limits: ClientLimits) -> GuardedStream {
        let now = Instant::now();
        GuardedStream {
            inner,
            limits,
            phase: Phase::Idle(now),
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            rearm: AtomicBool::new(false),
            fill_budget: AtomicU64::new(0),
            gone: None,
            orphan: false,
            held: Vec::new(),
        }
    }

    /// The current deadline, if the phase has one.
    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle(since) => Some(*since + self.limits.idle_timeout),
            Phase::Header(started, _) => Some(*started + self.limits.header_timeout),
            Phase::Passthrough | Phase::Refusing(_) => None,
        }
    }

    /// Send the refusal (held like any small write); once it is out, fail the read so pingora
    /// closes the connection.
    fn poll_refuse(&mut self, cx: &mut Context<'_>, breach: LimitBreach) -> Poll<io::Result<()>> {
        if let Poll::Ready(Err(e)) = self.poll_write_held(cx) {
            return Poll::Ready(Err(e));
        }
        if !self.held.is_empty() || Pin::new(&mut self.inner).poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("client limit: {}", breach.as_str()),
        )))
    }

    fn refuse(&mut self, cx: &mut Context<'_>, breach: LimitBreach) -> Poll<io::Result<()>> {
        metrics()
            .client_limit_rejections
            .with_label_values(&[breach.as_str()])
            .inc();
        self.held.extend_from_slice(breach.response());
        self.phase = Phase::Refusing(breach);
        self.poll_refuse(cx, breach)
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rearm.swap(false, Ordering::Relaxed) {
            this.phase = Phase::Idle(Instant::now());
            this.fill_budget.store(0, Ordering::Relaxed);
        }
        if this.gone.is_some() {
            return Poll::Ready(Ok(())); // the client left: end of stream
        }
        match this.phase {
            Phase::Passthrough => {
                return match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Ready(Err(_)) if this.start_discarding() => Poll::Ready(Ok(())),
                    other => other,
                }
            }
            Phase::Refusing(breach) => return this.poll_refuse(cx, breach),
            Phase::Idle(_) | Phase::Header(..) => {}
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(())); // end of stream
                }
                if let Phase::Idle(_) = this.phase {
                    this.phase = Phase::Header(Instant::now(), HeaderScan::new());
                }
                let Phase::Header(_, scan) = &mut this.phase else {
                    return Poll::Ready(Ok(()));
                };
                match scan.feed(new, &this.limits) {
                    Scan::More => Poll::Ready(Ok(())),
                    Scan::Complete => {
                        this.phase = Phase::Passthrough;
                        Poll::Ready(Ok(()))
                    }
                    Scan::Breach(breach) => {
                        // pingora never sees the offending bytes
                        buf.set_filled(before);
                        this.refuse(cx, breach)
                    }
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.deadline() else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match this.phase {
                    // an idle keep-alive connection: close it quietly, as at end of stream
                    Phase::Idle(_) => {
                        metrics().client_idle_closed.inc();
                        Poll::Ready(Ok(()))
                    }
                    _ => this.refuse(cx, LimitBreach::HeaderTimeout),
                }
            }
        }
    }
}

/// Fills going on after their clients left, in the whole process.
static ORPHAN_FILLS: AtomicUsize = AtomicUsize::new(0);

impl Drop for GuardedStream {
    fn drop(&mut self) {
        if self.orphan {
            ORPHAN_FILLS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl GuardedStream {
    /// The client is gone while a fill it started is under way: from now on pretend to
    /// deliver, so pingora finishes reading the app's response into the cache. Returns false
    /// when no fill is to be kept going (the error then ends the request as usual).
    fn start_discarding(&mut self) -> bool {
        let budget = self.fill_budget.load(Ordering::Relaxed);
        if budget == 0 {
            return false;
        }
        if self.gone.is_none() {
            // each orphan fill keeps an app request going for nobody in particular: a flood
            // of requests that leave at once must not turn into as many app fetches
            if ORPHAN_FILLS.fetch_add(1, Ordering::Relaxed) >= self.limits.max_orphan_fills {
                ORPHAN_FILLS.fetch_sub(1, Ordering::Relaxed);
                metrics().client_gone_fills_refused.inc();
                return false;
            }
            self.orphan = true;
            metrics().client_gone_fills.inc();
            self.gone = Some(budget);
        }
        true
    }

    /// Account for `len` discarded bytes; past the budget the write fails after all.
    fn discard(&mut self, len: usize) -> Poll<io::Result<usize>> {
        match self.gone {
            Some(left) if left >= len as u64 => {
                self.gone = Some(left - len as u64);
                Poll::Ready(Ok(len))
            }
            _ => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

impl GuardedStream {
    /// Write `data` after the held bytes, in one `writev` where the socket takes it all;
    /// returns how much of `data` was written.
    fn poll_write_after_held(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        while !self.held.is_empty() {
            let bufs = [io::IoSlice::new(&self.held), io::IoSlice::new(data)];
            let held = self.held.len();
            match Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) if n < held => {
                    self.held.drain(..n);
                }
                Poll::Ready(Ok(n)) => {
                    self.release_held();
                    if n > held {
                        return Poll::Ready(Ok(n - held));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    /// Send whatever is held.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.release_held();
        Poll::Ready(Ok(()))
    }

    /// An idle connection keeps no buffer of more than a small header's size.
    fn release_held(&mut self) {
        self.held.clear();
        if self.held.capacity() > 1024 {
            self.held = Vec::new();
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.gone.is_some() {
            return this.discard(data.len());
        }
        if this.held.len() + data.len() <= HOLD_MAX {
            this.held.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        match this.poll_write_after_held(cx, data) {
            Poll::Ready(Err(_)) if this.start_discarding() => this.discard(data.len()),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gone.is_some() {
            return Poll::Ready(Ok(()));
        }
        let result = match this.poll_write_held(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        };
        match result {
            Poll::Ready(Err(_)) if this.start_discarding() => Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gone.is_some() {
            return Poll::Ready(Ok(()));
        }
        match this.poll_write_held(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

fn guarded(session: &ServerSession) -> Option<&GuardedStream> {
    session
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
}

/// This request fetches an object that other requests may be waiting for (coalescing): if its
/// client goes away, the fetch must still complete and be stored, or every waiter would start
/// over. pingora keeps a fill going after the client leaves only with streaming partial writes
/// in the storage; instead, the client's close is tolerated on reads and, once the client is
/// gone, up to `budget` bytes of response are discarded as if delivered.
pub fn keep_filling_without_client(session: &mut ServerSession, budget: u64) {
    session.set_abort_on_close(false);
    if let Some(g) = guarded(session) {
        g.fill_budget.store(budget.max(1), Ordering::Relaxed);
    }
}

/// The response will not be stored after all: the client's departure ends the request again.
pub fn fill_only_for_client(session: &mut ServerSession) {
    session.set_abort_on_close(true);
    if let Some(g) = guarded(session) {
        g.fill_budget.store(0, Ordering::Relaxed);
    }
}

/// A pingora HTTP app behind [`GuardedStream`]s: each accepted connection is wrapped under
/// the limits of the config generation current at accept time, and re-armed before each
/// request's header is read.
pub struct LimitedApp<H> {
    inner: Arc<PerRequest<H>>,
    live: SharedLive,
    /// Connections of this listener service open now (`limits.max_connections`).
    open: Arc<AtomicUsize>,
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
    /// Wrap `inner`, reading the limits from `live`.
    pub fn new(inner: H, live: SharedLive) -> LimitedApp<H> {
        LimitedApp {
            inner: Arc::new(PerRequest {
                inner: Arc::new(inner),
            }),
            live,
            open: Arc::default(),
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
        let stream: Stream = Box::new(GuardedStream::new(stream, limits));
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// The HTTP app inside: pingora calls it once per request on a connection, after the previous
/// request's body was drained and before the next header is read, which is exactly where
/// the watch over a new header must begin.
pub struct PerRequest<H> {
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
            g.rearm.store(true, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits small enough for a test to pass them: header size, header fields, target length.
    fn small_limits(
        max_header_size: usize,
        max_headers: usize,
        max_url_length: usize,
    ) -> ClientLimits {
        ClientLimits {
            max_header_size,
            max_headers,
            max_url_length,
            ..ClientLimits::default()
        }
    }

    fn scan(data: &[u8], limits: &ClientLimits) -> Scan {
        HeaderScan::new().feed(data, limits)
    }

    fn scan_in_pieces(data: &[u8], limits: &ClientLimits) -> Scan {
        let mut s = HeaderScan::new();
        for b in data.chunks(1) {
            match s.feed(b, limits) {
                Scan::More => {}
                other => return other,
            }
        }
        Scan::More
    }

    #[test]
    fn header_ends_where_httparse_ends_it() {
        let l = ClientLimits::default();
        for (text, want) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], Scan::Complete),
            (b"GET / HTTP/1.1\nHost: a\n\n", Scan::Complete),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Scan::Complete),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Scan::More),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", Scan::More),
            // empty lines before a request do not end it
            (b"\r\n\r\n\nGET / HTTP/1.1\r\n", Scan::More),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", Scan::Complete),
        ] {
            assert_eq!(scan(text, &l), want, "{:?}", String::from_utf8_lossy(text));
            assert_eq!(scan_in_pieces(text, &l), want, "byte by byte");
        }
    }

    #[test]
    fn limits_are_exact() {
        let l = small_limits(64, 2, 10);
        let target = |n: usize| format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(n - 1));
        assert_eq!(scan(target(10).as_bytes(), &l), Scan::Complete);
        assert_eq!(
            scan(target(11).as_bytes(), &l),
            Scan::Breach(LimitBreach::UrlTooLong)
        );
        let two = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\n\r\n";
        assert_eq!(scan(two, &l), Scan::Complete);
        let three = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(scan(three, &l), Scan::Breach(LimitBreach::TooManyHeaders));
        let exactly_64 = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(41));
        assert_eq!(exactly_64.len(), 64);
        assert_eq!(scan(exactly_64.as_bytes(), &l), Scan::Complete);
        let over = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(42));
        assert_eq!(
            scan(over.as_bytes(), &l),
            Scan::Breach(LimitBreach::HeaderTooLarge)
        );
    }

    /// The scan's rules stepped one byte at a time, the obvious way: the oracle for the
    /// run-skipping [`HeaderScan::feed`].
    fn byte_by_byte(data: &[u8], l: &ClientLimits) -> Scan {
        let (mut bytes, mut lines, mut spaces, mut target) = (0, 0, 0, 0);
        let (mut content, mut state) = (false, LineState::AfterLf);
        for &b in data {
            bytes += 1;
            if bytes > l.max_header_size {
                return Scan::Breach(LimitBreach::HeaderTooLarge);
            }
            match b {
                b'\n' if !content => {}
                b'\n' if state != LineState::Text => return Scan::Complete,
                b'\n' => {
                    lines += 1;
                    if lines > l.max_headers + 1 {
                        return Scan::Breach(LimitBreach::TooManyHeaders);
                    }
                    state = LineState::AfterLf;
                }
                b'\r' => {
                    if state == LineState::AfterLf && content {
                        state = LineState::AfterLfCr;
                    }
                }
                _ => {
                    content = true;
                    state = LineState::Text;
                    if lines == 0 && b == b' ' {
                        spaces += 1;
                    } else if lines == 0 && spaces == 1 {
                        target += 1;
                        if target > l.max_url_length {
                            return Scan::Breach(LimitBreach::UrlTooLong);
                        }
                    }
                }
            }
        }
        Scan::More
    }

    #[test]
    fn the_scan_agrees_with_the_byte_by_byte_rules() {
        // every string over a small alphabet of the bytes that matter, up to a length, under
        // limits small enough to be passed
        let l = small_limits(6, 1, 2);
        let alphabet = [b'a', b' ', b'\r', b'\n'];
        for len in 0..=8u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut input = Vec::new();
                for _ in 0..len {
                    input.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(
                    scan(&input, &l),
                    byte_by_byte(&input, &l),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_answer() {
        let l = small_limits(64, 2, 10);
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(41));
        let over = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(42));
        let url_first = format!("GET /{} HTTP/1.1\r\n\r\n", "u".repeat(70));
        let size_first = format!("GET /a HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(70));
        let inputs: [&[u8]; 8] = [
            long.as_bytes(),
            over.as_bytes(),
            url_first.as_bytes(),
            size_first.as_bytes(),
            b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\na: x\ry\r\n\r\n",
            b"\r\nGET /abcdefghijk HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\r\n",
        ];
        assert_eq!(
            scan(url_first.as_bytes(), &l),
            Scan::Breach(LimitBreach::UrlTooLong)
        );
        assert_eq!(
            scan(size_first.as_bytes(), &l),
            Scan::Breach(LimitBreach::HeaderTooLarge)
        );
        for input in inputs {
            let whole = scan(input, &l);
            assert_eq!(
                whole,
                byte_by_byte(input, &l),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(scan_in_pieces(input, &l), whole);
            for cut in 0..input.len() {
                let mut s = HeaderScan::new();
                let got = match s.feed(&input[..cut], &l) {
                    Scan::More => s.feed(&input[cut..], &l),
                    other => other,
                };
                assert_eq!(
                    got,
                    whole,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn the_url_limit_counts_only_the_target() {
        let l = ClientLimits {
            max_url_length: 4,
            ..ClientLimits::default()
        };
        assert_eq!(scan(b"PROPFIND /abc HTTP/1.1\r\n\r\n", &l), Scan::Complete);
        assert_eq!(
            scan_in_pieces(b"GET /abcd HTTP/1.1\r\n\r\n", &l),
            Scan::Breach(LimitBreach::UrlTooLong)
        );
    }
}
