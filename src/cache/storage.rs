//! lacquer's in-memory `pingora_cache::Storage`, on a moka cache bounded in bytes, and the
//! purge operations on it.
//!
//! - One moka entry per stored variant, keyed by the variant's combined hash (primary key plus
//!   Vary variance). The value holds the metadata (`meta_codec.rs`: plain fields and compact
//!   header lines, no per-hit decompression), the body as one `Bytes` (hits share it, never
//!   copy it), the URL and the tags.
//! - The weigher counts key, URL, metadata, body, tags, index entries and a fixed per-entry
//!   overhead, so `cache.max_size` bounds what the cache really holds. moka's TinyLFU admission
//!   makes the cache scan resistant: a scan of cold URLs cannot flush the hot set.
//! - Each entry expires from memory when it is past its freshness, its stale windows and (if it
//!   has validators) `cache.keep`. moka's eviction listener keeps the indexes (`index.rs`) in
//!   step with every removal, whatever its cause.
//! - A purge marks its objects at once through flags on the objects (dead, or soft-purged at a
//!   time that every read applies to the metadata), found through the indexes without a cache
//!   lookup; a paced reaper takes the dead ones out of moka in the background. So a purge of
//!   10,000 tagged objects takes about a millisecond and hits never wait on it.
//! - Writes compare before they set. Every fetch is stamped with a sequence number when its
//!   request is keyed ([`FetchStamp`]); every purge takes one too and is logged
//!   (`purge_log.rs`). A fill stores nothing that a newer purge covers, and never replaces an
//!   object written by a newer fill.
//!
//! Parts: `storage/object.rs` (a stored variant, its weight and expiry), `storage/hit.rs`,
//! `storage/fill.rs` (compare before set), `storage/purge.rs` (purges and the reaper); here
//! the storage itself and pingora's `Storage` trait.
//!
//! Not here: what may be stored (`freshness.rs`), who may purge (`purge.rs`), or the HTTP state
//! machine (pingora-cache).

mod bans;
mod fill;
mod fresh;
mod hit;
mod object;
mod purge;
mod shared;

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use pingora_cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::Result;

use super::freshness::stale_forbidden;
use super::index::Index;
use super::key::{UrlHash, VariantHash};
use super::meta_codec::StoredMeta;
use super::purge_log::{PurgeLog, Verdict};
use super::tags::response_tags;
use crate::metrics::metrics;
use fill::Fill;
use hit::Hit;
use object::{unix_millis, DropAt, DropAtExpiry, HeadVerdict};
pub use object::{StoredObject, ENTRY_OVERHEAD};
pub use purge::PurgeScope;

/// The sequence number a request took when it was keyed; its fill is "older" than any purge or
/// fetch that took a larger one. Travels in `CacheKey::extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStamp(pub u64);

/// How the storage is set up.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Byte budget.
    pub max_size: u64,
    /// Largest object stored.
    pub max_object_size: u64,
    /// How long expired objects with validators are kept.
    pub keep: Duration,
    /// Response headers carrying tags, lower-cased.
    pub tag_headers: Vec<String>,
    /// How long a soft-purged object may be served stale while it is refreshed.
    pub soft_grace: Duration,
    /// How long purges are remembered for in-flight fills (the longest a fetch may take).
    pub purge_horizon: Duration,
}

/// The moka-backed storage. Created once per process and leaked: pingora wants `&'static`.
pub struct MemoryStorage {
    /// Keyed by BLAKE2b hashes, so a fast seeded hash is enough for its buckets.
    objects: Cache<VariantHash, Arc<StoredObject>, foldhash::fast::RandomState>,
    index: Arc<Index<StoredObject>>,
    log: PurgeLog,
    settings: StorageSettings,
    max_object_size: usize,
    /// Body bytes buffered by fills in flight, all together (bounded by `cache.max_size`).
    filling: AtomicU64,
    seq: AtomicU64,
    reaper: OnceLock<mpsc::Sender<(VariantHash, Arc<StoredObject>)>>,
    /// Bans not yet swept, checked at lookup.
    bans: bans::Bans,
    /// The shared tier, with `cluster` (issue 17): asked on a memory miss, written by fills.
    shared: OnceLock<shared::SharedLink>,
    /// Tests only: run between a fill's two purge-log verdicts (see `Fill::finish`).
    #[cfg(test)]
    between_verdicts: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl MemoryStorage {
    /// A storage set up by `settings`.
    pub fn new(settings: StorageSettings) -> MemoryStorage {
        let index: Arc<Index<StoredObject>> = Arc::default();
        let listener_index = index.clone();
        let objects = Cache::builder()
            .max_capacity(settings.max_size)
            .weigher(|_k: &VariantHash, v: &Arc<StoredObject>| v.weight())
            .expire_after(DropAtExpiry)
            .eviction_listener(move |k: Arc<VariantHash>, v: Arc<StoredObject>, cause| {
                // a replacement is re-indexed by whoever replaced it (see `Fill::finish`)
                let label = match cause {
                    RemovalCause::Replaced => return,
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit => "purged",
                };
                listener_index.unregister(v.primary, *k, &v, &v.tags);
                metrics().cache_evictions.with_label_values(&[label]).inc();
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        MemoryStorage {
            objects,
            index,
            log: PurgeLog::new(settings.purge_horizon, 100_000),
            max_object_size: usize::try_from(settings.max_object_size).unwrap_or(usize::MAX),
            filling: AtomicU64::new(0),
            settings,
            seq: AtomicU64::new(1),
            reaper: OnceLock::new(),
            bans: bans::Bans::default(),
            shared: OnceLock::new(),
            #[cfg(test)]
            between_verdicts: std::sync::Mutex::new(None),
        }
    }

    /// A new sequence number: stamps a fetch or a purge.
    pub fn stamp(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// How long purges are remembered for fills in flight (the longest a fetch may take).
    pub fn purge_horizon(&self) -> Duration {
        self.settings.purge_horizon
    }

    /// Number of stored variants (eventually consistent; purged ones until they are removed).
    pub fn object_count(&self) -> u64 {
        self.objects.entry_count()
    }

    /// Bytes charged to the budget (eventually consistent).
    pub fn weighted_size(&self) -> u64 {
        self.objects.weighted_size()
    }

    /// Number of distinct tags in the index.
    pub fn tag_count(&self) -> usize {
        self.index.tag_count()
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
        ))
        .max(self.settings.soft_grace);
        let headers = meta.headers();
        let has_validator = headers.contains_key(http::header::ETAG)
            || headers.contains_key(http::header::LAST_MODIFIED);
        let keep = if has_validator {
            self.settings.keep
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

    /// Apply a soft purge made at `at_ms` to `meta`: stale since then, keeping its age, and
    /// serveable stale for `purge.soft_grace` from then unless the response forbids serving
    /// it stale (must-revalidate, s-maxage, ...). The same on every read, so the window does
    /// not restart.
    fn apply_soft_purge(&self, meta: &mut CacheMeta, at_ms: u64) {
        let at = UNIX_EPOCH + Duration::from_millis(at_ms) - Duration::from_secs(1);
        if meta.fresh_until() <= at {
            // already stale when it was purged: nothing changes
            return;
        }
        let epoch = meta.epoch();
        let grace = u32::try_from(self.settings.soft_grace.as_secs()).unwrap_or(u32::MAX);
        let swr = if stale_forbidden(meta.response_header()) {
            0
        } else {
            meta.stale_while_revalidate_sec().max(grace)
        };
        let sie = meta.stale_if_error_sec();
        meta.update_freshness(at, swr, sie);
        // update_freshness restamps "updated"; the object's age must not restart
        meta.set_epoch_override(epoch);
    }

    /// The shared tier's copy of `key`, as a hit (see `storage/shared.rs`).
    async fn shared_hit(
        &'static self,
        link: &'static shared::SharedLink,
        key: &CacheKey,
        fresh_only: bool,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some((d, soft_ms)) = self.ask_shared(link, key, fresh_only).await else {
            return Ok(None);
        };
        let mut meta = d.meta.to_meta()?;
        if soft_ms != 0 {
            self.apply_soft_purge(&mut meta, soft_ms);
        }
        if fresh_only && !meta.is_fresh(SystemTime::now()) {
            return Ok(None);
        }
        let hit = Hit {
            body: d.body.clone(),
            start: 0,
            end: d.body.len(),
            done: false,
            shared: true,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    /// A copy of `object` with new metadata, sharing its body; neither dead nor soft-purged.
    fn with_meta(&self, object: &StoredObject, meta: &CacheMeta) -> Result<Arc<StoredObject>> {
        Ok(Arc::new(StoredObject {
            meta: StoredMeta::from_meta(meta),
            body: object.body.clone(),
            url: object.url.clone(),
            primary: object.primary,
            tags: object.tags.clone(),
            fill_seq: object.fill_seq,
            drop_at: DropAt::new(self.drop_at(meta)),
            dead: AtomicBool::new(false),
            soft_at: AtomicU64::new(0),
            head_verdict: HeadVerdict::default(),
        }))
    }

    /// Replace (`Some`) or remove (`None`) the entry at `hash` only while it still holds
    /// `current`: a fill stored since then is never touched. Whether it did.
    async fn swap_if_current(
        &self,
        hash: VariantHash,
        current: &Arc<StoredObject>,
        with: Option<Arc<StoredObject>>,
    ) -> bool {
        let result = self
            .objects
            .entry(hash)
            .and_compute_with(|existing| {
                let op = match (existing, with) {
                    (Some(e), Some(new)) if Arc::ptr_eq(e.value(), current) => Op::Put(new),
                    (Some(e), None) if Arc::ptr_eq(e.value(), current) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::ReplacedWith(_) | CompResult::Removed(_))
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = VariantHash::of(key);
        let object = self.objects.get(&hash).await;
        if let (Some(o), true) = (&object, self.bans.any()) {
            // a ban not yet swept covers what was stored before it
            self.banned_at_lookup(hash, o);
        }
        let Some(object) = object.filter(|o| !o.is_dead()) else {
            return match self.shared.get() {
                // boxed: a memory hit's future does not carry the shared tier's state
                Some(link) => Box::pin(self.shared_hit(link, key, false)).await,
                None => Ok(None),
            };
        };
        let mut meta = object.meta.to_meta()?;
        let soft_at = object.soft_at.load(Ordering::Acquire);
        if soft_at != 0 {
            self.apply_soft_purge(&mut meta, soft_at);
        }
        if let Some(link) = self.shared.get() {
            // another node may have refreshed it: a fresh shared copy beats a stale one here
            if !meta.is_fresh(SystemTime::now()) {
                if let Some(hit) = Box::pin(self.shared_hit(link, key, true)).await? {
                    return Ok(Some(hit));
                }
            }
        }
        let hit = Hit {
            body: object.body.clone(),
            start: 0,
            end: object.body.len(),
            done: false,
            shared: false,
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
        let fill_seq = key
            .extensions
            .get::<FetchStamp>()
            .map_or_else(|| self.stamp(), |s| s.0);
        let tags = response_tags(meta.response_header(), &self.settings.tag_headers);
        let primary = UrlHash::of(key);
        Ok(Box::new(Fill {
            ticket: self.ticket_for_fill(key, meta),
            soft_at: 0,
            copy: false,
            storage: self,
            hash: VariantHash::of(key),
            primary,
            url,
            tags: tags.into_boxed_slice(),
            meta: StoredMeta::from_meta(meta),
            drop_at: self.drop_at(meta),
            fill_seq,
            chunks: Vec::new(),
            size: 0,
            buffered: 0,
            overflow: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = VariantHash::of(target.key());
        match self.objects.remove(&hash).await {
            Some(o) if !o.is_dead() => Ok(PurgeOutcome::Purged(None)),
            _ => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = VariantHash::of(target.key());
        match self.objects.get(&hash).await {
            Some(o) if !o.is_dead() => {
                o.soft_at
                    .store(unix_millis(SystemTime::now()), Ordering::Release);
                Ok(PurgeOutcome::Expired)
            }
            _ => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = VariantHash::of(key);
        let Some(object) = self.objects.get(&hash).await else {
            return Ok(false);
        };
        if object.is_dead() {
            return Ok(false);
        }
        if !same_representation(&object, meta) {
            // not the object this revalidation looked up (a newer one replaced it since): its
            // header must not be put on another body
            return Ok(false);
        }
        // a revalidation that began before a purge of this object must not make it fresh again:
        // the origin's 304 describes its state before the purge
        if let Some(stamp) = key.extensions.get::<FetchStamp>() {
            if self.log.verdict(stamp.0, &object.facts()) != Verdict::Store {
                return Ok(false);
            }
        }
        let replaced = self.with_meta(&object, meta)?;
        if self
            .swap_if_current(hash, &object, Some(replaced.clone()))
            .await
        {
            self.index
                .register(replaced.primary, hash, &replaced, &replaced.tags);
            if let Some(ticket) = self.take_ticket(key) {
                // to the shared tier too: the other nodes need not revalidate it
                self.share(ticket, hash, &replaced);
            }
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Whether `meta` (a revalidated header) describes `object`'s body: the same length and the
/// same validators.
fn same_representation(object: &StoredObject, meta: &CacheMeta) -> bool {
    let new = &meta.response_header().headers;
    let Ok(old) = object.meta.to_meta() else {
        return false;
    };
    let old = &old.response_header().headers;
    let length_ok = new
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_none_or(|n| n == object.body.len());
    let same = |name| match (old.get(&name), new.get(&name)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    length_ok && same(http::header::ETAG) && same(http::header::LAST_MODIFIED)
}

/// Whether a hit was read from the shared tier (`Cache-Status: ...; detail=shared`).
pub fn is_shared_hit(hit: &HitHandler) -> bool {
    hit.as_any().downcast_ref::<Hit>().is_some_and(|h| h.shared)
}

#[cfg(test)]
mod tests;
