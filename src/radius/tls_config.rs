//! Builds the RadSec TLS server configuration from `[radsec]`: the certificate chain and
//! key, the CA that signs NAS certificates (mutual TLS is mandatory, RFC 6614 section 2.3),
//! the TLS versions, and the ALPN names of RFC 9765. Every problem with the files (missing,
//! not PEM, key not matching the certificate) is a `ConfigError` naming the file and key.
//!
//! The result is an `Arc<ServerConfig>` built from the config alone, so a reload can build
//! a new one and swap it in for new connections; today it is built once at start-up.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use super::dialect::{ALPN_RADIUS_1_0, ALPN_RADIUS_1_1};
use crate::config::{ConfigError, RadsecConfig, TlsVersion};

/// The TLS side of RadSec, ready to accept with.
pub struct TlsSetup {
    pub server_config: Arc<ServerConfig>,
    /// When the server certificate expires (seconds since the Unix epoch), for the logs.
    pub certificate_not_after: Option<i64>,
}

/// Reads the files named by `[radsec]` and builds the server configuration. `file` names
/// the config file in messages.
pub fn build(radsec: &RadsecConfig, file: &Path) -> Result<TlsSetup, ConfigError> {
    let problem = |key: &str, text: String| ConfigError {
        problems: vec![format!("{}: radsec.{key}: {text}", file.display())],
    };
    let chain = certificates(&radsec.cert_file).map_err(|e| problem("cert_file", e))?;
    let key = PrivateKeyDer::from_pem_file(&radsec.key_file).map_err(|e| {
        problem(
            "key_file",
            format!("{}: no private key read ({e})", radsec.key_file.display()),
        )
    })?;
    let authorities =
        certificates(&radsec.client_ca_file).map_err(|e| problem("client_ca_file", e))?;
    let mut roots = RootCertStore::empty();
    for authority in authorities {
        roots.add(authority).map_err(|e| {
            problem(
                "client_ca_file",
                format!(
                    "{}: not a CA certificate ({e})",
                    radsec.client_ca_file.display()
                ),
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| problem("client_ca_file", e.to_string()))?;
    let certificate_not_after = chain.first().and_then(|leaf| not_after(leaf));
    let mut config = builder(provider, radsec.tls_min_version)
        .map_err(|e| problem("tls_min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            problem(
                "key_file",
                format!(
                    "{} does not go with {} ({e})",
                    radsec.key_file.display(),
                    radsec.cert_file.display()
                ),
            )
        })?;
    // RFC 9765: offer RADIUS/1.1 first; a client that offers neither name gets
    // no ALPN and speaks classic RADIUS/TLS; one that offers only others is refused with
    // no_application_protocol.
    config.alpn_protocols = vec![ALPN_RADIUS_1_1.to_vec(), ALPN_RADIUS_1_0.to_vec()];
    // No resumption: RADIUS connections live long, and a resumed session would have to
    // carry the client's identity and its ALPN choice (RFC 9765).
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(TlsSetup {
        server_config: Arc::new(config),
        certificate_not_after,
    })
}

fn builder(
    provider: Arc<CryptoProvider>,
    minimum: TlsVersion,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match minimum {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    ServerConfig::builder_with_provider(provider).with_protocol_versions(versions)
}

/// Every certificate of a PEM file; none at all is an error too.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let read: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let list = read.map_err(|e| format!("{}: not PEM ({e})", path.display()))?;
    if list.is_empty() {
        return Err(format!("{}: no certificate in it (PEM)", path.display()));
    }
    Ok(list)
}

/// The certificate's notAfter, seconds since the Unix epoch.
fn not_after(certificate: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Warn this long before the RadSec server certificate expires.
const CERTIFICATE_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Logs when the server certificate expires (info, or a warning within 30 days of it) and
/// sets `otpgate_radsec_certificate_expiry_timestamp_seconds`.
pub fn log_certificate_expiry(not_after: Option<i64>) {
    let Some(seconds) = not_after.and_then(|s| u64::try_from(s).ok()) else {
        return;
    };
    crate::ops::metrics::Metrics::global()
        .radsec_certificate_expiry
        .set(i64::try_from(seconds).unwrap_or(i64::MAX));
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    let at = humantime::format_rfc3339_seconds(expires);
    match expires.duration_since(std::time::SystemTime::now()) {
        Ok(left) if left > CERTIFICATE_WARNING => {
            tracing::info!(not_after = %at, "radsec certificate valid");
        }
        Ok(_) => tracing::warn!(not_after = %at, "radsec certificate expires within 30 days"),
        Err(_) => tracing::warn!(not_after = %at, "radsec certificate has expired"),
    }
}
