//! The `otpgate` commands (DESIGN section 7). Each command lives in its own file; this one
//! holds the clap definitions and the shared helpers that open the config and the store.
//! Errors are `anyhow` with context, printed once by `main`.

mod audit;
mod check;
mod directory;
mod gateway;
mod init;
mod output;
mod serve;
mod store;
mod token;
mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};

use crate::auth::keys::Keys;
use crate::config::{Config, Database, EventKind, PostgresConfig};
use crate::events::{Event, Notifier};
use crate::phone::Phone;
use crate::sms::Gateways;
use crate::store::postgres::{KeyCheck, PgOptions};
use crate::store::{PostgresStore, SqliteStore, Store, StoreThread};

#[derive(Debug, Parser)]
#[command(
    name = "otpgate",
    version,
    about = "RADIUS server with a second factor by SMS"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "etc/otpgate.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the RADIUS server.
    Serve,
    /// Create the database and the key file.
    Init,
    /// Check the configuration and exit.
    CheckConfig,
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage SMS tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Work with SMS gateways.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Show the audit trail, newest first.
    Audit(audit::AuditArgs),
    /// Work with the store itself.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve => serve::run(&cli.config),
        Command::Init => init::run(&cli.config),
        Command::CheckConfig => check::run(&cli.config),
        Command::User(command) => user::run(&cli.config, command),
        Command::Token(command) => token::run(&cli.config, command),
        Command::Gateway(command) => gateway::run(&cli.config, command),
        Command::Audit(args) => audit::run(&cli.config, args),
        Command::Store(command) => store::run(&cli.config, command),
    }
}

/// Loads and checks the config.
fn load_config(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

/// The config, the store and the keys, creating database (or schema) and key file if
/// missing. On PostgreSQL the key file's fingerprint is recorded at the first start, and a
/// node with another key refuses to run: it would seal and pepper unlike the others.
fn open(path: &Path) -> Result<(Config, Arc<dyn Store>, Keys)> {
    let config = load_config(path)?;
    let keys = Keys::load_or_create(&config.server.key_file).context("key file")?;
    let store = open_database(&config, &config.server.database, &keys)?;
    Ok((config, store, keys))
}

/// Opens `database` (creating it or its schema if missing) and, on PostgreSQL, checks that
/// it was set up with `keys`.
fn open_database(config: &Config, database: &Database, keys: &Keys) -> Result<Arc<dyn Store>> {
    let (store, pg) = open_store(config, database)?;
    if let Some(pg) = pg {
        match pg
            .check_key_fingerprint(&key_fingerprint(keys))
            .with_context(|| format!("database {database}"))?
        {
            KeyCheck::Recorded | KeyCheck::Same => {}
            KeyCheck::Other(theirs) => anyhow::bail!(
                "the key file {} (fingerprint {}) is not the one the database {database} was set \
                 up with (fingerprint {theirs}): every node needs the same key; copy the key file \
                 from the first node to this one (mode 0600) and start again",
                config.server.key_file.display(),
                key_fingerprint(keys),
            ),
        }
    }
    Ok(store)
}

/// The store `database` names, and on PostgreSQL the same store as itself.
type Opened = (Arc<dyn Store>, Option<Arc<PostgresStore>>);

fn open_store(config: &Config, database: &Database) -> Result<Opened> {
    match database {
        Database::Sqlite(path) => {
            let store =
                SqliteStore::open(path).with_context(|| format!("database {}", path.display()))?;
            Ok((Arc::new(store), None))
        }
        Database::Postgres(pg) => {
            tracing::info!(database = %pg.masked_url(), pool = pg.pool, node = %config.server.node_name, "opening PostgreSQL");
            let store = Arc::new(
                PostgresStore::open(pg.url.expose(), &pg_options(config, pg))
                    .with_context(|| format!("database {}", pg.masked_url()))?,
            );
            Ok((store.clone(), Some(store)))
        }
    }
}

fn pg_options(config: &Config, pg: &PostgresConfig) -> PgOptions {
    PgOptions {
        password: pg.password.as_ref().map(|p| p.expose().to_string()),
        pool: pg.pool,
        timeout: pg.timeout,
        node: config.server.node_name.clone(),
    }
}

/// A fingerprint of the key file that tells keys apart without revealing them: a MAC under
/// the code key (derived from the key file like every other key) of a fixed message.
fn key_fingerprint(keys: &Keys) -> String {
    let mac = keys.code_mac("\0otpgate key fingerprint", b"v1");
    hex::encode(&mac[..mac.len().min(16)])
}

/// Sends the notifications for an admin action on a token and waits for them. Failures are
/// logged and audited by the notifier; the command itself has succeeded either way.
fn notify(config: &Config, store: &Arc<dyn Store>, kind: EventKind, serial: &str) -> Result<()> {
    // Most setups have no rule for admin actions: then build no gateway and no thread.
    if !crate::config::listens(&config.events, kind) {
        return Ok(());
    }
    let gateways = Gateways::from_config(config).map_err(|e| anyhow!(e))?;
    let store_thread =
        Arc::new(StoreThread::start(store.clone()).context("cannot start the store thread")?);
    let notifier = Notifier::new(config, gateways, store_thread);
    let Some(token) = store.token(serial)? else {
        return Ok(());
    };
    let owner = store.user(&token.user)?;
    let phone = token.phone.clone().or(owner.map(|u| u.phone));
    let event = Event {
        serial: Some(token.serial.clone()),
        client: Some("otpgate-cli".into()),
        failures: Some(token.fail_count),
        owner: phone.and_then(|p| Phone::parse(&p, None).ok()),
        ..Event::new(kind, &token.user)
    };
    crate::logging::init(&config.server.log_level, config.server.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(notifier.notify_and_wait(event));
    Ok(())
}

/// Reads a CSV file with a header into one map per row; `required` columns must exist.
fn read_csv(
    path: &Path,
    required: &[&str],
) -> Result<Vec<std::collections::HashMap<String, String>>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: no header line", path.display()))?
        .clone();
    for column in required {
        if !headers.iter().any(|h| h == *column) {
            anyhow::bail!("{}: the header has no column '{column}'", path.display());
        }
    }
    reader
        .records()
        .enumerate()
        .map(|(line, record)| {
            let record = record.with_context(|| format!("{}:{}", path.display(), line + 2))?;
            Ok(headers
                .iter()
                .map(str::to_string)
                .zip(record.iter().map(str::to_string))
                .collect())
        })
        .collect()
}

/// Unix time in milliseconds.
fn now_ms() -> i64 {
    crate::time::now_ms()
}
