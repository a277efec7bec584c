//! lacquer behind a TLS terminator or a load balancer (`trusted_proxies`): whose word on the
//! client's address and scheme is believed, and what the purge gate, the app, the access log
//! and the cache key then see.

use crate::support::{Client, Origin, Proxy, Reply};

/// An app that says which scheme and client it was told about, cacheably.
async fn telling_origin() -> Origin {
    Origin::start(|s| {
        Reply::ok(format!(
            "proto={} for={}",
            s.header("x-forwarded-proto").unwrap_or("-"),
            s.header("x-forwarded-for").unwrap_or("-")
        ))
        .header("Cache-Control", "max-age=60")
    })
    .await
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_headers_are_replaced() {
    let origin = telling_origin().await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let spoof = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "10.0.0.1"),
    ];
    let r = c.get_with(&proxy.url("/p"), &spoof).await;
    assert_eq!(r.text(), "proto=http for=127.0.0.1");
    let seen = origin.last("/p").unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_trusted_proxy_tells_the_client_and_the_scheme() {
    let origin = telling_origin().await;
    let proxy = Proxy::start(
        &[origin.addr],
        "trusted_proxies: [\"127.0.0.1/32\", \"10.0.0.0/8\"]\naccess_log:\n  format: json\n",
    )
    .await;
    let c = Client::new();
    // a client, then a spoofed entry left of it, then two trusted proxies
    let via = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "192.0.2.66, 203.0.113.9, 10.1.1.1"),
    ];
    let r = c.get_with(&proxy.url("/p"), &via).await;
    assert_eq!(
        r.text(),
        "proto=https for=192.0.2.66, 203.0.113.9, 10.1.1.1, 127.0.0.1"
    );
    // the access log names the resolved client, not the terminator
    let mut logged = false;
    for _ in 0..50 {
        if proxy.log().contains("\"client\":\"203.0.113.9\"") {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(logged, "log:\n{}", proxy.log());
}

#[tokio::test]
async fn http_and_https_never_share_an_entry() {
    let origin = telling_origin().await;
    let proxy = Proxy::start(&[origin.addr], "trusted_proxies: [\"127.0.0.1/32\"]\n").await;
    let c = Client::new();
    let tls = [("X-Forwarded-Proto", "https")];
    assert!(c
        .get_with(&proxy.url("/s"), &tls)
        .await
        .text()
        .starts_with("proto=https"));
    let plain = c.get(&proxy.url("/s")).await;
    assert!(plain.fetched(), "{}", plain.cache_status());
    assert!(plain.text().starts_with("proto=http "), "{}", plain.text());
    assert!(c.get_with(&proxy.url("/s"), &tls).await.is_fresh_hit());
    assert!(c.get(&proxy.url("/s")).await.is_fresh_hit());
    assert_eq!(origin.hits("/s"), 2);
    // a PURGE of the path removes both
    let purged = c.send("PURGE", &proxy.url("/s"), &[], None).await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert!(purged.text().contains("\"purged\":2"), "{}", purged.text());
    assert!(c.get_with(&proxy.url("/s"), &tls).await.fetched());
    assert!(c.get(&proxy.url("/s")).await.fetched());
}

#[tokio::test]
async fn purges_through_a_trusted_terminator_are_checked_against_the_real_client() {
    let origin = telling_origin().await;
    // the terminator runs on loopback, which purge.allow lets purge by default
    let proxy = Proxy::start(&[origin.addr], "trusted_proxies: [\"127.0.0.1/32\"]\n").await;
    let c = Client::new();
    c.get(&proxy.url("/home")).await;
    let anonymous = [("X-Forwarded-For", "203.0.113.9")];
    let r = c.send("PURGE", &proxy.url("/home"), &anonymous, None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let by_tag = [("X-Forwarded-For", "203.0.113.9"), ("xkey-purge", "all")];
    assert_eq!(
        c.send("PURGE", &proxy.url("/"), &by_tag, None).await.status,
        403
    );
    assert!(
        c.get(&proxy.url("/home")).await.is_fresh_hit(),
        "nothing was purged"
    );
    // the app on loopback itself (no forwarded header) still may
    assert_eq!(
        c.send("PURGE", &proxy.url("/home"), &[], None).await.status,
        200
    );
}

#[tokio::test]
async fn a_bad_trusted_proxies_entry_names_its_key() {
    let origin = telling_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!(
            "upstreams:\n  - addr: \"{}\"\ntrusted_proxies: [\"10.0.0.0/8\", \"the lb\"]\n",
            origin.addr
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::proxy::binary())
        .arg("--config")
        .arg(&file)
        .arg("--test")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trusted_proxies[1]: expected a network like"),
        "{err}"
    );
}
