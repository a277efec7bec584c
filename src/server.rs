//! Assembling the pingora server from a validated [`Config`]: pingora's `ServerConf` (filled
//! here; pingora never reads our file), the proxy service on every `listen` address and the
//! admin service on `admin.listen`.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::RunArgs;
use pingora_core::services::background::background_service;

use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use pingora_error::{Error, ErrorType, Result};

use crate::access_log::AccessLog;
use crate::metrics::metrics;

use crate::admin::AdminApp;
use crate::cache::CacheRuntime;
use crate::config::Config;
use crate::fast_path::FastPath;
use crate::guard::LimitedApp;
use crate::live::{Live, SharedLive};
use crate::proxy::LacquerProxy;
use crate::services::{DrainingShutdown, HealthChecker, Reloader};

/// pingora's own settings derived from ours.
pub fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads,
        // SIGTERM: pingora stops accepting, then waits this long before stopping the runtimes;
        // lacquer's DrainingShutdown exits earlier, as soon as in-flight requests are done
        grace_period_seconds: Some(config.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        // one single-threaded runtime per worker thread, no work stealing: a request stays on
        // the thread that accepted it, with no cross-thread wake-ups (measured faster for
        // short cache hits, docs/benchmarks.md)
        work_stealing: false,
        // CA certificates added for verifying app servers over TLS
        ca_file: config
            .upstream_ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    }
}

/// A ready-to-run server for `config`, read from `path` (re-read on SIGHUP).
pub fn build(config: Config, path: PathBuf) -> Result<Server> {
    let config = Arc::new(config);
    let mut server = Server::new_with_opt_and_conf(None, server_conf(&config));
    server.bootstrap();

    // metrics first: every later piece may count into them
    let m = metrics();
    m.cache_capacity
        .set(i64::try_from(config.cache.max_size).unwrap_or(i64::MAX));
    let access_log = AccessLog::start(&config.access_log_target, config.access_log_format)
        .map_err(|e| {
            Error::because(
                ErrorType::InternalError,
                format!("access_log: cannot open {:?}", config.access_log_target),
                e,
            )
        })?;
    let cache = CacheRuntime::leak(&config);
    let cluster = match &config.cluster {
        Some(c) => {
            let cluster = crate::cluster::Cluster::leak(c, cache)
                .map_err(|e| Error::explain(ErrorType::InternalError, e))?;
            if c.shared_max_object_size > 0 {
                let tier = crate::cluster::RedisTier::leak(
                    cluster,
                    c.shared_max_object_size,
                    config.cache.lock_timeout,
                    cache.storage.purge_horizon(),
                );
                cache.storage.attach_shared(tier);
            }
            Some(cluster)
        }
        None => None,
    };
    let live: SharedLive = Arc::new(ArcSwap::from_pointee(Live::new(config.clone())?));
    let access_log = Arc::new(access_log);
    let proxy = LacquerProxy::new(live.clone(), cache, access_log.clone(), cluster);
    // every client connection is held to `limits:` (header time, size, count, URL length,
    // idle keep-alive) before pingora parses it: see guard.rs
    // one service for plain listeners, one for those whose connections open with a PROXY
    // protocol header, one for TLS listeners: the guard of each knows what it reads
    for kind in [
        ListenerKind::Plain,
        ListenerKind::ProxyProtocol,
        ListenerKind::Tls,
    ] {
        let listeners: Vec<(usize, &crate::config::Listener)> = config
            .listen
            .iter()
            .enumerate()
            .filter(|(_, l)| ListenerKind::of(l) == kind)
            .collect();
        if listeners.is_empty() {
            continue;
        }
        let proxy_app = LimitedApp::new(
            pingora_proxy::http_proxy(&server.configuration, proxy.clone()),
            live.clone(),
            kind == ListenerKind::ProxyProtocol,
            Some(FastPath::new(live.clone(), cache, access_log.clone())),
        );
        let mut proxy_service = Service::new(kind.service_name().to_string(), proxy_app);
        for (i, l) in listeners {
            if let Some(certificates) = &l.tls {
                let settings =
                    crate::edge::tls::settings(certificates, &format!("listen[{i}].tls"))
                        .map_err(|e| Error::explain(ErrorType::InternalError, e))?;
                proxy_service.add_tls_with_settings(&l.addr.to_string(), None, settings);
                continue;
            }
            // no L4 buffers: pingora's default 64 KiB read buffer and any write buffer stay
            // allocated for every idle keep-alive connection (about 100 KB each with a 32 KiB
            // write buffer, docs/load-tests.md). Reads go straight into pingora's request
            // buffer; writes are coalesced by the connection guard (a held header goes out
            // with the body in one writev, guard/stream.rs), so a cached response still
            // leaves in one send.
            proxy_service.add_listener(
                ListenerConfig::tcp(l.addr.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
            );
        }
        server.add_service(proxy_service);
    }

    let admin_app = LimitedApp::new(
        pingora_core::apps::http_app::HttpServer::new_app(AdminApp::new(
            cache,
            live.clone(),
            cluster,
        )),
        live.clone(),
        false,
        None,
    );
    let mut admin = Service::new("lacquer admin".to_string(), admin_app);
    admin.add_tcp(&config.admin_listen.to_string());
    server.add_service(admin);

    server.add_service(background_service(
        "lacquer health checks",
        HealthChecker::new(live.clone()),
    ));
    if let Some(c) = cluster {
        server.add_service(background_service(
            "lacquer cluster",
            crate::cluster::Follower::new(c),
        ));
    }
    server.add_service(background_service(
        "lacquer reload",
        Reloader::new(path, live),
    ));
    Ok(server)
}

/// The three kinds of proxy listener, each served by its own service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerKind {
    Plain,
    ProxyProtocol,
    Tls,
}

impl ListenerKind {
    fn of(l: &crate::config::Listener) -> ListenerKind {
        match (l.tls.is_some(), l.proxy_protocol) {
            (true, _) => ListenerKind::Tls,
            (false, true) => ListenerKind::ProxyProtocol,
            (false, false) => ListenerKind::Plain,
        }
    }

    fn service_name(self) -> &'static str {
        match self {
            ListenerKind::Plain => "lacquer proxy",
            ListenerKind::ProxyProtocol => "lacquer proxy (PROXY protocol)",
            ListenerKind::Tls => "lacquer proxy (TLS)",
        }
    }
}

/// How `Server::run` watches signals: SIGTERM drains in-flight requests, bounded by
/// `shutdown_timeout`.
pub fn run_args(config: &Config) -> RunArgs {
    RunArgs {
        shutdown_signal: Box::new(DrainingShutdown {
            timeout: config.shutdown_timeout,
        }),
    }
}
