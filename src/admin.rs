//! The admin listener: `/metrics` (Prometheus), `/healthz`, `/stats` and the purge API
//! (`POST /purge`, see `purge.rs`). Never exposed on the proxy listener.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::cache::CacheRuntime;
use crate::cluster::Cluster;
use crate::live::SharedLive;
use crate::metrics::metrics;
use crate::purge::wire::PurgeOrder;
use crate::purge::{self, PurgeApiRequest, PurgeSource};

/// The largest purge API body accepted.
const MAX_BODY: usize = 1 << 20;

/// The admin HTTP app.
pub(crate) struct AdminApp {
    cache: &'static CacheRuntime,
    live: SharedLive,
    cluster: Option<&'static Cluster>,
}

impl AdminApp {
    /// An admin app for `cache`, following `live`'s config (purge rules, listeners), and
    /// publishing its purges to `cluster`'s other nodes.
    pub(crate) fn new(
        cache: &'static CacheRuntime,
        live: SharedLive,
        cluster: Option<&'static Cluster>,
    ) -> AdminApp {
        AdminApp {
            cache,
            live,
            cluster,
        }
    }

    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // refused before any work, the body included
        let live = self.live.load_full();
        if let Err(refused) = live.purge.admit(
            // the admin listener is internal: its TCP peer is the client
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            session.req_header(),
        ) {
            return json(refused.status, refused.body.into());
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return error(StatusCode::PAYLOAD_TOO_LARGE, "purge request over 1 MiB");
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return error(StatusCode::BAD_REQUEST, "could not read the request body"),
            }
        }
        let (req, scopes) = match PurgeApiRequest::parse(&body, &live.config.cache.tracking_params)
        {
            Ok(parsed) => parsed,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        let order = PurgeOrder {
            scopes,
            tag_patterns: Vec::new(),
            bans: Vec::new(),
            soft: req.soft,
        };
        let local = purge::run(self.cache, &order.scopes, req.soft, PurgeSource::Request);
        let (report, replication) = match self.cluster {
            Some(cluster) => {
                let (r, rep) = cluster.purge(&order, PurgeSource::Request, local).await;
                (r, Some(rep))
            }
            None => (local.await, None),
        };
        let Ok(mut answer) = serde_json::to_value(&report) else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the report",
            );
        };
        let mut status = StatusCode::OK;
        if let Some(replication) = replication {
            if !replication.replicated {
                // applied here only: the app's purge queue should try again
                status = StatusCode::SERVICE_UNAVAILABLE;
            }
            answer["replicated"] = replication.replicated.into();
            answer["nodes"] = serde_json::json!(replication.nodes);
        }
        json(status, answer.to_string())
    }
}

impl AdminApp {
    /// 200 when every proxy listener accepts a connection (so lacquer can serve, from the cache
    /// at least, whatever the app servers' state), 503 naming the ones that do not.
    async fn healthz(&self) -> Response<Vec<u8>> {
        let mut down = Vec::new();
        let live = self.live.load_full();
        for addr in live.config.listen.iter().map(|l| l.addr) {
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if !matches!(probe, Ok(Ok(_))) {
                down.push(addr.to_string());
            }
        }
        if down.is_empty() {
            text(StatusCode::OK, "ok\n".to_string())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("proxy listener not accepting: {}\n", down.join(", ")),
            )
        }
    }

    /// Bring the cache gauges up to date for a scrape.
    async fn refresh_gauges(&self) {
        let storage = self.cache.storage;
        storage.run_pending_tasks().await;
        let m = metrics();
        m.cache_objects
            .set(i64::try_from(storage.object_count()).unwrap_or(i64::MAX));
        m.cache_bytes
            .set(i64::try_from(storage.weighted_size()).unwrap_or(i64::MAX));
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Vec<u8>> {
    let length = http::HeaderValue::from(body.len());
    let mut resp = Response::new(body.into_bytes());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // with its length the connection stays open for the next request (without, pingora ends
    // the body by closing it, after a head that said keep-alive)
    headers.insert(http::header::CONTENT_LENGTH, length);
    resp
}

fn text(status: StatusCode, body: String) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json(status: StatusCode, body: String) -> Response<Vec<u8>> {
    respond(status, "application/json", body)
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            // lacquer answers here from the same process that serves the proxy listener
            (_, "/healthz") => self.healthz().await,
            (_, "/metrics") => {
                self.refresh_gauges().await;
                let mut resp = text(StatusCode::OK, metrics().render());
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            (_, "/stats") => {
                self.cache.storage.run_pending_tasks().await;
                text(
                    StatusCode::OK,
                    format!(
                        "objects {}\nbytes {}\ntags {}\n",
                        self.cache.storage.object_count(),
                        self.cache.storage.weighted_size(),
                        self.cache.storage.tag_count()
                    ),
                )
            }
            ("POST", "/purge") => self.purge(session).await,
            (_, "/cluster") => match self.cluster {
                Some(c) => json(StatusCode::OK, c.view().await.to_string()),
                None => error(StatusCode::NOT_FOUND, "no cluster: configure cluster.redis"),
            },
            (_, "/purge") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// `/healthz` is 503 and names a proxy listener that does not accept (an integration test
    /// cannot see this: when lacquer's own listener stops, its admin listener stops with it).
    #[tokio::test]
    async fn healthz_is_503_naming_a_proxy_listener_that_does_not_accept() {
        // bound and dropped: nothing listens there
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let yaml = format!(
            "listen: [\"{closed}\"]\nupstreams:\n  - addr: \"127.0.0.1:9\"\nhealth_check:\n  type: none\n"
        );
        let config = Arc::new(crate::config::Config::from_yaml(&yaml).unwrap());
        let cache = CacheRuntime::leak(&config);
        let live: SharedLive = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::live::Live::new(config).unwrap(),
        ));
        let resp = AdminApp::new(cache, live, None).healthz().await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            String::from_utf8(resp.into_body()).unwrap(),
            format!("proxy listener not accepting: {closed}\n")
        );
    }
}
