//! RadSec for the load generator: the client certificate, the CA that signs the server's
//! certificate and the ALPN names to offer (`--tls --cert --key --ca --alpn`), and one TLS
//! connection per client whose packets are framed by their Length (RFC 6614).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use otpgate::radius::dialect::Dialect;
use otpgate::radius::framing;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Speak RadSec (RADIUS over TLS) instead of UDP; the secret is then usually "radsec".
    #[arg(long)]
    pub tls: bool,
    /// The client certificate (PEM) shown to the server.
    #[arg(long, requires = "tls")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls")]
    pub key: Option<PathBuf>,
    /// The CA (PEM) that signed the server's certificate.
    #[arg(long, requires = "tls")]
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// ALPN names to offer, e.g. radius/1.1 (repeat or separate with commas); none: classic
    /// RADIUS/TLS.
    #[arg(long, value_delimiter = ',')]
    pub alpn: Vec<String>,
}

/// What every TLS client of a run shares.
pub struct TlsOptions {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsOptions {
    /// None without `--tls`.
    pub fn from_args(args: &TlsArgs) -> anyhow::Result<Option<Arc<TlsOptions>>> {
        if !args.tls {
            return Ok(None);
        }
        let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) else {
            anyhow::bail!("--tls needs --cert, --key and --ca");
        };
        let mut roots = rustls::RootCertStore::empty();
        for authority in
            CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())?
        {
            roots.add(authority.with_context(|| ca.display().to_string())?)?;
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| cert.display().to_string())?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| cert.display().to_string())?;
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| key.display().to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = args.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        Ok(Some(Arc::new(TlsOptions {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::try_from(args.server_name.clone())?,
        })))
    }
}

/// One RadSec connection: a request is written whole, replies are read whole.
pub struct TlsLink {
    reader: Mutex<(ReadHalf<TlsStream<TcpStream>>, Vec<u8>)>,
    writer: Mutex<WriteHalf<TlsStream<TcpStream>>>,
    dialect: Dialect,
}

impl TlsLink {
    pub async fn connect(server: SocketAddr, options: &TlsOptions) -> std::io::Result<TlsLink> {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        let stream = options
            .connector
            .connect(options.server_name.clone(), tcp)
            .await?;
        let dialect = Dialect::negotiated(stream.get_ref().1.alpn_protocol());
        let (reader, writer) = tokio::io::split(stream);
        Ok(TlsLink {
            reader: Mutex::new((reader, Vec::with_capacity(4096))),
            writer: Mutex::new(writer),
            dialect,
        })
    }

    /// What ALPN chose: RADIUS/1.1 or classic.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut writer = self.writer.lock().await;
        writer.write_all(bytes).await?;
        writer.flush().await
    }

    /// Reads the next packet into `buffer`; returns its length.
    pub async fn receive(&self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let mut guard = self.reader.lock().await;
        let (reader, packet) = &mut *guard;
        match framing::read_packet(reader, packet).await {
            Ok(true) => {}
            Ok(false) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Err(framing::FrameError::Length(length)) => {
                return Err(std::io::Error::other(format!("reply length {length}")));
            }
            Err(framing::FrameError::Io(e)) => return Err(e),
        }
        let length = packet.len().min(buffer.len());
        buffer[..length].copy_from_slice(&packet[..length]);
        Ok(length)
    }
}
