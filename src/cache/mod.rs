//! The cache: key, policy, freshness, Vary, storage and the `Cache-Status` header, plus the
//! process-wide pieces pingora-cache wants as `&'static` (storage, cache lock, hit-for-miss
//! predictor), bundled in [`CacheRuntime`]. The stored header is built in `stored_header.rs`.

pub mod ban;
pub(crate) mod conditional;
pub(crate) mod directives;
pub mod freshness;
pub(crate) mod http_date;
pub(crate) mod index;
pub mod key;
pub(crate) mod meta_codec;
pub(crate) mod policy;
pub(crate) mod purge_log;
pub(crate) mod range;
pub(crate) mod shared;
pub(crate) mod status;
pub mod storage;
pub(crate) mod stored_header;
pub mod tags;
pub(crate) mod vary;

use std::time::Duration;

use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::{CacheablePredictor, Predictor};

use crate::config::Config;
use storage::{MemoryStorage, StorageSettings};

/// Shards of the hit-for-miss predictor.
pub const PREDICTOR_SHARDS: usize = 32;

/// The process-wide cache pieces. Leaked once at start-up; a config reload keeps them, so a
/// reload never drops the cache.
pub struct CacheRuntime {
    /// Where objects live.
    pub storage: &'static MemoryStorage,
    /// Coalesces concurrent misses for one object into one origin fetch.
    pub lock: &'static CacheKeyLockImpl,
    /// Remembers keys whose responses were uncacheable (Varnish's hit-for-miss).
    pub predictor: &'static Predictor<PREDICTOR_SHARDS>,
}

impl CacheRuntime {
    /// Build and leak the cache pieces for `config`.
    pub fn leak(config: &Config) -> &'static CacheRuntime {
        let t = &config.timeouts;
        let settings = StorageSettings {
            max_size: config.cache.max_size,
            max_object_size: config.cache.max_object_size,
            keep: config.cache.keep,
            tag_headers: config.purge.tag_headers.clone(),
            soft_grace: config.purge.soft_grace,
            // the longest a fill can run: waiting on a lock, connecting, rendering, and a
            // generous allowance for the body, with a floor of ten minutes
            purge_horizon: (config.cache.lock_timeout
                + t.connect
                + t.first_byte * 2
                + t.between_bytes * 4)
                .max(Duration::from_secs(600)),
        };
        let config = &config.cache;
        let storage: &'static MemoryStorage = Box::leak(Box::new(MemoryStorage::new(settings)));
        // A lock holder that takes longer than this lets the waiters compete again; it is the
        // same bound as a waiter's own patience.
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(config.lock_timeout));
        let shard_capacity = config.hit_for_miss_keys.div_ceil(PREDICTOR_SHARDS).max(1);
        let predictor: &'static Predictor<PREDICTOR_SHARDS> = Box::leak(Box::new(Predictor::new(
            shard_capacity,
            Some(not_a_url_property),
        )));
        Box::leak(Box::new(CacheRuntime {
            storage,
            lock,
            predictor,
        }))
    }
}

impl CacheRuntime {
    /// Forget that a URL's last answer was uncacheable (a purge of it: its next answer decides).
    pub fn forget_uncacheable(&self, url: key::UrlHash) {
        let mut k = pingora_cache::CacheKey::new("", "");
        k.set_primary_bin_override(url.0.to_be_bytes());
        self.predictor.mark_cacheable(&k);
    }

    /// Whether a URL is remembered as uncacheable (hit-for-miss).
    pub(crate) fn remembered_uncacheable(&self, url: key::UrlHash) -> bool {
        let mut k = pingora_cache::CacheKey::new("", "");
        k.set_primary_bin_override(url.0.to_be_bytes());
        !self.predictor.cacheable_prediction(&k)
    }
}

/// Reasons not to store a response that say nothing about the URL's next response, so they must
/// not make the URL hit-for-miss: errors (a 5xx while a good object is stored, a 4xx or 5xx a
/// client provoked with odd headers). A client must not be able to mark a URL at will.
fn not_a_url_property(reason: &str) -> bool {
    use freshness::NoStoreReason::{ErrorOverStored, ErrorStatus};
    reason == ErrorOverStored.as_str() || reason == ErrorStatus.as_str()
}
