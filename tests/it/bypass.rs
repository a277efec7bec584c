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
        .get_with(&proxy.url("/c"), &[("Cookie", "_ga=GA1.2")])
        .await;
    let second = c
        .get_with(&proxy.url("/c"), &[("Cookie", "_ga=GA1.2")])
        .await;
    assert_eq!(second.text(), "cookie=_ga=GA1.2");
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
