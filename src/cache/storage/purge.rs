//! Purges on the storage: record in the purge log first, then mark the targets (dead, or
//! soft-purged), found through the indexes or one walk; a paced reaper takes the dead out of
//! moka in the background, so hits never wait on a purge.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::object::{unix_millis, StoredObject};
use super::MemoryStorage;
use crate::cache::key::VariantHash;
pub use crate::cache::purge_log::PurgeScope;

/// Purged objects waiting for removal; beyond this the rest are left to moka's own eviction.
const REAPER_QUEUE: usize = 100_000;
/// The reaper removes this many objects...
const REAPER_BATCH: u64 = 4;
/// ...then pauses this long: about 2,000 removals a second.
const REAPER_PAUSE: Duration = Duration::from_millis(2);

/// URL prefixes, sorted, with every prefix that a shorter one already covers left out. In
/// such a set the only candidate for a URL is the greatest prefix not above it: any prefix
/// between a covering prefix and the URL would itself start with the covering one.
pub(super) struct PrefixSet<'a> {
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

impl MemoryStorage {
    /// Purge `scope`: remove the objects, or with `soft` mark them stale so the next request
    /// is served the stale copy while one background fetch refreshes it. Fills that began
    /// before this purge will not store what it covers. Returns how many objects it touched.
    pub async fn purge_scope(&'static self, scope: &PurgeScope, soft: bool) -> usize {
        if let PurgeScope::Prefix(p) = scope {
            return self.purge_prefixes(std::slice::from_ref(p), soft);
        }
        if let PurgeScope::Ban(b) = scope {
            // swept in the background: its objects are not counted here
            self.ban((**b).clone(), soft);
            return 0;
        }
        let seq = self.stamp();
        // record first: a fill that stores after this line sees the record, one that stored
        // before it is found below
        self.log.record(seq, scope.clone(), soft);
        let targets: Vec<(VariantHash, Arc<StoredObject>)> = match scope {
            PurgeScope::Url(p) => self.index.variants_of(*p),
            PurgeScope::AnySchemeUrl([a, b]) => {
                let mut both = self.index.variants_of(*a);
                both.extend(self.index.variants_of(*b));
                both
            }
            PurgeScope::Tag(t) => self.index.tagged(t),
            PurgeScope::Prefix(_) | PurgeScope::All | PurgeScope::Ban(_) => self
                .objects
                .iter()
                .filter(|(_, o)| scope.matches(&o.facts()))
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
            self.log.record(seq, PurgeScope::Prefix(p.clone()), soft);
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
    pub(super) fn apply_purge(
        &'static self,
        targets: Vec<(VariantHash, Arc<StoredObject>)>,
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
    pub(super) fn remove_in_background(
        &'static self,
        doomed: Vec<(VariantHash, Arc<StoredObject>)>,
    ) {
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
    fn reaper(&'static self) -> Option<&'static mpsc::Sender<(VariantHash, Arc<StoredObject>)>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(self.reaper.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<(VariantHash, Arc<StoredObject>)>(REAPER_QUEUE);
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
