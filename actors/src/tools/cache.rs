//! Two small in-memory caches, bounded and with a TTL on tokio's clock (paused-time tests):
//! free slots per branch, and tool answers per (company, call, tool, arguments) shared with
//! Retell's retries while the first run is still going.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A map whose entries expire after `ttl`, holding at most `capacity` (the oldest go first).
pub(super) struct TtlMap<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlMap<K, V> {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        let entries = self.lock();
        let (at, value) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// The live value under `key`, or the one `make` builds (stored). One lock, so two
    /// callers of the same key get the same value.
    pub(super) fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        let mut entries = self.lock();
        if let Some((at, value)) = entries.get(&key) {
            if at.elapsed() < self.ttl {
                return value.clone();
            }
        }
        let value = make();
        self.make_room(&mut entries);
        entries.insert(key, (Instant::now(), value.clone()));
        value
    }

    pub(super) fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        self.make_room(&mut entries);
        entries.insert(key, (Instant::now(), value));
    }

    pub(super) fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    fn make_room(&self, entries: &mut HashMap<K, (Instant, V)>) {
        if entries.len() < self.capacity {
            return;
        }
        let ttl = self.ttl;
        entries.retain(|_, (at, _)| at.elapsed() < ttl);
        while entries.len() >= self.capacity {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_the_oldest_make_room() {
        let map = TtlMap::new(Duration::from_secs(10), 2);
        assert_eq!(map.get_or_insert_with("a", || 1), 1);
        assert_eq!(
            map.get_or_insert_with("a", || 2),
            1,
            "a live entry is shared"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        map.insert("b", 2);
        map.insert("c", 3);
        assert_eq!(map.get(&"a"), None, "the oldest made room");
        assert_eq!(map.get(&"b"), Some(2));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(map.get(&"c"), None, "expired");
        assert_eq!(map.get_or_insert_with("c", || 4), 4);
    }
}
