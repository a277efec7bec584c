//! What a hostile client cannot do to other visitors through the cache.

use crate::support::{Client, Origin, Proxy, Reply};

#[tokio::test]
async fn unkeyed_headers_cannot_change_what_others_are_served() {
    let origin = Origin::start(|s| {
        let reflected: Vec<String> = [
            "x-forwarded-host",
            "x-original-url",
            "x-http-method-override",
            "forwarded",
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
            ],
        )
        .await;
    assert!(!attack.text().contains("evil"), "{}", attack.text());
    let victim = c.get(&proxy.url("/page")).await;
    assert!(victim.is_hit());
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
        assert!(!r.is_hit());
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
