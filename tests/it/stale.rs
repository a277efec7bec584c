//! Serving stale: stale-while-revalidate answers at once while one background fetch refreshes,
//! stale-if-error answers when the app fails.

use std::time::{Duration, Instant};

use crate::support::{Client, Counter, Origin, Proxy, Reply};

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        let n = calls.bump("swr");
        let reply = Reply::ok(format!("version {n}"))
            .header("Cache-Control", "max-age=1, stale-while-revalidate=60");
        if n == 1 {
            reply
        } else {
            reply.delay(Duration::from_millis(500))
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/swr")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let started = Instant::now();
    let mut stale = Vec::new();
    for _ in 0..10 {
        stale.push(c.get(&proxy.url("/swr")).await);
    }
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "nobody waits on the refresh"
    );
    for r in &stale {
        assert_eq!(r.text(), "version 1");
        assert!(
            r.cache_status().contains("stale-while-revalidate"),
            "{}",
            r.cache_status()
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let fresh = c.get(&proxy.url("/swr")).await;
    assert_eq!(fresh.text(), "version 2");
    assert!(fresh.is_fresh_hit());
    assert_eq!(origin.hits("/swr"), 2, "exactly one background refresh");
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_copy_when_the_app_fails() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        if calls.bump("sie") == 1 {
            Reply::ok("good copy").header("Cache-Control", "max-age=1, stale-if-error=60")
        } else {
            Reply::ok("oops").status(503)
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/sie")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c.get(&proxy.url("/sie")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "good copy");
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/sie"), 2);
}

/// `cache.stale_while_revalidate` is the grace for responses that give none of their own: a
/// plain `max-age=1` response is served stale at once after expiry while one background fetch
/// refreshes it; `must-revalidate` turns the grace off for its response.
#[tokio::test]
async fn the_configured_stale_while_revalidate_applies_to_responses_without_one() {
    let calls = Counter::default();
    let origin = Origin::start(move |s| {
        let n = calls.bump(s.path());
        let cc = match s.path() {
            "/strict" => "max-age=1, must-revalidate",
            _ => "max-age=1",
        };
        Reply::ok(format!("version {n}")).header("Cache-Control", cc)
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "cache:\n  stale_while_revalidate: 60s\n").await;
    let c = Client::new();
    c.get(&proxy.url("/graced")).await;
    c.get(&proxy.url("/strict")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = c.get(&proxy.url("/graced")).await;
    assert_eq!(stale.text(), "version 1");
    assert!(
        stale
            .cache_status()
            .contains("detail=stale-while-revalidate"),
        "{}",
        stale.cache_status()
    );
    let strict = c.get(&proxy.url("/strict")).await;
    assert_eq!(
        strict.text(),
        "version 2",
        "must-revalidate: never served stale"
    );
    assert!(strict.fetched(), "{}", strict.cache_status());
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.hits("/graced") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits("/graced"), 2, "one background refresh");
    assert_eq!(origin.hits("/strict"), 2);
}

/// `cache.stale_if_error` is the window for responses that give none of their own: when the
/// app fails after expiry, the stored copy is served instead of the error.
#[tokio::test]
async fn the_configured_stale_if_error_applies_to_responses_without_one() {
    let calls = Counter::default();
    let origin = Origin::start(move |s| {
        if calls.bump(s.path()) == 1 {
            Reply::ok("good copy").header("Cache-Control", "max-age=1")
        } else {
            Reply::ok("oops").status(503)
        }
    })
    .await;
    let with = Proxy::start(&[origin.addr], "cache:\n  stale_if_error: 60s\n").await;
    let c = Client::new();
    c.get(&with.url("/sie")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c.get(&with.url("/sie")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "good copy");
    assert!(
        r.cache_status().contains("detail=stale-if-error"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/sie"), 2, "the app was asked and failed");
}
