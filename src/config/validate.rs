//! Raw config to typed config, one function per section. Every problem is collected, each
//! naming its key path; defaults live in `raw.rs` only.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{self, RawConfig};
use super::units::{parse_duration, parse_size};
use super::{
    BypassConfig, CacheConfig, CertificateFiles, Cidr, Config, ConfigError, HealthCheckConfig,
    HealthCheckKind, LimitsConfig, Listener, LogFormat as Format, LogTarget as Target, NamePattern,
    ProxyListenerPurge, PurgeConfig, Timeouts, Upstream, UpstreamTls,
};

/// Validate a whole file, or say everything that is wrong with it.
pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let e = &mut errors;
    let (listen, admin_listen, threads) = listeners(e, &raw);
    let upstreams = app_servers(e, "upstreams", &raw.upstreams);
    let mut pools = Vec::with_capacity(raw.pools.len());
    for (name, list) in &raw.pools {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            e.push(format!(
                "pools.{name}: a pool name is letters, digits, '-' or '_'"
            ));
        }
        pools.push((name.clone(), app_servers(e, &format!("pools.{name}"), list)));
    }
    let pool_names: Vec<&str> = raw.pools.keys().map(String::as_str).collect();
    let rules = super::routes::rules(e, &raw.rules, &pool_names);
    let cluster = raw
        .cluster
        .as_ref()
        .map(|c| super::cluster::cluster(e, c, listen.first().map(|l| l.addr)));
    let timeouts = timeouts(e, &raw.timeouts);
    let cache = cache(e, &raw.cache);
    let mut purge = purge(e, &raw.purge);
    let (access_log_target, access_log_format) = access_log(e, &raw.access_log);
    let health_check = health_check(e, &raw.health_check);
    let retries = whole_number(e, "retries", raw.retries, 0, 10) as usize;
    let shutdown_timeout = duration(e, "shutdown_timeout", &raw.shutdown_timeout);
    let limits = limits(e, &raw.limits);
    let trusted_proxies = networks(e, "trusted_proxies", &raw.trusted_proxies);
    let upstream_ca_file = raw.upstream_ca_file.as_ref().map(|f| {
        if let Err(err) = std::fs::read(f) {
            e.push(format!("upstream_ca_file: cannot read \"{f}\": {err}"));
        }
        std::path::PathBuf::from(f)
    });
    purge.rate_limit =
        whole_number(e, "purge.rate_limit", raw.purge.rate_limit, 0, 1_000_000) as u32;
    let bypass = BypassConfig {
        session_cookies: name_patterns(e, "bypass.session_cookies", &raw.bypass.session_cookies),
        ignore_cookies: name_patterns(e, "bypass.ignore_cookies", &raw.bypass.ignore_cookies),
    };
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
        cache,
        bypass,
        purge,
        access_log_target,
        access_log_format,
        health_check,
        retries,
        shutdown_timeout,
        limits,
        trusted_proxies,
        upstream_ca_file,
        rules,
        pools,
        cluster,
    })
}

/// `listen`, `admin.listen`, `threads`.
fn listeners(
    errors: &mut Vec<String>,
    raw: &RawConfig,
) -> (Vec<Listener>, Option<SocketAddr>, usize) {
    if raw.listen.is_empty() {
        errors.push("listen: at least one address is required".to_string());
    }
    let mut listen = Vec::with_capacity(raw.listen.len());
    for (i, l) in raw.listen.iter().enumerate() {
        let listener = match l {
            raw::RawListen::Addr(a) => {
                socket_addr(errors, &format!("listen[{i}]"), a).map(|addr| Listener {
                    addr,
                    proxy_protocol: false,
                    tls: None,
                })
            }
            raw::RawListen::Options(o) => {
                let tls = o
                    .tls
                    .as_ref()
                    .map(|t| certificates(errors, &format!("listen[{i}].tls"), t));
                if o.proxy_protocol && tls.is_some() {
                    errors.push(format!(
                        "listen[{i}].proxy_protocol: not supported together with tls yet (terminate TLS in the load balancer, or use a plain listener)"
                    ));
                }
                socket_addr(errors, &format!("listen[{i}].addr"), &o.addr).map(|addr| Listener {
                    addr,
                    proxy_protocol: o.proxy_protocol,
                    tls,
                })
            }
        };
        listen.extend(listener);
    }
    let admin_listen = socket_addr(errors, "admin.listen", &raw.admin.listen);
    let threads = match raw.threads {
        Some(0) => {
            errors.push("threads: must be at least 1".to_string());
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    (listen, admin_listen, threads)
}

/// `upstreams:` and each of `pools:`
fn app_servers(errors: &mut Vec<String>, path: &str, raw: &[raw::RawUpstream]) -> Vec<Upstream> {
    if raw.is_empty() {
        errors.push(format!("{path}: at least one app server is required"));
    }
    let mut upstreams = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let addr = upstream_addr(errors, &format!("{path}[{i}].addr"), &u.addr);
        let weight = whole_number(errors, &format!("{path}[{i}].weight"), u.weight, 1, 1000);
        let tls = u.tls.then(|| UpstreamTls {
            // a name in `addr` is what the certificate names; an IP address gives no SNI
            sni: u.sni.clone().unwrap_or_else(|| {
                let host = u.addr.rsplit_once(':').map_or(u.addr.as_str(), |(h, _)| h);
                if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
                    String::new()
                } else {
                    host.to_string()
                }
            }),
            verify: u.verify,
        });
        if !u.tls && (u.sni.is_some() || !u.verify) {
            errors.push(format!(
                "{path}[{i}]: sni and verify are only used with tls: true"
            ));
        }
        if let Some(addr) = addr {
            upstreams.push(Upstream {
                addr,
                weight: weight as usize,
                tls,
            });
        }
    }

    upstreams
}

/// `timeouts:`
fn timeouts(errors: &mut Vec<String>, t: &raw::RawTimeouts) -> Timeouts {
    Timeouts {
        connect: positive_duration(errors, "timeouts.connect", &t.connect),
        first_byte: positive_duration(errors, "timeouts.first_byte", &t.first_byte),
        between_bytes: positive_duration(errors, "timeouts.between_bytes", &t.between_bytes),
    }
}

/// `cache:`
fn cache(errors: &mut Vec<String>, c: &raw::RawCache) -> CacheConfig {
    let max_size = size(errors, "cache.max_size", &c.max_size);
    let max_object_size = size(errors, "cache.max_object_size", &c.max_object_size);
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
    let default_ttl = super::routes::default_ttl(errors, &c.default_ttl);
    let swr = duration(
        errors,
        "cache.stale_while_revalidate",
        &c.stale_while_revalidate,
    );
    let sie = duration(errors, "cache.stale_if_error", &c.stale_if_error);
    let keep = duration(errors, "cache.keep", &c.keep);
    let lock_timeout = positive_duration(errors, "cache.lock_timeout", &c.lock_timeout);
    let hit_for_miss_keys = whole_number(
        errors,
        "cache.hit_for_miss_keys",
        c.hit_for_miss_keys,
        16,
        10_000_000,
    );
    let tracking_params = name_patterns(errors, "cache.tracking_params", &c.tracking_params);
    let mut strip_unkeyed_headers = Vec::new();
    for (i, h) in c.strip_unkeyed_headers.iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => strip_unkeyed_headers.push(name),
            Err(_) => errors.push(format!(
                "cache.strip_unkeyed_headers[{i}]: not a valid header name: \"{h}\""
            )),
        }
    }
    CacheConfig {
        max_size,
        max_object_size,
        default_ttl,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        keep,
        lock_timeout,
        hit_for_miss_keys: hit_for_miss_keys as usize,
        tracking_params,
        strip_unkeyed_headers,
        fast_path: c.fast_path,
    }
}

/// `purge:` (its `rate_limit` is read last, after `limits:`, to keep the order of messages)
fn purge(errors: &mut Vec<String>, p: &raw::RawPurge) -> PurgeConfig {
    let allow = networks(errors, "purge.allow", &p.allow);
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
    let soft_grace = duration(errors, "purge.soft_grace", &p.soft_grace);

    PurgeConfig {
        allow,
        token,
        tag_headers,
        strip_tag_headers: p.strip_tag_headers,
        soft_grace,
        invalidate_on_unsafe: p.invalidate_on_unsafe,
        invalidate_locations: p.invalidate_locations,
        rate_limit: 0,
        unsafe_invalidation_rate: whole_number(
            errors,
            "purge.unsafe_invalidation_rate",
            p.unsafe_invalidation_rate,
            0,
            1_000_000,
        ) as u32,
        unsafe_invalidation_rate_per_client: whole_number(
            errors,
            "purge.unsafe_invalidation_rate_per_client",
            p.unsafe_invalidation_rate_per_client,
            0,
            1_000_000,
        ) as u32,
        proxy_listener: match p.proxy_listener.as_str() {
            "allow" => ProxyListenerPurge::Allow,
            "token" => ProxyListenerPurge::Token,
            "off" => ProxyListenerPurge::Off,
            other => {
                errors.push(format!(
                    "purge.proxy_listener: expected \"allow\", \"token\" or \"off\", got \"{other}\""
                ));
                ProxyListenerPurge::Allow
            }
        },
    }
}

/// `access_log:`
fn access_log(errors: &mut Vec<String>, al: &raw::RawAccessLog) -> (Target, Format) {
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

    (access_log_target, access_log_format)
}

/// `health_check:`
fn health_check(errors: &mut Vec<String>, h: &raw::RawHealthCheck) -> HealthCheckConfig {
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
    let failures = whole_number(errors, "health_check.failures", h.failures, 1, 100);
    let successes = whole_number(errors, "health_check.successes", h.successes, 1, 100);
    HealthCheckConfig {
        kind: hc_kind,
        interval: positive_duration(errors, "health_check.interval", &h.interval),
        timeout: positive_duration(errors, "health_check.timeout", &h.timeout),
        failures: failures as usize,
        successes: successes as usize,
    }
}

/// `limits:`. pingora itself refuses headers over 1 MiB or with more than 256 fields, so the
/// limits stay below those.
pub(super) fn limits(errors: &mut Vec<String>, l: &raw::RawLimits) -> LimitsConfig {
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
    LimitsConfig {
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

fn size(errors: &mut Vec<String>, path: &str, text: &str) -> u64 {
    parse_size(text).unwrap_or_else(|| {
        errors.push(format!(
            "{path}: expected a size like \"256MiB\", got \"{text}\""
        ));
        0
    })
}

/// A duration, or an error naming `path` (and zero).
pub(super) fn duration(errors: &mut Vec<String>, path: &str, text: &str) -> Duration {
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

/// `listen[i].tls`: at least one certificate, each a PEM chain and a key that parse.
fn certificates(errors: &mut Vec<String>, path: &str, t: &raw::RawTls) -> Vec<CertificateFiles> {
    if t.certificates.is_empty() {
        errors.push(format!(
            "{path}.certificates: at least one certificate is required"
        ));
    }
    let mut out = Vec::with_capacity(t.certificates.len());
    for (j, c) in t.certificates.iter().enumerate() {
        let here = format!("{path}.certificates[{j}]");
        match super::values::load_certificate(&c.cert, &c.key) {
            Ok(_) => out.push(CertificateFiles {
                cert: c.cert.clone().into(),
                key: c.key.clone().into(),
            }),
            Err(e) => errors.push(format!("{here}: {e}")),
        }
    }
    out
}

/// A list of IP networks (`127.0.0.1/32`, `::1/128`, a bare address for one host).
fn networks(errors: &mut Vec<String>, path: &str, list: &[String]) -> Vec<Cidr> {
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        match Cidr::parse(c) {
            Some(cidr) => out.push(cidr),
            None => errors.push(format!(
                "{path}[{i}]: expected a network like \"127.0.0.1/32\" or \"::1/128\", got \"{c}\""
            )),
        }
    }
    out
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
