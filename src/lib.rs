//! lacquer: a caching HTTP reverse proxy for anonymous web pages, on pingora.
//!
//! The crate map (one concept per file), from the ground floor up; a module imports only
//! from the floors below it:
//! - `config`: the YAML file, raw then validated (`config/raw.rs` with every default,
//!   `config/validate.rs` one function per section, `config/values.rs` networks and globs,
//!   `config/units.rs` sizes and durations); imports nothing of the runtime
//! - `metrics`: the Prometheus metrics; `rate_limit`: token buckets
//! - `cache`: key, policy, freshness, directives, HTTP dates, conditional requests, vary,
//!   range, status, meta codec, tags, indexes, purge log and the moka-backed
//!   `pingora_cache::Storage` (`cache::storage`)
//! - `request`: what lacquer changes in a request before the cache and the app see it
//! - `rules`: per-route rules (validated in `config/routes.rs`), matched once per request
//! - `purge`: running purges, `PURGE` on the proxy listener, unsafe-method invalidation;
//!   `purge/gate.rs` who may purge and how often, `purge/api.rs` the admin API body (the
//!   Varnish purge clients' formats and bans belong in `purge/` too)
//! - `cluster`: several nodes on Redis: purges published to a stream, followed, acknowledged
//!   (`cluster/codec.rs` the purge on the stream, `cluster/follow.rs` following it)
//! - `upstream`: the app servers: round robin with weights, health checks, peers and timeouts
//! - `live`: the reloadable generation (config, app servers, purge gate) requests snapshot
//! - `access_log`: one line per client request
//! - `guard`: the connection guard (`guard/scan.rs` the pure header watch, `guard/date.rs`
//!   the `Date` in a response head, `guard/stream.rs` the guarded stream): client limits,
//!   write coalescing, the response's own `Date`, fills that outlive their client;
//! - `edge`: who the client is and over which scheme (`trusted_proxies`); `edge/proxy_protocol.rs`
//!   the PROXY protocol; `edge/tls.rs` TLS listener settings (SNI, ALPN)
//! - `proxy`: the one `ProxyHttp` impl, thin, delegating to the modules above
//! - `admin`: the admin listener; `services`: health-check loop, SIGHUP reload, SIGTERM drain
//! - `server`: pingora's server and services assembled from the config

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod access_log;
pub(crate) mod admin;
pub mod cache;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod edge;
pub(crate) mod fast_path;
pub(crate) mod guard;
pub(crate) mod live;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub mod purge;
pub(crate) mod rate_limit;
pub(crate) mod request;
pub(crate) mod rules;
pub mod server;
pub(crate) mod services;
pub(crate) mod upstream;
