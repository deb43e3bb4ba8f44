//! The gate every datagram passes before anything acts on it: packet sanity, request codes,
//! the Message-Authenticator policy (RFC 3579 section 3.2, RFC 5997, the BlastRADIUS
//! mitigations) and the Proxy-State policy. Only `check` can build a `VerifiedRequest`, so
//! no path can skip these checks. Under RADIUS/1.1 (RFC 9765) TLS authenticates
//! every packet: a Message-Authenticator means nothing there and is ignored, and the
//! User-Password is the password itself (1 to 128 octets).

use super::dialect::Dialect;
use super::packet::{DecodeError, Packet, attr, code};
use crate::config::ClientConfig;

/// Why a datagram was dropped without an answer; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    UnknownClient = 0,
    Malformed,
    UnsupportedCode,
    MissingMessageAuthenticator,
    BadMessageAuthenticator,
    /// A Message-Authenticator whose length is not 18 (RFC 3579 section 3.2: discard).
    MessageAuthenticatorWrongLength,
    ProxyStateWithoutMessageAuthenticator,
    DuplicateInFlight,
    Overloaded,
    TimedOut,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::UnknownClient,
        DropReason::Malformed,
        DropReason::UnsupportedCode,
        DropReason::MissingMessageAuthenticator,
        DropReason::BadMessageAuthenticator,
        DropReason::MessageAuthenticatorWrongLength,
        DropReason::ProxyStateWithoutMessageAuthenticator,
        DropReason::DuplicateInFlight,
        DropReason::Overloaded,
        DropReason::TimedOut,
    ];

    /// The counter's name in logs.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownClient => "unknown_client",
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedCode => "unsupported_code",
            DropReason::MissingMessageAuthenticator => "missing_message_authenticator",
            DropReason::BadMessageAuthenticator => "bad_message_authenticator",
            DropReason::MessageAuthenticatorWrongLength => "message_authenticator_wrong_length",
            DropReason::ProxyStateWithoutMessageAuthenticator => {
                "proxy_state_without_message_authenticator"
            }
            DropReason::DuplicateInFlight => "duplicate_in_flight",
            DropReason::Overloaded => "overloaded",
            DropReason::TimedOut => "timed_out",
        }
    }
}

impl From<DecodeError> for DropReason {
    fn from(_: DecodeError) -> Self {
        DropReason::Malformed
    }
}

/// A request that passed every check of this module. The private field keeps other modules
/// from building one.
#[derive(Debug)]
pub struct VerifiedRequest<'a> {
    packet: Packet<'a>,
    dialect: Dialect,
}

impl<'a> VerifiedRequest<'a> {
    pub fn packet(&self) -> &Packet<'a> {
        &self.packet
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn is_status_server(&self) -> bool {
        self.packet.code == code::STATUS_SERVER
    }

    /// A copy that owns its bytes, to hand to a task.
    pub fn to_owned(&self) -> OwnedVerifiedRequest {
        OwnedVerifiedRequest {
            bytes: self.packet.bytes.to_vec(),
            dialect: self.dialect,
        }
    }
}

/// A verified request that owns its bytes, so the receive loop can hand it to a task and
/// reuse its buffer. Like `VerifiedRequest`, only this module builds one.
#[derive(Debug, Clone)]
pub struct OwnedVerifiedRequest {
    bytes: Vec<u8>,
    dialect: Dialect,
}

impl OwnedVerifiedRequest {
    /// The request again. The bytes decoded once already, so this does not fail; an Option
    /// keeps the receive path free of unwraps all the same.
    pub fn verified(&self) -> Option<VerifiedRequest<'_>> {
        Packet::decode(&self.bytes)
            .ok()
            .map(|packet| VerifiedRequest {
                packet,
                dialect: self.dialect,
            })
    }
}

/// Attributes a request may carry at most once (RFC 2865 section 5.44 table, RFC 3579).
const SINGLE: &[u8] = &[
    attr::USER_NAME,
    attr::USER_PASSWORD,
    attr::STATE,
    attr::MESSAGE_AUTHENTICATOR,
];

/// The same under RADIUS/1.1, where a Message-Authenticator is ignored (RFC 9765).
const SINGLE_RADIUS_1_1: &[u8] = &[attr::USER_NAME, attr::USER_PASSWORD, attr::STATE];

/// The value of a Message-Authenticator: an HMAC-MD5 (the attribute's length is 18).
const MESSAGE_AUTHENTICATOR_LEN: usize = 16;

/// Checks a classic RADIUS datagram from a known client.
pub fn check<'a>(
    client: &ClientConfig,
    datagram: &'a [u8],
) -> Result<VerifiedRequest<'a>, DropReason> {
    check_as(client, datagram, Dialect::Classic)
}

/// Checks a packet from a known client in the dialect its transport negotiated.
pub fn check_as<'a>(
    client: &ClientConfig,
    datagram: &'a [u8],
    dialect: Dialect,
) -> Result<VerifiedRequest<'a>, DropReason> {
    let packet = Packet::decode(datagram)?;
    if packet.code != code::ACCESS_REQUEST && packet.code != code::STATUS_SERVER {
        return Err(DropReason::UnsupportedCode);
    }
    let single = match dialect {
        Dialect::Classic => SINGLE,
        // RFC 9765: a Message-Authenticator is ignored, however many there are.
        Dialect::Radius11 => SINGLE_RADIUS_1_1,
    };
    if single.iter().any(|kind| packet.count(*kind) > 1) {
        return Err(DropReason::Malformed);
    }
    if let Some(password) = packet.first(attr::USER_PASSWORD) {
        // RFC 2865 section 5.2: 16 to 128 octets, a multiple of 16; RFC 9765:
        // in clear, 1 to 128 octets.
        let padded = dialect == Dialect::Classic;
        if password.is_empty()
            || password.len() > 128
            || (padded && !password.len().is_multiple_of(16))
        {
            return Err(DropReason::Malformed);
        }
    }
    if packet
        .first(attr::USER_NAME)
        .is_some_and(|name| std::str::from_utf8(name).is_err())
    {
        return Err(DropReason::Malformed);
    }
    if dialect == Dialect::Radius11 {
        return Ok(VerifiedRequest { packet, dialect });
    }
    // RFC 3579 section 3.2: a Message-Authenticator of the wrong length means discard, whether
    // or not this client must send one. Checked here so that it is never taken for absent.
    if packet
        .all(attr::MESSAGE_AUTHENTICATOR)
        .any(|value| value.len() != MESSAGE_AUTHENTICATOR_LEN)
    {
        return Err(DropReason::MessageAuthenticatorWrongLength);
    }
    match packet.verify_message_authenticator(client.secret.expose().as_bytes()) {
        Some(true) => {}
        Some(false) => return Err(DropReason::BadMessageAuthenticator),
        None => {
            // RFC 5997 section 3: Status-Server MUST carry a Message-Authenticator.
            if packet.code == code::STATUS_SERVER || client.require_message_authenticator {
                return Err(DropReason::MissingMessageAuthenticator);
            }
            if client.limit_proxy_state && packet.count(attr::PROXY_STATE) > 0 {
                return Err(DropReason::ProxyStateWithoutMessageAuthenticator);
            }
        }
    }
    Ok(VerifiedRequest { packet, dialect })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::radius::packet::{PacketBuilder, hide_password};

    const SECRET: &str = "a-long-shared-secret";

    fn client(require: bool, limit: bool) -> ClientConfig {
        ClientConfig {
            require_message_authenticator: require,
            limit_proxy_state: limit,
            ..ClientConfig::with_defaults("nas", Some("127.0.0.1/32".parse().unwrap()), SECRET)
        }
    }

    fn request(with_ma: bool, extra: &[(u8, &[u8])]) -> Vec<u8> {
        let auth = [3u8; 16];
        let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 1);
        if with_ma {
            b.message_authenticator();
        }
        b.push(attr::USER_NAME, b"alice");
        b.push(
            attr::USER_PASSWORD,
            &hide_password(b"1234", SECRET.as_bytes(), &auth),
        );
        for (kind, value) in extra {
            b.push(*kind, value);
        }
        b.finish_request(&auth, SECRET.as_bytes())
    }

    #[test]
    fn message_authenticator_policy() {
        assert!(check(&client(true, true), &request(true, &[])).is_ok());
        assert_eq!(
            check(&client(true, true), &request(false, &[])).unwrap_err(),
            DropReason::MissingMessageAuthenticator
        );
        assert!(check(&client(false, true), &request(false, &[])).is_ok());
        let mut forged = request(true, &[]);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            check(&client(false, false), &forged).unwrap_err(),
            DropReason::BadMessageAuthenticator
        );
    }

    #[test]
    fn a_message_authenticator_of_the_wrong_length_is_dropped_even_when_not_required() {
        let auth = [5u8; 16];
        for length in [0usize, 1, 15, 17, 32] {
            let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 1);
            b.push(attr::MESSAGE_AUTHENTICATOR, &vec![0u8; length])
                .push(attr::USER_NAME, b"alice")
                .push(
                    attr::USER_PASSWORD,
                    &hide_password(b"1234", SECRET.as_bytes(), &auth),
                );
            let packet = b.finish_request(&auth, SECRET.as_bytes());
            for client in [client(false, false), client(true, true)] {
                assert_eq!(
                    check(&client, &packet).unwrap_err(),
                    DropReason::MessageAuthenticatorWrongLength,
                    "length {length}"
                );
            }
        }
        assert!(check(&client(false, false), &request(false, &[])).is_ok());
    }

    #[test]
    fn proxy_state_without_message_authenticator_is_dropped_when_limited() {
        let packet = request(false, &[(attr::PROXY_STATE, b"ps")]);
        assert_eq!(
            check(&client(false, true), &packet).unwrap_err(),
            DropReason::ProxyStateWithoutMessageAuthenticator
        );
        assert!(check(&client(false, false), &packet).is_ok());
        assert!(
            check(
                &client(false, true),
                &request(true, &[(attr::PROXY_STATE, b"ps")])
            )
            .is_ok()
        );
    }

    #[test]
    fn duplicate_state_bad_password_lengths_and_other_codes_are_dropped() {
        let two_states = request(true, &[(attr::STATE, b"a"), (attr::STATE, b"b")]);
        assert_eq!(
            check(&client(true, true), &two_states).unwrap_err(),
            DropReason::Malformed
        );
        let mut accounting = request(true, &[]);
        accounting[0] = 4;
        assert_eq!(
            check(&client(false, false), &accounting).unwrap_err(),
            DropReason::UnsupportedCode
        );
        let auth = [0u8; 16];
        let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 1);
        b.message_authenticator()
            .push(attr::USER_NAME, b"a")
            .push(attr::USER_PASSWORD, &[0u8; 17]);
        let odd = b.finish_request(&auth, SECRET.as_bytes());
        assert_eq!(
            check(&client(true, true), &odd).unwrap_err(),
            DropReason::Malformed
        );
        let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 1);
        b.message_authenticator()
            .push(attr::USER_NAME, &[0xff, 0xfe]);
        let bad_name = b.finish_request(&auth, SECRET.as_bytes());
        assert_eq!(
            check(&client(true, true), &bad_name).unwrap_err(),
            DropReason::Malformed
        );
    }

    #[test]
    fn status_server_needs_a_message_authenticator_even_when_not_required() {
        let bare = PacketBuilder::new(code::STATUS_SERVER, 1)
            .finish_request(&[1u8; 16], SECRET.as_bytes());
        assert_eq!(
            check(&client(false, false), &bare).unwrap_err(),
            DropReason::MissingMessageAuthenticator
        );
        let mut b = PacketBuilder::new(code::STATUS_SERVER, 1);
        b.message_authenticator();
        let signed = b.finish_request(&[1u8; 16], SECRET.as_bytes());
        assert!(
            check(&client(false, false), &signed)
                .unwrap()
                .is_status_server()
        );
    }

    #[test]
    fn under_radius_1_1_the_password_is_clear_and_a_message_authenticator_is_ignored() {
        let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 0);
        b.push(attr::MESSAGE_AUTHENTICATOR, &[0u8; 3])
            .push(attr::MESSAGE_AUTHENTICATOR, &[0u8; 16])
            .push(attr::USER_NAME, b"alice")
            .push(attr::USER_PASSWORD, b"4711");
        let packet = b.finish_unsigned(&[7u8; 16]);
        let verified = check_as(&client(true, true), &packet, Dialect::Radius11).unwrap();
        assert_eq!(verified.dialect(), Dialect::Radius11);
        assert!(
            check(&client(true, true), &packet).is_err(),
            "the same packet as classic RADIUS is dropped"
        );
        let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 0);
        b.push(attr::USER_NAME, b"alice")
            .push(attr::USER_PASSWORD, b"");
        let empty = b.finish_unsigned(&[7u8; 16]);
        assert_eq!(
            check_as(&client(true, true), &empty, Dialect::Radius11).unwrap_err(),
            DropReason::Malformed
        );
    }
}
