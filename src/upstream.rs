//! The app servers: round-robin selection (honouring weights) over `upstreams`, and the
//! `HttpPeer` with lacquer's timeouts for each attempt.
//!
//! Health checks and richer retry policy come with the upstream-resilience work; a connect
//! failure is already retried on the next server for idempotent requests (see `proxy.rs`).

use std::sync::Arc;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};

use crate::config::{Timeouts, Upstream};

/// The pool of app servers.
pub struct Upstreams {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    timeouts: Timeouts,
    count: usize,
}

impl Upstreams {
    /// A pool over `upstreams`, each attempt bounded by `timeouts`.
    pub fn new(upstreams: &[Upstream], timeouts: Timeouts) -> Result<Upstreams> {
        let mut backends = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            let b = Backend::new_with_weight(&u.addr.to_string(), u.weight).map_err(|e| {
                Error::because(ErrorType::InternalError, format!("upstream {}", u.addr), e)
            })?;
            backends.push(b);
        }
        let balancer = LoadBalancer::try_from_iter(backends).map_err(|e| {
            Error::because(ErrorType::InternalError, "building the upstream pool", e)
        })?;
        Ok(Upstreams {
            balancer: Arc::new(balancer),
            timeouts,
            count: upstreams.len(),
        })
    }

    /// How many app servers there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the pool is empty (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The next app server, as a peer with lacquer's timeouts, and its label for metrics and
    /// logs (its address).
    pub fn next_peer(&self) -> Result<(Box<HttpPeer>, String)> {
        let backend = self
            .balancer
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no app server available"))?;
        let label = backend.addr.to_string();
        let mut peer = HttpPeer::new(backend, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect);
        // pingora has one per-read timeout for the header and body; the first byte is usually
        // the slow one (the app renders), so it bounds both until separate timers exist
        o.read_timeout = Some(self.timeouts.first_byte.max(self.timeouts.between_bytes));
        o.write_timeout = Some(self.timeouts.between_bytes);
        o.idle_timeout = Some(std::time::Duration::from_secs(60));
        Ok((Box::new(peer), label))
    }
}
