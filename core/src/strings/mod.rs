//! Interned names. Namespaces, task names, versions, step names, handler classes and queue
//! names repeat across millions of steps; each distinct one is stored once as an `Arc<str>`
//! and handed out by reference count, so steady-state dispatch allocates no name strings.
//! The cache is LRU-bounded: names beyond its capacity are evicted and simply interned again
//! when they come back (an evicted `Arc<str>` stays valid for whoever holds it).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Default number of distinct names kept.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A thread-safe, LRU-bounded string interner.
pub struct StringCache {
    names: Mutex<LruCache<Arc<str>, ()>>,
    capacity: NonZeroUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// Counters of a [`StringCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub size: usize,
    pub capacity: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl StringCache {
    /// A cache holding at most `capacity` names (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        StringCache {
            names: Mutex::new(LruCache::new(capacity)),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The shared copy of `s`; allocates only the first time `s` is seen (or after eviction).
    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, ())) = names.get_key_value(s) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return name.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(s);
        if names
            .push(name.clone(), ())
            .is_some_and(|(old, ())| *old != *name)
        {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        name
    }

    /// Distinct names held now.
    pub fn size(&self) -> usize {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drop every name (handed-out copies stay valid).
    pub fn clear(&self) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Size, capacity and counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            size: self.size(),
            capacity: self.capacity.get(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

impl Default for StringCache {
    fn default() -> Self {
        StringCache::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for StringCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StringCache")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_returns_one_shared_copy() {
        let cache = StringCache::new(8);
        let a = cache.intern("billing");
        let b = cache.intern("billing");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "billing");
        let s = cache.stats();
        assert_eq!((s.size, s.hits, s.misses, s.evictions), (1, 1, 1, 0));
    }

    #[test]
    fn the_bound_holds_and_evicted_names_still_work() {
        let cache = StringCache::new(3);
        let first = cache.intern("n0");
        for i in 1..10 {
            cache.intern(&format!("n{i}"));
        }
        assert_eq!(cache.size(), 3);
        assert_eq!(&*first, "n0"); // evicted, still valid
        let again = cache.intern("n0");
        assert_eq!(&*again, "n0");
        assert!(!Arc::ptr_eq(&first, &again));
        let s = cache.stats();
        assert_eq!(s.evictions, 8);
        assert_eq!(s.capacity, 3);
    }

    #[test]
    fn recently_used_names_survive() {
        let cache = StringCache::new(2);
        let hot = cache.intern("hot");
        cache.intern("cold1");
        cache.intern("hot");
        cache.intern("cold2");
        assert!(Arc::ptr_eq(&hot, &cache.intern("hot")));
    }

    #[test]
    fn many_threads_share_the_cache() {
        let cache = Arc::new(StringCache::new(64));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let name = format!("step_{}", (i + t) % 32);
                        assert_eq!(&*cache.intern(&name), name);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = cache.stats();
        assert_eq!(s.size, 32);
        assert_eq!(s.hits + s.misses, 8000);
    }

    #[test]
    fn clear_empties_the_cache() {
        let cache = StringCache::new(4);
        cache.intern("x");
        cache.clear();
        assert_eq!(cache.size(), 0);
    }
}
