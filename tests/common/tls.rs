//! RadSec test helpers: a test PKI made with rcgen (a CA for NAS certificates that also signs
//! the server's, a second CA nobody trusts, client certificates by name, expired ones), the
//! `[radsec]` TOML that points otpgate at it, and a RadSec client on rustls that frames
//! RADIUS packets on the stream as RFC 6614 says.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The DNS name of the test NAS's certificate, and of its `[[client]]`.
pub const NAS_NAME: &str = "nas1.example.org";

/// Files of the test PKI in one folder.
pub struct Pki {
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    other_ca: Issuer<'static, KeyPair>,
}

/// A certificate and its key on disk.
#[derive(Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a client certificate is made.
pub enum Make {
    /// Signed by the trusted CA, valid now.
    Valid,
    /// Signed by the trusted CA, expired last year.
    Expired,
    /// Signed by a CA otpgate does not trust.
    OtherCa,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    (params, KeyPair::generate().unwrap())
}

impl Pki {
    /// A CA (ca.pem), the server's certificate for localhost and 127.0.0.1 (server.pem,
    /// server.key, 0600) and the NAS certificate `nas.pem`/`nas.key` for `NAS_NAME`.
    pub fn new(dir: &Path) -> Pki {
        let (ca_params, ca_key) = ca("otpgate test NAS CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let (other_params, other_key) = ca("some other CA");
        let other_cert = other_params.self_signed(&other_key).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(ca_params, ca_key),
            other_ca: Issuer::new(other_params, other_key),
        };
        pki.issue(
            "server",
            &["localhost", "127.0.0.1"],
            "otpgate",
            Make::Valid,
        );
        pki.issue("nas", &[NAS_NAME], NAS_NAME, Make::Valid);
        pki
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn nas(&self) -> Identity {
        self.identity("nas")
    }

    pub fn identity(&self, stem: &str) -> Identity {
        Identity {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        }
    }

    /// Writes `STEM.pem` and `STEM.key` (0600): a certificate for server and client use.
    pub fn issue(&self, stem: &str, names: &[&str], common_name: &str, make: Make) -> Identity {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if let Make::Expired = make {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = match make {
            Make::OtherCa => &self.other_ca,
            _ => &self.ca,
        };
        let cert = params.signed_by(&key, issuer).unwrap();
        let identity = self.identity(stem);
        std::fs::write(&identity.cert, cert.pem()).unwrap();
        std::fs::write(&identity.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&identity.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        identity
    }

    /// `[radsec]` on an ephemeral loopback port with this PKI, plus `extra` keys.
    pub fn radsec_toml(&self, extra: &str) -> String {
        let d = self.dir.display();
        format!(
            "\n[radsec]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\nclient_ca_file = \"{d}/ca.pem\"\n{extra}\n"
        )
    }
}

/// A `[[client]]` known by certificate name.
pub fn client_toml(name: &str, tls_name: &str, extra: &str) -> String {
    format!("\n[[client]]\nname = \"{name}\"\ntls_names = [\"{tls_name}\"]\n{extra}\n")
}

/// A RadSec connection from the test, blocking, with a read timeout.
pub struct Client {
    pub stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

/// The rustls client configuration of a NAS with `identity` (None: no certificate) that
/// trusts the test CA and offers `alpn`.
pub fn client_config(
    pki: &Pki,
    identity: Option<&Identity>,
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.ca_file()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(&identity.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&identity.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(config)
}

impl Client {
    /// Connects and completes the handshake (TLS 1.3 sends the server's verdict on the
    /// client certificate after that; a refused client sees it on its first read).
    pub fn connect(
        server: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Client, std::io::Error> {
        let tcp = TcpStream::connect(server)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let connection =
            rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Client { stream })
    }

    /// The ALPN name the server chose.
    pub fn alpn(&self) -> Option<String> {
        self.stream
            .conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned())
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The next packet, framed by its Length; Err when the server closed or failed, or
    /// after the read timeout.
    pub fn receive(&mut self) -> std::io::Result<Vec<u8>> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header)?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut packet = header.to_vec();
        packet.resize(length.max(4), 0);
        self.stream.read_exact(&mut packet[4..])?;
        Ok(packet)
    }

    pub fn exchange(&mut self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        self.send(bytes)?;
        self.receive()
    }

    /// Whether the server has closed the connection (reads end or fail within `within`).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        let _ = self.stream.sock.set_read_timeout(Some(within));
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}
