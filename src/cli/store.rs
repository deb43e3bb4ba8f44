//! `otpgate store copy --from A --to B`: copies a whole store, SQLite to PostgreSQL or the
//! other way (`store::copy` says what moves). Run it with otpgate stopped on the source,
//! so that no login changes it half-way.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;

use crate::auth::keys::Keys;
use crate::config::database::{is_url, masked_url};
use crate::config::{Config, Database, PostgresConfig, Secret};

/// Connect and statement timeout of a PostgreSQL end that the config does not describe.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy users, tokens, attributes, open challenges and the audit trail into an empty
    /// store: a SQLite file path or a postgres:// URL on either side.
    Copy {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// The password of a PostgreSQL end whose URL has none (first line of the file);
        /// by default `[server] database_password_file`'s.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

pub fn run(config_path: &Path, command: StoreCommand) -> Result<()> {
    let StoreCommand::Copy {
        from,
        to,
        password_file,
    } = command;
    let config = super::load_config(config_path)?;
    crate::logging::init(&config.server.log_level, config.server.log_format);
    let key_file = &config.server.key_file;
    if !key_file.exists() {
        bail!(
            "the key file {} is missing: store copy needs the key file the source store was set \
             up with (seeds, PIN salts and codes are bound to it)",
            key_file.display()
        );
    }
    let keys = Keys::load_or_create(key_file).context("key file")?;
    let password = match password_file {
        Some(file) => Some(read_password(&file)?),
        None => match &config.server.database {
            Database::Postgres(pg) => pg.password.clone(),
            Database::Sqlite(_) => None,
        },
    };
    let source = database_arg(&config, &from, password.as_ref(), true)?;
    let destination = database_arg(&config, &to, password.as_ref(), false)?;
    if source.to_string() == destination.to_string() {
        bail!("--from and --to name the same store ({source})");
    }
    let from_store = super::open_database(&config, &source, &keys)?;
    let to_store = super::open_database(&config, &destination, &keys)?;
    let copied = crate::store::copy(from_store.as_ref(), to_store.as_ref(), super::now_ms())
        .with_context(|| format!("copying {source} to {destination}"))?;
    println!(
        "copied {} user(s), {} token(s), {} open challenge(s) and {} audit row(s) from {source} to {destination}",
        copied.users, copied.tokens, copied.challenges, copied.audit_rows
    );
    Ok(())
}

/// A store named on the command line, as `[server] database` would name it.
fn database_arg(
    config: &Config,
    text: &str,
    password: Option<&Secret>,
    must_exist: bool,
) -> Result<Database> {
    if !is_url(text) {
        if text.contains("://") {
            bail!("{text}: is neither a file path nor a postgres:// / postgresql:// URL");
        }
        let path = PathBuf::from(text);
        if must_exist && !path.is_file() {
            bail!("{}: no such SQLite database", path.display());
        }
        return Ok(Database::Sqlite(path));
    }
    let parsed: postgres::Config = text
        .parse()
        .map_err(|e| anyhow!("{}: {e}", masked_url(text)))?;
    let timeout = match &config.server.database {
        Database::Postgres(pg) => pg.timeout,
        Database::Sqlite(_) => DEFAULT_TIMEOUT,
    };
    Ok(Database::Postgres(PostgresConfig {
        url: Secret::new(text.to_string()),
        password: parsed
            .get_password()
            .is_none()
            .then(|| password.cloned())
            .flatten(),
        pool: 2,
        timeout,
    }))
}

fn read_password(file: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the password file {}", file.display()))?;
    Ok(Secret::from_file_text(&text))
}
