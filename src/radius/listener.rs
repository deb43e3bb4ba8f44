//! The request path every transport shares (`Server::admit`: Status-Server, the duplicate
//! cache, the work bound, the engine call, the reply and its signing), and the UDP receive
//! loops that feed it. Each loop only receives, finds the client, runs the guard and hands
//! the request to `admit`; it never waits on SQLite, Argon2 or a gateway. RadSec
//! (`tls`) feeds the same `admit` from its connections.
//!
//! Replies leave from the socket the request came in on, from the address it was sent to
//! (`socket`). Work is bounded by a semaphore (`max_in_flight`): with no permit the datagram
//! is dropped and counted, and the NAS retransmits. Each request runs under
//! `request_timeout`.
//!
//! What a config decides (clients and secrets, reply policy, the engine and its policy) is
//! one `Live` snapshot behind an `ArcSwap`. A request reads the snapshot once as it arrives
//! and keeps it to the end, so a reload (`Server::swap`) changes nothing for requests in
//! flight and everything for the next one. A section added to the config joins `Live` (or
//! the engine it holds) and reloads with the rest.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clients::ClientTable;
use super::dedup::{DedupCache, DedupKey, Seen};
use super::dialect::Dialect;
use super::drop_warnings::DropWarnings;
use super::guard::{self, DropReason, OwnedVerifiedRequest, VerifiedRequest};
use super::packet::MAX_PACKET_LEN;
use super::reply::{self, ReplyContext, ReplyPolicy};
use super::request;
use super::socket::{RadiusSocket, Received};
use super::stats::{Bucket, RequestCode, Stats};
use super::tls_stats::TlsStats;
use crate::auth::Engine;
use crate::auth::engine::Overloaded;
use crate::config::{ClientConfig, Config};
use crate::logging::{printable, printable_list};
use crate::ops::metrics::Metrics;

/// Entries the duplicate cache keeps at most; `[server] dedup_max_bytes` bounds its bytes.
const DEDUP_CAPACITY: usize = 262_144;

/// Everything the receive loops share.
pub struct Server {
    /// The config in force; replaced whole by a reload.
    live: ArcSwap<Live>,
    dedup: DedupCache,
    permits: Arc<Semaphore>,
    /// Request tasks, so shutdown can wait for them.
    tasks: TaskTracker,
    /// The RadSec counters, in the same summary line.
    pub tls_stats: Arc<TlsStats>,
}
/// What one config decides for the wire: who the clients are, how replies look, which
/// engine decides. Built at start and by each reload; requests hold it while they run.
pub struct Live {
    clients: ClientTable,
    engine: Arc<Engine>,
    request_timeout: Duration,
    replies: ReplyPolicy,
    pub stats: Stats,
    /// The rate-limited warnings for drops a config change can fix.
    warnings: DropWarnings,
    /// `otpgate_request_duration_seconds` by step, resolved once.
    durations: Durations,
}

struct Durations {
    pin: prometheus::Histogram,
    answer: prometheus::Histogram,
    status: prometheus::Histogram,
}

impl Live {
    /// The snapshot of a checked config with the engine built for it.
    pub fn new(config: &Config, engine: Arc<Engine>) -> Live {
        for client in config
            .clients
            .iter()
            .filter(|c| !c.send_message_authenticator)
        {
            tracing::warn!(client = %client.name, "send_message_authenticator = false: replies to this client are open to forgery (BlastRADIUS)");
        }
        let metrics = Metrics::global();
        let stats = Stats::new(metrics, config.clients.iter().map(|c| c.name.as_str()));
        let warnings = DropWarnings::new(stats.bucket_count());
        let step = |name: &str| metrics.request_seconds.with_label_values(&[name]);
        Live {
            clients: ClientTable::new(&config.clients),
            engine,
            request_timeout: config.server.request_timeout,
            replies: ReplyPolicy::from_config(config),
            stats,
            warnings,
            durations: Durations {
                pin: step("pin"),
                answer: step("answer"),
                status: step("status"),
            },
        }
    }

    /// The engine of this config.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Counts a drop, logs it at debug level and, for drops a config change can fix, warns
    /// (rate-limited). `client` is `None` for a source that is no configured client.
    pub fn drop_datagram(
        &self,
        client: Option<&ClientConfig>,
        source: SocketAddr,
        reason: DropReason,
    ) {
        let name = client.map(|c| c.name.as_str());
        let bucket = self.stats.bucket(name);
        let count = self.stats.dropped(bucket, reason);
        tracing::debug!(
            source = %source,
            client = %name.unwrap_or("-"),
            reason = %reason.label(),
            "dropped"
        );
        self.warnings
            .note(bucket, client, source.ip(), reason, count);
    }
}

impl Server {
    pub fn new(config: &Config, engine: Arc<Engine>) -> Server {
        Server {
            live: ArcSwap::from_pointee(Live::new(config, engine)),
            dedup: DedupCache::new(
                config.server.dedup_window,
                DEDUP_CAPACITY,
                config.server.dedup_max_bytes,
            ),
            permits: Arc::new(Semaphore::new(config.server.max_in_flight)),
            tasks: TaskTracker::new(),
            tls_stats: Arc::new(TlsStats::default()),
        }
    }

    /// The config in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Puts a new config in force for every request from now on; requests in flight keep
    /// the one they started with. The duplicate cache and the in-flight bound stay (their
    /// sizes are `[server]` keys that need a restart).
    pub fn swap(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    /// Request tasks still running.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Counts a drop under the config in force (`Live::drop_datagram`).
    pub fn drop_datagram(
        &self,
        client: Option<&ClientConfig>,
        source: SocketAddr,
        reason: DropReason,
    ) {
        self.live.load().drop_datagram(client, source, reason);
    }

    /// The drop and reply counters of the config in force, RadSec's, the engine's (SMS
    /// limited, PIN queue full) and the store's (PostgreSQL: challenges opened after their
    /// counter moved).
    pub fn counters(&self) -> String {
        let live = self.live.load();
        [
            live.stats.summary(),
            self.tls_stats.summary(),
            live.engine.stats.summary(),
            live.engine.store_counters(),
        ]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// Where a request came from and where its reply goes: the UDP socket it came in on, or its
/// TLS connection's writer. The request path (guard, duplicate cache, engine, reply signing)
/// is the same for both; only this differs.
pub trait ReplyPath: Send + Sync + 'static {
    /// Sends one reply.
    fn send(&self, bytes: Arc<[u8]>) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// What a request does when every `max_in_flight` permit is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// Dropped and counted: a UDP NAS retransmits.
    Drop,
    /// Waits for a permit. A TLS client does not retransmit on its connection (RFC 6613,
    /// RFC 6614), and its connection is not read meanwhile, so TCP pushes back.
    Wait,
}

/// The duplicate cache's key for a verified request. Under RADIUS/1.1 only the Token counts
/// (RFC 9765): the Identifier and Reserved-2 are ignored.
pub fn dedup_key(connection: u64, source: SocketAddr, verified: &VerifiedRequest<'_>) -> DedupKey {
    let packet = verified.packet();
    match verified.dialect() {
        Dialect::Classic => DedupKey {
            connection,
            source,
            identifier: packet.identifier,
            authenticator: packet.authenticator,
        },
        Dialect::Radius11 => DedupKey {
            connection,
            source,
            identifier: 0,
            authenticator: Dialect::reply_token(&packet.authenticator),
        },
    }
}

impl Server {
    /// One verified request up to the hand-off, for every transport: Status-Server is
    /// answered at once (it costs one HMAC), a duplicate is dropped or answered from the
    /// cache, and a new request gets a `max_in_flight` permit and a task. `held` (a TLS
    /// connection's own permit) lives as long as the task. An `Err` is a silent drop.
    #[allow(clippy::too_many_arguments)] // each transport passes all of them, once
    pub async fn admit<P: ReplyPath>(
        self: &Arc<Self>,
        live: &Arc<Live>,
        client: &Arc<ClientConfig>,
        verified: &VerifiedRequest<'_>,
        key: DedupKey,
        path: P,
        when_busy: WhenBusy,
        held: Option<OwnedSemaphorePermit>,
    ) -> Result<(), DropReason> {
        let bucket = live.stats.bucket(Some(&client.name));
        if verified.is_status_server() {
            let started = Instant::now();
            live.stats.requested(bucket, RequestCode::StatusServer);
            let bytes = reply::status_accept(&ReplyContext::of(verified), client);
            tracing::debug!(client = %client.name, source = %key.source, "status-server answered");
            send(&path, live, bucket, bytes.into()).await;
            live.durations
                .status
                .observe(started.elapsed().as_secs_f64());
            return Ok(());
        }
        live.stats.requested(bucket, RequestCode::AccessRequest);
        match self.dedup.check(key, Instant::now()) {
            Seen::New => {}
            Seen::InFlight => return Err(DropReason::DuplicateInFlight),
            Seen::Answered(bytes) => {
                tracing::debug!(source = %key.source, id = verified.packet().identifier, "retransmission answered from cache");
                send(&path, live, bucket, bytes).await;
                return Ok(());
            }
        }
        let permit = match when_busy {
            WhenBusy::Drop => self.permits.clone().try_acquire_owned().ok(),
            WhenBusy::Wait => self.permits.clone().acquire_owned().await.ok(),
        };
        let Some(permit) = permit else {
            self.dedup.abandon(key);
            return Err(DropReason::Overloaded);
        };
        // Decoding the request's fields and naming its attributes happen in the task: the
        // receiving loop only copies the verified bytes.
        let owned = verified.to_owned();
        let (server, live, client) = (self.clone(), live.clone(), client.clone());
        self.tasks.spawn(async move {
            let _permits = (permit, held);
            server.handle(&live, path, client, owned, key).await;
        });
        Ok(())
    }

    /// Decides one request and sends the reply. Cancel-safe: if dropped, the cache entry is
    /// left in flight until it expires, and the NAS's retransmissions are dropped meanwhile.
    async fn handle<P: ReplyPath>(
        &self,
        live: &Live,
        path: P,
        client: Arc<ClientConfig>,
        owned: OwnedVerifiedRequest,
        key: DedupKey,
    ) {
        let Some(verified) = owned.verified() else {
            self.dedup.abandon(key);
            live.drop_datagram(Some(&client), key.source, DropReason::Malformed);
            return;
        };
        let context = ReplyContext::of(&verified);
        let request = request::extract(&verified, &client, &live.replies.dictionary);
        tracing::debug!(client = %client.name, source = %key.source, attributes = %printable_list(&request.attributes), "request");
        let started = Instant::now();
        let verdict = match tokio::time::timeout(live.request_timeout, live.engine.decide(&request))
            .await
        {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(Overloaded)) => {
                // The PIN threads' queue is full: no reply, so the NAS retransmits.
                self.dedup.abandon(key);
                live.drop_datagram(Some(&client), key.source, DropReason::Overloaded);
                return;
            }
            Err(_) => {
                self.dedup.abandon(key);
                let bucket = live.stats.bucket(Some(&client.name));
                live.stats.dropped(bucket, DropReason::TimedOut);
                tracing::warn!(client = %client.name, user = %printable(&request.user_name), "request timed out without a reply");
                return;
            }
        };
        let bytes: Arc<[u8]> =
            reply::encode(&verdict.decision, &context, &client, &live.replies).into();
        self.dedup.answered(key, bytes.clone());
        let bucket = live.stats.bucket(Some(&client.name));
        send(&path, live, bucket, bytes).await;
        let step = match request.state {
            Some(_) => &live.durations.answer,
            None => &live.durations.pin,
        };
        step.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            client = %client.name,
            user = %printable(&request.user_name),
            nas_ip = %printable(request.nas_ip.as_deref().unwrap_or("-")),
            nas_identifier = %printable(request.nas_identifier.as_deref().unwrap_or("-")),
            calling_station_id = %printable(request.calling_station_id.as_deref().unwrap_or("-")),
            serial = verdict.serial.as_deref().unwrap_or("-"),
            outcome = verdict.decision.outcome(),
            reason = %printable(&verdict.reason),
            phone = verdict.phone_masked.as_deref().unwrap_or("-"),
            gateway = verdict.gateway.as_deref().unwrap_or("-"),
            ms = started.elapsed().as_millis() as u64,
            "decision"
        );
    }
}

/// Sends a reply and counts it by client and code.
async fn send<P: ReplyPath>(path: &P, live: &Live, bucket: Bucket, bytes: Arc<[u8]>) {
    let code = bytes.first().copied().unwrap_or_default();
    match path.send(bytes).await {
        Ok(()) => live.stats.replied(bucket, code),
        Err(e) => tracing::warn!(error = %e, "cannot send reply"),
    }
}

/// Receives on `socket` until `shutdown` is cancelled.
pub async fn run(socket: Arc<RadiusSocket>, server: Arc<Server>, shutdown: CancellationToken) {
    // One octet more than the largest packet, to tell an oversized datagram from a full one.
    let mut buffer = vec![0u8; MAX_PACKET_LEN + 1];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = socket.recv(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; the socket
                    // itself is fine, so keep receiving.
                    tracing::debug!(error = %e, "recv failed");
                    continue;
                }
            },
        };
        let Some(datagram) = buffer.get(..received.len) else {
            continue;
        };
        let live = server.live.load_full();
        if let Err((reason, client)) = receive(&socket, &server, &live, datagram, received).await {
            live.drop_datagram(client.as_deref(), received.source, reason);
        }
    }
}

/// Why a datagram was dropped, and from which configured client if it came from one.
type Dropped = (DropReason, Option<Arc<ClientConfig>>);

/// Handles one datagram up to the hand-off. An `Err` is a silent drop.
async fn receive(
    socket: &Arc<RadiusSocket>,
    server: &Arc<Server>,
    live: &Arc<Live>,
    datagram: &[u8],
    received: Received,
) -> Result<(), Dropped> {
    let Received { source, local, .. } = received;
    let client = live
        .clients
        .lookup(source.ip())
        .ok_or((DropReason::UnknownClient, None))?
        .clone();
    let from = |reason: DropReason| (reason, Some(client.clone()));
    let verified = guard::check(&client, datagram).map_err(from)?;
    let key = dedup_key(0, source, &verified);
    let path = UdpReply {
        socket: socket.clone(),
        destination: source,
        local,
    };
    server
        .admit(live, &client, &verified, key, path, WhenBusy::Drop, None)
        .await
        .map_err(from)
}

/// A UDP reply leaves from the socket the request came in on, from the address it was sent
/// to.
struct UdpReply {
    socket: Arc<RadiusSocket>,
    destination: SocketAddr,
    local: Option<IpAddr>,
}

impl ReplyPath for UdpReply {
    async fn send(&self, bytes: Arc<[u8]>) -> std::io::Result<()> {
        self.socket
            .send(&bytes, self.destination, self.local)
            .await
            .map(|_| ())
    }
}
