//! The secondary indexes of the stored objects, so purges touch only what they remove:
//! URL (primary key hash) -> its Vary variants, and tag (surrogate key) -> tagged variants.
//!
//! Entries point at the stored objects themselves (`Arc`), so a purge reaches its objects
//! without a cache lookup. A removal only unregisters the very object that was removed
//! (compared by pointer), so an eviction reported late can never unregister a newer object
//! stored under the same hash.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

/// Bytes an index entry costs beyond the tag text, charged to the cache budget: the hash-map
/// slot of a `(u128, Arc)` pair with load-factor slack, and its share of the per-tag map.
pub const INDEX_ENTRY_OVERHEAD: usize = 48;

type Entries<T> = HashMap<u128, Arc<T>>;

/// Variant and tag indexes over objects of type `T`.
pub struct Index<T> {
    variants: DashMap<u128, Entries<T>>,
    tags: DashMap<Box<str>, Entries<T>>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index {
            variants: DashMap::new(),
            tags: DashMap::new(),
        }
    }
}

impl<T> Index<T> {
    /// Record a stored object: variant `hash` of URL `primary`. It replaces whatever the index
    /// held for that hash.
    pub fn register(&self, primary: u128, hash: u128, object: &Arc<T>, tags: &[Box<str>]) {
        self.variants
            .entry(primary)
            .or_default()
            .insert(hash, object.clone());
        for t in tags {
            self.tags
                .entry(t.clone())
                .or_default()
                .insert(hash, object.clone());
        }
    }

    /// Forget a removed object, where the index still points at that very object.
    pub fn unregister(&self, primary: u128, hash: u128, object: &T, tags: &[Box<str>]) {
        remove_entry(&self.variants, &primary, hash, object);
        for t in tags {
            remove_entry(&self.tags, t, hash, object);
        }
    }

    /// The variants stored for a URL.
    pub fn variants_of(&self, primary: u128) -> Vec<(u128, Arc<T>)> {
        self.variants
            .get(&primary)
            .map(|m| m.iter().map(|(h, o)| (*h, o.clone())).collect())
            .unwrap_or_default()
    }

    /// The variants carrying a tag.
    pub fn tagged(&self, tag: &str) -> Vec<(u128, Arc<T>)> {
        self.tags
            .get(tag)
            .map(|m| m.iter().map(|(h, o)| (*h, o.clone())).collect())
            .unwrap_or_default()
    }

    /// Number of distinct tags indexed.
    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

fn remove_entry<K, T>(map: &DashMap<K, Entries<T>>, key: &K, hash: u128, object: &T)
where
    K: std::hash::Hash + Eq,
{
    let now_empty = match map.get_mut(key) {
        Some(mut m) => {
            if m.get(&hash).is_some_and(|o| std::ptr::eq(Arc::as_ptr(o), object)) {
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
        let idx: Index<u32> = Index::default();
        let old = Arc::new(5);
        let new = Arc::new(6);
        idx.register(1, 10, &old, &tags(&["a"]));
        idx.register(1, 10, &new, &tags(&["a"])); // a newer fill of the same variant
        idx.unregister(1, 10, &old, &tags(&["a"])); // the old one's eviction, reported late
        assert_eq!(*idx.tagged("a")[0].1, 6);
        assert_eq!(*idx.variants_of(1)[0].1, 6);
        idx.unregister(1, 10, &new, &tags(&["a"]));
        assert!(idx.tagged("a").is_empty());
        assert_eq!(idx.tag_count(), 0, "empty tags are dropped");
    }

    #[test]
    fn variants_and_tags_are_separate() {
        let idx: Index<u32> = Index::default();
        idx.register(1, 10, &Arc::new(1), &tags(&["a", "b"]));
        idx.register(1, 11, &Arc::new(2), &tags(&["b"]));
        idx.register(2, 20, &Arc::new(3), &tags(&[]));
        let mut v: Vec<u128> = idx.variants_of(1).into_iter().map(|(h, _)| h).collect();
        v.sort();
        assert_eq!(v, vec![10, 11]);
        assert_eq!(idx.tagged("a").len(), 1);
        assert_eq!(idx.tagged("b").len(), 2);
        assert!(idx.tagged("c").is_empty());
    }
}
