//! lacquer's in-memory `pingora_cache::Storage`, on a moka cache bounded in bytes.
//!
//! - One moka entry per stored variant, keyed by the variant's combined hash (primary key plus
//!   Vary variance). The value holds the serialized `CacheMeta`, the body as one `Bytes` (hits
//!   share it, never copy it) and the URL, which purge by prefix needs.
//! - The weigher counts key, URL, metadata, body and a fixed per-entry overhead, so
//!   `cache.max_size` bounds what the cache really holds. moka's TinyLFU admission makes the
//!   cache scan resistant: a scan of cold URLs cannot flush the hot set.
//! - Each entry expires from memory when it is past its freshness, its stale windows and (if it
//!   has validators) `cache.keep`.
//! - Writes compare before they set: a fill only replaces an entry if it started after the fill
//!   that wrote the stored one, so a slow, older fetch never overwrites a newer object.
//!
//! Not here: what may be stored (`freshness.rs`) or the HTTP state machine (pingora-cache).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;
use pingora_cache::key::{CacheHashKey, CompactCacheKey};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};

/// Bytes charged per entry beyond its key, URL, metadata and body: the moka node, the `Arc`'d
/// entry and its vectors' headers, measured as the order of magnitude of what they allocate.
pub const ENTRY_OVERHEAD: u32 = 256;

/// A stored variant.
pub struct StoredObject {
    /// `CacheMeta::serialize()`: internal metadata and the response header.
    meta: (Vec<u8>, Vec<u8>),
    /// The whole body.
    body: Bytes,
    /// The primary key text (`http://host/path?query`).
    url: Box<str>,
    /// Order of the fill that wrote it: a later fill wins, an earlier one never overwrites.
    fill_seq: u64,
    /// When moka may drop it.
    drop_at: Instant,
}

impl StoredObject {
    /// What this object costs the budget.
    fn weight(&self) -> u32 {
        let bytes = 16
            + self.url.len()
            + self.meta.0.len()
            + self.meta.1.len()
            + self.body.len()
            + ENTRY_OVERHEAD as usize;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// The URL it was stored under.
    pub fn url(&self) -> &str {
        &self.url
    }
}

struct DropAtExpiry;

impl Expiry<u128, Arc<StoredObject>> for DropAtExpiry {
    fn expire_after_create(
        &self,
        _key: &u128,
        value: &Arc<StoredObject>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.drop_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &u128,
        value: &Arc<StoredObject>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.drop_at.saturating_duration_since(updated_at))
    }
}

/// The moka-backed storage. Created once per process and leaked: pingora wants `&'static`.
pub struct MemoryStorage {
    objects: Cache<u128, Arc<StoredObject>>,
    max_object_size: usize,
    keep: Duration,
    next_fill: AtomicU64,
}

impl MemoryStorage {
    /// A storage holding at most `max_size` bytes (as weighed), objects of at most
    /// `max_object_size` bytes, keeping expired objects with validators for `keep`.
    pub fn new(max_size: u64, max_object_size: u64, keep: Duration) -> MemoryStorage {
        let objects = Cache::builder()
            .max_capacity(max_size)
            .weigher(|_k: &u128, v: &Arc<StoredObject>| v.weight())
            .expire_after(DropAtExpiry)
            .build();
        MemoryStorage {
            objects,
            max_object_size: usize::try_from(max_object_size).unwrap_or(usize::MAX),
            keep,
            next_fill: AtomicU64::new(1),
        }
    }

    /// Number of stored variants (eventually consistent).
    pub fn object_count(&self) -> u64 {
        self.objects.entry_count()
    }

    /// Bytes charged to the budget (eventually consistent).
    pub fn weighted_size(&self) -> u64 {
        self.objects.weighted_size()
    }

    /// Apply pending evictions and expirations now (tests and metrics).
    pub async fn run_pending_tasks(&self) {
        self.objects.run_pending_tasks().await;
    }

    /// When an object with this metadata can be dropped from memory.
    fn drop_at(&self, meta: &CacheMeta) -> Instant {
        let now_sys = SystemTime::now();
        let fresh_left = meta
            .fresh_until()
            .duration_since(now_sys)
            .unwrap_or(Duration::ZERO);
        let stale = Duration::from_secs(u64::from(
            meta.stale_while_revalidate_sec()
                .max(meta.stale_if_error_sec()),
        ));
        let headers = meta.headers();
        let has_validator = headers.contains_key(http::header::ETAG)
            || headers.contains_key(http::header::LAST_MODIFIED);
        let keep = if has_validator {
            self.keep
        } else {
            Duration::ZERO
        };
        // cap at ten years: moka's clock must not overflow
        let total = fresh_left
            .saturating_add(stale)
            .saturating_add(keep)
            .min(Duration::from_secs(10 * 365 * 86_400));
        Instant::now() + total
    }

    /// A copy of `object` with new metadata, sharing its body.
    fn with_meta(&self, object: &StoredObject, meta: &CacheMeta) -> Result<Arc<StoredObject>> {
        Ok(Arc::new(StoredObject {
            meta: meta.serialize()?,
            body: object.body.clone(),
            url: object.url.clone(),
            fill_seq: object.fill_seq,
            drop_at: self.drop_at(meta),
        }))
    }

    fn hash_of(key: &impl CacheHashKey) -> u128 {
        u128::from_be_bytes(key.combined_bin())
    }
}

/// Reads one stored body, whole or a range of it.
struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done || self.start >= self.end {
            self.done = true;
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!(
                    "seek start {start} beyond body of {} bytes",
                    self.body.len()
                ),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Collects one fill's body and stores it at `finish`.
struct Fill {
    storage: &'static MemoryStorage,
    hash: u128,
    url: Box<str>,
    meta: (Vec<u8>, Vec<u8>),
    drop_at: Instant,
    fill_seq: u64,
    chunks: Vec<Bytes>,
    size: usize,
    overflow: bool,
    eof: bool,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if self.overflow {
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        self.size += data.len();
        if self.size > self.storage.max_object_size {
            // stop buffering at once: the response keeps streaming to the client uncached
            self.overflow = true;
            self.chunks = Vec::new();
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        if !data.is_empty() {
            self.chunks.push(data);
        }
        self.eof |= eof;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        if self.overflow {
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        // one exact-size copy: the stored body owns no slack from read buffers
        let mut body = BytesMut::with_capacity(self.size);
        for c in &self.chunks {
            body.extend_from_slice(c);
        }
        let object = Arc::new(StoredObject {
            meta: self.meta,
            body: body.freeze(),
            url: self.url,
            fill_seq: self.fill_seq,
            drop_at: self.drop_at,
        });
        let weight = object.weight() as usize;
        let seq = self.fill_seq;
        self.storage
            .objects
            .entry(self.hash)
            .and_compute_with(|existing| {
                let op = match existing {
                    // compare before set: an older fill never replaces a newer object
                    Some(e) if e.value().fill_seq > seq => Op::Nop,
                    _ => Op::Put(object),
                };
                std::future::ready(op)
            })
            .await;
        Ok(MissFinishType::Created(weight))
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(object) = self.objects.get(&Self::hash_of(key)).await else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&object.meta.0, &object.meta.1)?;
        let hit = Hit {
            body: object.body.clone(),
            start: 0,
            end: object.body.len(),
            done: false,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let url = key.primary_key_str().unwrap_or_default().into();
        Ok(Box::new(Fill {
            storage: self,
            hash: Self::hash_of(key),
            url,
            meta: meta.serialize()?,
            drop_at: self.drop_at(meta),
            fill_seq: self.next_fill.fetch_add(1, Ordering::Relaxed),
            chunks: Vec::new(),
            size: 0,
            overflow: false,
            eof: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = compact_hash(target.key());
        match self.objects.remove(&hash).await {
            Some(_) => Ok(PurgeOutcome::Purged(None)),
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = compact_hash(target.key());
        let Some(object) = self.objects.get(&hash).await else {
            return Ok(PurgeOutcome::NotFound);
        };
        let mut meta = CacheMeta::deserialize(&object.meta.0, &object.meta.1)?;
        meta.expire_at(SystemTime::now() - Duration::from_secs(1));
        let replaced = self.with_meta(&object, &meta)?;
        self.objects.insert(hash, replaced).await;
        Ok(PurgeOutcome::Expired)
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = Self::hash_of(key);
        let Some(object) = self.objects.get(&hash).await else {
            return Ok(false);
        };
        let replaced = self.with_meta(&object, meta)?;
        self.objects.insert(hash, replaced).await;
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

fn compact_hash(key: &CompactCacheKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;

    fn storage(max: u64) -> &'static MemoryStorage {
        Box::leak(Box::new(MemoryStorage::new(max, 1 << 20, Duration::ZERO)))
    }

    fn meta() -> CacheMeta {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
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
        let span = Span::inactive().handle();
        for i in 0..200 {
            let key = CacheKey::new(format!("http://h/{i}"), "");
            let mut fill = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
            fill.write_body(Bytes::from(vec![1u8; 16 << 10]), true)
                .await
                .unwrap();
            fill.finish().await.unwrap();
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
        let mut fill = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
        fill.write_body(Bytes::from_static(b"0123"), false)
            .await
            .unwrap();
        fill.write_body(Bytes::from_static(b"456789"), true)
            .await
            .unwrap();
        fill.finish().await.unwrap();
        let (_, mut hit) = s.lookup(&key, &span).await.unwrap().unwrap();
        hit.seek(3, Some(6)).unwrap();
        assert_eq!(
            hit.read_body().await.unwrap().unwrap(),
            Bytes::from_static(b"345")
        );
        assert!(hit.read_body().await.unwrap().is_none());
        assert!(hit.seek(10, None).is_err());
    }
}
