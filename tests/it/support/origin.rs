//! A scriptable HTTP/1.1 origin on an ephemeral loopback port. Every request is recorded (per
//! path counters, headers as received); a handler closure decides each reply, including delays
//! and chunked bodies. Written on raw TCP so later tests can script misbehaviour too.

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
        }
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
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, handler, seen) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Origin {
            addr,
            seen,
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

async fn serve(
    mut stream: TcpStream,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
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
        };
        seen.lock().unwrap().push(request.clone());
        let reply = handler(&request);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.reset {
            return Ok(());
        }
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut out = format!("HTTP/1.1 {} X\r\n", reply.status).into_bytes();
        for (k, v) in &reply.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        let no_body = reply.status == 304 || reply.status == 204;
        if reply.chunked && !no_body {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            stream.write_all(&out).await?;
            if method != "HEAD" {
                for piece in reply.body.chunks(64 * 1024) {
                    stream
                        .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .await?;
                    stream.write_all(piece).await?;
                    stream.write_all(b"\r\n").await?;
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
        } else {
            if !no_body {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n", reply.body.len()).as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            match reply.stall {
                Some((n, d)) if method != "HEAD" && !no_body => {
                    let n = n.min(reply.body.len());
                    out.extend_from_slice(&reply.body[..n]);
                    stream.write_all(&out).await?;
                    tokio::time::sleep(d).await;
                    stream.write_all(&reply.body[n..]).await?;
                }
                _ => {
                    if method != "HEAD" && !no_body {
                        out.extend_from_slice(&reply.body);
                    }
                    stream.write_all(&out).await?;
                }
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
