//! Coalescing: concurrent misses for one object make one origin fetch.

use std::time::{Duration, Instant};

use crate::support::{Client, Origin, Proxy, Reply};

#[tokio::test]
async fn two_hundred_cold_requests_make_one_origin_request() {
    let origin = Origin::start(|_| {
        Reply::ok("expensive page")
            .header("Cache-Control", "max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let url = proxy.url("/hot");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    let mut bodies = Vec::new();
    let mut collapsed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        if r.cache_status().contains("collapsed") {
            collapsed += 1;
        }
        bodies.push(r.body);
    }
    assert!(
        collapsed > 0,
        "waiters say they were collapsed onto another fetch"
    );
    assert_eq!(bodies.len(), 200);
    assert!(
        bodies.iter().all(|b| b == b"expensive page"),
        "200 identical bodies"
    );
    assert_eq!(
        origin.hits("/hot"),
        1,
        "the origin got 1 request for 200 clients"
    );
}

#[tokio::test]
async fn waiters_are_released_at_once_when_the_response_is_uncacheable() {
    let delay = Duration::from_millis(400);
    let origin = Origin::start(move |_| {
        Reply::ok("personal")
            .header("Cache-Control", "max-age=60")
            .header("Set-Cookie", "s=1")
            .delay(delay)
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let url = proxy.url("/u");
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("set-cookie"), Some("s=1"));
    }
    let elapsed = started.elapsed();
    // one after another would take 20 x 400 ms; released together it is about 2 x 400 ms
    assert!(elapsed < delay * 4, "waiters were serialised: {elapsed:?}");
    assert_eq!(
        origin.hits("/u"),
        20,
        "each of them got its own (uncacheable) response"
    );
}
