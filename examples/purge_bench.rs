//! Purge benchmark on lacquer's storage, in process: fills N small objects (100-byte bodies,
//! each with `--tags` shared category tags and one unique tag; the first 100,000 also carry
//! one of ten group tags, `group0`..`group9`, 10,000 objects each), then measures
//! - a tag purge of 10,000 objects (`group0`..`group4`, median of 5),
//! - a URL purge (one object), averaged, at this cache size,
//! - lookups per second of unpurged objects, in five alternating pairs of 600 ms windows:
//!   one without purges or removals under way, one that starts with a tag purge of 10,000
//!   objects (`group5`..`group9`, with the background removal of what it purged); medians,
//! - resident memory per object,
//! - a Magento-style tag pattern naming 10 tags of about 1,000 objects each (read as exact
//!   tags by `purge::wire`), a URL-regex ban (time to answer, lookups per second while it is
//!   swept, and how long the sweep takes), and the memory of 1,000 bans.
//!
//! `cargo run --release --example purge_bench -- --objects 1000000 --tags 2`
//! (`bench/purge.sh` runs it with and without tags and derives the tag index cost.)

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lacquer::cache::ban::{self, Ban};
use lacquer::cache::key::{RequestKey, UrlHash};
use lacquer::cache::storage::{MemoryStorage, PurgeScope, StorageSettings};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;

const GROUP: usize = 10_000;
const GROUPS: usize = 10;
const TAGGED: usize = GROUP * GROUPS;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn key(i: usize) -> CacheKey {
    CacheKey::new(format!("http://bench.example/obj/{i}"), "")
}

fn meta(i: usize, tags: usize) -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, Some(4)).expect("header");
    header
        .append_header("Content-Type", "text/html")
        .expect("header");
    if tags > 0 {
        let mut t = Vec::new();
        if i < TAGGED {
            t.push(format!("group{}", i / GROUP));
        }
        for k in 0..tags {
            t.push(format!("cat{k}-{}", i % 1000));
        }
        t.push(format!("item-{i}"));
        header.append_header("xkey", t.join(" ")).expect("header");
    }
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

async fn fill(storage: &'static MemoryStorage, range: std::ops::Range<usize>, tags: usize) {
    let span = Span::inactive().handle();
    let body = Bytes::from(vec![b'x'; 100]);
    for i in range {
        let k = key(i);
        let Ok(mut handler) = storage.get_miss_handler(&k, &meta(i, tags), &span).await else {
            continue;
        };
        let _ = handler.write_body(body.clone(), true).await;
        let _ = handler.finish().await;
    }
}

async fn lookups_per_sec(storage: &'static MemoryStorage, objects: usize, window: Duration) -> f64 {
    let span = Span::inactive().handle();
    let started = Instant::now();
    let mut n = 0u64;
    let mut i = TAGGED;
    while started.elapsed() < window {
        i = (i * 7919 + 13) % objects.max(TAGGED + 1);
        if i < TAGGED {
            continue;
        }
        if let Ok(Some((_, mut hit))) = storage.lookup(&key(i), &span).await {
            let _ = hit.read_body().await;
        }
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Wait until the reaper has removed every purged object (the count stops falling).
async fn settle(storage: &'static MemoryStorage) {
    let mut last = u64::MAX;
    loop {
        storage.run_pending_tasks().await;
        let now = storage.object_count();
        if now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut objects = 1_000_000usize;
    let mut tags = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--objects" => objects = args.next().and_then(|v| v.parse().ok()).unwrap_or(objects),
            "--tags" => tags = args.next().and_then(|v| v.parse().ok()).unwrap_or(tags),
            _ => {}
        }
    }
    let storage: &'static MemoryStorage =
        Box::leak(Box::new(MemoryStorage::new(StorageSettings {
            max_size: 16 << 30,
            max_object_size: 1 << 20,
            keep: Duration::ZERO,
            tag_headers: vec!["xkey".into()],
            soft_grace: Duration::from_secs(60),
            purge_horizon: Duration::from_secs(600),
        })));
    // first, while the heap holds nothing freed that the bans could reuse
    ban_memory();
    let rss_before = rss_bytes();
    let started = Instant::now();
    fill(storage, 0..objects, tags).await;
    storage.run_pending_tasks().await;
    let rss_after = rss_bytes();
    println!(
        "filled {} objects with {} tags each in {:.1}s; weighted {} MiB; RSS +{} MiB = {} bytes/object",
        storage.object_count(),
        if tags > 0 { tags + 1 } else { 0 },
        started.elapsed().as_secs_f64(),
        storage.weighted_size() >> 20,
        (rss_after - rss_before) >> 20,
        (rss_after - rss_before) / objects as u64
    );

    if tags > 0 && objects > TAGGED {
        let mut runs = Vec::new();
        for g in 0..5 {
            let t = Instant::now();
            let n = storage
                .purge_scope(&PurgeScope::Tag(format!("group{g}")), false)
                .await;
            runs.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(n, GROUP, "a tag purge removes exactly the tagged objects");
        }
        println!(
            "tag purge of {GROUP} objects among {objects}: median {:.2} ms (runs: {})",
            median(runs.clone()),
            runs.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // URL purges of single objects
    let span = Span::inactive().handle();
    let sample = 2000.min(objects / 2);
    let t = Instant::now();
    let mut removed = 0;
    for i in 0..sample {
        let k = key(objects - 1 - i);
        let primary = UrlHash::of(&k);
        removed += storage.purge_scope(&PurgeScope::Url(primary), false).await;
    }
    println!(
        "URL purge: {:.2} us per purge ({} purged) with {} objects cached",
        t.elapsed().as_secs_f64() * 1e6 / sample as f64,
        removed,
        objects
    );
    let _ = storage.lookup(&key(0), &span).await;

    if tags > 0 && objects > TAGGED {
        let window = Duration::from_millis(600);
        let (mut quiet, mut busy) = (Vec::new(), Vec::new());
        for g in 5..GROUPS {
            settle(storage).await;
            quiet.push(lookups_per_sec(storage, objects - sample, window).await);
            let purger = tokio::spawn(async move {
                storage
                    .purge_scope(&PurgeScope::Tag(format!("group{g}")), false)
                    .await
            });
            busy.push(lookups_per_sec(storage, objects - sample, window).await);
            let _ = purger.await;
        }
        let (q, b) = (median(quiet), median(busy));
        println!(
            "concurrent lookups (median of 5 windows): {q:.0}/s without purges, {b:.0}/s in windows starting with a 10,000-object tag purge = {:.1}% of quiet",
            b / q * 100.0
        );
    }

    if tags > 0 && objects > TAGGED {
        magento_pattern(storage).await;
        url_ban(storage, objects - sample).await;
    }
}

/// A Magento purge of ten category tags, as its client writes the pattern.
async fn magento_pattern(storage: &'static MemoryStorage) {
    let pattern: Vec<String> = (1..=10).map(|k| format!("((^|,)cat0-{k}(,|$))")).collect();
    let mut req = pingora_http::RequestHeader::build("PURGE", b"/", None).expect("request");
    req.insert_header("Host", "127.0.0.1:6081").expect("header");
    req.insert_header("X-Magento-Tags-Pattern", pattern.join("|"))
        .expect("header");
    let key = RequestKey::from_request("http", &req, &[]).expect("key");
    let t = Instant::now();
    let order = lacquer::purge::wire::parse(&req, &key).expect("a Magento pattern");
    let mut n = 0;
    for scope in &order.scopes {
        n += storage.purge_scope(scope, false).await;
    }
    println!(
        "Magento tag pattern (10 tags) purging {n} objects: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}

/// A URL-regex ban over a tenth of the cache: time to answer, lookups while it is swept.
async fn url_ban(storage: &'static MemoryStorage, objects: usize) {
    let window = Duration::from_millis(300);
    settle(storage).await;
    let quiet = lookups_per_sec(storage, objects, window).await;
    let t = Instant::now();
    storage.ban(
        Ban {
            host: None,
            url: Some(ban::pattern("^/obj/[0-9]*3$").expect("pattern")),
            content_type: None,
            headers: Vec::new(),
            tags: None,
        },
        false,
    );
    let answer = t.elapsed();
    let busy = lookups_per_sec(storage, objects, window).await;
    let overlapped = storage.outstanding_bans() > 0;
    while storage.outstanding_bans() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "URL-regex ban over {objects} objects: answered in {:.3} ms; swept in {:.2} s; lookups {quiet:.0}/s quiet, {busy:.0}/s while sweeping{} = {:.1}%",
        answer.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64(),
        if overlapped { "" } else { " (the sweep ended within the window)" },
        busy / quiet * 100.0
    );
}

/// What 1,000 bans of the usual shape (a URL pattern and a host) hold in memory.
fn ban_memory() {
    let before = rss_bytes();
    let bans: Vec<Ban> = (0..1000)
        .map(|i| Ban {
            host: Some(ban::pattern(&format!("^site{i}\\.example$")).expect("pattern")),
            url: Some(ban::pattern(&format!("^/news/{i}/.*")).expect("pattern")),
            content_type: None,
            headers: Vec::new(),
            tags: None,
        })
        .collect();
    let after = rss_bytes();
    println!(
        "1,000 bans: {} KiB resident ({} bytes each)",
        (after.saturating_sub(before)) >> 10,
        after.saturating_sub(before) / bans.len() as u64
    );
}
