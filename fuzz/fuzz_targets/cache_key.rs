//! `lacquer::cache::key::RequestKey::from_request` on fuzzed request targets and Host values,
//! with the default tracking parameters (`utm_*`, `gclid`, ...).
//!
//! Properties (beyond "never panics"), for every request that gets a key:
//! - Shape: the host is non-empty, lower-case and has no `/`; the path and query is non-empty;
//!   no query parameter left in it is a tracking parameter.
//! - Idempotent: a GET for the key's own `path_and_query` with `Host:` the key's host gets the
//!   same key, with nothing more stripped.
//! - The purge API's reading of the key's URL (`RequestKey::from_url(primary)`) names the same
//!   key, and so does its reading of an absolute-form target in the listener's scheme; the
//!   key's URL used as a purge prefix normalises to itself, so it matches the key.
//! - Two requests whose normalised hosts differ never share a primary key text.
//! - Two requests that share a key (nothing stripped, neither in absolute form) are forwarded
//!   to the app with the same request target (`raw_path`).
#![no_main]

use lacquer::cache::key::RequestKey;
use lacquer::config::raw::default_tracking_params;
use lacquer::config::NamePattern;
use lacquer::purge::normalize_prefix;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

#[derive(Arbitrary, Debug)]
struct Input {
    https: bool,
    host_a: String,
    target_a: Vec<u8>,
    host_b: String,
    target_b: Vec<u8>,
}

fn request(target: &[u8], host: &str) -> Option<RequestHeader> {
    let mut req = RequestHeader::build("GET", target, None).ok()?;
    if !host.is_empty() {
        req.insert_header(http::header::HOST, host).ok()?;
    }
    Some(req)
}

fn check_shape(key: &RequestKey, tracking: &[NamePattern]) {
    assert!(!key.host.is_empty(), "empty host: {key:?}");
    assert!(!key.host.contains('/'), "host with '/': {key:?}");
    assert_eq!(
        key.host,
        key.host.to_ascii_lowercase(),
        "host not lower-case: {key:?}"
    );
    assert!(!key.path_and_query.is_empty(), "empty path: {key:?}");
    if let Some((_, query)) = key.path_and_query.split_once('?') {
        for pair in query.split('&') {
            let name = pair.split('=').next().unwrap_or(pair);
            assert!(
                name.is_empty() || !tracking.iter().any(|p| p.matches(name)),
                "tracking parameter {name:?} kept: {key:?}"
            );
        }
    }
}

fn same_key(a: &RequestKey, b: &RequestKey) -> bool {
    a.scheme == b.scheme && a.host == b.host && a.path_and_query == b.path_and_query
}

/// Every property that concerns one request; returns its key, the target the request would
/// be forwarded with (`raw_path`), and whether that target is in absolute form.
fn check_one(
    scheme: &'static str,
    target: &[u8],
    host: &str,
    tracking: &[NamePattern],
) -> Option<(RequestKey, Vec<u8>, bool)> {
    let req = request(target, host)?;
    let key = RequestKey::from_request(scheme, &req, tracking).ok()?;
    check_shape(&key, tracking);

    // idempotent: the key of the key's own request is the key
    let again = request(key.path_and_query.as_bytes(), &key.host)
        .unwrap_or_else(|| panic!("the key's own request cannot be built: {key:?}"));
    let again = RequestKey::from_request(scheme, &again, tracking)
        .unwrap_or_else(|e| panic!("the key's own request has no key ({e:?}): {key:?}"));
    assert!(
        same_key(&key, &again) && !again.stripped,
        "not idempotent: {key:?} -> {again:?}"
    );

    // the purge API's URL reading of this key names this key
    let primary = key.primary();
    if let Ok(from_url) = RequestKey::from_url(&primary, tracking) {
        assert!(
            same_key(&key, &from_url),
            "purge URL {primary:?} names another key: {from_url:?}"
        );
    }

    // a prefix purge given this key's own URL matches it
    if key.path_and_query.starts_with('/') {
        assert_eq!(
            normalize_prefix(&primary).as_deref(),
            Some(primary.as_str()),
            "the key's URL as a purge prefix does not match the key: {key:?}"
        );
    }

    // an absolute-form target is the URL the purge API would be given for it
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let absolute = lower.starts_with(b"http://") || lower.starts_with(b"https://");
    if lower.starts_with(format!("{scheme}://").as_bytes()) {
        if let Ok(url) = std::str::from_utf8(target) {
            if let Ok(from_url) = RequestKey::from_url(url, tracking) {
                assert!(
                    same_key(&key, &from_url),
                    "absolute target {url:?}: request key {key:?}, purge API key {from_url:?}"
                );
            }
        }
    }
    Some((key, req.raw_path().to_vec(), absolute))
}

fuzz_target!(|input: Input| {
    let tracking: Vec<NamePattern> = default_tracking_params()
        .iter()
        .map(|p| NamePattern::new(p))
        .collect();
    let scheme = if input.https { "https" } else { "http" };
    let a = check_one(scheme, &input.target_a, &input.host_a, &tracking);
    let b = check_one(scheme, &input.target_b, &input.host_b, &tracking);
    if let (Some((a, raw_a, abs_a)), Some((b, raw_b, abs_b))) = (a, b) {
        // one key, one object: two requests that share a key (nothing stripped, neither in
        // absolute form) are forwarded with the same target, or the app could answer them
        // differently and one would be served the other's page
        if a.primary() == b.primary() && !a.stripped && !b.stripped && !abs_a && !abs_b {
            assert_eq!(
                String::from_utf8_lossy(&raw_a),
                String::from_utf8_lossy(&raw_b),
                "one key {:?} for two forwarded targets {raw_a:?} and {raw_b:?}",
                a.primary()
            );
            assert_eq!(
                raw_a,
                raw_b,
                "one key {:?} for two forwarded targets",
                a.primary()
            );
        }
        if a.host != b.host {
            assert_ne!(
                a.primary(),
                b.primary(),
                "different hosts share a key: {a:?} {b:?}"
            );
            assert_ne!(a.primary_hash(), b.primary_hash(), "{a:?} {b:?}");
        }
    }
});
