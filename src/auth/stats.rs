//! Counters of what the engine refused to do: SMS stopped by each `[limits]` cap, and PIN
//! requests dropped because the PIN queue was full. Cheap atomics, read for the periodic
//! counters line (and, later, metrics).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Limit;

#[derive(Default)]
pub struct EngineStats {
    limited: [AtomicU64; Limit::ALL.len()],
    overloaded: AtomicU64,
}

impl EngineStats {
    pub fn limited(&self, limit: Limit) {
        if let Some(counter) = self.limited.get(limit as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn limited_count(&self, limit: Limit) -> u64 {
        self.limited
            .get(limit as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn overloaded_count(&self) -> u64 {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// `sms_limited per_token_hour=3 pin_overloaded=12`, non-zero only; empty if all are 0.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Limit::ALL
            .iter()
            .filter(|l| self.limited_count(**l) > 0)
            .map(|l| format!("sms_limited {}={}", l.key(), self.limited_count(*l)))
            .collect();
        if self.overloaded_count() > 0 {
            parts.push(format!("pin_overloaded={}", self.overloaded_count()));
        }
        parts.join(" ")
    }
}
