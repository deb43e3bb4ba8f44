//! Turns a verified Access-Request into the engine's `auth::Request`: User-Name,
//! User-Password (PAP, RFC 2865 section 5.2), State, NAS-IP-Address / NAS-IPv6-Address,
//! NAS-Identifier and Calling-Station-Id. Under RADIUS/1.1 the User-Password is not hidden.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::dialect::Dialect;
use super::dictionary::Dictionary;
use super::guard::VerifiedRequest;
use super::packet::{attr, unhide_password};
use crate::auth::Request;
use crate::config::ClientConfig;

/// Builds the engine's view of a request. Text attributes that are not UTF-8 are shown
/// lossily: they only reach logs and the audit trail.
pub fn extract(
    verified: &VerifiedRequest<'_>,
    client: &ClientConfig,
    dictionary: &Dictionary,
) -> Request {
    let packet = verified.packet();
    let text = |kind: u8| {
        packet
            .first(kind)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let password = packet
        .first(attr::USER_PASSWORD)
        .and_then(|value| match verified.dialect() {
            Dialect::Classic => unhide_password(
                value,
                client.secret.expose().as_bytes(),
                &packet.authenticator,
            ),
            // RFC 9765: the password itself, protected by TLS.
            Dialect::Radius11 => Some(value.to_vec()),
        });
    let nas_ip = packet
        .first(attr::NAS_IP_ADDRESS)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(|octets| Ipv4Addr::from(octets).to_string())
        .or_else(|| {
            packet
                .first(attr::NAS_IPV6_ADDRESS)
                .and_then(|v| <[u8; 16]>::try_from(v).ok())
                .map(|octets| Ipv6Addr::from(octets).to_string())
        });
    Request {
        client: client.name.clone(),
        mode: client.mode,
        first_factor: client.first_factor,
        // The guard dropped non-UTF-8 names already.
        user_name: text(attr::USER_NAME).unwrap_or_default(),
        password,
        state: packet.first(attr::STATE).map(<[u8]>::to_vec),
        nas_ip,
        nas_identifier: text(attr::NAS_IDENTIFIER),
        calling_station_id: text(attr::CALLING_STATION_ID),
        attributes: dictionary.describe(&packet.attributes),
    }
}
