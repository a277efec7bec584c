//! A fill: one response body collected as it streams to its client, and stored at `finish`
//! if no purge newer than its fetch covers it and no newer fill stored the object (compare
//! before set). The bodies of all fills in flight share one bound, `cache.max_size`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use moka::ops::compute::{CompResult, Op};
use pingora_cache::storage::{HandleMiss, MissFinishType};
use pingora_error::{Error, ErrorType, Result};

use super::object::{unix_millis, DropAt, HeadVerdict, StoredObject};
use super::MemoryStorage;
use crate::cache::key::{UrlHash, VariantHash};
use crate::cache::meta_codec::StoredMeta;
use crate::cache::purge_log::{ObjectFacts, Verdict};
use crate::metrics::metrics;

/// Collects one fill's body and stores it at `finish`.
pub(super) struct Fill {
    pub(super) storage: &'static MemoryStorage,
    pub(super) hash: VariantHash,
    pub(super) primary: UrlHash,
    pub(super) url: Box<str>,
    pub(super) tags: Box<[Box<str>]>,
    pub(super) meta: StoredMeta,
    pub(super) drop_at: Instant,
    pub(super) fill_seq: u64,
    pub(super) chunks: Vec<Bytes>,
    pub(super) size: usize,
    /// Bytes of `chunks` counted in the storage's in-flight bound.
    pub(super) buffered: u64,
    pub(super) overflow: bool,
    /// Soft-purged at this time before it was stored (Unix ms; 0: not): a shared copy's.
    pub(super) soft_at: u64,
    /// Its right to write to the shared tier, when there is one (`storage/shared.rs`).
    pub(super) ticket: Option<super::shared::Ticket>,
    /// A copy of the shared tier's: stored only over nothing fresher.
    pub(super) copy: bool,
}

impl Drop for Fill {
    fn drop(&mut self) {
        self.release_buffered();
    }
}

impl Fill {
    /// Stop buffering: nothing of this fill will be stored.
    fn give_up(&mut self) {
        self.overflow = true;
        self.chunks = Vec::new();
        self.release_buffered();
    }

    /// Hand this fill's share of the in-flight bound back.
    fn release_buffered(&mut self) {
        let n = std::mem::take(&mut self.buffered);
        self.storage.filling.fetch_sub(n, Ordering::Relaxed);
    }

    fn facts(&self) -> ObjectFacts<'_> {
        ObjectFacts {
            primary: self.primary,
            url: &self.url,
            tags: &self.tags,
            meta: &self.meta,
        }
    }
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.overflow {
            return Error::e_explain(ErrorType::InternalError, "object not stored");
        }
        self.size += data.len();
        if self.size > self.storage.max_object_size {
            // stop buffering at once: the response keeps streaming to the client uncached
            self.give_up();
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        // the bodies of all fills in flight share one bound, `cache.max_size`: a flood of
        // requests for large objects (whose clients may leave at once) cannot buffer more
        // than that on top of the cache itself; past it, a fill is streamed uncached
        let len = data.len() as u64;
        let filling = &self.storage.filling;
        if filling.fetch_add(len, Ordering::Relaxed) + len > self.storage.settings.max_size {
            filling.fetch_sub(len, Ordering::Relaxed);
            metrics().fills_over_memory.inc();
            self.give_up();
            return Error::e_explain(ErrorType::InternalError, "fills in flight over max_size");
        }
        self.buffered += len;
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if self.overflow {
            return Error::e_explain(ErrorType::InternalError, "object over max_object_size");
        }
        let storage = self.storage;
        let soft_at = match storage.log.verdict(self.fill_seq, &self.facts()) {
            // purged while it was being fetched: nothing is stored, and the waiters look up
            // again and fetch the post-purge object
            Verdict::Drop => return Ok(MissFinishType::Created(0)),
            Verdict::StoreStale => unix_millis(SystemTime::now()),
            Verdict::Store => self.soft_at,
        };
        #[cfg(test)]
        if let Some(hook) = storage
            .between_verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            hook();
        }
        // one exact-size copy: the stored body owns no slack from read buffers
        let mut body = BytesMut::with_capacity(self.size);
        for c in &self.chunks {
            body.extend_from_slice(c);
        }
        let mut meta = self.meta.clone();
        meta.set_body_length(self.size);
        let object = Arc::new(StoredObject {
            meta,
            body: body.freeze(),
            url: self.url.clone(),
            primary: self.primary,
            tags: self.tags.clone(),
            fill_seq: self.fill_seq,
            drop_at: DropAt::new(self.drop_at),
            dead: AtomicBool::new(false),
            soft_at: AtomicU64::new(soft_at),
            head_verdict: HeadVerdict::default(),
        });
        let weight = object.weight() as usize;
        let seq = self.fill_seq;
        let (copy, fresh_until) = (self.copy, object.meta.fresh_until_ms());
        let mut replaced: Option<Arc<StoredObject>> = None;
        let candidate = object.clone();
        let result = storage
            .objects
            .entry(self.hash)
            .and_compute_with(|existing| {
                let op = match existing {
                    // compare before set: an older fill never replaces a newer object
                    Some(e) if e.value().fill_seq > seq && !e.value().is_dead() => Op::Nop,
                    Some(e)
                        if copy
                            && !e.value().is_dead()
                            && e.value().meta.fresh_until_ms() >= fresh_until =>
                    {
                        Op::Nop
                    }
                    Some(e) => {
                        replaced = Some(e.into_value());
                        Op::Put(candidate)
                    }
                    None => Op::Put(candidate),
                };
                std::future::ready(op)
            })
            .await;
        if !matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ) {
            return Ok(MissFinishType::Created(0));
        }
        if let Some(ticket) = self.ticket.take() {
            // the tier compares and sets on its own: its clock, its purges
            storage.share(ticket, self.hash, &object);
        }
        metrics().cache_inserts.inc();
        storage
            .index
            .register(self.primary, self.hash, &object, &self.tags);
        if let Some(old) = replaced {
            storage
                .index
                .unregister(old.primary, self.hash, &old, &old.tags);
        }
        // a purge that recorded itself after the check above but before the index had this
        // object could not find it: look again now that it can
        match storage.log.verdict(seq, &self.facts()) {
            Verdict::Drop => {
                object.dead.store(true, Ordering::Release);
                storage.remove_in_background(vec![(self.hash, object)]);
            }
            Verdict::StoreStale => {
                let _ = object.soft_at.compare_exchange(
                    0,
                    unix_millis(SystemTime::now()),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Verdict::Store => {}
        }
        Ok(MissFinishType::Created(weight))
    }
}
