//! Counters of requests and replies by client and code, and of dropped datagrams by client
//! and reason. The counters are handles into the `otpgate_*` families of `ops::metrics`
//! (resolved here once per client, so counting is one atomic add); the periodic summary
//! log line reads the same counters back.
//!
//! Memory is bounded by the config: there is one bucket per configured client name, and
//! every source that is no configured client shares one more bucket, however many there are.
//! A reload builds new `Stats` from the same families, so a client that stays keeps its
//! counts.

use std::collections::HashMap;

use prometheus::IntCounter;

use super::guard::DropReason;
use crate::ops::metrics::Metrics;

/// What the summary and the metrics call the bucket of sources that are no configured client.
const UNKNOWN: &str = "-";

/// Reply codes by their first octet, as the metrics label them.
const REPLY_CODES: [(u8, &str); 3] = [
    (2, "access_accept"),
    (3, "access_reject"),
    (11, "access_challenge"),
];

/// Where a drop is counted: a configured client's bucket or the shared one for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket(usize);

impl Bucket {
    /// 0 to `Stats::bucket_count() - 1`.
    pub fn index(self) -> usize {
        self.0
    }
}

/// One bucket's counters.
struct Counters {
    drops: [IntCounter; DropReason::ALL.len()],
    replies: [IntCounter; REPLY_CODES.len()],
    access_requests: IntCounter,
    status_servers: IntCounter,
}

/// Which request a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCode {
    AccessRequest,
    StatusServer,
}

pub struct Stats {
    /// Bucket of each configured client name; `names.len()` is the shared bucket.
    buckets: HashMap<String, usize>,
    names: Vec<String>,
    counters: Vec<Counters>,
}

impl Stats {
    /// Counters for these configured client names, in `metrics`.
    pub fn new<'a>(metrics: &Metrics, clients: impl IntoIterator<Item = &'a str>) -> Stats {
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
        let counters = names
            .iter()
            .map(String::as_str)
            .chain([UNKNOWN])
            .map(|name| Counters {
                drops: DropReason::ALL
                    .map(|reason| metrics.drops.with_label_values(&[name, reason.label()])),
                replies: REPLY_CODES
                    .map(|(_, code)| metrics.replies.with_label_values(&[name, code])),
                access_requests: metrics
                    .requests
                    .with_label_values(&[name, "access_request"]),
                status_servers: metrics.requests.with_label_values(&[name, "status_server"]),
            })
            .collect();
        Stats {
            buckets,
            names,
            counters,
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
        self.counters.len()
    }

    /// Counts a drop; returns how many of this bucket and reason there have been.
    pub fn dropped(&self, bucket: Bucket, reason: DropReason) -> u64 {
        match self.counters.get(bucket.0) {
            Some(counters) => {
                let counter = &counters.drops[reason as usize];
                counter.inc();
                counter.get()
            }
            None => 0,
        }
    }

    /// Counts a request that passed the guard.
    pub fn requested(&self, bucket: Bucket, code: RequestCode) {
        if let Some(counters) = self.counters.get(bucket.0) {
            match code {
                RequestCode::AccessRequest => counters.access_requests.inc(),
                RequestCode::StatusServer => counters.status_servers.inc(),
            }
        }
    }

    /// Counts a reply sent; `code` is its first octet.
    pub fn replied(&self, bucket: Bucket, code: u8) {
        let slot = REPLY_CODES.iter().position(|(c, _)| *c == code);
        if let (Some(counters), Some(slot)) = (self.counters.get(bucket.0), slot) {
            counters.replies[slot].inc();
        }
    }

    /// Drops for a reason, over all buckets.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.counters
            .iter()
            .map(|counters| counters.drops[reason as usize].get())
            .sum()
    }

    /// `replies=12 dropped vpn/bad_message_authenticator=1 -/unknown_client=3`, non-zero
    /// only, by client (`-` for sources that are no client) and reason.
    pub fn summary(&self) -> String {
        let replies: u64 = self
            .counters
            .iter()
            .flat_map(|counters| counters.replies.iter().map(IntCounter::get))
            .sum();
        let mut line = format!("replies={replies}");
        let mut drops = Vec::new();
        for (index, counters) in self.counters.iter().enumerate() {
            let name = self.names.get(index).map_or(UNKNOWN, String::as_str);
            for reason in DropReason::ALL {
                let count = counters.drops[reason as usize].get();
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
        let metrics = Metrics::new();
        let stats = Stats::new(&metrics, ["vpn", "wifi"]);
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
        stats.replied(vpn, 2);
        assert_eq!(stats.drops(DropReason::UnknownClient), 2);
        assert_eq!(
            stats.summary(),
            "replies=1 dropped vpn/missing_message_authenticator=2 \
             wifi/unknown_client=1 -/unknown_client=1"
        );
        let text = metrics.render();
        assert!(text.contains("otpgate_dropped_total{client=\"-\",reason=\"unknown_client\"} 1"));
        assert!(text.contains("otpgate_replies_total{client=\"vpn\",code=\"access_accept\"} 1"));
    }

    #[test]
    fn a_client_that_stays_keeps_its_counts_across_a_rebuild() {
        let metrics = Metrics::new();
        let before = Stats::new(&metrics, ["vpn"]);
        before.dropped(before.bucket(Some("vpn")), DropReason::Malformed);
        let after = Stats::new(&metrics, ["vpn", "wifi"]);
        assert_eq!(after.drops(DropReason::Malformed), 1);
    }
}
