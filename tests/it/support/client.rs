//! A test client: no redirects, no proxies from the environment, no decompression, so tests
//! see exactly what lacquer sent.

use std::time::Duration;

/// A response as a client sees it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Cache-Status` value, or "" when absent.
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    /// Served from memory, fresh or stale (`lacquer; hit...`). Mostly too loose for an
    /// assertion: a stale answer passes it, and its negation passes for a 502 that lacquer made
    /// itself. Prefer [`Resp::is_fresh_hit`], [`Resp::is_stale_hit`] or [`Resp::fetched`].
    pub fn served_from_memory(&self) -> bool {
        self.cache_status().starts_with("lacquer; hit")
    }

    /// Served fresh from memory: `lacquer; hit; ttl=N` with a ttl that is not negative and no
    /// `fwd=` or `detail=` (a stale answer carries `detail=stale-...`).
    pub fn is_fresh_hit(&self) -> bool {
        let mut parts = self.cache_status().split("; ");
        if parts.next() != Some("lacquer") || parts.next() != Some("hit") {
            return false;
        }
        let ttl = parts.next().and_then(|p| p.strip_prefix("ttl="));
        ttl.is_some_and(|t| t.parse::<u64>().is_ok())
            && parts.all(|p| !p.starts_with("fwd") && !p.starts_with("detail="))
    }

    /// Served fresh from the cluster's shared tier (`lacquer; hit; ttl=N; detail=shared`): not
    /// from this node's memory, not from the app.
    pub fn is_shared_hit(&self) -> bool {
        let mut parts = self.cache_status().split("; ");
        parts.next() == Some("lacquer")
            && parts.next() == Some("hit")
            && parts
                .next()
                .and_then(|p| p.strip_prefix("ttl="))
                .is_some_and(|t| t.parse::<u64>().is_ok())
            && parts.next() == Some("detail=shared")
            && parts.next().is_none()
    }

    /// Served stale from memory (stale-while-revalidate or stale-if-error).
    pub fn is_stale_hit(&self) -> bool {
        let v = self.cache_status();
        v.starts_with("lacquer; hit") && v.contains("detail=stale-")
    }

    /// The app's own answer, relayed: `Cache-Status` says the origin was asked (`fwd=`) and
    /// what it answered (`fwd-status=`), and the response is not from memory. False for a hit
    /// and for an error lacquer made itself (a 502 or 504 has no `fwd-status`).
    pub fn fetched(&self) -> bool {
        let v = self.cache_status();
        !self.served_from_memory() && v.contains("; fwd=") && v.contains("; fwd-status=")
    }

    /// The origin's status as `Cache-Status` reports it (`fwd-status=`).
    pub fn fwd_status(&self) -> Option<u16> {
        self.cache_status()
            .split("; ")
            .find_map(|p| p.strip_prefix("fwd-status="))
            .and_then(|s| s.parse().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A client with a keep-alive pool.
#[derive(Clone)]
pub struct Client(reqwest::Client);

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client(
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        )
    }

    /// Send `method url` with `headers` and an optional body.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.0.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send("GET", url, &[], None).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", url, headers, None).await
    }
}
