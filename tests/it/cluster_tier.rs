//! The cluster's shared tier on a real Redis: a node serves what another fetched, concurrent
//! misses on several nodes make one origin request, writes are compared and set (an older
//! fetch never overwrites a newer one, a fetch that began before a purge never lands), a
//! restarted node fills from the tier, and Redis going away costs no client error.

use std::time::{Duration, Instant};

use crate::support::origin::Counter;
use crate::support::redis::Redis;
use crate::support::{Client, Origin, Proxy, Reply};

/// Every node serves one site.
const SITE: (&str, &str) = ("Host", "site.test");

/// Pages that say how many times the app rendered them.
fn numbered_origin() -> impl Fn(&crate::support::origin::Seen) -> Reply {
    let calls = Counter::default();
    move |s| {
        let n = calls.bump(s.path());
        Reply::ok(format!("{} v{n}", s.path()))
            .header("Cache-Control", "max-age=60")
            .header("xkey", "news")
    }
}

async fn node(redis: &Redis, origin: &Origin, name: &str, extra: &str) -> Proxy {
    let yaml = format!(
        "cluster:\n  redis: \"{}\"\n  node: \"{name}\"\n  purge_ack_timeout: 2s\n{extra}",
        redis.url()
    );
    Proxy::start(&[origin.addr], &yaml).await
}

async fn nodes(redis: &Redis, origin: &Origin, names: &[&str], extra: &str) -> Vec<Proxy> {
    let mut out = Vec::new();
    for n in names {
        out.push(node(redis, origin, n, extra).await);
    }
    out
}

async fn get(c: &Client, node: &Proxy, path: &str) -> crate::support::Resp {
    c.get_with(&node.url(path), &[SITE]).await
}

#[tokio::test]
async fn a_node_serves_what_another_fetched_with_one_origin_request() {
    let redis = Redis::start().await;
    let origin = Origin::start(numbered_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b", "c"], "").await;
    let c = Client::new();
    let first = get(&c, &cluster[0], "/page").await;
    assert!(first.fetched(), "{}", first.cache_status());
    for n in &cluster[1..] {
        let shared = get(&c, n, "/page").await;
        assert!(shared.is_shared_hit(), "{}", shared.cache_status());
        assert_eq!(shared.text(), "/page v1");
        assert_eq!(
            shared.header("cache-control"),
            Some("max-age=60"),
            "the stored header"
        );
        // and from then on from its own memory
        let again = get(&c, n, "/page").await;
        assert!(again.is_fresh_hit(), "{}", again.cache_status());
    }
    assert_eq!(origin.hits("/page"), 1, "one render for the cluster");
    assert!(cluster[1].metric("lacquer_shared_lookups_total").await >= 1.0);
}

#[tokio::test]
async fn concurrent_misses_on_three_nodes_make_one_origin_request() {
    let redis = Redis::start().await;
    let origin = Origin::start(|s| {
        Reply::ok(format!("slow {}", s.path()))
            .header("Cache-Control", "max-age=60")
            .delay(Duration::from_millis(400))
    })
    .await;
    let cluster = nodes(&redis, &origin, &["a", "b", "c"], "").await;
    let c = Client::new();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = cluster[i % 3].url("/cold");
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.get_with(&url, &[SITE]).await }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.cache_status());
        assert_eq!(r.text(), "slow /cold");
    }
    assert_eq!(
        origin.hits("/cold"),
        1,
        "one origin request for 200 requests on 3 nodes"
    );
}

/// Pages `v1`, `v2`, ... per path, the first render taking 1.5 s.
fn slow_first_render() -> impl Fn(&crate::support::origin::Seen) -> Reply {
    let calls = Counter::default();
    move |s| {
        let n = calls.bump(s.path());
        let r = Reply::ok(format!("v{n}")).header("Cache-Control", "max-age=60");
        if n == 1 {
            r.delay(Duration::from_millis(1500))
        } else {
            r
        }
    }
}

#[tokio::test]
async fn an_older_fetch_never_overwrites_a_newer_one_across_nodes() {
    let redis = Redis::start().await;
    // the first render is slow; b stops waiting for it (lock_timeout) and renders again
    let origin = Origin::start(slow_first_render()).await;
    let extra = "cache:\n  lock_timeout: 200ms\n";
    let cluster = nodes(&redis, &origin, &["a", "b", "c"], extra).await;
    let c = Client::new();
    let (a, b) = (cluster[0].url("/race"), cluster[1].url("/race"));
    let c2 = c.clone();
    let slow = tokio::spawn(async move { c2.get_with(&a, &[SITE]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let newer = c.get_with(&b, &[SITE]).await;
    assert_eq!(newer.text(), "v2");
    assert_eq!(
        slow.await.unwrap().text(),
        "v1",
        "the slow fetch still answers its client"
    );
    // c reads the tier after both writes: the newer one stays
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = get(&c, &cluster[2], "/race").await;
    assert!(r.is_shared_hit(), "{}", r.cache_status());
    assert_eq!(r.text(), "v2", "the older fetch lost the compare-and-set");
    // (a's write runs in the background, after its client had the answer)
    let older = "lacquer_shared_stores_total{result=\"older\"}";
    let mut refused = false;
    for _ in 0..100 {
        if cluster[0].metric(older).await >= 1.0 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a's write was refused as older");
}

#[tokio::test]
async fn a_slow_fetch_that_began_before_a_purge_never_lands_on_any_node() {
    let redis = Redis::start().await;
    let origin = Origin::start(slow_first_render()).await;
    let cluster = nodes(&redis, &origin, &["a", "b", "c"], "").await;
    let c = Client::new();
    let a = cluster[0].url("/late");
    let c2 = c.clone();
    let slow = tokio::spawn(async move { c2.get_with(&a, &[SITE]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // the app changed the page while a was still fetching the old one
    let r = c
        .send("PURGE", &cluster[1].url("/late"), &[SITE], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        slow.await.unwrap().text(),
        "v1",
        "its own client still gets it"
    );
    for n in &cluster {
        assert_eq!(
            get(&c, n, "/late").await.text(),
            "v2",
            "no node keeps the old page"
        );
    }
    assert_eq!(origin.hits("/late"), 2);
}

#[tokio::test]
async fn a_purge_on_any_node_clears_the_shared_tier_too() {
    let redis = Redis::start().await;
    let origin = Origin::start(numbered_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b", "c"], "").await;
    let c = Client::new();
    for (path, purge) in [
        ("/u", vec![]),
        ("/t", vec![("xkey-purge", "news")]),
        ("/all", vec![("X-Purge-Method", "regex")]),
    ] {
        for n in &cluster {
            assert_eq!(get(&c, n, path).await.text(), format!("{path} v1"));
        }
        let target = if path == "/all" { "/.*" } else { path };
        let target = if path == "/t" { "/" } else { target };
        let mut headers = vec![SITE];
        headers.extend(purge);
        let r = c
            .send("PURGE", &cluster[1].url(target), &headers, None)
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        // every node serves the new page: one render, shared by the others
        for n in &cluster {
            assert_eq!(
                get(&c, n, path).await.text(),
                format!("{path} v2"),
                "{path}"
            );
        }
        assert_eq!(
            origin.hits(path),
            2,
            "{path}: rendered once after the purge"
        );
    }
}

#[tokio::test]
async fn a_restarted_node_serves_from_the_shared_tier_without_the_app() {
    let redis = Redis::start().await;
    let origin = Origin::start(numbered_origin()).await;
    let a = node(&redis, &origin, "a", "").await;
    let c = Client::new();
    assert!(get(&c, &a, "/warm").await.fetched());
    // (the write to the tier runs in the background)
    let stored = "lacquer_shared_stores_total{result=\"stored\"}";
    for _ in 0..100 {
        if a.metric(stored).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    let a = node(&redis, &origin, "a", "").await;
    let r = get(&c, &a, "/warm").await;
    assert!(r.is_shared_hit(), "{}", r.cache_status());
    assert_eq!(
        origin.hits("/warm"),
        1,
        "the cold node did not touch the app"
    );
}

#[tokio::test]
async fn an_uncacheable_answer_releases_the_other_nodes_at_once() {
    let redis = Redis::start().await;
    let origin = Origin::start(|_| {
        Reply::ok("private")
            .header("Cache-Control", "private")
            .delay(Duration::from_millis(500))
    })
    .await;
    // waiting for the lock would take 20 s
    let extra = "cache:\n  lock_timeout: 20s\n";
    let cluster = nodes(&redis, &origin, &["a", "b"], extra).await;
    let c = Client::new();
    let a = cluster[0].url("/private");
    let c2 = c.clone();
    let first = tokio::spawn(async move { c2.get_with(&a, &[SITE]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let second = get(&c, &cluster[1], "/private").await;
    assert_eq!(second.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "b stopped waiting when a's answer was not storable ({:?})",
        started.elapsed()
    );
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(origin.hits("/private"), 2);
}

#[tokio::test]
async fn redis_going_away_under_load_costs_no_client_error_and_sharing_resumes() {
    let mut redis = Redis::start().await;
    let origin = Origin::start(numbered_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b"], "").await;
    let c = Client::new();
    let urls: Vec<String> = (0..40)
        .map(|i| cluster[i % 2].url(&format!("/load/{}", i % 20)))
        .collect();
    let load = {
        let c = c.clone();
        let urls = urls.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                for u in &urls {
                    statuses.push(c.get_with(u, &[SITE]).await.status);
                }
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    // long enough for the Redis client's own reconnection to give up
    tokio::time::sleep(Duration::from_millis(4000)).await;
    redis.restart().await;
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 100);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no client error: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    // sharing resumes once the nodes reach Redis again
    let mut shared = false;
    for i in 0..100 {
        let path = format!("/after/{i}");
        get(&c, &cluster[0], &path).await;
        if get(&c, &cluster[1], &path).await.is_shared_hit() {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared, "b serves what a fetched again");
    let mut replicated = false;
    for _ in 0..50 {
        let r = c
            .send("PURGE", &cluster[0].url("/load/1"), &[SITE], None)
            .await;
        if r.status == 200 {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replicated, "purges are replicated again");
}

/// The tier's own compare-and-set, run as the nodes run it (the scripts lacquer ships, on a real
/// Redis): a nodes's memory also refuses a fill that a purge it applied covers, so this is
/// what holds when a purge reaches the tier before the filling node has heard of it.
mod scripts {
    use super::Redis;

    const LOOKUP: &str = include_str!("../../src/cluster/scripts/lookup.lua");
    const STORE: &str = include_str!("../../src/cluster/scripts/store.lua");
    const PURGE: &str = include_str!("../../src/cluster/scripts/purge.lua");

    const URL: &str = "0123456789abcdef0123456789abcdef";
    const VARIANT: &str = "00000000000000000000000000000001";

    async fn conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(redis.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// A lookup: what it found, and the tier's clock (a fetch's start).
    async fn lookup(c: &mut redis::aio::MultiplexedConnection) -> (String, String) {
        let (kind, _, _, now, _): (String, Vec<u8>, String, String, String) =
            redis::Script::new(LOOKUP)
                .key(format!("lacquer:o:{URL}"))
                .key(format!("lacquer:lock:{URL}"))
                .key(format!("lacquer:pass:{URL}"))
                .key("lacquer:marks")
                .key("lacquer:softmarks")
                .arg(VARIANT)
                .arg("0")
                .arg("test#1")
                .arg(1000)
                .arg(URL)
                .arg("test#")
                .invoke_async(c)
                .await
                .unwrap();
        (kind, now)
    }

    async fn start(c: &mut redis::aio::MultiplexedConnection) -> String {
        lookup(c).await.1
    }

    async fn store(
        c: &mut redis::aio::MultiplexedConnection,
        start: &str,
        tags: &[&str],
    ) -> String {
        let script = redis::Script::new(STORE);
        let mut s = script.prepare_invoke();
        s.key(format!("lacquer:o:{URL}"))
            .key(format!("lacquer:lock:{URL}"))
            .key("lacquer:marks")
            .key(format!("lacquer:pass:{URL}"))
            .key("lacquer:maxlife")
            .arg(VARIANT)
            .arg("blob")
            .arg(start)
            .arg("")
            .arg(60_000)
            .arg(600_000_000u64)
            .arg(URL)
            .arg(u64::MAX / 2);
        for t in tags {
            s.arg(*t);
        }
        s.invoke_async(c).await.unwrap()
    }

    async fn purge(c: &mut redis::aio::MultiplexedConnection, op: &str) {
        let _: String = redis::Script::new(PURGE)
            .arg("test")
            .arg("{}")
            .arg(1000)
            .arg(600_000)
            .arg("0")
            .arg(op)
            .invoke_async(c)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_fetch_that_began_before_a_purge_never_lands_in_the_tier() {
        let redis = Redis::start().await;
        let mut c = conn(&redis).await;
        // an older fetch never replaces what a newer one stored
        let older = start(&mut c).await;
        let newer = start(&mut c).await;
        assert_eq!(store(&mut c, &newer, &[]).await, "stored");
        assert_eq!(store(&mut c, &older, &[]).await, "older");
        // a purge of its URL, of one of its tags, of everything, after the fetch began
        let ops = [
            (format!("u{URL}"), vec![]),
            ("tnews".into(), vec!["news"]),
            ("a".into(), vec![]),
        ];
        for (op, tags) in ops {
            let before = start(&mut c).await;
            purge(&mut c, &op).await;
            assert_eq!(store(&mut c, &before, &tags).await, "purged", "{op}");
            let after = start(&mut c).await;
            assert_eq!(store(&mut c, &after, &tags).await, "stored", "{op}");
            // and what was stored before a purge is not served after it
            assert_eq!(lookup(&mut c).await.0, "hit", "{op}");
            purge(&mut c, &op).await;
            assert_ne!(lookup(&mut c).await.0, "hit", "{op}: purged");
        }
    }
}

#[tokio::test]
async fn a_revalidation_on_one_node_is_shared_with_the_others() {
    let redis = Redis::start().await;
    let calls = Counter::default();
    let origin = Origin::start(move |s| {
        calls.bump(s.path());
        if s.header("if-none-match") == Some("\"v1\"") {
            return Reply::ok("")
                .status(304)
                .header("ETag", "\"v1\"")
                .header("Cache-Control", "max-age=60");
        }
        Reply::ok("page")
            .header("ETag", "\"v1\"")
            .header("Cache-Control", "max-age=1")
    })
    .await;
    let cluster = nodes(&redis, &origin, &["a", "b"], "").await;
    let c = Client::new();
    assert!(get(&c, &cluster[0], "/r").await.fetched());
    assert!(get(&c, &cluster[1], "/r").await.is_shared_hit());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // stale everywhere: a revalidates (the app says 304, now for a minute), and b takes the
    // refreshed copy
    let r = get(&c, &cluster[0], "/r").await;
    assert_eq!(r.text(), "page");
    assert_eq!(origin.hits("/r"), 2, "one revalidation");
    // (a writes the revalidated copy in the background, after its client had the answer)
    let stored = "lacquer_shared_stores_total{result=\"stored\"}";
    for _ in 0..100 {
        if cluster[0].metric(stored).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut shared = false;
    for _ in 0..50 {
        let r = get(&c, &cluster[1], "/r").await;
        assert_eq!(r.text(), "page");
        if r.is_shared_hit() {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(shared, "b serves a's revalidated copy");
    assert_eq!(origin.hits("/r"), 2, "b did not revalidate it again");
}

#[tokio::test]
async fn a_purge_made_while_redis_was_away_reaches_the_others_when_it_is_back() {
    let redis = Redis::start().await;
    let origin = Origin::start(numbered_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b"], "").await;
    let c = Client::new();
    for n in &cluster {
        assert_eq!(get(&c, n, "/away").await.text(), "/away v1");
    }
    redis.pause();
    let r = c
        .send("PURGE", &cluster[0].url("/away"), &[SITE], None)
        .await;
    assert_eq!(r.status, 503, "not replicated: {}", r.text());
    // a purged it; its next fetch must not bring back the shared copy of the purged page
    assert_eq!(get(&c, &cluster[0], "/away").await.text(), "/away v2");
    redis.resume();
    let mut reached = false;
    for _ in 0..100 {
        if get(&c, &cluster[1], "/away").await.text() != "/away v1" {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reached, "b applied the purge once Redis was back");
    // and nothing serves the purged page from the shared tier
    let late = node(&redis, &origin, "c", "").await;
    assert_ne!(get(&c, &late, "/away").await.text(), "/away v1");
}
