//! Per-route rules (`rules:`): what Varnish users write in VCL and nginx users in `location`
//! blocks, for apps that send no caching headers or the wrong ones.

use std::time::Duration;

use crate::support::{eventually, Client, Origin, Proxy, Reply};

#[tokio::test]
async fn a_pass_rule_sends_every_request_to_the_app_with_its_cookies() {
    let origin = Origin::start(|s| {
        Reply::ok(format!("cookie={}", s.header("cookie").unwrap_or("-")))
            .header("Cache-Control", "max-age=60")
    })
    .await;
    let rules = r#"
bypass:
  session_cookies: ["sessionid"]
rules:
  - name: accounts
    match: {path: ["/accounts", "/accounts/*"]}
    pass: true
"#;
    let proxy = Proxy::start(&[origin.addr], rules).await;
    let c = Client::new();
    let csrf = [("Cookie", "csrftoken=abc")];
    for _ in 0..2 {
        let r = c.get_with(&proxy.url("/accounts/login/"), &csrf).await;
        assert_eq!(r.text(), "cookie=csrftoken=abc", "the app sees the cookie");
        assert_eq!(
            r.cache_status(),
            "lacquer; fwd=bypass; fwd-status=200; detail=rule-pass"
        );
    }
    assert_eq!(origin.hits("/accounts/login/"), 2, "never stored");
    // an encoded spelling of the path is the same path to the app
    c.get(&proxy.url("/%61ccounts/login/")).await;
    assert!(!c
        .get(&proxy.url("/%61ccounts/login/"))
        .await
        .served_from_memory());
    // elsewhere the same cookie is stripped and the page cached
    c.get_with(&proxy.url("/news"), &csrf).await;
    let news = c.get_with(&proxy.url("/news"), &csrf).await;
    assert!(news.is_fresh_hit(), "{}", news.cache_status());
    assert_eq!(news.text(), "cookie=-");
    assert_eq!(
        proxy
            .metric("lacquer_rule_requests_total{rule=\"accounts\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn force_ttl_caches_a_private_page_but_never_for_a_logged_in_visitor() {
    let origin = Origin::start(|s| {
        let who = if s.header("cookie").is_some() {
            "alice"
        } else {
            "anonymous"
        };
        Reply::ok(format!("{who} {}", s.path())).header("Cache-Control", "private, max-age=0")
    })
    .await;
    let rules = r#"
bypass:
  session_cookies: ["sessionid"]
rules:
  - match: {path: ["/", "/articles/*"]}
    force_ttl: 5m
"#;
    let proxy = Proxy::start(&[origin.addr], rules).await;
    let c = Client::new();
    let alice = [("Cookie", "sessionid=alice")];
    let logged_in = c.get_with(&proxy.url("/articles/1"), &alice).await;
    assert_eq!(logged_in.text(), "alice /articles/1");
    assert!(!logged_in.cache_status().contains("stored"));
    let first = c.get(&proxy.url("/articles/1")).await;
    assert!(
        first.cache_status().ends_with("stored"),
        "{}",
        first.cache_status()
    );
    let hit = c.get(&proxy.url("/articles/1")).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.text(), "anonymous /articles/1");
    let ttl: i64 = hit
        .cache_status()
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(-1);
    assert!((290..=300).contains(&ttl), "{}", hit.cache_status());
    // the logged-in visitor still gets their own page, never the stored one
    assert_eq!(
        c.get_with(&proxy.url("/articles/1"), &alice).await.text(),
        "alice /articles/1"
    );
    // outside the rule the app's private stands
    c.get(&proxy.url("/other")).await;
    assert!(!c.get(&proxy.url("/other")).await.served_from_memory());
}

#[tokio::test]
async fn force_ttl_never_stores_set_cookie_unless_the_rule_strips_it() {
    let origin = Origin::start(|s| {
        Reply::ok(format!("page {}", s.path())).header("Set-Cookie", "csrftoken=new; Path=/")
    })
    .await;
    let rules = r#"
rules:
  - match: {path: "/kept/*"}
    force_ttl: 1m
  - match: {path: "/stripped/*"}
    force_ttl: 1m
    strip_set_cookie: true
"#;
    let proxy = Proxy::start(&[origin.addr], rules).await;
    let c = Client::new();
    for _ in 0..2 {
        let r = c.get(&proxy.url("/kept/a")).await;
        assert!(!r.served_from_memory());
        assert_eq!(r.header("set-cookie"), Some("csrftoken=new; Path=/"));
    }
    let fill = c.get(&proxy.url("/stripped/a")).await;
    assert!(
        fill.cache_status().ends_with("stored"),
        "{}",
        fill.cache_status()
    );
    assert_eq!(
        fill.header("set-cookie"),
        Some("csrftoken=new; Path=/"),
        "the visitor whose request filled the cache gets its cookie"
    );
    let hit = c.get(&proxy.url("/stripped/a")).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("set-cookie"), None, "nobody else gets it");
    assert_eq!(origin.hits("/kept/a"), 2);
    assert_eq!(origin.hits("/stripped/a"), 1);
}

#[tokio::test]
async fn status_ttl_gives_404s_and_redirects_their_own_lifetimes() {
    let origin = Origin::start(|s| match s.path() {
        "/articles/new" => Reply::ok("not yet").status(404),
        "/articles/old" => Reply::ok("").status(301).header("Location", "/articles/1"),
        "/articles/gone" => Reply::ok("").status(302).header("Location", "/"),
        _ => Reply::ok("article"),
    })
    .await;
    let rules = r#"
rules:
  - match: {path: "/articles/*"}
    ttl: 5m
    status_ttl: {"404": "1s", "301": "1h"}
"#;
    let proxy = Proxy::start(&[origin.addr], rules).await;
    let c = Client::new();
    let ttl_of = |r: &crate::support::Resp| -> i64 {
        r.cache_status()
            .split("ttl=")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(i64::MIN)
    };
    for (path, low, high) in [
        ("/articles/1", 290, 300),
        ("/articles/old", 3590, 3600),
        ("/articles/new", 0, 1),
    ] {
        c.get(&proxy.url(path)).await;
        let hit = c.get(&proxy.url(path)).await;
        assert!(hit.is_fresh_hit(), "{path}: {}", hit.cache_status());
        let ttl = ttl_of(&hit);
        assert!(
            (low..=high).contains(&ttl),
            "{path}: {}",
            hit.cache_status()
        );
    }
    // a status neither the app nor the rule gives a lifetime is not stored
    c.get(&proxy.url("/articles/gone")).await;
    assert!(!c
        .get(&proxy.url("/articles/gone"))
        .await
        .served_from_memory());
    // the new article appears a second later, not five minutes later
    assert!(eventually(Duration::from_secs(4), || origin.hits("/articles/new") >= 1).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = c.get(&proxy.url("/articles/new")).await;
    assert!(!later.is_fresh_hit(), "{}", later.cache_status());
    assert_eq!(origin.hits("/articles/new"), 2);
}

#[tokio::test]
async fn cookies_ignore_caches_static_files_for_visitors_with_any_cookie() {
    let origin =
        Origin::start(|s| Reply::ok(format!("css cookie={}", s.header("cookie").unwrap_or("-"))))
            .await;
    let rules = r#"
rules:
  - match: {path: "/static/*"}
    cookies: ignore
    ttl: 1d
"#;
    let proxy = Proxy::start(&[origin.addr], rules).await;
    let c = Client::new();
    let cookie = [("Cookie", "sessionid=alice; theme=dark")];
    c.get_with(&proxy.url("/static/site.css"), &cookie).await;
    let hit = c.get_with(&proxy.url("/static/site.css"), &cookie).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.text(), "css cookie=-", "no cookie reached the app");
    assert_eq!(origin.hits("/static/site.css"), 1);
    // elsewhere a cookie still bypasses (the default: any cookie)
    let page = c.get_with(&proxy.url("/page"), &cookie).await;
    assert!(
        page.cache_status().contains("detail=cookie"),
        "{}",
        page.cache_status()
    );
}

#[tokio::test]
async fn a_rule_routes_to_its_pool_and_grace_serves_stale_when_the_pool_is_down() {
    let main = Origin::start(|_| Reply::ok("main app")).await;
    // the app's own stale-while-revalidate=0 leaves grace only stale-if-error to give
    let blog = Origin::start(|_| {
        Reply::ok("blog app").header("Cache-Control", "max-age=1, stale-while-revalidate=0")
    })
    .await;
    let extra = format!(
        r#"
pools:
  blog: [{{addr: "{}"}}]
health_check:
  type: none
rules:
  - match: {{path: "/blog/*"}}
    pool: blog
    grace: 1h
"#,
        blog.addr
    );
    let proxy = Proxy::start(&[main.addr], &extra).await;
    let c = Client::new();
    assert_eq!(c.get(&proxy.url("/blog/post")).await.text(), "blog app");
    assert_eq!(c.get(&proxy.url("/")).await.text(), "main app");
    assert_eq!(blog.hits("/blog/post"), 1);
    assert_eq!(main.hits("/blog/post"), 0);
    // the blog's app server goes away; the stored post is served stale (grace) instead
    drop(blog);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = c.get(&proxy.url("/blog/post")).await;
    assert_eq!(stale.text(), "blog app");
    assert!(
        stale.cache_status().contains("detail=stale-if-error"),
        "{}",
        stale.cache_status()
    );
}

#[tokio::test]
async fn a_reload_applies_new_rules() {
    let origin = Origin::start(|_| Reply::ok("page").header("Cache-Control", "max-age=60")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/admin/x")).await;
    assert!(c.get(&proxy.url("/admin/x")).await.is_fresh_hit());
    proxy.rewrite_config(
        &[origin.addr],
        "rules:\n  - match: {path: \"/admin/*\"}\n    pass: true\n",
    );
    proxy.signal("HUP");
    let c2 = c.clone();
    let url = proxy.url("/admin/x");
    let mut passed = false;
    for _ in 0..50 {
        if c2.get(&url).await.cache_status().contains("rule-pass") {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(passed, "the new pass rule applies after SIGHUP");
}

#[tokio::test]
async fn a_bad_rule_is_refused_with_its_key() {
    let out = crate::support::proxy::refused_config(
        "upstreams: [{addr: \"127.0.0.1:1\"}]\nrules:\n  - match: {path: \"admin/*\"}\n    pass: true\n    ttl: 5m\n",
    );
    assert!(
        out.contains("rules[0].match.path[0]: expected a path glob starting with '/'"),
        "{out}"
    );
    assert!(
        out.contains("rules[0].ttl: has no effect with pass: true"),
        "{out}"
    );
}
