//! The duplicate cache (RFC 5080 section 2.2.2): a retransmission (same source address and
//! port, identifier and Request Authenticator) within the window is dropped while the first
//! is still being handled, and answered with the very same bytes after. This is what keeps a
//! retransmitted PIN request from sending a second SMS.
//!
//! Bounded: entries leave after the window, and past `capacity` the oldest leave first.
//! A std `Mutex`: the receive loop holds it for a hash lookup, never across an await.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
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

struct Inner {
    entries: HashMap<DedupKey, (Instant, Entry)>,
    /// Insertion order, for expiry and eviction; may hold keys already removed.
    order: VecDeque<(Instant, DedupKey)>,
}

pub struct DedupCache {
    inner: Mutex<Inner>,
    window: Duration,
    capacity: usize,
}

impl DedupCache {
    pub fn new(window: Duration, capacity: usize) -> Self {
        DedupCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            window,
            capacity: capacity.max(1),
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
        while inner.entries.len() >= self.capacity || inner.order.len() >= 2 * self.capacity {
            let Some((at, oldest)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .entries
                .get(&oldest)
                .is_some_and(|(stamp, _)| *stamp == at)
            {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(key, (now, Entry::InFlight));
        inner.order.push_back((now, key));
        Seen::New
    }

    /// Stores the reply sent for a request.
    pub fn answered(&self, key: DedupKey, reply: Arc<[u8]>) {
        if let Some((_, entry)) = self.lock().entries.get_mut(&key) {
            *entry = Entry::Answered(reply);
        }
    }

    /// Forgets a request that got no reply, so a retransmission is handled anew.
    pub fn abandon(&self, key: DedupKey) {
        self.lock().entries.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
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
            if inner
                .entries
                .get(&key)
                .is_some_and(|(stamp, _)| *stamp == at)
            {
                inner.entries.remove(&key);
            }
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
            source: "127.0.0.1:5000".parse().unwrap(),
            identifier,
            authenticator: [identifier; 16],
        }
    }

    #[test]
    fn in_flight_then_answered_then_expired() {
        let cache = DedupCache::new(Duration::from_secs(30), 100);
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
        let cache = DedupCache::new(Duration::from_secs(30), 100);
        let now = Instant::now();
        assert_eq!(cache.check(key(1), now), Seen::New);
        let mut other = key(1);
        other.authenticator = [9; 16];
        assert_eq!(cache.check(other, now), Seen::New);
    }

    #[test]
    fn capacity_evicts_the_oldest_and_abandon_forgets() {
        let cache = DedupCache::new(Duration::from_secs(30), 2);
        let now = Instant::now();
        for id in 0..5 {
            cache.check(key(id), now);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.check(key(4), now), Seen::InFlight);
        cache.abandon(key(4));
        assert_eq!(cache.check(key(4), now), Seen::New);
    }
}
