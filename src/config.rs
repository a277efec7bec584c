//! lacquer's configuration: the YAML file is read into [`raw`] structs, then validated into the
//! typed [`Config`] that the rest of the crate uses. Validation collects every problem, each
//! naming its key path (`cache.max_size: expected a size like "256MiB", got "lots"`).
//!
//! The config is the ground floor of the crate: it imports nothing of the runtime. Parts:
//! `raw.rs` (the file as serde reads it, with every default), `validate.rs` (one function
//! per section, raw to typed), `values.rs` (networks and globs), `units.rs` (sizes and
//! durations). Not here: building pingora's `ServerConf` (see `server.rs`).

pub mod bypass;
pub mod cluster;
pub mod raw;
pub mod routes;
pub mod units;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use cluster::ClusterConfig;
use raw::RawConfig;
pub use routes::{Rule, TtlTable};
pub use values::{load_certificate, Cidr, NamePattern};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listeners.
    pub listen: Vec<Listener>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// App servers.
    pub upstreams: Vec<Upstream>,
    /// Timeouts towards the app servers.
    pub timeouts: Timeouts,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Who bypasses the cache.
    pub bypass: BypassConfig,
    /// Invalidation.
    pub purge: PurgeConfig,
    /// Where the access log goes.
    pub access_log_target: LogTarget,
    /// How access log lines look.
    pub access_log_format: LogFormat,
    /// Active health checks of the app servers.
    pub health_check: HealthCheckConfig,
    /// Extra attempts on another app server after a failure before the response.
    pub retries: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// What a client connection may send, and how slowly.
    pub limits: LimitsConfig,
    /// Peers (TLS terminators, load balancers) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Extra CA certificates (PEM) for verifying app servers over TLS.
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// Per-route rules, in file order (the first match applies).
    pub rules: Vec<Rule>,
    /// Named pools of app servers that rules route to.
    pub pools: Vec<(String, Vec<Upstream>)>,
    /// Other nodes sharing purges through Redis; `None`: this node alone.
    pub cluster: Option<ClusterConfig>,
}

/// `access_log.target`: where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Nowhere.
    Off,
    /// Standard output.
    Stdout,
    /// Appended to this file.
    File(std::path::PathBuf),
}

/// `access_log.format`: how access log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Apache/nginx combined, plus duration, cache status, upstream and upstream time.
    Combined,
    /// One JSON object per line.
    Json,
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol header (v1 or v2) carrying the client.
    pub proxy_protocol: bool,
    /// TLS on this listener (HTTP/2 by ALPN, HTTP/1.1 otherwise): the certificates, chosen by
    /// SNI, the first the default. `None`: plain HTTP/1.1.
    pub tls: Option<Vec<CertificateFiles>>,
}

/// A certificate chain and its private key, PEM files (checked to parse at load time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// How app servers are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// No active checks: every server stays in rotation.
    None,
    /// A TCP connect.
    Tcp,
    /// `GET path` answered with a 2xx or 3xx.
    Http {
        /// The path requested.
        path: String,
        /// The Host header sent; the server's address when absent.
        host: Option<String>,
    },
}

/// `health_check:`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// What is checked.
    pub kind: HealthCheckKind,
    /// How often.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive failures that take a server out of rotation.
    pub failures: usize,
    /// Consecutive successes that put it back.
    pub successes: usize,
}

/// `purge:`
#[derive(Clone)]
pub struct PurgeConfig {
    /// Client networks allowed to purge without a token.
    pub allow: Vec<Cidr>,
    /// A bearer token that authorises purges from anywhere.
    pub token: Option<String>,
    /// Response headers that carry tags (surrogate keys), lower-cased.
    pub tag_headers: Vec<String>,
    /// Remove the tag headers from responses sent to clients.
    pub strip_tag_headers: bool,
    /// How long a soft-purged object may be served stale while it is refreshed.
    pub soft_grace: Duration,
    /// Invalidate a URL when an unsafe method on it succeeds (RFC 9111 section 4.4).
    pub invalidate_on_unsafe: bool,
    /// Also invalidate the same-host URLs in that response's `Location` and
    /// `Content-Location` (RFC 9111 section 4.4 permits it; off by default).
    pub invalidate_locations: bool,
    /// Purge requests accepted per second, all clients together (0: no limit).
    pub rate_limit: u32,
    /// Invalidations by unsafe requests without purge rights, per second, all clients
    /// together (0: no limit).
    pub unsafe_invalidation_rate: u32,
    /// The same, per client address (0: no limit).
    pub unsafe_invalidation_rate_per_client: u32,
    /// Who may purge through the proxy listeners (`purge.proxy_listener`).
    pub proxy_listener: ProxyListenerPurge,
}

/// `purge.proxy_listener`: which purges the proxy listeners accept (the admin listener always
/// takes `purge.allow` or the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyListenerPurge {
    /// From `purge.allow` networks or with the token (the default; Varnish's purge clients
    /// send PURGE to the cache's public port).
    Allow,
    /// Only with the token: for a proxy listener that faces the internet.
    Token,
    /// None: purges only on the admin listener.
    Off,
}

impl fmt::Debug for PurgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the token is a secret: never in logs
        f.debug_struct("PurgeConfig")
            .field("allow", &self.allow)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tag_headers", &self.tag_headers)
            .field("strip_tag_headers", &self.strip_tag_headers)
            .field("soft_grace", &self.soft_grace)
            .field("invalidate_on_unsafe", &self.invalidate_on_unsafe)
            .field("invalidate_locations", &self.invalidate_locations)
            .field("rate_limit", &self.rate_limit)
            .field("unsafe_invalidation_rate", &self.unsafe_invalidation_rate)
            .field(
                "unsafe_invalidation_rate_per_client",
                &self.unsafe_invalidation_rate_per_client,
            )
            .field("proxy_listener", &self.proxy_listener)
            .finish()
    }
}

/// One app server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its share of the load relative to the others.
    pub weight: usize,
    /// HTTPS to it: the name sent (SNI) and checked, and whether its certificate is verified.
    pub tls: Option<UpstreamTls>,
}

/// `upstreams[].tls`, `sni` and `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The server name sent and verified (default: the host of `addr`, when it is a name).
    pub sni: String,
    /// Verify the certificate (chain and name); on by default.
    pub verify: bool,
}

/// Timeouts towards the app servers.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From sending the request to the response header.
    pub first_byte: Duration,
    /// Between two reads of the response body.
    pub between_bytes: Duration,
}

/// `cache:`
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The byte budget of the in-memory cache.
    pub max_size: u64,
    /// Larger responses stream through uncached.
    pub max_object_size: u64,
    /// Heuristic freshness for responses with no explicit lifetime, by status; empty = off.
    pub default_ttl: TtlTable,
    /// Default stale-while-revalidate window when the origin gives none.
    pub stale_while_revalidate: Duration,
    /// Default stale-if-error window when the origin gives none.
    pub stale_if_error: Duration,
    /// How long an expired object with validators is kept for revalidation.
    pub keep: Duration,
    /// How long a coalesced request waits for another request's fetch.
    pub lock_timeout: Duration,
    /// How many keys are remembered as uncacheable (hit-for-miss).
    pub hit_for_miss_keys: usize,
    /// Query parameters left out of the cache key (and of cached requests).
    pub tracking_params: Vec<NamePattern>,
    /// Request headers removed from requests the cache serves (unkeyed input), lower-cased.
    pub strip_unkeyed_headers: Vec<http::HeaderName>,
    /// Plain fresh hits over HTTP/1 are answered below pingora (`fast_path.rs`).
    pub fast_path: bool,
}

/// `bypass:`
#[derive(Debug, Clone, Default)]
pub struct BypassConfig {
    /// Empty: any cookie bypasses the cache. Otherwise only these cookies do, and others are
    /// stripped from requests the cache serves.
    pub session_cookies: Vec<NamePattern>,
    /// Cookies that never bypass and are stripped from requests the cache serves (analytics,
    /// consent), whatever `session_cookies` says.
    pub ignore_cookies: Vec<NamePattern>,
}

/// `limits:`: what one client connection may send, and how slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Request line and header fields together, in bytes.
    pub max_header_size: usize,
    /// Header fields (lines after the request line).
    pub max_headers: usize,
    /// The request target (path and query, or absolute form), in bytes.
    pub max_url_length: usize,
    /// From the first byte of a request to the end of its header.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request started is closed after this long.
    pub idle_timeout: Duration,
    /// Client connections open at once (proxy listeners); one more is answered 503 and closed.
    pub max_connections: usize,
    /// Fills that may go on at once after their clients left (each keeps its app request).
    pub max_orphan_fills: usize,
    /// Forward header fields whose names contain `_` (nginx's `underscores_in_headers`). Off:
    /// they are dropped, since CGI-style servers read `X_Forwarded_Host` as `X-Forwarded-Host`.
    pub underscores_in_headers: bool,
}

impl Default for LimitsConfig {
    /// The defaults of `raw.rs`, validated: one source for every default.
    fn default() -> Self {
        validate::limits(&mut Vec::new(), &raw::RawLimits::default())
    }
}

/// Every problem found in a config file, one per line.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("{}: cannot read: {e}", path.display())]))?;
        Config::from_yaml(&text)
    }

    /// Parse and validate YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml prefixes its own (parent) path; ours is the whole one
            let message = match inner.split_once(": ") {
                Some((head, rest)) if path.starts_with(head) => rest.to_string(),
                _ => inner,
            };
            let message = readable(&message);
            if path.is_empty() || path == "." {
                ConfigError(vec![message])
            } else {
                ConfigError(vec![format!("{path}: {message}")])
            }
        })?;
        validate::validate(raw)
    }
}

/// serde's message with lacquer's own type names replaced by what the file should hold:
/// `expected struct RawUpstream` says nothing to someone writing YAML.
fn readable(message: &str) -> String {
    const UNTAGGED: &str = "data did not match any variant of untagged enum ";
    if let Some(rest) = message.strip_prefix(UNTAGGED) {
        let (name, at) = rest.split_once(' ').unwrap_or((rest, ""));
        let expected = match name {
            "RawListen" => "an address like \"127.0.0.1:6081\" or a mapping with addr",
            "RawTtl" => {
                "a duration like \"5m\" or statuses and durations like {\"200\": \"5m\", \"404\": \"10s\"}"
            }
            "OneOrMany" => "a string or a list of strings",
            _ => "another form",
        };
        return format!(
            "expected {expected}{}{at}",
            if at.is_empty() { "" } else { " " }
        );
    }
    match message.find("expected struct Raw") {
        Some(i) => {
            let rest = &message[i + "expected struct Raw".len()..];
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            let (name, tail) = rest.split_at(name_len);
            let what = match name {
                "Upstream" => "a mapping like {addr: \"127.0.0.1:8080\"}",
                _ => "a mapping of keys and values",
            };
            format!("{}expected {what}{tail}", &message[..i])
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_what_the_file_should_hold() {
        let e = |yaml: &str| Config::from_yaml(yaml).unwrap_err().0;
        assert_eq!(
            e("upstreams: [\"127.0.0.1:1\"]\n"),
            vec!["upstreams[0]: invalid type: string \"127.0.0.1:1\", expected a mapping like {addr: \"127.0.0.1:8080\"} at line 1 column 13"]
        );
        assert_eq!(
            e("upstreams: [{addr: \"127.0.0.1:1\"}]\ncache: 5\n"),
            vec!["cache: invalid type: integer `5`, expected a mapping of keys and values at line 2 column 8"]
        );
        assert_eq!(
            e("upstreams: [{addr: \"127.0.0.1:1\"}]\nlisten: [5]\n"),
            vec!["listen[0]: expected an address like \"127.0.0.1:6081\" or a mapping with addr at line 2 column 9"]
        );
    }

    const MINIMAL: &str = "upstreams:\n  - addr: \"127.0.0.1:8080\"\n";

    fn errors(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml) {
            Ok(_) => vec![],
            Err(e) => e.0,
        }
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(
            c.listen,
            vec![Listener {
                addr: "127.0.0.1:6081".parse().unwrap(),
                proxy_protocol: false,
                tls: None,
            }]
        );
        assert_eq!(c.admin_listen, "127.0.0.1:6082".parse().unwrap());
        assert_eq!(c.cache.max_size, 256 << 20);
        assert_eq!(c.cache.max_object_size, 8 << 20);
        assert!(c.cache.default_ttl.is_empty());
        assert!(c.bypass.session_cookies.is_empty());
        assert!(c
            .cache
            .tracking_params
            .iter()
            .any(|p| p.matches("utm_source")));
    }

    #[test]
    fn listeners_are_addresses_or_addresses_with_options() {
        let c = Config::from_yaml(&format!(
            "{MINIMAL}listen: [\"127.0.0.1:1\", {{addr: \"127.0.0.1:2\", proxy_protocol: true}}]\n"
        ))
        .unwrap();
        assert_eq!(
            c.listen
                .iter()
                .map(|l| (l.addr.port(), l.proxy_protocol))
                .collect::<Vec<_>>(),
            vec![(1, false), (2, true)]
        );
        let e = errors(&format!("{MINIMAL}listen: [{{addr: \"nowhere\"}}]\n"));
        assert_eq!(
            e,
            vec!["listen[0].addr: expected an address like \"127.0.0.1:8080\" or \"[::1]:8080\", got \"nowhere\"".to_string()]
        );
    }

    #[test]
    fn bad_size_names_the_key() {
        let e = errors(&format!("{MINIMAL}cache:\n  max_size: lots\n"));
        assert_eq!(
            e,
            vec!["cache.max_size: expected a size like \"256MiB\", got \"lots\"".to_string()]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let e = errors(
            "upstreams:\n  - addr: \"x:y\"\n  - addr: \"127.0.0.1:1\"\n    weight: 0\ncache:\n  lock_timeout: soon\n",
        );
        assert_eq!(
            e,
            vec![
                "upstreams[0].addr: expected an address like \"127.0.0.1:8080\" or \"app:8080\", got \"x:y\"".to_string(),
                "upstreams[1].weight: expected a whole number from 1 to 1000, got 0".to_string(),
                "cache.lock_timeout: expected a duration like \"30s\", \"250ms\" or \"5m\", got \"soon\"".to_string(),
            ]
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_path() {
        let e = errors(&format!("{MINIMAL}cache:\n  max_sise: 1MiB\n"));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("cache.max_sise: unknown field `max_sise`"),
            "{e:?}"
        );
    }

    #[test]
    fn upstream_names_are_resolved() {
        let c = Config::from_yaml("upstreams:\n  - addr: \"localhost:8080\"\n").unwrap();
        assert_eq!(c.upstreams[0].addr.port(), 8080);
        assert!(c.upstreams[0].addr.ip().is_loopback());
    }

    #[test]
    fn no_upstreams_is_an_error() {
        assert_eq!(
            errors("listen: [\"127.0.0.1:1\"]\n"),
            vec!["upstreams: at least one app server is required".to_string()]
        );
    }

    #[test]
    fn object_larger_than_cache_is_an_error() {
        let e = errors(&format!(
            "{MINIMAL}cache:\n  max_size: 2MiB\n  max_object_size: 4MiB\n"
        ));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("cache.max_object_size: must not exceed"));
    }

    #[test]
    fn purge_defaults_and_networks() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        let lo4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: std::net::IpAddr = "::1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert!(c.purge.allow.iter().any(|n| n.contains(lo4)));
        assert!(c.purge.allow.iter().any(|n| n.contains(lo6)));
        assert!(c.purge.allow.iter().any(|n| n.contains(mapped)));
        assert!(!c.purge.allow.iter().any(|n| n.contains(other)));
        assert_eq!(
            c.purge.tag_headers,
            vec![
                "surrogate-key",
                "xkey",
                "cache-tag",
                "x-cache-tags",
                "x-magento-tags",
                "purge-cache-tags",
                "cache-tags"
            ]
        );
        assert!(c.purge.token.is_none());
    }

    #[test]
    fn bad_purge_settings_are_named() {
        let e = errors(&format!(
            "{MINIMAL}purge:\n  allow: [\"everyone\"]\n  token: short\n  token_env: X\n"
        ));
        assert_eq!(
            e,
            vec![
                "purge.allow[0]: expected a network like \"127.0.0.1/32\" or \"::1/128\", got \"everyone\"".to_string(),
                "purge.token_env: set either purge.token or purge.token_env, not both".to_string(),
            ]
        );
    }

    #[test]
    fn access_log_settings() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.access_log_target, LogTarget::Stdout);
        let e = errors(&format!(
            "{MINIMAL}access_log:\n  target: file\n  format: xml\n"
        ));
        assert_eq!(
            e,
            vec![
                "access_log.path: required when access_log.target is \"file\"".to_string(),
                "access_log.format: expected \"combined\" or \"json\", got \"xml\"".to_string(),
            ]
        );
    }

    #[test]
    fn health_check_settings() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.health_check.kind, HealthCheckKind::Tcp);
        assert_eq!(c.retries, 2);
        let c = Config::from_yaml(&format!(
            "{MINIMAL}health_check:\n  type: http\n  path: /up\n"
        ))
        .unwrap();
        assert_eq!(
            c.health_check.kind,
            HealthCheckKind::Http {
                path: "/up".into(),
                host: None
            }
        );
        let e = errors(&format!(
            "{MINIMAL}health_check:\n  type: udp\n  failures: 0\nretries: 50\n"
        ));
        assert_eq!(
            e,
            vec![
                "health_check.type: expected \"tcp\", \"http\" or \"none\", got \"udp\""
                    .to_string(),
                "health_check.failures: expected a whole number from 1 to 100, got 0".to_string(),
                "retries: expected a whole number from 0 to 10, got 50".to_string(),
            ]
        );
    }
}
