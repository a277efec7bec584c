//! The config file exactly as written: serde structs with defaults and no interpretation.
//! Every struct denies unknown keys. `super::validate` turns this into the typed [`super::Config`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `listen` (docs/configuration.md).
    #[serde(default = "default_listen")]
    pub listen: Vec<RawListen>,
    /// `threads` (docs/configuration.md).
    #[serde(default)]
    pub threads: Option<usize>,
    /// `admin` (docs/configuration.md).
    #[serde(default)]
    pub admin: RawAdmin,
    /// `upstreams` (docs/configuration.md).
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    /// `timeouts` (docs/configuration.md).
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// `cache` (docs/configuration.md).
    #[serde(default)]
    pub cache: RawCache,
    /// `bypass` (docs/configuration.md).
    #[serde(default)]
    pub bypass: super::bypass::RawBypass,
    /// `purge` (docs/configuration.md).
    #[serde(default)]
    pub purge: RawPurge,
    /// `access_log` (docs/configuration.md).
    #[serde(default)]
    pub access_log: RawAccessLog,
    /// `health_check` (docs/configuration.md).
    #[serde(default)]
    pub health_check: RawHealthCheck,
    /// `limits` (docs/configuration.md).
    #[serde(default)]
    pub limits: RawLimits,
    /// `retries` (docs/configuration.md).
    #[serde(default = "default_retries")]
    pub retries: i64,
    /// `shutdown_timeout` (docs/configuration.md).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    /// `trusted_proxies` (docs/configuration.md).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `upstream_ca_file` (docs/configuration.md).
    #[serde(default)]
    pub upstream_ca_file: Option<String>,
    /// `rules` (docs/configuration.md).
    #[serde(default)]
    pub rules: Vec<super::routes::RawRule>,
    /// `cluster` (docs/configuration.md): nodes that share purges through Redis.
    #[serde(default)]
    pub cluster: Option<super::cluster::RawCluster>,
    /// `pools` (docs/configuration.md): named lists of app servers for rules.
    #[serde(default)]
    pub pools: std::collections::BTreeMap<String, Vec<RawUpstream>>,
}

fn default_retries() -> i64 {
    2
}
fn default_shutdown_timeout() -> String {
    "10s".into()
}

/// `health_check:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `health_check.type` (docs/configuration.md).
    #[serde(default = "default_hc_type", rename = "type")]
    pub kind: String,
    /// `health_check.path` (docs/configuration.md).
    #[serde(default)]
    pub path: Option<String>,
    /// `health_check.host` (docs/configuration.md).
    #[serde(default)]
    pub host: Option<String>,
    /// `health_check.interval` (docs/configuration.md).
    #[serde(default = "default_hc_interval")]
    pub interval: String,
    /// `health_check.timeout` (docs/configuration.md).
    #[serde(default = "default_hc_timeout")]
    pub timeout: String,
    /// `health_check.failures` (docs/configuration.md).
    #[serde(default = "default_hc_failures")]
    pub failures: i64,
    /// `health_check.successes` (docs/configuration.md).
    #[serde(default = "default_hc_successes")]
    pub successes: i64,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        RawHealthCheck {
            kind: default_hc_type(),
            path: None,
            host: None,
            interval: default_hc_interval(),
            timeout: default_hc_timeout(),
            failures: default_hc_failures(),
            successes: default_hc_successes(),
        }
    }
}

fn default_hc_type() -> String {
    "tcp".into()
}
fn default_hc_interval() -> String {
    "2s".into()
}
fn default_hc_timeout() -> String {
    "1s".into()
}
fn default_hc_failures() -> i64 {
    3
}
fn default_hc_successes() -> i64 {
    2
}

fn default_listen() -> Vec<RawListen> {
    vec![RawListen::Addr("127.0.0.1:6081".to_string())]
}

/// One `listen` entry: an address, or an address with options.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawListen {
    /// `"127.0.0.1:6081"`.
    Addr(String),
    /// `{addr: "0.0.0.0:6081", proxy_protocol: true}`.
    Options(RawListener),
}

/// A `listen` entry with options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `listen[].addr` (docs/configuration.md).
    pub addr: String,
    /// `listen[].proxy_protocol` (docs/configuration.md).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// `listen[].tls` (docs/configuration.md).
    #[serde(default)]
    pub tls: Option<RawTls>,
}

/// `listen[].tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `listen[].tls.certificates` (docs/configuration.md).
    pub certificates: Vec<RawCertificate>,
}

/// One certificate chain and its key, PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// `listen[].tls.certificates[].cert` (docs/configuration.md).
    pub cert: String,
    /// `listen[].tls.certificates[].key` (docs/configuration.md).
    pub key: String,
}

/// `admin:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `admin.listen` (docs/configuration.md).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:6082".to_string()
}

/// One entry of `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `upstreams[].addr` (docs/configuration.md).
    pub addr: String,
    /// `upstreams[].weight` (docs/configuration.md).
    #[serde(default = "default_weight")]
    pub weight: i64,
    /// `upstreams[].tls` (docs/configuration.md).
    #[serde(default)]
    pub tls: bool,
    /// `upstreams[].sni` (docs/configuration.md).
    #[serde(default)]
    pub sni: Option<String>,
    /// `upstreams[].verify` (docs/configuration.md).
    #[serde(default = "default_true")]
    pub verify: bool,
}

fn default_weight() -> i64 {
    1
}

/// `timeouts:` towards the app servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// `timeouts.connect` (docs/configuration.md).
    #[serde(default = "default_connect")]
    pub connect: String,
    /// `timeouts.first_byte` (docs/configuration.md).
    #[serde(default = "default_first_byte")]
    pub first_byte: String,
    /// `timeouts.between_bytes` (docs/configuration.md).
    #[serde(default = "default_between_bytes")]
    pub between_bytes: String,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            connect: default_connect(),
            first_byte: default_first_byte(),
            between_bytes: default_between_bytes(),
        }
    }
}

fn default_connect() -> String {
    "2s".into()
}
fn default_first_byte() -> String {
    "30s".into()
}
fn default_between_bytes() -> String {
    "30s".into()
}

/// `cache:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// `cache.max_size` (docs/configuration.md).
    #[serde(default = "default_max_size")]
    pub max_size: String,
    /// `cache.max_object_size` (docs/configuration.md).
    #[serde(default = "default_max_object_size")]
    pub max_object_size: String,
    /// `cache.default_ttl` (docs/configuration.md).
    #[serde(default)]
    pub default_ttl: super::routes::RawTtl,
    /// `cache.stale_while_revalidate` (docs/configuration.md).
    #[serde(default = "zero")]
    pub stale_while_revalidate: String,
    /// `cache.stale_if_error` (docs/configuration.md).
    #[serde(default = "zero")]
    pub stale_if_error: String,
    /// `cache.keep` (docs/configuration.md).
    #[serde(default = "default_keep")]
    pub keep: String,
    /// `cache.lock_timeout` (docs/configuration.md).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: String,
    /// `cache.hit_for_miss_keys` (docs/configuration.md).
    #[serde(default = "default_hit_for_miss")]
    pub hit_for_miss_keys: i64,
    /// `cache.tracking_params` (docs/configuration.md).
    #[serde(default = "default_tracking_params")]
    pub tracking_params: Vec<String>,
    /// `cache.strip_unkeyed_headers` (docs/configuration.md).
    #[serde(default = "default_unkeyed_headers")]
    pub strip_unkeyed_headers: Vec<String>,
    /// `cache.fast_path` (docs/configuration.md).
    #[serde(default = "default_fast_path")]
    pub fast_path: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_size: default_max_size(),
            max_object_size: default_max_object_size(),
            default_ttl: super::routes::RawTtl::default(),
            stale_while_revalidate: zero(),
            stale_if_error: zero(),
            keep: default_keep(),
            lock_timeout: default_lock_timeout(),
            hit_for_miss_keys: default_hit_for_miss(),
            tracking_params: default_tracking_params(),
            strip_unkeyed_headers: default_unkeyed_headers(),
            fast_path: default_fast_path(),
        }
    }
}

fn default_max_size() -> String {
    "256MiB".into()
}
fn default_max_object_size() -> String {
    "8MiB".into()
}
fn zero() -> String {
    "0s".into()
}
fn default_keep() -> String {
    "10m".into()
}
fn default_lock_timeout() -> String {
    "30s".into()
}
fn default_fast_path() -> bool {
    true
}
fn default_hit_for_miss() -> i64 {
    65_536
}

/// Request headers that are not part of the key but that apps and frameworks commonly trust to
/// build URLs, pick a scheme or override the method: removed from requests the cache serves.
pub fn default_unkeyed_headers() -> Vec<String> {
    [
        "X-Forwarded-Host",
        "X-Forwarded-Server",
        "X-Forwarded-Scheme",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Host",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "Forwarded",
        "X-Forwarded-Ssl",
        "X-Original-Host",
        "Front-End-Https",
        "X-Url-Scheme",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The query parameters left out of the cache key unless the file says otherwise.
pub fn default_tracking_params() -> Vec<String> {
    [
        "utm_*", "gclid", "fbclid", "dclid", "msclkid", "mc_cid", "mc_eid", "_ga", "yclid",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `purge:`: who may invalidate, and how objects are tagged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPurge {
    /// `purge.allow` (docs/configuration.md).
    #[serde(default = "default_purge_allow")]
    pub allow: Vec<String>,
    /// `purge.token` (docs/configuration.md).
    #[serde(default)]
    pub token: Option<String>,
    /// `purge.token_env` (docs/configuration.md).
    #[serde(default)]
    pub token_env: Option<String>,
    /// `purge.tag_headers` (docs/configuration.md).
    #[serde(default = "default_tag_headers")]
    pub tag_headers: Vec<String>,
    /// `purge.strip_tag_headers` (docs/configuration.md).
    #[serde(default = "default_true")]
    pub strip_tag_headers: bool,
    /// `purge.soft_grace` (docs/configuration.md).
    #[serde(default = "default_soft_grace")]
    pub soft_grace: String,
    /// `purge.invalidate_on_unsafe` (docs/configuration.md).
    #[serde(default = "default_true")]
    pub invalidate_on_unsafe: bool,
    /// `purge.invalidate_locations` (docs/configuration.md).
    #[serde(default)]
    pub invalidate_locations: bool,
    /// `purge.rate_limit` (docs/configuration.md).
    #[serde(default = "default_purge_rate")]
    pub rate_limit: i64,
    /// `purge.unsafe_invalidation_rate` (docs/configuration.md).
    #[serde(default = "default_unsafe_rate")]
    pub unsafe_invalidation_rate: i64,
    /// `purge.unsafe_invalidation_rate_per_client` (docs/configuration.md).
    #[serde(default = "default_unsafe_rate_per_client")]
    pub unsafe_invalidation_rate_per_client: i64,
    /// `purge.proxy_listener` (docs/configuration.md).
    #[serde(default = "default_proxy_listener_purge")]
    pub proxy_listener: String,
}

impl Default for RawPurge {
    fn default() -> Self {
        RawPurge {
            allow: default_purge_allow(),
            token: None,
            token_env: None,
            tag_headers: default_tag_headers(),
            strip_tag_headers: true,
            soft_grace: default_soft_grace(),
            invalidate_on_unsafe: true,
            invalidate_locations: false,
            rate_limit: default_purge_rate(),
            unsafe_invalidation_rate: default_unsafe_rate(),
            unsafe_invalidation_rate_per_client: default_unsafe_rate_per_client(),
            proxy_listener: default_proxy_listener_purge(),
        }
    }
}

fn default_purge_allow() -> Vec<String> {
    vec!["127.0.0.1/32".into(), "::1/128".into()]
}
/// The response headers that carry tags unless the file says otherwise.
pub fn default_tag_headers() -> Vec<String> {
    // every app's own: Varnish xkey and Fastly, Cloudflare, WordPress and FOSHttpCache,
    // Magento, Drupal (both of its names)
    [
        "Surrogate-Key",
        "xkey",
        "Cache-Tag",
        "X-Cache-Tags",
        "X-Magento-Tags",
        "Purge-Cache-Tags",
        "Cache-Tags",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn default_true() -> bool {
    true
}
fn default_soft_grace() -> String {
    "60s".into()
}
fn default_purge_rate() -> i64 {
    1000
}
fn default_unsafe_rate() -> i64 {
    1000
}
fn default_unsafe_rate_per_client() -> i64 {
    10
}
fn default_proxy_listener_purge() -> String {
    "allow".into()
}

/// `limits:`: what a client connection may send and how slowly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `limits.max_header_size` (docs/configuration.md).
    #[serde(default = "default_max_header_size")]
    pub max_header_size: String,
    /// `limits.max_headers` (docs/configuration.md).
    #[serde(default = "default_max_headers")]
    pub max_headers: i64,
    /// `limits.max_url_length` (docs/configuration.md).
    #[serde(default = "default_max_url_length")]
    pub max_url_length: String,
    /// `limits.header_timeout` (docs/configuration.md).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// `limits.idle_timeout` (docs/configuration.md).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// `limits.max_connections` (docs/configuration.md).
    #[serde(default = "default_max_connections")]
    pub max_connections: i64,
    /// `limits.max_orphan_fills` (docs/configuration.md).
    #[serde(default = "default_max_orphan_fills")]
    pub max_orphan_fills: i64,
    /// `limits.underscores_in_headers` (docs/configuration.md).
    #[serde(default)]
    pub underscores_in_headers: bool,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_size: default_max_header_size(),
            max_headers: default_max_headers(),
            max_url_length: default_max_url_length(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_orphan_fills: default_max_orphan_fills(),
            underscores_in_headers: false,
        }
    }
}

fn default_max_header_size() -> String {
    "32KiB".into()
}
fn default_max_headers() -> i64 {
    100
}
fn default_max_url_length() -> String {
    "8KiB".into()
}
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_max_connections() -> i64 {
    16384
}
fn default_max_orphan_fills() -> i64 {
    64
}

/// `access_log:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `access_log.target` (docs/configuration.md).
    #[serde(default = "default_log_target")]
    pub target: String,
    /// `access_log.path` (docs/configuration.md).
    #[serde(default)]
    pub path: Option<String>,
    /// `access_log.format` (docs/configuration.md).
    #[serde(default = "default_log_format")]
    pub format: String,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            target: default_log_target(),
            path: None,
            format: default_log_format(),
        }
    }
}

fn default_log_target() -> String {
    "stdout".into()
}
fn default_log_format() -> String {
    "combined".into()
}
