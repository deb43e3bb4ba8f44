//! The RadSec listener (RADIUS over TLS, RFC 6614; RADIUS/1.1, RFC 9765). It accepts TCP
//! connections, runs the TLS handshake (mutual TLS: the NAS must show a certificate from
//! `client_ca_file`), finds the client by that certificate (`tls_clients`), and then feeds
//! each framed packet to the same request path as UDP (`listener::Server::admit`): guard,
//! duplicate cache (per connection), engine, reply signing.
//!
//! Bounds, so that a slow or hostile peer holds only its own connection: `max_connections`
//! connections at once (handshakes included; more are closed at once and counted); the
//! handshake has `handshake_timeout`; a connection must complete a packet within
//! `idle_timeout` of the last one (idle and slowloris peers alike) and a reply must be taken
//! by the peer within `idle_timeout` (peers that never read). A connection has at most
//! `max_in_flight_per_connection` requests in flight and is not read while at that bound;
//! replies go out in any order through one writer task and a bounded channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dialect::Dialect;
use super::framing::{self, FrameError};
use super::guard;
use super::listener::{ReplyPath, Server, WhenBusy, dedup_key};
use super::tls_clients::{self, Mismatch, TlsClientTable};
use super::tls_stats::{Refusal, TlsStats};
use crate::config::{ClientConfig, Config, RadsecConfig};

/// What RadSec connections share across reloads: the connection bound, the numbering of
/// connections for the duplicate cache, the counters and the connection tasks.
struct Shared {
    /// One permit per open connection (`max_connections`, which needs a restart).
    slots: Arc<Semaphore>,
    /// Numbers connections for the duplicate cache, so duplicates stay per connection.
    next_connection: AtomicU64,
    /// Connection tasks, so shutdown can wait for them.
    connections: TaskTracker,
}

/// One config's RadSec: its certificates, its clients by certificate, its timeouts. A
/// connection keeps the one it was accepted under; a reload swaps in the next.
pub struct Radsec {
    acceptor: TlsAcceptor,
    clients: TlsClientTable,
    settings: RadsecConfig,
    shared: Arc<Shared>,
    pub stats: Arc<TlsStats>,
}

/// The RadSec listeners' state: the `Radsec` in force, behind an `ArcSwap`.
pub struct RadsecListener {
    current: ArcSwap<Radsec>,
    shared: Arc<Shared>,
    stats: Arc<TlsStats>,
}

impl RadsecListener {
    /// `None` when the config has no `[radsec]`.
    pub fn new(
        config: &Config,
        server_config: Arc<ServerConfig>,
        stats: Arc<TlsStats>,
    ) -> Option<RadsecListener> {
        let settings = config.radsec.as_ref()?;
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            next_connection: AtomicU64::new(1),
            connections: TaskTracker::new(),
        });
        let current = Radsec::of(config, server_config, shared.clone(), stats.clone())?;
        Some(RadsecListener {
            current: ArcSwap::from_pointee(current),
            shared,
            stats,
        })
    }

    /// Puts the certificates, client entries and timeouts of a reloaded config in force for
    /// the next connection; open connections keep theirs. False (nothing changed) when the
    /// new config has no `[radsec]`, which needs a restart.
    pub fn reload(&self, config: &Config, server_config: Arc<ServerConfig>) -> bool {
        match Radsec::of(
            config,
            server_config,
            self.shared.clone(),
            self.stats.clone(),
        ) {
            Some(radsec) => {
                self.current.store(Arc::new(radsec));
                true
            }
            None => false,
        }
    }

    pub fn connections(&self) -> &TaskTracker {
        &self.shared.connections
    }
}

impl Radsec {
    fn of(
        config: &Config,
        server_config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        stats: Arc<TlsStats>,
    ) -> Option<Radsec> {
        Some(Radsec {
            acceptor: TlsAcceptor::from(server_config),
            clients: TlsClientTable::new(&config.clients),
            settings: config.radsec.clone()?,
            shared,
            stats,
        })
    }
}

/// Accepts on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    listener_state: Arc<RadsecListener>,
    server: Arc<Server>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off a little rather than spin.
                    tracing::warn!(error = %e, "radsec accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let radsec = listener_state.current.load_full();
        let Ok(slot) = radsec.shared.slots.clone().try_acquire_owned() else {
            radsec.stats.over_max_connections();
            tracing::debug!(peer = %peer, "radsec connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (radsec_task, server, shutdown) = (radsec.clone(), server.clone(), shutdown.clone());
        radsec.shared.connections.spawn(async move {
            radsec_task.stats.opened();
            connection(&radsec_task, &server, stream, peer, &shutdown).await;
            radsec_task.stats.closed();
            drop(slot);
        });
    }
}

/// One connection, from the handshake to the close.
async fn connection(
    radsec: &Radsec,
    server: &Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) {
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return,
        accepted = tokio::time::timeout(
            radsec.settings.handshake_timeout,
            radsec.acceptor.accept(stream),
        ) => accepted,
    };
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            // A port probe or health check that connects and closes: counted, not warned.
            radsec.stats.refused(Refusal::TlsError);
            tracing::debug!(peer = %peer, "radsec peer closed before the handshake ended");
            return;
        }
        Ok(Err(e)) => return refuse(radsec, peer, classify(&e), &e.to_string(), None),
        Err(_) => {
            return refuse(
                radsec,
                peer,
                Refusal::HandshakeTimeout,
                "no handshake within handshake_timeout",
                None,
            );
        }
    };
    let (client, dialect) = match admit_connection(radsec, &tls, peer) {
        Ok(found) => found,
        Err((reason, detail, names)) => {
            refuse(radsec, peer, reason, &detail, names.as_deref());
            // close_notify, but a peer that reads nothing must not hold the slot for it.
            let mut tls = tls;
            let _ = tokio::time::timeout(radsec.settings.handshake_timeout, tls.shutdown()).await;
            return;
        }
    };
    let connection = radsec
        .shared
        .next_connection
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        peer = %peer,
        client = %client.name,
        protocol = match dialect { Dialect::Classic => "radius/tls", Dialect::Radius11 => "radius/1.1" },
        "radsec connection"
    );
    serve(
        radsec, server, tls, client, dialect, connection, peer, shutdown,
    )
    .await;
    tracing::debug!(peer = %peer, "radsec connection closed");
}

type Refused = (Refusal, String, Option<String>);

/// After the handshake: which client the certificate is, which dialect was negotiated,
/// and whether that client may use it.
fn admit_connection(
    radsec: &Radsec,
    tls: &TlsStream<TcpStream>,
    peer: SocketAddr,
) -> Result<(Arc<ClientConfig>, Dialect), Refused> {
    let (_, session) = tls.get_ref();
    let dialect = Dialect::negotiated(session.alpn_protocol());
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| {
            (
                Refusal::NoCertificate,
                "no client certificate".to_string(),
                None,
            )
        })?;
    let describe = || {
        let names = tls_clients::names(leaf).unwrap_or_default();
        format!(
            "dns={:?} cn={:?} {}",
            names.dns,
            names.common_name.unwrap_or_default(),
            tls_clients::fingerprint(leaf)
        )
    };
    let client = radsec
        .clients
        .identify(leaf, peer.ip())
        .map_err(|mismatch| match mismatch {
            Mismatch::UnknownName | Mismatch::Unreadable => (
                Refusal::UnknownClient,
                "the certificate's name and fingerprint match no client".to_string(),
                Some(describe()),
            ),
            Mismatch::AddressNotAllowed => (
                Refusal::AddressNotAllowed,
                "the client's address does not contain the peer".to_string(),
                Some(describe()),
            ),
        })?;
    let require_1_1 = client.tls.as_ref().is_some_and(|t| t.require_radius_1_1);
    if require_1_1 && dialect != Dialect::Radius11 {
        return Err((
            Refusal::Radius11Required,
            format!(
                "client '{}' requires radius/1.1; the connection did not negotiate it",
                client.name
            ),
            None,
        ));
    }
    // RADIUS/1.1 only over TLS 1.3, as the RFC 9765 drafts require.
    if dialect == Dialect::Radius11
        && session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3)
    {
        return Err((
            Refusal::Tls13Required,
            "radius/1.1 needs TLS 1.3".to_string(),
            None,
        ));
    }
    Ok((client, dialect))
}

/// Logs and counts a refused connection.
fn refuse(radsec: &Radsec, peer: SocketAddr, reason: Refusal, detail: &str, names: Option<&str>) {
    radsec.stats.refused(reason);
    tracing::warn!(
        peer = %peer,
        reason = reason.label(),
        detail = %crate::logging::printable(detail),
        certificate = %crate::logging::printable(names.unwrap_or("-")),
        "radsec connection refused"
    );
}

/// The reason of a failed handshake, from rustls's error.
fn classify(error: &std::io::Error) -> Refusal {
    use rustls::{CertificateError, Error};
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
    else {
        return Refusal::TlsError;
    };
    match tls {
        Error::NoCertificatesPresented => Refusal::NoCertificate,
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => Refusal::Expired,
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => Refusal::UnknownCa,
        Error::InvalidCertificate(_) => Refusal::BadCertificate,
        Error::NoApplicationProtocol => Refusal::NoCommonAlpn,
        _ => Refusal::TlsError,
    }
}

/// Reads packets and hands them to the request path until the peer closes, a bound is
/// hit, or shutdown; then lets the writer send what is still being answered.
#[allow(clippy::too_many_arguments)]
async fn serve(
    radsec: &Radsec,
    server: &Arc<Server>,
    tls: TlsStream<TcpStream>,
    client: Arc<ClientConfig>,
    dialect: Dialect,
    connection: u64,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) {
    let settings = &radsec.settings;
    let (mut reader, writer) = tokio::io::split(tls);
    // A reply waits here only while the writer is busy; every request holds a permit, so
    // at most `max_in_flight_per_connection` replies (and one inline answer) are queued.
    let (replies, queue) = mpsc::channel(settings.max_in_flight_per_connection + 1);
    let closing = shutdown.child_token();
    let writer = tokio::spawn(write_replies(
        writer,
        queue,
        settings.idle_timeout,
        closing.clone(),
    ));
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight_per_connection));
    let mut buffer = Vec::with_capacity(super::packet::MAX_PACKET_LEN);
    loop {
        let held: OwnedSemaphorePermit = tokio::select! {
            _ = closing.cancelled() => break,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let read = tokio::select! {
            _ = closing.cancelled() => break,
            read = tokio::time::timeout(
                settings.idle_timeout,
                framing::read_packet(&mut reader, &mut buffer),
            ) => read,
        };
        match read {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(FrameError::Length(length))) => {
                radsec.stats.bad_length();
                tracing::warn!(peer = %peer, client = %client.name, length, "radsec packet length outside 20..=4096; connection closed");
                closing.cancel();
                break;
            }
            Ok(Err(FrameError::Io(e))) => {
                tracing::debug!(peer = %peer, error = %e, "radsec read failed");
                closing.cancel();
                break;
            }
            Err(_) => {
                radsec.stats.idle_closed();
                tracing::debug!(peer = %peer, client = %client.name, "radsec connection idle for idle_timeout; closed");
                closing.cancel();
                break;
            }
        }
        let verified = match guard::check_as(&client, &buffer, dialect) {
            Ok(verified) => verified,
            Err(reason) => {
                server.drop_datagram(Some(&client), peer, reason);
                continue;
            }
        };
        let key = dedup_key(connection, peer, &verified);
        let path = TlsReply {
            queue: replies.clone(),
        };
        // The config in force when the request arrived decides it, as on UDP.
        let live = server.live();
        let admitted = tokio::select! {
            _ = closing.cancelled() => break,
            admitted = server.admit(&live, &client, &verified, key, path, WhenBusy::Wait, Some(held)) => admitted,
        };
        if let Err(reason) = admitted {
            server.drop_datagram(Some(&client), peer, reason);
        }
    }
    // Requests still in flight hold their own senders; the writer ends when the last one is
    // answered, or when the peer stops taking replies.
    drop(replies);
    let _ = writer.await;
}

/// Writes replies in the order they are decided. A peer that takes no reply within
/// `idle_timeout` gets its connection closed.
async fn write_replies(
    mut writer: WriteHalf<TlsStream<TcpStream>>,
    mut queue: mpsc::Receiver<Arc<[u8]>>,
    idle_timeout: std::time::Duration,
    closing: CancellationToken,
) {
    loop {
        let bytes = tokio::select! {
            _ = closing.cancelled() => break,
            bytes = queue.recv() => match bytes {
                Some(bytes) => bytes,
                None => break,
            },
        };
        let written = tokio::time::timeout(idle_timeout, async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            closing.cancel();
            break;
        }
    }
    let _ = tokio::time::timeout(idle_timeout, writer.shutdown()).await;
}

/// A RadSec reply goes to its connection's writer.
struct TlsReply {
    queue: mpsc::Sender<Arc<[u8]>>,
}

impl ReplyPath for TlsReply {
    async fn send(&self, bytes: Arc<[u8]>) -> std::io::Result<()> {
        self.queue.send(bytes).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "radsec connection closed")
        })
    }
}
