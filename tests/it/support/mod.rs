//! Test support: a scriptable origin, the real proxy as a process, and a small client.
#![allow(dead_code)]

pub mod client;
pub mod origin;
pub mod proxy;
pub mod raw;
pub mod redis;

pub use client::{Client, Resp};
pub use origin::{Counter, Origin, Reply};
pub use proxy::Proxy;
pub use raw::{exchange, RawConn};

/// Poll `cond` every 10 ms until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cond()
}
