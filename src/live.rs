//! The part of lacquer a reload replaces: the validated config and what is built from it (the
//! app-server pool with its health checks, the purge rules). Requests take a snapshot when they
//! start, so a reload never changes a request half-way; the cache, the listeners and open
//! connections are not part of it and survive every reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_error::Result;

use crate::config::Config;
use crate::purge::PurgeAuth;
use crate::upstream::Upstreams;

/// One generation of the reloadable state.
pub struct Live {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// The app servers.
    pub upstreams: Upstreams,
    /// Who may purge.
    pub auth: PurgeAuth,
}

/// The current generation, shared by the proxy, the admin app, the health checker and the
/// reloader.
pub type SharedLive = Arc<ArcSwap<Live>>;

impl Live {
    /// Build a generation from `config`.
    pub fn new(config: Arc<Config>) -> Result<Live> {
        let upstreams = Upstreams::new(&config.upstreams, config.timeouts, &config.health_check)?;
        Ok(Live {
            auth: PurgeAuth::new(&config.purge),
            upstreams,
            config,
        })
    }

    /// The keys that a reload cannot change, with their old and new values when they differ.
    pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        let mut check = |key: &str, a: String, b: String| {
            if a != b {
                changed.push(format!("{key}: {a} -> {b}"));
            }
        };
        check(
            "listen",
            format!("{:?}", old.listen),
            format!("{:?}", new.listen),
        );
        check(
            "admin.listen",
            old.admin_listen.to_string(),
            new.admin_listen.to_string(),
        );
        check("threads", old.threads.to_string(), new.threads.to_string());
        check(
            "cache.max_size",
            old.cache.max_size.to_string(),
            new.cache.max_size.to_string(),
        );
        check(
            "cache.max_object_size",
            old.cache.max_object_size.to_string(),
            new.cache.max_object_size.to_string(),
        );
        check(
            "cache.keep",
            format!("{:?}", old.cache.keep),
            format!("{:?}", new.cache.keep),
        );
        check(
            "cache.hit_for_miss_keys",
            old.cache.hit_for_miss_keys.to_string(),
            new.cache.hit_for_miss_keys.to_string(),
        );
        check(
            "purge.tag_headers",
            format!("{:?}", old.purge.tag_headers),
            format!("{:?}", new.purge.tag_headers),
        );
        check(
            "purge.soft_grace",
            format!("{:?}", old.purge.soft_grace),
            format!("{:?}", new.purge.soft_grace),
        );
        check(
            "access_log",
            format!("{:?} {:?}", old.access_log_target, old.access_log_format),
            format!("{:?} {:?}", new.access_log_target, new.access_log_format),
        );
        changed
    }
}
