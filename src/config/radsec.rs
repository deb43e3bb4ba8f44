//! `[radsec]` (RADIUS over TLS, RFC 6614; RADIUS/1.1, RFC 9765) and the certificate side of
//! `[[client]]` (`tls_names`, `tls_fingerprints`, `require_radius_1_1`): the serde shapes and
//! the checks serde cannot do. The certificate files themselves are read and parsed by
//! `radius::tls_config` at start-up, which reports their problems in the same
//! `file: key: problem` form; this module only checks what the text says and the key file's
//! mode.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Span};

/// `[radsec]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRadsec {
    /// TCP addresses to accept RadSec on, IPv4 and IPv6 (IANA port 2083).
    listen: Vec<SocketAddr>,
    /// The server's certificate chain, PEM, leaf first.
    cert_file: PathBuf,
    /// The server's private key, PEM; must not be readable by group or others.
    key_file: PathBuf,
    /// The CA (PEM, one or more certificates) that signs the NAS certificates.
    client_ca_file: PathBuf,
    /// "1.2" or "1.3": the oldest TLS version accepted.
    #[serde(default = "default_tls_min_version")]
    tls_min_version: String,
    /// A connection that completes no packet for this long is closed.
    #[serde(default = "default_idle_timeout")]
    idle_timeout: Span,
    /// The TLS handshake must finish within this.
    #[serde(default = "default_handshake_timeout")]
    handshake_timeout: Span,
    /// Connections open at once (handshakes included); more are refused.
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// Requests of one connection handled at once; the connection is not read meanwhile.
    #[serde(default = "default_max_in_flight_per_connection")]
    max_in_flight_per_connection: usize,
}

fn default_tls_min_version() -> String {
    "1.2".into()
}
fn default_idle_timeout() -> Span {
    Span(Duration::from_secs(60))
}
fn default_handshake_timeout() -> Span {
    Span(Duration::from_secs(10))
}
fn default_max_connections() -> usize {
    256
}
fn default_max_in_flight_per_connection() -> usize {
    64
}

/// The oldest TLS version a RadSec peer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `[radsec]`, checked.
#[derive(Debug, Clone)]
pub struct RadsecConfig {
    pub listen: Vec<SocketAddr>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
    pub tls_min_version: TlsVersion,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight_per_connection: usize,
}

pub(super) fn check_radsec(raw: RawRadsec, problems: &mut Problems) -> RadsecConfig {
    if raw.listen.is_empty() {
        problems.add(
            "radsec.listen",
            "needs at least one address, e.g. \"0.0.0.0:2083\"",
        );
    }
    let tls_min_version = match raw.tls_min_version.as_str() {
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        other => {
            problems.add(
                "radsec.tls_min_version",
                format!("'{other}' is not \"1.2\" or \"1.3\""),
            );
            TlsVersion::Tls12
        }
    };
    for (key, span) in [
        ("radsec.idle_timeout", raw.idle_timeout),
        ("radsec.handshake_timeout", raw.handshake_timeout),
    ] {
        if span.0.is_zero() {
            problems.add(key, "must be longer than 0s");
        }
    }
    for (key, value) in [
        ("radsec.max_connections", raw.max_connections),
        (
            "radsec.max_in_flight_per_connection",
            raw.max_in_flight_per_connection,
        ),
    ] {
        if value == 0 {
            problems.add(key, "must be at least 1");
        }
    }
    check_private("radsec.key_file", &raw.key_file, problems);
    RadsecConfig {
        listen: raw.listen,
        cert_file: raw.cert_file,
        key_file: raw.key_file,
        client_ca_file: raw.client_ca_file,
        tls_min_version,
        idle_timeout: raw.idle_timeout.0,
        handshake_timeout: raw.handshake_timeout.0,
        max_connections: raw.max_connections,
        max_in_flight_per_connection: raw.max_in_flight_per_connection,
    }
}

/// A private key that group or others can read is a leaked key: refuse to start, as for
/// `[server] key_file`. A missing file is reported when the certificates are loaded.
fn check_private(key: &str, path: &std::path::Path, problems: &mut Problems) {
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o7777;
        if crate::files::is_open_to_others(mode) {
            problems.add(
                key,
                format!(
                    "{} is readable by group or others (mode {mode:04o}); chmod 600 it",
                    path.display()
                ),
            );
        }
    }
}

/// How a RadSec client is known by its certificate (`[[client]]` with `tls_names` or
/// `tls_fingerprints`). Such a client is never matched for UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// DNS names, matched against the certificate's DNS SANs, then its CN; lower case.
    pub names: Vec<String>,
    /// SHA-256 of the certificate (DER).
    pub fingerprints: Vec<[u8; 32]>,
    /// Refuse the connection unless it negotiated RADIUS/1.1 (RFC 9765).
    pub require_radius_1_1: bool,
}

/// The certificate keys of one `[[client]]` as written; `key` names its fields in messages.
pub(super) fn check_identity(
    names: &[String],
    fingerprints: &[String],
    require_radius_1_1: bool,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<TlsIdentity> {
    if names.is_empty() && fingerprints.is_empty() {
        if require_radius_1_1 {
            problems.add(
                &key("require_radius_1_1"),
                "only for a RadSec client (set tls_names or tls_fingerprints)",
            );
        }
        return None;
    }
    let mut checked_names = Vec::new();
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'));
        if valid {
            checked_names.push(name.to_ascii_lowercase());
        } else {
            problems.add(&key("tls_names"), format!("{name:?} is not a DNS name"));
        }
    }
    let mut checked_fingerprints = Vec::new();
    for text in fingerprints {
        match parse_fingerprint(text) {
            Some(fingerprint) => checked_fingerprints.push(fingerprint),
            None => problems.add(
                &key("tls_fingerprints"),
                format!("{text:?} is not \"sha256:\" and 64 hex digits (colons allowed)"),
            ),
        }
    }
    Some(TlsIdentity {
        names: checked_names,
        fingerprints: checked_fingerprints,
        require_radius_1_1,
    })
}

/// "sha256:AB:CD:..." or "sha256:abcd..." (as `openssl x509 -fingerprint -sha256` prints it,
/// after the prefix).
fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let (kind, digits) = text.split_once(':')?;
    if !kind.eq_ignore_ascii_case("sha256") {
        return None;
    }
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(digits).ok()?;
    <[u8; 32]>::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_take_openssl_and_plain_hex_forms() {
        let plain = format!("sha256:{}", "ab".repeat(32));
        let colons = format!("SHA256:{}", vec!["AB"; 32].join(":"));
        assert_eq!(parse_fingerprint(&plain), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&colons), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&"ab".repeat(32)), None);
        assert_eq!(
            parse_fingerprint(&format!("sha1:{}", "ab".repeat(20))),
            None
        );
        assert_eq!(parse_fingerprint("sha256:abcd"), None);
    }
}
