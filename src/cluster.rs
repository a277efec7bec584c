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
//! Parts: `cluster/codec.rs` (a purge on the stream), `cluster/follow.rs` (following the stream,
//! heartbeats). Not here: the shared object tier (docs/cluster.md says what is built).

mod codec;
mod follow;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cache::CacheRuntime;
use crate::config::ClusterConfig;
use crate::metrics::metrics;
use crate::purge::wire::PurgeOrder;
use crate::purge::PurgeSource;

pub(crate) use follow::Follower;

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

/// This node's part in the cluster (one per process, leaked at start-up).
pub(crate) struct Cluster {
    config: ClusterConfig,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    cache: &'static CacheRuntime,
    up: AtomicBool,
    /// The last stream entry this node applied, and when (what `GET /cluster` shows).
    position: Mutex<(String, u64)>,
    /// When this process started (Unix milliseconds): it follows the stream from there.
    started_ms: u64,
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
            conn: OnceCell::new(),
            cache,
            up: AtomicBool::new(false),
            position: Mutex::new(("-".to_string(), 0)),
            started_ms: unix_ms(),
        })))
    }

    /// Run one Redis call within `cluster.redis_timeout`; a failure marks Redis down.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let bound = self.config.redis_timeout;
        let conn = match tokio::time::timeout(
            bound,
            self.conn.get_or_try_init(|| {
                let client = self.client.clone();
                async move { ConnectionManager::new(client).await }
            }),
        )
        .await
        {
            Ok(Ok(c)) => c.clone(),
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

    fn down<T>(&self, what: &str, why: &str) -> Option<T> {
        if self.up.swap(false, Ordering::AcqRel) {
            log::warn!(
                "cluster: Redis unreachable ({what}: {why}); serving from memory and the app"
            );
        }
        metrics().cluster_redis_up.set(0);
        None
    }

    fn set_up(&self, up: bool) {
        if up && !self.up.swap(true, Ordering::AcqRel) {
            log::info!("cluster: Redis reachable");
        }
        metrics().cluster_redis_up.set(i64::from(up));
    }

    /// Whether the last Redis call succeeded.
    pub(crate) fn redis_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Publish a purge this node has applied, and wait for the other live nodes to apply it.
    pub(crate) async fn replicate(&self, order: &PurgeOrder, source: PurgeSource) -> Replication {
        let m = metrics();
        let body = codec::encode(order, source);
        let node = self.config.node.clone();
        let id: Option<String> = self
            .call("publish", |mut c| async move {
                redis::cmd("XADD")
                    .arg(STREAM)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_LEN)
                    .arg("*")
                    .arg("node")
                    .arg(&node)
                    .arg("order")
                    .arg(&body)
                    .query_async(&mut c)
                    .await
            })
            .await;
        let Some(id) = id else {
            m.cluster_purges_published
                .with_label_values(&["error"])
                .inc();
            return Replication {
                replicated: false,
                nodes: BTreeMap::from([(self.config.node.clone(), true)]),
            };
        };
        m.cluster_purges_published.with_label_values(&["ok"]).inc();
        // this node applied it already
        self.acknowledge(&id).await;
        let deadline = Instant::now() + self.config.purge_ack_timeout;
        let mut nodes: BTreeMap<String, bool>;
        loop {
            let live = self.live_nodes().await.unwrap_or_default();
            let acks = self.acks(&id).await.unwrap_or_default();
            nodes = live
                .into_iter()
                .map(|n| {
                    let acked = acks.contains(&n);
                    (n, acked)
                })
                .collect();
            nodes.insert(self.config.node.clone(), true);
            if nodes.values().all(|a| *a) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Replication {
            replicated: true,
            nodes,
        }
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
