//! The shared tier on Redis: the objects every node reads on a memory miss and writes after a
//! fetch, compared and set in Lua scripts run atomically by Redis (`scripts/*.lua`).
//!
//! Layout (all under `lacquer:`):
//! - `o:<url hash>`: a hash per URL, per variant its encoding (`cache/shared/codec.rs`),
//!   `<variant>:t`, the tier's clock when its fetch began, and `<variant>:g`, its tags. Expires
//!   with the longest-lived variant (freshness, stale windows, keep), so Redis never holds an
//!   object longer than a node would.
//! - `lock:<url hash>`: the cluster's fill lock, `<node>#<n>`, expiring after
//!   `cache.lock_timeout`; `pass:<url hash>`: the URL's last answer was not storable.
//! - `marks`, `softmarks`: sorted sets of purges (`u<url hash>`, `t<tag>`, `a` for everything)
//!   scored by when they were applied, on the tier's clock (microseconds from Redis's `TIME`:
//!   one clock for the whole cluster). An object whose fetch began before a mark that covers it
//!   is not served (or served stale, for a soft mark), and a write whose fetch began before one
//!   is refused; so is a write that an object fetched later already replaced. Marks are kept as
//!   long as the longest-lived object written (`maxlife`), so they hold whatever Redis evicts:
//!   with a `volatile-*` policy only objects, locks and pass marks can go, never a purge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::Cluster;
use crate::cache::key::{UrlHash, VariantHash};
use crate::cache::shared::{Found, Lock, Put, SharedTier, StoreResult};

/// The tier, as this node uses it.
pub(crate) struct RedisTier {
    cluster: &'static Cluster,
    max_object_size: usize,
    lock_timeout: Duration,
    /// How long purge marks live: longer than any fetch can take.
    horizon: Duration,
    locks_taken: AtomicU64,
    lookup: Script,
    store: Script,
    release: Script,
}

/// Purges, scored by when they were applied (see `scripts/purge.lua`).
const MARKS: &str = "lacquer:marks";
const SOFT_MARKS: &str = "lacquer:softmarks";

fn hex(h: u128) -> String {
    format!("{h:032x}")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisTier {
    /// The tier for `cluster`; objects over `max_object_size` stay in memory only.
    pub(crate) fn leak(
        cluster: &'static Cluster,
        max_object_size: u64,
        lock_timeout: Duration,
        horizon: Duration,
    ) -> &'static RedisTier {
        Box::leak(Box::new(RedisTier {
            cluster,
            max_object_size: usize::try_from(max_object_size).unwrap_or(usize::MAX),
            lock_timeout,
            horizon,
            locks_taken: AtomicU64::new(0),
            lookup: Script::new(include_str!("scripts/lookup.lua")),
            store: Script::new(include_str!("scripts/store.lua")),
            release: Script::new(include_str!("scripts/release.lua")),
        }))
    }

    fn object_key(primary: UrlHash) -> String {
        format!("lacquer:o:{}", hex(primary.0))
    }

    /// How long waiters elsewhere skip waiting for a URL whose answer was not storable.
    fn pass_for(&self) -> Duration {
        self.lock_timeout
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

#[async_trait]
impl SharedTier for RedisTier {
    async fn lookup(
        &'static self,
        primary: UrlHash,
        variant: VariantHash,
        fresh_only: bool,
    ) -> Found {
        if self.cluster.purges_pending() {
            // this node applied purges the tier has not had yet: it must not copy from it
            return Found::Unavailable;
        }
        let p = hex(primary.0);
        let prefix = format!("{}#", self.cluster.config.node);
        let token = format!(
            "{prefix}{}",
            self.locks_taken.fetch_add(1, Ordering::Relaxed)
        );
        let mut inv = self.lookup.prepare_invoke();
        inv.key(Self::object_key(primary))
            .key(format!("lacquer:lock:{p}"))
            .key(format!("lacquer:pass:{p}"))
            .key(MARKS)
            .key(SOFT_MARKS)
            .arg(hex(variant.0))
            .arg(if fresh_only { "1" } else { "0" })
            .arg(&token)
            .arg(ms(self.lock_timeout))
            .arg(&p)
            .arg(&prefix);
        let answer: Option<(String, Vec<u8>, String, String, String)> = self
            .cluster
            .call("shared lookup", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await;
        let Some((kind, blob, soft, now, _holder)) = answer else {
            // the lock may have been taken before the answer was lost: free it (or it expires)
            tokio::spawn(async move { self.release(primary, token, false).await });
            return Found::Unavailable;
        };
        let Ok(now) = now.parse::<u64>() else {
            return Found::Unavailable;
        };
        let lock = match kind.as_str() {
            "hit" => {
                let soft_us: u64 = soft.parse().unwrap_or(0);
                return Found::Hit {
                    blob: Bytes::from(blob),
                    soft_ms: soft_us / 1000,
                    now,
                };
            }
            "claimed" => Lock::Claimed(token),
            "locked" => Lock::HeldByOther,
            _ => Lock::Pass,
        };
        Found::Miss { now, lock }
    }

    async fn store(&'static self, put: Put) -> StoreResult {
        let p = hex(put.primary.0);
        let (primary, token) = (put.primary, put.token.clone());
        let mut inv = self.store.prepare_invoke();
        inv.key(Self::object_key(put.primary))
            .key(format!("lacquer:lock:{p}"))
            .key(MARKS)
            .key(format!("lacquer:pass:{p}"))
            .key("lacquer:maxlife")
            .arg(hex(put.variant.0))
            .arg(put.blob)
            .arg(put.start)
            .arg(put.token.unwrap_or_default())
            .arg(ms(put.ttl))
            .arg(u64::try_from(self.horizon.as_micros()).unwrap_or(u64::MAX))
            .arg(&p)
            .arg(put.fresh_until_ms);
        for t in &put.tags {
            inv.arg(&**t);
        }
        // (a large body takes longer than a lookup: a write runs in the background)
        let result: Option<String> = self
            .cluster
            .call_within(
                "shared store",
                self.cluster.config.redis_timeout * 10,
                |mut c| async move { inv.invoke_async(&mut c).await },
            )
            .await;
        match result.as_deref() {
            Some("stored") => StoreResult::Stored,
            Some("purged") => StoreResult::Purged,
            Some("older") => StoreResult::Older,
            _ => {
                if let Some(token) = token {
                    self.release(primary, token, false).await;
                }
                StoreResult::Failed
            }
        }
    }

    async fn release(&'static self, primary: UrlHash, token: String, pass: bool) {
        let p = hex(primary.0);
        let mut inv = self.release.prepare_invoke();
        inv.key(format!("lacquer:lock:{p}"))
            .key(format!("lacquer:pass:{p}"))
            .arg(token)
            .arg(if pass { "1" } else { "0" })
            .arg(ms(self.pass_for()));
        let _: Option<i64> = self
            .cluster
            .call("shared release", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await;
    }

    fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }
}
