//! The `cluster:` section, raw as serde reads it and validated into [`ClusterConfig`]: several
//! lacquer nodes that share purges through Redis. Absent, a node behaves exactly as alone.
//!
//! Not here: the cluster's runtime (`cluster.rs` at the top).

use std::time::Duration;

use serde::Deserialize;

use super::units::{parse_duration, parse_size};

/// `cluster:` as written (its Debug leaves out the URL, which may hold a password).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `cluster.redis`: the Redis (or Valkey) URL.
    pub redis: String,
    /// `cluster.node`: this node's name.
    #[serde(default)]
    pub node: Option<String>,
    /// `cluster.purge_ack_timeout`: how long a purge waits for the other nodes.
    #[serde(default = "default_ack_timeout")]
    pub purge_ack_timeout: String,
    /// `cluster.redis_timeout`: the bound on every Redis call.
    #[serde(default = "default_redis_timeout")]
    pub redis_timeout: String,
    /// `cluster.shared_max_object_size`: the largest body kept in the shared tier.
    #[serde(default = "default_shared_max")]
    pub shared_max_object_size: String,
}

fn default_shared_max() -> String {
    "1MiB".into()
}

fn default_ack_timeout() -> String {
    "250ms".into()
}

fn default_redis_timeout() -> String {
    "100ms".into()
}

/// A validated `cluster:` (its Debug, which a reload's warning shows, hides the URL's
/// password).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis URL (`redis://host:port/db`, `rediss://` for TLS).
    pub redis: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// How long a purge waits for every live node's acknowledgement.
    pub purge_ack_timeout: Duration,
    /// The bound on every Redis call; past it the call counts as failed.
    pub redis_timeout: Duration,
    /// The largest body kept in the shared tier (0: no shared tier, purges only).
    pub shared_max_object_size: u64,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &redacted(&self.redis))
            .field("node", &self.node)
            .field("purge_ack_timeout", &self.purge_ack_timeout)
            .field("redis_timeout", &self.redis_timeout)
            .field("shared_max_object_size", &self.shared_max_object_size)
            .finish()
    }
}

impl std::fmt::Debug for RawCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCluster")
            .field("redis", &redacted(&self.redis))
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A Redis URL with its password (`redis://user:secret@host`) replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Validate `cluster:`; `listen` names the default node name's port.
pub(super) fn cluster(
    errors: &mut Vec<String>,
    raw: &RawCluster,
    listen: Option<std::net::SocketAddr>,
) -> ClusterConfig {
    let ok_scheme = ["redis://", "valkey://"]
        .iter()
        .any(|s| raw.redis.starts_with(s));
    if raw.redis.starts_with("rediss://") || raw.redis.starts_with("valkeys://") {
        errors.push(
            "cluster.redis: TLS to Redis is not built in; use redis:// (on a private network, or through a local TLS tunnel such as stunnel)"
                .to_string(),
        );
    } else if !ok_scheme {
        // (the URL may hold a password: not repeated)
        errors.push("cluster.redis: expected a URL like \"redis://127.0.0.1:6379/0\"".to_string());
    }
    let node = match &raw.node {
        Some(n) => {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !ok {
                errors.push(format!(
                    "cluster.node: expected letters, digits, '-', '_', '.' or ':' (at most 64), got \"{n}\""
                ));
            }
            n.clone()
        }
        None => default_node_name(listen),
    };
    let duration = |errors: &mut Vec<String>, key: &str, text: &str| match parse_duration(text) {
        Some(d) if !d.is_zero() => d,
        _ => {
            errors.push(format!(
                "cluster.{key}: expected a duration longer than 0 like \"250ms\", got \"{text}\""
            ));
            Duration::from_millis(100)
        }
    };
    ClusterConfig {
        redis: raw.redis.clone(),
        node,
        purge_ack_timeout: duration(errors, "purge_ack_timeout", &raw.purge_ack_timeout),
        redis_timeout: duration(errors, "redis_timeout", &raw.redis_timeout),
        shared_max_object_size: match parse_size(&raw.shared_max_object_size) {
            // (Redis takes values of up to 512 MB)
            Some(n) if n <= 256 << 20 => n,
            _ => {
                errors.push(format!(
                    "cluster.shared_max_object_size: expected a size of at most 256MiB like \"1MiB\" (0: no shared tier), got \"{}\"",
                    raw.shared_max_object_size
                ));
                0
            }
        },
    }
}

/// The host name and the first listener's port (`web-1:6081`).
fn default_node_name(listen: Option<std::net::SocketAddr>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lacquer".to_string());
    match listen {
        Some(a) => format!("{host}:{}", a.port()),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn cluster_settings_are_validated() {
        let c = Config::from_yaml(
            "upstreams: [{addr: \"127.0.0.1:1\"}]\ncluster: {redis: \"redis://127.0.0.1:6379/0\", node: web-1}\n",
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.node, "web-1");
        assert_eq!(
            cluster.purge_ack_timeout,
            std::time::Duration::from_millis(250)
        );
        let e = Config::from_yaml(
            "upstreams: [{addr: \"127.0.0.1:1\"}]\ncluster: {redis: \"127.0.0.1:6379\", node: \"a b\", purge_ack_timeout: 0s}\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(
            e,
            vec![
                "cluster.redis: expected a URL like \"redis://127.0.0.1:6379/0\"",
                "cluster.node: expected letters, digits, '-', '_', '.' or ':' (at most 64), got \"a b\"",
                "cluster.purge_ack_timeout: expected a duration longer than 0 like \"250ms\", got \"0s\"",
            ]
        );
        let alone = Config::from_yaml("upstreams: [{addr: \"127.0.0.1:1\"}]\n").unwrap();
        assert!(alone.cluster.is_none());
    }

    #[test]
    fn the_redis_password_is_never_shown() {
        let c = Config::from_yaml(
            "upstreams: [{addr: \"127.0.0.1:1\"}]\ncluster: {redis: \"redis://app:s3cret@10.0.0.5:6379/0\", node: a}\n",
        )
        .unwrap();
        let shown = format!("{:?}", c.cluster);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://app:***@10.0.0.5:6379/0"), "{shown}");
        let e = Config::from_yaml(
            "upstreams: [{addr: \"127.0.0.1:1\"}]\ncluster: {redis: \"rediss://10.0.0.5:6379/0\"}\n",
        )
        .unwrap_err()
        .0;
        assert!(e[0].contains("TLS to Redis is not built in"), "{e:?}");
    }
}
