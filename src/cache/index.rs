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

use super::key::{UrlHash, VariantHash};

/// Bytes one tag of one object costs beyond the tag text, charged to the cache budget: its
/// entry in the tag's list, its share of the tag's map slot and the tag's copy in the object
/// (measured with `bench/purge.sh`: resident memory with tags minus without, per tag).
pub(crate) const INDEX_ENTRY_OVERHEAD: usize = 200;

/// The objects under one URL or tag. Most URLs have one variant and many tags (`post-123`) one
/// object, so a short list is kept inline in a vector and only a long one becomes a map.
enum Entries<T> {
    Few(Vec<(VariantHash, Arc<T>)>),
    Many(HashMap<VariantHash, Arc<T>>),
}

/// Above this many objects a list becomes a map, so removals stay O(1).
const FEW: usize = 16;

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries::Few(Vec::new())
    }
}

impl<T> Entries<T> {
    fn insert(&mut self, hash: VariantHash, object: Arc<T>) {
        match self {
            Entries::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(h, _)| *h == hash) {
                    slot.1 = object;
                } else if v.len() < FEW {
                    // most lists hold one object for good: room for that one only (a first
                    // push would make room for four, 72 bytes more per stored object)
                    if v.is_empty() {
                        v.reserve_exact(1);
                    }
                    v.push((hash, object));
                } else {
                    let mut m: HashMap<VariantHash, Arc<T>> = v.drain(..).collect();
                    m.insert(hash, object);
                    *self = Entries::Many(m);
                }
            }
            Entries::Many(m) => {
                m.insert(hash, object);
            }
        }
    }

    /// Remove `hash` if it points at `object`.
    fn remove(&mut self, hash: VariantHash, object: &T) {
        let same = |o: &Arc<T>| std::ptr::eq(Arc::as_ptr(o), object);
        match self {
            Entries::Few(v) => {
                if let Some(i) = v.iter().position(|(h, o)| *h == hash && same(o)) {
                    v.swap_remove(i);
                    if v.capacity() > 4 * v.len().max(1) {
                        v.shrink_to_fit();
                    }
                }
            }
            Entries::Many(m) => {
                if m.get(&hash).is_some_and(same) {
                    m.remove(&hash);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Entries::Few(v) => v.is_empty(),
            Entries::Many(m) => m.is_empty(),
        }
    }

    fn to_vec(&self) -> Vec<(VariantHash, Arc<T>)> {
        match self {
            Entries::Few(v) => v.clone(),
            Entries::Many(m) => m.iter().map(|(h, o)| (*h, o.clone())).collect(),
        }
    }
}

/// Variant and tag indexes over objects of type `T`.
pub(crate) struct Index<T> {
    variants: DashMap<UrlHash, Entries<T>>,
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
    pub(crate) fn register(
        &self,
        primary: UrlHash,
        hash: VariantHash,
        object: &Arc<T>,
        tags: &[Box<str>],
    ) {
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
    pub(crate) fn unregister(
        &self,
        primary: UrlHash,
        hash: VariantHash,
        object: &T,
        tags: &[Box<str>],
    ) {
        remove_entry(&self.variants, &primary, hash, object);
        for t in tags {
            remove_entry(&self.tags, t, hash, object);
        }
    }

    /// The variants stored for a URL.
    pub(crate) fn variants_of(&self, primary: UrlHash) -> Vec<(VariantHash, Arc<T>)> {
        self.variants
            .get(&primary)
            .map(|e| e.to_vec())
            .unwrap_or_default()
    }

    /// The variants carrying a tag.
    pub(crate) fn tagged(&self, tag: &str) -> Vec<(VariantHash, Arc<T>)> {
        self.tags.get(tag).map(|e| e.to_vec()).unwrap_or_default()
    }

    /// The distinct tags `pred` accepts.
    pub(crate) fn tags_matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.tags
            .iter()
            .filter(|e| pred(e.key()))
            .map(|e| e.key().to_string())
            .collect()
    }

    /// Number of distinct tags indexed.
    pub(crate) fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

fn remove_entry<K, T>(map: &DashMap<K, Entries<T>>, key: &K, hash: VariantHash, object: &T)
where
    K: std::hash::Hash + Eq,
{
    let now_empty = match map.get_mut(key) {
        Some(mut m) => {
            m.remove(hash, object);
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
    fn a_list_of_one_object_has_room_for_one() {
        let mut entries: Entries<u32> = Entries::default();
        entries.insert(VariantHash(1), Arc::new(1));
        assert!(matches!(&entries, Entries::Few(v) if v.capacity() == 1));
        entries.insert(VariantHash(2), Arc::new(2));
        assert!(matches!(&entries, Entries::Few(v) if v.len() == 2));
    }

    #[test]
    fn a_late_removal_does_not_unregister_a_newer_object() {
        let idx: Index<u32> = Index::default();
        let old = Arc::new(5);
        let new = Arc::new(6);
        idx.register(UrlHash(1), VariantHash(10), &old, &tags(&["a"]));
        idx.register(UrlHash(1), VariantHash(10), &new, &tags(&["a"])); // a newer fill of the same variant
        idx.unregister(UrlHash(1), VariantHash(10), &old, &tags(&["a"])); // the old one's eviction, reported late
        assert_eq!(*idx.tagged("a")[0].1, 6);
        assert_eq!(*idx.variants_of(UrlHash(1))[0].1, 6);
        idx.unregister(UrlHash(1), VariantHash(10), &new, &tags(&["a"]));
        assert!(idx.tagged("a").is_empty());
        assert_eq!(idx.tag_count(), 0, "empty tags are dropped");
    }

    #[test]
    fn a_long_list_becomes_a_map_and_stays_correct() {
        let idx: Index<u32> = Index::default();
        let objects: Vec<Arc<u32>> = (0..100).map(Arc::new).collect();
        for (i, o) in objects.iter().enumerate() {
            idx.register(
                UrlHash(i as u128),
                VariantHash(i as u128),
                o,
                &tags(&["big"]),
            );
        }
        assert_eq!(idx.tagged("big").len(), 100);
        for (i, o) in objects.iter().enumerate().take(60) {
            idx.unregister(
                UrlHash(i as u128),
                VariantHash(i as u128),
                o,
                &tags(&["big"]),
            );
        }
        assert_eq!(idx.tagged("big").len(), 40);
        idx.unregister(UrlHash(99), VariantHash(99), &Arc::new(99), &tags(&["big"])); // another object, same value
        assert_eq!(idx.tagged("big").len(), 40);
    }

    #[test]
    fn variants_and_tags_are_separate() {
        let idx: Index<u32> = Index::default();
        idx.register(
            UrlHash(1),
            VariantHash(10),
            &Arc::new(1),
            &tags(&["a", "b"]),
        );
        idx.register(UrlHash(1), VariantHash(11), &Arc::new(2), &tags(&["b"]));
        idx.register(UrlHash(2), VariantHash(20), &Arc::new(3), &tags(&[]));
        let mut v: Vec<u128> = idx
            .variants_of(UrlHash(1))
            .into_iter()
            .map(|(h, _)| h.0)
            .collect();
        v.sort();
        assert_eq!(v, vec![10, 11]);
        assert_eq!(idx.tagged("a").len(), 1);
        assert_eq!(idx.tagged("b").len(), 2);
        assert!(idx.tagged("c").is_empty());
    }
}
