//! The byte budget holds whatever clients send, and scans do not flush the hot set.

use crate::support::{Client, Origin, Proxy, Reply};

async fn stats(c: &Client, proxy: &Proxy) -> (u64, u64) {
    let text = c.get(&format!("http://{}/stats", proxy.admin)).await.text();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    (field("objects "), field("bytes "))
}

#[tokio::test]
async fn a_16mib_budget_filled_with_64mib_stays_within_budget() {
    let origin = Origin::start(|s| {
        // 64 KiB, distinct per URL
        let mut body = vec![b'.'; 64 << 10];
        let tag = s.target.as_bytes();
        body[..tag.len()].copy_from_slice(tag);
        Reply::ok(body).header("Cache-Control", "max-age=600")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "cache:\n  max_size: 16MiB\n  max_object_size: 1MiB\n").await;
    let c = Client::new();
    // warm the process up so the baseline includes pingora's own buffers
    for i in 0..50 {
        c.get(&proxy.url(&format!("/warm/{i}"))).await;
    }
    let baseline = proxy.rss_bytes();
    for i in 0..1024 {
        let r = c.get(&proxy.url(&format!("/obj/{i}"))).await;
        assert_eq!(r.body.len(), 64 << 10);
    }
    let (objects, bytes) = stats(&c, &proxy).await;
    let rss = proxy.rss_bytes();
    let growth = rss.saturating_sub(baseline);
    eprintln!("objects={objects} bytes={bytes} rss={rss} baseline={baseline} growth={growth}");
    assert!(bytes <= 16 << 20, "weighted size {bytes} over the 16 MiB budget");
    assert!(objects < 300, "{objects} objects of 64 KiB cannot fit in 16 MiB");
    // 64 MiB went through; the process keeps the budget plus a bounded overhead
    assert!(growth < 40 << 20, "RSS grew by {growth} bytes for a 16 MiB budget");
}

#[tokio::test]
async fn a_scan_of_cold_urls_does_not_flush_the_hot_set() {
    let origin = Origin::start(|_| Reply::ok(vec![b'h'; 16 << 10]).header("Cache-Control", "max-age=600")).await;
    let proxy = Proxy::start(&[origin.addr], "cache:\n  max_size: 4MiB\n  max_object_size: 1MiB\n").await;
    let c = Client::new();
    // a hot set of 40 pages (~660 KiB), each read often
    for _ in 0..5 {
        for i in 0..40 {
            c.get(&proxy.url(&format!("/hot/{i}"))).await;
        }
    }
    // a scan of 2,000 cold pages (~33 MiB, eight times the budget), each read once
    for i in 0..2000 {
        c.get(&proxy.url(&format!("/cold/{i}"))).await;
    }
    let hot_before: usize = (0..40).map(|i| origin.hits(&format!("/hot/{i}"))).sum();
    let mut hits = 0;
    for i in 0..40 {
        if c.get(&proxy.url(&format!("/hot/{i}"))).await.cache_status().contains("hit") {
            hits += 1;
        }
    }
    let hot_after: usize = (0..40).map(|i| origin.hits(&format!("/hot/{i}"))).sum();
    eprintln!("hot hits after scan: {hits}/40, origin fetches {}", hot_after - hot_before);
    assert!(hits >= 36, "only {hits} of 40 hot pages survived the scan");
}
