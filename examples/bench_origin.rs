//! The origin for `bench/run.py`: fast cacheable responses of 1 KiB, 16 KiB and 256 KiB
//! (`/1k/...`, `/16k/...`, `/256k/...`), a 100 ms endpoint for stampedes (`/slow/...`), and
//! `/_count?<path>` answering how many requests reached that path. Every response says
//! `Cache-Control: public, max-age=3600`.
//!
//! `cargo run --release --example bench_origin -- 127.0.0.1:8090`

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

struct BenchOrigin {
    counts: Mutex<HashMap<String, u64>>,
}

fn body(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn cacheable(body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=3600"),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html"),
    );
    r
}

#[async_trait]
impl ServeHttp for BenchOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        if path == "/_count" {
            let target = session.req_header().uri.query().unwrap_or("").to_string();
            let n = self
                .counts
                .lock()
                .map(|c| c.get(&target).copied().unwrap_or(0))
                .unwrap_or(0);
            return Response::new(n.to_string().into_bytes());
        }
        if let Ok(mut c) = self.counts.lock() {
            if path.starts_with("/slow/") {
                *c.entry(path.clone()).or_default() += 1;
            }
        }
        let size = if path.starts_with("/1k/") || path.starts_with("/slow/") {
            1024
        } else if path.starts_with("/16k/") {
            16 * 1024
        } else if path.starts_with("/256k/") {
            256 * 1024
        } else {
            let mut r = Response::new(b"not found".to_vec());
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        };
        if path.starts_with("/slow/") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cacheable(body(size))
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let mut server = Server::new_with_opt_and_conf(None, Default::default());
    server.bootstrap();
    let mut service = Service::new(
        "bench origin".to_string(),
        BenchOrigin {
            counts: Mutex::new(HashMap::new()),
        },
    );
    service.add_tcp(&addr);
    server.add_service(service);
    server.run(RunArgs::default());
}
