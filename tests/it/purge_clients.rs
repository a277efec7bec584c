//! The purge clients apps already ship for Varnish work unchanged: each test replays one app's
//! requests as its source sends them (docs/purging.md) against pages tagged the way that app
//! tags them, and checks what was purged, what was left, the status and the time.

use std::time::{Duration, Instant};

use crate::support::{Client, Origin, Proxy, Reply};

/// A site whose pages are tagged in `header` as `tags` says, each fresh for a minute.
async fn site(header: &'static str, tags: fn(&str) -> &'static str) -> Origin {
    Origin::start(move |s| {
        Reply::ok(format!("page {}", s.path()))
            .header("Cache-Control", "max-age=60")
            .header(header, tags(s.path()))
    })
    .await
}

/// Fill the cache with `paths` on `host`, each then a hit.
async fn warm(c: &Client, proxy: &Proxy, host: &str, paths: &[&str]) {
    for p in paths {
        c.get_with(&proxy.url(p), &[("Host", host)]).await;
        let hit = c.get_with(&proxy.url(p), &[("Host", host)]).await;
        assert!(hit.is_fresh_hit(), "{host}{p}: {}", hit.cache_status());
    }
}

/// Which of `paths` on `host` are still served from memory.
async fn still_cached(c: &Client, proxy: &Proxy, host: &str, paths: &[&str]) -> Vec<String> {
    let mut kept = Vec::new();
    for p in paths {
        if c.get_with(&proxy.url(p), &[("Host", host)])
            .await
            .is_fresh_hit()
        {
            kept.push(p.to_string());
        }
    }
    kept
}

/// Send one purge request, returning its status and how long it took.
async fn purge(
    c: &Client,
    proxy: &Proxy,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, Duration) {
    let started = Instant::now();
    let r = c.send(method, &proxy.url(target), headers, None).await;
    (r.status, started.elapsed())
}

fn never_reached_the_app(origin: &Origin) {
    let methods: Vec<String> = origin.seen().iter().map(|s| s.method.clone()).collect();
    assert!(
        methods.iter().all(|m| m == "GET"),
        "the app saw {methods:?}"
    );
}

#[tokio::test]
async fn wordpress_proxy_cache_purge() {
    let origin = site("X-Cache-Tags", |p| match p {
        "/hello-world/" => "site-1,p-12,home",
        "/feed/" => "site-1,feed",
        _ => "site-1",
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let pages = ["/hello-world/", "/feed/", "/about/"];
    let wp = "blog.test";
    warm(&c, &proxy, wp, &pages).await;
    warm(&c, &proxy, "other.test", &pages).await;
    // the plugin turns tags on when the cache announces them
    assert_eq!(
        origin
            .last("/about/")
            .unwrap()
            .header("surrogate-capability"),
        Some("lacquer=\"Surrogate/1.0 tags/1\"")
    );
    // a post was updated: its URL
    let (status, took) = purge(
        &c,
        &proxy,
        "PURGE",
        "/hello-world/",
        &[("Host", wp), ("X-Purge-Method", "default")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(
        still_cached(&c, &proxy, wp, &pages).await,
        ["/feed/", "/about/"]
    );
    warm(&c, &proxy, wp, &pages).await;
    // by tags (5.4+)
    let tags = [
        ("Host", wp),
        ("X-Purge-Method", "tags"),
        ("X-Cache-Tags-Pattern", "p-12|feed"),
    ];
    assert_eq!(purge(&c, &proxy, "PURGE", "/", &tags).await.0, 200);
    assert_eq!(still_cached(&c, &proxy, wp, &pages).await, ["/about/"]);
    assert_eq!(
        still_cached(&c, &proxy, "other.test", &pages).await,
        ["/about/"],
        "a tag purge is not limited to a host"
    );
    warm(&c, &proxy, wp, &pages).await;
    warm(&c, &proxy, "other.test", &pages).await;
    // "purge all": a regex on the URL, for this site only
    let all = [("Host", wp), ("X-Purge-Method", "regex")];
    assert_eq!(purge(&c, &proxy, "PURGE", "/.*", &all).await.0, 200);
    assert!(still_cached(&c, &proxy, wp, &pages).await.is_empty());
    assert_eq!(
        still_cached(&c, &proxy, "other.test", &pages).await.len(),
        3,
        "another site keeps its pages"
    );
    never_reached_the_app(&origin);
}

#[tokio::test]
async fn magento_2_tag_patterns_soft_and_flush() {
    let origin = site("X-Magento-Tags", |p| match p {
        "/shoes.html" => "cat_c_3,cat_p_1,cat_p_2",
        "/shoe-1.html" => "cat_p_1",
        _ => "cms_b_footer",
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let pages = ["/shoes.html", "/shoe-1.html", "/about-us"];
    let shop = "shop.test";
    warm(&c, &proxy, shop, &pages).await;
    let visitor = c
        .get_with(&proxy.url("/shoes.html"), &[("Host", shop)])
        .await;
    assert_eq!(
        visitor.header("x-magento-tags"),
        None,
        "tags never reach visitors"
    );
    // Magento names the cache's own host (http_cache_hosts), not the shop's
    let cache_host = proxy
        .url("/")
        .replace("http://", "")
        .trim_end_matches('/')
        .to_string();
    let pattern = "((^|,)cat_p_1(,|$))|((^|,)cat_p_9(,|$))";
    let (status, took) = purge(
        &c,
        &proxy,
        "PURGE",
        "/",
        &[("Host", &cache_host), ("X-Magento-Tags-Pattern", pattern)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(still_cached(&c, &proxy, shop, &pages).await, ["/about-us"]);
    warm(&c, &proxy, shop, &pages).await;
    // soft: the next visitor is served the stale page once while it is refreshed
    let soft = [
        ("Host", cache_host.as_str()),
        ("X-Magento-Tags-Pattern", "((^|,)cms_b_footer(,|$))"),
        ("X-Magento-Purge-Soft", "1"),
    ];
    assert_eq!(purge(&c, &proxy, "PURGE", "/", &soft).await.0, 200);
    let stale = c.get_with(&proxy.url("/about-us"), &[("Host", shop)]).await;
    assert!(stale.is_stale_hit(), "{}", stale.cache_status());
    assert!(
        crate::support::eventually(Duration::from_secs(3), || origin.hits("/about-us") == 2).await,
        "refreshed once in the background"
    );
    // flush all
    let flush = [
        ("Host", cache_host.as_str()),
        ("X-Magento-Tags-Pattern", ".*"),
    ];
    assert_eq!(purge(&c, &proxy, "PURGE", "/", &flush).await.0, 200);
    assert!(still_cached(&c, &proxy, shop, &pages[..2]).await.is_empty());
    // an empty pattern names nothing
    let empty = [
        ("Host", cache_host.as_str()),
        ("X-Magento-Tags-Pattern", ""),
    ];
    assert_eq!(purge(&c, &proxy, "PURGE", "/", &empty).await.0, 400);
    never_reached_the_app(&origin);
}

#[tokio::test]
async fn drupal_ban_by_tags_and_by_url_regex() {
    let origin = site("Purge-Cache-Tags", |p| match p {
        "/node/1" => "node:1 config:system.site",
        "/node/10" => "node:10 config:system.site",
        "/projects/lacquer" => "node_list",
        _ => "config:system.site",
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let pages = ["/node/1", "/node/10", "/projects/lacquer", "/"];
    let site_host = "drupal.test";
    warm(&c, &proxy, site_host, &pages).await;
    // purge_purger_http: a pipe list of exact tags, answered well within Drupal's 0.5 s
    let (status, took) = purge(
        &c,
        &proxy,
        "BAN",
        "/",
        &[("Purge-Cache-Tags", "node:1|node_list")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(
        still_cached(&c, &proxy, site_host, &pages).await,
        ["/node/10", "/"],
        "node:1 is not node:10"
    );
    warm(&c, &proxy, site_host, &pages).await;
    // the zero-config variant: a URL regex, in effect at once
    let (status, took) = purge(&c, &proxy, "BAN", "/.*projects.*", &[]).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(
        still_cached(&c, &proxy, site_host, &pages).await,
        ["/node/1", "/node/10", "/"]
    );
    never_reached_the_app(&origin);
}

#[tokio::test]
async fn symfony_foshttpcache_bans_purgekeys_and_refresh() {
    let origin = Origin::start(|s| {
        let (tags, xkey, ct) = match s.path() {
            "/a" => ("a,list", "a list", "text/html"),
            "/b" => ("b", "b", "text/html"),
            "/logo.png" => ("assets", "assets", "image/png"),
            _ => ("other", "other", "text/html"),
        };
        Reply::ok(format!("v{}", s.path()))
            .header("Cache-Control", "max-age=60")
            .header("X-Cache-Tags", tags)
            .header("xkey", xkey)
            .header("Content-Type", ct)
    })
    .await;
    let token = "fos-refresh-token-0123456789";
    let extra = format!("purge:\n  allow: [\"10.9.9.9/32\"]\n  token: \"{token}\"\n");
    let proxy = Proxy::start(&[origin.addr], &extra).await;
    let c = Client::new();
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    let pages = ["/a", "/b", "/logo.png", "/c"];
    let host = "app.test";
    warm(&c, &proxy, host, &pages).await;
    // a client without rights changes nothing
    let refused = c
        .send("BAN", &proxy.url("/"), &[("X-Url", ".*")], None)
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(still_cached(&c, &proxy, host, &pages).await.len(), 4);
    // BAN with every header FOSHttpCache sends; `.*` is "no condition"
    let ban = [
        auth,
        ("X-Host", "^app\\.test$"),
        ("X-Url", ".*"),
        ("X-Content-Type", ".*"),
        ("X-Cache-Tags", "(^|,)(a|b)(,|$)"),
    ];
    assert_eq!(purge(&c, &proxy, "BAN", "/", &ban).await.0, 200);
    assert_eq!(
        still_cached(&c, &proxy, host, &pages).await,
        ["/logo.png", "/c"]
    );
    warm(&c, &proxy, host, &pages).await;
    // by content type
    let images = [
        auth,
        ("X-Host", ".*"),
        ("X-Url", ".*"),
        ("X-Content-Type", "^image/"),
    ];
    assert_eq!(purge(&c, &proxy, "BAN", "/", &images).await.0, 200);
    assert_eq!(
        still_cached(&c, &proxy, host, &pages).await,
        ["/a", "/b", "/c"]
    );
    warm(&c, &proxy, host, &pages).await;
    // xkey mode: soft by default, a 400 without keys
    assert_eq!(
        purge(
            &c,
            &proxy,
            "PURGEKEYS",
            "/",
            &[auth, ("xkey-softpurge", "list")]
        )
        .await
        .0,
        200
    );
    let stale = c.get_with(&proxy.url("/a"), &[("Host", host)]).await;
    assert!(stale.is_stale_hit(), "{}", stale.cache_status());
    assert_eq!(purge(&c, &proxy, "PURGEKEYS", "/", &[auth]).await.0, 400);
    // refresh: from an allowed client the page is fetched anew and replaces the stored one
    let before = origin.hits("/c");
    let anyone = c
        .get_with(
            &proxy.url("/c"),
            &[("Host", host), ("Cache-Control", "no-cache")],
        )
        .await;
    assert!(
        anyone.is_fresh_hit(),
        "anyone else: {}",
        anyone.cache_status()
    );
    let refreshed = c
        .get_with(
            &proxy.url("/c"),
            &[("Host", host), ("Cache-Control", "no-cache"), auth],
        )
        .await;
    assert!(refreshed.fetched(), "{}", refreshed.cache_status());
    assert_eq!(origin.hits("/c"), before + 1);
    assert!(c
        .get_with(&proxy.url("/c"), &[("Host", host)])
        .await
        .is_fresh_hit());
    never_reached_the_app(&origin);
}

#[tokio::test]
async fn shopware_6_xkey_purge_and_ban_everything() {
    let origin = site("xkey", |p| match p {
        "/detail/1" => "product-1 category-2",
        "/listing/2" => "category-2",
        _ => "cms-page",
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let pages = ["/detail/1", "/listing/2", "/"];
    let shop = "shopware.test";
    warm(&c, &proxy, shop, &pages).await;
    let cache_host = proxy
        .url("/")
        .replace("http://", "")
        .trim_end_matches('/')
        .to_string();
    let tags = [("Host", cache_host.as_str()), ("xkey", "product-1")];
    assert_eq!(purge(&c, &proxy, "PURGE", "/", &tags).await.0, 200);
    assert_eq!(
        still_cached(&c, &proxy, shop, &pages).await,
        ["/listing/2", "/"]
    );
    assert_eq!(
        purge(&c, &proxy, "BAN", "/", &[("Host", cache_host.as_str())])
            .await
            .0,
        200
    );
    assert!(still_cached(&c, &proxy, shop, &pages).await.is_empty());
    never_reached_the_app(&origin);
}

#[tokio::test]
async fn typo3_bans_by_site_and_page() {
    let origin = Origin::start(|s| {
        let pid = match s.path() {
            "/page-12" => "12",
            "/page-123" => "123",
            _ => "1",
        };
        Reply::ok("page")
            .header("Cache-Control", "max-age=60")
            .header("TYPO3-Pid", pid)
            .header("TYPO3-Sitename", "abc")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let pages = ["/page-12", "/page-123", "/"];
    warm(&c, &proxy, "typo3.test", &pages).await;
    let page = [
        ("Varnish-Ban-TYPO3-Sitename", "abc"),
        ("Varnish-Ban-TYPO3-Pid", "12"),
    ];
    assert_eq!(purge(&c, &proxy, "BAN", "/", &page).await.0, 200);
    assert_eq!(
        still_cached(&c, &proxy, "typo3.test", &pages).await,
        ["/page-123", "/"]
    );
    let all = [
        ("Varnish-Ban-TYPO3-Sitename", "abc"),
        ("Varnish-Ban-All", "1"),
    ];
    assert_eq!(purge(&c, &proxy, "BAN", "/", &all).await.0, 200);
    assert!(still_cached(&c, &proxy, "typo3.test", &pages)
        .await
        .is_empty());
    never_reached_the_app(&origin);
}

#[tokio::test]
async fn a_ban_covers_a_fill_in_flight_and_retires_after_its_sweep() {
    let origin = Origin::start(|s| {
        let r = Reply::ok(format!("page {}", s.path())).header("Cache-Control", "max-age=60");
        if s.path() == "/slow/1" {
            r.delay(Duration::from_millis(300))
        } else {
            r
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let slow = {
        let c = c.clone();
        let url = proxy.url("/slow/1");
        tokio::spawn(async move { c.get(&url).await })
    };
    assert!(
        crate::support::eventually(Duration::from_secs(2), || origin.hits("/slow/1") == 1).await
    );
    assert_eq!(purge(&c, &proxy, "BAN", "/slow/.*", &[]).await.0, 200);
    slow.await.unwrap();
    assert!(
        c.get(&proxy.url("/slow/1")).await.fetched(),
        "the fill that began before the ban was not stored"
    );
    assert_eq!(
        proxy
            .metric("lacquer_purges_total{kind=\"ban\",result=\"ok\"}")
            .await,
        1.0
    );
}
