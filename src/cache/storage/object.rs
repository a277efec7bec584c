//! A stored variant ([`StoredObject`]): its metadata, body, URL, tags and purge flags, what
//! it costs the budget, and when moka may drop it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::Expiry;

use crate::cache::index::INDEX_ENTRY_OVERHEAD;
use crate::cache::key::{UrlHash, VariantHash};
use crate::cache::meta_codec::StoredMeta;
use crate::cache::purge_log::ObjectFacts;

/// Bytes charged per entry beyond its key, URL, metadata, tags and body: the moka entry and
/// its deque and timer nodes, the `Arc`'d object, its allocations' headers and rounding, and
/// its slot in the variant index. Measured with `bench/purge.sh` (resident memory per object
/// minus body, metadata and URL, for 100-byte objects), so that `cache.max_size` bounds the
/// process's real memory and not only the payload.
pub const ENTRY_OVERHEAD: u32 = 800;

/// A stored variant.
pub struct StoredObject {
    /// The metadata and response header.
    pub(super) meta: StoredMeta,
    /// The whole body.
    pub(super) body: Bytes,
    /// The primary key text (`http://host/path?query`).
    pub(super) url: Box<str>,
    /// The primary key hash, shared by all variants of the URL.
    pub(super) primary: UrlHash,
    /// Tags (surrogate keys).
    pub(super) tags: Box<[Box<str>]>,
    /// Stamp of the fetch that wrote it.
    pub(super) fill_seq: u64,
    /// When moka may drop it.
    pub(super) drop_at: DropAt,
    /// Purged: never served again, removed from moka in the background.
    pub(super) dead: AtomicBool,
    /// Soft-purged at this time (Unix milliseconds; 0 = not soft-purged).
    pub(super) soft_at: AtomicU64,
    /// What the fast path found out about its stored header (`HeadVerdict`).
    pub(super) head_verdict: HeadVerdict,
}

impl StoredObject {
    /// What this object costs the budget.
    pub(super) fn weight(&self) -> u32 {
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

    pub(super) fn facts(&self) -> ObjectFacts<'_> {
        ObjectFacts {
            primary: self.primary,
            url: &self.url,
            tags: &self.tags,
            meta: &self.meta,
        }
    }

    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// What the fast path found out about an object's stored header (`fast_path/head.rs`: two
/// bits, whether it can write the head and whether fields go), worked out at the object's
/// first fast hit instead of at every hit. It depends on the stored lines, which an object
/// never changes (new metadata is a new object), on `purge.tag_headers`, which only a restart
/// changes, and on `purge.strip_tag_headers`, which a reload may: one verdict is kept for
/// each value of that. In the object's padding: it costs no memory.
#[derive(Debug, Default)]
pub(super) struct HeadVerdict(AtomicU8);

impl HeadVerdict {
    /// The verdict (two bits) under `strip_tag_headers`, worked out by `find` if it is not
    /// known yet.
    pub(super) fn get(&self, strip_tag_headers: bool, find: impl FnOnce() -> u8) -> u8 {
        // per setting: the verdict's two bits, then a bit saying it is known
        let shift = if strip_tag_headers { 3 } else { 0 };
        let known = self.0.load(Ordering::Relaxed) >> shift;
        if known & 0b100 != 0 {
            return known & 0b11;
        }
        let verdict = find() & 0b11;
        // (`fetch_or`: a hit under the other setting may be storing its own at once)
        self.0
            .fetch_or((0b100 | verdict) << shift, Ordering::Relaxed);
        verdict
    }
}

/// An instant as nanoseconds after the first one made: half an `Instant`'s size, which
/// keeps a stored object (with its `Arc`) within 256 bytes, one allocation size class below
/// the next (64 bytes less per object).
#[derive(Debug, Clone, Copy)]
pub(super) struct DropAt(u64);

/// The instant `DropAt`s count from.
static DROP_AT_BASE: OnceLock<Instant> = OnceLock::new();

impl DropAt {
    /// `at`, or the base for an instant before it (every drop time is after "now").
    pub(super) fn new(at: Instant) -> DropAt {
        let base = *DROP_AT_BASE.get_or_init(Instant::now);
        let nanos = at.saturating_duration_since(base).as_nanos();
        DropAt(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How long after `earlier` it is (zero if it is not later).
    pub(super) fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        let base = *DROP_AT_BASE.get_or_init(Instant::now);
        (base + Duration::from_nanos(self.0)).saturating_duration_since(earlier)
    }
}

pub(super) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1)
}

pub(super) struct DropAtExpiry;

impl Expiry<VariantHash, Arc<StoredObject>> for DropAtExpiry {
    fn expire_after_create(
        &self,
        _key: &VariantHash,
        value: &Arc<StoredObject>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.drop_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &VariantHash,
        value: &Arc<StoredObject>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.drop_at.saturating_duration_since(updated_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_object_and_its_arc_fit_256_bytes() {
        // (an `Arc` adds two counters; mimalloc's next class after 256 is 320)
        assert!(std::mem::size_of::<StoredObject>() + 16 <= 256);
    }

    #[test]
    fn a_head_verdict_is_found_once_per_setting() {
        let v = HeadVerdict::default();
        let mut finds = 0;
        let mut get = |strip, verdict| {
            v.get(strip, || {
                finds += 1;
                verdict
            })
        };
        assert_eq!(get(true, 3), 3);
        assert_eq!(get(true, 1), 3, "known with tag headers stripped");
        assert_eq!(get(false, 0), 0, "found again with them kept");
        assert_eq!(get(false, 1), 0);
        assert_eq!(get(true, 0), 3, "each setting keeps its own");
        assert_eq!(finds, 2);
    }

    #[test]
    fn a_drop_time_keeps_its_distance() {
        let now = Instant::now();
        let at = DropAt::new(now + Duration::from_secs(90));
        let left = at.saturating_duration_since(now);
        assert!(
            left <= Duration::from_secs(90) && left > Duration::from_secs(89),
            "{left:?}"
        );
        assert_eq!(
            DropAt::new(now).saturating_duration_since(now + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
