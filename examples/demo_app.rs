//! A small web app to put lacquer in front of: its front page takes 200 ms to "query the
//! database" and render, and says how many times it has been rendered, so a visitor can see
//! the cache at work. Its submit handler (`POST /submit`, field `title`) stores a post and then
//! soft-purges the front page by its tag through lacquer (`PURGE` with `xkey-purge`), so the
//! next visitor is served at once while lacquer refreshes the page in the background.
//!
//! `cargo run --example demo_app -- [ADDR]` (default 127.0.0.1:8080); `LACQUER_ADDR` (default
//! 127.0.0.1:6081) is where it sends its purges. It stops at once on SIGTERM or Ctrl-C: it
//! holds nothing worth draining.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

struct DemoApp {
    renders: AtomicU64,
    posts: Mutex<Vec<String>>,
    lacquer: String,
}

/// Tell lacquer the front page changed: a soft purge of its tag.
async fn purge_front_page(lacquer: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(lacquer).await?;
    let request = format!(
        "PURGE / HTTP/1.1\r\nHost: {lacquer}\r\nxkey-purge: front-page\r\nSoft-Purge: 1\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer.lines().next().unwrap_or_default().to_string())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn form_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "title").then(|| v.replace('+', " "))
    })
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
        let method = session.req_header().method.clone();
        match (method.as_str(), path.as_str()) {
            ("POST", "/submit") => {
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = session.read_request_body().await {
                    body.extend_from_slice(&chunk);
                    if body.len() > 64 * 1024 {
                        break;
                    }
                }
                let title = form_title(&body).unwrap_or_else(|| "untitled".to_string());
                if let Ok(mut posts) = self.posts.lock() {
                    posts.push(title);
                }
                let purge = purge_front_page(&self.lacquer)
                    .await
                    .unwrap_or_else(|e| format!("purge failed: {e}"));
                page(
                    StatusCode::OK,
                    "no-store",
                    format!("<!doctype html><p>Thanks! lacquer said: {}</p><a href=\"/\">front page</a>\n", escape(&purge)),
                )
            }
            (_, "/") => {
                // the expensive part lacquer saves: the database and the renderer
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = self.renders.fetch_add(1, Ordering::Relaxed) + 1;
                let posts: String = self
                    .posts
                    .lock()
                    .map(|p| {
                        p.iter()
                            .map(|t| format!("<li>{}</li>", escape(t)))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut resp = page(
                    StatusCode::OK,
                    "public, max-age=300",
                    format!(
                        "<!doctype html><title>demo</title><h1>Front page</h1>\
                         <p>Rendered {n} time(s) by the app; reload: lacquer answers from memory.</p>\
                         <ul>{posts}</ul>\
                         <form method=post action=/submit><input name=title><button>Post</button></form>\n"
                    ),
                );
                // the tag the submit handler purges
                resp.headers_mut().insert(
                    "surrogate-key",
                    http::HeaderValue::from_static("front-page"),
                );
                resp
            }
            (_, "/account") => {
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

/// Exit at once on SIGTERM or SIGINT (pingora's own handling would wait out a grace period).
fn exit_on_signal() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            println!("demo app stopping");
            std::process::exit(0);
        });
    });
}

fn main() {
    exit_on_signal();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let mut server = Server::new_with_opt_and_conf(None, Default::default());
    server.bootstrap();
    let mut service = Service::new(
        "lacquer demo app".to_string(),
        DemoApp {
            renders: AtomicU64::new(0),
            posts: Mutex::new(Vec::new()),
            lacquer: std::env::var("LACQUER_ADDR").unwrap_or_else(|_| "127.0.0.1:6081".to_string()),
        },
    );
    service.add_tcp(&addr);
    server.add_service(service);
    println!("demo app listening on http://{addr}");
    server.run(RunArgs::default());
}
