//! A small web app to put lacquer in front of: its front page takes 200 ms to "query the
//! database" and render, and says how many times it has been rendered, so a visitor can see
//! the cache at work. `lacquer-demo-app [ADDR]` (default 127.0.0.1:8080).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

struct DemoApp {
    renders: AtomicU64,
}

fn page(status: StatusCode, cache_control: &str, body: String) -> Response<Vec<u8>> {
    let mut resp = Response::new(body.into_bytes());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = http::HeaderValue::from_str(cache_control) {
        h.insert(http::header::CACHE_CONTROL, v);
    }
    resp
}

#[async_trait]
impl ServeHttp for DemoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/" => {
                // the expensive part lacquer saves: the database and the renderer
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = self.renders.fetch_add(1, Ordering::Relaxed) + 1;
                page(
                    StatusCode::OK,
                    "public, max-age=30",
                    format!(
                        "<!doctype html><title>demo</title><h1>Front page</h1>\
                         <p>Rendered {n} time(s) by the app; reload: lacquer answers from memory.</p>\n"
                    ),
                )
            }
            "/account" => {
                let mut resp = page(
                    StatusCode::OK,
                    "private",
                    "<!doctype html><p>Your account (never cached).</p>\n".to_string(),
                );
                resp.headers_mut().insert(
                    http::header::SET_COOKIE,
                    http::HeaderValue::from_static("demo_session=1; HttpOnly"),
                );
                resp
            }
            _ => page(
                StatusCode::NOT_FOUND,
                "public, max-age=60",
                "<!doctype html><p>Not found.</p>\n".to_string(),
            ),
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let mut server = Server::new_with_opt_and_conf(None, Default::default());
    server.bootstrap();
    let mut service = Service::new(
        "lacquer demo app".to_string(),
        DemoApp {
            renders: AtomicU64::new(0),
        },
    );
    service.add_tcp(&addr);
    server.add_service(service);
    println!("demo app listening on http://{addr}");
    server.run(RunArgs::default());
}
