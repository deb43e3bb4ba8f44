//! The RADIUS codec (RFC 2865 section 3 and 5): bounded decoding of a datagram into borrowed
//! attributes, the Message-Authenticator (RFC 3579 section 3.2, HMAC-MD5), the Response
//! Authenticator, and User-Password hiding (RFC 2865 section 5.2).
//!
//! Decoding never panics and never allocates more than one small vector per datagram: every
//! length is checked before it is used. Policy (which attributes a client must send) lives in
//! `guard`, not here.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The largest datagram RFC 2865 section 3 allows; larger ones are dropped.
pub const MAX_PACKET_LEN: usize = 4096;
/// Header: code, identifier, length, authenticator.
pub const HEADER_LEN: usize = 20;
/// Largest value one attribute can carry (its length octet covers type and length too).
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 253;

/// Packet codes otpgate reads or writes.
pub mod code {
    pub const ACCESS_REQUEST: u8 = 1;
    pub const ACCESS_ACCEPT: u8 = 2;
    pub const ACCESS_REJECT: u8 = 3;
    pub const ACCESS_CHALLENGE: u8 = 11;
    pub const STATUS_SERVER: u8 = 12;
}

/// Attribute types otpgate reads or writes (RFC 2865 section 5, RFC 3579, RFC 5997).
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const CHAP_PASSWORD: u8 = 3;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const SESSION_TIMEOUT: u8 = 27;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const PROXY_STATE: u8 = 33;
    pub const PROMPT: u8 = 76;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
    pub const NAS_IPV6_ADDRESS: u8 = 95;
}

/// Why a datagram could not be decoded. Each maps to a drop counter, never to a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram shorter than the RADIUS header")]
    TooShort,
    #[error("datagram longer than 4096 octets")]
    TooLong,
    #[error("length field outside 20..=4096 or larger than the datagram")]
    BadLength,
    #[error("attribute length below 2 or past the end of the packet")]
    BadAttribute,
}

/// One attribute as it appears on the wire, borrowing its value from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// A decoded packet borrowing from the datagram. `bytes` is the packet without any padding
/// beyond the length field (RFC 2865 section 3: octets past Length are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: Vec<Attribute<'a>>,
    pub bytes: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Decodes a datagram. Checks every length; rejects, never truncates silently.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        if datagram.len() > MAX_PACKET_LEN {
            return Err(DecodeError::TooLong);
        }
        let header = datagram.get(..HEADER_LEN).ok_or(DecodeError::TooShort)?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) {
            return Err(DecodeError::BadLength);
        }
        let bytes = datagram.get(..length).ok_or(DecodeError::BadLength)?;
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&header[4..HEADER_LEN]);
        let attributes = decode_attributes(&bytes[HEADER_LEN..])?;
        Ok(Packet {
            code: header[0],
            identifier: header[1],
            authenticator,
            attributes,
            bytes,
        })
    }

    /// The first attribute of a type, if any.
    pub fn first(&self, kind: u8) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value)
    }

    /// How many attributes of a type the packet carries.
    pub fn count(&self, kind: u8) -> usize {
        self.attributes.iter().filter(|a| a.kind == kind).count()
    }

    /// Every value of a type, in packet order.
    pub fn all(&self, kind: u8) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attributes
            .iter()
            .filter(move |a| a.kind == kind)
            .map(|a| a.value)
    }

    /// Verifies the Message-Authenticator of a request (RFC 3579 section 3.2): HMAC-MD5 over
    /// the packet with the attribute's value zeroed. `None` if the packet has none,
    /// `Some(false)` if it is malformed or wrong. The comparison is constant time.
    pub fn verify_message_authenticator(&self, secret: &[u8]) -> Option<bool> {
        let offset = self.message_authenticator_offset()?;
        let Some(received) = self.bytes.get(offset..offset + 16) else {
            // Present with a wrong length: it cannot verify.
            return Some(false);
        };
        let mut mac = hmac_md5(secret);
        mac.update(&self.bytes[..offset]);
        mac.update(&[0u8; 16]);
        mac.update(&self.bytes[offset + 16..]);
        let expected = mac.finalize().into_bytes();
        Some(bool::from(expected.as_slice().ct_eq(received)))
    }

    /// Offset of the first Message-Authenticator value in `bytes`, if it has the right length.
    /// A wrong length yields `Some` of an offset past the end, which `verify` reports as false.
    fn message_authenticator_offset(&self) -> Option<usize> {
        let mut offset = HEADER_LEN;
        for attribute in &self.attributes {
            if attribute.kind == attr::MESSAGE_AUTHENTICATOR {
                if attribute.value.len() != 16 {
                    // Point past the end so that verification fails instead of reading junk.
                    return Some(self.bytes.len());
                }
                return Some(offset + 2);
            }
            offset += 2 + attribute.value.len();
        }
        None
    }
}

fn decode_attributes(mut rest: &[u8]) -> Result<Vec<Attribute<'_>>, DecodeError> {
    // Every attribute takes at least two octets, so this bound is exact for the datagram.
    let mut attributes = Vec::with_capacity(rest.len() / 2 + 1);
    while !rest.is_empty() {
        let [kind, len, ..] = *rest else {
            return Err(DecodeError::BadAttribute);
        };
        let len = usize::from(len);
        if len < 2 {
            return Err(DecodeError::BadAttribute);
        }
        let value = rest.get(2..len).ok_or(DecodeError::BadAttribute)?;
        attributes.push(Attribute { kind, value });
        rest = &rest[len..];
    }
    Ok(attributes)
}

fn hmac_md5(secret: &[u8]) -> Hmac<Md5> {
    // HMAC accepts keys of any length (RFC 2104), so this cannot fail.
    <Hmac<Md5> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Recovers a hidden User-Password (RFC 2865 section 5.2). The value must be 16..=128 octets
/// and a multiple of 16; trailing NULs (padding) are removed.
pub fn unhide_password(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Option<Vec<u8>> {
    if hidden.is_empty() || hidden.len() > 128 || !hidden.len().is_multiple_of(16) {
        return None;
    }
    let mut plain = Vec::with_capacity(hidden.len());
    let mut previous: &[u8] = authenticator;
    for chunk in hidden.chunks_exact(16) {
        let mut md5 = Md5::new();
        md5.update(secret);
        md5.update(previous);
        let pad = md5.finalize();
        plain.extend(chunk.iter().zip(pad.iter()).map(|(c, p)| c ^ p));
        previous = chunk;
    }
    while plain.last() == Some(&0) {
        plain.pop();
    }
    Some(plain)
}

/// Hides a User-Password (RFC 2865 section 5.2); used by clients (tests and the benchmark).
pub fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let padded_len = password.len().div_ceil(16).clamp(1, 8) * 16;
    let mut plain = password.to_vec();
    plain.resize(padded_len, 0);
    let mut hidden = Vec::with_capacity(padded_len);
    for chunk in plain.chunks_exact(16) {
        let previous = if hidden.is_empty() {
            &authenticator[..]
        } else {
            &hidden[hidden.len() - 16..]
        };
        let mut md5 = Md5::new();
        md5.update(secret);
        md5.update(previous);
        let pad = md5.finalize();
        let block: Vec<u8> = chunk.iter().zip(pad.iter()).map(|(c, p)| c ^ p).collect();
        hidden.extend(block);
    }
    hidden
}

/// Builds a packet: attributes are appended in order; `finish` fills in the length, the
/// Message-Authenticator (if one was reserved) and then the authenticator.
pub struct PacketBuilder {
    bytes: Vec<u8>,
    message_authenticator_at: Option<usize>,
}

impl PacketBuilder {
    pub fn new(code: u8, identifier: u8) -> Self {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&[code, identifier, 0, 0]);
        bytes.extend_from_slice(&[0u8; 16]);
        PacketBuilder {
            bytes,
            message_authenticator_at: None,
        }
    }

    /// Reserves a zeroed Message-Authenticator at the current position (call it first so
    /// that it is the first attribute, as BlastRADIUS mitigations expect).
    pub fn message_authenticator(&mut self) -> &mut Self {
        self.message_authenticator_at = Some(self.bytes.len() + 2);
        self.push(attr::MESSAGE_AUTHENTICATOR, &[0u8; 16])
    }

    /// Appends one attribute. Values over 253 octets are the caller's bug; they are cut
    /// to fit rather than producing a corrupt packet, and callers split long texts first.
    pub fn push(&mut self, kind: u8, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(MAX_ATTRIBUTE_VALUE_LEN)];
        if self.bytes.len() + 2 + value.len() > MAX_PACKET_LEN {
            return self;
        }
        self.bytes.push(kind);
        // Bounded to 255 by the line above.
        self.bytes.push((value.len() + 2) as u8);
        self.bytes.extend_from_slice(value);
        self
    }

    /// Room left before the packet reaches 4096 octets.
    pub fn room(&self) -> usize {
        MAX_PACKET_LEN - self.bytes.len()
    }

    /// A reply: Message-Authenticator over the packet with the request authenticator in
    /// the header (RFC 3579 section 3.2), then the Response Authenticator (RFC 2865 section 3).
    pub fn finish_reply(mut self, request_authenticator: &[u8; 16], secret: &[u8]) -> Vec<u8> {
        self.set_length();
        self.bytes[4..HEADER_LEN].copy_from_slice(request_authenticator);
        self.sign_message_authenticator(secret);
        let mut md5 = Md5::new();
        md5.update(&self.bytes);
        md5.update(secret);
        let response = md5.finalize();
        self.bytes[4..HEADER_LEN].copy_from_slice(&response);
        self.bytes
    }

    /// A request with the given Request Authenticator (Access-Request, Status-Server).
    pub fn finish_request(mut self, authenticator: &[u8; 16], secret: &[u8]) -> Vec<u8> {
        self.set_length();
        self.bytes[4..HEADER_LEN].copy_from_slice(authenticator);
        self.sign_message_authenticator(secret);
        self.bytes
    }

    /// A RADIUS/1.1 packet (RFC 9765): the header's authenticator field carries
    /// the token and zeroes as given, nothing is signed, the Identifier stays as built (0).
    pub fn finish_unsigned(mut self, authenticator: &[u8; 16]) -> Vec<u8> {
        self.set_length();
        self.bytes[4..HEADER_LEN].copy_from_slice(authenticator);
        self.bytes
    }

    fn set_length(&mut self) {
        // `push` keeps the packet within 4096 octets, which fits in u16.
        let len = self.bytes.len() as u16;
        self.bytes[2..4].copy_from_slice(&len.to_be_bytes());
    }

    fn sign_message_authenticator(&mut self, secret: &[u8]) {
        if let Some(at) = self.message_authenticator_at {
            let mut mac = hmac_md5(secret);
            mac.update(&self.bytes);
            let sum = mac.finalize().into_bytes();
            self.bytes[at..at + 16].copy_from_slice(&sum);
        }
    }
}

/// Splits a text into pieces of at most 253 octets on character boundaries
/// (DESIGN section 3: long Reply-Messages become several attributes).
pub fn split_text(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_ATTRIBUTE_VALUE_LEN {
        let mut cut = MAX_ATTRIBUTE_VALUE_LEN;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"xyzzy5461";

    // RFC 2865 section 7.1: Access-Request for nemo/arctangent from 192.168.1.16.
    const RFC_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb \
        98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d \
        93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8 \
        01 10 05 06 00 00 00 03";

    fn hexbytes(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn decodes_the_rfc_2865_access_request_and_recovers_the_password() {
        let bytes = hexbytes(RFC_REQUEST);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.code, code::ACCESS_REQUEST);
        assert_eq!(packet.identifier, 0);
        assert_eq!(packet.first(attr::USER_NAME), Some(&b"nemo"[..]));
        let hidden = packet.first(attr::USER_PASSWORD).unwrap();
        let password = unhide_password(hidden, SECRET, &packet.authenticator).unwrap();
        assert_eq!(password, b"arctangent");
        assert_eq!(
            hide_password(b"arctangent", SECRET, &packet.authenticator),
            hidden
        );
    }

    #[test]
    fn response_authenticator_matches_the_rfc_2865_access_accept() {
        // RFC 2865 section 7.1: the Access-Accept answering the request above.
        let request = hexbytes(RFC_REQUEST);
        let request = Packet::decode(&request).unwrap();
        let mut reply = PacketBuilder::new(code::ACCESS_ACCEPT, 0);
        // Service-Type = Login-User, Login-Service = Telnet, Login-IP-Host = 192.168.1.3.
        reply
            .push(6, &[0, 0, 0, 1])
            .push(15, &[0, 0, 0, 0])
            .push(14, &[192, 168, 1, 3]);
        let bytes = reply.finish_reply(&request.authenticator, SECRET);
        let expected = hexbytes(
            "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf \
             9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00 \
             0e 06 c0 a8 01 03",
        );
        assert_eq!(bytes, expected);
    }

    #[test]
    fn message_authenticator_signs_and_verifies() {
        let authenticator = [7u8; 16];
        let mut request = PacketBuilder::new(code::STATUS_SERVER, 9);
        request.message_authenticator();
        let bytes = request.finish_request(&authenticator, SECRET);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.verify_message_authenticator(SECRET), Some(true));
        assert_eq!(packet.verify_message_authenticator(b"other"), Some(false));

        let mut tampered = bytes.clone();
        tampered[1] ^= 1;
        let packet = Packet::decode(&tampered).unwrap();
        assert_eq!(packet.verify_message_authenticator(SECRET), Some(false));

        let mut short = PacketBuilder::new(code::STATUS_SERVER, 9);
        short.push(attr::MESSAGE_AUTHENTICATOR, &[0u8; 10]);
        let bytes = short.finish_request(&authenticator, SECRET);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(
            packet.verify_message_authenticator(SECRET),
            Some(false),
            "present with a wrong length is not absent"
        );
    }

    // The expected values below were computed independently with Python's hmac and hashlib
    // over the RFC 2865 section 7.1 packets with a Message-Authenticator added.

    #[test]
    fn message_authenticator_of_the_rfc_2865_request_matches_an_independent_hmac() {
        let mut bytes = hexbytes(RFC_REQUEST);
        bytes.extend_from_slice(&[attr::MESSAGE_AUTHENTICATOR, 18]);
        bytes.extend_from_slice(&hexbytes("63b78a6b9d2f149989fbf57ea21d194c"));
        bytes[3] = 74;
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.verify_message_authenticator(SECRET), Some(true));

        let mut request = PacketBuilder::new(code::ACCESS_REQUEST, 0);
        for attribute in &Packet::decode(&hexbytes(RFC_REQUEST)).unwrap().attributes {
            request.push(attribute.kind, attribute.value);
        }
        request.message_authenticator();
        assert_eq!(request.finish_request(&packet.authenticator, SECRET), bytes);
    }

    #[test]
    fn the_rfc_2865_accept_with_message_authenticator_first_matches_an_independent_signer() {
        let request = hexbytes(RFC_REQUEST);
        let request = Packet::decode(&request).unwrap();
        let mut reply = PacketBuilder::new(code::ACCESS_ACCEPT, 0);
        reply.message_authenticator();
        reply
            .push(6, &[0, 0, 0, 1])
            .push(15, &[0, 0, 0, 0])
            .push(14, &[192, 168, 1, 3]);
        let bytes = reply.finish_reply(&request.authenticator, SECRET);
        let expected = hexbytes(
            "02000038c13e8f5e21426df8a8fffcc5569ce9fc501204121386280130d5ef8ed8072ba8058d\
             0606000000010f06000000000e06c0a80103",
        );
        assert_eq!(bytes, expected);
    }

    #[test]
    fn rejects_truncated_and_overrunning_packets() {
        assert_eq!(Packet::decode(&[1, 0, 0]), Err(DecodeError::TooShort));
        let mut bytes = hexbytes(RFC_REQUEST);
        bytes[3] = 0xff; // length larger than the datagram
        assert_eq!(Packet::decode(&bytes), Err(DecodeError::BadLength));
        let mut bytes = hexbytes(RFC_REQUEST);
        bytes[21] = 1; // User-Name with length 1
        assert_eq!(Packet::decode(&bytes), Err(DecodeError::BadAttribute));
        let mut bytes = hexbytes(RFC_REQUEST);
        bytes[21] = 200; // User-Name overrunning
        assert_eq!(Packet::decode(&bytes), Err(DecodeError::BadAttribute));
        assert_eq!(Packet::decode(&[0u8; 4097]), Err(DecodeError::TooLong));
    }

    #[test]
    fn padding_after_the_length_field_is_ignored() {
        let mut bytes = hexbytes(RFC_REQUEST);
        bytes.extend_from_slice(&[0xaa; 10]);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.bytes.len(), 0x38);
    }

    #[test]
    fn password_lengths_outside_rfc_bounds_are_refused() {
        let auth = [1u8; 16];
        assert!(unhide_password(&[0u8; 15], SECRET, &auth).is_none());
        assert!(unhide_password(&[0u8; 17], SECRET, &auth).is_none());
        assert!(unhide_password(&[0u8; 144], SECRET, &auth).is_none());
        assert!(unhide_password(&[0u8; 128], SECRET, &auth).is_some());
    }

    #[test]
    fn long_texts_split_on_character_boundaries() {
        let text = "ä".repeat(200); // 400 octets
        let pieces = split_text(&text);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= 253));
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_text(""), vec![""]);
    }
}
