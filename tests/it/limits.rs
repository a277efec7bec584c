//! What a client connection may send, and how slowly (`limits:`): refused with a status before
//! anything reaches the app, and never at the expense of honest slow uploads or keep-alive.

use std::time::{Duration, Instant};

use crate::support::{exchange, Origin, Proxy, RawConn, Reply};

const TIGHT: &str = "limits:\n  header_timeout: 1s\n  idle_timeout: 2s\n  max_header_size: 4KiB\n  max_headers: 20\n  max_url_length: 1KiB\n";

async fn setup() -> (Origin, Proxy) {
    let origin = Origin::start(|_| Reply::ok("page").header("Cache-Control", "max-age=60")).await;
    let proxy = Proxy::start(&[origin.addr], TIGHT).await;
    (origin, proxy)
}

#[tokio::test]
async fn a_header_trickled_in_slower_than_header_timeout_gets_408_and_a_close() {
    let (origin, proxy) = setup().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let started = Instant::now();
    conn.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n").await;
    // one header line every 300 ms: each read is quick, the whole header never ends
    let mut reply = None;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !conn.send(format!("X-Drip-{i}: 1\r\n").as_bytes()).await {
            break;
        }
        let r = conn
            .read_for(Duration::from_millis(10), Duration::from_millis(10))
            .await;
        if !r.bytes.is_empty() || r.closed {
            reply = Some(r);
            break;
        }
    }
    let reply = match reply {
        Some(r) => r,
        None => {
            conn.read_for(Duration::from_secs(1), Duration::from_secs(2))
                .await
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(reply.statuses(), vec![408], "{}", reply.text());
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let after = conn
        .read_for(Duration::from_secs(1), Duration::from_secs(2))
        .await;
    assert!(after.closed, "the connection stays open after a 408");
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn oversized_headers_too_many_fields_and_long_urls_are_refused_before_the_app() {
    let (origin, proxy) = setup().await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(5000)
    );
    let r = exchange(proxy.addr, big.as_bytes()).await;
    assert_eq!(r.statuses(), vec![431], "{}", r.text());
    assert!(r.closed);

    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..25 {
        many.push_str(&format!("X-F{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let r = exchange(proxy.addr, many.as_bytes()).await;
    assert_eq!(r.statuses(), vec![431], "{}", r.text());

    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(1100));
    let r = exchange(proxy.addr, long.as_bytes()).await;
    assert_eq!(r.statuses(), vec![414], "{}", r.text());

    // just under every limit: served
    let mut fine = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "u".repeat(1000));
    for i in 0..18 {
        fine.push_str(&format!("X-F{i}: 1\r\n"));
    }
    fine.push_str("\r\n");
    let r = exchange(proxy.addr, fine.as_bytes()).await;
    assert_eq!(r.statuses(), vec![200], "{}", r.text());
    assert_eq!(
        origin.total(),
        1,
        "only the request within the limits reached the app"
    );
}

#[tokio::test]
async fn the_default_limits_are_32kib_of_header_and_8kib_of_url() {
    let origin = Origin::start(|_| Reply::ok("page")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(30_000)
    );
    assert_eq!(
        exchange(proxy.addr, ok.as_bytes()).await.statuses(),
        vec![200]
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(33_000)
    );
    assert_eq!(
        exchange(proxy.addr, big.as_bytes()).await.statuses(),
        vec![431]
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(8200));
    assert_eq!(
        exchange(proxy.addr, long.as_bytes()).await.statuses(),
        vec![414]
    );
    assert_eq!(origin.total(), 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let (_origin, proxy) = setup().await;
    // a connection that never sends anything
    let mut silent = RawConn::connect(proxy.addr).await;
    // one that made a request and then went quiet
    let mut used = RawConn::connect(proxy.addr).await;
    let r = used.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(r.statuses(), vec![200]);
    assert!(
        !r.closed,
        "keep-alive connection closed right after its response"
    );
    let started = Instant::now();
    let a = silent
        .read_for(Duration::from_secs(5), Duration::from_secs(5))
        .await;
    let b = used
        .read_for(Duration::from_secs(5), Duration::from_secs(5))
        .await;
    assert!(a.closed && a.bytes.is_empty(), "{a:?}");
    assert!(b.closed && b.bytes.is_empty(), "{b:?}");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_idle_timeout_runs_from_the_last_answer_hits_included() {
    let (origin, proxy) = setup().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    // a miss, then hits 1.5 s apart (the exchange reads for 0.5 s more; answered by the fast
    // path): each wait is shorter than idle_timeout (2 s), so the connection outlives it
    for i in 0..4 {
        let r = conn.exchange(b"GET /hot HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(r.statuses(), vec![200], "request {i}: {}", r.text());
        assert!(!r.closed, "request {i}: closed");
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert_eq!(origin.total(), 1);
    assert!(proxy.metric("lacquer_fast_path_hits_total").await >= 3.0);
}

#[tokio::test]
async fn the_header_timeout_is_per_request_not_per_connection() {
    let (origin, proxy) = setup().await;
    let mut conn = RawConn::connect(proxy.addr).await;
    // three requests, 700 ms apart: the connection lives 2 s, longer than header_timeout
    for i in 0..3 {
        let r = conn
            .exchange(format!("GET /k{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await;
        assert_eq!(r.statuses(), vec![200], "request {i}: {}", r.text());
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(origin.total(), 3);
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_header_timeout() {
    let origin = Origin::start(|s| Reply::ok(format!("got {}", s.body_len))).await;
    let proxy = Proxy::start(&[origin.addr], TIGHT).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n")
        .await;
    // the body takes 2.5 s, well past header_timeout (1 s)
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            conn.send(&[b'x'; 10]).await,
            "connection cut during the body"
        );
    }
    let r = conn
        .read_for(Duration::from_secs(2), Duration::from_secs(5))
        .await;
    assert_eq!(r.statuses(), vec![200], "{}", r.text());
    assert!(r.text().ends_with("got 50"), "{}", r.text());
}

#[tokio::test]
async fn a_get_that_never_sends_its_announced_body_stalls_nobody_else() {
    let origin = Origin::start(|_| {
        Reply::ok("page")
            .header("Cache-Control", "max-age=60")
            .delay(Duration::from_millis(200))
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "cache:\n  lock_timeout: 20s\n").await;
    // the attacker announces a body and never sends it, holding the connection open
    let mut attacker = RawConn::connect(proxy.addr).await;
    attacker
        .send(b"GET /home HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let visitor = exchange(
        proxy.addr,
        b"GET /home HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(visitor.statuses(), vec![200], "{}", visitor.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the visitor waited {:?} behind a client's body",
        started.elapsed()
    );
    assert!(visitor.text().contains("stored"), "{}", visitor.text());
    drop(attacker);
}

#[tokio::test]
async fn connections_over_max_connections_get_a_503_and_a_close() {
    let origin = Origin::start(|_| Reply::ok("page")).await;
    let proxy = Proxy::start(&[origin.addr], "limits:\n  max_connections: 3\n").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = RawConn::connect(proxy.addr).await;
        let r = conn.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(r.statuses(), vec![200], "{}", r.text());
        held.push(conn);
    }
    let mut extra = RawConn::connect(proxy.addr).await;
    extra.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let refused = extra
        .read_for(Duration::from_secs(1), Duration::from_secs(3))
        .await;
    assert_eq!(refused.statuses(), vec![503], "{}", refused.text());
    assert!(refused.closed);
    assert_eq!(origin.total(), 3);
    // a place comes free when a connection closes
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let r = exchange(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        if r.statuses() == vec![200] {
            again = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "no connection accepted after one closed");
    assert!(
        proxy
            .metric("lacquer_client_limit_rejections_total{reason=\"max_connections\"}")
            .await
            >= 1.0
    );
}

/// The header limits hold for every request on a keep-alive connection, not only the first:
/// the guard re-arms before each request's header. A second request with an oversized
/// header, too many fields or a long target is refused like a first one, before the app.
#[tokio::test]
async fn the_header_limits_apply_to_the_second_request_on_a_connection() {
    let (origin, proxy) = setup().await;
    let mut many = String::from("GET /second HTTP/1.1\r\nHost: a\r\n");
    for i in 0..25 {
        many.push_str(&format!("X-F{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let cases = [
        (
            format!(
                "GET /second HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
                "v".repeat(5000)
            ),
            431,
        ),
        (many, 431),
        (
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(1100)),
            414,
        ),
    ];
    for (n, (second, status)) in cases.iter().enumerate() {
        let mut conn = RawConn::connect(proxy.addr).await;
        let first = conn
            .exchange(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        assert_eq!(first.statuses(), vec![200], "case {n}: {}", first.text());
        assert!(!first.closed, "case {n}: the connection stays open");
        let r = conn.exchange(second.as_bytes()).await;
        assert_eq!(r.statuses(), vec![*status], "case {n}: {}", r.text());
        assert!(r.closed, "case {n}: closed after the refusal");
    }
    assert_eq!(origin.hits("/first"), 1, "the first request was stored");
    assert_eq!(origin.total(), 1, "no second request reached the app");
    assert_eq!(
        proxy.metric("lacquer_client_limit_rejections_total").await,
        3.0
    );
}
