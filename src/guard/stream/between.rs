//! Between requests on a guarded connection: the wait for the next request (its first bytes
//! kept), a body handed to pingora no further than its length, and a pipelining client's next
//! request kept for its turn.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use super::{Body, GuardedStream, Phase, EARLY_KEEP};
use crate::metrics::metrics;

impl GuardedStream {
    /// Read what is left of the bytes already read first, then from the connection.
    pub(super) fn poll_read_early_first(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.early.is_empty() || buf.remaining() == 0 {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.early.len().min(buf.remaining());
        buf.put_slice(&self.early[..n]);
        self.consume_early(n);
        Poll::Ready(Ok(()))
    }

    /// A read after the header of a request without a body: pingora only looks for the
    /// client's close there. The end of the stream (or an error) is passed on; bytes are the
    /// next request's, kept for it, and this read waits for good (pingora stops reading
    /// when its response is done), as pingora's own pipelining does.
    pub(super) fn poll_read_next_request(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            self.parked = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut next = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut self.inner).poll_read(cx, &mut next) {
            Poll::Ready(Ok(())) if !next.filled().is_empty() => {
                self.early.extend_from_slice(next.filled());
                self.parked = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(Err(e)) if !self.start_discarding() => Poll::Ready(Err(e)),
            // the end of the stream (or a client gone during a fill)
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A read of a body of which `left` bytes are still to come: no more than those.
    pub(super) fn poll_read_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        left: u64,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = if buf.remaining() as u64 <= left {
            self.poll_read_early_first(cx, buf)
        } else {
            // the body's last bytes: read no further than them
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
            let room = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
            let mut part = ReadBuf::uninit(&mut chunk[..room]);
            let read = self.poll_read_early_first(cx, &mut part);
            buf.put_slice(part.filled());
            read
        };
        if let Poll::Ready(Ok(())) = read {
            let n = (buf.filled().len() - before) as u64;
            self.phase = Phase::Passthrough(Body::Length(left.saturating_sub(n)));
        }
        read
    }

    /// Drop the first `n` bytes already read; an emptied buffer is kept only when small.
    pub(super) fn consume_early(&mut self, n: usize) {
        self.early.drain(..n);
        if self.early.is_empty() && self.early.capacity() > EARLY_KEEP {
            self.early = Vec::new();
        }
    }

    /// Wait, holding nothing but this stream, until the connection's next request begins (its
    /// first bytes are kept for pingora to read, watched like any others), the client closes
    /// it, or it has been idle for `limits.idle_timeout`. Whether a request begins.
    pub(crate) async fn next_request(&mut self) -> bool {
        std::future::poll_fn(|cx| self.poll_next_request(cx)).await
    }

    pub(super) fn poll_next_request(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.early.is_empty() {
            return Poll::Ready(true);
        }
        if self.gone.is_some() {
            return Poll::Ready(false);
        }
        if !matches!(self.phase, Phase::Idle(_)) {
            self.phase = Phase::Idle(Instant::now());
        }
        // (not zeroed: the read fills what it returns)
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                self.early.extend_from_slice(buf.filled());
                Poll::Ready(true)
            }
            // the end of the stream, or a broken one
            Poll::Ready(_) => Poll::Ready(false),
            Poll::Pending => {
                if self.poll_deadline(cx).is_pending() {
                    return Poll::Pending;
                }
                // an idle keep-alive connection: closed quietly
                metrics().client_idle_closed.inc();
                Poll::Ready(false)
            }
        }
    }
}
