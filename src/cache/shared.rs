//! The shared tier (L2) as the memory storage sees it: a small trait that a backend implements
//! (Redis today, `cluster/tier.rs`; memcached, whose `cas` gives the same guarantee, could
//! follow), the answers it gives, and the versioned encoding of a stored variant
//! (`shared/codec.rs`).
//!
//! The contract a backend keeps:
//! - [`SharedTier::lookup`] answers with the stored variant, or with a miss and the tier's
//!   clock (a fetch's start, what its write is compared with), optionally taking the URL's
//!   fill lock for this node (expiring after `cache.lock_timeout`, so a node that dies frees it).
//! - [`SharedTier::store`] writes only if no purge that covers the object (its URL, one of its
//!   tags, everything) was applied after the fetch started and no fill that started later
//!   stored it first: compare and set, checked atomically in the tier. It frees the lock.
//! - Purges are applied to the tier by whoever publishes them (`cluster.rs`), before any node
//!   applies them to its memory, so a node never copies a purged object back into memory.
//! - Every failure is an [`Found::Unavailable`] or an error count, never a client error.

pub(crate) mod codec;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::key::{UrlHash, VariantHash};

/// What the shared tier holds for one variant.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// The encoded variant (`codec.rs`), when it was soft-purged (Unix ms; 0: never), and
    /// the tier's clock (the start of a revalidation that follows).
    Hit { blob: Bytes, soft_ms: u64, now: u64 },
    /// Nothing usable; `now` is the tier's clock, the fetch's start.
    Miss { now: u64, lock: Lock },
    /// The tier could not be asked (down, slow, circuit open): memory and the app only.
    Unavailable,
}

/// The state of a URL's fill lock after a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lock {
    /// This node holds it now, under this token (taken, or taken over from an earlier fill of
    /// this node's).
    Claimed(String),
    /// Another node is fetching the URL: wait for its fill to land.
    HeldByOther,
    /// The URL's last answer was not storable: no one waits for it. Or only a fresh copy was
    /// asked for and the tier's is stale.
    Pass,
}

/// One variant to write, compared and set.
#[derive(Debug)]
pub(crate) struct Put {
    pub(crate) primary: UrlHash,
    pub(crate) variant: VariantHash,
    pub(crate) blob: Vec<u8>,
    /// The tier's clock when the fetch began.
    pub(crate) start: u64,
    /// The fill lock to free, when this node holds it.
    pub(crate) token: Option<String>,
    /// How long the tier keeps it: freshness, stale windows and keep.
    pub(crate) ttl: Duration,
    /// Until when it is fresh (Unix ms).
    pub(crate) fresh_until_ms: u64,
    pub(crate) tags: Vec<Box<str>>,
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreResult {
    Stored,
    /// A purge that covers it came after its fetch began.
    Purged,
    /// A fill that began later stored the variant first.
    Older,
    Failed,
}

impl StoreResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StoreResult::Stored => "stored",
            StoreResult::Purged => "purged",
            StoreResult::Older => "older",
            StoreResult::Failed => "error",
        }
    }
}

/// A shared tier backend.
#[async_trait]
pub(crate) trait SharedTier: Send + Sync {
    /// The stored variant of `primary` (`fresh_only`: only a fresh one), or a miss, taking
    /// the URL's fill lock when it is free.
    async fn lookup(
        &'static self,
        primary: UrlHash,
        variant: VariantHash,
        fresh_only: bool,
    ) -> Found;
    /// Write a variant (compare and set), freeing the lock its token names.
    async fn store(&'static self, put: Put) -> StoreResult;
    /// Free the fill lock held under `token`; with `pass`, tell the waiters on other nodes
    /// that the answer was not storable, so they stop waiting at once.
    async fn release(&'static self, primary: UrlHash, token: String, pass: bool);
    /// The largest body written to the tier; larger objects stay in memory only.
    fn max_object_size(&self) -> usize;
    /// How long a node waits for another node's fill (`cache.lock_timeout`).
    fn lock_timeout(&self) -> Duration;
}
