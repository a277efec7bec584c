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
//! Not here: what may be stored (`freshness.rs`), who may purge (`purge.rs`), or the HTTP state
//! machine (pingora-cache).

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;
use pingora_cache::key::{CacheHashKey, CompactCacheKey};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};

use super::freshness::stale_forbidden;
use super::index::{Index, INDEX_ENTRY_OVERHEAD};
use super::meta_codec::StoredMeta;
use super::purge_log::{Matcher, ObjectFacts, PurgeLog, Verdict};
use super::tags::response_tags;
use crate::metrics::metrics;

/// Bytes charged per entry beyond its key, URL, metadata, tags and body: the moka entry and
/// its deque and timer nodes, the `Arc`'d object, its allocations' headers and rounding, and
/// its slot in the variant index. Measured with `bench/purge.sh` (resident memory per object
/// minus body, metadata and URL, for 100-byte objects), so that `cache.max_size` bounds the
/// process's real memory and not only the payload.
pub const ENTRY_OVERHEAD: u32 = 800;

/// Purged objects waiting for removal; beyond this the rest are left to moka's own eviction.
const REAPER_QUEUE: usize = 100_000;
/// The reaper removes this many objects...
const REAPER_BATCH: u64 = 4;
/// ...then pauses this long: about 2,000 removals a second.
const REAPER_PAUSE: Duration = Duration::from_millis(2);

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

/// URL prefixes, sorted, with every prefix that a shorter one already covers left out. In
/// such a set the only candidate for a URL is the greatest prefix not above it: any prefix
/// between a covering prefix and the URL would itself start with the covering one.
struct PrefixSet<'a> {
    sorted: Vec<&'a str>,
}

impl<'a> PrefixSet<'a> {
    fn new(prefixes: &'a [String]) -> PrefixSet<'a> {
        let mut all: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        all.sort_unstable();
        let mut sorted: Vec<&str> = Vec::with_capacity(all.len());
        for p in all {
            // sorted order puts a covering prefix right before what it covers
            if sorted.last().is_none_or(|last| !p.starts_with(last)) {
                sorted.push(p);
            }
        }
        PrefixSet { sorted }
    }

    fn covers(&self, url: &str) -> bool {
        let at = self.sorted.partition_point(|p| *p <= url);
        at > 0 && url.starts_with(self.sorted[at - 1])
    }
}

/// A stored variant.
pub struct StoredObject {
    /// The metadata and response header.
    meta: StoredMeta,
    /// The whole body.
    body: Bytes,
    /// The primary key text (`http://host/path?query`).
    url: Box<str>,
    /// The primary key hash, shared by all variants of the URL.
    primary: u128,
    /// Tags (surrogate keys).
    tags: Box<[Box<str>]>,
    /// Stamp of the fetch that wrote it.
    fill_seq: u64,
    /// When moka may drop it.
    drop_at: Instant,
    /// Purged: never served again, removed from moka in the background.
    dead: AtomicBool,
    /// Soft-purged at this time (Unix milliseconds; 0 = not soft-purged).
    soft_at: AtomicU64,
}

impl StoredObject {
    /// What this object costs the budget.
    fn weight(&self) -> u32 {
        let tag_bytes: usize = self
            .tags
            .iter()
            .map(|t| t.len() + INDEX_ENTRY_OVERHEAD)
            .sum();
        let bytes = 16
            + self.url.len()
            + 96
            + self.meta.heap_size()
            + self.body.len()
            + tag_bytes
            + ENTRY_OVERHEAD as usize;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    fn facts(&self) -> ObjectFacts<'_> {
        ObjectFacts {
            primary: self.primary,
            url: &self.url,
            tags: &self.tags,
        }
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1)
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

/// What a purge targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeScope {
    /// Every variant of the URL with this primary key hash.
    Url(u128),
    /// Every object carrying this tag.
    Tag(String),
    /// Every object whose URL starts with this text (`http://host/blog/`).
    Prefix(String),
    /// Everything.
    All,
}

/// The moka-backed storage. Created once per process and leaked: pingora wants `&'static`.
pub struct MemoryStorage {
    objects: Cache<u128, Arc<StoredObject>>,
    index: Arc<Index<StoredObject>>,
    log: PurgeLog,
    settings: StorageSettings,
    max_object_size: usize,
    /// Body bytes buffered by fills in flight, all together (bounded by `cache.max_size`).
    filling: AtomicU64,
    seq: AtomicU64,
    reaper: OnceLock<mpsc::Sender<(u128, Arc<StoredObject>)>>,
}

impl MemoryStorage {
    /// A storage set up by `settings`.
    pub fn new(settings: StorageSettings) -> MemoryStorage {
        let index: Arc<Index<StoredObject>> = Arc::default();
        let listener_index = index.clone();
        let objects = Cache::builder()
            .max_capacity(settings.max_size)
            .weigher(|_k: &u128, v: &Arc<StoredObject>| v.weight())
            .expire_after(DropAtExpiry)
            .eviction_listener(move |k: Arc<u128>, v: Arc<StoredObject>, cause| {
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
            .build();
        MemoryStorage {
            objects,
            index,
            log: PurgeLog::new(settings.purge_horizon, 100_000),
            max_object_size: usize::try_from(settings.max_object_size).unwrap_or(usize::MAX),
            filling: AtomicU64::new(0),
            settings,
            seq: AtomicU64::new(1),
            reaper: OnceLock::new(),
        }
    }

    /// A new sequence number: stamps a fetch or a purge.
    pub fn stamp(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
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

    /// A copy of `object` with new metadata, sharing its body; neither dead nor soft-purged.
    fn with_meta(&self, object: &StoredObject, meta: &CacheMeta) -> Result<Arc<StoredObject>> {
        Ok(Arc::new(StoredObject {
            meta: StoredMeta::from_meta(meta),
            body: object.body.clone(),
            url: object.url.clone(),
            primary: object.primary,
            tags: object.tags.clone(),
            fill_seq: object.fill_seq,
            drop_at: self.drop_at(meta),
            dead: AtomicBool::new(false),
            soft_at: AtomicU64::new(0),
        }))
    }

    /// Purge `scope`: remove the objects, or with `soft` mark them stale so the next request
    /// is served the stale copy while one background fetch refreshes it. Fills that began
    /// before this purge will not store what it covers. Returns how many objects it touched.
    pub async fn purge_scope(&'static self, scope: &PurgeScope, soft: bool) -> usize {
        if let PurgeScope::Prefix(p) = scope {
            return self.purge_prefixes(std::slice::from_ref(p), soft);
        }
        let seq = self.stamp();
        let matcher = match scope {
            PurgeScope::Url(p) => Matcher::Url(*p),
            PurgeScope::Tag(t) => Matcher::Tag(t.as_str().into()),
            PurgeScope::Prefix(p) => Matcher::Prefix(p.as_str().into()),
            PurgeScope::All => Matcher::All,
        };
        // record first: a fill that stores after this line sees the record, one that stored
        // before it is found below
        self.log.record(seq, matcher.clone(), soft);
        let targets: Vec<(u128, Arc<StoredObject>)> = match scope {
            PurgeScope::Url(p) => self.index.variants_of(*p),
            PurgeScope::Tag(t) => self.index.tagged(t),
            PurgeScope::Prefix(_) | PurgeScope::All => self
                .objects
                .iter()
                .filter(|(_, o)| matcher.matches(&o.facts()))
                .map(|(h, o)| (*h, o))
                .collect(),
        };
        let n = self.apply_purge(targets, seq, soft);
        if *scope == PurgeScope::All && !soft {
            self.objects.invalidate_all();
        }
        n
    }

    /// Purge every object whose URL starts with one of `prefixes`, in one walk over the cache
    /// however many prefixes there are (each object is looked up among the prefixes by a
    /// binary search). Returns how many objects it touched.
    pub fn purge_prefixes(&'static self, prefixes: &[String], soft: bool) -> usize {
        let seq = self.stamp();
        for p in prefixes {
            self.log
                .record(seq, Matcher::Prefix(p.as_str().into()), soft);
        }
        let set = PrefixSet::new(prefixes);
        let targets = self
            .objects
            .iter()
            .filter(|(_, o)| set.covers(&o.url))
            .map(|(h, o)| (*h, o))
            .collect();
        self.apply_purge(targets, seq, soft)
    }

    /// Mark `targets` stale (`soft`) or dead and hand the dead to the reaper; objects filled
    /// after the purge that took `seq` are the new content and kept.
    fn apply_purge(
        &'static self,
        targets: Vec<(u128, Arc<StoredObject>)>,
        seq: u64,
        soft: bool,
    ) -> usize {
        let now = unix_millis(SystemTime::now());
        let mut doomed = Vec::new();
        let mut n = 0;
        for (hash, object) in targets {
            // an object filled after this purge began is the new content: keep it
            if object.fill_seq > seq || object.is_dead() {
                continue;
            }
            n += 1;
            if soft {
                object.soft_at.store(now, Ordering::Release);
            } else {
                object.dead.store(true, Ordering::Release);
                doomed.push((hash, object));
            }
        }
        if !doomed.is_empty() {
            self.remove_in_background(doomed);
        }
        n
    }

    /// Hand purged objects to the reaper, which takes them out of moka without holding up the
    /// purge or the hits: the flags already hide them, so removal only frees memory.
    fn remove_in_background(&'static self, doomed: Vec<(u128, Arc<StoredObject>)>) {
        let Some(reaper) = self.reaper() else { return };
        for item in doomed {
            // a full queue leaves the rest to moka: they are hidden, counted in the budget,
            // replaced by the next fill of their URL, and evicted or expired in time
            if reaper.try_send(item).is_err() {
                break;
            }
        }
    }

    /// The queue of the one reaper task, started on first use.
    fn reaper(&'static self) -> Option<&'static mpsc::Sender<(u128, Arc<StoredObject>)>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(self.reaper.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<(u128, Arc<StoredObject>)>(REAPER_QUEUE);
            handle.spawn(async move {
                let mut n: u64 = 0;
                while let Some((hash, object)) = rx.recv().await {
                    self.swap_if_current(hash, &object, None).await;
                    n += 1;
                    // paced: every removal runs moka's housekeeping, which concurrent hits
                    // would otherwise queue behind (measured in docs/benchmarks.md)
                    if n % REAPER_BATCH == 0 {
                        tokio::time::sleep(REAPER_PAUSE).await;
                    }
                }
            });
            tx
        }))
    }

    /// Replace (`Some`) or remove (`None`) the entry at `hash` only while it still holds
    /// `current`: a fill stored since then is never touched. Whether it did.
    async fn swap_if_current(
        &self,
        hash: u128,
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
    primary: u128,
    url: Box<str>,
    tags: Box<[Box<str>]>,
    meta: StoredMeta,
    drop_at: Instant,
    fill_seq: u64,
    chunks: Vec<Bytes>,
    size: usize,
    /// Bytes of `chunks` counted in the storage's in-flight bound.
    buffered: u64,
    overflow: bool,
}

impl Drop for Fill {
    fn drop(&mut self) {
        self.release_buffered();
    }
}

impl Fill {
    /// Stop buffering: nothing of this fill will be stored.
    fn give_up(&mut self) {
        self.overflow = true;
        self.chunks = Vec::new();
        self.release_buffered();
    }

    /// Hand this fill's share of the in-flight bound back.
    fn release_buffered(&mut self) {
        let n = std::mem::take(&mut self.buffered);
        self.storage.filling.fetch_sub(n, Ordering::Relaxed);
    }

    fn facts(&self) -> ObjectFacts<'_> {
        ObjectFacts {
            primary: self.primary,
            url: &self.url,
            tags: &self.tags,
        }
    }
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.overflow {
            return Error::e_explain(ErrorType::InternalError, "object not stored");
        }
        self.size += data.len();
        if self.size > self.storage.max_object_size {
            // stop buffering at once: the response keeps streaming to the client uncached
            self.give_up();
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        // the bodies of all fills in flight share one bound, `cache.max_size`: a flood of
        // requests for large objects (whose clients may leave at once) cannot buffer more
        // than that on top of the cache itself; past it, a fill is streamed uncached
        let len = data.len() as u64;
        let filling = &self.storage.filling;
        if filling.fetch_add(len, Ordering::Relaxed) + len > self.storage.settings.max_size {
            filling.fetch_sub(len, Ordering::Relaxed);
            metrics().fills_over_memory.inc();
            self.give_up();
            return Error::e_explain(ErrorType::InternalError, "fills in flight over max_size");
        }
        self.buffered += len;
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        if self.overflow {
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        let storage = self.storage;
        let soft_at = match storage.log.verdict(self.fill_seq, &self.facts()) {
            // purged while it was being fetched: nothing is stored, and the waiters look up
            // again and fetch the post-purge object
            Verdict::Drop => return Ok(MissFinishType::Created(0)),
            Verdict::StoreStale => unix_millis(SystemTime::now()),
            Verdict::Store => 0,
        };
        // one exact-size copy: the stored body owns no slack from read buffers
        let mut body = BytesMut::with_capacity(self.size);
        for c in &self.chunks {
            body.extend_from_slice(c);
        }
        let mut meta = self.meta.clone();
        meta.set_body_length(self.size);
        let object = Arc::new(StoredObject {
            meta,
            body: body.freeze(),
            url: self.url.clone(),
            primary: self.primary,
            tags: self.tags.clone(),
            fill_seq: self.fill_seq,
            drop_at: self.drop_at,
            dead: AtomicBool::new(false),
            soft_at: AtomicU64::new(soft_at),
        });
        let weight = object.weight() as usize;
        let seq = self.fill_seq;
        let mut replaced: Option<Arc<StoredObject>> = None;
        let candidate = object.clone();
        let result = storage
            .objects
            .entry(self.hash)
            .and_compute_with(|existing| {
                let op = match existing {
                    // compare before set: an older fill never replaces a newer object
                    Some(e) if e.value().fill_seq > seq && !e.value().is_dead() => Op::Nop,
                    Some(e) => {
                        replaced = Some(e.into_value());
                        Op::Put(candidate)
                    }
                    None => Op::Put(candidate),
                };
                std::future::ready(op)
            })
            .await;
        if !matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ) {
            return Ok(MissFinishType::Created(0));
        }
        metrics().cache_inserts.inc();
        storage
            .index
            .register(self.primary, self.hash, &object, &self.tags);
        if let Some(old) = replaced {
            storage
                .index
                .unregister(old.primary, self.hash, &old, &old.tags);
        }
        // a purge that recorded itself after the check above but before the index had this
        // object could not find it: look again now that it can
        match storage.log.verdict(seq, &self.facts()) {
            Verdict::Drop => {
                object.dead.store(true, Ordering::Release);
                storage.remove_in_background(vec![(self.hash, object)]);
            }
            Verdict::StoreStale => {
                let _ = object.soft_at.compare_exchange(
                    0,
                    unix_millis(SystemTime::now()),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Verdict::Store => {}
        }
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
        if object.is_dead() {
            return Ok(None);
        }
        let mut meta = object.meta.to_meta()?;
        let soft_at = object.soft_at.load(Ordering::Acquire);
        if soft_at != 0 {
            self.apply_soft_purge(&mut meta, soft_at);
        }
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
        let fill_seq = key
            .extensions
            .get::<FetchStamp>()
            .map_or_else(|| self.stamp(), |s| s.0);
        let tags = response_tags(meta.response_header(), &self.settings.tag_headers);
        Ok(Box::new(Fill {
            storage: self,
            hash: Self::hash_of(key),
            primary: u128::from_be_bytes(key.primary_bin()),
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
        let hash = compact_hash(target.key());
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
        let hash = compact_hash(target.key());
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
        let hash = Self::hash_of(key);
        let Some(object) = self.objects.get(&hash).await else {
            return Ok(false);
        };
        if object.is_dead() {
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
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

fn compact_hash(key: &CompactCacheKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

#[cfg(test)]
mod prefix_tests {
    use super::PrefixSet;

    #[test]
    fn a_prefix_set_covers_what_one_of_its_prefixes_starts() {
        let prefixes: Vec<String> = ["http://h/a/", "http://h/a/b/z", "http://h/c", "http://g/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let set = PrefixSet::new(&prefixes);
        for (url, want) in [
            ("http://h/a/c", true),
            ("http://h/a/b/zz", true),
            ("http://h/c", true),
            ("http://h/cat", true),
            ("http://h/b", false),
            ("http://h/", false),
            ("http://g/x", true),
            ("http://f/x", false),
            ("", false),
        ] {
            let slow = prefixes.iter().any(|p| url.starts_with(p.as_str()));
            assert_eq!(set.covers(url), want, "{url}");
            assert_eq!(slow, want, "{url}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let primary = u128::from_be_bytes(key.primary_bin());
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
        s.purge_scope(
            &PurgeScope::Url(u128::from_be_bytes(key.primary_bin())),
            false,
        )
        .await;
        fill.write_body(Bytes::from_static(b"old"), true)
            .await
            .unwrap();
        fill.finish().await.unwrap();
        assert!(s.lookup(&key, &span).await.unwrap().is_none());
    }
}
