//! Following the purge stream: apply what the other nodes published, acknowledge it, announce
//! this node (heartbeats), and drop the memory cache when the stream cannot say what was missed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::{codec, unix_ms, Cluster, EPOCH, MEMBERS, STREAM};
use crate::cache::storage::PurgeScope;
use crate::metrics::metrics;
use crate::purge::{self, PurgeSource};

/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_millis(500);
/// Entries read at once.
const BATCH: usize = 256;
/// How often this node announces itself.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What a reconnect found.
enum Resume {
    /// Nothing can have been missed: go on from where it was.
    Continue,
    /// Purges may have been missed: the memory cache was dropped.
    Dropped,
}

/// The background service that follows the stream.
pub(crate) struct Follower {
    cluster: &'static Cluster,
}

impl Follower {
    /// A follower for `cluster`.
    pub(crate) fn new(cluster: &'static Cluster) -> Follower {
        Follower { cluster }
    }
}

#[async_trait]
impl BackgroundService for Follower {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.cluster.follow() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Where a stream id was made (its milliseconds part).
fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

impl Cluster {
    /// Follow the stream until the process stops.
    async fn follow(&'static self) {
        // where to read from: entries after this id (this process's start at first, so that
        // nothing published while it was already serving and not yet connected is skipped)
        let mut cursor = format!("{}-0", self.started_ms);
        // whether `cursor` is an entry this node applied (then it must still be in the stream)
        let mut applied_any = false;
        // the Redis dataset this node follows (`lacquer:epoch`, set once per dataset)
        let mut epoch: Option<String> = None;
        let mut conn: Option<MultiplexedConnection> = None;
        let mut beat = Instant::now() - HEARTBEAT;
        let mut checked = Instant::now();
        let mut policy_checked = false;
        loop {
            if beat.elapsed() >= HEARTBEAT {
                self.heartbeat().await;
                // purges this node applied while Redis was away reach the others now
                self.publish_deferred().await;
                beat = Instant::now();
            }
            if conn.is_none() {
                let opened = tokio::time::timeout(
                    self.config.redis_timeout * 10,
                    self.client.get_multiplexed_async_connection(),
                )
                .await;
                let Ok(Ok(mut c)) = opened else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if !policy_checked {
                    policy_checked = self.check_eviction_policy(&mut c).await;
                }
                match self.resume(&mut c, &cursor, applied_any, &mut epoch).await {
                    Some(Resume::Continue) => conn = Some(c),
                    Some(Resume::Dropped) => {
                        // the memory is empty: what came before does not matter
                        cursor = format!("{}-0", unix_ms());
                        applied_any = false;
                        conn = Some(c);
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                continue;
            };
            if checked.elapsed() >= HEARTBEAT {
                // while connected too: a stream trimmed past this node (which fell behind by
                // the stream's length) or a Redis that restarted between two reads
                checked = Instant::now();
                match self.resume(c, &cursor, applied_any, &mut epoch).await {
                    Some(Resume::Continue) => {}
                    Some(Resume::Dropped) => {
                        cursor = format!("{}-0", unix_ms());
                        applied_any = false;
                    }
                    None => {
                        conn = None;
                        continue;
                    }
                }
            }
            let read = tokio::time::timeout(
                BLOCK + self.config.redis_timeout,
                redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("STREAMS")
                    .arg(STREAM)
                    .arg(&cursor)
                    .query_async::<Option<StreamReadReply>>(c),
            )
            .await;
            let reply = match read {
                Ok(Ok(r)) => r,
                _ => {
                    // reconnect, and check on the way back that nothing was missed
                    conn = None;
                    continue;
                }
            };
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                let node: Option<String> = entry.get("node");
                if node.as_deref() != Some(self.config.node.as_str()) {
                    self.apply(&entry.id, entry.get::<String>("order")).await;
                }
                cursor = entry.id;
                applied_any = true;
            }
        }
    }

    /// Warn about a Redis eviction policy that could evict the purge stream or the purge marks
    /// (docs/cluster.md). Whether the policy could be read (a managed Redis may refuse CONFIG).
    async fn check_eviction_policy(&self, c: &mut MultiplexedConnection) -> bool {
        let asked = tokio::time::timeout(
            self.config.redis_timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async::<Vec<String>>(c),
        )
        .await;
        let Ok(Ok(answer)) = asked else {
            return false;
        };
        if let Some(policy) = answer.get(1) {
            if policy.starts_with("allkeys") {
                log::warn!(
                    "cluster: Redis's maxmemory-policy is {policy}: it may evict the purge stream \
                     and purge marks; use volatile-lru (docs/cluster.md)"
                );
            }
        }
        true
    }

    /// After (re)connecting: whether this node can go on from `cursor`. A Redis that lost its
    /// data (its epoch changed) or a stream trimmed past the last entry applied may have lost
    /// purges: then the memory cache is dropped. `None`: Redis did not answer.
    async fn resume(
        &'static self,
        c: &mut MultiplexedConnection,
        cursor: &str,
        applied_any: bool,
        epoch: &mut Option<String>,
    ) -> Option<Resume> {
        let bound = self.config.redis_timeout;
        let mine = format!("{}-{}", self.config.node, unix_ms());
        let now_epoch = tokio::time::timeout(
            bound,
            redis::pipe()
                .cmd("SET")
                .arg(EPOCH)
                .arg(&mine)
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(EPOCH)
                .query_async::<(Option<String>,)>(c),
        )
        .await;
        let Ok(Ok((Some(now_epoch),))) = now_epoch else {
            return None;
        };
        let lost = epoch.as_ref().is_some_and(|e| *e != now_epoch);
        *epoch = Some(now_epoch);
        if lost {
            log::warn!("cluster: Redis lost its data (a new epoch); dropping the memory cache");
            self.drop_memory().await;
            return Some(Resume::Dropped);
        }
        if !applied_any {
            return Some(Resume::Continue);
        }
        let found = tokio::time::timeout(
            bound,
            redis::cmd("XRANGE")
                .arg(STREAM)
                .arg(cursor)
                .arg(cursor)
                .query_async::<redis::Value>(c),
        )
        .await;
        match found {
            Ok(Ok(redis::Value::Array(v))) if !v.is_empty() => Some(Resume::Continue),
            Ok(Ok(_)) => {
                log::warn!(
                    "cluster: purges since {cursor} are no longer in Redis; dropping the memory cache"
                );
                self.drop_memory().await;
                Some(Resume::Dropped)
            }
            _ => None,
        }
    }

    /// Apply one entry another node published, and acknowledge it.
    async fn apply(&'static self, id: &str, order: Option<String>) {
        let m = metrics();
        match order.as_deref().map(codec::decode) {
            Some(Ok((order, source))) => {
                // an unsafe request's invalidation keeps hit-for-miss marks here too
                purge::run_order(self.cache, &order, source).await;
                m.cluster_purges_applied.inc();
            }
            other => {
                // a purge this node cannot read may have covered anything it holds
                log::warn!("cluster: unreadable purge {id} ({other:?}); dropping the memory cache");
                self.drop_memory().await;
            }
        }
        let delay = unix_ms().saturating_sub(id_ms(id));
        m.cluster_purge_delay
            .observe(Duration::from_millis(delay).as_secs_f64());
        if let Ok(mut p) = self.position.lock() {
            *p = (id.to_string(), delay);
        }
        self.acknowledge(id).await;
    }

    async fn drop_memory(&'static self) {
        purge::run(self.cache, &[PurgeScope::All], false, PurgeSource::Request).await;
        metrics().cluster_memory_drops.inc();
    }

    /// Announce this node: live (for acknowledgements), its last purge and its lag.
    async fn heartbeat(&self) {
        let (applied, lag) = self
            .position
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|_| ("-".to_string(), 0));
        // (`-`: nothing applied yet)
        let node = self.config.node.clone();
        let key = format!("lacquer:node:{node}");
        let now = unix_ms();
        let live_since = now.saturating_sub(super::LIVE_FOR.as_millis() as u64);
        let me = format!("{}-{}", std::process::id(), self.started_ms);
        let mine = me.clone();
        let seen: Option<(Option<String>, u64)> = self
            .call("heartbeat", |mut c| async move {
                redis::pipe()
                    // who wrote this node's record last: another process with this name?
                    .cmd("HGET")
                    .arg(&key)
                    .arg("instance")
                    .cmd("ZADD")
                    .arg(MEMBERS)
                    .arg(now)
                    .arg(&node)
                    .ignore()
                    .cmd("HSET")
                    .arg(&key)
                    .arg("last_purge")
                    .arg(&applied)
                    .arg("lag_ms")
                    .arg(lag)
                    .arg("instance")
                    .arg(&mine)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(60)
                    .ignore()
                    // nodes gone for a day leave the member list
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(MEMBERS)
                    .arg("-inf")
                    .arg(now.saturating_sub(86_400_000))
                    .ignore()
                    .cmd("ZCOUNT")
                    .arg(MEMBERS)
                    .arg(live_since)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Some((Some(other), _)) = &seen {
            if *other != me {
                // both keep writing: each says so about once a minute
                let last = self.name_clash_logged_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 60_000 {
                    self.name_clash_logged_ms.store(now, Ordering::Relaxed);
                    log::warn!(
                        "cluster: another process also calls itself \"{}\"; node names must be unique (cluster.node), or the two skip each other's purges",
                        self.config.node
                    );
                }
            }
        }
        // (0 while Redis cannot say)
        let n = seen.map_or(0, |(_, n)| i64::try_from(n).unwrap_or(i64::MAX));
        metrics().cluster_nodes.set(n);
    }
}
