//! Plain proxying: what the app receives, streaming, and failing app servers.

use std::time::{Duration, Instant};

use crate::support::proxy::free_port;
use crate::support::{Client, Origin, Proxy, Reply};

#[tokio::test]
async fn the_app_gets_host_path_query_and_forwarding_headers() {
    let origin = Origin::start(|_| Reply::ok("ok")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get_with(
        &proxy.url("/a/b%20c?x=1&y=%2F"),
        &[
            ("Host", "shop.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "10.1.1.1"),
        ],
    )
    .await;
    let seen = origin.last("/a/b%20c").unwrap();
    assert_eq!(
        seen.target, "/a/b%20c?x=1&y=%2F",
        "path and query unchanged"
    );
    assert_eq!(seen.header("host"), Some("shop.example"), "Host preserved");
    // an untrusted client's X-Forwarded-For is replaced by its own address (see edge.rs)
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("http"),
        "set by lacquer, not the client"
    );
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let origin = Origin::start(|s| {
        Reply::ok(vec![b'z'; 24 << 20])
            .header("X-Got", &s.body_len.to_string())
            .chunked()
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let r = c
        .send(
            "POST",
            &proxy.url("/upload"),
            &[],
            Some(vec![b'u'; 16 << 20]),
        )
        .await;
    assert_eq!(r.header("x-got"), Some("16777216"));
    assert_eq!(r.body.len(), 24 << 20);
}

#[tokio::test]
async fn an_unreachable_app_server_gives_a_quick_502() {
    let dead = free_port();
    let proxy = Proxy::start(&[dead], "").await;
    let c = Client::new();
    let started = Instant::now();
    let r = c.get(&proxy.url("/x")).await;
    assert!(r.status == 502 || r.status == 503, "status {}", r.status);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn round_robin_spreads_requests_and_skips_a_dead_server() {
    let a = Origin::start(|_| Reply::ok("a")).await;
    let b = Origin::start(|_| Reply::ok("b")).await;
    let dead = free_port();
    let proxy = Proxy::start(&[a.addr, b.addr, dead], "").await;
    let c = Client::new();
    for i in 0..30 {
        let r = c.get(&proxy.url(&format!("/rr/{i}"))).await;
        assert_eq!(r.status, 200, "a dead server costs clients no errors");
    }
    assert!(
        a.total() >= 10 && b.total() >= 10,
        "a={} b={}",
        a.total(),
        b.total()
    );
    assert_eq!(a.total() + b.total(), 30);
}

#[tokio::test]
async fn a_request_without_a_valid_host_gets_400() {
    let origin = Origin::start(|_| Reply::ok("ok")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let r = c.get_with(&proxy.url("/x"), &[("Host", "bad/host")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let origin = Origin::start(|s| {
        // slow enough that pingora looks at the client connection while it waits
        Reply::ok(format!("{} {} ({} bytes)", s.method, s.target, s.body_len))
            .header("Cache-Control", "max-age=60")
            .delay(Duration::from_millis(100))
    })
    .await;
    for fast_path in [true, false] {
        let proxy = Proxy::start(
            &[origin.addr],
            &format!("cache:\n  fast_path: {fast_path}\n"),
        )
        .await;
        let mut conn = crate::support::raw::RawConn::connect(proxy.addr).await;
        // one write: a miss, two hits, a POST whose body is followed at once by the next
        // request, and a last miss; the body's bytes are the body's, the rest are requests
        let r = conn
            .exchange(
                b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n\
                  GET /p HTTP/1.1\r\nHost: a\r\n\r\n\
                  GET /p HTTP/1.1\r\nHost: a\r\n\r\n\
                  POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nGET /x HTTP\
                  GET /last HTTP/1.1\r\nHost: a\r\n\r\n",
            )
            .await;
        let text = r.text();
        assert!(!r.closed, "fast_path {fast_path}: closed");
        // each answer: a head, then its body (none of which holds a status line)
        let answers: Vec<(&str, &str)> = text
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|a| a.split_once("\r\n\r\n").unwrap_or((a, "")))
            .collect();
        let statuses: Vec<&str> = answers.iter().map(|(h, _)| &h[..3]).collect();
        assert_eq!(statuses, ["200"; 5], "fast_path {fast_path}: {text}");
        let bodies: Vec<&str> = answers.iter().map(|(_, b)| *b).collect();
        assert_eq!(
            bodies,
            [
                "GET /p (0 bytes)",
                "GET /p (0 bytes)",
                "GET /p (0 bytes)",
                "POST /form (11 bytes)",
                "GET /last (0 bytes)"
            ],
            "fast_path {fast_path}: {text}"
        );
    }
    assert_eq!(
        origin.hits("/p"),
        2,
        "one fetch for the three, on each proxy"
    );
}

#[tokio::test]
async fn a_header_in_pieces_followed_by_a_pipelined_request_gets_both_answers() {
    let origin = Origin::start(|s| {
        Reply::ok(format!("{} ({} bytes)", s.target, s.body_len))
            .header("Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let mut conn = crate::support::raw::RawConn::connect(proxy.addr).await;
    // the first header in two reads (a large cookie or a TLS record boundary does this), its
    // length in the first, its body and the next request right behind it
    conn.send(b"POST /first HTTP/1.1\r\nContent-Length: 5\r\nHo")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = conn
        .exchange(b"st: a\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_eq!(r.statuses(), vec![200, 200], "{}", r.text());
    assert!(r.text().contains("/first (5 bytes)"), "{}", r.text());
    assert!(r.text().ends_with("/second (0 bytes)"), "{}", r.text());
}

#[tokio::test]
async fn an_upgraded_connection_carries_bytes_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // an app that switches to WebSocket (then echoes) on every connection
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut header = Vec::new();
                let mut chunk = [0u8; 1024];
                while !header.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => header.extend_from_slice(&chunk[..n]),
                    }
                }
                let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if s.write_all(switch).await.is_err() {
                    return;
                }
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0
                        || s.write_all(&[b"ECHO:", &chunk[..n]].concat())
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(&[app], "health_check:\n  type: none\n").await;
    let mut conn = crate::support::raw::RawConn::connect(proxy.addr).await;
    let r = conn
        .exchange(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await;
    assert_eq!(r.statuses(), vec![101], "{}", r.text());
    let r = conn.exchange(b"frame-one").await;
    assert_eq!(r.text(), "ECHO:frame-one");
    // a client that sends its first frame with the request, before the 101: the frame waits
    // for the app's answer, then goes through
    let mut eager = crate::support::raw::RawConn::connect(proxy.addr).await;
    let r = eager
        .exchange(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframe-zero")
        .await;
    let text = r.text();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.ends_with("\r\n\r\nECHO:frame-zero"), "{text}");
}
