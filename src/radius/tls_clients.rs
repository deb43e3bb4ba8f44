//! Finds the RadSec client a verified certificate belongs to (RFC 6614 section 2.4): by its
//! SHA-256 fingerprint, else by name, the certificate's DNS subjectAltNames or, when it has
//! none, its subject CN. The certificate, not the source address, decides which client a
//! connection is; a client's `address` only restricts where that certificate may connect
//! from. Runs once per connection, after rustls has checked the chain against
//! `client_ca_file`.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::ClientConfig;

/// Why a verified certificate is no client of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Neither its fingerprint nor any of its names is configured.
    UnknownName,
    /// It is a client, but `address` does not contain the peer.
    AddressNotAllowed,
    /// Not an X.509 certificate we can read (rustls accepted it, so hardly ever).
    Unreadable,
}

pub struct TlsClientTable {
    clients: Vec<Arc<ClientConfig>>,
}

/// What a certificate says about itself, for matching and for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub dns: Vec<String>,
    pub common_name: Option<String>,
}

impl TlsClientTable {
    pub fn new(clients: &[ClientConfig]) -> Self {
        TlsClientTable {
            clients: clients
                .iter()
                .filter(|c| c.tls.is_some())
                .cloned()
                .map(Arc::new)
                .collect(),
        }
    }

    /// The client of a leaf certificate (DER) connecting from `peer`.
    pub fn identify(&self, leaf: &[u8], peer: IpAddr) -> Result<Arc<ClientConfig>, Mismatch> {
        let fingerprint: [u8; 32] = Sha256::digest(leaf).into();
        let by_fingerprint = self.clients.iter().find(|c| {
            c.tls
                .as_ref()
                .is_some_and(|t| t.fingerprints.contains(&fingerprint))
        });
        let client = match by_fingerprint {
            Some(client) => client,
            None => {
                let names = names(leaf).ok_or(Mismatch::Unreadable)?;
                self.by_name(&names).ok_or(Mismatch::UnknownName)?
            }
        };
        let peer = super::clients::unmapped(peer);
        if client
            .network
            .is_some_and(|network| !network.contains(&peer))
        {
            return Err(Mismatch::AddressNotAllowed);
        }
        Ok(client.clone())
    }

    /// RFC 6125 section 6.4.4: the CN counts only when there is no DNS subjectAltName.
    fn by_name(&self, names: &CertificateNames) -> Option<&Arc<ClientConfig>> {
        let candidates: Vec<String> = if names.dns.is_empty() {
            names.common_name.iter().cloned().collect()
        } else {
            names.dns.clone()
        };
        self.clients.iter().find(|c| {
            c.tls.as_ref().is_some_and(|t| {
                candidates
                    .iter()
                    .any(|name| t.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            })
        })
    }
}

/// The DNS subjectAltNames and the subject CN of a certificate (DER); None if unreadable.
pub fn names(certificate: &[u8]) -> Option<CertificateNames> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let mut found = CertificateNames::default();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                found.dns.push(dns.to_string());
            }
        }
    }
    found.common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(found)
}

/// The SHA-256 fingerprint as `sha256:` and hex, as `tls_fingerprints` takes it.
pub fn fingerprint(certificate: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(certificate)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsIdentity;

    fn client(name: &str, names: &[&str], fingerprints: Vec<[u8; 32]>) -> ClientConfig {
        ClientConfig {
            tls: Some(TlsIdentity {
                names: names.iter().map(|n| n.to_string()).collect(),
                fingerprints,
                require_radius_1_1: false,
            }),
            ..ClientConfig::with_defaults(name, None, "radsec")
        }
    }

    fn certificate(sans: &[&str], cn: &str) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_match_sans_before_the_cn_and_fingerprints_before_names() {
        let with_san = certificate(&["nas1.example.org"], "other.example.org");
        let cn_only = certificate(&[], "nas2.example.org");
        let pinned = certificate(&["nas1.example.org"], "x");
        let pin: [u8; 32] = Sha256::digest(&pinned).into();
        let table = TlsClientTable::new(&[
            client("one", &["nas1.example.org"], vec![]),
            client("two", &["nas2.example.org", "other.example.org"], vec![]),
            client("pinned", &[], vec![pin]),
        ]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let name = |der: &[u8]| table.identify(der, peer).map(|c| c.name.clone());
        assert_eq!(name(&with_san).as_deref(), Ok("one"), "the CN is ignored");
        assert_eq!(name(&cn_only).as_deref(), Ok("two"));
        assert_eq!(name(&pinned).as_deref(), Ok("pinned"));
        assert_eq!(
            name(&certificate(&["nas9.example.org"], "nas9")),
            Err(Mismatch::UnknownName)
        );
    }

    #[test]
    fn an_address_restricts_where_the_certificate_may_connect_from() {
        let der = certificate(&["nas1.example.org"], "nas1");
        let mut restricted = client("one", &["NAS1.example.org"], vec![]);
        restricted.network = Some("10.0.0.0/8".parse().unwrap());
        let table = TlsClientTable::new(&[restricted]);
        assert!(table.identify(&der, "10.1.2.3".parse().unwrap()).is_ok());
        assert!(
            table
                .identify(&der, "::ffff:10.1.2.3".parse().unwrap())
                .is_ok()
        );
        assert_eq!(
            table
                .identify(&der, "127.0.0.1".parse().unwrap())
                .unwrap_err(),
            Mismatch::AddressNotAllowed
        );
    }
}
