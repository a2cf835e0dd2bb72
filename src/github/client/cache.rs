//! Short-lived caches of installation lookups and repository lists.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Installation lookups are cached this long: installations change rarely, and a suspension or
/// uninstall is still caught by the mint call itself, which is never cached.
pub(super) const INSTALLATION_CACHE_TTL: Duration = Duration::from_secs(60);
/// A 404 is remembered this long, so callers naming an owner without the App cannot make us call
/// GitHub on every request, yet a fresh install is seen within half a minute.
pub(super) const INSTALLATION_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Repository lists are cached this long: listing costs a mint, several pages and a revoke.
pub(super) const REPOSITORIES_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries per cache. Owners come from callers, so the cache must not grow without bound; when
/// full, expired entries are dropped, and if that is not enough the cache starts over.
pub(super) const MAX_CACHE_ENTRIES: usize = 10_000;

/// A small TTL map behind a mutex (never held across an await).
pub(super) struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(super) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (expires, value) = entries.get(key)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    pub(super) fn insert(&self, key: K, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if entries.len() >= MAX_CACHE_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    pub(super) fn remove_where(&self, doomed: impl Fn(&K, &V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|key, (_, value)| !doomed(key, value));
    }
}
