//! Anonymous visitors only: Authorization, cookies and unsafe methods bypass the cache.

use crate::support::{Client, Origin, Proxy, Reply};

fn cacheable(body: &str) -> Reply {
    Reply::ok(body).header("Cache-Control", "max-age=60")
}

#[tokio::test]
async fn authorization_bypasses_and_never_fills_the_cache() {
    let origin = Origin::start(|s| {
        cacheable(if s.header("authorization").is_some() {
            "alice's page"
        } else {
            "anonymous page"
        })
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let alice = c
        .get_with(&proxy.url("/a"), &[("Authorization", "Bearer alice")])
        .await;
    assert_eq!(alice.text(), "alice's page");
    assert_eq!(
        alice.cache_status(),
        "lacquer; fwd=bypass; fwd-status=200; detail=authorization"
    );
    let anon = c.get(&proxy.url("/a")).await;
    assert_eq!(
        anon.text(),
        "anonymous page",
        "a logged-in response never reaches anonymous visitors"
    );
    let alice2 = c
        .get_with(&proxy.url("/a"), &[("Authorization", "Bearer alice")])
        .await;
    assert_eq!(alice2.text(), "alice's page");
    assert_eq!(origin.hits("/a"), 3);
}

#[tokio::test]
async fn any_cookie_bypasses_by_default() {
    let origin =
        Origin::start(|s| cacheable(&format!("cookie={}", s.header("cookie").unwrap_or("-"))))
            .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let first = c
        .get_with(&proxy.url("/c"), &[("Cookie", "theme=dark")])
        .await;
    let second = c
        .get_with(&proxy.url("/c"), &[("Cookie", "theme=dark")])
        .await;
    assert_eq!(second.text(), "cookie=theme=dark");
    assert!(first.cache_status().contains("fwd=bypass"));
    assert!(first.cache_status().contains("detail=cookie"));
    assert_eq!(origin.hits("/c"), 2);
    // an anonymous request is cached separately, never from the cookie requests
    assert_eq!(c.get(&proxy.url("/c")).await.text(), "cookie=-");
}

#[tokio::test]
async fn with_named_session_cookies_other_cookies_are_stripped_and_cached() {
    let origin =
        Origin::start(|s| cacheable(&format!("cookie={}", s.header("cookie").unwrap_or("-"))))
            .await;
    let proxy = Proxy::start(
        &[origin.addr],
        "bypass:\n  session_cookies: [\"sessionid\", \"wp_logged_in_*\"]\n",
    )
    .await;
    let c = Client::new();
    let a = c
        .get_with(&proxy.url("/s"), &[("Cookie", "_ga=1; _gid=2")])
        .await;
    let b = c
        .get_with(&proxy.url("/s"), &[("Cookie", "_ga=other")])
        .await;
    let plain = c.get(&proxy.url("/s")).await;
    assert_eq!(
        a.text(),
        "cookie=-",
        "analytics cookies never reach the app on cached requests"
    );
    assert!(b.is_fresh_hit(), "analytics cookies do not split the cache");
    assert!(plain.is_fresh_hit());
    assert_eq!(origin.hits("/s"), 1);

    let logged_in = c
        .get_with(&proxy.url("/s"), &[("Cookie", "_ga=1; sessionid=xyz")])
        .await;
    assert_eq!(logged_in.text(), "cookie=_ga=1; sessionid=xyz");
    assert!(logged_in.cache_status().contains("fwd=bypass"));
    let wp = c
        .get_with(&proxy.url("/s"), &[("Cookie", "wp_logged_in_abc=1")])
        .await;
    assert!(wp.cache_status().contains("detail=cookie"));
    assert_eq!(origin.hits("/s"), 3);
}

#[tokio::test]
async fn unsafe_methods_are_forwarded_with_their_bodies_and_never_cached() {
    let origin = Origin::start(|s| cacheable(&format!("{} {} bytes", s.method, s.body_len))).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = c
            .send(method, &proxy.url("/m"), &[], Some(vec![b'a'; 1000]))
            .await;
        assert_eq!(r.text(), format!("{method} 1000 bytes"));
        assert_eq!(
            r.cache_status(),
            "lacquer; fwd=method; fwd-status=200; detail=method"
        );
    }
    assert_eq!(origin.hits("/m"), 5);
    // none of them filled the cache for GET
    let get = c.get(&proxy.url("/m")).await;
    assert!(get.cache_status().contains("fwd=miss"));
}

#[tokio::test]
async fn analytics_cookies_never_bypass_and_never_reach_the_app() {
    let origin =
        Origin::start(|s| cacheable(&format!("cookie={}", s.header("cookie").unwrap_or("-"))))
            .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let analytics = [(
        "Cookie",
        "_ga=GA1.2.3; _gid=GA1.2.4; _fbp=fb.1; OptanonConsent=x",
    )];
    c.get_with(&proxy.url("/a"), &analytics).await;
    let hit = c.get_with(&proxy.url("/a"), &analytics).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.text(), "cookie=-");
    assert_eq!(origin.hits("/a"), 1);
    // one cookie that is not on the list still marks a visitor who may be logged in
    let mixed = c
        .get_with(&proxy.url("/a"), &[("Cookie", "_ga=GA1.2.3; remember=1")])
        .await;
    assert!(
        mixed.cache_status().contains("detail=cookie"),
        "{}",
        mixed.cache_status()
    );
    assert_eq!(mixed.text(), "cookie=_ga=GA1.2.3; remember=1");
}

/// Django's CSRF protection: a form page sets `csrftoken` when the visitor has none and uses
/// the visitor's own when it has one; the page is never storable (it sets a cookie).
fn django_form(s: &crate::support::origin::Seen) -> Reply {
    let sent = s
        .header("cookie")
        .and_then(|c| c.split("csrftoken=").nth(1))
        .map(|t| t.split(';').next().unwrap_or("").to_string());
    match sent {
        Some(token) => Reply::ok(format!("form token={token}")).header("Vary", "Cookie"),
        None => Reply::ok("form token=fresh")
            .header("Vary", "Cookie")
            .header("Set-Cookie", "csrftoken=fresh; Path=/"),
    }
}

#[tokio::test]
async fn two_forms_in_two_tabs_keep_one_csrf_cookie() {
    let origin = Origin::start(django_form).await;
    let proxy = Proxy::start(
        &[origin.addr],
        "bypass:\n  session_cookies: [\"sessionid\"]\n",
    )
    .await;
    let c = Client::new();
    // the first visit gets a token, and the URL is remembered as not storable
    let first = c.get(&proxy.url("/contact/")).await;
    assert_eq!(first.header("set-cookie"), Some("csrftoken=fresh; Path=/"));
    // two tabs with the cookie: the app sees it both times and renders the same token, so
    // both forms can be submitted
    let cookie = [("Cookie", "csrftoken=fresh")];
    for tab in ["first tab", "second tab"] {
        let r = c.get_with(&proxy.url("/contact/"), &cookie).await;
        assert_eq!(r.text(), "form token=fresh", "{tab}");
        assert_eq!(r.header("set-cookie"), None, "{tab}: no new token");
        assert!(
            r.cache_status().contains("detail=hit-for-miss"),
            "{tab}: {}",
            r.cache_status()
        );
        assert!(!r.cache_status().contains("stored"));
    }
    // someone submits the form (which invalidates the URL): its page still gets its cookies
    let post = c
        .send(
            "POST",
            &proxy.url("/contact/"),
            &cookie,
            Some(b"msg=hi".to_vec()),
        )
        .await;
    assert_eq!(post.status, 200);
    let after = c.get_with(&proxy.url("/contact/"), &cookie).await;
    assert_eq!(after.text(), "form token=fresh", "{}", after.cache_status());
    let seen = origin.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| s.method == "GET" && s.header("cookie") == Some("csrftoken=fresh"))
            .count(),
        3,
        "the app saw the visitor's cookie on every tab"
    );
}

#[tokio::test]
async fn a_purge_clears_the_hit_for_miss_mark() {
    let origin = Origin::start(django_form).await;
    let proxy = Proxy::start(
        &[origin.addr],
        "bypass:\n  session_cookies: [\"sessionid\"]\n",
    )
    .await;
    let c = Client::new();
    c.get(&proxy.url("/f")).await;
    let cookie = [("Cookie", "csrftoken=t")];
    let marked = c.get_with(&proxy.url("/f"), &cookie).await;
    assert!(
        marked.cache_status().contains("hit-for-miss"),
        "{}",
        marked.cache_status()
    );
    let purged = c.send("PURGE", &proxy.url("/f"), &[], None).await;
    assert_eq!(purged.status, 200);
    // the URL starts afresh: the request goes through the cache, its cookie stripped
    let after = c.get_with(&proxy.url("/f"), &cookie).await;
    assert!(
        !after.cache_status().contains("hit-for-miss"),
        "{}",
        after.cache_status()
    );
    assert_eq!(after.text(), "form token=fresh", "the cookie was stripped");
}
