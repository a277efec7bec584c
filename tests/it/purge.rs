//! Invalidation: PURGE of a URL (all variants), of tags, of prefixes, of everything; soft
//! purge; invalidation by successful unsafe requests; no stale write after a purge; and who
//! may purge.

use std::time::{Duration, Instant};

use crate::support::{Client, Counter, Origin, Proxy, Reply};

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
async fn purge_of_a_url_answers_200_then_404_and_never_reaches_the_origin() {
    let origin = Origin::start(|_| cacheable("page")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/p?x=1")).await;
    let purged = c.send("PURGE", &proxy.url("/p?x=1"), &[], None).await;
    assert_eq!(purged.status, 200);
    assert_eq!(json(&purged)["purged"], 1);
    let again = c.send("PURGE", &proxy.url("/p?x=1"), &[], None).await;
    assert_eq!(again.status, 404);
    assert_eq!(
        origin.seen().iter().filter(|s| s.method == "PURGE").count(),
        0
    );
    let after = c.get(&proxy.url("/p?x=1")).await;
    assert!(!after.is_hit());
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
        .is_hit());
    let purged = c.send("PURGE", &proxy.url("/v"), &[], None).await;
    assert_eq!(json(&purged)["purged"], 3);
    for lang in ["en", "fr", "de"] {
        let r = c
            .get_with(&proxy.url("/v"), &[("Accept-Language", lang)])
            .await;
        assert_eq!(r.text(), format!("lang={lang}"));
        assert!(!r.is_hit(), "{lang} was purged");
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
    assert!(!c.get(&proxy.url("/a")).await.is_hit());
    assert!(!c.get(&proxy.url("/b")).await.is_hit());
    assert!(
        c.get(&proxy.url("/c")).await.is_hit(),
        "untouched by another tag"
    );
    assert!(c.get(&proxy.url("/d")).await.is_hit());

    // Varnish xkey's header on the proxy listener, with Cloudflare's comma-separated tags
    let r = c
        .send("PURGE", &proxy.url("/"), &[("xkey-purge", "local")], None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["purged"], 1);
    assert!(!c.get(&proxy.url("/c")).await.is_hit());
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
    let hit = |host: &'static str, path: &'static str| {
        let c = c.clone();
        let url = proxy.url(path);
        async move { c.get_with(&url, &[("Host", host)]).await.is_hit() }
    };
    assert!(!hit("h.example", "/blog/1").await);
    assert!(!hit("h.example", "/blog/2").await);
    assert!(hit("h.example", "/shop/1").await);
    assert!(
        hit("o.example", "/blog/1").await,
        "another host's /blog/ is untouched"
    );

    let r = api(&c, &proxy, r#"{"all": true}"#).await;
    assert_eq!(json(&r)["all"], 4);
    for (host, path) in pages {
        assert!(!hit(host, path).await, "{host}{path} survived purge all");
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
    assert!(fresh.is_hit());
    assert_eq!(origin.hits("/front"), 2, "exactly one refresh");

    // the same through the API
    let r = api(
        &c,
        &proxy,
        r#"{"urls": ["http://127.0.0.1/front"], "soft": true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
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
    let proxy = Proxy::start(&[origin.addr], "").await;
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
        !c.get_with(&proxy.url("/comments"), &host).await.is_hit(),
        "the POSTed URL"
    );
    assert!(
        !c.get_with(&proxy.url("/article"), &host).await.is_hit(),
        "its Location"
    );
    c.send("DELETE", &proxy.url("/item"), &host, None).await;
    assert!(!c.get_with(&proxy.url("/item"), &host).await.is_hit());
    c.send("POST", &proxy.url("/fails"), &host, None).await;
    assert!(
        c.get_with(&proxy.url("/fails"), &host).await.is_hit(),
        "a 500 invalidates nothing"
    );
    // a Location on another host is never invalidated (and /article here stays cached)
    c.send("POST", &proxy.url("/elsewhere"), &host, None).await;
    assert!(c.get_with(&proxy.url("/article"), &host).await.is_hit());
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
    assert_eq!(purge.status, 404, "nothing stored yet");
    let first = slow.await.unwrap();
    assert_eq!(
        first.text(),
        "before the submit",
        "its waiting client may get it"
    );
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
    assert!(now.is_hit());
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
    assert!(c.get(&proxy.url("/x")).await.is_hit(), "nothing changed");
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
    assert!(c.get(&proxy.url("/keep")).await.is_hit());
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
    // a burst of 3 (404: nothing stored), then 429 until tokens come back
    let accepted = statuses.iter().filter(|s| **s == 404).count();
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
    assert_eq!(again.status, 404);
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
        assert_eq!(c.get(&proxy.url(path)).await.is_hit(), kept, "{path}");
    }
}
