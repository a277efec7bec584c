//! [`GuardedStream`]: a client connection held to `limits:`. It watches each request header
//! as it arrives (`scan.rs`) and answers 408/414/431 itself, closes idle keep-alive
//! connections, holds a small response header back so that a response leaves in one send,
//! puts a response's own `Date` back where pingora wrote its clock (`date.rs`), and keeps a
//! cache fill going when its client has left (within the budgets).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::HeaderValue;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

mod between;
mod fast;

use super::date::{self, Head};
use super::scan::{self, Body, HeaderScan, LimitBreach, Scan};
use crate::config::LimitsConfig;
use crate::metrics::metrics;

/// The watch over a connection between two requests.
#[derive(Debug)]
enum Phase {
    /// Waiting for the first byte of a request, since the instant given.
    Idle(Instant),
    /// Reading a request header that began at the instant given.
    Header(Instant, HeaderScan),
    /// The header is in: body and response bytes pass unwatched until re-armed. With a body
    /// of known length, what the client sends after it is its next request (pipelined): kept
    /// for then instead of handed to pingora, which would take it for data sent after the end
    /// of the body and fail the request.
    Passthrough(Body),
    /// A limit was passed: its response is being written.
    Refusing(LimitBreach),
}

/// A client connection held to [`LimitsConfig`]. Everything but reads passes straight through.
pub(crate) struct GuardedStream {
    inner: Stream,
    limits: LimitsConfig,
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
    /// Bytes read before the stream was guarded, handed out first.
    early: Vec<u8>,
    /// The connection speaks HTTP/1 (set by the HTTP/1 loop): request framing is followed.
    http1: bool,
    /// The first pieces of a request header that arrives in more than one read, kept to
    /// read its framing when it is whole.
    partial: Vec<u8>,
    /// The read that waits while a next request is kept (`between.rs`): woken when a `101`
    /// turns what follows into the upgraded protocol's bytes.
    parked: Option<std::task::Waker>,
    /// A small write (a response header) held back to go out with what follows in one
    /// `writev`; see [`HOLD_MAX`].
    held: Vec<u8>,
    /// The `Date` the response about to be written came with, to replace pingora's clock in
    /// its head (see [`keep_date`]).
    date: Mutex<Option<HeaderValue>>,
}

/// Writes are held back while together they stay within this size, until the next write or a
/// flush. pingora writes a response header and its body separately and flushes at the end;
/// with the header held, a cached response leaves in one send whatever its size (a small one
/// as one held buffer, a larger one as header and body in one `writev`, the body not copied),
/// without a per-connection write buffer (32 KiB that every idle keep-alive connection kept).
const HOLD_MAX: usize = 4096;

/// The buffer for a request's first bytes (read while waiting for it, `next_request`) is kept
/// between requests up to this size: a keep-alive connection reuses it instead of allocating
/// one per request, and an idle one holds at most this.
const EARLY_KEEP: usize = 1024;

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
    /// `early`: bytes already read off the connection (after a PROXY protocol header), which
    /// reads hand out first, watched like any others.
    pub(crate) fn new(inner: Stream, limits: LimitsConfig, early: Vec<u8>) -> GuardedStream {
        let now = Instant::now();
        GuardedStream {
            inner,
            limits,
            // (an HTTP/2 connection's preface, `PRI * HTTP/2.0\r\n\r\n`, ends like a header:
            // after it the guard passes the frames through, and pingora's h2 server never
            // re-arms it)
            phase: Phase::Idle(now),
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            rearm: AtomicBool::new(false),
            fill_budget: AtomicU64::new(0),
            gone: None,
            orphan: false,
            held: Vec::new(),
            early,
            http1: false,
            partial: Vec::new(),
            parked: None,
            date: Mutex::new(None),
        }
    }

    /// The connection is HTTP/1's: bodies are handed to pingora no further than their
    /// framing says, and what follows them is kept for the next request.
    pub(crate) fn follow_http1_framing(&mut self) {
        self.http1 = true;
    }

    /// pingora starts the connection's next request: its next bytes are a header to watch.
    pub(super) fn rearm(&self) {
        self.rearm.store(true, Ordering::Relaxed);
    }

    /// The current deadline, if the phase has one.
    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle(since) => Some(*since + self.limits.idle_timeout),
            Phase::Header(started, _) => Some(*started + self.limits.header_timeout),
            Phase::Passthrough(_) | Phase::Refusing(_) => None,
        }
    }

    /// Ready once the current phase's deadline has passed (never, for a phase without one).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline() else {
            return Poll::Pending;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx)
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
            // a response that never got written leaves nothing for the next one
            *this.date.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        }
        if this.gone.is_some() {
            return Poll::Ready(Ok(())); // the client left: end of stream
        }
        match this.phase {
            Phase::Passthrough(Body::Length(0)) => return this.poll_read_next_request(cx),
            Phase::Passthrough(body) => {
                let read = match body {
                    Body::Length(left) => this.poll_read_body(cx, buf, left),
                    Body::Unknown => this.poll_read_early_first(cx, buf),
                };
                return match read {
                    Poll::Ready(Err(_)) if this.start_discarding() => Poll::Ready(Ok(())),
                    other => other,
                };
            }
            Phase::Refusing(breach) => return this.poll_refuse(cx, breach),
            Phase::Idle(_) | Phase::Header(..) => {}
        }
        let before = buf.filled().len();
        match this.poll_read_early_first(cx, buf) {
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
                    Scan::More => {
                        if this.http1 {
                            // a header in pieces: its framing is read once it is whole
                            // (bounded: the scan refuses more than max_header_size)
                            this.partial.extend_from_slice(new);
                        }
                        Poll::Ready(Ok(()))
                    }
                    Scan::Complete(end) => {
                        // one request header at a time: what follows it (a body, or the
                        // next request of a pipelining client) is handed out after it, so
                        // the next header is watched too and pingora never reads past it
                        let filled = buf.filled();
                        let body = if !this.http1 {
                            // HTTP/2's preface: frames follow, never a request header
                            Body::Unknown
                        } else if this.partial.is_empty() {
                            scan::body_of(&filled[before..before + end])
                        } else {
                            this.partial
                                .extend_from_slice(&filled[before..before + end]);
                            let body = scan::body_of(&this.partial);
                            this.partial = Vec::new();
                            body
                        };
                        let rest = &filled[before + end..];
                        if !rest.is_empty() {
                            this.early.splice(0..0, rest.iter().copied());
                            buf.set_filled(before + end);
                        }
                        this.phase = Phase::Passthrough(body);
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
                if this.poll_deadline(cx).is_pending() {
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

    /// When a `Date` is to be kept and `data` is the final response head, hold the head with
    /// that `Date` in place of pingora's; whether it did (all of `data` is then taken).
    fn hold_with_kept_date(&mut self, data: &[u8]) -> bool {
        let slot = self.date.get_mut().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            return false;
        }
        let range = match date::head(data) {
            Head::Final(range) => range,
            Head::Interim | Head::Other => return false,
        };
        let (Some(kept), Some(range)) = (slot.take(), range) else {
            return false;
        };
        // one allocation for the whole head, not one per growth step
        self.held
            .reserve(data.len() - range.len() + kept.as_bytes().len());
        self.held.extend_from_slice(&data[..range.start]);
        self.held.extend_from_slice(kept.as_bytes());
        self.held.extend_from_slice(&data[range.end..]);
        true
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
        if matches!(this.phase, Phase::Passthrough(Body::Length(0)))
            && (data.starts_with(b"HTTP/1.1 101") || data.starts_with(b"HTTP/1.0 101"))
        {
            // the app switched protocols: what the client sent after its request, and sends
            // from now on, is the new protocol's, for pingora to relay
            this.phase = Phase::Passthrough(Body::Unknown);
            if let Some(reader) = this.parked.take() {
                reader.wake();
            }
        }
        // (held whatever its size: the next write or the flush sends it)
        if this.hold_with_kept_date(data) {
            return Poll::Ready(Ok(data.len()));
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

impl Ssl for GuardedStream {
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

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

pub(super) fn guarded(session: &ServerSession) -> Option<&GuardedStream> {
    session
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
}

/// This request fetches an object that other requests may be waiting for (coalescing): if its
/// client goes away, the fetch must still complete and be stored, or every waiter would start
/// over. pingora keeps a fill going after the client leaves only with streaming partial writes
/// in the storage; instead, the client's close is tolerated on reads and, once the client is
/// gone, up to `budget` bytes of response are discarded as if delivered.
pub(crate) fn keep_filling_without_client(session: &mut ServerSession, budget: u64) {
    session.set_abort_on_close(false);
    if let Some(g) = guarded(session) {
        g.fill_budget.store(budget.max(1), Ordering::Relaxed);
    }
}

/// The response about to be written came with this `Date` (the app's, or the stored one on a
/// hit): it goes out with it instead of pingora's clock (HTTP/1 only; see `date.rs`).
pub(crate) fn keep_date(session: &mut ServerSession, value: &HeaderValue) {
    if let Some(g) = guarded(session) {
        *g.date.lock().unwrap_or_else(PoisonError::into_inner) = Some(value.clone());
    }
}

/// The response will not be stored after all: the client's departure ends the request again.
pub(crate) fn fill_only_for_client(session: &mut ServerSession) {
    session.set_abort_on_close(true);
    if let Some(g) = guarded(session) {
        g.fill_budget.store(0, Ordering::Relaxed);
    }
}
