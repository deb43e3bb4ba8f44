//! Counters of dropped datagrams by client and reason, and of replies sent. Cheap atomics,
//! read for the periodic summary log line and at shutdown.
//!
//! Memory is bounded by the config: there is one bucket per configured client name, and
//! every source that is no configured client shares one more bucket, however many there are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::guard::DropReason;

/// What the summary calls the bucket of sources that are no configured client.
const UNKNOWN: &str = "-";

/// Where a drop is counted: a configured client's bucket or the shared one for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket(usize);

impl Bucket {
    /// 0 to `Stats::bucket_count() - 1`.
    pub fn index(self) -> usize {
        self.0
    }
}

pub struct Stats {
    /// Bucket of each configured client name; `names.len()` is the shared bucket.
    buckets: HashMap<String, usize>,
    names: Vec<String>,
    drops: Vec<[AtomicU64; DropReason::ALL.len()]>,
    replies: AtomicU64,
}

impl Stats {
    /// Counters for these configured client names.
    pub fn new<'a>(clients: impl IntoIterator<Item = &'a str>) -> Stats {
        let mut names: Vec<String> = Vec::new();
        for name in clients {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        let buckets = names
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), index))
            .collect();
        let drops = (0..=names.len()).map(|_| Default::default()).collect();
        Stats {
            buckets,
            names,
            drops,
            replies: AtomicU64::new(0),
        }
    }

    /// The bucket of a client (by its configured name), or the shared one for `None` and
    /// names that are not configured.
    pub fn bucket(&self, client: Option<&str>) -> Bucket {
        Bucket(
            client
                .and_then(|name| self.buckets.get(name).copied())
                .unwrap_or(self.names.len()),
        )
    }

    /// How many buckets there are: one per configured client and the shared one.
    pub fn bucket_count(&self) -> usize {
        self.drops.len()
    }

    /// Counts a drop; returns how many of this bucket and reason there have been.
    pub fn dropped(&self, bucket: Bucket, reason: DropReason) -> u64 {
        self.drops[bucket.0][reason as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn replied(&self) {
        self.replies.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops for a reason, over all buckets.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops
            .iter()
            .map(|counts| counts[reason as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// `replies=12 dropped vpn/bad_message_authenticator=1 -/unknown_client=3`, non-zero
    /// only, by client (`-` for sources that are no client) and reason.
    pub fn summary(&self) -> String {
        let mut line = format!("replies={}", self.replies.load(Ordering::Relaxed));
        let mut drops = Vec::new();
        for (index, counts) in self.drops.iter().enumerate() {
            let name = self.names.get(index).map_or(UNKNOWN, String::as_str);
            for reason in DropReason::ALL {
                let count = counts[reason as usize].load(Ordering::Relaxed);
                if count > 0 {
                    drops.push(format!("{name}/{}={count}", reason.label()));
                }
            }
        }
        if !drops.is_empty() {
            line.push_str(" dropped ");
            line.push_str(&drops.join(" "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_client_and_reason_with_one_bucket_for_the_rest() {
        let stats = Stats::new(["vpn", "wifi"]);
        assert_eq!(stats.bucket_count(), 3);
        let vpn = stats.bucket(Some("vpn"));
        assert_eq!(
            stats.dropped(vpn, DropReason::MissingMessageAuthenticator),
            1
        );
        assert_eq!(
            stats.dropped(vpn, DropReason::MissingMessageAuthenticator),
            2
        );
        let stranger = stats.bucket(None);
        assert_eq!(stats.bucket(Some("not-configured")), stranger);
        stats.dropped(stranger, DropReason::UnknownClient);
        stats.dropped(stats.bucket(Some("wifi")), DropReason::UnknownClient);
        stats.replied();
        assert_eq!(stats.drops(DropReason::UnknownClient), 2);
        assert_eq!(
            stats.summary(),
            "replies=1 dropped vpn/missing_message_authenticator=2 \
             wifi/unknown_client=1 -/unknown_client=1"
        );
    }
}
