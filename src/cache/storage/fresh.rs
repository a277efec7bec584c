//! A fresh hit from memory for the fast path (`fast_path.rs`): the object that pingora-cache's
//! lookup would serve fresh to a request, found the way it finds it (the URL's primary slot,
//! then the Vary variant that slot's response names), or nothing whenever pingora would do
//! anything else with the request (a miss, a stale or soft-purged object, the shared tier to
//! ask, a variant stored before the primary). Nothing here waits or writes: a read that would
//! wait (moka's maintenance, which a read may run, could not go on at once) is left to
//! pingora, so that the fast path runs to its answer without a future of its own.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::CacheKey;
use pingora_http::RequestHeader;

use super::{MemoryStorage, StoredObject};
use crate::cache::key::VariantHash;
use crate::cache::meta_codec::StoredMeta;
use crate::cache::vary;

/// A stored variant to serve fresh.
pub(crate) struct FreshHit(Arc<StoredObject>);

impl FreshHit {
    /// Its metadata and response header.
    pub(crate) fn meta(&self) -> &StoredMeta {
        &self.0.meta
    }

    /// Its body.
    pub(crate) fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// What the fast path found out about its stored header under `strip_tag_headers`, found
    /// by `find` the first time it is asked (see `HeadVerdict`).
    pub(crate) fn head_verdict(
        &self,
        strip_tag_headers: bool,
        find: impl FnOnce(&StoredMeta) -> u8,
    ) -> u8 {
        self.0
            .head_verdict
            .get(strip_tag_headers, || find(&self.0.meta))
    }
}

impl MemoryStorage {
    /// The variant of `key` (a URL's primary key, no variance) that pingora-cache would serve
    /// fresh to `req` at `now`, if that is what it would do. `key` takes the variance.
    pub(crate) fn fresh_hit(
        &'static self,
        key: &mut CacheKey,
        req: &RequestHeader,
        now: SystemTime,
    ) -> Option<FreshHit> {
        let primary = self.servable(VariantHash::of(key))?;
        if self.shared.get().is_some() && primary.meta.fresh_until() < now {
            // the storage would ask the shared tier for a fresher copy of this slot
            return None;
        }
        let found = match vary::variance_of(vary::names_in(primary.meta.vary_values()), req) {
            None => primary,
            // the variant stored in the primary slot
            Some(v) if primary.meta.variance() == Some(v) => primary,
            Some(v) => {
                key.set_variance_key(v);
                let variant = self.servable(VariantHash::of(key))?;
                // pingora's checks on a secondary slot: the variance it asked for, stored
                // after the primary (whose purge is the tombstone of all its variants)
                if variant.meta.variance() != Some(v)
                    || variant.meta.created() < primary.meta.created()
                {
                    return None;
                }
                variant
            }
        };
        // (pingora's freshness: `fresh_until >= now`)
        (found.meta.fresh_until() >= now).then_some(FreshHit(found))
    }

    /// The object at `hash` as the storage's lookup would return it unchanged: present, not
    /// banned, purged or soft-purged; `None` also for a read that would wait.
    fn servable(&'static self, hash: VariantHash) -> Option<Arc<StoredObject>> {
        // a read counts in the cache's popularity estimate (TinyLFU admission), and a miss is
        // looked up again by pingora: only a stored object is read here, or each miss would
        // count twice and a scan of cold URLs could push the hot set out
        if !self.objects.contains_key(&hash) {
            return None;
        }
        // moka's reads are async only for the maintenance one may run, which it resumes at
        // the next read if this one is dropped while it waits
        let read = pin!(self.objects.get(&hash));
        let object = match read.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(found) => found?,
            Poll::Pending => return None,
        };
        if self.bans.any() {
            self.banned_at_lookup(hash, &object);
        }
        (!object.is_dead() && object.soft_at.load(Ordering::Acquire) == 0).then_some(object)
    }
}
