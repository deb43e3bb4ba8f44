//! Circuit breakers, one per peer (an SMS gateway, a directory server): a peer that failed
//! is skipped for `backoff`, then probed again by the next request; a success closes it.
//! Shared by every user of the peers, so one failure spares all later requests the wait.
//! A leaf: it knows names and times, not what the peers are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A gateway's breaker as the CLI and logs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerView {
    pub gateway: String,
    /// "closed", "open" (skipped) or "probing" (back-off over, next message tries it).
    pub state: &'static str,
    /// Failures in a row.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Wall-clock end of the back-off, Unix milliseconds.
    pub open_until: Option<i64>,
}

#[derive(Default)]
struct State {
    open_until: Option<(Instant, SystemTime)>,
    failures: u32,
    last_error: Option<String>,
}

pub struct Breakers {
    /// What the peers are, for the log lines: "gateway", "directory server".
    kind: &'static str,
    /// Milliseconds; a reload may change it.
    backoff_ms: AtomicU64,
    states: Mutex<HashMap<String, State>>,
    /// Bumped on every change, so a watcher can persist only when something changed.
    version: AtomicU64,
}

impl Breakers {
    /// Breakers for SMS gateways.
    pub fn new(backoff: Duration) -> Self {
        Breakers::of("gateway", backoff)
    }

    /// Breakers for peers of another `kind`, as the log lines name them.
    pub fn of(kind: &'static str, backoff: Duration) -> Self {
        Breakers {
            kind,
            backoff_ms: AtomicU64::new(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX)),
            states: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
        }
    }

    /// Whether a message may try this gateway now.
    pub fn allows(&self, gateway: &str) -> bool {
        let states = self.lock();
        states
            .get(gateway)
            .and_then(|s| s.open_until)
            .is_none_or(|(until, _)| Instant::now() >= until)
    }

    /// The back-off of failures from now on (a reload).
    pub fn set_backoff(&self, backoff: Duration) {
        self.backoff_ms.store(
            u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Drops a gateway's record: a reload removed or changed it.
    pub fn forget(&self, gateway: &str) {
        if self.lock().remove(gateway).is_some() {
            self.version.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms.load(Ordering::Relaxed))
    }

    pub fn failed(&self, gateway: &str, error: &str) {
        let backoff = self.backoff();
        let mut states = self.lock();
        let state = states.entry(gateway.to_string()).or_default();
        state.failures = state.failures.saturating_add(1);
        state.last_error = Some(error.to_string());
        state.open_until = Some((Instant::now() + backoff, SystemTime::now() + backoff));
        self.version.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = gateway, backoff = ?backoff, "{} skipped until its back-off ends", self.kind);
    }

    pub fn succeeded(&self, gateway: &str) {
        let mut states = self.lock();
        if let Some(state) = states.get_mut(gateway)
            && (state.failures > 0 || state.open_until.is_some())
        {
            *state = State::default();
            self.version.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = gateway, "{} answers again", self.kind);
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Every gateway with a breaker record.
    pub fn snapshot(&self) -> Vec<BreakerView> {
        let now = Instant::now();
        let mut views: Vec<BreakerView> = self
            .lock()
            .iter()
            .map(|(gateway, s)| BreakerView {
                gateway: gateway.clone(),
                state: match s.open_until {
                    None => "closed",
                    Some((until, _)) if now < until => "open",
                    Some(_) => "probing",
                },
                failures: s.failures,
                last_error: s.last_error.clone(),
                open_until: s.open_until.map(|(_, wall)| {
                    wall.duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }),
            })
            .collect();
        views.sort_by(|a, b| a.gateway.cmp(&b.gateway));
        views
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        // Each update is a single assignment, so a poisoned map is still consistent.
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_the_breaker_until_the_backoff_ends() {
        let breakers = Breakers::new(Duration::from_millis(50));
        assert!(breakers.allows("a"));
        breakers.failed("a", "HTTP 500");
        assert!(!breakers.allows("a"));
        assert!(breakers.allows("b"));
        assert_eq!(breakers.snapshot()[0].state, "open");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breakers.allows("a"), "probed again after the back-off");
        assert_eq!(breakers.snapshot()[0].state, "probing");
        let before = breakers.version();
        breakers.succeeded("a");
        assert_eq!(breakers.snapshot()[0].state, "closed");
        assert!(breakers.version() > before);
    }
}
