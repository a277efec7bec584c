//! Invalidation: PURGE of a URL (all variants), of tags, of prefixes, of everything; soft
//! purge; invalidation by successful unsafe requests; no stale write after a purge; and who
//! may purge.

use std::time::{Duration, Instant};

use crate::support::{eventually, Client, Counter, Origin, Proxy, Reply};

fn cacheable(body: &str) -> Reply {
    Reply::ok(body).header("Cache-Control", "max-age=600")
}

async fn api(c: &Client, proxy: &Proxy, json: &str) -> crate::support::Resp {
    c.send(
        "POST",
        &format!("http://{}/purge", proxy.admin),
        &[("Content-Type", "application/json")],
        Some(json.as_bytes().to_vec()),
    )
    .await
}

fn json(r: &crate::support::Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[tokio::test]
async fn purge_of_a_url_answers_200_with_a_count_and_never_reaches_the_origin() {
    let origin = Origin::start(|_| cacheable("page")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/p?x=1")).await;
    let purged = c.send("PURGE", &proxy.url("/p?x=1"), &[], None).await;
    assert_eq!(purged.status, 200);
    assert_eq!(json(&purged)["purged"], 1);
    // nothing stored is what the client asked for: 200, as Varnish answers (purge clients
    // count a 404 as a failure)
    let again = c.send("PURGE", &proxy.url("/p?x=1"), &[], None).await;
    assert_eq!(again.status, 200);
    assert_eq!(json(&again)["purged"], 0);
    assert_eq!(
        origin.seen().iter().filter(|s| s.method == "PURGE").count(),
        0
    );
    let after = c.get(&proxy.url("/p?x=1")).await;
    assert!(after.fetched());
    assert_eq!(origin.hits("/p"), 2);
}

#[tokio::test]
async fn purge_removes_every_variant_of_the_url_for_get_and_head() {
    let origin = Origin::start(|s| {
        cacheable(&format!(
            "lang={}",
            s.header("accept-language").unwrap_or("-")
        ))
        .header("Vary", "Accept-Language")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for lang in ["en", "fr", "de"] {
        c.get_with(&proxy.url("/v"), &[("Accept-Language", lang)])
            .await;
    }
    assert!(c
        .send("HEAD", &proxy.url("/v"), &[("Accept-Language", "en")], None)
        .await
        .is_fresh_hit());
    let purged = c.send("PURGE", &proxy.url("/v"), &[], None).await;
    assert_eq!(json(&purged)["purged"], 3);
    for lang in ["en", "fr", "de"] {
        let r = c
            .get_with(&proxy.url("/v"), &[("Accept-Language", lang)])
            .await;
        assert_eq!(r.text(), format!("lang={lang}"));
        assert!(r.fetched(), "{lang} was purged");
    }
    assert_eq!(origin.hits("/v"), 6);
}

#[tokio::test]
async fn tag_purge_removes_exactly_the_tagged_objects_and_tags_never_leak() {
    let origin = Origin::start(|s| match s.path() {
        "/a" => cacheable("a").header("Surrogate-Key", "news sports"),
        "/b" => cacheable("b").header("xkey", "news"),
        "/c" => cacheable("c").header("Cache-Tag", "weather,local"),
        _ => cacheable("untagged"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for p in ["/a", "/b", "/c", "/d"] {
        let miss = c.get(&proxy.url(p)).await;
        let hit = c.get(&proxy.url(p)).await;
        for r in [&miss, &hit] {
            for h in ["surrogate-key", "xkey", "cache-tag"] {
                assert!(r.header(h).is_none(), "{p}: {h} leaked to the client");
            }
        }
    }
    let r = api(&c, &proxy, r#"{"tags": ["news"]}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["tags"], 2);
    assert!(c.get(&proxy.url("/a")).await.fetched());
    assert!(c.get(&proxy.url("/b")).await.fetched());
    assert!(
        c.get(&proxy.url("/c")).await.is_fresh_hit(),
        "untouched by another tag"
    );
    assert!(c.get(&proxy.url("/d")).await.is_fresh_hit());

    // Varnish xkey's header on the proxy listener, with Cloudflare's comma-separated tags
    let r = c
        .send("PURGE", &proxy.url("/"), &[("xkey-purge", "local")], None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["purged"], 1);
    assert!(c.get(&proxy.url("/c")).await.fetched());
    assert_eq!(origin.hits("/c"), 2);
    assert_eq!(origin.hits("/d"), 1);
}

#[tokio::test]
async fn prefix_purge_is_per_host_and_purge_all_empties_the_cache() {
    let origin =
        Origin::start(|s| cacheable(&format!("{}{}", s.header("host").unwrap_or(""), s.target)))
            .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let pages = [
        ("h.example", "/blog/1"),
        ("h.example", "/blog/2"),
        ("h.example", "/shop/1"),
        ("o.example", "/blog/1"),
    ];
    for (host, path) in pages {
        c.get_with(&proxy.url(path), &[("Host", host)]).await;
    }
    let r = api(&c, &proxy, r#"{"prefixes": ["http://H.example/blog/"]}"#).await;
    assert_eq!(json(&r)["prefixes"], 2);
    let get = |host: &'static str, path: &'static str| {
        let c = c.clone();
        let url = proxy.url(path);
        async move { c.get_with(&url, &[("Host", host)]).await }
    };
    assert!(get("h.example", "/blog/1").await.fetched());
    assert!(get("h.example", "/blog/2").await.fetched());
    assert!(get("h.example", "/shop/1").await.is_fresh_hit());
    assert!(
        get("o.example", "/blog/1").await.is_fresh_hit(),
        "another host's /blog/ is untouched"
    );

    let r = api(&c, &proxy, r#"{"all": true}"#).await;
    assert_eq!(json(&r)["all"], 4);
    for (host, path) in pages {
        assert!(
            get(host, path).await.fetched(),
            "{host}{path} survived purge all"
        );
    }
}

#[tokio::test]
async fn soft_purge_serves_stale_at_once_and_refreshes_with_one_origin_request() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        let n = calls.bump("soft");
        let reply = cacheable(&format!("version {n}")).header("xkey", "front");
        // the refresh is slow, like a database under load
        if n > 1 {
            reply.delay(Duration::from_millis(500))
        } else {
            reply
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/front")).await;
    let r = c
        .send(
            "PURGE",
            &proxy.url("/"),
            &[("xkey-purge", "front"), ("Soft-Purge", "1")],
            None,
        )
        .await;
    assert_eq!(json(&r)["purged"], 1);
    assert_eq!(json(&r)["soft"], true);
    let started = Instant::now();
    for _ in 0..20 {
        let r = c.get(&proxy.url("/front")).await;
        assert_eq!(r.text(), "version 1");
        assert!(
            r.cache_status().contains("stale-while-revalidate"),
            "{}",
            r.cache_status()
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "no visitor waited on the refresh"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let fresh = c.get(&proxy.url("/front")).await;
    assert_eq!(fresh.text(), "version 2");
    assert!(fresh.is_fresh_hit());
    assert_eq!(origin.hits("/front"), 2, "exactly one refresh");

    // the same through the API: a soft purge there too, not a hard one (the next visitor is
    // served the stale copy at once and one background fetch refreshes it)
    let body = format!(
        r#"{{"urls": ["http://{}/front"], "soft": true}}"#,
        proxy.addr
    );
    let r = api(&c, &proxy, &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["urls"], 1, "{}", r.text());
    let stale = c.get(&proxy.url("/front")).await;
    assert_eq!(stale.text(), "version 2", "served the soft-purged copy");
    assert!(stale.is_stale_hit(), "{}", stale.cache_status());
    let refreshed = eventually(Duration::from_secs(5), || origin.hits("/front") == 3).await;
    assert!(
        refreshed,
        "one background refresh: {}",
        origin.hits("/front")
    );
    let mut fresh = c.get(&proxy.url("/front")).await;
    for _ in 0..100 {
        if fresh.text() == "version 3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        fresh = c.get(&proxy.url("/front")).await;
    }
    assert_eq!(fresh.text(), "version 3");
    assert!(fresh.is_fresh_hit(), "{}", fresh.cache_status());
    assert_eq!(origin.hits("/front"), 3);
}

/// A revalidation that began before a purge describes the object as it was before the purge:
/// its 304 must refresh nothing. After a soft purge landing while the 304 is on its way, the
/// object is not fresh again; after a hard one, it is gone.
#[tokio::test]
async fn a_304_that_began_before_a_purge_refreshes_nothing() {
    let calls = Counter::default();
    let origin = Origin::start(move |s| {
        let n = calls.bump(s.path());
        if s.header("if-none-match") == Some("\"r\"") {
            let reply = Reply::ok("")
                .status(304)
                .header("Cache-Control", "max-age=600")
                .header("ETag", "\"r\"");
            // the first revalidation is slow: the purge lands while it is in flight
            if n == 2 {
                reply.delay(Duration::from_millis(700))
            } else {
                reply
            }
        } else {
            Reply::ok(format!("body {n}"))
                .header("Cache-Control", "max-age=1")
                .header("ETag", "\"r\"")
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for (path, soft) in [("/reval-soft", true), ("/reval-hard", false)] {
        c.get(&proxy.url(path)).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let revalidating = {
            let c = c.clone();
            let url = proxy.url(path);
            tokio::spawn(async move { c.get(&url).await })
        };
        assert!(
            eventually(Duration::from_secs(2), || origin.hits(path) == 2).await,
            "{path}: the revalidation reached the origin"
        );
        let headers: &[(&str, &str)] = if soft { &[("Soft-Purge", "1")] } else { &[] };
        let purge = c.send("PURGE", &proxy.url(path), headers, None).await;
        assert_eq!(purge.status, 200, "{path}");
        let first = revalidating.await.unwrap();
        assert_eq!(first.status, 200, "{path}");
        assert_eq!(
            first.text(),
            "body 1",
            "{path}: its client gets the revalidated copy"
        );
        assert_eq!(
            origin.last(path).unwrap().header("if-none-match"),
            Some("\"r\""),
            "{path}"
        );
        let next = c.get(&proxy.url(path)).await;
        assert!(
            !next.is_fresh_hit(),
            "{path}: the 304 from before the purge made it fresh again: {}",
            next.cache_status()
        );
        assert!(
            next.fetched(),
            "{path}: the next request asks the origin: {}",
            next.cache_status()
        );
        assert_eq!(origin.hits(path), 3, "{path}");
    }
}

/// A soft purge that lands while a fill is in flight: the fill is stored, but already stale,
/// so the next visitor is served it at once while one background fetch gets the new content.
#[tokio::test]
async fn a_soft_purge_during_a_fill_stores_the_fill_stale() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        let n = calls.bump("fill");
        let reply = cacheable(&format!("version {n}"));
        if n == 1 {
            reply.delay(Duration::from_millis(700))
        } else {
            reply
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let url = proxy.url("/filling");
    let slow = {
        let c = c.clone();
        let url = url.clone();
        tokio::spawn(async move { c.get(&url).await })
    };
    assert!(eventually(Duration::from_secs(2), || origin.hits("/filling") == 1).await);
    let purge = c.send("PURGE", &url, &[("Soft-Purge", "1")], None).await;
    assert_eq!(json(&purge)["purged"], 0, "nothing stored yet");
    let first = slow.await.unwrap();
    assert_eq!(first.text(), "version 1");
    assert!(
        first.cache_status().ends_with("stored"),
        "{}",
        first.cache_status()
    );
    let next = c.get(&url).await;
    assert_eq!(next.text(), "version 1", "the stale copy, at once");
    assert!(
        next.is_stale_hit(),
        "stored already stale: {}",
        next.cache_status()
    );
    assert!(eventually(Duration::from_secs(5), || origin.hits("/filling") == 2).await);
    let mut after = c.get(&url).await;
    for _ in 0..100 {
        if after.text() == "version 2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = c.get(&url).await;
    }
    assert_eq!(after.text(), "version 2");
    assert!(after.is_fresh_hit(), "{}", after.cache_status());
    assert_eq!(origin.hits("/filling"), 2);
}

/// A soft purge never serves stale what forbids it: with `must-revalidate` or `s-maxage` the
/// next request after a soft purge waits for a revalidation with the app instead.
#[tokio::test]
async fn a_soft_purge_honours_must_revalidate_and_s_maxage() {
    let origin = Origin::start(|s| {
        let cc = match s.path() {
            "/must" => "max-age=600, must-revalidate",
            "/smax" => "s-maxage=600",
            _ => "max-age=600",
        };
        if s.header("if-none-match") == Some("\"s\"") {
            Reply::ok("")
                .status(304)
                .header("Cache-Control", cc)
                .header("ETag", "\"s\"")
        } else {
            Reply::ok("stored body")
                .header("Cache-Control", cc)
                .header("ETag", "\"s\"")
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for path in ["/must", "/smax", "/plain"] {
        c.get(&proxy.url(path)).await;
        assert!(c.get(&proxy.url(path)).await.is_fresh_hit(), "{path}");
        let r = c
            .send("PURGE", &proxy.url(path), &[("Soft-Purge", "1")], None)
            .await;
        assert_eq!(json(&r)["purged"], 1, "{path}");
        assert_eq!(json(&r)["soft"], true, "{path}");
        let next = c.get(&proxy.url(path)).await;
        assert_eq!(next.text(), "stored body", "{path}");
        if path == "/plain" {
            assert!(next.is_stale_hit(), "{path}: {}", next.cache_status());
        } else {
            assert_eq!(
                next.cache_status(),
                "lacquer; fwd=stale; fwd-status=304; stored",
                "{path}: revalidated before it was served"
            );
            assert_eq!(origin.hits(path), 2, "{path}");
            assert_eq!(
                origin.last(path).unwrap().header("if-none-match"),
                Some("\"s\""),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn a_successful_unsafe_request_invalidates_its_url_and_location() {
    let origin = Origin::start(|s| match (s.method.as_str(), s.path()) {
        ("POST", "/comments") => Reply::ok("").status(303).header("Location", "/article"),
        ("POST", "/elsewhere") => Reply::ok("")
            .status(303)
            .header("Location", "http://other.example/article"),
        ("POST", "/fails") => Reply::ok("no").status(500),
        ("DELETE", _) => Reply::ok("deleted"),
        _ => cacheable("content"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "purge:\n  invalidate_locations: true\n").await;
    let c = Client::new();
    let host = [("Host", "site.example")];
    for p in ["/article", "/comments", "/item", "/fails"] {
        c.get_with(&proxy.url(p), &host).await;
    }
    c.send(
        "POST",
        &proxy.url("/comments"),
        &host,
        Some(b"text=hi".to_vec()),
    )
    .await;
    assert!(
        c.get_with(&proxy.url("/comments"), &host).await.fetched(),
        "the POSTed URL"
    );
    assert!(
        c.get_with(&proxy.url("/article"), &host).await.fetched(),
        "its Location"
    );
    c.send("DELETE", &proxy.url("/item"), &host, None).await;
    assert!(c.get_with(&proxy.url("/item"), &host).await.fetched());
    c.send("POST", &proxy.url("/fails"), &host, None).await;
    assert!(
        c.get_with(&proxy.url("/fails"), &host).await.is_fresh_hit(),
        "a 500 invalidates nothing"
    );
    // a Location on another host is never invalidated (and /article here stays cached)
    c.send("POST", &proxy.url("/elsewhere"), &host, None).await;
    assert!(c
        .get_with(&proxy.url("/article"), &host)
        .await
        .is_fresh_hit());
}

#[tokio::test]
async fn a_fetch_in_flight_during_a_purge_is_not_stored() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        if calls.bump("race") == 1 {
            cacheable("before the submit").delay(Duration::from_millis(600))
        } else {
            cacheable("after the submit")
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let url = proxy.url("/race");
    let slow = {
        let c = c.clone();
        let url = url.clone();
        tokio::spawn(async move { c.get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let purge = c.send("PURGE", &url, &[], None).await;
    assert_eq!(json(&purge)["purged"], 0, "nothing stored yet");
    let first = slow.await.unwrap();
    assert_eq!(
        first.text(),
        "before the submit",
        "its waiting client may get it"
    );
    // checked before it is stored, not stored and then hidden: nothing was inserted
    assert_eq!(proxy.metric("lacquer_cache_inserts_total").await, 0.0);
    let next = c.get(&url).await;
    assert_eq!(
        next.text(),
        "after the submit",
        "the cache must not keep it"
    );
    assert_eq!(origin.hits("/race"), 2);
}

#[tokio::test]
async fn of_two_racing_fetches_the_newer_is_kept() {
    let calls = Counter::default();
    let origin = Origin::start(move |_| {
        if calls.bump("two") == 1 {
            cacheable("older").delay(Duration::from_millis(1200))
        } else {
            cacheable("newer")
        }
    })
    .await;
    // a short lock: the second request stops waiting on the first and fetches itself
    let proxy = Proxy::start(&[origin.addr], "cache:\n  lock_timeout: 300ms\n").await;
    let c = Client::new();
    let url = proxy.url("/two");
    let older = {
        let c = c.clone();
        let url = url.clone();
        tokio::spawn(async move { c.get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = c.get(&url).await;
    assert_eq!(newer.text(), "newer");
    assert_eq!(older.await.unwrap().text(), "older");
    let now = c.get(&url).await;
    assert_eq!(
        now.text(),
        "newer",
        "the older response finished last but did not overwrite"
    );
    assert!(now.is_fresh_hit());
}

#[tokio::test]
async fn purges_need_the_acl_or_the_token() {
    let origin = Origin::start(|_| cacheable("x").header("xkey", "t")).await;
    let proxy = Proxy::start(
        &[origin.addr],
        "purge:\n  allow: [\"192.0.2.0/24\"]\n  token: \"s3cret-token-0123456789\"\n",
    )
    .await;
    let c = Client::new();
    c.get(&proxy.url("/x")).await;
    let denied = c.send("PURGE", &proxy.url("/x"), &[], None).await;
    assert_eq!(denied.status, 403);
    let wrong = c
        .send(
            "PURGE",
            &proxy.url("/x"),
            &[("Authorization", "Bearer wrong-token-000000000")],
            None,
        )
        .await;
    assert_eq!(wrong.status, 403);
    let api_denied = api(&c, &proxy, r#"{"all": true}"#).await;
    assert_eq!(api_denied.status, 403);
    assert!(
        c.get(&proxy.url("/x")).await.is_fresh_hit(),
        "nothing changed"
    );
    assert_eq!(origin.total(), 1, "nothing forwarded");
    let ok = c
        .send(
            "PURGE",
            &proxy.url("/x"),
            &[("Authorization", "Bearer s3cret-token-0123456789")],
            None,
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn malformed_api_input_is_a_400_and_purges_nothing() {
    let origin = Origin::start(|_| cacheable("x")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/keep")).await;
    for body in [
        "not json",
        r#"{"url": ["http://h/"]}"#,
        r#"{"all": "yes"}"#,
        r#"{"urls": ["/relative"], "all": true}"#,
        r#"{}"#,
    ] {
        let r = api(&c, &proxy, body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(json(&r)["error"].is_string());
    }
    assert!(c.get(&proxy.url("/keep")).await.is_fresh_hit());
}

#[tokio::test]
async fn purges_are_rate_limited_and_refused_ones_cost_no_tokens() {
    let origin = Origin::start(|_| cacheable("x")).await;
    let proxy = Proxy::start(
        &[origin.addr],
        "purge:\n  allow: []\n  token: \"s3cret-token-0123456789\"\n  rate_limit: 3\n",
    )
    .await;
    let c = Client::new();
    // unauthorised purges are refused first, and do not use up the budget
    for _ in 0..20 {
        let r = c.send("PURGE", &proxy.url("/x"), &[], None).await;
        assert_eq!(r.status, 403);
    }
    let auth = [("Authorization", "Bearer s3cret-token-0123456789")];
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(c.send("PURGE", &proxy.url("/x"), &auth, None).await.status);
    }
    // a burst of 3 (200, nothing stored), then 429 until tokens come back
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((3..=4).contains(&accepted), "{statuses:?}");
    assert_eq!(accepted + limited, 10, "{statuses:?}");
    let api_limited = c
        .send(
            "POST",
            &format!("http://{}/purge", proxy.admin),
            &auth,
            Some(br#"{"all": true}"#.to_vec()),
        )
        .await;
    assert_eq!(api_limited.status, 429, "the admin API shares the budget");
    // a second later the budget is back
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = c.send("PURGE", &proxy.url("/x"), &auth, None).await;
    assert_eq!(again.status, 200);
    let metrics = c
        .get(&format!("http://{}/metrics", proxy.admin))
        .await
        .text();
    assert!(
        metrics.contains("result=\"rate_limited\""),
        "rate-limited purges are counted"
    );
}

#[tokio::test]
async fn purge_api_names_are_bounded_and_many_prefixes_purge_in_one_call() {
    let origin = Origin::start(|_| Reply::ok("x").header("Cache-Control", "max-age=60")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for path in ["/a/1", "/a/2", "/b/1", "/c/1", "/d/1"] {
        c.get(&proxy.url(path)).await;
    }
    let api = format!("http://{}/purge", proxy.admin);
    let long_tag = format!("{{\"tags\": [\"{}\"]}}", "t".repeat(129));
    let r = c.send("POST", &api, &[], Some(long_tag.into_bytes())).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("longer than 128 bytes"), "{}", r.text());
    let long_prefix = format!("{{\"prefixes\": [\"http://h/{}\"]}}", "p".repeat(17 * 1024));
    let r = c
        .send("POST", &api, &[], Some(long_prefix.into_bytes()))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // one call, many prefixes (some covered by others, some matching nothing), one walk
    let host = proxy.addr.to_string();
    let mut prefixes: Vec<String> = (0..2000)
        .map(|i| format!("\"http://{host}/zz{i}/\""))
        .collect();
    prefixes.push(format!("\"http://{host}/a/\""));
    prefixes.push(format!("\"http://{host}/a/1\""));
    prefixes.push(format!("\"http://{host}/c\""));
    let body = format!("{{\"prefixes\": [{}]}}", prefixes.join(","));
    let r = c.send("POST", &api, &[], Some(body.into_bytes())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"prefixes\":3"), "{}", r.text());
    for (path, kept) in [
        ("/a/1", false),
        ("/a/2", false),
        ("/b/1", true),
        ("/c/1", false),
        ("/d/1", true),
    ] {
        let r = c.get(&proxy.url(path)).await;
        if kept {
            assert!(r.is_fresh_hit(), "{path} kept: {}", r.cache_status());
        } else {
            assert!(r.fetched(), "{path} purged: {}", r.cache_status());
        }
    }
}

/// PUT and PATCH invalidate like POST and DELETE (RFC 9111 section 4.4), and so does a
/// same-host `Content-Location` in their response, next to `Location`.
#[tokio::test]
async fn put_patch_and_content_location_invalidate() {
    let origin = Origin::start(|s| match (s.method.as_str(), s.path()) {
        ("PUT", "/doc") => Reply::ok("saved").header("Content-Location", "/doc/v2"),
        ("PATCH", "/item") => Reply::ok("").status(204),
        ("PUT", "/other") => {
            Reply::ok("saved").header("Content-Location", "http://elsewhere.example/doc/latest")
        }
        _ => cacheable(&format!("{} {}", s.method, s.path())),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "purge:\n  invalidate_locations: true\n").await;
    let c = Client::new();
    let host = [("Host", "site.example")];
    for p in ["/doc", "/doc/v2", "/doc/latest", "/item", "/untouched"] {
        c.get_with(&proxy.url(p), &host).await;
        assert!(c.get_with(&proxy.url(p), &host).await.is_fresh_hit(), "{p}");
    }
    let put = c
        .send("PUT", &proxy.url("/doc"), &host, Some(b"new".to_vec()))
        .await;
    assert_eq!(put.status, 200);
    assert!(
        put.cache_status().starts_with("lacquer; fwd=method"),
        "{}",
        put.cache_status()
    );
    let patch = c
        .send("PATCH", &proxy.url("/item"), &host, Some(b"p".to_vec()))
        .await;
    assert_eq!(patch.status, 204);
    c.send("PUT", &proxy.url("/other"), &host, Some(b"x".to_vec()))
        .await;
    let gets = |p: &str| {
        origin
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path() == p)
            .count()
    };
    for (p, invalidated) in [
        ("/doc", true),
        ("/doc/v2", true),
        ("/item", true),
        ("/doc/latest", false),
        ("/untouched", false),
    ] {
        let r = c.get_with(&proxy.url(p), &host).await;
        if invalidated {
            assert!(r.fetched(), "{p} was not invalidated: {}", r.cache_status());
            assert_eq!(gets(p), 2, "{p}");
        } else {
            assert!(r.is_fresh_hit(), "{p}: {}", r.cache_status());
            assert_eq!(gets(p), 1, "{p}");
        }
    }
    let unsafe_seen: Vec<(String, String)> = origin
        .seen()
        .iter()
        .filter(|s| s.method != "GET")
        .map(|s| (s.method.clone(), s.target.clone()))
        .collect();
    assert_eq!(
        unsafe_seen,
        [("PUT", "/doc"), ("PATCH", "/item"), ("PUT", "/other")]
            .map(|(m, t)| (m.to_string(), t.to_string()))
    );
}

/// `purge.invalidate_on_unsafe: false`: a successful POST leaves the cache as it was (the
/// POST itself still reaches the app).
#[tokio::test]
async fn invalidate_on_unsafe_false_keeps_the_cache() {
    let origin = Origin::start(|s| match s.method.as_str() {
        "POST" => Reply::ok("").status(303).header("Location", "/page"),
        _ => cacheable("page"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "purge:\n  invalidate_on_unsafe: false\n").await;
    let c = Client::new();
    c.get(&proxy.url("/page")).await;
    let post = c
        .send("POST", &proxy.url("/page"), &[], Some(b"x".to_vec()))
        .await;
    assert_eq!(post.status, 303);
    let after = c.get(&proxy.url("/page")).await;
    assert!(after.is_fresh_hit(), "{}", after.cache_status());
    assert_eq!(origin.hits("/page"), 2, "one GET and the POST");
    assert_eq!(origin.last("/page").unwrap().method, "POST");
}

/// `purge.strip_tag_headers: false`: clients see the tag headers (on a miss and on a hit),
/// and tag purges still work.
#[tokio::test]
async fn strip_tag_headers_false_passes_tags_to_clients() {
    let origin = Origin::start(|_| cacheable("tagged").header("Surrogate-Key", "a b")).await;
    let proxy = Proxy::start(&[origin.addr], "purge:\n  strip_tag_headers: false\n").await;
    let c = Client::new();
    let miss = c.get(&proxy.url("/t")).await;
    let hit = c.get(&proxy.url("/t")).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    for r in [&miss, &hit] {
        assert_eq!(
            r.header("surrogate-key"),
            Some("a b"),
            "{}",
            r.cache_status()
        );
    }
    let r = api(&c, &proxy, r#"{"tags": ["b"]}"#).await;
    assert_eq!(json(&r)["tags"], 1);
    assert!(c.get(&proxy.url("/t")).await.fetched());
    assert_eq!(origin.hits("/t"), 2);
}

/// The purge API takes at most 1 MiB of body (413 past it) and only POST (405 otherwise);
/// neither purges anything.
#[tokio::test]
async fn the_purge_api_refuses_bodies_over_1mib_and_other_methods() {
    let origin = Origin::start(|_| cacheable("x")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/keep")).await;
    let url = format!("http://{}/purge", proxy.admin);
    // a valid purge-all, padded with spaces past 1 MiB
    let mut body = br#"{"all": true}"#.to_vec();
    body.resize((1 << 20) + 1, b' ');
    let big = c.send("POST", &url, &[], Some(body)).await;
    assert_eq!(big.status, 413, "{}", big.text());
    assert!(json(&big)["error"].is_string());
    // exactly 1 MiB is accepted (a purge of a URL that is not stored)
    let mut ok = br#"{"urls": ["http://h.example/none"]}"#.to_vec();
    ok.resize(1 << 20, b' ');
    let r = c.send("POST", &url, &[], Some(ok)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for method in ["GET", "PUT", "DELETE"] {
        let r = c
            .send(method, &url, &[], Some(br#"{"all": true}"#.to_vec()))
            .await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(json(&r)["error"], "use POST", "{method}");
    }
    assert!(
        c.get(&proxy.url("/keep")).await.is_fresh_hit(),
        "nothing purged"
    );
    assert_eq!(origin.hits("/keep"), 1);
}

/// `purge.token_env` names the variable holding the token: a purge with that bearer token is
/// authorised from outside `purge.allow`, one without it is refused.
#[tokio::test]
async fn the_purge_token_can_come_from_the_environment() {
    let origin = Origin::start(|_| cacheable("x")).await;
    let token = "env-token-0123456789abcdef";
    let proxy = Proxy::start_with_env(
        &[origin.addr],
        "purge:\n  allow: []\n  token_env: LACQUER_IT_PURGE_TOKEN\n",
        &[("LACQUER_IT_PURGE_TOKEN", token)],
    )
    .await;
    let c = Client::new();
    c.get(&proxy.url("/x")).await;
    let denied = c.send("PURGE", &proxy.url("/x"), &[], None).await;
    assert_eq!(denied.status, 403);
    assert!(
        c.get(&proxy.url("/x")).await.is_fresh_hit(),
        "nothing purged"
    );
    let bearer = format!("Bearer {token}");
    let ok = c
        .send(
            "PURGE",
            &proxy.url("/x"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(json(&ok)["purged"], 1);
    assert!(c.get(&proxy.url("/x")).await.fetched());
    assert_eq!(origin.hits("/x"), 2);
    assert_eq!(
        origin.seen().iter().filter(|s| s.method == "PURGE").count(),
        0
    );
}

/// A proxy listener that faces the internet can take purges only with the token, or none at
/// all; the admin listener keeps `purge.allow` and the token.
#[tokio::test]
async fn purges_on_the_proxy_listener_can_be_token_only_or_off() {
    let origin = Origin::start(|_| cacheable("x")).await;
    let token = "0123456789abcdef0123";
    let bearer = format!("Bearer {token}");
    let c = Client::new();
    for (mode, with_token) in [("token", 200), ("off", 403)] {
        let proxy = Proxy::start(
            &[origin.addr],
            &format!("purge:\n  token: \"{token}\"\n  proxy_listener: {mode}\n"),
        )
        .await;
        let url = proxy.url(&format!("/{mode}"));
        c.get(&url).await;
        // loopback is in purge.allow, which the proxy listener no longer takes
        let r = c.send("PURGE", &url, &[], None).await;
        assert_eq!(r.status, 403, "{mode}: {}", r.text());
        let r = c
            .send("PURGE", &url, &[("Authorization", bearer.as_str())], None)
            .await;
        assert_eq!(r.status, with_token, "{mode} with the token: {}", r.text());
        // the admin listener still takes loopback
        let api = format!("http://{}/purge", proxy.admin);
        let body = format!("{{\"urls\": [\"{url}\"]}}");
        let r = c.send("POST", &api, &[], Some(body.into_bytes())).await;
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
    }
}

#[tokio::test]
async fn a_logout_redirecting_home_leaves_home_cached_by_default() {
    let origin = Origin::start(|s| match (s.method.as_str(), s.path()) {
        ("POST", "/accounts/logout/") => Reply::ok("").status(302).header("Location", "/"),
        _ => cacheable("home"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/")).await;
    c.get(&proxy.url("/accounts/logout/")).await;
    let logout = c
        .send(
            "POST",
            &proxy.url("/accounts/logout/"),
            &[],
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(logout.status, 302);
    let home = c.get(&proxy.url("/")).await;
    assert!(home.is_fresh_hit(), "{}", home.cache_status());
    assert!(
        c.get(&proxy.url("/accounts/logout/")).await.fetched(),
        "the POSTed URL itself is invalidated (RFC 9111 section 4.4)"
    );
    assert_eq!(origin.hits("/"), 1);
}
