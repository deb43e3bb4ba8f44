//! The duplicate cache (RFC 5080 section 2.2.2): a retransmission (same source address and
//! port, identifier and Request Authenticator) within the window is dropped while the first
//! is still being handled, and answered with the very same bytes after. This is what keeps a
//! retransmitted PIN request from sending a second SMS.
//!
//! Bounded: entries leave after the window, and past `capacity` entries or `max_bytes` bytes
//! the oldest leave first. The byte bound matters because replies echo Proxy-State: a client
//! sending cheap-to-reject requests with large Proxy-State gets replies near 4096 octets, and
//! 262,144 of them would hold about 1 GiB. Bytes are the reply's length plus a fixed
//! `ENTRY_OVERHEAD` per entry, in flight or answered.
//! A std `Mutex`: the receive loop holds it for a hash lookup, never across an await.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// The TLS connection the request came on (0 on UDP): RadSec keeps duplicates apart per
    /// connection (RFC 9765), even from a source port used again.
    pub connection: u64,
    pub source: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

/// What the cache knew of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: it is now marked in flight.
    New,
    InFlight,
    Answered(Arc<[u8]>),
}

enum Entry {
    InFlight,
    Answered(Arc<[u8]>),
}

impl Entry {
    /// What the entry is counted as against `max_bytes`.
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Entry::InFlight => 0,
                Entry::Answered(reply) => reply.len(),
            }
    }
}

/// What an entry costs besides its reply's bytes, rounded up: its map slot twice (the map
/// keeps spare slots), its place in `order` twice (`order` may hold twice as many keys as the
/// map), and the reply's shared allocation header and the allocator's rounding.
pub const ENTRY_OVERHEAD: usize = 2 * size_of::<(DedupKey, (Instant, Entry))>()
    + 2 * size_of::<(Instant, DedupKey)>()
    + 2 * size_of::<usize>()
    + 16;

struct Inner {
    entries: HashMap<DedupKey, (Instant, Entry)>,
    /// Insertion order, for expiry and eviction; may hold keys already removed.
    order: VecDeque<(Instant, DedupKey)>,
    /// The sum of the entries' costs.
    bytes: usize,
}

impl Inner {
    /// Removes `key`'s entry if it is the one stamped `at` (None: any).
    fn remove(&mut self, key: &DedupKey, at: Option<Instant>) {
        if let Some((stamp, entry)) = self.entries.get(key)
            && at.is_none_or(|at| at == *stamp)
        {
            self.bytes = self.bytes.saturating_sub(entry.cost());
            self.entries.remove(key);
        }
    }

    /// Removes the oldest entry; false when there is none left.
    fn evict_oldest(&mut self) -> bool {
        let Some((at, oldest)) = self.order.pop_front() else {
            return false;
        };
        self.remove(&oldest, Some(at));
        true
    }
}

pub struct DedupCache {
    inner: Mutex<Inner>,
    window: Duration,
    capacity: usize,
    max_bytes: usize,
}

impl DedupCache {
    /// A cache of at most `capacity` entries and `max_bytes` bytes (replies and
    /// `ENTRY_OVERHEAD` each).
    pub fn new(window: Duration, capacity: usize, max_bytes: usize) -> Self {
        DedupCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            window,
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    /// Looks a request up, marking it in flight if it is new.
    pub fn check(&self, key: DedupKey, now: Instant) -> Seen {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if let Some((_, entry)) = inner.entries.get(&key) {
            return match entry {
                Entry::InFlight => Seen::InFlight,
                Entry::Answered(bytes) => Seen::Answered(bytes.clone()),
            };
        }
        while inner.entries.len() >= self.capacity
            || inner.order.len() >= 2 * self.capacity
            || inner.bytes + ENTRY_OVERHEAD > self.max_bytes
        {
            if !inner.evict_oldest() {
                break;
            }
        }
        let entry = Entry::InFlight;
        inner.bytes += entry.cost();
        inner.entries.insert(key, (now, entry));
        inner.order.push_back((now, key));
        Seen::New
    }

    /// Stores the reply sent for a request, evicting the oldest entries while the cache holds
    /// more than `max_bytes` (this one too if it is the oldest, or alone larger than that).
    pub fn answered(&self, key: DedupKey, reply: Arc<[u8]>) {
        let mut inner = self.lock();
        let Some((_, entry)) = inner.entries.get_mut(&key) else {
            return;
        };
        let before = entry.cost();
        *entry = Entry::Answered(reply);
        let after = entry.cost();
        inner.bytes = inner.bytes.saturating_sub(before) + after;
        while inner.bytes > self.max_bytes {
            if !inner.evict_oldest() {
                break;
            }
        }
    }

    /// Forgets a request that got no reply, so a retransmission is handled anew.
    pub fn abandon(&self, key: DedupKey) {
        self.lock().remove(&key, None);
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// What the entries are counted as against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, key)) = inner.order.front().copied() {
            if now.duration_since(at) < self.window {
                break;
            }
            inner.order.pop_front();
            inner.remove(&key, Some(at));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(identifier: u8) -> DedupKey {
        DedupKey {
            connection: 0,
            source: "127.0.0.1:5000".parse().unwrap(),
            identifier,
            authenticator: [identifier; 16],
        }
    }

    #[test]
    fn in_flight_then_answered_then_expired() {
        let cache = DedupCache::new(Duration::from_secs(30), 100, usize::MAX);
        let t0 = Instant::now();
        assert_eq!(cache.check(key(1), t0), Seen::New);
        assert_eq!(cache.check(key(1), t0), Seen::InFlight);
        let reply: Arc<[u8]> = Arc::from(&b"reply"[..]);
        cache.answered(key(1), reply.clone());
        assert_eq!(
            cache.check(key(1), t0 + Duration::from_secs(29)),
            Seen::Answered(reply)
        );
        assert_eq!(cache.check(key(1), t0 + Duration::from_secs(30)), Seen::New);
    }

    #[test]
    fn a_new_authenticator_is_a_new_request() {
        let cache = DedupCache::new(Duration::from_secs(30), 100, usize::MAX);
        let now = Instant::now();
        assert_eq!(cache.check(key(1), now), Seen::New);
        let mut other = key(1);
        other.authenticator = [9; 16];
        assert_eq!(cache.check(other, now), Seen::New);
    }

    #[test]
    fn capacity_evicts_the_oldest_and_abandon_forgets() {
        let cache = DedupCache::new(Duration::from_secs(30), 2, usize::MAX);
        let now = Instant::now();
        for id in 0..5 {
            cache.check(key(id), now);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.check(key(4), now), Seen::InFlight);
        cache.abandon(key(4));
        assert_eq!(cache.check(key(4), now), Seen::New);
    }

    #[test]
    fn many_large_replies_stay_within_the_byte_bound_newest_kept() {
        const MAX_BYTES: usize = 1 << 20;
        const REPLY: usize = 4096;
        let cache = DedupCache::new(Duration::from_secs(30), 262_144, MAX_BYTES);
        let now = Instant::now();
        let reply: Arc<[u8]> = vec![7u8; REPLY].into();
        let key = |n: u32| DedupKey {
            connection: 0,
            source: SocketAddr::from(([127, 0, 0, 1], (n % 60_000) as u16 + 1024)),
            identifier: (n % 256) as u8,
            authenticator: [
                (n >> 24) as u8,
                (n >> 16) as u8,
                (n >> 8) as u8,
                n as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
        };
        let most = MAX_BYTES / (REPLY + ENTRY_OVERHEAD);
        for n in 0..20_000 {
            assert_eq!(cache.check(key(n), now), Seen::New);
            cache.answered(key(n), reply.clone());
            // Counted from the entries held, not from the cache's own tally.
            assert!(cache.len() <= most, "{} entries after {n}", cache.len());
        }
        assert!(cache.bytes() <= MAX_BYTES);
        assert!(
            cache.len() >= most - 1,
            "the bound is used: {}",
            cache.len()
        );
        assert_eq!(cache.check(key(19_999), now), Seen::Answered(reply.clone()));
        assert_eq!(cache.check(key(0), now), Seen::New, "the oldest left first");

        // Expiry and abandoning give the bytes back.
        cache.abandon(key(0));
        assert_eq!(
            cache.check(key(1), now + Duration::from_secs(31)),
            Seen::New
        );
        cache.abandon(key(1));
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}
