//! Several lacquer nodes behind one load balancer, sharing their purges through Redis (or
//! Valkey): every purge a node accepts (PURGE, BAN, PURGEKEYS, the admin API, the invalidation
//! after an unsafe request) is applied to its own memory and appended to a Redis Stream; every
//! node follows the stream, applies what the others published and acknowledges it; the node
//! that took the purge waits up to `cluster.purge_ack_timeout` for the live nodes'
//! acknowledgements and says which came. A node that cannot know what it missed (its place in
//! the stream trimmed away, or Redis lost its data) drops its whole memory cache rather than
//! serve a purged page. Redis down or slow costs no client error: every call is bounded by
//! `cluster.redis_timeout`, purges still apply locally and are reported as not replicated.
//!
//! With the shared tier on (`cluster.shared_max_object_size` above 0), a purge is applied to
//! the tier and appended to the stream in one atomic step, before this node applies it to its
//! memory: no node can copy a purged object back from the tier once it has applied the purge.
//!
//! Redis calls go through a circuit breaker: after a few failures in a row, calls are not
//! tried for a moment (nodes serve from memory and the app without waiting on timeouts).
//!
//! Parts: `cluster/codec.rs` (a purge on the stream), `cluster/follow.rs` (following the stream,
//! heartbeats), `cluster/tier.rs` (the shared tier, with its Lua scripts in `cluster/scripts/`).

mod codec;
mod follow;
mod tier;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

use crate::cache::storage::PurgeScope;
use crate::cache::CacheRuntime;
use crate::config::ClusterConfig;
use crate::metrics::metrics;
use crate::purge::wire::PurgeOrder;
use crate::purge::PurgeSource;

pub(crate) use follow::Follower;
pub(crate) use tier::RedisTier;

/// The stream every purge goes through.
const STREAM: &str = "lacquer:purges";
/// Entries kept in the stream (approximately): a node away for longer than this many purges
/// drops its memory cache when it comes back.
const STREAM_LEN: usize = 100_000;
/// Set once per Redis dataset: a new value means Redis lost what it held (the stream included).
const EPOCH: &str = "lacquer:epoch";
/// The live nodes, scored by their last heartbeat (Unix milliseconds).
const MEMBERS: &str = "lacquer:members";
/// A node whose last heartbeat is older than this is not waited for.
const LIVE_FOR: Duration = Duration::from_secs(3);
/// Failed Redis calls in a row that open the circuit breaker...
const BREAKER_FAILURES: u32 = 3;
/// ...for this long: calls fail at once, without waiting for `cluster.redis_timeout`.
const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// Purges kept for publication while Redis is away; past it, one purge of everything.
const MAX_DEFERRED: usize = 10_000;
/// How long the tier's purge marks live (the longest a fetch may take).
const DEFAULT_HORIZON: Duration = Duration::from_secs(600);

/// This node's part in the cluster (one per process, leaked at start-up).
pub(crate) struct Cluster {
    config: ClusterConfig,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// Whether "unreachable" was logged since Redis was last reachable.
    warned: AtomicBool,
    cache: &'static CacheRuntime,
    up: AtomicBool,
    /// The last stream entry this node applied, and when (what `GET /cluster` shows).
    position: Mutex<(String, u64)>,
    /// When this process started (Unix milliseconds): it follows the stream from there.
    started_ms: u64,
    /// Failed calls in a row, and until when (Unix ms) the breaker stays open.
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    /// How long the tier's purge marks live.
    horizon: Duration,
    publish: redis::Script,
    /// Purges applied here that could not be published (Redis down), in order, published
    /// when Redis is back; meanwhile this node does not read from the shared tier.
    deferred: Mutex<VecDeque<(PurgeOrder, PurgeSource)>>,
    deferred_count: AtomicUsize,
    /// When a clash of node names was last logged (Unix ms).
    name_clash_logged_ms: AtomicU64,
}

/// What became of a purge on the other nodes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Replication {
    /// Appended to the stream: every node applies it (now, or when it comes back).
    pub(crate) replicated: bool,
    /// Each live node and whether it acknowledged within `cluster.purge_ack_timeout`.
    pub(crate) nodes: BTreeMap<String, bool>,
}

/// A node as `GET /cluster` lists it.
#[derive(Debug, Serialize)]
struct NodeView {
    name: String,
    last_heartbeat_ms_ago: u64,
    last_purge: String,
    lag_ms: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    /// Join the cluster `config` describes; `Err` says why the Redis URL is unusable (the
    /// connection itself is made, and remade, when needed).
    pub(crate) fn leak(
        config: &ClusterConfig,
        cache: &'static CacheRuntime,
    ) -> Result<&'static Cluster, String> {
        let client = redis::Client::open(config.redis.as_str())
            .map_err(|e| format!("cluster.redis: not a usable Redis URL ({:?})", e.kind()))?;
        Ok(Box::leak(Box::new(Cluster {
            config: config.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            warned: AtomicBool::new(false),
            cache,
            up: AtomicBool::new(false),
            position: Mutex::new(("-".to_string(), 0)),
            started_ms: unix_ms(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            horizon: cache.storage.purge_horizon().max(DEFAULT_HORIZON),
            publish: redis::Script::new(include_str!("cluster/scripts/purge.lua")),
            deferred: Mutex::new(VecDeque::new()),
            deferred_count: AtomicUsize::new(0),
            name_clash_logged_ms: AtomicU64::new(0),
        })))
    }

    /// Run one Redis call within `cluster.redis_timeout`; a failure marks Redis down.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_within(what, self.config.redis_timeout, f).await
    }

    /// Run one Redis call within `bound`, through the circuit breaker: while it is open, calls
    /// fail at once; when it is due to close, one call tries (the others still fail at once).
    async fn call_within<T, F, Fut>(&self, what: &str, bound: Duration, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let until = self.open_until_ms.load(Ordering::Acquire);
        let now = unix_ms();
        if now < until {
            return None;
        }
        if self.failures.load(Ordering::Acquire) >= BREAKER_FAILURES {
            // half open: this call is the one that tries
            let next = now + BREAKER_OPEN.as_millis() as u64;
            if self
                .open_until_ms
                .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return None;
            }
        }
        let conn = match tokio::time::timeout(bound, self.connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return self.down(what, &e.to_string()),
            Err(_) => return self.down(what, "connect timed out"),
        };
        match tokio::time::timeout(bound, f(conn)).await {
            Ok(Ok(v)) => {
                self.set_up(true);
                Some(v)
            }
            Ok(Err(e)) => self.down(what, &e.to_string()),
            Err(_) => self.down(what, "timed out"),
        }
    }

    /// The connection (multiplexed, shared by every call), made when there is none.
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        // one attempt per call: the breaker paces the attempts, not the client's own retries
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(self.config.redis_timeout);
        let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    fn down<T>(&self, what: &str, why: &str) -> Option<T> {
        if self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= BREAKER_FAILURES {
            self.open_until_ms.store(
                unix_ms() + BREAKER_OPEN.as_millis() as u64,
                Ordering::Release,
            );
            // a connection that failed this often is made anew for the next try (the client's
            // own reconnection gives up after a long outage)
            if let Ok(mut conn) = self.conn.try_lock() {
                *conn = None;
            }
        }
        let was_up = self.up.swap(false, Ordering::AcqRel);
        // (and once if it was never reached: a wrong address or password shows at start-up)
        let first = !self.warned.swap(true, Ordering::AcqRel);
        if was_up || first {
            log::warn!(
                "cluster: Redis unreachable ({what}: {why}); serving from memory and the app"
            );
        }
        metrics().cluster_redis_up.set(0);
        None
    }

    fn set_up(&self, up: bool) {
        if up && self.failures.swap(0, Ordering::AcqRel) > 0 {
            self.open_until_ms.store(0, Ordering::Release);
        }
        if up && !self.up.swap(true, Ordering::AcqRel) {
            log::info!("cluster: Redis reachable");
        }
        metrics().cluster_redis_up.set(i64::from(up));
    }

    /// Whether the last Redis call succeeded.
    pub(crate) fn redis_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Apply a purge across the cluster: to the shared tier and the stream first (one atomic
    /// script), then to this node's memory (`local`), then wait for the other live nodes to
    /// apply it (not for an unsafe request's invalidation: its response does not wait).
    pub(crate) async fn purge<T>(
        &self,
        order: &PurgeOrder,
        source: PurgeSource,
        local: impl Future<Output = T>,
    ) -> (T, Replication) {
        let m = metrics();
        let id = self.publish(order, source).await;
        let applied = local.await;
        let Some(id) = id else {
            m.cluster_purges_published
                .with_label_values(&["error"])
                .inc();
            self.defer(order, source);
            let nodes = BTreeMap::from([(self.config.node.clone(), true)]);
            let replicated = false;
            return (applied, Replication { replicated, nodes });
        };
        m.cluster_purges_published.with_label_values(&["ok"]).inc();
        // this node applied it already: its last purge, without delay
        if let Ok(mut p) = self.position.lock() {
            *p = (id.clone(), 0);
        }
        self.acknowledge(&id).await;
        let mut nodes = BTreeMap::from([(self.config.node.clone(), true)]);
        if source == PurgeSource::Unsafe {
            let replicated = true;
            return (applied, Replication { replicated, nodes });
        }
        let deadline = Instant::now() + self.config.purge_ack_timeout;
        loop {
            let live = self.live_nodes().await.unwrap_or_default();
            let acks = self.acks(&id).await.unwrap_or_default();
            for n in live {
                let acked = acks.contains(&n);
                nodes.insert(n, acked);
            }
            nodes.insert(self.config.node.clone(), true);
            if nodes.values().all(|a| *a) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (
            applied,
            Replication {
                replicated: true,
                nodes,
            },
        )
    }

    /// Keep a purge that could not be published, to publish when Redis is back. Past
    /// [`MAX_DEFERRED`], one purge of everything stands for them all.
    fn defer(&self, order: &PurgeOrder, source: PurgeSource) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if deferred.len() >= MAX_DEFERRED {
            deferred.clear();
            let all = PurgeOrder {
                scopes: vec![PurgeScope::All],
                tag_patterns: Vec::new(),
                bans: Vec::new(),
                soft: false,
            };
            deferred.push_back((all, PurgeSource::Request));
        } else {
            deferred.push_back((order.clone(), source));
        }
        self.deferred_count.store(deferred.len(), Ordering::Release);
    }

    /// Whether purges applied here still wait to be published (then the shared tier may still
    /// hold what they purged).
    pub(crate) fn purges_pending(&self) -> bool {
        self.deferred_count.load(Ordering::Acquire) > 0
    }

    /// Publish the deferred purges, oldest first, while Redis takes them.
    async fn publish_deferred(&self) {
        while self.purges_pending() {
            let next = {
                let deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
                deferred.front().cloned()
            };
            let Some((order, source)) = next else {
                break;
            };
            if self.publish(&order, source).await.is_none() {
                return;
            }
            metrics()
                .cluster_purges_published
                .with_label_values(&["ok"])
                .inc();
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            deferred.pop_front();
            self.deferred_count.store(deferred.len(), Ordering::Release);
        }
    }

    /// Apply `order` to the shared tier and append it to the stream; the entry's id.
    async fn publish(&self, order: &PurgeOrder, source: PurgeSource) -> Option<String> {
        let mut inv = self.publish.prepare_invoke();
        inv.arg(&self.config.node)
            .arg(codec::encode(order, source))
            .arg(STREAM_LEN)
            .arg(u64::try_from(self.horizon.as_millis()).unwrap_or(u64::MAX))
            .arg(if order.soft { "1" } else { "0" });
        let mut everything = !order.tag_patterns.is_empty() || !order.bans.is_empty();
        for scope in &order.scopes {
            match scope {
                PurgeScope::Url(h) => {
                    inv.arg(format!("u{:032x}", h.0));
                }
                PurgeScope::AnySchemeUrl(hashes) => {
                    for h in hashes {
                        inv.arg(format!("u{:032x}", h.0));
                    }
                }
                PurgeScope::Tag(t) => {
                    inv.arg(format!("t{t}"));
                }
                // the tier cannot match these: everything in it is purged (docs/cluster.md)
                PurgeScope::Prefix(_) | PurgeScope::All | PurgeScope::Ban(_) => everything = true,
            }
        }
        if everything {
            inv.arg("a");
        }
        self.call(
            "publish",
            |mut c| async move { inv.invoke_async(&mut c).await },
        )
        .await
    }

    /// Record that this node applied stream entry `id`.
    async fn acknowledge(&self, id: &str) {
        let key = format!("lacquer:acks:{id}");
        let node = self.config.node.clone();
        let _: Option<()> = self
            .call("acknowledge", |mut c| async move {
                redis::pipe()
                    .cmd("SADD")
                    .arg(&key)
                    .arg(&node)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(120)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await;
    }

    async fn acks(&self, id: &str) -> Option<Vec<String>> {
        let key = format!("lacquer:acks:{id}");
        self.call("acks", |mut c| async move {
            redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await
        })
        .await
    }

    /// The nodes whose last heartbeat is recent.
    async fn live_nodes(&self) -> Option<Vec<String>> {
        let since = unix_ms().saturating_sub(LIVE_FOR.as_millis() as u64);
        self.call("members", |mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(MEMBERS)
                .arg(since)
                .arg("+inf")
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// The cluster as `GET /cluster` shows it.
    pub(crate) async fn view(&self) -> serde_json::Value {
        let since = unix_ms().saturating_sub(60_000);
        let members: Option<Vec<(String, u64)>> = self
            .call("members", |mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(MEMBERS)
                    .arg(since)
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await;
        let now = unix_ms();
        let mut nodes = Vec::new();
        for (name, beat) in members.unwrap_or_default() {
            let key = format!("lacquer:node:{name}");
            let info: Option<BTreeMap<String, String>> = self
                .call("node", |mut c| async move {
                    redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
                })
                .await;
            let info = info.unwrap_or_default();
            let last_purge = info.get("last_purge").cloned().unwrap_or_default();
            let lag_ms = info.get("lag_ms").and_then(|l| l.parse().ok()).unwrap_or(0);
            nodes.push(NodeView {
                name,
                last_heartbeat_ms_ago: now.saturating_sub(beat),
                last_purge,
                lag_ms,
            });
        }
        serde_json::json!({
            "node": self.config.node,
            "redis_up": self.redis_up(),
            "nodes": nodes,
        })
    }
}
