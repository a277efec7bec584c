//! lacquer's background work beside the listeners: active health checks, configuration reload
//! on SIGHUP, and a graceful stop on SIGTERM that waits for in-flight requests (bounded by
//! `shutdown_timeout`) instead of pingora's fixed grace period.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::live::{Live, SharedLive};

/// Runs the health checks of the current app-server pool, whatever reloads do to it.
pub(crate) struct HealthChecker {
    live: SharedLive,
}

impl HealthChecker {
    /// A checker of `live`'s pool.
    pub(crate) fn new(live: SharedLive) -> HealthChecker {
        HealthChecker { live }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let live = self.live.load_full();
            let interval = match live.upstreams.check_interval() {
                Some(i) => {
                    for pool in live.all_upstreams() {
                        pool.check_health().await;
                    }
                    i
                }
                None => Duration::from_secs(1),
            };
            drop(live);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Re-reads the config file on SIGHUP.
pub(crate) struct Reloader {
    path: PathBuf,
    live: SharedLive,
}

impl Reloader {
    /// A reloader of `path` into `live`.
    pub(crate) fn new(path: PathBuf, live: SharedLive) -> Reloader {
        Reloader { path, live }
    }

    /// Load, validate and install the file; on any problem the old config stays in force and
    /// the problems are returned, one per key.
    pub(crate) fn reload(&self) -> Result<(), Vec<String>> {
        let mut config = Config::load(&self.path).map_err(|e| e.0)?;
        let old = self.live.load();
        for change in Live::keep_restart_only(&old.config, &mut config) {
            warn!("reload: {change} takes effect only after a restart");
        }
        let new = Live::new(Arc::new(config)).map_err(|e| vec![e.to_string()])?;
        for pool in new.all_upstreams() {
            pool.publish_health();
        }
        self.live.store(Arc::new(new));
        // renewed certificates, for the handshakes from now on (the listeners stay)
        let problems = crate::edge::tls::reload_certificates();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for SIGHUP, reload disabled: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match self.reload() {
                    Ok(()) => info!("reloaded {}", self.path.display()),
                    Err(problems) => {
                        for p in problems {
                            error!("reload refused, the running config stays: {p}");
                        }
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one request in flight for as long as it lives.
#[derive(Debug)]
pub(crate) struct InFlight(());

impl InFlight {
    /// Count a request that has started.
    pub(crate) fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        InFlight(())
    }

    /// Requests in flight now.
    pub(crate) fn count() -> usize {
        IN_FLIGHT.load(Ordering::Acquire)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// pingora's signals, with a graceful stop that ends as soon as the last in-flight request
/// has finished (or `timeout` has passed): SIGTERM stops the listeners, drains, exits 0;
/// SIGINT stops at once; SIGQUIT hands the sockets to a new process (pingora's upgrade).
pub(crate) struct DrainingShutdown {
    /// The longest a graceful stop waits.
    pub(crate) timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM: no new connections; waiting for {} requests in flight", InFlight::count());
                let timeout = self.timeout;
                let spawned = std::thread::Builder::new()
                    .name("lacquer-drain".into())
                    .spawn(move || drain_then_exit(timeout));
                if let Err(e) = spawned {
                    error!("cannot watch the drain, pingora's grace period applies: {e}");
                }
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

fn drain_then_exit(timeout: Duration) {
    let started = Instant::now();
    // let pingora close the listeners first, so nothing new arrives while we count
    std::thread::sleep(Duration::from_millis(200));
    while InFlight::count() > 0 && started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = InFlight::count();
    if left > 0 {
        warn!("shutdown timeout: {left} requests still in flight are cut off");
    } else {
        info!("all requests finished; exiting");
    }
    // the access log writer flushes after every batch; give it a moment for the last lines
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(0);
}
