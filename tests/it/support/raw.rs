//! A raw TCP client for what reqwest will not send: malformed framing, slow headers, bare
//! CR, duplicate lengths. It sends bytes exactly as given and reads what comes back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One client connection.
pub struct RawConn {
    stream: TcpStream,
}

/// What came back on a connection.
#[derive(Debug)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    /// The proxy closed the connection (as opposed to the read going quiet).
    pub closed: bool,
}

impl RawReply {
    /// The status of every response in the bytes, in order: each head's status line, its body
    /// skipped by its `Content-Length` or chunks (a response framed by the close takes the
    /// rest), so a body that ends where the next response begins hides nothing.
    pub fn statuses(&self) -> Vec<u16> {
        let mut statuses = Vec::new();
        let mut rest = &self.bytes[..];
        while let Some(end) = find(rest, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]).to_string();
            rest = &rest[end + 4..];
            let Some(status) = head
                .strip_prefix("HTTP/1.")
                .and_then(|l| l.get(2..5))
                .and_then(|s| s.parse::<u16>().ok())
            else {
                break;
            };
            statuses.push(status);
            let field = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            if (100..200).contains(&status) || status == 204 || status == 304 {
                continue;
            }
            if let Some(len) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
                rest = &rest[len.min(rest.len())..];
            } else if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                rest = skip_chunks(rest);
            } else {
                // a HEAD's answer has no body whatever its length says; without a length the
                // body runs to the close: either way, the next response starts a line
                match find(rest, b"HTTP/1.") {
                    Some(i) => rest = &rest[i..],
                    None => break,
                }
            }
        }
        statuses
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).to_string()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What follows a chunked body.
fn skip_chunks(mut rest: &[u8]) -> &[u8] {
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return &[];
        };
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        rest = &rest[line_end + 2..];
        match size {
            Some(0) => {
                // the trailers, up to the empty line
                return match find(rest, b"\r\n") {
                    Some(0) => &rest[2..],
                    _ => find(rest, b"\r\n\r\n").map_or(&[][..], |i| &rest[i + 4..]),
                };
            }
            Some(n) => rest = &rest[(n + 2).min(rest.len())..],
            None => return &[],
        }
    }
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    /// Send bytes as they are; false if the peer has closed.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Read until the peer closes, or nothing arrives for `quiet`, or `total` has passed.
    pub async fn read_for(&mut self, quiet: Duration, total: Duration) -> RawReply {
        let deadline = Instant::now() + total;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RawReply {
                    bytes,
                    closed: false,
                };
            }
            match tokio::time::timeout(quiet.min(left), self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return RawReply {
                        bytes,
                        closed: true,
                    }
                }
                Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
                Err(_) => {
                    return RawReply {
                        bytes,
                        closed: false,
                    }
                }
            }
        }
    }

    /// Send `bytes`, then read until close or 500 ms of quiet (5 s at most).
    pub async fn exchange(&mut self, bytes: &[u8]) -> RawReply {
        self.send(bytes).await;
        self.read_for(Duration::from_millis(500), Duration::from_secs(5))
            .await
    }
}

/// Send `bytes` on a new connection and read the answer.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    RawConn::connect(addr).await.exchange(bytes).await
}
