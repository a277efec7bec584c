//! The part of lacquer a reload replaces: the validated config and what is built from it (the
//! app-server pool with its health checks, the purge gate). Requests take a snapshot when they
//! start, so a reload never changes a request half-way; the cache, the listeners and open
//! connections are not part of it and survive every reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_error::Result;

use crate::config::Config;
use crate::purge::PurgeGate;
use crate::upstream::Upstreams;

/// One generation of the reloadable state.
pub(crate) struct Live {
    /// The config it was built from.
    pub(crate) config: Arc<Config>,
    /// The app servers.
    pub(crate) upstreams: Upstreams,
    /// The named pools rules route to, in `pools:` order.
    pub(crate) pools: Vec<(String, Upstreams)>,
    /// Who may purge, and how often.
    pub(crate) purge: PurgeGate,
}

/// The current generation, shared by the proxy, the admin app, the health checker and the
/// reloader.
pub(crate) type SharedLive = Arc<ArcSwap<Live>>;

impl Live {
    /// Build a generation from `config`.
    pub(crate) fn new(config: Arc<Config>) -> Result<Live> {
        let upstreams = Upstreams::new(&config.upstreams, config.timeouts, &config.health_check)?;
        let mut pools = Vec::with_capacity(config.pools.len());
        for (name, servers) in &config.pools {
            let pool = Upstreams::new(servers, config.timeouts, &config.health_check)?;
            pools.push((name.clone(), pool));
        }
        Ok(Live {
            purge: PurgeGate::new(&config.purge),
            upstreams,
            pools,
            config,
        })
    }

    /// The app servers for a request under `rule`: its pool, else `upstreams`.
    pub(crate) fn upstreams_for(&self, rule: Option<usize>) -> &Upstreams {
        let pool = rule
            .and_then(|i| self.config.rules.get(i))
            .and_then(|r| r.pool.as_deref());
        match pool {
            Some(name) => self
                .pools
                .iter()
                .find(|(n, _)| n == name)
                .map_or(&self.upstreams, |(_, p)| p),
            None => &self.upstreams,
        }
    }

    /// Every pool of app servers: `upstreams`, then the named pools.
    pub(crate) fn all_upstreams(&self) -> impl Iterator<Item = &Upstreams> {
        std::iter::once(&self.upstreams).chain(self.pools.iter().map(|(_, p)| p))
    }

    /// Give the keys a running process cannot change (listeners, threads, cache size limits,
    /// tag headers, access log) their old values in `new`, so every part of lacquer sees one
    /// coherent config; returns `key: old -> new` for each that the file changed.
    pub(crate) fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<String> {
        let mut changed = Vec::new();
        macro_rules! keep {
            ($key:literal, $($field:ident).+) => {
                if new.$($field).+ != old.$($field).+ {
                    changed.push(format!(
                        "{}: {:?} -> {:?}",
                        $key,
                        old.$($field).+,
                        new.$($field).+
                    ));
                    new.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!("listen", listen);
        keep!("admin.listen", admin_listen);
        keep!("threads", threads);
        keep!("upstream_ca_file", upstream_ca_file);
        keep!("cache.max_size", cache.max_size);
        keep!("cache.max_object_size", cache.max_object_size);
        keep!("cache.keep", cache.keep);
        keep!("cache.hit_for_miss_keys", cache.hit_for_miss_keys);
        keep!("purge.tag_headers", purge.tag_headers);
        keep!("purge.soft_grace", purge.soft_grace);
        keep!("access_log.target", access_log_target);
        keep!("access_log.format", access_log_format);
        keep!("cluster", cluster);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_keep_their_old_values_and_are_reported() {
        let old = Config::from_yaml("upstreams:\n  - addr: \"127.0.0.1:1\"\n").unwrap();
        let mut new = Config::from_yaml(
            "upstreams:\n  - addr: \"127.0.0.1:2\"\ncache:\n  max_size: 64MiB\n  default_ttl: 5s\n",
        )
        .unwrap();
        let changed = Live::keep_restart_only(&old, &mut new);
        assert_eq!(
            changed,
            vec![format!(
                "cache.max_size: {} -> {}",
                256u64 << 20,
                64u64 << 20
            )]
        );
        assert_eq!(new.cache.max_size, 256 << 20, "kept");
        assert_eq!(new.upstreams[0].addr.port(), 2, "reloadable keys change");
        assert_eq!(
            new.cache.default_ttl.lifetime(200),
            Some(std::time::Duration::from_secs(5))
        );
    }
}
