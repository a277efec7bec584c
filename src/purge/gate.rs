//! The purge gate: who may purge (`purge.allow` networks checked against the TCP peer, or a
//! bearer token compared in constant time) and how often (`purge.rate_limit`; and
//! `purge.unsafe_invalidation_rate*` for invalidations by unsafe requests without rights).

use std::net::IpAddr;

use pingora_http::RequestHeader;

use super::count_refused;
use crate::config::{Cidr, ProxyListenerPurge, PurgeConfig};
use crate::metrics::metrics;
use crate::rate_limit::{ClientBuckets, TokenBucket};

/// Who may purge.
pub struct PurgeAuth {
    allow: Vec<Cidr>,
    token: Option<String>,
}

impl PurgeAuth {
    /// The rules of `config`.
    pub fn new(config: &PurgeConfig) -> PurgeAuth {
        PurgeAuth {
            allow: config.allow.clone(),
            token: config.token.clone(),
        }
    }

    /// Whether this request may purge: its client (the TCP peer, or what a trusted proxy
    /// said, never a header from anyone else) and its `Authorization`.
    pub fn allows_request(&self, client: Option<IpAddr>, req: &RequestHeader) -> bool {
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.allows(client, authorization)
    }

    /// Whether a purge from `client` with this `Authorization` value is allowed.
    pub fn allows(&self, client: Option<IpAddr>, authorization: Option<&[u8]>) -> bool {
        if let (Some(token), Some(auth)) = (&self.token, authorization) {
            let presented = auth
                .strip_prefix(b"Bearer ")
                .or_else(|| auth.strip_prefix(b"bearer "));
            if presented.is_some_and(|p| constant_time_eq(p.trim_ascii(), token.as_bytes())) {
                return true;
            }
        }
        client.is_some_and(|ip| self.allow.iter().any(|net| net.contains(ip)))
    }
}

/// Compare without an early exit, so the time taken does not reveal how much of a guessed
/// token was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a purge request was refused: the status and JSON body to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 403 (not authorised) or 429 (over `purge.rate_limit`).
    pub status: http::StatusCode,
    /// The JSON body.
    pub body: &'static str,
}

/// Who may purge and how often, for both listeners: a purge request is authorised by its
/// TCP peer or token (403 otherwise), then must be within `purge.rate_limit` (429). Checked
/// before any other work, the body included, so a refused purge costs nothing and uses up no
/// rate; refusals are counted. Part of the reloadable generation (`Live`).
pub struct PurgeGate {
    auth: PurgeAuth,
    proxy_listener: ProxyListenerPurge,
    rate: TokenBucket,
    unsafe_invalidations: ClientBuckets,
}

impl PurgeGate {
    /// The gate of `config`'s `purge:` section.
    pub fn new(config: &PurgeConfig) -> PurgeGate {
        PurgeGate {
            auth: PurgeAuth::new(config),
            proxy_listener: config.proxy_listener,
            rate: TokenBucket::new(config.rate_limit),
            unsafe_invalidations: ClientBuckets::new(
                config.unsafe_invalidation_rate,
                config.unsafe_invalidation_rate_per_client,
            ),
        }
    }

    /// Whether a purge request on a proxy listener may go ahead: as [`PurgeGate::admit`], within
    /// what `purge.proxy_listener` lets through there.
    pub fn admit_on_proxy(
        &self,
        client: Option<IpAddr>,
        req: &RequestHeader,
    ) -> Result<(), Refusal> {
        let allowed = match self.proxy_listener {
            ProxyListenerPurge::Allow => self.auth.allows_request(client, req),
            // the token alone: the allow-list does not count here
            ProxyListenerPurge::Token => self.auth.allows_request(None, req),
            ProxyListenerPurge::Off => false,
        };
        if !allowed {
            count_refused("denied");
            return Err(Refusal {
                status: http::StatusCode::FORBIDDEN,
                body: r#"{"error":"purge not allowed"}"#,
            });
        }
        self.take_rate()
    }

    /// Whether a request's `Cache-Control: no-cache` may refresh the stored copy: the same
    /// rights and budget as a purge on the proxy listener, but a refusal is no event (every
    /// browser's reload sends `no-cache`), so it is not counted.
    pub fn may_refresh(&self, client: Option<IpAddr>, req: &RequestHeader) -> bool {
        let allowed = match self.proxy_listener {
            ProxyListenerPurge::Allow => self.auth.allows_request(client, req),
            ProxyListenerPurge::Token => self.auth.allows_request(None, req),
            ProxyListenerPurge::Off => false,
        };
        allowed && self.take_rate().is_ok()
    }

    /// Whether a purge request may go ahead (see the type's documentation).
    pub fn admit(&self, client: Option<IpAddr>, req: &RequestHeader) -> Result<(), Refusal> {
        if !self.auth.allows_request(client, req) {
            count_refused("denied");
            return Err(Refusal {
                status: http::StatusCode::FORBIDDEN,
                body: r#"{"error":"purge not allowed"}"#,
            });
        }
        self.take_rate()
    }

    /// One token of `purge.rate_limit`, or a 429.
    fn take_rate(&self) -> Result<(), Refusal> {
        if !self.rate.try_take() {
            count_refused("rate_limited");
            return Err(Refusal {
                status: http::StatusCode::TOO_MANY_REQUESTS,
                body: r#"{"error":"too many purges, see purge.rate_limit"}"#,
            });
        }
        Ok(())
    }

    /// Whether an unsafe request may invalidate what it touched: always with purge rights,
    /// otherwise within `purge.unsafe_invalidation_rate*` (anyone can send a POST that the
    /// app answers 2xx, so without a bound anyone could keep evicting pages).
    pub fn admit_invalidation(&self, client: Option<IpAddr>, req: &RequestHeader) -> bool {
        if self.auth.allows_request(client, req) {
            return true;
        }
        if self.unsafe_invalidations.try_take(client) {
            return true;
        }
        metrics().unsafe_invalidations_limited.inc();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(allow: &[&str], token: Option<&str>) -> PurgeAuth {
        PurgeAuth {
            allow: allow.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn authorisation() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "203.0.113.9".parse().unwrap();
        let a = auth(&["127.0.0.1/32"], Some("0123456789abcdef"));
        assert!(a.allows(Some(lo), None));
        assert!(!a.allows(Some(far), None));
        assert!(a.allows(Some(far), Some(b"Bearer 0123456789abcdef")));
        assert!(!a.allows(Some(far), Some(b"Bearer 0123456789abcdeX")));
        assert!(!a.allows(Some(far), Some(b"Basic 0123456789abcdef")));
        assert!(!a.allows(None, None));
        let no_token = auth(&[], None);
        assert!(!no_token.allows(Some(lo), Some(b"Bearer anything")));
    }
}
