//! Test support: a scriptable origin, the real proxy as a process, and a small client.
#![allow(dead_code)]

pub mod client;
pub mod origin;
pub mod proxy;
pub mod raw;

pub use client::{Client, Resp};
pub use origin::{Counter, Origin, Reply};
pub use proxy::Proxy;
pub use raw::{exchange, RawConn};
