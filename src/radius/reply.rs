//! Encodes a decision as Access-Accept, -Challenge or -Reject (DESIGN section 3):
//! Message-Authenticator first (unless the client opted out), then State, Reply-Message
//! split at 253 octets, Session-Timeout and Prompt for a challenge, then every Proxy-State
//! of the request in order; the Message-Authenticator is computed before the Response
//! Authenticator. Under RADIUS/1.1 (RFC 9765) a reply has no
//! Message-Authenticator and no Response Authenticator: Reserved-1 is zero and the
//! request's Token is echoed.
//!
//! An Access-Accept also carries the configured attributes: the client's, the user's
//! group's, the user's own, and optionally the token serial. An Access-Challenge carries
//! only what RFC 2865 section 4.4 allows (State, Reply-Message, Session-Timeout, Prompt and
//! Proxy-State here): configured attributes never go into one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::dialect::Dialect;
use super::dictionary::{Dictionary, WireAttribute};
use super::guard::VerifiedRequest;
use super::packet::{PacketBuilder, attr, code, split_text};
use crate::auth::{Decision, Grants};
use crate::config::{ClientConfig, Config, SERIAL_ATTRIBUTE};

/// What replies need from the configuration.
#[derive(Debug, Clone, Default)]
pub struct ReplyPolicy {
    /// Send Prompt = No-Echo in challenges.
    pub send_prompt: bool,
    /// Encodes per-user attributes (stored as text) at reply time.
    pub dictionary: Arc<Dictionary>,
    /// `[group.NAME]` attributes, encoded at start-up.
    pub groups: BTreeMap<String, Vec<WireAttribute>>,
    pub return_serial: bool,
}

impl ReplyPolicy {
    pub fn from_config(config: &Config) -> Self {
        ReplyPolicy {
            send_prompt: config.challenge.send_prompt,
            dictionary: config.dictionary.clone(),
            groups: config.groups.clone(),
            return_serial: config.server.return_serial,
        }
    }
}

/// What a reply needs from its request.
pub struct ReplyContext {
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub proxy_states: Vec<Vec<u8>>,
    pub dialect: Dialect,
}

impl ReplyContext {
    pub fn of(verified: &VerifiedRequest<'_>) -> Self {
        let packet = verified.packet();
        ReplyContext {
            identifier: packet.identifier,
            authenticator: packet.authenticator,
            proxy_states: packet.all(attr::PROXY_STATE).map(<[u8]>::to_vec).collect(),
            dialect: verified.dialect(),
        }
    }
}

/// Encodes the reply to an Access-Request.
pub fn encode(
    decision: &Decision,
    context: &ReplyContext,
    client: &ClientConfig,
    policy: &ReplyPolicy,
) -> Vec<u8> {
    let reply_code = match decision {
        Decision::Accept(_) => code::ACCESS_ACCEPT,
        Decision::Challenge { .. } => code::ACCESS_CHALLENGE,
        Decision::Reject { .. } => code::ACCESS_REJECT,
    };
    let mut builder = start(reply_code, context, client);
    match decision {
        Decision::Accept(grants) => push_grants(&mut builder, grants, client, policy),
        Decision::Challenge {
            state,
            prompt,
            timeout,
        } => {
            builder.push(attr::STATE, state.as_str().as_bytes());
            push_text(&mut builder, prompt);
            let seconds = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
            builder.push(attr::SESSION_TIMEOUT, &seconds.to_be_bytes());
            if policy.send_prompt {
                // RFC 2869 section 5.10: 0 = No-Echo.
                builder.push(attr::PROMPT, &0u32.to_be_bytes());
            }
        }
        Decision::Reject { message } => {
            if let Some(message) = message {
                push_text(&mut builder, message);
            }
        }
    }
    finish(builder, context, client)
}

/// The Access-Accept answering a Status-Server (RFC 5997 section 3).
pub fn status_accept(context: &ReplyContext, client: &ClientConfig) -> Vec<u8> {
    let builder = start(code::ACCESS_ACCEPT, context, client);
    finish(builder, context, client)
}

/// The client's, the group's and the user's attributes, then the serial.
fn push_grants(
    builder: &mut PacketBuilder,
    grants: &Grants,
    client: &ClientConfig,
    policy: &ReplyPolicy,
) {
    let group = grants
        .group
        .as_ref()
        .and_then(|g| policy.groups.get(g))
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (kind, value) in client.accept_attributes.iter().chain(group) {
        builder.push(*kind, value);
    }
    let serial = grants
        .serial
        .as_ref()
        .filter(|_| policy.return_serial)
        .map(|s| format!("{SERIAL_ATTRIBUTE}={s}"));
    for line in grants.attributes.iter().chain(serial.as_ref()) {
        // Stored attributes were checked when set; a dictionary changed since then may
        // refuse one, which is left out rather than failing the login.
        match policy.dictionary.encode(line) {
            Ok((kind, value)) => {
                builder.push(kind, &value);
            }
            Err(e) => tracing::warn!(attribute = %line, error = %e, "reply attribute left out"),
        }
    }
}

fn start(reply_code: u8, context: &ReplyContext, client: &ClientConfig) -> PacketBuilder {
    match context.dialect {
        Dialect::Classic => {
            let mut builder = PacketBuilder::new(reply_code, context.identifier);
            if client.send_message_authenticator {
                builder.message_authenticator();
            }
            builder
        }
        // RFC 9765: Reserved-1 is zero.
        Dialect::Radius11 => PacketBuilder::new(reply_code, 0),
    }
}

fn push_text(builder: &mut PacketBuilder, text: &str) {
    for piece in split_text(text) {
        builder.push(attr::REPLY_MESSAGE, piece.as_bytes());
    }
}

fn finish(mut builder: PacketBuilder, context: &ReplyContext, client: &ClientConfig) -> Vec<u8> {
    for proxy_state in &context.proxy_states {
        builder.push(attr::PROXY_STATE, proxy_state);
    }
    match context.dialect {
        Dialect::Classic => {
            builder.finish_reply(&context.authenticator, client.secret.expose().as_bytes())
        }
        Dialect::Radius11 => builder.finish_unsigned(&Dialect::reply_token(&context.authenticator)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Grants, TransactionId};

    use crate::radius::packet::Packet;
    use std::time::Duration;

    fn client() -> ClientConfig {
        ClientConfig::with_defaults(
            "nas",
            Some("127.0.0.1/32".parse().unwrap()),
            "a-long-shared-secret",
        )
    }

    #[test]
    fn a_challenge_carries_ma_first_state_prompt_timeout_and_proxy_states_in_order() {
        let context = ReplyContext {
            identifier: 7,
            authenticator: [5; 16],
            proxy_states: vec![b"one".to_vec(), b"two".to_vec()],
            dialect: Dialect::Classic,
        };
        let state = TransactionId::random().unwrap();
        let prompt = "x".repeat(300);
        let decision = Decision::Challenge {
            state: state.clone(),
            prompt: prompt.clone(),
            timeout: Duration::from_secs(300),
        };
        let bytes = encode(&decision, &context, &client(), &ReplyPolicy::default());
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.code, code::ACCESS_CHALLENGE);
        assert_eq!(packet.identifier, 7);
        assert_eq!(packet.attributes[0].kind, attr::MESSAGE_AUTHENTICATOR);
        assert_eq!(packet.first(attr::STATE), Some(state.as_str().as_bytes()));
        assert_eq!(
            packet.all(attr::REPLY_MESSAGE).collect::<Vec<_>>().concat(),
            prompt.as_bytes()
        );
        assert_eq!(
            packet.first(attr::SESSION_TIMEOUT),
            Some(&300u32.to_be_bytes()[..])
        );
        assert_eq!(
            packet.all(attr::PROXY_STATE).collect::<Vec<_>>(),
            vec![&b"one"[..], &b"two"[..]]
        );
    }

    #[test]
    fn the_reply_verifies_as_a_client_would_check_it() {
        let context = ReplyContext {
            identifier: 1,
            authenticator: [9; 16],
            proxy_states: vec![],
            dialect: Dialect::Classic,
        };
        let bytes = encode(
            &Decision::Accept(Grants::default()),
            &context,
            &client(),
            &ReplyPolicy::default(),
        );
        // Response Authenticator: MD5(code..length + request authenticator + attributes + secret).
        let mut check = bytes.clone();
        check[4..20].copy_from_slice(&[9; 16]);
        let mut md5 = <md5::Md5 as md5::Digest>::new();
        md5::Digest::update(&mut md5, &check);
        md5::Digest::update(&mut md5, b"a-long-shared-secret");
        assert_eq!(&bytes[4..20], md5::Digest::finalize(md5).as_slice());
        // The Message-Authenticator is computed over the packet with the request authenticator.
        let packet = Packet::decode(&check).unwrap();
        assert_eq!(
            packet.verify_message_authenticator(b"a-long-shared-secret"),
            Some(true)
        );
    }

    #[test]
    fn opting_out_leaves_the_message_authenticator_out() {
        let mut client = client();
        client.send_message_authenticator = false;
        let context = ReplyContext {
            identifier: 1,
            authenticator: [9; 16],
            proxy_states: vec![],
            dialect: Dialect::Classic,
        };
        let bytes = encode(
            &Decision::Reject { message: None },
            &context,
            &client,
            &ReplyPolicy::default(),
        );
        assert_eq!(bytes.len(), 20);
    }

    fn policy() -> ReplyPolicy {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dictionaries");
        let dictionary = Arc::new(Dictionary::load_dir(&dir).unwrap());
        let staff = vec![dictionary.encode("Idle-Timeout=600").unwrap()];
        ReplyPolicy {
            send_prompt: false,
            groups: BTreeMap::from([("staff".to_string(), staff)]),
            dictionary,
            return_serial: true,
        }
    }

    #[test]
    fn an_accept_carries_client_group_user_attributes_and_the_serial_in_that_order() {
        let policy = policy();
        let mut client = client();
        client.accept_attributes = vec![
            policy
                .dictionary
                .encode("Service-Type=Framed-User")
                .unwrap(),
        ];
        let grants = Grants {
            group: Some("staff".into()),
            attributes: vec!["Filter-Id=vpn".into(), "Bogus=1".into()],
            serial: Some("SMS01".into()),
        };
        let context = ReplyContext {
            identifier: 1,
            authenticator: [9; 16],
            proxy_states: vec![b"p".to_vec()],
            dialect: Dialect::Classic,
        };
        let bytes = encode(&Decision::Accept(grants), &context, &client, &policy);
        let packet = Packet::decode(&bytes).unwrap();
        let kinds: Vec<u8> = packet.attributes.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            vec![80, 6, 28, 11, 26, 33],
            "the unknown attribute is left out"
        );
        assert_eq!(&packet.attributes[4].value[..4], &32473u32.to_be_bytes());
    }

    #[test]
    fn a_challenge_never_carries_configured_attributes() {
        let policy = policy();
        let mut client = client();
        client.accept_attributes = vec![policy.dictionary.encode("Filter-Id=vpn").unwrap()];
        let context = ReplyContext {
            identifier: 1,
            authenticator: [9; 16],
            proxy_states: vec![],
            dialect: Dialect::Classic,
        };
        let decision = Decision::Challenge {
            state: TransactionId::random().unwrap(),
            prompt: "p".into(),
            timeout: Duration::from_secs(60),
        };
        let packet_bytes = encode(&decision, &context, &client, &policy);
        let packet = Packet::decode(&packet_bytes).unwrap();
        // RFC 2865 section 4.4: State, Reply-Message, Session-Timeout (and the MA).
        let kinds: Vec<u8> = packet.attributes.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, vec![80, 24, 18, 27]);
    }

    #[test]
    fn a_radius_1_1_reply_echoes_the_token_and_carries_no_md5() {
        let mut authenticator = [0u8; 16];
        authenticator[..4].copy_from_slice(&[1, 2, 3, 4]);
        authenticator[4..].copy_from_slice(&[9; 12]);
        let context = ReplyContext {
            identifier: 77,
            authenticator,
            proxy_states: vec![b"p".to_vec()],
            dialect: Dialect::Radius11,
        };
        let bytes = encode(
            &Decision::Accept(Grants::default()),
            &context,
            &client(),
            &ReplyPolicy::default(),
        );
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.identifier, 0, "Reserved-1 is zero");
        assert_eq!(
            packet.authenticator[..4],
            [1, 2, 3, 4],
            "the token is echoed"
        );
        assert_eq!(packet.authenticator[4..], [0; 12], "Reserved-2 is zero");
        assert_eq!(packet.count(attr::MESSAGE_AUTHENTICATOR), 0);
        assert_eq!(packet.first(attr::PROXY_STATE), Some(&b"p"[..]));
    }
}
