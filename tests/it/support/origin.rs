//! A scriptable HTTP/1.1 origin on an ephemeral loopback port. Every request is recorded (per
//! path counters, headers as received, which connection it came on); a handler closure decides
//! each reply, including delays and chunked bodies. Written on raw TCP so tests can script
//! misbehaviour too: exact bytes for a reply ([`Reply::raw`], [`Step`]), a reset (TCP RST) in
//! the middle of a body ([`Reply::reset_after`]), a stall ([`Reply::stall_after`]), and an
//! address where nothing listens ([`refused_addr`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent on the request line.
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// Which connection it came on: 1 for the origin's first accepted connection, and so on.
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// How the writing of one reply ended.
#[derive(Debug, Clone)]
pub struct Written {
    /// Path and query of the request it answered.
    pub target: String,
    /// Every byte of the reply was handed to the socket; false when a write failed (the
    /// proxy closed the connection before taking the whole reply).
    pub whole: bool,
}

/// What the origin answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send the body chunked instead of with Content-Length.
    pub chunked: bool,
    /// Close the connection without answering.
    pub reset: bool,
    /// Send this many body bytes, then stall this long before the rest.
    pub stall: Option<(usize, Duration)>,
    /// Send this many body bytes (as framed on the wire), then reset the connection (RST).
    pub reset_after: Option<usize>,
    /// Ignore everything above and play this script instead (see [`Reply::raw`]).
    pub raw: Option<Vec<Step>>,
}

/// One step of a scripted raw reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes exactly as given: no framing, no headers added.
    Write(Vec<u8>),
    /// Pause.
    Sleep(Duration),
    /// Close abruptly: `SO_LINGER` 0, so the peer gets a TCP RST and no FIN.
    Reset,
    /// Close normally (FIN) without reading another request.
    Close,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
            reset: false,
            stall: None,
            reset_after: None,
            raw: None,
        }
    }

    /// Write exactly `bytes` (status line, headers and body, as given), then go on serving the
    /// connection: the way to send duplicate or invalid `Content-Length`, chunked together
    /// with `Content-Length`, a 1xx before the response, or a body longer than announced.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::script(vec![Step::Write(bytes.into())])
    }

    /// Play `steps` instead of a reply.
    pub fn script(steps: Vec<Step>) -> Reply {
        Reply {
            raw: Some(steps),
            ..Reply::ok("")
        }
    }

    /// A raw reply goes on with one more step.
    pub fn then(mut self, step: Step) -> Reply {
        self.raw
            .as_mut()
            .expect("then() continues a raw reply")
            .push(step);
        self
    }

    /// A raw reply then closes the connection (FIN).
    pub fn then_close(self) -> Reply {
        self.then(Step::Close)
    }

    /// A raw reply then resets the connection (RST).
    pub fn then_reset(self) -> Reply {
        self.then(Step::Reset)
    }

    /// Send the header and `bytes` of the body as framed on the wire (chunk sizes count),
    /// then reset the connection with a TCP RST.
    pub fn reset_after(mut self, bytes: usize) -> Reply {
        self.reset_after = Some(bytes);
        self
    }

    /// Close the connection without a response.
    pub fn reset() -> Reply {
        Reply {
            reset: true,
            ..Reply::ok("")
        }
    }

    /// Send `bytes` of the body, then stall for `d`.
    pub fn stall_after(mut self, bytes: usize, d: Duration) -> Reply {
        self.stall = Some((bytes, d));
        self
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A running origin. Dropping it stops it like a killed server: the listener closes and
/// every open connection is cut.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    written: Arc<Mutex<Vec<Written>>>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

impl Origin {
    /// Start an origin on a free port answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Origin {
        Origin::start_on("127.0.0.1:0".parse().unwrap(), handler).await
    }

    /// Start an origin on `addr` (to revive a server where it was).
    pub async fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let written: Arc<Mutex<Vec<Written>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        let written2 = written.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conn += 1;
                let handler = handler.clone();
                let seen = seen2.clone();
                let written = written2.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, conn, handler, seen, written) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Origin {
            addr,
            seen,
            written,
            task,
            stop,
        }
    }

    /// How many requests reached this path (query ignored).
    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path() == path)
            .count()
    }

    /// How many requests reached the origin at all.
    pub fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How the writing of each finished plain or stalled reply (not raw or reset) ended, in
    /// order of finishing.
    pub fn written(&self) -> Vec<Written> {
        self.written.lock().unwrap().clone()
    }

    /// The last request for `path`.
    pub fn last(&self, path: &str) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.path() == path)
            .cloned()
    }
}

/// An address where nothing listens: connecting to it is refused.
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Reset the connection: with `SO_LINGER` 0 the close sends a TCP RST instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
    written: Arc<Mutex<Vec<Written>>>,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // read one request head
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        // read the body
        let mut body_len = 0usize;
        if let Some(cl) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while buf.len() < cl {
                let mut chunk = vec![0u8; 65536];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..cl);
            body_len = cl;
        } else if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&buf, b"\r\n") {
                        break i;
                    }
                    let mut chunk = vec![0u8; 65536];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
                        .unwrap_or(0);
                buf.drain(..line_end + 2);
                while buf.len() < size + 2 {
                    let mut chunk = vec![0u8; 65536];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..size + 2);
                body_len += size;
                if size == 0 {
                    break;
                }
            }
        }
        let request = Seen {
            method: method.clone(),
            target,
            headers: headers.clone(),
            body_len,
            conn,
        };
        seen.lock().unwrap().push(request.clone());
        let reply = handler(&request);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.reset {
            return Ok(());
        }
        if let Some(steps) = reply.raw {
            for step in steps {
                match step {
                    Step::Write(bytes) => stream.write_all(&bytes).await?,
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                    Step::Reset => {
                        reset(stream);
                        return Ok(());
                    }
                    Step::Close => return Ok(()),
                }
            }
            continue;
        }
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status).into_bytes();
        for (k, v) in &reply.headers {
            head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        let no_body = reply.status == 304 || reply.status == 204;
        // the body as framed on the wire
        let mut wire = Vec::new();
        if reply.chunked && !no_body {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            if method != "HEAD" {
                for piece in reply.body.chunks(64 * 1024) {
                    wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    wire.extend_from_slice(piece);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            if !no_body {
                head.extend_from_slice(
                    format!("Content-Length: {}\r\n", reply.body.len()).as_bytes(),
                );
                if method != "HEAD" {
                    wire.extend_from_slice(&reply.body);
                }
            }
            head.extend_from_slice(b"\r\n");
        }
        if let Some(n) = reply.reset_after {
            let n = n.min(wire.len());
            head.extend_from_slice(&wire[..n]);
            stream.write_all(&head).await?;
            stream.flush().await?;
            // let the bytes leave before the RST discards what is still queued
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(stream);
            return Ok(());
        }
        match reply.stall {
            Some((n, d)) if !wire.is_empty() => {
                let n = n.min(wire.len());
                head.extend_from_slice(&wire[..n]);
                stream.write_all(&head).await?;
                tokio::time::sleep(d).await;
                let result = stream.write_all(&wire[n..]).await;
                written.lock().unwrap().push(Written {
                    target: request.target.clone(),
                    whole: result.is_ok(),
                });
                result?;
            }
            _ => {
                head.extend_from_slice(&wire);
                let result = stream.write_all(&head).await;
                written.lock().unwrap().push(Written {
                    target: request.target.clone(),
                    whole: result.is_ok(),
                });
                result?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Per-path counters built from handler calls, for handlers that vary by call number.
#[derive(Default, Clone)]
pub struct Counter(Arc<Mutex<HashMap<String, usize>>>);

impl Counter {
    /// Count one more call for `key` and return the new count (1 for the first).
    pub fn bump(&self, key: &str) -> usize {
        let mut m = self.0.lock().unwrap();
        let c = m.entry(key.to_string()).or_default();
        *c += 1;
        *c
    }
}
