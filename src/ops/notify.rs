//! systemd's notify protocol (sd_notify(3)) for a `Type=notify` unit: READY=1 once every
//! listener is bound, RELOADING=1 with MONOTONIC_USEC (systemd 253 and later want it to
//! time the reload) and then READY=1 around a reload, STOPPING=1 at shutdown, and WATCHDOG=1
//! at half of WATCHDOG_USEC when the unit sets `WatchdogSec`. Without NOTIFY_SOCKET every
//! call does nothing, so the same binary runs in a shell.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Every listener is bound; also the end of a reload.
pub fn ready() {
    send(&[NotifyState::Ready], "READY=1");
}

/// A reload begins; `ready` ends it, whether or not the new config was taken.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now], "RELOADING=1"),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read CLOCK_MONOTONIC for MONOTONIC_USEC");
            send(&[NotifyState::Reloading], "RELOADING=1");
        }
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping], "STOPPING=1");
}

/// Pings the watchdog at half its interval until `shutdown`, if systemd asked for pings
/// (WATCHDOG_USEC, for this process by WATCHDOG_PID); returns at once if it did not. The
/// pings come from the runtime, so a wedged runtime stops them and systemd restarts it.
pub async fn watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(1));
    tracing::info!(every = ?every, "pinging the systemd watchdog");
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => send(&[NotifyState::Watchdog], "WATCHDOG=1"),
        }
    }
}

fn send(states: &[NotifyState], what: &str) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot tell systemd {what}");
    }
}
