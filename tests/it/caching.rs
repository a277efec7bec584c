//! Shared-cache semantics (RFC 9111): what is stored, for how long, and how it is served.

use std::time::Duration;

use crate::support::{Client, Counter, Origin, Proxy, Reply};

fn cacheable(body: &str) -> Reply {
    Reply::ok(body).header("Cache-Control", "max-age=60")
}

#[tokio::test]
async fn a_miss_then_a_hit_reaches_the_origin_once() {
    let origin = Origin::start(|_| cacheable("hello").header("X-App", "kept")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();

    let first = c.get(&proxy.url("/page")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "hello");
    assert_eq!(
        first.cache_status(),
        "lacquer; fwd=miss; fwd-status=200; stored"
    );

    let second = c.get(&proxy.url("/page")).await;
    assert_eq!(second.text(), "hello");
    assert!(
        second.cache_status().starts_with("lacquer; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(
        second.header("x-app"),
        Some("kept"),
        "unknown headers pass through"
    );
    assert_eq!(origin.hits("/page"), 1);
}

#[tokio::test]
async fn head_is_served_from_the_get_entry_and_fills_it() {
    let origin = Origin::start(|_| cacheable("body-bytes")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();

    // HEAD first: the origin is asked with GET, so the entry it fills serves a later GET
    let head = c.send("HEAD", &proxy.url("/h"), &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(origin.last("/h").unwrap().method, "GET");
    let get = c.get(&proxy.url("/h")).await;
    assert_eq!(get.text(), "body-bytes");
    assert!(get.is_fresh_hit());

    // and a HEAD after a GET is a hit without a body
    let head2 = c.send("HEAD", &proxy.url("/h"), &[], None).await;
    assert!(head2.is_fresh_hit());
    assert!(head2.body.is_empty());
    assert_eq!(head2.header("content-length"), Some("10"));
    assert_eq!(origin.hits("/h"), 1);
}

/// gunicorn writes a response's header and its body in two writes; a cold HEAD must fill the
/// cache all the same when it says `stored` (it used to store nothing most of the time).
#[tokio::test]
async fn a_cold_head_then_get_is_one_origin_request_when_the_app_writes_the_body_later() {
    let origin = Origin::start(|s| match s.path() {
        "/uncacheable" => Reply::ok("private bytes")
            .header("Cache-Control", "private")
            .stall_after(0, Duration::from_millis(30)),
        "/private-slow" => Reply::ok("private bytes")
            .header("Cache-Control", "private")
            .stall_after(0, Duration::from_millis(1500)),
        "/vary" => cacheable("body-bytes")
            .header("Vary", "Accept-Encoding, Cookie")
            .stall_after(0, Duration::from_millis(30)),
        _ => cacheable("body-bytes").stall_after(0, Duration::from_millis(30)),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for i in 0..4 {
        let path = format!("/late/{i}");
        let head = c.send("HEAD", &proxy.url(&path), &[], None).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), Some("10"));
        assert!(
            head.cache_status().ends_with("stored"),
            "{}",
            head.cache_status()
        );
        let get = c.get(&proxy.url(&path)).await;
        assert!(get.is_fresh_hit(), "{path}: {}", get.cache_status());
        assert_eq!(get.text(), "body-bytes");
        assert_eq!(origin.hits(&path), 1, "{path}");
    }
    // a page that varies (Django's Vary: Cookie, Accept-Encoding) is answered from its fill
    // too, never asked of the app a second time
    let head = c
        .send(
            "HEAD",
            &proxy.url("/vary"),
            &[("Accept-Encoding", "gzip")],
            None,
        )
        .await;
    assert!(
        head.cache_status().ends_with("stored"),
        "{}",
        head.cache_status()
    );
    assert_eq!(
        origin.seen().iter().filter(|s| s.method == "HEAD").count(),
        0
    );
    assert_eq!(origin.hits("/vary"), 1);
    // what cannot be stored is not said to be, and the HEAD still gets its answer
    let head = c.send("HEAD", &proxy.url("/uncacheable"), &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        !head.cache_status().contains("stored"),
        "{}",
        head.cache_status()
    );
    // the fill of an answer that cannot be stored ends at its header: the HEAD does not
    // wait for a body nobody will keep
    let started = std::time::Instant::now();
    let slow = c.send("HEAD", &proxy.url("/private-slow"), &[], None).await;
    assert_eq!(slow.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    // a URL remembered as not storable gets no background fill for a HEAD again: one
    // request (pingora asks with GET, as for any HEAD through the cache)
    let again = c.send("HEAD", &proxy.url("/uncacheable"), &[], None).await;
    assert_eq!(again.status, 200);
    let methods: Vec<String> = origin
        .seen()
        .iter()
        .filter(|s| s.path() == "/uncacheable")
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "HEAD", "GET"], "the app saw {methods:?}");
    assert_eq!(proxy.metric("lacquer_cache_inserts_total").await, 5.0);
}

#[tokio::test]
async fn private_no_store_and_set_cookie_are_never_stored() {
    let origin = Origin::start(|s| match s.path() {
        "/private" => Reply::ok("p").header("Cache-Control", "private, max-age=60"),
        "/no-store" => Reply::ok("n").header("Cache-Control", "no-store, max-age=60"),
        "/cookie" => cacheable("c").header("Set-Cookie", "session=abc; HttpOnly"),
        _ => Reply::ok("plain"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for path in ["/private", "/no-store", "/cookie", "/plain"] {
        let first = c.get(&proxy.url(path)).await;
        let second = c.get(&proxy.url(path)).await;
        let third = c.get(&proxy.url(path)).await;
        assert_eq!(first.status, 200);
        assert!(second.fetched(), "{path}: {}", second.cache_status());
        assert_eq!(
            origin.hits(path),
            3,
            "{path} must reach the origin every time"
        );
        if path == "/cookie" {
            // the client that caused it still gets its cookie, every time
            assert_eq!(third.header("set-cookie"), Some("session=abc; HttpOnly"));
            assert_eq!(
                first.cache_status(),
                "lacquer; fwd=miss; fwd-status=200; detail=set-cookie"
            );
        }
        // the key is remembered as uncacheable, and its Cache-Status says so
        assert!(
            third.cache_status().contains("hit-for-miss"),
            "{path}: {}",
            third.cache_status()
        );
    }
}

#[tokio::test]
async fn a_key_that_becomes_cacheable_is_stored_again() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        if calls.bump("x") == 1 {
            Reply::ok("v1").header("Cache-Control", "no-store")
        } else {
            cacheable("v2")
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    assert_eq!(c.get(&proxy.url("/x")).await.text(), "v1");
    assert_eq!(c.get(&proxy.url("/x")).await.text(), "v2");
    let third = c.get(&proxy.url("/x")).await;
    assert_eq!(third.text(), "v2");
    assert!(third.is_fresh_hit(), "{}", third.cache_status());
    assert_eq!(origin.hits("/x"), 2);
}

#[tokio::test]
async fn redirects_404_and_410_with_explicit_freshness_are_stored() {
    let origin = Origin::start(|s| match s.path() {
        "/moved" => Reply::ok("")
            .status(301)
            .header("Location", "/new")
            .header("Cache-Control", "max-age=60"),
        "/gone" => Reply::ok("gone")
            .status(410)
            .header("Cache-Control", "max-age=60"),
        "/missing" => Reply::ok("nope")
            .status(404)
            .header("Cache-Control", "max-age=60"),
        _ => Reply::ok("err").status(404),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for (path, status) in [("/moved", 301), ("/gone", 410), ("/missing", 404)] {
        c.get(&proxy.url(path)).await;
        let again = c.get(&proxy.url(path)).await;
        assert_eq!(again.status, status);
        assert!(again.is_fresh_hit(), "{path}");
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    // without explicit freshness and with heuristics off, a 404 is not stored
    c.get(&proxy.url("/other")).await;
    c.get(&proxy.url("/other")).await;
    assert_eq!(origin.hits("/other"), 2);
}

#[tokio::test]
async fn s_maxage_beats_max_age_and_expiry_refetches() {
    let origin =
        Origin::start(|_| Reply::ok("short").header("Cache-Control", "max-age=3600, s-maxage=1"))
            .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/e")).await;
    assert!(c.get(&proxy.url("/e")).await.is_fresh_hit());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = c.get(&proxy.url("/e")).await;
    assert_eq!(after.text(), "short");
    assert!(after.fetched(), "{}", after.cache_status());
    assert_eq!(origin.hits("/e"), 2);
}

#[tokio::test]
async fn the_origins_age_counts_against_freshness_and_is_passed_on() {
    let origin = Origin::start(|s| match s.path() {
        "/old" => Reply::ok("old")
            .header("Cache-Control", "max-age=3600")
            .header("Age", "7200"),
        _ => Reply::ok("young")
            .header("Cache-Control", "max-age=3600")
            .header("Age", "100"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let first = c.get(&proxy.url("/old")).await;
    assert_eq!(first.header("age"), Some("7200"));
    c.get(&proxy.url("/old")).await;
    assert_eq!(
        origin.hits("/old"),
        2,
        "max-age 3600 with Age 7200 is already stale"
    );

    c.get(&proxy.url("/young")).await;
    let hit = c.get(&proxy.url("/young")).await;
    assert!(hit.is_fresh_hit());
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(
        (100..110).contains(&age),
        "Age includes the origin's: {age}"
    );
}

#[tokio::test]
async fn expires_is_honoured_and_an_invalid_one_means_expired() {
    let origin = Origin::start(|s| {
        let now = std::time::SystemTime::now();
        match s.path() {
            "/valid" => Reply::ok("v")
                .header("Date", &httpdate::fmt_http_date(now))
                .header(
                    "Expires",
                    &httpdate::fmt_http_date(now + Duration::from_secs(300)),
                ),
            _ => Reply::ok("i").header("Expires", "not a date"),
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for _ in 0..2 {
        c.get(&proxy.url("/valid")).await;
        c.get(&proxy.url("/invalid")).await;
    }
    assert_eq!(origin.hits("/valid"), 1);
    assert_eq!(origin.hits("/invalid"), 2);
}

#[tokio::test]
async fn cdn_cache_control_governs_lacquer() {
    let origin = Origin::start(|s| match s.path() {
        "/cdn" => Reply::ok("c")
            .header("Cache-Control", "private")
            .header("CDN-Cache-Control", "max-age=60"),
        _ => Reply::ok("n")
            .header("Cache-Control", "max-age=60")
            .header("CDN-Cache-Control", "no-store"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for _ in 0..2 {
        c.get(&proxy.url("/cdn")).await;
        c.get(&proxy.url("/nocdn")).await;
    }
    assert_eq!(origin.hits("/cdn"), 1);
    assert_eq!(origin.hits("/nocdn"), 2);
}

#[tokio::test]
async fn directives_are_case_insensitive() {
    let origin =
        Origin::start(|_| Reply::ok("x").header("cache-control", "Max-Age=60, PUBLIC")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/ci")).await;
    c.get(&proxy.url("/ci")).await;
    assert_eq!(origin.hits("/ci"), 1);
}

#[tokio::test]
async fn conditional_requests_get_304_from_the_cache() {
    let origin = Origin::start(|_| {
        cacheable("tagged")
            .header("ETag", "\"v1\"")
            .header("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/c")).await;
    let inm = c
        .get_with(&proxy.url("/c"), &[("If-None-Match", "\"v1\"")])
        .await;
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    let ims = c
        .get_with(
            &proxy.url("/c"),
            &[("If-Modified-Since", "Tue, 03 Nov 2026 10:00:00 GMT")],
        )
        .await;
    assert_eq!(ims.status, 304);
    let other = c
        .get_with(&proxy.url("/c"), &[("If-None-Match", "\"v0\"")])
        .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.text(), "tagged");
    assert_eq!(origin.hits("/c"), 1);
    // the client's validators never reach the origin on a miss either
    assert!(origin.last("/c").unwrap().header("if-none-match").is_none());
}

#[tokio::test]
async fn range_requests_on_a_hit_get_206_from_the_stored_object() {
    let origin = Origin::start(|_| cacheable("0123456789")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/r")).await;
    let part = c
        .get_with(&proxy.url("/r"), &[("Range", "bytes=2-5")])
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "2345");
    assert_eq!(part.header("content-range"), Some("bytes 2-5/10"));
    let tail = c.get_with(&proxy.url("/r"), &[("Range", "bytes=-3")]).await;
    assert_eq!(tail.text(), "789");
    let bad = c
        .get_with(&proxy.url("/r"), &[("Range", "bytes=50-60")])
        .await;
    assert_eq!(bad.status, 416);
    // a suffix of zero bytes is not satisfiable either (RFC 9110 section 14.1.2)
    let none = c.get_with(&proxy.url("/r"), &[("Range", "bytes=-0")]).await;
    assert_eq!(none.status, 416);
    assert_eq!(none.header("content-range"), Some("bytes */10"));
    assert_eq!(none.text(), "");
    assert_eq!(origin.hits("/r"), 1);
    // the origin was asked for the whole object, not the range
    assert!(origin.last("/r").unwrap().header("range").is_none());
}

#[tokio::test]
async fn a_stale_object_is_revalidated_and_a_304_refreshes_its_headers() {
    let calls = Counter::default();
    // (no assertion in the handler: a panic there would only reset the connection)
    let origin = Origin::start(move |_| {
        let n = calls.bump("v");
        if n == 1 {
            return Reply::ok("original body")
                .header("Cache-Control", "max-age=1")
                .header("ETag", "\"e1\"")
                .header("X-Version", "1");
        }
        Reply::ok("")
            .status(304)
            .header("Cache-Control", "max-age=60")
            .header("ETag", "\"e1\"")
            .header("X-Version", "2")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/v")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = c.get(&proxy.url("/v")).await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "original body");
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(
        origin.last("/v").unwrap().header("if-none-match"),
        Some("\"e1\""),
        "revalidation sends the stored ETag"
    );
    assert!(
        revalidated
            .cache_status()
            .contains("fwd=stale; fwd-status=304"),
        "{}",
        revalidated.cache_status()
    );
    // the 304's max-age=60 now governs: a plain hit
    let hit = c.get(&proxy.url("/v")).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(origin.hits("/v"), 2);
}

#[tokio::test]
async fn no_cache_is_stored_but_revalidated_every_time() {
    let origin = Origin::start(|s| {
        if s.header("if-none-match") == Some("\"n1\"") {
            Reply::ok("")
                .status(304)
                .header("ETag", "\"n1\"")
                .header("Cache-Control", "no-cache")
        } else {
            Reply::ok("fresh body")
                .header("Cache-Control", "no-cache")
                .header("ETag", "\"n1\"")
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/nc")).await;
    let second = c.get(&proxy.url("/nc")).await;
    assert_eq!(second.text(), "fresh body");
    assert_eq!(origin.hits("/nc"), 2);
    assert_eq!(
        origin.last("/nc").unwrap().header("if-none-match"),
        Some("\"n1\"")
    );
}

#[tokio::test]
async fn the_host_is_part_of_the_key() {
    let origin =
        Origin::start(|s| cacheable(&format!("site {}", s.header("host").unwrap_or("?")))).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let a = c
        .get_with(&proxy.url("/same"), &[("Host", "a.example")])
        .await;
    let b = c
        .get_with(&proxy.url("/same"), &[("Host", "b.example")])
        .await;
    let a2 = c
        .get_with(&proxy.url("/same"), &[("Host", "A.EXAMPLE:80")])
        .await;
    assert_eq!(a.text(), "site a.example");
    assert_eq!(b.text(), "site b.example");
    assert_eq!(
        a2.text(),
        "site a.example",
        "host is lower-cased and the default port dropped"
    );
    assert!(a2.is_fresh_hit());
    assert_eq!(origin.hits("/same"), 2);
}

#[tokio::test]
async fn tracking_parameters_are_left_out_of_the_key_and_the_app_never_sees_them() {
    let origin = Origin::start(|s| cacheable(&format!("rendered for {}", s.target))).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let a = c.get(&proxy.url("/p?id=7&utm_source=news&gclid=abc")).await;
    let b = c.get(&proxy.url("/p?utm_campaign=x&id=7&fbclid=1")).await;
    assert_eq!(a.text(), "rendered for /p?id=7");
    assert_eq!(b.text(), "rendered for /p?id=7");
    assert!(b.is_fresh_hit());
    let other = c.get(&proxy.url("/p?id=8")).await;
    assert_eq!(other.text(), "rendered for /p?id=8");
    assert_eq!(origin.hits("/p"), 2);
}

#[tokio::test]
async fn a_response_over_max_object_size_streams_through_uncached() {
    let big = vec![b'x'; 3 << 20];
    let big2 = big.clone();
    let origin = Origin::start(move |s| match s.path() {
        "/big-chunked" => Reply::ok(big2.clone())
            .header("Cache-Control", "max-age=60")
            .chunked(),
        _ => Reply::ok(big2.clone()).header("Cache-Control", "max-age=60"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "cache:\n  max_object_size: 1MiB\n").await;
    let c = Client::new();
    for path in ["/big", "/big-chunked"] {
        let first = c.get(&proxy.url(path)).await;
        assert_eq!(first.status, 200);
        assert_eq!(
            first.body.len(),
            big.len(),
            "{path}: the whole body arrives"
        );
        let second = c.get(&proxy.url(path)).await;
        assert_eq!(second.body.len(), big.len());
        assert_eq!(origin.hits(path), 2, "{path} is not stored");
    }
}

/// `Cache-Control: private="X-User"` and `no-cache="X-User"` let a shared cache store the
/// response without the named fields (RFC 9111 sections 5.2.2.4 and 5.2.2.7): the client the
/// app answered gets its X-User, the next visitor, served from memory, never does.
#[tokio::test]
async fn fields_named_by_private_or_no_cache_are_not_stored() {
    let origin = Origin::start(|s| {
        let user = s.header("x-login").unwrap_or("anonymous").to_string();
        let cc = match s.path() {
            "/private-field" => "max-age=60, private=\"X-User\"",
            _ => "max-age=60, no-cache=\"X-User, X-Session\"",
        };
        Reply::ok("the page")
            .header("Cache-Control", cc)
            .header("X-User", &user)
            .header("X-Session", "s-123")
            .header("X-Kept", "yes")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for path in ["/private-field", "/no-cache-field"] {
        let alice = c.get_with(&proxy.url(path), &[("X-Login", "alice")]).await;
        assert_eq!(alice.status, 200, "{path}");
        assert!(
            alice.cache_status().ends_with("stored"),
            "{path}: stored despite the qualified directive: {}",
            alice.cache_status()
        );
        let next = c.get(&proxy.url(path)).await;
        assert!(next.is_fresh_hit(), "{path}: {}", next.cache_status());
        assert_eq!(next.text(), "the page", "{path}");
        assert_eq!(next.header("x-user"), None, "{path}: alice's X-User leaked");
        assert_eq!(
            next.header("x-kept"),
            Some("yes"),
            "{path}: other fields stay"
        );
        if path == "/no-cache-field" {
            assert_eq!(next.header("x-session"), None, "every listed field goes");
        }
        assert_eq!(
            origin.hits(path),
            1,
            "{path}: the visitor was served from memory"
        );
        assert_eq!(origin.last(path).unwrap().header("x-login"), Some("alice"));
    }
}

/// A 304 that sets a cookie answers the revalidating client only: the cookie is never stored
/// with the object, so no later visitor is served it (the stored header merged with such a
/// 304 is not storable: lacquer never stores a `Set-Cookie`).
#[tokio::test]
async fn set_cookie_on_a_304_is_never_served_to_the_next_visitor() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| match calls.bump("sc") {
        1 => Reply::ok("shared page")
            .header("Cache-Control", "max-age=1")
            .header("ETag", "\"p1\""),
        2 => Reply::ok("")
            .status(304)
            .header("Cache-Control", "max-age=60")
            .header("ETag", "\"p1\"")
            .header("Set-Cookie", "sid=victim; HttpOnly"),
        _ => Reply::ok("")
            .status(304)
            .header("Cache-Control", "max-age=60")
            .header("ETag", "\"p1\""),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/sc")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let victim = c.get(&proxy.url("/sc")).await;
    assert_eq!(victim.status, 200);
    assert_eq!(victim.text(), "shared page");
    assert!(
        victim.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        victim.cache_status()
    );
    // (the revalidating client itself is served the stored header without the 304's
    // Set-Cookie today: pingora serves a 304 that is not storable from the old header)
    for i in 0..3 {
        let other = c.get(&proxy.url("/sc")).await;
        assert_eq!(other.status, 200);
        assert_eq!(other.text(), "shared page");
        assert_eq!(
            other.header("set-cookie"),
            None,
            "visitor {i} was served the victim's cookie: {}",
            other.cache_status()
        );
    }
    let seen = origin.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen[1].header("if-none-match"), Some("\"p1\""));
}

/// `cache.default_ttl` gives a lifetime to responses that state none, for heuristically
/// cacheable statuses only; an explicit lifetime and an error status are left alone.
#[tokio::test]
async fn default_ttl_stores_responses_without_freshness() {
    let origin = Origin::start(|s| match s.path() {
        "/plain" => Reply::ok("plain"),
        "/missing" => Reply::ok("nope").status(404),
        "/teapot" => Reply::ok("err").status(418),
        _ => Reply::ok("explicit").header("Cache-Control", "max-age=1"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "cache:\n  default_ttl: 1h\n").await;
    let c = Client::new();
    for path in ["/plain", "/missing", "/teapot", "/explicit"] {
        c.get(&proxy.url(path)).await;
    }
    let plain = c.get(&proxy.url("/plain")).await;
    assert!(plain.is_fresh_hit(), "{}", plain.cache_status());
    let ttl: u64 = plain
        .cache_status()
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "the default lifetime: {ttl}");
    assert!(c.get(&proxy.url("/missing")).await.is_fresh_hit(), "a 404");
    assert!(
        c.get(&proxy.url("/teapot")).await.fetched(),
        "418 is no heuristic status"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        c.get(&proxy.url("/explicit")).await.fetched(),
        "an explicit max-age wins over the default"
    );
    assert_eq!(origin.hits("/plain"), 1);
    assert_eq!(origin.hits("/missing"), 1);
    assert_eq!(origin.hits("/teapot"), 2);
    assert_eq!(origin.hits("/explicit"), 2);
}

/// `cache.keep` keeps an expired object that has a validator, so the next request revalidates
/// (a conditional request and a 304) instead of fetching the whole body again; `keep: 0`
/// (with no soft-purge grace) drops it as soon as it can no longer be served.
#[tokio::test]
async fn cache_keep_decides_whether_an_expired_object_is_revalidated() {
    let reply = |s: &crate::support::origin::Seen| {
        if s.header("if-none-match") == Some("\"k\"") {
            Reply::ok("")
                .status(304)
                .header("Cache-Control", "max-age=1")
                .header("ETag", "\"k\"")
        } else {
            Reply::ok("full body")
                .header("Cache-Control", "max-age=1")
                .header("ETag", "\"k\"")
        }
    };
    let kept = Origin::start(reply).await;
    let dropped = Origin::start(reply).await;
    // (no soft-purge grace either: it keeps every object that long past its expiry too)
    let with_keep = Proxy::start(
        &[kept.addr],
        "cache:\n  keep: 1h\npurge:\n  soft_grace: 0s\n",
    )
    .await;
    let without = Proxy::start(
        &[dropped.addr],
        "cache:\n  keep: 0s\npurge:\n  soft_grace: 0s\n",
    )
    .await;
    let c = Client::new();
    c.get(&with_keep.url("/k")).await;
    c.get(&without.url("/k")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c.get(&with_keep.url("/k")).await;
    assert_eq!(r.text(), "full body");
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        kept.last("/k").unwrap().header("if-none-match"),
        Some("\"k\"")
    );
    let r = c.get(&without.url("/k")).await;
    assert_eq!(r.text(), "full body");
    assert!(
        r.cache_status()
            .starts_with("lacquer; fwd=miss; fwd-status=200"),
        "{}",
        r.cache_status()
    );
    assert_eq!(dropped.last("/k").unwrap().header("if-none-match"), None);
    assert_eq!(kept.hits("/k"), 2);
    assert_eq!(dropped.hits("/k"), 2);
}

/// `cache.hit_for_miss_keys` bounds how many URLs are remembered as uncacheable: with the
/// smallest table (16), a URL is forgotten once many other uncacheable URLs came after it.
#[tokio::test]
async fn hit_for_miss_keys_bounds_the_remembered_urls() {
    let origin = Origin::start(|_| Reply::ok("private").header("Cache-Control", "private")).await;
    let small = Proxy::start(&[origin.addr], "cache:\n  hit_for_miss_keys: 16\n").await;
    let large = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for proxy in [&small, &large] {
        c.get(&proxy.url("/first")).await;
        assert!(c
            .get(&proxy.url("/first"))
            .await
            .cache_status()
            .contains("detail=hit-for-miss"));
        for i in 0..400 {
            c.get(&proxy.url(&format!("/other/{i}"))).await;
        }
    }
    let forgotten = c.get(&small.url("/first")).await;
    assert_eq!(
        forgotten.cache_status(),
        "lacquer; fwd=miss; fwd-status=200; detail=private",
        "16 keys cannot remember /first after 400 others"
    );
    let remembered = c.get(&large.url("/first")).await;
    assert!(
        remembered.cache_status().contains("detail=hit-for-miss"),
        "{}",
        remembered.cache_status()
    );
    assert_eq!(origin.hits("/first"), 6);
}

#[tokio::test]
async fn a_url_that_stops_setting_cookies_is_reported_stored_when_it_is() {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = n.clone();
    let origin = Origin::start(move |_| {
        let i = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let r = Reply::ok(format!("v{i}")).header("Cache-Control", "max-age=60");
        if i == 0 {
            r.header("Set-Cookie", "a=1")
        } else {
            r
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let first = c.get(&proxy.url("/x")).await;
    assert!(
        first.cache_status().contains("detail=set-cookie"),
        "{}",
        first.cache_status()
    );
    let second = c.get(&proxy.url("/x")).await;
    assert_eq!(
        second.cache_status(),
        "lacquer; fwd=miss; fwd-status=200; stored",
        "stored, and said so, though the URL was hit-for-miss"
    );
    let third = c.get(&proxy.url("/x")).await;
    assert!(third.is_fresh_hit(), "{}", third.cache_status());
    assert_eq!(third.text(), "v1");
    assert_eq!(proxy.metric("lacquer_cache_inserts_total").await, 1.0);
}

#[tokio::test]
async fn cdn_cache_control_governs_lacquer_and_is_not_passed_on() {
    let origin = Origin::start(|_| {
        Reply::ok("page")
            .header("Cache-Control", "no-cache")
            .header("CDN-Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let miss = c.get(&proxy.url("/cdn")).await;
    assert_eq!(miss.header("cdn-cache-control"), None);
    assert_eq!(
        miss.header("cache-control"),
        Some("no-cache"),
        "browsers get theirs"
    );
    let hit = c.get(&proxy.url("/cdn")).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("cdn-cache-control"), None);
}
