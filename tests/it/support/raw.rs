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
    /// The status of every response in the bytes, in order (a line starting `HTTP/1.`).
    pub fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split("\r\n")
            .filter_map(|l| l.strip_prefix("HTTP/1."))
            .filter_map(|l| l.get(2..5))
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).to_string()
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
