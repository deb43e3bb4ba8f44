//! Encodes a decision as Access-Accept, -Challenge or -Reject (DESIGN section 3):
//! Message-Authenticator first (unless the client opted out), then State, Reply-Message
//! split at 253 octets, Session-Timeout and Prompt for a challenge, then every Proxy-State
//! of the request in order; the Message-Authenticator is computed before the Response
//! Authenticator.

use super::packet::{Packet, PacketBuilder, attr, code, split_text};
use crate::auth::Decision;
use crate::config::ClientConfig;

/// What a reply needs from its request.
pub struct ReplyContext {
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub proxy_states: Vec<Vec<u8>>,
}

impl ReplyContext {
    pub fn of(packet: &Packet<'_>) -> Self {
        ReplyContext {
            identifier: packet.identifier,
            authenticator: packet.authenticator,
            proxy_states: packet.all(attr::PROXY_STATE).map(<[u8]>::to_vec).collect(),
        }
    }
}

/// Encodes the reply to an Access-Request.
pub fn encode(
    decision: &Decision,
    context: &ReplyContext,
    client: &ClientConfig,
    send_prompt: bool,
) -> Vec<u8> {
    let reply_code = match decision {
        Decision::Accept => code::ACCESS_ACCEPT,
        Decision::Challenge { .. } => code::ACCESS_CHALLENGE,
        Decision::Reject { .. } => code::ACCESS_REJECT,
    };
    let mut builder = start(reply_code, context, client);
    match decision {
        Decision::Accept => {}
        Decision::Challenge {
            state,
            prompt,
            timeout,
        } => {
            builder.push(attr::STATE, state.as_str().as_bytes());
            push_text(&mut builder, prompt);
            let seconds = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
            builder.push(attr::SESSION_TIMEOUT, &seconds.to_be_bytes());
            if send_prompt {
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

fn start(reply_code: u8, context: &ReplyContext, client: &ClientConfig) -> PacketBuilder {
    let mut builder = PacketBuilder::new(reply_code, context.identifier);
    if client.send_message_authenticator {
        builder.message_authenticator();
    }
    builder
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
    builder.finish_reply(&context.authenticator, client.secret.expose().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TransactionId;
    use crate::config::{ClientMode, Secret};
    use std::time::Duration;

    fn client() -> ClientConfig {
        ClientConfig {
            name: "nas".into(),
            network: "127.0.0.1/32".parse().unwrap(),
            secret: Secret::new("a-long-shared-secret".into()),
            require_message_authenticator: true,
            limit_proxy_state: true,
            send_message_authenticator: true,
            mode: ClientMode::Challenge,
        }
    }

    #[test]
    fn a_challenge_carries_ma_first_state_prompt_timeout_and_proxy_states_in_order() {
        let context = ReplyContext {
            identifier: 7,
            authenticator: [5; 16],
            proxy_states: vec![b"one".to_vec(), b"two".to_vec()],
        };
        let state = TransactionId::random().unwrap();
        let prompt = "x".repeat(300);
        let decision = Decision::Challenge {
            state: state.clone(),
            prompt: prompt.clone(),
            timeout: Duration::from_secs(300),
        };
        let bytes = encode(&decision, &context, &client(), false);
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
        };
        let bytes = encode(&Decision::Accept, &context, &client(), false);
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
        };
        let bytes = encode(
            &Decision::Reject { message: None },
            &context,
            &client,
            false,
        );
        assert_eq!(bytes.len(), 20);
    }
}
