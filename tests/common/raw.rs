//! A raw UDP RADIUS client for what radclient cannot do: exact retransmissions, requests
//! without Message-Authenticator, forged or malformed packets, byte-level comparison.
//! It builds packets with otpgate's codec, whose correctness radclient checks independently.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use otpgate::radius::packet::{Packet, PacketBuilder, attr, code, hide_password};

pub struct Client {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl Client {
    pub fn new(server: SocketAddr) -> Client {
        let bind = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let socket = UdpSocket::bind(bind).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        Client { socket, server }
    }

    /// A client whose socket is bound to `source`, e.g. 127.0.0.2 for a second RADIUS
    /// client on loopback.
    pub fn bound_to(source: std::net::IpAddr, server: SocketAddr) -> Client {
        let socket = UdpSocket::bind(SocketAddr::new(source, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        Client { socket, server }
    }

    pub fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).unwrap();
    }

    /// The next reply, or None after the read timeout.
    pub fn receive(&self) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 4096];
        match self.socket.recv_from(&mut buffer) {
            Ok((n, from)) => {
                assert_eq!(
                    from, self.server,
                    "reply from the address the request went to"
                );
                Some(buffer[..n].to_vec())
            }
            Err(_) => None,
        }
    }

    pub fn exchange(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.send(bytes);
        self.receive()
    }
}

/// An Access-Request: User-Name, hidden User-Password, extra attributes in order.
pub fn access_request(
    identifier: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &str,
    with_message_authenticator: bool,
    extra: &[(u8, &[u8])],
) -> Vec<u8> {
    let secret = super::SECRET.as_bytes();
    let mut builder = PacketBuilder::new(code::ACCESS_REQUEST, identifier);
    if with_message_authenticator {
        builder.message_authenticator();
    }
    builder.push(attr::USER_NAME, user.as_bytes());
    builder.push(
        attr::USER_PASSWORD,
        &hide_password(password.as_bytes(), secret, &authenticator),
    );
    for (kind, value) in extra {
        builder.push(*kind, value);
    }
    builder.finish_request(&authenticator, secret)
}

/// Checks a reply's Response Authenticator and Message-Authenticator (which must come
/// first) against the request, and returns it decoded.
pub fn verified_reply<'a>(reply: &'a [u8], request_authenticator: &[u8; 16]) -> Packet<'a> {
    use md5::{Digest, Md5};
    let secret = super::SECRET.as_bytes();
    let mut with_request = reply.to_vec();
    with_request[4..20].copy_from_slice(request_authenticator);
    let mut md5 = Md5::new();
    md5.update(&with_request);
    md5.update(secret);
    assert_eq!(
        &reply[4..20],
        md5.finalize().as_slice(),
        "Response Authenticator"
    );
    let packet = Packet::decode(reply).expect("reply decodes");
    assert_eq!(
        packet.attributes.first().map(|a| a.kind),
        Some(attr::MESSAGE_AUTHENTICATOR),
        "MA first"
    );
    let check = Packet::decode(&with_request).unwrap();
    assert_eq!(
        check.verify_message_authenticator(secret),
        Some(true),
        "Message-Authenticator"
    );
    packet
}

pub fn random_authenticator() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}
