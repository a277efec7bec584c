//! lacquer's integration tests: the real proxy binary in front of real origins on ephemeral
//! loopback ports. Each test owns its origin, proxy and paths, and asserts both what the client
//! got and what the origin saw.

mod support;

mod broken_origin;
mod bypass;
mod caching;
mod cluster;
mod cluster_tier;
mod coalescing;
mod config;
mod edge;
mod fast_path;
mod limits;
mod memory;
mod observability;
mod proxying;
mod purge;
mod purge_clients;
mod rfc;
mod rules;
mod security;
mod smuggling;
mod stale;
mod tls;
mod upstream;
mod vary;
