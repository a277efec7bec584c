//! The memory storage's side of the shared tier (`cache/shared.rs`): a memory miss asks the
//! tier before the app; a shared hit is copied into memory with the freshness it has left; a
//! fill of this node writes its object to the tier, compared and set against the fetch's
//! start.
//!
//! - Concurrent misses for one variant on this node ask the tier once (`asking`).
//! - The first to ask takes the URL's fill lock for the cluster; a node that finds it taken
//!   waits for the other node's fill to land in the tier, polling, at most `cache.lock_timeout`,
//!   and is released at once when the answer turns out not storable (a pass mark).
//! - What a fill needs to write (its fetch's start, the lock) waits in a [`Ticket`] per URL,
//!   picked up when the response is stored; a ticket nobody picks up frees the lock when it is
//!   dropped, and expires with the lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_cache::CacheKey;
use tokio::sync::OnceCell;

use super::fill::Fill;
use super::{FetchStamp, MemoryStorage, StoredObject};
use crate::cache::key::{UrlHash, VariantHash};
use crate::cache::shared::codec::{self, Decoded};
use crate::cache::shared::{Found, Lock, Put, SharedTier};
use crate::metrics::metrics;

/// The first pause between two looks at a fill another node is making; it doubles up to
/// [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(20);
/// Past this many tickets waiting, the expired ones are dropped.
const MAX_TICKETS: usize = 10_000;

/// What this node's ask of the tier found, shared by the requests that asked together.
#[derive(Clone)]
pub(super) enum Answer {
    /// A shared hit, soft-purged at this time (Unix ms; 0: not).
    Hit(Arc<Decoded>, u64),
    Miss,
}

/// The storage's link to the tier.
pub(super) struct SharedLink {
    pub(super) tier: &'static dyn SharedTier,
    asking: Mutex<HashMap<VariantHash, Arc<OnceCell<Answer>>>>,
    tickets: Mutex<HashMap<UrlHash, Arc<Ticket>>>,
}

/// A fill's right to write to the tier: when its fetch began, on the tier's clock, and the
/// URL's fill lock if this node holds it.
pub(crate) struct Ticket {
    tier: &'static dyn SharedTier,
    primary: UrlHash,
    pub(super) start: u64,
    token: Mutex<Option<String>>,
    made: Instant,
}

impl Ticket {
    /// The lock's token, once: whoever takes it frees the lock.
    pub(super) fn take_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Free the lock now (`pass`: the answer was not storable, waiters stop at once).
    pub(super) fn release(&self, pass: bool) {
        if let Some(token) = self.take_token() {
            let (tier, primary) = (self.tier, self.primary);
            spawn(async move { tier.release(primary, token, pass).await });
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release(false);
    }
}

/// Run `f` in the background when there is a runtime (there always is on a request path).
fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}

impl SharedLink {
    pub(super) fn new(tier: &'static dyn SharedTier) -> SharedLink {
        SharedLink {
            tier,
            asking: Mutex::default(),
            tickets: Mutex::default(),
        }
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, HashMap<UrlHash, Arc<Ticket>>> {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a fill of this URL is under way here (and its lock not yet expired).
    fn fill_under_way(&self, primary: UrlHash) -> bool {
        let bound = self.tier.lock_timeout();
        let mut tickets = self.tickets();
        match tickets.get(&primary) {
            Some(t) if t.made.elapsed() < bound => true,
            Some(_) => {
                tickets.remove(&primary);
                false
            }
            None => false,
        }
    }

    fn add_ticket(&self, primary: UrlHash, start: u64, token: Option<String>) {
        let ticket = Arc::new(Ticket {
            tier: self.tier,
            primary,
            start,
            token: Mutex::new(token),
            made: Instant::now(),
        });
        let mut tickets = self.tickets();
        if tickets.len() >= MAX_TICKETS {
            // tickets nobody took (a client gone before its answer): their locks expired
            let bound = self.tier.lock_timeout();
            tickets.retain(|_, t| t.made.elapsed() < bound);
        }
        // (a ticket it replaces frees its lock as it is dropped)
        let old = tickets.insert(primary, ticket);
        drop(tickets);
        drop(old);
    }

    /// The ticket of the URL's fill, for the fill that stores it (however long the fetch
    /// took: the tier refuses a fetch older than its purge marks).
    pub(super) fn take_ticket(&self, primary: UrlHash) -> Option<Arc<Ticket>> {
        self.tickets().remove(&primary)
    }

    fn cell(&self, hash: VariantHash) -> Arc<OnceCell<Answer>> {
        let mut asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
        asking.entry(hash).or_default().clone()
    }

    fn done_asking(&self, hash: VariantHash, cell: &Arc<OnceCell<Answer>>) {
        let mut asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
        if asking.get(&hash).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            asking.remove(&hash);
        }
    }
}

impl MemoryStorage {
    /// Ask the shared tier for `key` (one ask per variant on this node at a time). `wait`:
    /// wait for another node's fill in progress (not when a stale copy can be served).
    pub(super) async fn ask_shared(
        &'static self,
        link: &'static SharedLink,
        key: &CacheKey,
        wait: bool,
    ) -> Answer {
        let primary = UrlHash::of(key);
        if link.fill_under_way(primary) {
            // pingora's own lock makes the requests on this node wait for that fill
            return Answer::Miss;
        }
        let hash = VariantHash::of(key);
        let cell = link.cell(hash);
        let answer = cell
            .get_or_init(|| self.ask_tier(link, key, primary, hash, wait))
            .await
            .clone();
        link.done_asking(hash, &cell);
        answer
    }

    async fn ask_tier(
        &'static self,
        link: &'static SharedLink,
        key: &CacheKey,
        primary: UrlHash,
        hash: VariantHash,
        wait: bool,
    ) -> Answer {
        let m = metrics();
        let deadline = Instant::now() + link.tier.lock_timeout();
        let mut pause = POLL_FIRST;
        loop {
            let asked = Instant::now();
            let found = link.tier.lookup(primary, hash, true).await;
            m.shared_seconds
                .with_label_values(&["lookup"])
                .observe(asked.elapsed().as_secs_f64());
            let (now, lock) = match found {
                Found::Unavailable => {
                    m.shared_lookups.with_label_values(&["error"]).inc();
                    return Answer::Miss;
                }
                Found::Hit { blob, soft_ms } => {
                    let url = key.primary_key_str().unwrap_or_default();
                    match codec::decode(blob) {
                        // (a hash that matched another URL, or another version's entry, is a
                        // miss: this node's fill replaces it)
                        Some(d) if &*d.url == url => {
                            m.shared_lookups.with_label_values(&["hit"]).inc();
                            let d = Arc::new(d);
                            self.copy_to_memory(key, hash, primary, &d, soft_ms).await;
                            return Answer::Hit(d, soft_ms);
                        }
                        _ => {
                            m.shared_lookups.with_label_values(&["unreadable"]).inc();
                            return Answer::Miss;
                        }
                    }
                }
                Found::Miss { now, lock } => (now, lock),
            };
            match lock {
                Lock::HeldByOther if wait && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                    continue;
                }
                Lock::Claimed(token) => link.add_ticket(primary, now, Some(token)),
                _ => link.add_ticket(primary, now, None),
            }
            m.shared_lookups.with_label_values(&["miss"]).inc();
            return Answer::Miss;
        }
    }

    /// Keep a shared hit in memory too, as a fill stamped with the request's fetch stamp
    /// would be: a purge applied here since the request was keyed keeps it out.
    async fn copy_to_memory(
        &'static self,
        key: &CacheKey,
        hash: VariantHash,
        primary: UrlHash,
        d: &Decoded,
        soft_ms: u64,
    ) {
        if d.body.len() > self.max_object_size {
            return;
        }
        let Ok(meta) = d.meta.to_meta() else {
            return;
        };
        let fill = Fill {
            storage: self,
            hash,
            primary,
            url: d.url.clone(),
            tags: d.tags.clone(),
            meta: d.meta.clone(),
            drop_at: self.drop_at(&meta),
            fill_seq: key.extensions.get::<FetchStamp>().map_or(0, |s| s.0),
            chunks: vec![d.body.clone()],
            size: d.body.len(),
            buffered: 0,
            overflow: false,
            soft_at: soft_ms,
            ticket: None,
        };
        let _ = pingora_cache::storage::HandleMiss::finish(Box::new(fill)).await;
    }

    /// Write a stored object to the tier under its fill's ticket, in the background.
    pub(super) fn share(
        &'static self,
        ticket: Arc<Ticket>,
        hash: VariantHash,
        object: &StoredObject,
    ) {
        let Some(link) = self.shared.get() else {
            return;
        };
        if object.body.len() > link.tier.max_object_size() {
            // stays in this node's memory; the other nodes fetch it themselves
            ticket.release(true);
            return;
        }
        let put = Put {
            primary: object.primary,
            variant: hash,
            blob: codec::encode(&object.url, &object.tags, &object.meta, &object.body),
            start: ticket.start,
            token: ticket.take_token(),
            ttl: object.drop_at.saturating_duration_since(Instant::now()),
            tags: object.tags.to_vec(),
        };
        let tier = link.tier;
        spawn(async move {
            let m = metrics();
            let asked = Instant::now();
            let result = tier.store(put).await;
            m.shared_seconds
                .with_label_values(&["store"])
                .observe(asked.elapsed().as_secs_f64());
            m.shared_stores.with_label_values(&[result.as_str()]).inc();
        });
    }

    /// A revalidated object (the app said 304) goes to the tier too, if this node holds the
    /// URL's ticket: the other nodes need not revalidate it, nor wait for a fill that would
    /// never come.
    pub(super) fn share_revalidated(&'static self, hash: VariantHash, object: &StoredObject) {
        if let Some(ticket) = self
            .shared
            .get()
            .and_then(|l| l.take_ticket(object.primary))
        {
            self.share(ticket, hash, object);
        }
    }

    /// The answer for `primary` turned out not storable: free its fill lock and tell the
    /// other nodes' waiters at once.
    pub(crate) fn shared_pass(&self, key: &CacheKey) {
        if let Some(ticket) = self
            .shared
            .get()
            .and_then(|l| l.take_ticket(UrlHash::of(key)))
        {
            ticket.release(true);
        }
    }

    /// The fetch for `primary` failed: free its fill lock (the waiters elsewhere try again).
    pub(crate) fn shared_abandon(&self, key: Option<&CacheKey>) {
        let Some((link, key)) = self.shared.get().zip(key) else {
            return;
        };
        if let Some(ticket) = link.take_ticket(UrlHash::of(key)) {
            ticket.release(false);
        }
    }

    /// Connect the storage to a shared tier (once, at start-up).
    pub(crate) fn attach_shared(&self, tier: &'static dyn SharedTier) {
        let _ = self.shared.set(SharedLink::new(tier));
    }
}
