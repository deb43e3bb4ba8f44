//! Fuzz bodies for the receive path, called by `fuzz/fuzz_targets/*.rs` and, over the
//! committed seed corpus, by `cargo test`. They must never panic on any input.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::dedup::{DedupCache, DedupKey};
use super::dialect::Dialect;
use super::dictionary::Dictionary;
use super::guard;
use super::packet::{Packet, PacketBuilder};
use super::reply::{self, ReplyContext, ReplyPolicy};
use super::request;
use crate::auth::{Decision, Grants, TransactionId};
use crate::config::ClientConfig;

/// The shared secret the seed corpus is signed with.
pub const FUZZ_SECRET: &str = "fuzzing-shared-secret";

fn client(require_message_authenticator: bool) -> ClientConfig {
    ClientConfig {
        require_message_authenticator,
        ..ClientConfig::with_defaults(
            "fuzz",
            Some("127.0.0.1/32".parse().expect("a literal network")),
            FUZZ_SECRET,
        )
    }
}

/// One datagram through guard, dedup key, request extraction and every kind of reply, for
/// a client that requires Message-Authenticator and one that does not.
pub fn receive(datagram: &[u8]) {
    let source: SocketAddr = "127.0.0.1:1812".parse().expect("a literal address");
    let dedup = DedupCache::new(std::time::Duration::from_secs(30), 16, 1 << 20);
    for (client, dialect) in [
        (client(true), Dialect::Classic),
        (client(false), Dialect::Classic),
        (client(false), Dialect::Radius11),
    ] {
        let Ok(verified) = guard::check_as(&client, datagram, dialect) else {
            continue;
        };
        let packet = verified.packet();
        let key = DedupKey {
            connection: 0,
            source,
            identifier: packet.identifier,
            authenticator: packet.authenticator,
        };
        dedup.check(key, Instant::now());
        let context = ReplyContext::of(&verified);
        if verified.is_status_server() {
            check_reply(&reply::status_accept(&context, &client));
            continue;
        }
        let policy = policy();
        let request = request::extract(&verified, &client, &policy.dictionary);
        let state = request.state.as_deref().and_then(TransactionId::parse);
        let prompt =
            String::from_utf8_lossy(request.password.as_deref().unwrap_or_default()).repeat(3);
        // Attribute texts built from the input exercise the dictionary's encoder too.
        let grants = Grants {
            group: Some("staff".into()),
            attributes: vec![
                format!("Filter-Id={}", request.user_name),
                format!(
                    "Class=0x{}",
                    hex::encode(request.state.as_deref().unwrap_or_default())
                ),
                format!("Tunnel-Private-Group-Id:1={}", request.user_name),
                request.user_name.clone(),
            ],
            serial: Some(request.user_name.clone()),
        };
        let mut decisions = vec![
            Decision::Accept(grants),
            Decision::Reject {
                message: Some(prompt.clone()),
            },
        ];
        if let Some(state) = state.or_else(|| TransactionId::random().ok()) {
            decisions.push(Decision::Challenge {
                state,
                prompt,
                timeout: std::time::Duration::from_secs(300),
            });
        }
        for decision in decisions {
            let bytes = reply::encode(&decision, &context, &client, policy);
            dedup.answered(key, bytes.clone().into());
            check_reply(&bytes);
        }
    }
}

/// The shipped dictionaries and a group, loaded once for all runs.
fn policy() -> &'static ReplyPolicy {
    static POLICY: OnceLock<ReplyPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dictionaries");
        let dictionary =
            Arc::new(Dictionary::load_dir(&dir).expect("the shipped dictionaries load"));
        let staff = [
            "Service-Type=Framed-User",
            "Cisco-AVPair=shell:priv-lvl=15",
            "Tunnel-Type:1=VLAN",
        ]
        .iter()
        .map(|line| dictionary.encode(line).expect("a valid attribute"))
        .collect();
        ReplyPolicy {
            send_prompt: true,
            dictionary,
            groups: BTreeMap::from([("staff".to_string(), staff)]),
            return_serial: true,
        }
    })
}

/// Replies must always decode and stay within 4096 octets.
fn check_reply(bytes: &[u8]) {
    assert!(
        Packet::decode(bytes).is_ok(),
        "otpgate built a reply it cannot decode"
    );
}

/// decode -> encode -> decode gives the same packet.
pub fn packet_round_trip(data: &[u8]) {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    let mut builder = PacketBuilder::new(packet.code, packet.identifier);
    for attribute in &packet.attributes {
        builder.push(attribute.kind, attribute.value);
    }
    let bytes = builder.finish_request(&packet.authenticator, b"");
    let again = Packet::decode(&bytes).expect("an encoded packet decodes");
    assert_eq!(
        (again.code, again.identifier, again.authenticator),
        (packet.code, packet.identifier, packet.authenticator)
    );
    assert_eq!(again.attributes, packet.attributes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        entries
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    }

    #[test]
    fn the_receive_body_survives_its_seed_corpus() {
        let seeds = corpus("receive");
        assert!(seeds.len() >= 5);
        for seed in &seeds {
            receive(seed);
            packet_round_trip(seed);
        }
    }

    #[test]
    fn the_seed_corpus_holds_requests_that_pass_the_guard() {
        let passing = corpus("receive")
            .iter()
            .filter(|s| guard::check(&client(true), s).is_ok())
            .count();
        assert!(passing >= 3, "only {passing} seeds reach past the guard");
    }
}
