//! Bans on the storage: recorded in the purge log (so fills in flight cannot store what a ban
//! covers), checked by every lookup for objects stored before them, and swept in the
//! background, after which they retire. A ban answers at once however big the cache is, and
//! costs a hit nothing once no ban is outstanding (one atomic load).
//!
//! Also here: tag patterns, matched against the index's distinct tags rather than every
//! object.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::object::{unix_millis, StoredObject};
use super::MemoryStorage;
use crate::cache::ban::Ban;
use crate::cache::key::VariantHash;
use crate::cache::purge_log::PurgeScope;

/// Bans waiting for their sweeps at once; more are refused (429) until some retire.
pub const MAX_OUTSTANDING_BANS: usize = 256;

/// Objects a sweep tests before it lets other tasks run.
const SWEEP_BATCH: usize = 512;
/// How long a sweep pauses between batches, so hits keep their pace on a big cache.
const SWEEP_PAUSE: Duration = Duration::from_micros(200);

/// A ban not yet swept.
pub(super) struct ActiveBan {
    seq: u64,
    ban: Arc<Ban>,
    soft: bool,
}

/// The outstanding bans.
#[derive(Default)]
pub(super) struct Bans {
    active: RwLock<Vec<Arc<ActiveBan>>>,
    count: std::sync::atomic::AtomicUsize,
}

impl Bans {
    /// Whether any ban is outstanding (the hit path's only cost when none is).
    pub(super) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    fn add(&self, ban: Arc<ActiveBan>) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.push(ban);
        self.count.store(active.len(), Ordering::Release);
    }

    fn retire(&self, seq: u64) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.retain(|b| b.seq != seq);
        self.count.store(active.len(), Ordering::Release);
    }

    fn snapshot(&self) -> Vec<Arc<ActiveBan>> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of outstanding bans.
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

fn covers(b: &ActiveBan, object: &StoredObject) -> bool {
    object.fill_seq < b.seq && object.facts().banned_by(&b.ban)
}

impl MemoryStorage {
    /// Ban: every object stored before now that `ban` matches is purged (or with `soft`,
    /// marked stale) for every lookup from now on, and removed by a background sweep.
    pub fn ban(&'static self, ban: Ban, soft: bool) {
        let seq = self.stamp();
        let ban = Arc::new(ban);
        // record first: a fill that stores after this line sees the record
        self.log.record(seq, PurgeScope::Ban(ban.clone()), soft);
        let active = Arc::new(ActiveBan { seq, ban, soft });
        self.bans.add(active.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // no runtime (a unit test): sweep here
            self.sweep_now(&active);
            return;
        };
        runtime.spawn(async move {
            let mut batch = Vec::with_capacity(SWEEP_BATCH);
            let mut tested = 0usize;
            for (hash, object) in self.objects.iter() {
                if covers(&active, &object) {
                    batch.push((*hash, object));
                }
                tested += 1;
                if tested % SWEEP_BATCH == 0 {
                    self.apply_ban(std::mem::take(&mut batch), &active);
                    tokio::time::sleep(SWEEP_PAUSE).await;
                }
            }
            self.apply_ban(batch, &active);
            self.bans.retire(active.seq);
        });
    }

    fn sweep_now(&'static self, active: &ActiveBan) {
        let batch: Vec<(VariantHash, Arc<StoredObject>)> = self
            .objects
            .iter()
            .filter(|(_, o)| covers(active, o))
            .map(|(h, o)| (*h, o))
            .collect();
        self.apply_ban(batch, active);
        self.bans.retire(active.seq);
    }

    fn apply_ban(&'static self, batch: Vec<(VariantHash, Arc<StoredObject>)>, b: &ActiveBan) {
        if batch.is_empty() {
            return;
        }
        let n = self.apply_purge(batch, b.seq, b.soft);
        crate::metrics::metrics()
            .purged_objects
            .with_label_values(&["ban"])
            .inc_by(n as u64);
    }

    /// At lookup: whether an outstanding ban covers `object`; a hard ban kills it (it is
    /// then a miss), a soft one marks it stale. Only called when [`Bans::any`].
    pub(super) fn banned_at_lookup(&'static self, hash: VariantHash, object: &Arc<StoredObject>) {
        for b in self.bans.snapshot() {
            if !covers(&b, object) {
                continue;
            }
            if b.soft {
                let now = unix_millis(SystemTime::now());
                let _ =
                    object
                        .soft_at
                        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
            } else if !object.dead.swap(true, Ordering::AcqRel) {
                self.remove_in_background(vec![(hash, object.clone())]);
            }
        }
    }

    /// Purge every object carrying a tag that `pattern` matches (unanchored), found through
    /// the index's distinct tags. Fills in flight with a matching tag are covered too.
    pub fn purge_tag_pattern(&'static self, pattern: &regex::Regex, soft: bool) -> usize {
        let seq = self.stamp();
        let ban = Ban {
            tags: Some(pattern.clone()),
            ..Ban::default()
        };
        self.log.record(seq, PurgeScope::Ban(Arc::new(ban)), soft);
        let mut targets = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for tag in self.index.tags_matching(|t| pattern.is_match(t)) {
            // an object with two matching tags is purged (and counted) once
            targets.extend(
                self.index
                    .tagged(&tag)
                    .into_iter()
                    .filter(|(h, _)| seen.insert(*h)),
            );
        }
        self.apply_purge(targets, seq, soft)
    }

    /// Whether `n` more bans may be added: at most [`MAX_OUTSTANDING_BANS`] wait for their
    /// sweeps at once (each is checked on every hit until then).
    pub fn may_ban(&self, n: usize) -> bool {
        self.bans.len() + n <= MAX_OUTSTANDING_BANS
    }

    /// Outstanding bans (the admin's view and tests).
    pub fn outstanding_bans(&self) -> usize {
        self.bans.len()
    }
}
