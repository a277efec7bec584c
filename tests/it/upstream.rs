//! Several app servers that fail: load balancing, health checks, retries, timeouts, grace,
//! reload and graceful stop.

use std::time::{Duration, Instant};

use crate::support::{Client, Counter, Origin, Proxy, Reply};

const FAST_CHECKS: &str = "health_check:\n  type: tcp\n  interval: 100ms\n  timeout: 200ms\n  failures: 1\n  successes: 1\n";

async fn metric(c: &Client, proxy: &Proxy, series: &str) -> Option<f64> {
    let text = c
        .get(&format!("http://{}/metrics", proxy.admin))
        .await
        .text();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test]
async fn weights_skew_round_robin() {
    let a = Origin::start(|_| Reply::ok("a")).await;
    let b = Origin::start(|_| Reply::ok("b")).await;
    let proxy = Proxy::start_weighted(&[(a.addr, 1), (b.addr, 3)], "").await;
    let c = Client::new();
    for i in 0..80 {
        assert_eq!(c.get(&proxy.url(&format!("/w/{i}"))).await.status, 200);
    }
    let (da, db) = (a.total(), b.total());
    assert_eq!(da + db, 80);
    assert!(
        (14..=26).contains(&da) && (54..=66).contains(&db),
        "weight 1: {da}, weight 3: {db}"
    );
}

#[tokio::test]
async fn a_killed_server_costs_no_errors_leaves_rotation_and_returns_when_revived() {
    let a = Origin::start(|_| Reply::ok("a")).await;
    let b = Origin::start(|_| Reply::ok("b")).await;
    let a_addr = a.addr;
    let proxy = Proxy::start(&[a.addr, b.addr], FAST_CHECKS).await;
    let c = Client::new();
    for i in 0..10 {
        c.get(&proxy.url(&format!("/before/{i}"))).await;
    }
    assert!(a.total() > 0 && b.total() > 0);
    drop(a); // killed: listener closed, connections cut
    for i in 0..40 {
        let r = c.get(&proxy.url(&format!("/during/{i}"))).await;
        assert_eq!(r.status, 200, "request {i} failed while a server died");
        assert_eq!(r.text(), "b");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let series = format!("lacquer_upstream_healthy{{upstream=\"{a_addr}\"}}");
    assert_eq!(
        metric(&c, &proxy, &series).await,
        Some(0.0),
        "the health check took it out"
    );
    let retries_before = metric(&c, &proxy, "lacquer_upstream_retries_total")
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(c.get(&proxy.url(&format!("/out/{i}"))).await.status, 200);
    }
    let retries_after = metric(&c, &proxy, "lacquer_upstream_retries_total")
        .await
        .unwrap();
    assert_eq!(
        retries_before, retries_after,
        "an unhealthy server gets no traffic at all"
    );

    let revived = Origin::start_on(a_addr, |_| Reply::ok("a again")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&c, &proxy, &series).await, Some(1.0));
    for i in 0..20 {
        c.get(&proxy.url(&format!("/after/{i}"))).await;
    }
    assert!(revived.total() >= 8, "traffic returns: {}", revived.total());
}

#[tokio::test]
async fn a_reset_before_the_response_is_retried_only_for_idempotent_requests() {
    let bad = Origin::start(|_| Reply::reset()).await;
    let good = Origin::start(|_| Reply::ok("good")).await;
    let proxy = Proxy::start(&[bad.addr, good.addr], "health_check:\n  type: none\n").await;
    let c = Client::new();
    for i in 0..6 {
        let r = c.get(&proxy.url(&format!("/g/{i}"))).await;
        assert_eq!(r.status, 200, "GET retried on the other server");
        assert_eq!(r.text(), "good");
    }
    let mut posts_failed = 0;
    for i in 0..6 {
        let r = c
            .send(
                "POST",
                &proxy.url(&format!("/p/{i}")),
                &[],
                Some(b"x".to_vec()),
            )
            .await;
        match r.status {
            200 => assert_eq!(r.text(), "good"),
            // the bad server reset the connection before answering: lacquer's own 502
            502 => posts_failed += 1,
            other => panic!("POST {i}: unexpected {other}"),
        }
    }
    assert_eq!(
        posts_failed, 3,
        "a POST that reached the bad server is never replayed"
    );
    let posts_at = |o: &Origin| o.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts_at(&bad), 3, "each POST was sent once...");
    assert_eq!(posts_at(&good), 3, "...to one server");
}

#[tokio::test]
async fn an_unresponsive_server_times_out_at_the_first_byte() {
    let slow = Origin::start(|_| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let proxy = Proxy::start(
        &[slow.addr],
        "timeouts:\n  first_byte: 400ms\n  between_bytes: 400ms\nretries: 0\n",
    )
    .await;
    let c = Client::new();
    let started = Instant::now();
    let r = c.get(&proxy.url("/t")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "a timeout is a gateway timeout");
    assert_eq!(
        r.cache_status(),
        "lacquer; fwd=miss; detail=response-timeout"
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(slow.hits("/t"), 1, "retries: 0");
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_and_never_stored() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        let r = Reply::ok(vec![b'x'; 100_000]).header("Cache-Control", "max-age=60");
        if calls.bump("s") == 1 {
            r.stall_after(1000, Duration::from_secs(3))
        } else {
            r
        }
    })
    .await;
    let proxy = Proxy::start(
        &[origin.addr],
        "timeouts:\n  first_byte: 400ms\n  between_bytes: 400ms\n",
    )
    .await;
    let c = Client::new();
    let url = proxy.url("/stall");
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        reqwest::Client::new()
            .get(&url)
            .send()
            .await
            .map(|r| r.bytes())
    })
    .await
    .expect("the proxy gave up on the stalled body");
    let complete = match first {
        Ok(body) => matches!(body.await, Ok(b) if b.len() == 100_000),
        Err(_) => false,
    };
    assert!(!complete, "the stalled response cannot have arrived whole");
    let second = c.get(&url).await;
    assert_eq!(second.body.len(), 100_000);
    assert!(second.fetched(), "the timed-out fetch was not stored");
    assert_eq!(origin.hits("/stall"), 2);
}

#[tokio::test]
async fn a_connect_timeout_gives_a_quick_error() {
    // a listener whose accept queue is full drops new SYNs: connecting hangs
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let proxy = Proxy::start(
        &[addr],
        "timeouts:\n  connect: 300ms\nretries: 0\nhealth_check:\n  type: none\n",
    )
    .await;
    let started = Instant::now();
    let r = Client::new().get(&proxy.url("/c")).await;
    assert_eq!(r.status, 504, "{}", r.cache_status());
    assert_eq!(
        r.cache_status(),
        "lacquer; fwd=miss; detail=connect-timeout"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn stale_if_error_covers_timeouts_and_a_dead_pool() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        let r = Reply::ok("good copy").header("Cache-Control", "max-age=1, stale-if-error=60");
        if calls.bump("sie") == 1 {
            r
        } else {
            r.delay(Duration::from_secs(3))
        }
    })
    .await;
    let proxy = Proxy::start(
        &[origin.addr],
        "timeouts:\n  first_byte: 300ms\n  between_bytes: 300ms\nretries: 0\nhealth_check:\n  type: tcp\n  interval: 100ms\n  failures: 1\n  successes: 1\n",
    )
    .await;
    let c = Client::new();
    c.get(&proxy.url("/sie")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let on_timeout = c.get(&proxy.url("/sie")).await;
    assert_eq!(on_timeout.status, 200);
    assert_eq!(on_timeout.text(), "good copy");
    assert!(
        on_timeout.cache_status().contains("stale-if-error"),
        "{}",
        on_timeout.cache_status()
    );

    drop(origin); // every server down
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let all_down = c.get(&proxy.url("/sie")).await;
    assert_eq!(all_down.text(), "good copy");
    assert!(all_down.cache_status().contains("stale-if-error"));
    assert!(started.elapsed() < Duration::from_millis(300));

    // nothing stored and nobody to ask: a fast 503
    let started = Instant::now();
    let nothing = c.get(&proxy.url("/never-stored")).await;
    assert!(
        nothing.status == 503 || nothing.status == 502,
        "{}",
        nothing.status
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_5xx_never_replaces_a_good_stored_object() {
    let calls = Counter::default();
    // (no assertion in the handler: a panic there would only reset the connection)
    let origin = Origin::start(move |_| match calls.bump("g") {
        1 => Reply::ok("good")
            .header("Cache-Control", "max-age=1")
            .header("ETag", "\"g\""),
        2 => Reply::ok("broken")
            .status(503)
            .header("Cache-Control", "max-age=60"),
        _ => Reply::ok("")
            .status(304)
            .header("Cache-Control", "max-age=60")
            .header("ETag", "\"g\""),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/g")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = c.get(&proxy.url("/g")).await;
    assert_eq!(
        err.status, 503,
        "without stale-if-error the client sees the error"
    );
    let back = c.get(&proxy.url("/g")).await;
    assert_eq!(back.status, 200);
    assert_eq!(back.text(), "good");
    assert_eq!(origin.hits("/g"), 3);
    let seen = origin.seen();
    assert_eq!(
        seen[1].header("if-none-match"),
        Some("\"g\""),
        "the 503 came in answer to a revalidation of the good copy"
    );
    assert_eq!(
        seen[2].header("if-none-match"),
        Some("\"g\""),
        "the good copy is still there to revalidate"
    );
    assert!(
        back.cache_status().contains("fwd=stale; fwd-status=304"),
        "served from the stored copy after the 304: {}",
        back.cache_status()
    );
}

#[tokio::test]
async fn sighup_reloads_keeping_the_cache_and_moving_traffic() {
    let a = Origin::start(|_| Reply::ok("from a").header("Cache-Control", "max-age=600")).await;
    let b = Origin::start(|_| Reply::ok("from b").header("Cache-Control", "max-age=600")).await;
    let mut proxy = Proxy::start(&[a.addr], "").await;
    let c = Client::new();
    assert_eq!(c.get(&proxy.url("/kept")).await.text(), "from a");
    proxy.rewrite_config(&[b.addr], "bypass:\n  session_cookies: [\"sid\"]\n");
    proxy.signal("HUP");
    let mut moved = false;
    for i in 0..100 {
        if c.get(&proxy.url(&format!("/new/{i}"))).await.text() == "from b" {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "traffic moved to the new app server");
    let kept = c.get(&proxy.url("/kept")).await;
    assert_eq!(kept.text(), "from a");
    assert!(kept.is_fresh_hit(), "the cache survived the reload");
    // the new bypass rules apply: a non-session cookie no longer bypasses
    assert!(c
        .get_with(&proxy.url("/kept"), &[("Cookie", "_ga=1")])
        .await
        .is_fresh_hit());

    // a bad file is refused with the key named, and the running config stays
    proxy.write_config_text("upstreams:\n  - addr: \"127.0.0.1:1\"\ncache:\n  max_size: lots\n");
    proxy.signal("HUP");
    let mut logged = false;
    for _ in 0..100 {
        if proxy
            .log()
            .contains("reload refused, the running config stays: cache.max_size")
        {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged, "{}", proxy.log());
    assert_eq!(c.get(&proxy.url("/new/after-bad")).await.text(), "from b");
    assert!(c.get(&proxy.url("/kept")).await.is_fresh_hit());
    assert!(
        proxy.wait_exit(Duration::from_millis(10)).await.is_none(),
        "still running"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let origin = Origin::start(|_| Reply::ok("finished").delay(Duration::from_millis(1000))).await;
    let mut proxy = Proxy::start(&[origin.addr], "shutdown_timeout: 5s\n").await;
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { Client::new().get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "no new connections after SIGTERM"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "finished");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// `health_check.type: http` sends `GET health_check.path` with `health_check.host` and wants
/// a 2xx or 3xx: a server that answers its check with a 500 (while it still accepts
/// connections, so a TCP check would pass it) is taken out of rotation; one answering 302
/// stays in.
#[tokio::test]
async fn an_http_health_check_takes_a_server_failing_its_check_out_of_rotation() {
    let sick = Origin::start(|s| match s.path() {
        "/health" => Reply::ok("db down").status(500),
        _ => Reply::ok("sick"),
    })
    .await;
    let well = Origin::start(|s| match s.path() {
        "/health" => Reply::ok("").status(302).header("Location", "/ok"),
        _ => Reply::ok("well"),
    })
    .await;
    let proxy = Proxy::start(
        &[sick.addr, well.addr],
        "health_check:\n  type: http\n  path: /health\n  host: app.internal\n  interval: 100ms\n  timeout: 500ms\n  failures: 1\n  successes: 1\n",
    )
    .await;
    let c = Client::new();
    let sick_series = format!("lacquer_upstream_healthy{{upstream=\"{}\"}}", sick.addr);
    let well_series = format!("lacquer_upstream_healthy{{upstream=\"{}\"}}", well.addr);
    let mut out = false;
    for _ in 0..100 {
        if metric(&c, &proxy, &sick_series).await == Some(0.0) {
            out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(out, "the server failing its check is out of rotation");
    assert_eq!(
        metric(&c, &proxy, &well_series).await,
        Some(1.0),
        "a 3xx passes"
    );
    let sick_before = sick.seen().iter().filter(|s| s.path() != "/health").count();
    for i in 0..20 {
        let r = c.get(&proxy.url(&format!("/page/{i}"))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "well", "request {i} went to the failing server");
    }
    let sick_after = sick.seen().iter().filter(|s| s.path() != "/health").count();
    assert_eq!(
        sick_before, sick_after,
        "no traffic for a server out of rotation"
    );
    assert_eq!(
        well.seen().iter().filter(|s| s.path() != "/health").count(),
        20
    );
    for origin in [&sick, &well] {
        let check = origin.last("/health").expect("checked");
        assert_eq!(check.method, "GET");
        assert_eq!(check.header("host"), Some("app.internal"));
        assert_eq!(check.header("user-agent"), Some("lacquer-health-check"));
    }
}

/// A SIGTERM waits for requests in flight at most `shutdown_timeout`: a request still running
/// then is cut off (its client gets no response), and lacquer exits 0 soon after the timeout
/// rather than when the request would have finished.
#[tokio::test]
async fn sigterm_cuts_off_requests_still_in_flight_at_shutdown_timeout() {
    let origin = Origin::start(|_| Reply::ok("too late").delay(Duration::from_secs(8))).await;
    let mut proxy = Proxy::start(&[origin.addr], "shutdown_timeout: 1s\n").await;
    let url = proxy.url("/endless");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .get(&url)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.hits("/endless") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        origin.hits("/endless"),
        1,
        "the request is in flight at the app"
    );
    let started = Instant::now();
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("lacquer exited before the request would have finished");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exit after {took:?}, shutdown_timeout is 1s"
    );
    let got = in_flight.await.unwrap();
    assert!(got.is_err(), "the cut-off client got a response: {got:?}");
}
