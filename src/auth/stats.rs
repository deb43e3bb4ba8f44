//! Counters of what the engine refused to do: SMS stopped by each `[limits]` cap, and PIN
//! requests dropped because the PIN queue was full; and of its decisions by outcome and
//! reason class. Handles into the `otpgate_*` families of `ops::metrics`, read back for
//! the periodic counters line.

use prometheus::IntCounter;

use super::Verdict;
use crate::ops::metrics::Metrics;
use crate::store::Limit;

pub struct EngineStats {
    limited: [IntCounter; Limit::ALL.len()],
    overloaded: IntCounter,
    decisions: prometheus::IntCounterVec,
}

impl EngineStats {
    pub fn new(metrics: &Metrics) -> EngineStats {
        EngineStats {
            limited: Limit::ALL.map(|limit| metrics.sms_limited.with_label_values(&[limit.key()])),
            overloaded: metrics.pin_overloaded.clone(),
            decisions: metrics.decisions.clone(),
        }
    }

    pub fn limited(&self, limit: Limit) {
        if let Some(counter) = self.limited.get(limit as usize) {
            counter.inc();
        }
    }

    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    /// Counts a decision by its outcome and the class of its reason.
    pub fn decided(&self, verdict: &Verdict) {
        self.decisions
            .with_label_values(&[verdict.decision.outcome(), super::reason_class(verdict)])
            .inc();
    }

    pub fn limited_count(&self, limit: Limit) -> u64 {
        self.limited.get(limit as usize).map_or(0, IntCounter::get)
    }

    pub fn overloaded_count(&self) -> u64 {
        self.overloaded.get()
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
