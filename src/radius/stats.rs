//! Counters of dropped datagrams by reason and of replies sent. Cheap atomics, read for the
//! periodic summary log line and at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

use super::guard::DropReason;

#[derive(Default)]
pub struct Stats {
    drops: [AtomicU64; DropReason::ALL.len()],
    replies: AtomicU64,
}

impl Stats {
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn replied(&self) {
        self.replies.fetch_add(1, Ordering::Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// `replies=12 dropped unknown_client=3 bad_message_authenticator=1`, non-zero only.
    pub fn summary(&self) -> String {
        let mut line = format!("replies={}", self.replies.load(Ordering::Relaxed));
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .filter(|r| self.drops(**r) > 0)
            .map(|r| format!("{}={}", r.label(), self.drops(*r)))
            .collect();
        if !drops.is_empty() {
            line.push_str(" dropped ");
            line.push_str(&drops.join(" "));
        }
        line
    }
}
