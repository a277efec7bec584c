//! `lacquer::config::Config::from_yaml` (what `Config::load` runs on a file's text) on arbitrary
//! text.
//!
//! Properties (beyond "never panics"):
//! - Text that does not deserialise into `config::raw::RawConfig` gets exactly one non-empty
//!   error.
//! - Text that does gets either a config or a list of errors, each starting with the key path it
//!   is about (`cache.max_size: ...`, `upstreams[1].weight: ...`).
//! - An accepted config keeps the documented bounds: a listener and an upstream at least,
//!   weights 1..=1000, `cache.max_size` at least 1MiB and `cache.max_object_size` at most that
//!   and at most 2GiB, non-zero timeouts, `retries` at most 10, `limits` within pingora's, and
//!   so on.
//!
//! Inputs naming an upstream `host:port` other than `localhost` are skipped: `Config` resolves
//! those names, and a fuzzer must not send DNS queries.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use lacquer::config::raw::RawConfig;
use lacquer::config::{Config, HealthCheckKind};
use libfuzzer_sys::fuzz_target;

/// The top-level keys; every validation error starts with one of them.
const KEYS: &[&str] = &[
    "listen",
    "threads",
    "admin",
    "upstreams",
    "timeouts",
    "cache",
    "bypass",
    "purge",
    "access_log",
    "health_check",
    "limits",
    "retries",
    "shutdown_timeout",
];

/// Whether `message` starts with `key.path[index].name: `, the key being a top-level one.
fn names_a_key(message: &str) -> bool {
    let Some((path, rest)) = message.split_once(": ") else {
        return false;
    };
    let top = path.split(['.', '[']).next().unwrap_or("");
    KEYS.contains(&top)
        && !rest.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.[]".contains(&b))
}

fn would_resolve(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_err()
        && addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && h != "localhost")
}

fn check_bounds(c: &Config) {
    assert!(!c.listen.is_empty());
    assert!(c.threads >= 1);
    assert!(!c.upstreams.is_empty());
    for u in &c.upstreams {
        assert!((1..=1000).contains(&u.weight), "{u:?}");
    }
    let t = &c.timeouts;
    for d in [
        t.connect,
        t.first_byte,
        t.between_bytes,
        c.cache.lock_timeout,
    ] {
        assert!(d > Duration::ZERO, "{c:?}");
    }
    let cache = &c.cache;
    assert!(cache.max_size >= 1 << 20, "{cache:?}");
    assert!(cache.max_object_size <= cache.max_size, "{cache:?}");
    assert!(
        cache.max_object_size <= u64::from(u32::MAX) / 2,
        "{cache:?}"
    );
    assert!(cache.default_ttl != Some(Duration::ZERO), "{cache:?}");
    assert!(
        (16..=10_000_000).contains(&cache.hit_for_miss_keys),
        "{cache:?}"
    );
    for h in &c.purge.tag_headers {
        assert_eq!(h, &h.to_ascii_lowercase());
        assert!(http::HeaderName::from_bytes(h.as_bytes()).is_ok(), "{h:?}");
    }
    if let Some(token) = &c.purge.token {
        assert!(token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()));
    }
    let hc = &c.health_check;
    assert!((1..=100).contains(&hc.failures) && (1..=100).contains(&hc.successes));
    assert!(hc.interval > Duration::ZERO && hc.timeout > Duration::ZERO);
    if let HealthCheckKind::Http { path, .. } = &hc.kind {
        assert!(path.starts_with('/'), "{path:?}");
        assert!(!path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()));
    }
    assert!(c.retries <= 10);
    assert!(c.purge.rate_limit <= 1_000_000);
    let l = &c.limits;
    assert!((1024..=1 << 20).contains(&l.max_header_size), "{l:?}");
    assert!((256..=1 << 20).contains(&l.max_url_length), "{l:?}");
    assert!((1..=256).contains(&l.max_headers), "{l:?}");
    assert!(l.header_timeout > Duration::ZERO && l.idle_timeout > Duration::ZERO);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let raw: Result<RawConfig, _> = serde_yaml::from_str(text);
    if let Ok(raw) = &raw {
        if raw.upstreams.iter().any(|u| would_resolve(&u.addr)) {
            return;
        }
    }
    match (raw.is_ok(), Config::from_yaml(text)) {
        (_, Ok(config)) => {
            assert!(raw.is_ok(), "accepted text that is not a RawConfig");
            check_bounds(&config);
        }
        (false, Err(e)) => {
            assert_eq!(e.0.len(), 1, "{:?}", e.0);
            assert!(!e.0[0].is_empty());
        }
        (true, Err(e)) => {
            assert!(!e.0.is_empty(), "an error without a message");
            for message in &e.0 {
                assert!(names_a_key(message), "error names no key: {message:?}");
            }
        }
    }
});
