//! Recent purges, so a fill that started before a purge cannot store its (older) response after
//! it: compare before you set. Each purge is recorded with the sequence number it took from the
//! same counter that stamps fetches; a fill checks the purges newer than its own stamp.
//!
//! The log is bounded in time, in count and in bytes (the text of tags and prefixes). When a record is dropped, its sequence number becomes
//! the floor: a fill stamped below the floor may have been purged by a forgotten record, so it
//! is treated as purged (it is not stored; the next request fetches again).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::ban::Ban;
use super::key::UrlHash;
use super::meta_codec::StoredMeta;

/// What a purge targets, and what its record in the log matches: the one description of a
/// purge, from the request through the storage to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeScope {
    /// Every variant of one URL (its primary key hash).
    Url(UrlHash),
    /// Every variant of one URL under `http` and under `https` (its two primary key hashes):
    /// what a `PURGE` of a path or an unsafe request removes, whichever scheme its visitors
    /// came over.
    AnySchemeUrl([UrlHash; 2]),
    /// Every object carrying this tag.
    Tag(String),
    /// Every object whose URL starts with this text (`http://host/blog/`).
    Prefix(String),
    /// Everything.
    All,
    /// Every object a ban's conditions match (`cache/ban.rs`).
    Ban(Arc<Ban>),
}

/// The facts of an object a matcher looks at.
pub(crate) struct ObjectFacts<'a> {
    /// Primary key hash.
    pub(crate) primary: UrlHash,
    /// URL (primary key text).
    pub(crate) url: &'a str,
    /// Tags.
    pub(crate) tags: &'a [Box<str>],
    /// Metadata and response header (decoded only for a ban on header fields).
    pub(crate) meta: &'a StoredMeta,
}

impl ObjectFacts<'_> {
    /// Whether `ban` matches this object (its stored header decoded only if a condition
    /// needs it).
    pub(crate) fn banned_by(&self, ban: &Ban) -> bool {
        ban.matches(self.url, self.tags, || {
            self.meta.to_meta().ok().map(|m| m.response_header_copy())
        })
    }
}

impl PurgeScope {
    /// Whether this purge covers the object.
    pub(crate) fn matches(&self, o: &ObjectFacts<'_>) -> bool {
        match self {
            PurgeScope::Url(p) => *p == o.primary,
            PurgeScope::AnySchemeUrl(ps) => ps.contains(&o.primary),
            PurgeScope::Tag(t) => o.tags.iter().any(|x| **x == **t),
            PurgeScope::Prefix(p) => o.url.starts_with(p.as_str()),
            PurgeScope::All => true,
            PurgeScope::Ban(b) => o.banned_by(b),
        }
    }
}

/// What a fill must do given the purges newer than it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No purge covers it: store it.
    Store,
    /// A soft purge covers it: store it already stale.
    StoreStale,
    /// A purge covers it: do not store it.
    Drop,
}

struct Record {
    seq: u64,
    at: Instant,
    matcher: PurgeScope,
    soft: bool,
}

impl Record {
    /// What the record holds in memory, its text included.
    fn bytes(&self) -> usize {
        let text = match &self.matcher {
            PurgeScope::Tag(t) | PurgeScope::Prefix(t) => t.len(),
            // the compiled patterns, not only their text (about 15 KB measured for a host and
            // a URL pattern, docs/benchmarks.md)
            PurgeScope::Ban(b) => b.text_bytes() + BAN_COMPILED_BYTES,
            PurgeScope::Url(_) | PurgeScope::AnySchemeUrl(_) | PurgeScope::All => 0,
        };
        std::mem::size_of::<Record>() + text
    }
}

struct Inner {
    records: VecDeque<Record>,
    /// Sum of `Record::bytes` over `records`.
    bytes: usize,
    floor: u64,
}

/// What one ban's compiled patterns hold, charged to the log's byte bound.
const BAN_COMPILED_BYTES: usize = 16 << 10;

/// The most memory the log's records may hold together.
pub(crate) const MAX_LOG_BYTES: usize = 8 << 20;

/// The bounded log of recent purges.
pub(crate) struct PurgeLog {
    inner: Mutex<Inner>,
    horizon: Duration,
    max_records: usize,
}

impl PurgeLog {
    /// A log keeping purges for `horizon` (the longest a fetch can take) and at most
    /// `max_records` of them.
    pub(crate) fn new(horizon: Duration, max_records: usize) -> PurgeLog {
        PurgeLog {
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                bytes: 0,
                floor: 0,
            }),
            horizon,
            max_records: max_records.max(1),
        }
    }

    /// Record a purge that took sequence number `seq`.
    pub(crate) fn record(&self, seq: u64, matcher: PurgeScope, soft: bool) {
        let now = Instant::now();
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let record = Record {
            seq,
            at: now,
            matcher,
            soft,
        };
        let adding = record.bytes();
        while let Some(front) = inner.records.front() {
            let expired = now.duration_since(front.at) > self.horizon;
            let full =
                inner.records.len() >= self.max_records || inner.bytes + adding > MAX_LOG_BYTES;
            if !expired && !full {
                break;
            }
            let (dropped, bytes) = (front.seq, front.bytes());
            inner.records.pop_front();
            inner.bytes -= bytes;
            inner.floor = inner.floor.max(dropped);
        }
        inner.bytes += adding;
        inner.records.push_back(record);
    }

    /// The bytes the records hold (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        match self.inner.lock() {
            Ok(g) => g.bytes,
            Err(poisoned) => poisoned.into_inner().bytes,
        }
    }

    /// What a fill stamped `fill_seq` may do with the object described by `facts`.
    pub(crate) fn verdict(&self, fill_seq: u64, facts: &ObjectFacts<'_>) -> Verdict {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if fill_seq < inner.floor {
            return Verdict::Drop;
        }
        let mut verdict = Verdict::Store;
        // newest first; records are in sequence order
        for r in inner.records.iter().rev() {
            if r.seq <= fill_seq {
                break;
            }
            if r.matcher.matches(facts) {
                if !r.soft {
                    return Verdict::Drop;
                }
                verdict = Verdict::StoreStale;
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(url: &'a str, tags: &'a [Box<str>]) -> ObjectFacts<'a> {
        // a header-less meta: the tests here never ban on header fields
        static META: std::sync::OnceLock<StoredMeta> = std::sync::OnceLock::new();
        let meta = META.get_or_init(|| {
            let header = pingora_http::ResponseHeader::build(200, None).unwrap();
            let now = std::time::SystemTime::now();
            StoredMeta::from_meta(&pingora_cache::CacheMeta::new(now, now, 0, 0, header))
        });
        ObjectFacts {
            primary: UrlHash(7),
            url,
            tags,
            meta,
        }
    }

    #[test]
    fn only_purges_newer_than_the_fill_count() {
        let log = PurgeLog::new(Duration::from_secs(60), 100);
        let tags: Vec<Box<str>> = vec!["news".into()];
        log.record(10, PurgeScope::Tag("news".into()), false);
        let f = facts("http://h/a", &tags);
        assert_eq!(
            log.verdict(5, &f),
            Verdict::Drop,
            "fill began before the purge"
        );
        assert_eq!(
            log.verdict(11, &f),
            Verdict::Store,
            "fill began after the purge"
        );
        assert_eq!(
            log.verdict(5, &facts("http://h/a", &[])),
            Verdict::Store,
            "untagged"
        );
    }

    #[test]
    fn the_log_is_bounded_in_bytes_and_forgets_into_the_floor() {
        let log = PurgeLog::new(Duration::from_secs(600), 1_000_000);
        let big = "t".repeat(64 * 1024);
        for seq in 1..=1000 {
            log.record(seq, PurgeScope::Tag(big.clone()), false);
        }
        assert!(log.bytes() <= MAX_LOG_BYTES, "{}", log.bytes());
        assert!(log.bytes() > MAX_LOG_BYTES / 2, "{}", log.bytes());
        // what was forgotten still counts: a fill older than the dropped records is purged
        assert_eq!(log.verdict(3, &facts("http://h/a", &[])), Verdict::Drop);
        assert_eq!(log.verdict(1001, &facts("http://h/a", &[])), Verdict::Store);
    }

    #[test]
    fn matchers() {
        let tags: Vec<Box<str>> = vec!["t".into()];
        let f = facts("http://h/blog/post", &tags);
        assert!(PurgeScope::Url(UrlHash(7)).matches(&f));
        assert!(!PurgeScope::Url(UrlHash(8)).matches(&f));
        assert!(PurgeScope::Prefix("http://h/blog/".into()).matches(&f));
        assert!(!PurgeScope::Prefix("http://h/shop/".into()).matches(&f));
        assert!(!PurgeScope::Prefix("http://other/blog/".into()).matches(&f));
        assert!(PurgeScope::All.matches(&f));
    }

    #[test]
    fn soft_purges_store_stale_and_hard_ones_win() {
        let log = PurgeLog::new(Duration::from_secs(60), 100);
        let f = facts("http://h/a", &[]);
        log.record(10, PurgeScope::All, true);
        assert_eq!(log.verdict(5, &f), Verdict::StoreStale);
        log.record(11, PurgeScope::Url(UrlHash(7)), false);
        assert_eq!(log.verdict(5, &f), Verdict::Drop);
    }

    #[test]
    fn a_forgotten_purge_still_protects_older_fills() {
        let log = PurgeLog::new(Duration::from_secs(60), 2);
        log.record(10, PurgeScope::Url(UrlHash(1)), false);
        log.record(20, PurgeScope::Url(UrlHash(2)), false);
        log.record(30, PurgeScope::Url(UrlHash(3)), false); // drops seq 10
        let f = facts("http://h/x", &[]);
        assert_eq!(log.verdict(5, &f), Verdict::Drop, "below the floor");
        assert_eq!(log.verdict(15, &f), Verdict::Store);
    }
}
