//! Short-lived snapshots of serialized list answers (`GET /v1/nodes`), so that a burst of
//! identical reads costs one query and one serialization instead of one each
//! (docs/adr/0013-api.md, "List snapshots").
//!
//! Freshness, in order of strength:
//! - every mutating request through this process moves the *generation* when it starts and
//!   again when its answer is ready, and a snapshot of another generation is never served:
//!   after a write through this API answered, no read of this process shows the state before
//!   it (a snapshot built while the write ran is of the older generation, and is dropped);
//! - changes made by other processes (the HA loops, node sync, another controller's API) are
//!   seen at most [`SNAPSHOT_TTL`] late.
//!
//! Only the body is cached: authentication, the policy check and the validation of the query
//! run for every request. Rebuilds are coalesced: when a snapshot is missing, one request per
//! query reads the database while the others wait for its result (without that, every
//! connection of a busy client rebuilds the same list at once each time one expires). Keys are the raw query string; at most [`MAX_SNAPSHOTS`] are kept
//! (all are dropped when full, a marker walk cannot grow it without bound).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// How long a snapshot may be served: the bound on how late a change made outside this
/// process is seen.
pub const SNAPSHOT_TTL: Duration = Duration::from_millis(100);

/// Distinct queries kept at once.
pub const MAX_SNAPSHOTS: usize = 256;

struct Snapshot {
    generation: u64,
    built: Instant,
    body: Bytes,
}

#[derive(Default)]
pub struct SnapshotCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, Snapshot>>,
    /// One lock per query being rebuilt.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// See [`SnapshotCache::write_guard`].
pub struct WriteGuard<'a>(&'a SnapshotCache);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

/// Held by the one request rebuilding a query's snapshot.
pub struct BuildGuard<'a> {
    cache: &'a SnapshotCache,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for BuildGuard<'_> {
    fn drop(&mut self) {
        let mut building = self.cache.building.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if building.get(&self.key).is_some_and(|lock| Arc::ptr_eq(lock, &self.lock)) {
            building.remove(&self.key);
        }
    }
}

impl SnapshotCache {
    /// A write is starting or has finished: nothing built before serves again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// For the duration of a write: invalidates now and again when dropped (also when the
    /// request is abandoned half-way, its write may have committed).
    pub fn write_guard(&self) -> WriteGuard<'_> {
        self.invalidate();
        WriteGuard(self)
    }

    /// The generation to pass to [`SnapshotCache::store`] for a body built from now on.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The body for `key`, if one of the current generation is younger than the TTL.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let generation = self.generation();
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(key)
            .filter(|snapshot| snapshot.generation == generation && snapshot.built.elapsed() < SNAPSHOT_TTL)
            .map(|snapshot| snapshot.body.clone())
    }

    /// Waits until no other request is rebuilding `key`, then makes this one the builder:
    /// check [`SnapshotCache::get`] again after it (the other may have built it).
    pub async fn build_lock(&self, key: &str) -> BuildGuard<'_> {
        let lock = {
            let mut building = self.building.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            building.entry(key.to_owned()).or_default().clone()
        };
        let held = lock.clone().lock_owned().await;
        BuildGuard { cache: self, key: key.to_owned(), lock, _held: held }
    }

    /// Keeps `body`, built from the database after `generation` was read, unless a write
    /// started since (then it may already be stale).
    pub fn store(&self, key: &str, generation: u64, built: Instant, body: Bytes) {
        if self.generation() != generation {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_SNAPSHOTS && !entries.contains_key(key) {
            entries.clear();
        }
        entries.insert(key.to_owned(), Snapshot { generation, built, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_serves_until_a_write_or_the_ttl() {
        let cache = SnapshotCache::default();
        let generation = cache.generation();
        cache.store("limit=2", generation, Instant::now(), Bytes::from_static(b"one"));
        assert_eq!(cache.get("limit=2").as_deref(), Some(&b"one"[..]));
        assert_eq!(cache.get("limit=3"), None, "another query");
        cache.invalidate();
        assert_eq!(cache.get("limit=2"), None, "a write happened");

        // During a write nothing built is kept, and after it nothing built during it serves.
        let write = cache.write_guard();
        let generation = cache.generation();
        cache.store("limit=2", generation, Instant::now(), Bytes::from_static(b"during"));
        drop(write);
        assert_eq!(cache.get("limit=2"), None);

        // Built while a write ran: not kept.
        let generation = cache.generation();
        cache.invalidate();
        cache.store("limit=2", generation, Instant::now(), Bytes::from_static(b"two"));
        assert_eq!(cache.get("limit=2"), None);

        // Too old.
        let generation = cache.generation();
        cache.store("limit=2", generation, Instant::now() - SNAPSHOT_TTL, Bytes::from_static(b"three"));
        assert_eq!(cache.get("limit=2"), None);
    }

    #[tokio::test]
    async fn one_request_rebuilds_a_query_while_the_others_wait_for_it() {
        let cache = Arc::new(SnapshotCache::default());
        let builder = cache.build_lock("limit=5").await;
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move {
                let _guard = cache.build_lock("limit=5").await;
                cache.get("limit=5")
            }
        });
        // Another query is not held up.
        drop(cache.build_lock("limit=6").await);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second request waits for the builder");
        cache.store("limit=5", cache.generation(), Instant::now(), Bytes::from_static(b"built once"));
        drop(builder);
        assert_eq!(waiter.await.unwrap().as_deref(), Some(&b"built once"[..]));
        assert!(cache.building.lock().unwrap().is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = SnapshotCache::default();
        for index in 0..=MAX_SNAPSHOTS {
            cache.store(&format!("marker={index}"), cache.generation(), Instant::now(), Bytes::new());
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_SNAPSHOTS);
        assert!(cache.get(&format!("marker={MAX_SNAPSHOTS}")).is_some(), "the newest is kept");
    }
}
