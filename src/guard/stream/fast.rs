//! The guarded connection's side of the fast path (`fast_path.rs`): a whole request header
//! already read and within the limits is offered to it; its answer goes out in one `writev`
//! (head and body), and the connection waits for its next request as after any other.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::AsyncWrite;
use tokio::time::Instant;

use super::{GuardedStream, HeaderScan, Phase, Scan};
use crate::fast_path::FastPath;

impl GuardedStream {
    /// Answer the request whose header was read (its first bytes, `next_request`) by the fast
    /// path, if its header is whole and the fast path takes it: `None` when pingora is to
    /// answer it, else whether the connection stays open.
    pub(crate) async fn serve_fast(&mut self, fast: &FastPath) -> Option<bool> {
        if !fast.enabled() {
            return None;
        }
        // a header still arriving, or over a limit, is pingora's (and the watch's) to read
        let end = match HeaderScan::new().feed(&self.early, &self.limits) {
            Scan::Complete(end) => end,
            _ => return None,
        };
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let tls = self.inner.get_ssl_digest().is_some();
        let mut answer = fast.answer(&self.early[..end], peer, tls)?;
        self.consume_early(end);
        let head = std::mem::take(&mut answer.head);
        let written = self.write_answer(head, &answer.body).await.is_ok();
        let keep_alive = written && answer.keep_alive;
        let ended = fast.finish(answer, written);
        // the wait for the next request starts now
        self.phase = Phase::Idle(Instant::from_std(ended));
        Some(keep_alive)
    }

    /// Write `head` then `body` and flush: the head is held as pingora's response heads are,
    /// so it leaves with the body in one `writev` where the socket takes it all.
    async fn write_answer(&mut self, head: Vec<u8>, body: &[u8]) -> io::Result<()> {
        if self.held.is_empty() {
            self.held = head;
        } else {
            self.held.extend_from_slice(&head);
        }
        let mut written = 0;
        std::future::poll_fn(|cx| {
            while written < body.len() {
                match self.poll_write_after_held(cx, &body[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            // (a HEAD's answer, or what of the head the body's write left)
            match self.poll_write_held(cx) {
                Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
                other => other,
            }
        })
        .await
    }
}
