//! `otpgate serve`: builds the engine and the listeners, runs until SIGINT or SIGTERM, then
//! stops receiving, lets requests in flight finish (with a deadline) and waits for SMS still
//! being delivered in the background (with a deadline), logging what it abandons. SIGHUP
//! reloads the config (`ops::reload`); systemd hears of each step (`ops::notify`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Engine;
use crate::config::Config;
use crate::events::Notifier;
use crate::ops::{http, notify, reload::Reloader};
use crate::radius::listener::{self, Server};
use crate::radius::socket::RadiusSocket;
use crate::radius::tls::{self, RadsecListener};
use crate::radius::tls_config;
use crate::sms::Gateways;
use crate::sms::breaker::Breakers;
use crate::store::{GatewayStateRow, PURGE_AUDIT_BATCH, StoreThread};
use crate::time::now_ms;

/// How long shutdown waits for requests in flight, and then for SMS deliveries.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How often expired challenges are deleted and counters are logged.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// How often audit rows older than `[audit] keep` are deleted (the first time at start-up):
/// the last batch of a purge reads the whole table, so not every minute.
const AUDIT_PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Socket receive buffer: room for a login storm while the loop catches up.
const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

pub fn run(config_path: &Path) -> Result<()> {
    let config = super::load_config(config_path)?;
    crate::logging::init(&config.server.log_level, config.server.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    let (_, store, keys) = super::open(&config.path)?;
    for warning in crate::sms::cost::warnings(&config) {
        tracing::warn!("{warning}");
    }
    let gateways = Gateways::from_config(&config).map_err(|e| anyhow!(e))?;
    // Every store call of the server runs on this one thread.
    let store = Arc::new(StoreThread::start(store).context("cannot start the store thread")?);
    let notifier = Arc::new(Notifier::new(&config, gateways.clone(), store.clone()));
    let mut engine = Engine::new(
        store.clone(),
        gateways.clone(),
        notifier.clone(),
        keys,
        &config,
    )
    .map_err(|e| anyhow!(e))?;
    if let Some(directory) = &config.directory {
        let directory = crate::directory::Directory::new(directory).map_err(|e| anyhow!(e))?;
        engine = engine.with_directory(Arc::new(directory));
    }
    let engine = Arc::new(engine);
    let server = Arc::new(Server::new(&config, engine.clone()));
    let radsec = radsec(&config, &server)?;
    let mut signals = StopSignals::install();
    let mut hangups = Hangups::install();

    let shutdown = CancellationToken::new();
    let loops = TaskTracker::new();
    for address in &config.server.listen {
        let socket = Arc::new(bind(*address)?);
        tracing::info!("listening udp {}", socket.local_addr()?);
        loops.spawn(listener::run(socket, server.clone(), shutdown.clone()));
    }
    if let Some(metrics) = &config.metrics {
        let endpoint = http::bind(metrics.listen).await.with_context(|| {
            format!("cannot listen on tcp {} ([metrics] listen)", metrics.listen)
        })?;
        tracing::info!(
            "listening http {} (metrics, livez, readyz)",
            endpoint.local_addr()?
        );
        loops.spawn(http::run(
            endpoint,
            server.clone(),
            config.path.display().to_string(),
            shutdown.clone(),
        ));
    }
    if let (Some(radsec), Some(settings)) = (&radsec, &config.radsec) {
        for address in &settings.listen {
            let listener = bind_tcp(*address)?;
            tracing::info!("listening radsec {}", listener.local_addr()?);
            loops.spawn(tls::run(
                listener,
                radsec.clone(),
                server.clone(),
                shutdown.clone(),
            ));
        }
    }
    loops.close();
    notify::ready();
    tokio::spawn(notify::watchdog(shutdown.clone()));
    tokio::spawn(housekeeping(
        store.clone(),
        server.clone(),
        config.challenge.validity.0,
        config.audit.keep,
        shutdown.clone(),
    ));
    let recorder = tokio::spawn(record_breakers(
        store.clone(),
        gateways.breakers().clone(),
        config.gateways.keys().cloned().collect(),
        shutdown.clone(),
    ));

    let reloader = Reloader::new(config.clone(), server.clone(), radsec.clone());
    loop {
        tokio::select! {
            _ = signals.wait() => break,
            () = hangups.next() => reloader.reload().await,
        }
    }
    notify::stopping();
    tracing::info!("shutting down");
    shutdown.cancel();
    loops.wait().await;
    if let Some(radsec) = &radsec {
        drain("radsec connections", radsec.connections()).await;
    }
    drain("requests in flight", server.tasks()).await;
    drain("SMS deliveries", engine.background()).await;
    // Every config's notifier shares these tasks.
    drain("notifications", notifier.tasks()).await;
    let _ = recorder.await;
    // Audit rows are queued without waiting; this waits for the last of them.
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "the store stopped before every audit row was written");
    }
    tracing::info!(stats = %server.counters(), "stopped");
    Ok(())
}

/// The RadSec listener's shared state, with the certificates loaded (their problems stop
/// start-up with the file and key named); None without `[radsec]`.
fn radsec(config: &Config, server: &Server) -> Result<Option<Arc<RadsecListener>>> {
    let Some(settings) = &config.radsec else {
        return Ok(None);
    };
    let setup = tls_config::build(settings, &config.path).map_err(|e| anyhow!(e))?;
    tls_config::log_certificate_expiry(setup.certificate_not_after);
    Ok(RadsecListener::new(config, setup.server_config, server.tls_stats.clone()).map(Arc::new))
}

/// Binds a TCP listener for RadSec; IPv6 listeners are IPv6-only, as for UDP.
fn bind_tcp(address: SocketAddr) -> Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let context = || format!("cannot listen on tcp {address}");
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .with_context(context)?;
    if address.is_ipv6() {
        socket.set_only_v6(true).with_context(context)?;
    }
    socket.set_reuse_address(true).with_context(context)?;
    socket.set_nonblocking(true).with_context(context)?;
    socket.bind(&address.into()).with_context(context)?;
    socket.listen(1024).with_context(context)?;
    tokio::net::TcpListener::from_std(socket.into()).with_context(context)
}

/// Binds a UDP socket; IPv6 sockets are IPv6-only so that "0.0.0.0:1812" and "[::]:1812"
/// can both be listed.
fn bind(address: SocketAddr) -> Result<RadiusSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let context = || format!("cannot listen on udp {address}");
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .with_context(context)?;
    if address.is_ipv6() {
        socket.set_only_v6(true).with_context(context)?;
    }
    // A smaller buffer than asked for is fine; the kernel caps it.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.set_nonblocking(true).with_context(context)?;
    socket.bind(&address.into()).with_context(context)?;
    RadiusSocket::new(socket).with_context(context)
}

/// SIGINT and SIGTERM, watched from before the first socket is bound: a signal that comes
/// right after "listening" must stop the server cleanly, not kill it.
struct StopSignals {
    #[cfg(unix)]
    watched: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn install() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => StopSignals {
                    watched: Some((interrupt, terminate)),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
                    StopSignals { watched: None }
                }
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next stop signal. Cancel-safe, so it can race reloads in a loop.
    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.watched {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP, watched from before the first socket is bound: its default action would kill
/// the server.
struct Hangups {
    #[cfg(unix)]
    watched: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn install() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(hangup) => Hangups {
                    watched: Some(hangup),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; the config cannot be reloaded");
                    Hangups { watched: None }
                }
            }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// Waits for the next SIGHUP; never returns if they cannot be watched.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(hangup) = &mut self.watched
            && hangup.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

async fn drain(what: &str, tasks: &TaskTracker) {
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(abandoned = tasks.len(), "gave up waiting for {what}");
    }
}

/// How often breaker changes are written to the database for `otpgate gateway list`.
const BREAKER_RECORD_EVERY: Duration = Duration::from_secs(1);

/// Writes the breakers of `gateways` to the database at start-up (so that `gateway list`
/// shows every node running, the gateways it has not used yet as closed), whenever they
/// changed, and once more at shutdown.
async fn record_breakers(
    store: Arc<StoreThread>,
    breakers: Arc<Breakers>,
    gateways: Vec<String>,
    shutdown: CancellationToken,
) {
    let mut recorded = None;
    let mut ticker = tokio::time::interval(BREAKER_RECORD_EVERY);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let version = breakers.version();
        if recorded != Some(version) {
            let now = now_ms();
            let views = breakers.snapshot();
            let rows: Vec<GatewayStateRow> = gateways
                .iter()
                .map(
                    |gateway| match views.iter().find(|v| v.gateway == *gateway) {
                        Some(b) => GatewayStateRow {
                            node: None,
                            gateway: gateway.clone(),
                            state: b.state.to_string(),
                            failures: b.failures,
                            last_error: b.last_error.clone(),
                            open_until: b.open_until,
                            updated: now,
                        },
                        None => GatewayStateRow {
                            node: None,
                            gateway: gateway.clone(),
                            state: "closed".into(),
                            failures: 0,
                            last_error: None,
                            open_until: None,
                            updated: now,
                        },
                    },
                )
                .collect();
            match store.run(move |s| s.save_gateway_states(&rows)).await {
                Ok(()) => recorded = Some(version),
                Err(e) => tracing::error!(error = %e, "cannot record gateway states"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Deletes challenges once they are past any use and audit rows older than `keep`, and logs
/// the counters when they change.
async fn housekeeping(
    store: Arc<StoreThread>,
    server: Arc<Server>,
    validity: Duration,
    keep: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(HOUSEKEEPING_EVERY);
    let mut last_summary = String::new();
    let mut audit_purged: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if audit_purged.is_none_or(|at| at.elapsed() >= AUDIT_PURGE_EVERY) {
            audit_purged = Some(tokio::time::Instant::now());
            purge_audit(&store, keep, &shutdown).await;
        }
        // Expired challenges stay one more validity period so the audit can tell
        // "expired" from "unknown".
        let cutoff =
            now_ms().saturating_sub(i64::try_from(validity.as_millis()).unwrap_or(i64::MAX));
        match store.run(move |s| s.purge_challenges(cutoff)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired challenges deleted"),
            Err(e) => tracing::error!(error = %e, "cannot purge challenges"),
        }
        let summary = server.counters();
        if summary != last_summary {
            tracing::info!(stats = %summary, "counters");
            last_summary = summary;
        }
    }
}

/// Deletes audit rows older than `keep`, one batch per store call so that requests' calls
/// run in between, and logs how many.
async fn purge_audit(store: &StoreThread, keep: Duration, shutdown: &CancellationToken) {
    let cutoff = now_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let mut purged = 0;
    while !shutdown.is_cancelled() {
        match store.run(move |s| s.purge_audit(cutoff)).await {
            Ok(n) => {
                purged += n;
                if n < PURGE_AUDIT_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot purge old audit rows");
                break;
            }
        }
    }
    if purged > 0 {
        let before = std::time::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(cutoff).unwrap_or_default());
        tracing::info!(purged, before = %humantime::format_rfc3339_seconds(before), "audit rows older than [audit] keep deleted");
    }
}
