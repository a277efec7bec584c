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
    let proxy = Proxy::start(
        &[origin.addr],
        "cache:\n  max_size: 16MiB\n  max_object_size: 1MiB\n",
    )
    .await;
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
    assert!(
        bytes <= 16 << 20,
        "weighted size {bytes} over the 16 MiB budget"
    );
    assert!(
        objects < 300,
        "{objects} objects of 64 KiB cannot fit in 16 MiB"
    );
    // 64 MiB went through; the process keeps the budget plus a bounded overhead
    assert!(
        growth < 40 << 20,
        "RSS grew by {growth} bytes for a 16 MiB budget"
    );
}

#[tokio::test]
async fn a_scan_of_cold_urls_does_not_flush_the_hot_set() {
    let origin =
        Origin::start(|_| Reply::ok(vec![b'h'; 16 << 10]).header("Cache-Control", "max-age=600"))
            .await;
    let proxy = Proxy::start(
        &[origin.addr],
        "cache:\n  max_size: 4MiB\n  max_object_size: 1MiB\n",
    )
    .await;
    let c = Client::new();
    // a full cache, as in production
    for i in 0..400 {
        c.get(&proxy.url(&format!("/fill/{i}"))).await;
    }
    // a scan of 4,000 cold pages (~66 MiB, sixteen times the budget), each read once, while
    // 40 hot pages keep being read: every tenth request. Between two reads of one hot page
    // come 400 cold pages, more than the cache holds, so an LRU cache would never hit them.
    let mut hot_reads_late = 0;
    let mut hot_hits_late = 0;
    for i in 0..4000 {
        c.get(&proxy.url(&format!("/cold/{i}"))).await;
        if i % 10 == 0 {
            let r = c.get(&proxy.url(&format!("/hot/{}", (i / 10) % 40))).await;
            if i >= 2000 {
                hot_reads_late += 1;
                if r.is_fresh_hit() {
                    hot_hits_late += 1;
                }
            }
        }
    }
    eprintln!("hot hits in the second half of the scan: {hot_hits_late}/{hot_reads_late}");
    assert!(
        hot_hits_late * 10 >= hot_reads_late * 7,
        "only {hot_hits_late} of {hot_reads_late} hot reads hit during the scan"
    );
}

/// Each object is charged its body, key, URL, metadata and a fixed 800-byte overhead: one
/// object of a 1,000-byte body weighs at least 1,800 bytes and not much more, and a 1 MiB
/// budget holds as many such objects as that weight allows: no more (the overhead is
/// charged) and not far fewer (nothing is charged several times over).
#[tokio::test]
async fn the_budget_charges_each_object_its_size_plus_the_fixed_overhead() {
    const BODY: usize = 1000;
    const OVERHEAD: u64 = 800;
    const BUDGET: u64 = 1 << 20;
    let origin =
        Origin::start(|_| Reply::ok(vec![b'o'; BODY]).header("Cache-Control", "max-age=600")).await;
    let proxy = Proxy::start(
        &[origin.addr],
        "cache:\n  max_size: 1MiB\n  max_object_size: 64KiB\n",
    )
    .await;
    let c = Client::new();
    c.get(&proxy.url("/one/0")).await;
    let (objects, one) = stats(&c, &proxy).await;
    assert_eq!(objects, 1);
    // the URL (~30 bytes), the key and the stored header (a few short fields) stay well
    // under 1 KiB: anything far above is a multiplied charge
    let floor = BODY as u64 + OVERHEAD;
    assert!(
        (floor..floor + 1000).contains(&one),
        "one object of a {BODY}-byte body weighs {one} bytes"
    );
    // three times what fits: the cache fills up to its budget, then TinyLFU admits or
    // rejects the rest, and the count stays what the budget holds
    let n = 3 * BUDGET / floor;
    for i in 1..n {
        let url = proxy.url(&format!("/one/{i}"));
        let r = c.get(&url).await;
        assert_eq!(r.body.len(), BODY);
    }
    assert_eq!(origin.total() as u64, n);
    let (mut objects, mut bytes) = stats(&c, &proxy).await;
    for _ in 0..50 {
        if bytes <= BUDGET {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        (objects, bytes) = stats(&c, &proxy).await;
    }
    eprintln!("one={one} objects={objects} bytes={bytes}");
    assert!(bytes <= BUDGET, "weighted size {bytes} over the budget");
    assert!(
        objects <= BUDGET / floor,
        "{objects} objects of at least {floor} bytes in a {BUDGET}-byte budget"
    );
    assert!(
        objects >= BUDGET / one * 3 / 4,
        "only {objects} objects of {one} bytes in a {BUDGET}-byte budget"
    );
    assert!(
        bytes >= objects * floor,
        "{bytes} bytes charged for {objects} objects of at least {floor}"
    );
}
