//! Unit tests of the memory storage: compare before set, purges, soft purges, ranges, the
//! budget, revalidation.

use super::*;
use bytes::Bytes;
use pingora_cache::trace::Span;
use pingora_http::ResponseHeader;

fn storage(max: u64) -> &'static MemoryStorage {
    Box::leak(Box::new(MemoryStorage::new(StorageSettings {
        max_size: max,
        max_object_size: 1 << 20,
        keep: Duration::ZERO,
        tag_headers: vec!["xkey".into()],
        soft_grace: Duration::from_secs(60),
        purge_horizon: Duration::from_secs(600),
    })))
}

fn meta() -> CacheMeta {
    let now = SystemTime::now();
    let header = ResponseHeader::build(200, None).unwrap();
    CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
}

/// A purge that lands after a fill's first verdict but before the object is indexed is
/// seen only by the second verdict: without it, the purged response would stay served.
#[tokio::test]
async fn a_purge_between_the_two_verdicts_of_a_fill_still_hides_it() {
    for soft in [false, true] {
        let s = storage(1 << 20);
        let span = Span::inactive().handle();
        let mut key = CacheKey::new(format!("http://h/window-{soft}"), "");
        key.extensions.insert(FetchStamp(s.stamp()));
        let primary = UrlHash::of(&key);
        let mut fill = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
        fill.write_body(Bytes::from_static(b"old"), true)
            .await
            .unwrap();
        *s.between_verdicts.lock().unwrap() = Some(Box::new(move || {
            let seq = s.stamp();
            s.log.record(seq, PurgeScope::Url(primary), soft);
        }));
        fill.finish().await.unwrap();
        match s.lookup(&key, &span).await.unwrap() {
            None => assert!(!soft, "a soft purge keeps the object, stale"),
            Some((meta, _)) => {
                assert!(soft, "a hard purge hides the object");
                assert!(!meta.is_fresh(SystemTime::now()), "soft-purged: stale");
            }
        }
    }
}

/// Fill `key` with `chunks` and finish the fill.
async fn store(s: &'static MemoryStorage, key: &CacheKey, chunks: &[&[u8]]) {
    let span = Span::inactive().handle();
    let mut fill = s.get_miss_handler(key, &meta(), &span).await.unwrap();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        fill.write_body(Bytes::copy_from_slice(c), last)
            .await
            .unwrap();
    }
    fill.finish().await.unwrap();
}

async fn body_of(s: &'static MemoryStorage, key: &CacheKey) -> Option<Vec<u8>> {
    let span = Span::inactive().handle();
    let (_, mut hit) = s.lookup(key, &span).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(b) = hit.read_body().await.unwrap() {
        out.extend_from_slice(&b);
    }
    Some(out)
}

#[tokio::test]
async fn an_older_fill_never_overwrites_a_newer_object() {
    let s = storage(1 << 20);
    let key = CacheKey::new("http://h/race", "");
    let span = Span::inactive().handle();
    let mut older = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
    let mut newer = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
    newer
        .write_body(Bytes::from_static(b"new"), true)
        .await
        .unwrap();
    newer.finish().await.unwrap();
    older
        .write_body(Bytes::from_static(b"old"), true)
        .await
        .unwrap();
    older.finish().await.unwrap();
    assert_eq!(body_of(s, &key).await.as_deref(), Some(&b"new"[..]));
}

#[tokio::test]
async fn an_oversized_fill_is_not_stored() {
    let s = storage(4 << 20);
    let key = CacheKey::new("http://h/big", "");
    let span = Span::inactive().handle();
    let mut fill = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
    assert!(fill
        .write_body(Bytes::from(vec![0u8; 2 << 20]), true)
        .await
        .is_err());
    assert!(fill.finish().await.is_err());
    assert!(body_of(s, &key).await.is_none());
}

#[tokio::test]
async fn the_weighted_size_stays_within_the_budget() {
    let s = storage(1 << 20);
    let body = vec![1u8; 16 << 10];
    for i in 0..200 {
        store(s, &CacheKey::new(format!("http://h/{i}"), ""), &[&body]).await;
    }
    s.run_pending_tasks().await;
    assert!(s.weighted_size() <= 1 << 20, "{}", s.weighted_size());
    assert!(s.object_count() < 64);
}

#[tokio::test]
async fn a_hit_can_seek_to_a_range() {
    let s = storage(1 << 20);
    let key = CacheKey::new("http://h/range", "");
    let span = Span::inactive().handle();
    store(s, &key, &[b"0123", b"456789"]).await;
    let (_, mut hit) = s.lookup(&key, &span).await.unwrap().unwrap();
    hit.seek(3, Some(6)).unwrap();
    assert_eq!(
        hit.read_body().await.unwrap().unwrap(),
        Bytes::from_static(b"345")
    );
    assert!(hit.read_body().await.unwrap().is_none());
    assert!(hit.seek(10, None).is_err());
}

#[tokio::test]
async fn a_soft_purge_serves_stale_within_the_grace_and_keeps_the_age() {
    let s = storage(1 << 20);
    let key = CacheKey::new("http://h/soft", "");
    let span = Span::inactive().handle();
    store(s, &key, &[b"x"]).await;
    let primary = UrlHash::of(&key);
    assert_eq!(s.purge_scope(&PurgeScope::Url(primary), true).await, 1);
    let (m, _) = s.lookup(&key, &span).await.unwrap().unwrap();
    let now = SystemTime::now();
    assert!(!m.is_fresh(now), "stale after a soft purge");
    assert!(
        m.serve_stale_while_revalidate(now),
        "served stale during the grace"
    );
    assert!(m.age() < Duration::from_secs(5), "the age did not jump");
    // a hard purge hides it at once
    assert_eq!(s.purge_scope(&PurgeScope::Url(primary), false).await, 1);
    assert!(s.lookup(&key, &span).await.unwrap().is_none());
    assert_eq!(s.purge_scope(&PurgeScope::Url(primary), false).await, 0);
}

#[tokio::test]
async fn a_fill_that_began_before_a_purge_is_not_stored() {
    let s = storage(1 << 20);
    let span = Span::inactive().handle();
    let mut key = CacheKey::new("http://h/late", "");
    key.extensions.insert(FetchStamp(s.stamp()));
    let mut fill = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
    s.purge_scope(&PurgeScope::Url(UrlHash::of(&key)), false)
        .await;
    fill.write_body(Bytes::from_static(b"old"), true)
        .await
        .unwrap();
    fill.finish().await.unwrap();
    assert!(s.lookup(&key, &span).await.unwrap().is_none());
}

fn meta_with(etag: &str, length: usize) -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.append_header("ETag", etag).unwrap();
    header
        .append_header("Content-Length", length.to_string())
        .unwrap();
    CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
}

/// A revalidation updates the header of the object it looked up, never another's: a 304 for
/// one version put on another version's body would serve the wrong length or content.
#[tokio::test]
async fn a_revalidated_header_never_lands_on_another_body() {
    let s = storage(1 << 20);
    let span = Span::inactive().handle();
    let key = CacheKey::new("http://h/reval", "");
    let mut fill = s
        .get_miss_handler(&key, &meta_with("\"v2\"", 5), &span)
        .await
        .unwrap();
    fill.write_body(Bytes::from_static(b"newer"), true)
        .await
        .unwrap();
    fill.finish().await.unwrap();
    // the revalidation of "v1" (2 bytes) comes back after "v2" replaced it
    assert!(!s
        .update_meta(&key, &meta_with("\"v1\"", 2), &span)
        .await
        .unwrap());
    assert!(!s
        .update_meta(&key, &meta_with("\"v2\"", 2), &span)
        .await
        .unwrap());
    let (m, _) = s.lookup(&key, &span).await.unwrap().unwrap();
    assert_eq!(m.headers().get("etag").unwrap(), "\"v2\"");
    assert!(s
        .update_meta(&key, &meta_with("\"v2\"", 5), &span)
        .await
        .unwrap());
}
