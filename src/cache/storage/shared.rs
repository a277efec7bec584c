//! The memory storage's side of the shared tier (`cache/shared.rs`): a memory miss asks the
//! tier before the app; a shared hit is copied into memory with the freshness it has left; a
//! fill of this node writes its object to the tier, compared and set against its fetch's start.
//!
//! - Concurrent misses for one variant on this node ask the tier once (`asking`). A purge
//!   applied here after that ask began may have missed its answer: each request checks the
//!   answer against the purge log before it uses it.
//! - The first ask takes the URL's fill lock for the cluster ([`LockHold`]); while this node
//!   holds it, its other requests for the URL do not ask (pingora's own lock makes them wait
//!   for the fill). A node that finds the lock taken waits for the other node's fill to land,
//!   polling, at most `cache.lock_timeout`, and is released at once when the answer turns out
//!   not storable (a pass mark). The lock is freed when the object is written, or when every
//!   request that asked is done.
//! - What a request's fill needs to write waits in a [`Ticket`] keyed by the request's fetch
//!   stamp: its fetch's start on the tier's clock (never later than the real start) and the
//!   lock. Only the fill of that request can use it.
//! - A stale copy in memory asks the tier for a fresh one (another node may have refreshed it)
//!   and takes a ticket, so its revalidation is written to the tier too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use pingora_cache::{CacheKey, CacheMeta};
use tokio::sync::OnceCell;

use super::fill::Fill;
use super::object::unix_millis;
use super::{FetchStamp, MemoryStorage, StoredObject};
use crate::cache::key::{UrlHash, VariantHash};
use crate::cache::purge_log::{ObjectFacts, Verdict};
use crate::cache::shared::codec::{self, Decoded};
use crate::cache::shared::{Found, Lock, Put, SharedTier};
use crate::metrics::metrics;

/// The first pause between two looks at a fill another node is making; it doubles up to
/// [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(20);
/// Past this many tickets waiting, the old ones are dropped (a request always drops its own
/// when it ends; this only bounds the map should that ever not happen).
const MAX_TICKETS: usize = 10_000;
/// The longest an object stays in the tier, whatever its freshness: the tier's purge marks are
/// kept as long as the longest-lived object, so this bounds them too.
pub(crate) const SHARED_MAX_LIFE: Duration = Duration::from_secs(86_400);

/// What one ask of the tier found, shared by the requests of this node that asked together.
#[derive(Clone)]
pub(super) struct Answer {
    /// A copy, and when it was soft-purged (Unix ms; 0: not).
    hit: Option<(Arc<Decoded>, u64)>,
    /// The tier's clock at the ask: the start of a fetch that follows it (`None`: unavailable).
    start: Option<u64>,
    /// The URL's fill lock, when this ask took it.
    lock: Option<Arc<LockHold>>,
    /// This node's stamp just before the ask.
    asked_at: u64,
}

/// The cluster's fill lock for one URL, held by this node. Freed when dropped, unless a write
/// to the tier took its token (the write frees it as it lands).
pub(crate) struct LockHold {
    tier: &'static dyn SharedTier,
    primary: UrlHash,
    /// The tier's clock when it was taken.
    start: u64,
    token: Mutex<Option<String>>,
}

impl LockHold {
    fn take_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Free the lock now (`pass`: the answer was not storable, waiters stop at once).
    fn release(&self, pass: bool) {
        if let Some(token) = self.take_token() {
            let (tier, primary) = (self.tier, self.primary);
            spawn(async move { tier.release(primary, token, pass).await });
        }
    }
}

impl Drop for LockHold {
    fn drop(&mut self) {
        self.release(false);
    }
}

/// A request's right to write what it fetches to the tier.
pub(crate) struct Ticket {
    /// The tier's clock no later than the fetch's start.
    start: u64,
    lock: Option<Arc<LockHold>>,
    made: Instant,
}

/// Run `f` in the background when there is a runtime (there always is on a request path).
fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}

fn stamp_of(key: &CacheKey) -> u64 {
    key.extensions.get::<FetchStamp>().map_or(0, |s| s.0)
}

/// The storage's link to the tier.
pub(super) struct SharedLink {
    pub(super) tier: &'static dyn SharedTier,
    asking: Mutex<HashMap<VariantHash, Arc<OnceCell<Answer>>>>,
    /// The fill locks this node holds, by URL.
    holds: Mutex<HashMap<UrlHash, Weak<LockHold>>>,
    /// Tickets by the fetch stamp of the request they belong to.
    tickets: Mutex<HashMap<u64, Ticket>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a finished ask out of `asking`, however the asking request ends.
struct Asking<'a> {
    link: &'a SharedLink,
    hash: VariantHash,
    cell: Arc<OnceCell<Answer>>,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let mut asking = locked(&self.link.asking);
        let done = self.cell.initialized() || Arc::strong_count(&self.cell) <= 2;
        if done
            && asking
                .get(&self.hash)
                .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            asking.remove(&self.hash);
        }
    }
}

impl SharedLink {
    pub(super) fn new(tier: &'static dyn SharedTier) -> SharedLink {
        SharedLink {
            tier,
            asking: Mutex::default(),
            holds: Mutex::default(),
            tickets: Mutex::default(),
        }
    }

    /// The fill lock this node holds for the URL, if any.
    fn live_hold(&self, primary: UrlHash) -> Option<Arc<LockHold>> {
        let mut holds = locked(&self.holds);
        let hold = holds.get(&primary).and_then(Weak::upgrade);
        if hold.is_none() {
            holds.remove(&primary);
        }
        hold
    }

    fn keep_hold(&self, hold: &Arc<LockHold>) {
        let mut holds = locked(&self.holds);
        if holds.len() >= MAX_TICKETS {
            holds.retain(|_, h| h.strong_count() > 0);
        }
        holds.insert(hold.primary, Arc::downgrade(hold));
    }

    fn add_ticket(&self, stamp: u64, start: u64, lock: Option<Arc<LockHold>>) {
        let ticket = Ticket {
            start,
            lock,
            made: Instant::now(),
        };
        let mut tickets = locked(&self.tickets);
        if tickets.len() >= MAX_TICKETS {
            let bound = self.tier.lock_timeout().max(Duration::from_secs(60));
            tickets.retain(|_, t| t.made.elapsed() < bound);
        }
        let old = tickets.insert(stamp, ticket);
        drop(tickets);
        // (an old ticket's lock is freed as it is dropped, outside the map's lock)
        drop(old);
    }

    fn take_ticket(&self, stamp: u64) -> Option<Ticket> {
        locked(&self.tickets).remove(&stamp)
    }
}

impl MemoryStorage {
    /// Ask the shared tier for `key`: for a memory miss, or (`fresh_only`) for a stale copy in
    /// memory, which only a fresh shared copy improves on. A copy with its soft-purge time.
    pub(super) async fn ask_shared(
        &'static self,
        link: &'static SharedLink,
        key: &CacheKey,
        fresh_only: bool,
    ) -> Option<(Arc<Decoded>, u64)> {
        let stamp = stamp_of(key);
        let primary = UrlHash::of(key);
        if let Some(hold) = link.live_hold(primary) {
            // this node is fetching the URL: pingora's own lock makes the request wait for it
            link.add_ticket(stamp, hold.start, Some(hold));
            return None;
        }
        let hash = VariantHash::of(key);
        let cell = locked(&link.asking).entry(hash).or_default().clone();
        let asking = Asking { link, hash, cell };
        let answer = asking
            .cell
            .get_or_init(|| self.ask_tier(link, key, primary, hash, fresh_only))
            .await
            .clone();
        drop(asking);
        if let Some(start) = answer.start {
            link.add_ticket(stamp, start, answer.lock.clone());
        }
        let (d, mut soft_ms) = answer.hit?;
        let facts = ObjectFacts {
            primary,
            url: &d.url,
            tags: &d.tags,
            meta: &d.meta,
        };
        // a purge applied here since the ask began may have missed its answer
        match self.log.verdict(answer.asked_at, &facts) {
            Verdict::Drop => return None,
            Verdict::StoreStale if soft_ms == 0 => soft_ms = unix_millis(SystemTime::now()),
            _ => {}
        }
        Some((d, soft_ms))
    }

    async fn ask_tier(
        &'static self,
        link: &'static SharedLink,
        key: &CacheKey,
        primary: UrlHash,
        hash: VariantHash,
        fresh_only: bool,
    ) -> Answer {
        let m = metrics();
        let asked_at = self.stamp();
        let deadline = Instant::now() + link.tier.lock_timeout();
        let mut pause = POLL_FIRST;
        let answer = |start, lock, hit| Answer {
            hit,
            start: Some(start),
            lock,
            asked_at,
        };
        loop {
            let asked = Instant::now();
            let found = link.tier.lookup(primary, hash, fresh_only).await;
            m.shared_seconds
                .with_label_values(&["lookup"])
                .observe(asked.elapsed().as_secs_f64());
            let (now, lock) = match found {
                Found::Unavailable => {
                    m.shared_lookups.with_label_values(&["error"]).inc();
                    return Answer {
                        hit: None,
                        start: None,
                        lock: None,
                        asked_at,
                    };
                }
                Found::Hit { blob, soft_ms, now } => {
                    let url = key.primary_key_str().unwrap_or_default();
                    return match codec::decode(blob) {
                        // (a hash that matched another URL, or another version's entry, is a
                        // miss: this node's fill replaces it)
                        Some(d) if &*d.url == url => {
                            m.shared_lookups.with_label_values(&["hit"]).inc();
                            let d = Arc::new(d);
                            self.copy_to_memory(key, hash, primary, &d, soft_ms).await;
                            answer(now, None, Some((d, soft_ms)))
                        }
                        _ => {
                            m.shared_lookups.with_label_values(&["unreadable"]).inc();
                            answer(now, None, None)
                        }
                    };
                }
                Found::Miss { now, lock } => (now, lock),
            };
            m.shared_lookups.with_label_values(&["miss"]).inc();
            return match lock {
                Lock::Claimed(token) => {
                    let hold = Arc::new(LockHold {
                        tier: link.tier,
                        primary,
                        start: now,
                        token: Mutex::new(Some(token)),
                    });
                    link.keep_hold(&hold);
                    answer(now, Some(hold), None)
                }
                Lock::HeldByOther if !fresh_only && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                    continue;
                }
                _ => answer(now, None, None),
            };
        }
    }

    /// Keep a shared copy in memory too, as a fill stamped with the request's fetch stamp
    /// would be (a purge applied here since the request was keyed keeps it out), and only if
    /// it is fresher than what memory holds.
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
            fill_seq: stamp_of(key),
            chunks: vec![d.body.clone()],
            size: d.body.len(),
            buffered: 0,
            overflow: false,
            soft_at: soft_ms,
            ticket: None,
            copy: true,
        };
        let _ = pingora_cache::storage::HandleMiss::finish(Box::new(fill)).await;
    }

    /// Write a stored object to the tier under its fill's ticket, in the background.
    pub(super) fn share(&'static self, ticket: Ticket, hash: VariantHash, object: &StoredObject) {
        let Some(link) = self.shared.get() else {
            return;
        };
        let token = ticket.lock.as_ref().and_then(|h| h.take_token());
        let ttl = object
            .drop_at
            .saturating_duration_since(Instant::now())
            .min(SHARED_MAX_LIFE);
        if object.body.len() > link.tier.max_object_size() || ttl.is_zero() {
            // stays in this node's memory; the other nodes fetch it themselves, at once
            if let Some(token) = token {
                let (tier, primary) = (link.tier, object.primary);
                spawn(async move { tier.release(primary, token, true).await });
            }
            return;
        }
        let put = Put {
            primary: object.primary,
            variant: hash,
            blob: codec::encode(&object.url, &object.tags, &object.meta, &object.body),
            start: ticket.start,
            token,
            ttl,
            fresh_until_ms: object.meta.fresh_until_ms(),
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

    /// The ticket of the fill of the request keyed `key`. None for a body announced over
    /// `cluster.shared_max_object_size`: the lock is freed at once (with a pass mark) so the
    /// other nodes fetch it themselves without waiting for this whole body.
    pub(super) fn ticket_for_fill(&self, key: &CacheKey, meta: &CacheMeta) -> Option<Ticket> {
        let link = self.shared.get()?;
        let ticket = link.take_ticket(stamp_of(key))?;
        let announced = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if announced.is_some_and(|n| n > link.tier.max_object_size()) {
            if let Some(hold) = ticket.lock {
                hold.release(true);
            }
            return None;
        }
        Some(ticket)
    }

    /// The ticket of the request keyed `key`, for its fill or its revalidation.
    pub(super) fn take_ticket(&self, key: &CacheKey) -> Option<Ticket> {
        self.shared.get()?.take_ticket(stamp_of(key))
    }

    /// The answer for `key` turned out not storable: free its fill lock and tell the other
    /// nodes' waiters at once.
    pub(crate) fn shared_pass(&self, key: &CacheKey) {
        if let Some(hold) = self.take_ticket(key).and_then(|t| t.lock) {
            hold.release(true);
        }
    }

    /// The request keyed `key` is done: its ticket goes (and with the last one, the lock it
    /// held, if no write took it: the other nodes try for themselves).
    pub(crate) fn shared_done(&self, key: Option<&CacheKey>) {
        if let Some(key) = key {
            drop(self.take_ticket(key));
        }
    }

    /// Connect the storage to a shared tier (once, at start-up).
    pub(crate) fn attach_shared(&self, tier: &'static dyn SharedTier) {
        let _ = self.shared.set(SharedLink::new(tier));
    }
}
