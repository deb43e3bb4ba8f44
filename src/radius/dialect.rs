//! Which RADIUS a packet speaks. Over UDP, and over TLS without ALPN or with `radius/1.0`,
//! it is classic RADIUS (RFC 2865): User-Password hidden with MD5 and the shared secret,
//! Message-Authenticator, a Response Authenticator. Over TLS with ALPN `radius/1.1` it is
//! RADIUS/1.1 (RFC 9765): TLS protects the packets, so the MD5 parts are gone, and the
//! header's Identifier and Authenticator become Reserved-1 and a Token (RFC 9765).
//! The guard sets it on every verified request; request decoding and reply encoding follow.

/// The ALPN name of RADIUS/1.1 (RFC 9765).
pub const ALPN_RADIUS_1_1: &[u8] = b"radius/1.1";
/// The ALPN name of classic RADIUS over TLS (RFC 9765).
pub const ALPN_RADIUS_1_0: &[u8] = b"radius/1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Classic,
    Radius11,
}

impl Dialect {
    /// The dialect a TLS connection negotiated: `radius/1.1`, or classic for `radius/1.0`
    /// and for no ALPN at all.
    pub fn negotiated(alpn: Option<&[u8]>) -> Dialect {
        match alpn {
            Some(ALPN_RADIUS_1_1) => Dialect::Radius11,
            _ => Dialect::Classic,
        }
    }

    /// The reply's header authenticator field under RADIUS/1.1: the request's Token
    /// (octets 4..8 of the header), then Reserved-2, zeroes (RFC 9765).
    pub fn reply_token(request_authenticator: &[u8; 16]) -> [u8; 16] {
        let mut field = [0u8; 16];
        field[..4].copy_from_slice(&request_authenticator[..4]);
        field
    }
}
