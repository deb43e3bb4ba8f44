//! Warnings for drops the operator can fix in the config: a NAS without Message-Authenticator
//! (Debian 12's pam_radius_auth 2.0), a wrong shared secret, a proxy's unsigned Proxy-State,
//! a broken Message-Authenticator, a source that is no client. Without them the operator
//! sees only the NAS time out.
//!
//! The first drop of each client and reason is logged at WARN with the client's name and
//! the key to change; after that at most one a minute per client and reason, so a NAS that
//! retransmits (or a flood) cannot fill the log. State per bucket of `Stats`: bounded by
//! the configured clients.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::guard::DropReason;
use super::stats::Bucket;
use crate::config::ClientConfig;

/// The least time between two warnings of one client and reason.
const INTERVAL: Duration = Duration::from_secs(60);

pub struct DropWarnings {
    started: Instant,
    /// Per bucket and reason: when it last warned, in ms since `started` plus 1; 0 = never.
    last: Vec<[AtomicU64; DropReason::ALL.len()]>,
}

impl DropWarnings {
    pub fn new(buckets: usize) -> DropWarnings {
        DropWarnings {
            started: Instant::now(),
            last: (0..buckets).map(|_| Default::default()).collect(),
        }
    }

    /// Logs a warning for this drop if its reason has advice and this client and reason
    /// have not warned within `INTERVAL`. `count` is the drops of this client and reason.
    pub fn note(
        &self,
        bucket: Bucket,
        client: Option<&ClientConfig>,
        source: IpAddr,
        reason: DropReason,
        count: u64,
    ) {
        let Some(advice) = advice(client, source, reason) else {
            return;
        };
        let Some(slot) = self
            .last
            .get(bucket.index())
            .map(|slots| &slots[reason as usize])
        else {
            return;
        };
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = slot.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= INTERVAL.as_millis() as u64;
        // Only the one that moves the time on warns, however many drops race here.
        if due
            && slot
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let name = client.map_or("-", |c| c.name.as_str());
            tracing::warn!(
                client = %name,
                source = %source,
                reason = %reason.label(),
                dropped = count,
                "{advice} (at most one such warning a minute)"
            );
        }
    }
}

/// What to tell the operator about a drop, or `None` for drops no setting fixes.
fn advice(client: Option<&ClientConfig>, source: IpAddr, reason: DropReason) -> Option<String> {
    let Some(client) = client else {
        return (reason == DropReason::UnknownClient).then(|| {
            format!(
                "datagram from {source}, which no [[client]] address covers; if it is a NAS, \
                 add a [[client]] for it"
            )
        });
    };
    let name = &client.name;
    Some(match reason {
        // Only Status-Server is refused for lack of one where it is not required.
        DropReason::MissingMessageAuthenticator if !client.require_message_authenticator => {
            format!(
                "client {name} sends Status-Server without Message-Authenticator, which RFC 5997 \
                 requires; make the NAS or proxy sign Status-Server"
            )
        }
        DropReason::MissingMessageAuthenticator => format!(
            "client {name} sends no Message-Authenticator; if this NAS cannot, set \
             require_message_authenticator = false for it"
        ),
        DropReason::BadMessageAuthenticator => format!(
            "client {name} sends a Message-Authenticator that does not verify: the shared \
             secret probably differs; check its secret (or secret_file) against the NAS's"
        ),
        DropReason::ProxyStateWithoutMessageAuthenticator => format!(
            "client {name} sends Proxy-State without Message-Authenticator; make the proxy \
             sign its requests, or if it cannot, set limit_proxy_state = false for it"
        ),
        DropReason::MessageAuthenticatorWrongLength => format!(
            "client {name} sends a Message-Authenticator whose length is not 18, which RFC \
             3579 says to discard; the NAS is broken: no setting accepts it, update or fix the NAS"
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(require: bool) -> ClientConfig {
        ClientConfig {
            require_message_authenticator: require,
            ..ClientConfig::with_defaults(
                "vpn",
                Some("10.0.0.1/32".parse().unwrap()),
                "0123456789abcdef",
            )
        }
    }

    #[test]
    fn each_fixable_drop_names_the_client_and_the_key() {
        let source: IpAddr = "10.0.0.1".parse().unwrap();
        let say = |c: &ClientConfig, r| advice(Some(c), source, r).unwrap();
        let strict = client(true);
        assert!(
            say(&strict, DropReason::MissingMessageAuthenticator)
                .contains("client vpn sends no Message-Authenticator; if this NAS cannot, set require_message_authenticator = false for it")
        );
        assert!(say(&strict, DropReason::BadMessageAuthenticator).contains("secret"));
        assert!(
            say(&strict, DropReason::ProxyStateWithoutMessageAuthenticator)
                .contains("limit_proxy_state = false")
        );
        assert!(say(&strict, DropReason::MessageAuthenticatorWrongLength).contains("RFC 3579"));
        assert!(
            say(&client(false), DropReason::MissingMessageAuthenticator).contains("Status-Server")
        );
        assert!(advice(Some(&strict), source, DropReason::Overloaded).is_none());
        assert!(
            advice(None, source, DropReason::UnknownClient)
                .unwrap()
                .contains("10.0.0.1")
        );
        assert!(advice(None, source, DropReason::Malformed).is_none());
    }
}
