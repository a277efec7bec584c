//! What a hostile client cannot do to other visitors through the cache.

use std::time::Duration;

use crate::support::{exchange, Client, Counter, Origin, Proxy, Reply};

#[tokio::test]
async fn unkeyed_headers_cannot_change_what_others_are_served() {
    let origin = Origin::start(|s| {
        let reflected: Vec<String> = [
            "x-forwarded-host",
            "x-original-url",
            "x-http-method-override",
            "forwarded",
            "x-forwarded-ssl",
            "x-original-host",
            "front-end-https",
            "x-url-scheme",
        ]
        .iter()
        .filter_map(|h| s.header(h).map(|v| format!("{h}={v}")))
        .collect();
        Reply::ok(format!(
            "<a href=\"//{}/next\">{}</a>",
            s.header("x-forwarded-host").unwrap_or("site"),
            reflected.join(";")
        ))
        .header("Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let attack = c
        .get_with(
            &proxy.url("/page"),
            &[
                ("X-Forwarded-Host", "evil.example"),
                ("X-Original-URL", "/admin"),
                ("X-HTTP-Method-Override", "DELETE"),
                ("Forwarded", "host=evil.example"),
                ("X-Forwarded-Ssl", "on"),
                ("X-Original-Host", "evil.example"),
                ("Front-End-Https", "on"),
                ("X-Url-Scheme", "https"),
            ],
        )
        .await;
    assert!(!attack.text().contains("evil"), "{}", attack.text());
    assert!(!attack.text().contains("=on"), "{}", attack.text());
    let victim = c.get(&proxy.url("/page")).await;
    assert!(victim.is_fresh_hit());
    assert_eq!(victim.text(), "<a href=\"//site/next\"></a>");
    let seen = origin.last("/page").unwrap();
    assert!(seen.header("x-forwarded-host").is_none());
    assert!(seen.header("x-original-url").is_none());
    assert!(seen.header("x-http-method-override").is_none());

    // requests that bypass the cache reach the app unchanged: nobody else is served them
    let logged_in = c
        .get_with(
            &proxy.url("/page"),
            &[("Cookie", "sid=1"), ("X-Forwarded-Host", "me.example")],
        )
        .await;
    assert!(logged_in.text().contains("me.example"));
}

#[tokio::test]
async fn an_error_a_client_provokes_is_never_served_to_others() {
    // the app fails on an odd header (as a size limit, a WAF rule or a parser would) and
    // marks its error cacheable: a cache-poisoned denial of service if it were stored
    let origin = Origin::start(|s| {
        let reply = match s.header("x-oversized") {
            Some(_) => Reply::ok("bad request").status(400),
            None => Reply::ok("the page"),
        };
        reply.header("Cache-Control", "public, max-age=600")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let attack = c
        .get_with(&proxy.url("/home"), &[("X-Oversized", "1")])
        .await;
    assert_eq!(attack.status, 400);
    assert!(
        attack.cache_status().contains("detail=error-status"),
        "{}",
        attack.cache_status()
    );
    let victim = c.get(&proxy.url("/home")).await;
    assert_eq!(victim.status, 200);
    assert_eq!(victim.text(), "the page");
    assert_eq!(origin.hits("/home"), 2, "the 400 was not stored");

    // a request lacquer itself refuses never reaches the app nor the cache
    let long_header = "v".repeat(40_000);
    let refused = crate::support::exchange(
        proxy.addr,
        format!("GET /other HTTP/1.1\r\nHost: a\r\nX-Big: {long_header}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(refused.statuses(), vec![431]);
    assert_eq!(origin.hits("/other"), 0);
}

#[tokio::test]
async fn a_logged_in_page_is_never_stored_whatever_its_extension_or_headers() {
    // web cache deception: a logged-in visitor is lured to /account/settings.css; the app
    // renders the account page there and (wrongly) marks it public
    let origin = Origin::start(|s| {
        let body = match s.header("cookie") {
            Some(_) => "account of alice: card 4111",
            None => "please log in",
        };
        Reply::ok(body).header("Cache-Control", "public, max-age=600")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let victim = c
        .get_with(
            &proxy.url("/account/settings.css"),
            &[("Cookie", "sessionid=alice")],
        )
        .await;
    assert!(
        victim.cache_status().contains("fwd=bypass"),
        "{}",
        victim.cache_status()
    );
    let attacker = c.get(&proxy.url("/account/settings.css")).await;
    assert_eq!(attacker.text(), "please log in");
    assert_eq!(origin.hits("/account/settings.css"), 2);

    // nothing is cached by file extension: without freshness from the app, a .css is not
    // stored either
    let plain = Origin::start(|_| Reply::ok("body{}")).await;
    let proxy = Proxy::start(&[plain.addr], "").await;
    for _ in 0..2 {
        let r = c.get(&proxy.url("/static/site.css")).await;
        assert!(r.fetched());
    }
    assert_eq!(plain.hits("/static/site.css"), 2);
}

#[tokio::test]
async fn a_target_without_a_leading_slash_cannot_replace_the_front_page() {
    // pingora parses `GET index.html` as `/` but forwards `index.html` to the app: keyed as
    // `/`, its answer would become everybody's front page
    let origin = Origin::start(|s| {
        Reply::ok(format!("page for {}", s.target)).header("Cache-Control", "max-age=300")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let attack = crate::support::exchange(
        proxy.addr,
        b"GET index.html HTTP/1.1\r\nHost: site.example\r\n\r\n",
    )
    .await;
    assert_eq!(attack.statuses(), vec![400], "{}", attack.text());
    assert_eq!(origin.total(), 0, "an invalid target never reaches the app");
    let front =
        crate::support::exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: site.example\r\n\r\n").await;
    assert!(front.text().ends_with("page for /"), "{}", front.text());
}

#[tokio::test]
async fn a_body_on_a_get_never_shapes_a_page_that_others_are_served() {
    // Flask's request.form, Rails' params and Express's body-parser read a GET's form body
    let origin = Origin::start(|s| {
        let q = if s.body_len > 0 {
            "<script>evil()</script>"
        } else {
            "good"
        };
        Reply::ok(format!("results for {q}")).header("Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let attack = c
        .send(
            "GET",
            &proxy.url("/page?q=good"),
            &form,
            Some(b"q=<script>".to_vec()),
        )
        .await;
    assert_eq!(
        attack.cache_status(),
        "lacquer; fwd=bypass; fwd-status=200; detail=body"
    );
    let victim = c.get(&proxy.url("/page?q=good")).await;
    assert_eq!(victim.text(), "results for good");
    assert!(victim.fetched(), "{}", victim.cache_status());
    assert!(c.get(&proxy.url("/page?q=good")).await.is_fresh_hit());
    let seen: Vec<usize> = origin.seen().iter().map(|s| s.body_len).collect();
    assert_eq!(seen, vec![10, 0], "the bodiless fill carried no body");
}

#[tokio::test]
async fn underscore_spellings_of_stripped_headers_never_reach_the_app() {
    // wsgiref and Puma read X_Forwarded_Host as HTTP_X_FORWARDED_HOST, like the dash spelling
    let origin = Origin::start(|s| {
        let host = s
            .headers
            .iter()
            .find(|(k, _)| k.replace('_', "-") == "x-forwarded-host")
            .map_or("site", |(_, v)| v.as_str());
        Reply::ok(format!("<script src=\"http://{host}/app.js\">"))
            .header("Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let attack = [
        ("X_Forwarded_Host", "evil.example"),
        ("X_Original_URL", "/admin"),
        ("Content_Length", "5"),
        ("Transfer_Encoding", "chunked"),
    ];
    c.get_with(&proxy.url("/page"), &attack).await;
    let victim = c.get(&proxy.url("/page")).await;
    assert!(victim.is_fresh_hit());
    assert_eq!(victim.text(), "<script src=\"http://site/app.js\">");
    let seen = origin.last("/page").unwrap();
    assert!(
        seen.headers.iter().all(|(k, _)| !k.contains('_')),
        "{:?}",
        seen.headers
    );

    // the documented switch lets them through (nginx's underscores_in_headers on)
    let open = Proxy::start(&[origin.addr], "limits:\n  underscores_in_headers: true\n").await;
    c.get_with(&open.url("/other"), &[("X_Custom", "1")]).await;
    assert_eq!(origin.last("/other").unwrap().header("x_custom"), Some("1"));
}

#[tokio::test]
async fn the_app_is_sent_the_host_the_key_names() {
    // a host-matching app: any other spelling is a 404 that would be stored for everyone
    let origin = Origin::start(|s| match s.header("host") {
        Some("www.site.test") => Reply::ok("home").header("Cache-Control", "max-age=60"),
        other => Reply::ok(format!("no site {other:?}"))
            .status(404)
            .header("Cache-Control", "max-age=60"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    for (i, host) in [
        "www.site.test.",
        "www.site.test:",
        "www.site.test:0080",
        "WWW.Site.Test",
        "www.site.test..",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/p{i}");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = exchange(proxy.addr, req.as_bytes()).await;
        assert_eq!(r.statuses(), vec![200], "{host}: {}", r.text());
        assert_eq!(
            origin.last(&path).unwrap().header("host"),
            Some("www.site.test")
        );
        let clean =
            format!("GET {path} HTTP/1.1\r\nHost: www.site.test\r\nConnection: close\r\n\r\n");
        let r = exchange(proxy.addr, clean.as_bytes()).await;
        assert!(r.text().contains("lacquer; hit"), "{host}: {}", r.text());
        assert!(r.text().ends_with("home"), "{host}: {}", r.text());
    }
}

#[tokio::test]
async fn a_provoked_uncacheable_answer_does_not_switch_coalescing_off() {
    let calls = Counter::default();
    let origin = Origin::start(move |s| match (s.path(), calls.bump(s.path())) {
        // the attacker's request makes the app set a cookie once
        ("/hot", 1) => Reply::ok("for you").header("Set-Cookie", "a=1"),
        ("/hot", _) => Reply::ok("for all")
            .header("Cache-Control", "max-age=60")
            .delay(Duration::from_millis(300)),
        // or fail once
        (_, 1) => Reply::ok("oops").status(503),
        _ => Reply::ok("private").header("Cache-Control", "private"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/hot")).await;
    let stampede: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            let url = proxy.url("/hot");
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    for r in stampede {
        assert_eq!(r.await.unwrap().text(), "for all");
    }
    assert_eq!(origin.hits("/hot"), 2, "one fetch for the whole stampede");

    // an error says nothing about the URL: it does not mark it hit-for-miss
    assert_eq!(c.get(&proxy.url("/flaky")).await.status, 503);
    let next = c.get(&proxy.url("/flaky")).await;
    assert_eq!(
        next.cache_status(),
        "lacquer; fwd=miss; fwd-status=200; detail=private"
    );
}

#[tokio::test]
async fn unsafe_requests_without_purge_rights_evict_at_a_bounded_rate() {
    let origin = Origin::start(|s| match s.method.as_str() {
        "POST" => Reply::ok("thanks"),
        _ => Reply::ok("page").header("Cache-Control", "max-age=60"),
    })
    .await;
    // loopback is not a purge network here: the test client is an anonymous visitor
    let config = "purge:\n  allow: [\"192.0.2.0/24\"]\n  unsafe_invalidation_rate_per_client: 2\n";
    let proxy = Proxy::start(&[origin.addr], config).await;
    let c = Client::new();
    let url = proxy.url("/p");
    for round in 0..2 {
        c.get(&url).await;
        assert!(c.get(&url).await.is_fresh_hit());
        c.send("POST", &url, &[], Some(b"x".to_vec())).await;
        assert!(c.get(&url).await.fetched(), "round {round}: invalidated");
    }
    // the client's two invalidations a second are used up: the next POST evicts nothing
    assert!(c.get(&url).await.is_fresh_hit());
    c.send("POST", &url, &[], Some(b"x".to_vec())).await;
    assert!(
        c.get(&url).await.is_fresh_hit(),
        "a third eviction within the second"
    );
    assert_eq!(
        proxy
            .metric("lacquer_unsafe_invalidations_limited_total")
            .await,
        1.0
    );
}

#[tokio::test]
async fn set_cookie2_is_never_stored() {
    let origin = Origin::start(|_| {
        Reply::ok("mine")
            .header("Cache-Control", "max-age=60")
            .header("Set-Cookie2", "s=1; Version=1")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/x")).await;
    assert!(c.get(&proxy.url("/x")).await.fetched());
    assert_eq!(origin.hits("/x"), 2);
}
