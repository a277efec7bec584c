//! Assembling the pingora server from a validated [`Config`]: pingora's `ServerConf` (filled
//! here; pingora never reads our file), the proxy service on every `listen` address and the
//! admin service on `admin.listen`.

use std::sync::Arc;

use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use pingora_error::{Error, ErrorType, Result};

use crate::access_log::AccessLog;
use crate::metrics::metrics;

use crate::admin::AdminApp;
use crate::cache::CacheRuntime;
use crate::config::Config;
use crate::proxy::LacquerProxy;

/// pingora's own settings derived from ours.
pub fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads,
        // SIGTERM: stop accepting at once, then give in-flight requests this long to finish
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    }
}

/// A ready-to-run server for `config`.
pub fn build(config: Config) -> Result<Server> {
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
    let proxy = LacquerProxy::new(config.clone(), cache, Arc::new(access_log))?;
    let mut proxy_service =
        pingora_proxy::http_proxy_service_with_name(&server.configuration, proxy, "lacquer proxy");
    for addr in &config.listen {
        proxy_service.add_tcp(&addr.to_string());
    }
    server.add_service(proxy_service);

    let mut admin = Service::new(
        "lacquer admin".to_string(),
        AdminApp::new(cache, config.clone()),
    );
    admin.add_tcp(&config.admin_listen.to_string());
    server.add_service(admin);
    Ok(server)
}
