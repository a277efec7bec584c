//! lacquer behind a TLS terminator or a load balancer (`trusted_proxies`): whose word on the
//! client's address and scheme is believed, and what the purge gate, the app, the access log
//! and the cache key then see.

use crate::support::{exchange, Client, Origin, Proxy, RawConn, Reply};

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
    let err = crate::support::proxy::refused_config(&format!(
        "upstreams:\n  - addr: \"{}\"\ntrusted_proxies: [\"10.0.0.0/8\", \"the lb\"]\n",
        origin.addr
    ));
    assert!(
        err.contains("trusted_proxies[1]: expected a network like"),
        "{err}"
    );
}

/// A PROXY protocol v2 header for a TCP4 client.
fn proxy_v2(client: std::net::SocketAddrV4) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client.ip().octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&6081u16.to_be_bytes());
    h
}

#[tokio::test]
async fn a_proxy_protocol_listener_takes_the_client_from_the_header() {
    let origin = telling_origin().await;
    let proxy = Proxy::start_proxy_protocol(&[origin.addr], "").await;
    let request = b"GET /pp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    // version 1, the request in the same packet
    let mut v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 56324 6081\r\n".to_vec();
    v1.extend_from_slice(request);
    let r = exchange(proxy.addr, &v1).await;
    assert_eq!(r.statuses(), vec![200], "{}", r.text());
    assert_eq!(
        origin.last("/pp").unwrap().header("x-forwarded-for"),
        Some("203.0.113.9")
    );
    // the client is not loopback: it may not purge
    let mut purge = b"PROXY TCP4 203.0.113.9 127.0.0.1 56324 6081\r\n".to_vec();
    purge.extend_from_slice(b"PURGE /pp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(exchange(proxy.addr, &purge).await.statuses(), vec![403]);
    // version 2, the header and the request sent apart
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&proxy_v2("198.51.100.7:40000".parse().unwrap()))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = conn
        .exchange(b"GET /pp2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.statuses(), vec![200], "{}", r.text());
    assert_eq!(
        origin.last("/pp2").unwrap().header("x-forwarded-for"),
        Some("198.51.100.7")
    );
    // LOCAL (the proxy's own health check): the TCP peer stands, and may purge
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(b"PURGE /pp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(exchange(proxy.addr, &local).await.statuses(), vec![200]);
}

#[tokio::test]
async fn a_proxy_protocol_listener_refuses_a_connection_without_a_header() {
    let origin = telling_origin().await;
    let proxy = Proxy::start_proxy_protocol(&[origin.addr], "").await;
    let r = exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(r.bytes.is_empty(), "answered: {}", r.text());
    assert!(r.closed);
    assert_eq!(origin.total(), 0);
    assert_eq!(
        proxy
            .metric("lacquer_client_limit_rejections_total{reason=\"proxy_protocol\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_plain_listener_treats_a_proxy_protocol_header_as_a_bad_request() {
    let origin = telling_origin().await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let mut v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 56324 6081\r\n".to_vec();
    v1.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = exchange(proxy.addr, &v1).await;
    assert_eq!(r.statuses(), vec![400], "{}", r.text());
    assert_eq!(origin.total(), 0);
}
