//! The secondary indexes of the stored objects, so purges touch only what they remove:
//! URL (primary key hash) -> its Vary variants, and tag (surrogate key) -> tagged variants.
//!
//! Each entry is a `(variant hash, fill sequence)` pair: a removal only unregisters the pair of
//! the object that was removed, so an eviction reported late can never unregister a newer
//! object stored under the same hash. A purge re-checks every pair against the stored object.

use std::collections::HashMap;

use dashmap::DashMap;

/// Bytes an index entry costs beyond the tag text, charged to the cache budget: the hash-map
/// slot of a `(u128, u64)` pair with load-factor slack, and its share of the per-tag map.
pub const INDEX_ENTRY_OVERHEAD: usize = 48;

/// Variant and tag indexes.
#[derive(Default)]
pub struct Index {
    variants: DashMap<u128, HashMap<u128, u64>>,
    tags: DashMap<Box<str>, HashMap<u128, u64>>,
}

impl Index {
    /// Record a stored object: variant `hash` of URL `primary`, written by fill `seq`.
    pub fn register(&self, primary: u128, hash: u128, seq: u64, tags: &[Box<str>]) {
        self.variants.entry(primary).or_default().insert(hash, seq);
        for t in tags {
            self.tags.entry(t.clone()).or_default().insert(hash, seq);
        }
    }

    /// Forget a removed object, if the index still points at that very object.
    pub fn unregister(&self, primary: u128, hash: u128, seq: u64, tags: &[Box<str>]) {
        remove_pair(&self.variants, &primary, hash, seq);
        for t in tags {
            remove_pair(&self.tags, t, hash, seq);
        }
    }

    /// The variants stored for a URL.
    pub fn variants_of(&self, primary: u128) -> Vec<(u128, u64)> {
        self.variants
            .get(&primary)
            .map(|m| m.iter().map(|(h, s)| (*h, *s)).collect())
            .unwrap_or_default()
    }

    /// The variants carrying a tag.
    pub fn tagged(&self, tag: &str) -> Vec<(u128, u64)> {
        self.tags
            .get(tag)
            .map(|m| m.iter().map(|(h, s)| (*h, *s)).collect())
            .unwrap_or_default()
    }

    /// Number of distinct tags indexed.
    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

fn remove_pair<K>(map: &DashMap<K, HashMap<u128, u64>>, key: &K, hash: u128, seq: u64)
where
    K: std::hash::Hash + Eq,
{
    let now_empty = match map.get_mut(key) {
        Some(mut m) => {
            if m.get(&hash) == Some(&seq) {
                m.remove(&hash);
            }
            m.is_empty()
        }
        None => false,
    };
    if now_empty {
        map.remove_if(key, |_, m| m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<Box<str>> {
        t.iter().map(|s| Box::from(*s)).collect()
    }

    #[test]
    fn a_late_removal_does_not_unregister_a_newer_object() {
        let idx = Index::default();
        idx.register(1, 10, 5, &tags(&["a"]));
        idx.register(1, 10, 6, &tags(&["a"])); // a newer fill of the same variant
        idx.unregister(1, 10, 5, &tags(&["a"])); // the old one's eviction, reported late
        assert_eq!(idx.tagged("a"), vec![(10, 6)]);
        assert_eq!(idx.variants_of(1), vec![(10, 6)]);
        idx.unregister(1, 10, 6, &tags(&["a"]));
        assert!(idx.tagged("a").is_empty());
        assert_eq!(idx.tag_count(), 0, "empty tags are dropped");
    }

    #[test]
    fn variants_and_tags_are_separate() {
        let idx = Index::default();
        idx.register(1, 10, 1, &tags(&["a", "b"]));
        idx.register(1, 11, 2, &tags(&["b"]));
        idx.register(2, 20, 3, &tags(&[]));
        let mut v = idx.variants_of(1);
        v.sort();
        assert_eq!(v, vec![(10, 1), (11, 2)]);
        assert_eq!(idx.tagged("a"), vec![(10, 1)]);
        assert_eq!(idx.tagged("b").len(), 2);
        assert!(idx.tagged("c").is_empty());
    }
}
