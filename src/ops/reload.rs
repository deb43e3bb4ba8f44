//! Reload on SIGHUP (`systemctl reload`): the config file is read and checked whole again,
//! as at start-up. If it is good, a new engine (sharing store, keys, PIN threads, counters
//! and breakers) and a new `Live` snapshot are built from it and swapped in at once: the
//! next datagram sees clients, secrets, modes, attributes, groups, policy, limits,
//! templates, gateways, events and dictionaries of the new file, and requests in flight
//! finish with the old. If it is bad, the old config stays in force and every problem is
//! logged as `file: key: problem`. Either way `otpgate_config_reloads_total` counts it and
//! systemd hears RELOADING=1 and READY=1 around it.
//!
//! RadSec's certificates, CA and client entries by certificate reload with the rest (a
//! certificate that does not load refuses the whole reload); open TLS connections keep the
//! ones they were accepted under.
//!
//! Keys that shape what was built once at start-up (sockets, database, key file, queues,
//! logging) are compared with the start-up config; a change is logged as needing a restart
//! and the running value stays.

use std::sync::Arc;

use crate::config::{Config, Database};
use crate::ops::metrics::Metrics;
use crate::ops::notify;
use crate::radius::listener::{Live, Server};
use crate::radius::tls::RadsecListener;
use crate::radius::tls_config;

pub struct Reloader {
    /// The config the process started with: what the restart-only keys still run with.
    started: Config,
    server: Arc<Server>,
    radsec: Option<Arc<RadsecListener>>,
}

impl Reloader {
    pub fn new(
        started: Config,
        server: Arc<Server>,
        radsec: Option<Arc<RadsecListener>>,
    ) -> Reloader {
        Reloader {
            started,
            server,
            radsec,
        }
    }

    /// Reloads the file the server started from, and logs and counts the result.
    pub async fn reload(&self) {
        notify::reloading();
        let file = self.started.path.display().to_string();
        tracing::info!(file = %file, "reloading the config");
        let metrics = Metrics::global();
        match self.apply().await {
            Ok(()) => {
                metrics.reloads.with_label_values(&["success"]).inc();
                metrics.last_reload_successful.set(1);
                tracing::info!(file = %file, "config reloaded; new requests use it");
            }
            Err(problems) => {
                metrics.reloads.with_label_values(&["failure"]).inc();
                metrics.last_reload_successful.set(0);
                for problem in &problems {
                    tracing::error!("reload refused: {problem}");
                }
                tracing::error!(file = %file, problems = problems.len(), "config not reloaded; the config in force stays");
            }
        }
        notify::ready();
    }

    async fn apply(&self) -> Result<(), Vec<String>> {
        let path = self.started.path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| vec![format!("the config reader failed: {e}")])?
            .map_err(|e| e.problems)?;
        let file = config.path.display().to_string();
        for key in restart_only_changes(&self.started, &config) {
            tracing::warn!(
                "{file}: {key}: changed; takes effect only after a restart, the running value stays"
            );
        }
        for warning in crate::sms::cost::warnings(&config) {
            tracing::warn!("{warning}");
        }
        let engine = self
            .server
            .live()
            .engine()
            .reconfigured(&config)
            .map_err(|e| vec![format!("{file}: {e}")])?;
        // The certificates are read now, so that one that does not load refuses the reload.
        let tls = match (&self.radsec, &config.radsec) {
            (Some(_), Some(settings)) => {
                Some(tls_config::build(settings, &config.path).map_err(|e| e.problems)?)
            }
            _ => None,
        };
        self.server.swap(Live::new(&config, Arc::new(engine)));
        if let (Some(radsec), Some(tls)) = (&self.radsec, tls) {
            tls_config::log_certificate_expiry(tls.certificate_not_after);
            radsec.reload(&config, tls.server_config);
        }
        Ok(())
    }
}

/// The keys read only at start-up whose value differs between `running` and `new`.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.server, &new.server);
    [
        ("server.listen", a.listen != b.listen),
        (
            "server.database",
            database_changed(&a.database, &b.database),
        ),
        ("server.key_file", a.key_file != b.key_file),
        ("server.node_name", a.node_name != b.node_name),
        ("server.max_in_flight", a.max_in_flight != b.max_in_flight),
        ("server.dedup_window", a.dedup_window != b.dedup_window),
        (
            "server.dedup_max_bytes",
            a.dedup_max_bytes != b.dedup_max_bytes,
        ),
        ("server.log_level", a.log_level != b.log_level),
        ("server.log_format", a.log_format != b.log_format),
        (
            "limits.pin_queue",
            running.limits.pin_queue != new.limits.pin_queue,
        ),
        ("audit.keep", running.audit.keep != new.audit.keep),
        ("metrics.listen", running.metrics != new.metrics),
        (
            "radsec (turned on or off)",
            running.radsec.is_some() != new.radsec.is_some(),
        ),
        (
            "radsec.listen",
            running.radsec.as_ref().map(|r| &r.listen) != new.radsec.as_ref().map(|r| &r.listen),
        ),
        (
            "radsec.max_connections",
            running.radsec.as_ref().map(|r| r.max_connections)
                != new.radsec.as_ref().map(|r| r.max_connections),
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Whether the database, or how it is reached, differs.
fn database_changed(a: &Database, b: &Database) -> bool {
    match (a, b) {
        (Database::Sqlite(a), Database::Sqlite(b)) => a != b,
        (Database::Postgres(a), Database::Postgres(b)) => {
            a.url.expose() != b.url.expose()
                || a.password.as_ref().map(|p| p.expose())
                    != b.password.as_ref().map(|p| p.expose())
                || a.pool != b.pool
                || a.timeout != b.timeout
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        Config::from_toml(text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn listen_and_database_changes_are_named_as_needing_a_restart() {
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml"))
                .unwrap();
        let running = load(&example);
        assert!(restart_only_changes(&running, &load(&example)).is_empty());
        let moved = example
            .replacen("127.0.0.1:1812", "127.0.0.1:1813", 1)
            .replacen("var/otpgate.db", "var/other.db", 1);
        assert_ne!(moved, example);
        assert_eq!(
            restart_only_changes(&running, &load(&moved)),
            ["server.listen", "server.database"]
        );
    }
}
