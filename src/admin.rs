//! The admin listener: `/healthz` now; metrics and the purge API live here too as they arrive.
//! Never exposed on the proxy listener.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::cache::CacheRuntime;

/// The admin HTTP app.
pub struct AdminApp {
    cache: &'static CacheRuntime,
}

impl AdminApp {
    /// An admin app reporting on `cache`.
    pub fn new(cache: &'static CacheRuntime) -> AdminApp {
        AdminApp { cache }
    }
}

fn text(status: StatusCode, body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            // lacquer answers here from the same process that serves the proxy listener
            "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
            "/stats" => {
                self.cache.storage.run_pending_tasks().await;
                text(
                    StatusCode::OK,
                    format!(
                        "objects {}\nbytes {}\n",
                        self.cache.storage.object_count(),
                        self.cache.storage.weighted_size()
                    ),
                )
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_string()),
        }
    }
}
