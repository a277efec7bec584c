//! The app servers: round-robin selection (honouring weights) over `upstreams` on
//! pingora-load-balancing, active health checks (TCP or HTTP) that take a failing server out of
//! rotation and put it back when it recovers, and the `HttpPeer` with lacquer's timeouts for
//! each attempt. Retries on another server are decided in `proxy.rs` (`fail_to_connect`,
//! `error_while_proxy`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use crate::config::{HealthCheckConfig, HealthCheckKind, Timeouts, Upstream, UpstreamTls};
use crate::metrics::metrics;

/// The pool of app servers.
pub(crate) struct Upstreams {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    backends: Vec<Backend>,
    /// The app servers spoken to over TLS, and how.
    tls: std::collections::HashMap<String, UpstreamTls>,
    timeouts: Timeouts,
    health: HealthCheckConfig,
}

impl Upstreams {
    /// A pool over `upstreams`, each attempt bounded by `timeouts`, checked as `health` says.
    pub(crate) fn new(
        upstreams: &[Upstream],
        timeouts: Timeouts,
        health: &HealthCheckConfig,
    ) -> Result<Upstreams> {
        let mut backends = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            let b = Backend::new_with_weight(&u.addr.to_string(), u.weight).map_err(|e| {
                Error::because(ErrorType::InternalError, format!("upstream {}", u.addr), e)
            })?;
            backends.push(b);
        }
        // built from the Backend values themselves: `try_from_iter` would drop the weights
        let discovery = Static::new(backends.iter().cloned().collect::<BTreeSet<Backend>>());
        let mut balancer: LoadBalancer<RoundRobin> =
            LoadBalancer::from_backends(Backends::new(discovery));
        // static discovery completes without waiting: poll it once
        let built = {
            let update = std::pin::pin!(balancer.update());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::future::Future::poll(update, &mut cx)
        };
        match built {
            std::task::Poll::Ready(result) => result?,
            std::task::Poll::Pending => {
                return Error::e_explain(ErrorType::InternalError, "upstream pool did not build");
            }
        }
        match &health.kind {
            HealthCheckKind::None => {}
            HealthCheckKind::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.consecutive_failure = health.failures;
                check.consecutive_success = health.successes;
                check.peer_template.options.connection_timeout = Some(health.timeout);
                check.peer_template.options.total_connection_timeout = Some(health.timeout);
                balancer.set_health_check(check);
            }
            HealthCheckKind::Http { path, host } => {
                // checked over TLS when the app servers speak it (all of them, or none)
                let over_tls = !upstreams.is_empty() && upstreams.iter().all(|u| u.tls.is_some());
                let mut check =
                    HttpHealthCheck::new(host.as_deref().unwrap_or("localhost"), over_tls);
                let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
                if let Some(h) = host {
                    req.insert_header(http::header::HOST, h.as_str())?;
                }
                req.insert_header(http::header::USER_AGENT, "lacquer-health-check")?;
                check.req = req;
                check.consecutive_failure = health.failures;
                check.consecutive_success = health.successes;
                let o = &mut check.peer_template.options;
                o.connection_timeout = Some(health.timeout);
                o.total_connection_timeout = Some(health.timeout);
                o.read_timeout = Some(health.timeout);
                // any 2xx or 3xx means the app answers
                check.validator = Some(Box::new(|resp| {
                    if (200..400).contains(&resp.status.as_u16()) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("health check status", resp.status.as_u16()),
                            "health check answered with an error status",
                        )
                    }
                }));
                balancer.set_health_check(Box::new(check));
            }
        }
        let tls = upstreams
            .iter()
            .filter_map(|u| u.tls.clone().map(|t| (u.addr.to_string(), t)))
            .collect();
        let pool = Upstreams {
            balancer: Arc::new(balancer),
            backends,
            tls,
            timeouts,
            health: health.clone(),
        };
        pool.publish_health();
        Ok(pool)
    }

    /// How often the servers are checked; `None` when they are not.
    pub(crate) fn check_interval(&self) -> Option<Duration> {
        (self.health.kind != HealthCheckKind::None).then_some(self.health.interval)
    }

    /// Check every server once (concurrently) and publish the result.
    pub(crate) async fn check_health(&self) {
        if self.health.kind == HealthCheckKind::None {
            return;
        }
        self.balancer.backends().run_health_check(true).await;
        self.publish_health();
    }

    /// Set `lacquer_upstream_healthy` for every server of this pool.
    pub(crate) fn publish_health(&self) {
        let gauge = &metrics().upstream_healthy;
        for b in &self.backends {
            let up = self.balancer.backends().ready(b);
            gauge
                .with_label_values(&[b.addr.to_string().as_str()])
                .set(i64::from(up));
        }
    }

    /// The next app server in rotation, as a peer with lacquer's timeouts, and its label for
    /// metrics and logs (its address). An error when none is in rotation.
    pub(crate) fn next_peer(&self) -> Result<(Box<HttpPeer>, String)> {
        let backend = self
            .balancer
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no app server available"))?;
        let label = backend.addr.to_string();
        let tls = self.tls.get(&label);
        let sni = tls.map(|t| t.sni.clone()).unwrap_or_default();
        let mut peer = HttpPeer::new(backend, tls.is_some(), sni);
        let o = &mut peer.options;
        if let Some(t) = tls {
            // chain and name, against the system's roots and `upstream_ca_file`
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
        }
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect);
        // pingora 0.9 has one per-read timer for the response header and body: the first
        // byte is usually the slow one (the app renders), so the larger bound applies to each
        // read until pingora can tell them apart
        o.read_timeout = Some(self.timeouts.first_byte.max(self.timeouts.between_bytes));
        o.write_timeout = Some(self.timeouts.between_bytes);
        o.idle_timeout = Some(Duration::from_secs(60));
        Ok((Box::new(peer), label))
    }
}

/// The status lacquer answers when a request fails before its response began, and the
/// `detail` of its `Cache-Status`: 504 when the app server timed out (RFC 9110 section
/// 15.6.5), 502 for any other failure on its side, 400 for a malformed request, 500 for
/// lacquer's own; `None` when the client is already gone (nothing can be sent).
pub(crate) fn failure_status(e: &Error) -> Option<(u16, &'static str)> {
    use pingora_error::ErrorSource;
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        return Some((*code, "error"));
    }
    match e.esource() {
        ErrorSource::Upstream => Some(match e.etype() {
            ConnectTimedout => (504, "connect-timeout"),
            ReadTimedout | WriteTimedout => (504, "response-timeout"),
            ConnectRefused => (502, "connect-refused"),
            InvalidHTTPHeader => (502, "invalid-response"),
            _ => (502, "upstream-error"),
        }),
        ErrorSource::Downstream => match e.etype() {
            WriteError | ReadError | ConnectionClosed => None,
            _ => Some((400, "bad-request")),
        },
        ErrorSource::Internal | ErrorSource::Unset => Some((500, "internal-error")),
    }
}

/// Why an app server's response header cannot be relayed, if it cannot: a transfer coding
/// other than one `chunked` (RFC 9112 section 6.1: lacquer would pass raw chunk framing on as
/// content, or store it), or `101 Switching Protocols` to a request that asked for no upgrade
/// (the connection would turn into a tunnel nobody asked for).
pub(crate) fn unrelayable(resp: &ResponseHeader, req: &RequestHeader) -> Option<&'static str> {
    if resp.status.as_u16() == 101 && !req.headers.contains_key(http::header::UPGRADE) {
        return Some("101 Switching Protocols to a request without Upgrade");
    }
    let mut codings = resp.headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if codings.next().is_some()
        || !first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return Some("unsupported Transfer-Encoding");
    }
    None
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn timeouts_are_504_other_upstream_failures_502() {
        let up = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_up();
            failure_status(&e)
        };
        let down = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_down();
            failure_status(&e)
        };
        assert_eq!(
            up(ErrorType::ConnectTimedout),
            Some((504, "connect-timeout"))
        );
        assert_eq!(up(ErrorType::ReadTimedout), Some((504, "response-timeout")));
        assert_eq!(
            up(ErrorType::ConnectRefused),
            Some((502, "connect-refused"))
        );
        assert_eq!(
            up(ErrorType::ConnectionClosed),
            Some((502, "upstream-error"))
        );
        assert_eq!(down(ErrorType::ConnectionClosed), None);
        assert_eq!(
            down(ErrorType::InvalidHTTPHeader),
            Some((400, "bad-request"))
        );
        assert_eq!(
            failure_status(&Error::new(ErrorType::HTTPStatus(503))),
            Some((503, "error"))
        );
    }
}
