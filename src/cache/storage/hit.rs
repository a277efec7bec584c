//! A hit: one stored body read whole or as a range, shared, never copied.

use std::any::Any;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{HandleHit, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_error::{Error, ErrorType, Result};

/// Reads one stored body, whole or a range of it.
pub(super) struct Hit {
    pub(super) body: Bytes,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) done: bool,
    /// Read from the shared tier.
    pub(super) shared: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done || self.start >= self.end {
            self.done = true;
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!(
                    "seek start {start} beyond body of {} bytes",
                    self.body.len()
                ),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}
