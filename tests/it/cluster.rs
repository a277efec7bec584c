//! Several lacquer nodes on one Redis: a purge any node accepts reaches every node, with
//! acknowledgements; Redis down costs no client error, and a node that may have missed
//! purges drops its memory rather than serve a purged page. (The shared tier is on, as by
//! default: after a purge one node renders the page again and the others share it.)

use std::time::Duration;

use serde_json::Value;

use crate::support::origin::Counter;
use crate::support::redis::Redis;
use crate::support::{Client, Origin, Proxy, Reply};

/// Pages that say how many times the app rendered them.
fn tagged_origin() -> impl Fn(&crate::support::origin::Seen) -> Reply {
    let calls = Counter::default();
    move |s| {
        Reply::ok(format!("page {} v{}", s.path(), calls.bump(s.path())))
            .header("Cache-Control", "max-age=60")
            .header("xkey", "news")
    }
}

async fn nodes(redis: &Redis, origin: &Origin, names: &[&str]) -> Vec<Proxy> {
    let mut out = Vec::new();
    for name in names {
        let extra = format!(
            "cluster:\n  redis: \"{}\"\n  node: \"{name}\"\n  purge_ack_timeout: 2s\n",
            redis.url()
        );
        out.push(Proxy::start(&[origin.addr], &extra).await);
    }
    // every node has announced itself to every other
    let c = Client::new();
    for p in &out {
        let url = format!("http://{}/cluster", p.admin);
        let mut seen = 0;
        for _ in 0..100 {
            let view: Value = serde_json::from_slice(&c.get(&url).await.body).unwrap_or_default();
            seen = view["nodes"].as_array().map_or(0, |n| n.len());
            if seen == names.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, names.len(), "{url} lists every node");
    }
    out
}

/// Every node serves one site: the same Host whichever node a request reaches.
const SITE: (&str, &str) = ("Host", "site.test");

async fn get(c: &Client, node: &Proxy, path: &str) -> crate::support::Resp {
    c.get_with(&node.url(path), &[SITE]).await
}

/// Every node has `path` in its memory; the page they serve.
async fn warm(c: &Client, nodes: &[Proxy], path: &str) -> String {
    let mut page = String::new();
    for n in nodes {
        page = get(c, n, path).await.text();
        assert!(get(c, n, path).await.is_fresh_hit(), "{path} cached");
    }
    page
}

/// Every node serves a newer page than `old` on its next request.
async fn all_serve_anew(c: &Client, nodes: &[Proxy], path: &str, old: &str) {
    for n in nodes {
        let r = get(c, n, path).await;
        assert_eq!(r.status, 200);
        assert_ne!(
            r.text(),
            old,
            "{path} purged on every node: {}",
            r.cache_status()
        );
    }
}

fn json(r: &crate::support::Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[tokio::test]
async fn a_purge_on_any_node_reaches_every_node_with_acknowledgements() {
    let redis = Redis::start().await;
    let origin = Origin::start(tagged_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b", "c"]).await;
    let c = Client::new();
    // a URL purge on a
    let old = warm(&c, &cluster, "/p").await;
    let r = c.send("PURGE", &cluster[0].url("/p"), &[SITE], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = json(&r);
    assert_eq!(answer["replicated"], true);
    for n in ["a", "b", "c"] {
        assert_eq!(answer["nodes"][n], true, "{n} acknowledged: {answer}");
    }
    all_serve_anew(&c, &cluster, "/p", &old).await;
    // a tag purge on b
    let old = warm(&c, &cluster, "/t").await;
    let r = c
        .send(
            "PURGE",
            &cluster[1].url("/"),
            &[SITE, ("xkey-purge", "news")],
            None,
        )
        .await;
    assert_eq!(json(&r)["nodes"]["c"], true);
    all_serve_anew(&c, &cluster, "/t", &old).await;
    // a soft purge on c: no node serves the page as fresh any more (each serves it stale while
    // it is refreshed, or the refreshed page another node shared)
    let old = warm(&c, &cluster, "/s").await;
    let r = c
        .send(
            "PURGE",
            &cluster[2].url("/s"),
            &[SITE, ("Soft-Purge", "1")],
            None,
        )
        .await;
    assert_eq!(json(&r)["nodes"]["a"], true);
    for n in &cluster {
        let r = get(&c, n, "/s").await;
        assert!(r.is_stale_hit() || r.text() != old, "{}", r.cache_status());
    }
    // everything, through the admin API of a
    let old = warm(&c, &cluster, "/all").await;
    let r = c
        .send(
            "POST",
            &format!("http://{}/purge", cluster[0].admin),
            &[],
            Some(br#"{"all": true}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["nodes"]["b"], true);
    all_serve_anew(&c, &cluster, "/all", &old).await;
    assert!(
        cluster[1]
            .metric("lacquer_cluster_purges_applied_total")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn redis_down_costs_no_client_error_and_a_node_that_missed_purges_drops_its_memory() {
    let mut redis = Redis::start().await;
    let origin = Origin::start(tagged_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b"]).await;
    let c = Client::new();
    warm(&c, &cluster, "/q").await;
    redis.kill();
    // pages are served from memory and the app as before
    for n in &cluster {
        assert!(get(&c, n, "/q").await.is_fresh_hit());
        assert_eq!(get(&c, n, "/new").await.status, 200);
    }
    // a purge applies where it was accepted, and says it was not replicated
    let r = c.send("PURGE", &cluster[0].url("/q"), &[SITE], None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(json(&r)["replicated"], false);
    assert!(get(&c, &cluster[0], "/q").await.fetched());
    // b cannot know about that purge; when Redis is back (empty), it drops its memory
    let before = origin.hits("/q");
    redis.restart().await;

    let mut dropped = false;
    for _ in 0..100 {
        if get(&c, &cluster[1], "/q").await.fetched() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dropped,
        "b no longer serves the page purged while Redis was away"
    );
    assert!(origin.hits("/q") > before);
    assert!(
        cluster[1]
            .metric("lacquer_cluster_memory_drops_total")
            .await
            >= 1.0
    );
    // and purges replicate again (once b's heartbeat is back in the new Redis)
    warm(&c, &cluster, "/r").await;
    let mut replicated = false;
    for _ in 0..50 {
        let r = c.send("PURGE", &cluster[1].url("/r"), &[SITE], None).await;
        if r.status == 200 && json(&r)["nodes"]["a"] == true {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replicated, "purges reach the other node again");
    assert!(get(&c, &cluster[0], "/r").await.fetched());
}

#[tokio::test]
async fn a_node_whose_place_in_the_stream_is_trimmed_away_drops_its_memory() {
    let redis = Redis::start().await;
    let origin = Origin::start(tagged_origin()).await;
    let cluster = nodes(&redis, &origin, &["a", "b"]).await;
    let c = Client::new();
    warm(&c, &cluster, "/z").await;
    // b applies one purge from a: its place in the stream is that entry
    let r = c.send("PURGE", &cluster[0].url("/y"), &[SITE], None).await;
    assert_eq!(json(&r)["nodes"]["b"], true);
    // the stream loses it while b stays connected (as when b fell behind by the whole stream)
    let trimmed = std::process::Command::new("redis-cli")
        .args(["-p", &redis.addr.port().to_string()])
        .args(["XTRIM", "lacquer:purges", "MAXLEN", "0"])
        .output()
        .expect("redis-cli");
    assert!(trimmed.status.success());
    let mut dropped = false;
    for _ in 0..60 {
        // (not from its memory: from the app, or from the tier)
        let r = get(&c, &cluster[1], "/z").await;
        if r.fetched() || r.is_shared_hit() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "b cannot know what it missed: it drops its memory");
}

#[tokio::test]
async fn two_nodes_with_one_name_are_told() {
    let redis = Redis::start().await;
    let origin = Origin::start(tagged_origin()).await;
    let extra = format!("cluster:\n  redis: \"{}\"\n  node: \"dup\"\n", redis.url());
    let a = Proxy::start(&[origin.addr], &extra).await;
    let b = Proxy::start(&[origin.addr], &extra).await;
    let warned = crate::support::eventually(Duration::from_secs(5), || {
        a.log().contains("node names must be unique")
            || b.log().contains("node names must be unique")
    })
    .await;
    assert!(warned, "a log says two nodes share a name");
}
