//! lacquer's configuration: the YAML file is read into [`raw`] structs, then validated into the
//! typed [`Config`] that the rest of the crate uses. Validation collects every problem, each
//! naming its key path (`cache.max_size: expected a size like "256MiB", got "lots"`).
//!
//! Not here: building pingora's `ServerConf` (see `server.rs`).

pub mod raw;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use raw::RawConfig;
use units::{parse_duration, parse_size};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listeners.
    pub listen: Vec<SocketAddr>,
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
    pub access_log_target: crate::access_log::Target,
    /// How access log lines look.
    pub access_log_format: crate::access_log::Format,
    /// Active health checks of the app servers.
    pub health_check: HealthCheckConfig,
    /// Extra attempts on another app server after a failure before the response.
    pub retries: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// What a client connection may send, and how slowly.
    pub limits: crate::limits::ClientLimits,
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
    /// Purge requests accepted per second, all clients together (0: no limit).
    pub rate_limit: u32,
    /// Invalidations by unsafe requests without purge rights, per second, all clients
    /// together (0: no limit).
    pub unsafe_invalidation_rate: u32,
    /// The same, per client address (0: no limit).
    pub unsafe_invalidation_rate_per_client: u32,
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
            .field("rate_limit", &self.rate_limit)
            .field("unsafe_invalidation_rate", &self.unsafe_invalidation_rate)
            .field(
                "unsafe_invalidation_rate_per_client",
                &self.unsafe_invalidation_rate_per_client,
            )
            .finish()
    }
}

/// An IP network such as `127.0.0.1/32` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `addr/prefix` (a bare address means a single host).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One app server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its share of the load relative to the others.
    pub weight: usize,
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
    /// Heuristic freshness for responses with no explicit lifetime; `None` = off.
    pub default_ttl: Option<Duration>,
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
}

/// `bypass:`
#[derive(Debug, Clone, Default)]
pub struct BypassConfig {
    /// Empty: any cookie bypasses the cache. Otherwise only these cookies do, and others are
    /// stripped from requests the cache serves.
    pub session_cookies: Vec<NamePattern>,
}

/// A name, or a glob with `*` standing for any run of characters (`utm_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// A pattern from its text.
    pub fn new(text: &str) -> Self {
        NamePattern(text.to_string())
    }

    /// Whether `name` matches, case-sensitively.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // iterative glob with single-star backtracking: O(p * t) worst case, no recursion
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
            if path.is_empty() || path == "." {
                ConfigError(vec![message])
            } else {
                ConfigError(vec![format!("{path}: {message}")])
            }
        })?;
        validate(raw)
    }
}

fn size(errors: &mut Vec<String>, path: &str, text: &str) -> u64 {
    parse_size(text).unwrap_or_else(|| {
        errors.push(format!(
            "{path}: expected a size like \"256MiB\", got \"{text}\""
        ));
        0
    })
}

fn duration(errors: &mut Vec<String>, path: &str, text: &str) -> Duration {
    parse_duration(text).unwrap_or_else(|| {
        errors.push(format!(
            "{path}: expected a duration like \"30s\", \"250ms\" or \"5m\", got \"{text}\""
        ));
        Duration::ZERO
    })
}

fn positive_duration(errors: &mut Vec<String>, path: &str, text: &str) -> Duration {
    match parse_duration(text) {
        Some(d) if d.is_zero() => {
            errors.push(format!("{path}: must be longer than 0"));
            Duration::from_secs(1)
        }
        Some(d) => d,
        None => duration(errors, path, text),
    }
}

/// A whole number within `lo..=hi`; outside it, an error and the nearest bound.
fn whole_number(errors: &mut Vec<String>, path: &str, v: i64, lo: i64, hi: i64) -> i64 {
    if !(lo..=hi).contains(&v) {
        errors.push(format!(
            "{path}: expected a whole number from {lo} to {hi}, got {v}"
        ));
    }
    v.clamp(lo, hi)
}

fn socket_addr(errors: &mut Vec<String>, path: &str, text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!(
                "{path}: expected an address like \"127.0.0.1:8080\" or \"[::1]:8080\", got \"{text}\""
            ));
            None
        }
    }
}

/// An app server address: `ip:port`, or `name:port` resolved once at load time (the first
/// address wins), so `app:8080` works under Docker Compose.
fn upstream_addr(errors: &mut Vec<String>, path: &str, text: &str) -> Option<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(a);
    }
    let has_port = text
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if has_port {
        use std::net::ToSocketAddrs;
        match text.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => return Some(a),
            _ => {
                errors.push(format!("{path}: cannot resolve \"{text}\""));
                return None;
            }
        }
    }
    errors.push(format!(
        "{path}: expected an address like \"127.0.0.1:8080\" or \"app:8080\", got \"{text}\""
    ));
    None
}

fn name_patterns(errors: &mut Vec<String>, path: &str, list: &[String]) -> Vec<NamePattern> {
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let ok = !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b));
        if ok {
            out.push(NamePattern::new(p));
        } else {
            errors.push(format!(
                "{path}[{i}]: expected a name or a glob like \"utm_*\", got \"{p}\""
            ));
        }
    }
    out
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();

    if raw.listen.is_empty() {
        errors.push("listen: at least one address is required".to_string());
    }
    let listen: Vec<SocketAddr> = raw
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| socket_addr(&mut errors, &format!("listen[{i}]"), a))
        .collect();
    let admin_listen = socket_addr(&mut errors, "admin.listen", &raw.admin.listen);

    let threads = match raw.threads {
        Some(0) => {
            errors.push("threads: must be at least 1".to_string());
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };

    if raw.upstreams.is_empty() {
        errors.push("upstreams: at least one app server is required".to_string());
    }
    let mut upstreams = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let addr = upstream_addr(&mut errors, &format!("upstreams[{i}].addr"), &u.addr);
        let weight = whole_number(
            &mut errors,
            &format!("upstreams[{i}].weight"),
            u.weight,
            1,
            1000,
        );
        if let Some(addr) = addr {
            upstreams.push(Upstream {
                addr,
                weight: weight as usize,
            });
        }
    }

    let timeouts = Timeouts {
        connect: positive_duration(&mut errors, "timeouts.connect", &raw.timeouts.connect),
        first_byte: positive_duration(&mut errors, "timeouts.first_byte", &raw.timeouts.first_byte),
        between_bytes: positive_duration(
            &mut errors,
            "timeouts.between_bytes",
            &raw.timeouts.between_bytes,
        ),
    };

    let c = &raw.cache;
    let max_size = size(&mut errors, "cache.max_size", &c.max_size);
    let max_object_size = size(&mut errors, "cache.max_object_size", &c.max_object_size);
    if parse_size(&c.max_size).is_some() && max_size < (1 << 20) {
        errors.push(format!(
            "cache.max_size: must be at least 1MiB, got \"{}\"",
            c.max_size
        ));
    }
    if max_size > 0 && max_object_size > max_size {
        errors.push(format!(
            "cache.max_object_size: must not exceed cache.max_size ({}), got \"{}\"",
            c.max_size, c.max_object_size
        ));
    }
    if max_object_size > u32::MAX as u64 / 2 {
        errors.push(format!(
            "cache.max_object_size: must be at most 2GiB, got \"{}\"",
            c.max_object_size
        ));
    }
    let default_ttl = duration(&mut errors, "cache.default_ttl", &c.default_ttl);
    let swr = duration(
        &mut errors,
        "cache.stale_while_revalidate",
        &c.stale_while_revalidate,
    );
    let sie = duration(&mut errors, "cache.stale_if_error", &c.stale_if_error);
    let keep = duration(&mut errors, "cache.keep", &c.keep);
    let lock_timeout = positive_duration(&mut errors, "cache.lock_timeout", &c.lock_timeout);
    let hit_for_miss_keys = whole_number(
        &mut errors,
        "cache.hit_for_miss_keys",
        c.hit_for_miss_keys,
        16,
        10_000_000,
    );
    let tracking_params = name_patterns(&mut errors, "cache.tracking_params", &c.tracking_params);
    let mut strip_unkeyed_headers = Vec::new();
    for (i, h) in c.strip_unkeyed_headers.iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => strip_unkeyed_headers.push(name),
            Err(_) => errors.push(format!(
                "cache.strip_unkeyed_headers[{i}]: not a valid header name: \"{h}\""
            )),
        }
    }
    let p = &raw.purge;
    let mut allow = Vec::new();
    for (i, c) in p.allow.iter().enumerate() {
        match Cidr::parse(c) {
            Some(cidr) => allow.push(cidr),
            None => errors.push(format!(
                "purge.allow[{i}]: expected a network like \"127.0.0.1/32\" or \"::1/128\", got \"{c}\""
            )),
        }
    }
    let token = match (&p.token, &p.token_env) {
        (Some(_), Some(_)) => {
            errors.push(
                "purge.token_env: set either purge.token or purge.token_env, not both".to_string(),
            );
            None
        }
        (Some(t), None) => Some(t.clone()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(format!(
                    "purge.token_env: environment variable {var} is not set"
                ));
                None
            }
        },
        (None, None) => None,
    };
    if let Some(t) = &token {
        if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(
                "purge.token: must be at least 16 printable characters without spaces".to_string(),
            );
        }
    }
    let mut tag_headers = Vec::new();
    for (i, h) in p.tag_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_ok() {
            tag_headers.push(h.to_ascii_lowercase());
        } else {
            errors.push(format!(
                "purge.tag_headers[{i}]: not a valid header name: \"{h}\""
            ));
        }
    }
    let soft_grace = duration(&mut errors, "purge.soft_grace", &p.soft_grace);

    use crate::access_log::{Format, Target};
    let al = &raw.access_log;
    let access_log_target = match (al.target.as_str(), &al.path) {
        ("off", None) => Target::Off,
        ("stdout", None) => Target::Stdout,
        ("file", Some(p)) if !p.is_empty() => Target::File(p.into()),
        ("file", _) => {
            errors.push("access_log.path: required when access_log.target is \"file\"".to_string());
            Target::Off
        }
        ("off" | "stdout", Some(_)) => {
            errors
                .push("access_log.path: only used when access_log.target is \"file\"".to_string());
            Target::Off
        }
        (other, _) => {
            errors.push(format!(
                "access_log.target: expected \"off\", \"stdout\" or \"file\", got \"{other}\""
            ));
            Target::Off
        }
    };
    let access_log_format = match al.format.as_str() {
        "combined" => Format::Combined,
        "json" => Format::Json,
        other => {
            errors.push(format!(
                "access_log.format: expected \"combined\" or \"json\", got \"{other}\""
            ));
            Format::Combined
        }
    };

    let h = &raw.health_check;
    let hc_kind = match (h.kind.as_str(), &h.path) {
        ("none", None) => HealthCheckKind::None,
        ("tcp", None) => HealthCheckKind::Tcp,
        ("http", path) => {
            let path = path.clone().unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/')
                || path
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                errors.push(format!(
                    "health_check.path: expected a path like \"/healthz\", got \"{path}\""
                ));
            }
            HealthCheckKind::Http {
                path,
                host: h.host.clone(),
            }
        }
        ("none" | "tcp", Some(_)) => {
            errors.push(
                "health_check.path: only used when health_check.type is \"http\"".to_string(),
            );
            HealthCheckKind::None
        }
        (other, _) => {
            errors.push(format!(
                "health_check.type: expected \"tcp\", \"http\" or \"none\", got \"{other}\""
            ));
            HealthCheckKind::None
        }
    };
    if h.host.is_some() && !matches!(hc_kind, HealthCheckKind::Http { .. }) {
        errors.push("health_check.host: only used when health_check.type is \"http\"".to_string());
    }
    let failures = whole_number(&mut errors, "health_check.failures", h.failures, 1, 100);
    let successes = whole_number(&mut errors, "health_check.successes", h.successes, 1, 100);
    let health_check = HealthCheckConfig {
        kind: hc_kind,
        interval: positive_duration(&mut errors, "health_check.interval", &h.interval),
        timeout: positive_duration(&mut errors, "health_check.timeout", &h.timeout),
        failures: failures as usize,
        successes: successes as usize,
    };
    let retries = whole_number(&mut errors, "retries", raw.retries, 0, 10);
    let shutdown_timeout = duration(&mut errors, "shutdown_timeout", &raw.shutdown_timeout);

    let limits = client_limits(&mut errors, &raw.limits);
    let purge_rate = whole_number(
        &mut errors,
        "purge.rate_limit",
        raw.purge.rate_limit,
        0,
        1_000_000,
    );

    let session_cookies = name_patterns(
        &mut errors,
        "bypass.session_cookies",
        &raw.bypass.session_cookies,
    );

    if !errors.is_empty() {
        return Err(ConfigError(errors));
    }
    Ok(Config {
        listen,
        threads,
        // checked above: an error was recorded if it failed to parse
        admin_listen: admin_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6082))),
        upstreams,
        timeouts,
        cache: CacheConfig {
            max_size,
            max_object_size,
            default_ttl: (!default_ttl.is_zero()).then_some(default_ttl),
            stale_while_revalidate: swr,
            stale_if_error: sie,
            keep,
            lock_timeout,
            hit_for_miss_keys: hit_for_miss_keys as usize,
            tracking_params,
            strip_unkeyed_headers,
        },
        bypass: BypassConfig { session_cookies },
        purge: PurgeConfig {
            allow,
            token,
            tag_headers,
            strip_tag_headers: p.strip_tag_headers,
            soft_grace,
            invalidate_on_unsafe: p.invalidate_on_unsafe,
            rate_limit: purge_rate as u32,
            unsafe_invalidation_rate: whole_number(
                &mut errors,
                "purge.unsafe_invalidation_rate",
                p.unsafe_invalidation_rate,
                0,
                1_000_000,
            ) as u32,
            unsafe_invalidation_rate_per_client: whole_number(
                &mut errors,
                "purge.unsafe_invalidation_rate_per_client",
                p.unsafe_invalidation_rate_per_client,
                0,
                1_000_000,
            ) as u32,
        },
        access_log_target,
        access_log_format,
        health_check,
        retries: retries as usize,
        shutdown_timeout,
        limits,
    })
}

/// `limits:`. pingora itself refuses headers over 1 MiB or with more than 256 fields, so the
/// limits stay below those.
fn client_limits(errors: &mut Vec<String>, l: &raw::RawLimits) -> crate::limits::ClientLimits {
    let bounded_size = |errors: &mut Vec<String>, path: &str, text: &str, min: u64| {
        let v = size(errors, path, text);
        if parse_size(text).is_some() && !(min..=1 << 20).contains(&v) {
            errors.push(format!(
                "{path}: must be between {min} bytes and 1MiB, got \"{text}\""
            ));
        }
        usize::try_from(v.clamp(min, 1 << 20)).unwrap_or(1 << 20)
    };
    let max_header_size = bounded_size(errors, "limits.max_header_size", &l.max_header_size, 1024);
    let max_url_length = bounded_size(errors, "limits.max_url_length", &l.max_url_length, 256);
    let max_headers = whole_number(errors, "limits.max_headers", l.max_headers, 1, 256);
    crate::limits::ClientLimits {
        max_header_size,
        max_headers: max_headers as usize,
        max_url_length,
        header_timeout: positive_duration(errors, "limits.header_timeout", &l.header_timeout),
        idle_timeout: positive_duration(errors, "limits.idle_timeout", &l.idle_timeout),
        max_connections: whole_number(
            errors,
            "limits.max_connections",
            l.max_connections,
            1,
            10_000_000,
        ) as usize,
        max_orphan_fills: whole_number(
            errors,
            "limits.max_orphan_fills",
            l.max_orphan_fills,
            0,
            1_000_000,
        ) as usize,
        underscores_in_headers: l.underscores_in_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.listen, vec!["127.0.0.1:6081".parse().unwrap()]);
        assert_eq!(c.admin_listen, "127.0.0.1:6082".parse().unwrap());
        assert_eq!(c.cache.max_size, 256 << 20);
        assert_eq!(c.cache.max_object_size, 8 << 20);
        assert_eq!(c.cache.default_ttl, None);
        assert!(c.bypass.session_cookies.is_empty());
        assert!(c
            .cache
            .tracking_params
            .iter()
            .any(|p| p.matches("utm_source")));
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
            vec!["surrogate-key", "xkey", "cache-tag"]
        );
        assert!(c.purge.token.is_none());
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(other));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
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
        assert_eq!(c.access_log_target, crate::access_log::Target::Stdout);
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

    #[test]
    fn globs() {
        let cases = [
            ("utm_*", "utm_source", true),
            ("utm_*", "utm_", true),
            ("utm_*", "xutm_a", false),
            ("gclid", "gclid", true),
            ("gclid", "gclidx", false),
            ("*_logged_in_*", "wordpress_logged_in_abc", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(NamePattern::new(p).matches(t), want, "{p} ~ {t}");
        }
    }
}
