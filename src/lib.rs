//! lacquer: a caching HTTP reverse proxy for anonymous web pages, on pingora.
//!
//! The crate map (one concept per file):
//! - `config`: the YAML file, raw then validated (`config/raw.rs`, `config/units.rs`)
//! - `server`: pingora's server and services assembled from the config
//! - `proxy`: the one `ProxyHttp` impl, thin, delegating to the modules below
//! - `request`: what lacquer changes in a request before the cache and the app see it
//! - `cache::key`: request -> cache key (scheme, host, path, query without tracking params)
//! - `cache::policy`: which requests may use the cache (anonymous GET/HEAD only)
//! - `cache::freshness`: which responses may be stored and for how long (RFC 9111, RFC 9213)
//! - `cache::vary`: Vary variants, with Accept-Encoding normalised
//! - `cache::storage`: the moka-backed `pingora_cache::Storage`
//! - `cache::status`: the outcome of a request and its RFC 9211 `Cache-Status` header
//! - `upstream`: the app servers: round robin with weights, health checks, peers and timeouts
//! - `live`: the reloadable generation (config, app servers, purge rules) requests snapshot
//! - `services`: health-check loop, SIGHUP reload, SIGTERM drain
//! - `purge`: PURGE and the purge API, their authorisation, unsafe-method invalidation
//! - `cache::index`, `cache::purge_log`, `cache::tags`: tag/variant indexes, recent purges, tag parsing
//! - `metrics`: the Prometheus metrics; `access_log`: one line per client request
//! - `rate_limit`: the token bucket that bounds purge requests
//! - `limits`: client limits enforced on the connection (header time, size, count, URL, idle)
//! - `admin`: the admin listener

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod config;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod purge;
pub mod rate_limit;
pub mod request;
pub mod server;
pub mod services;
pub mod upstream;
