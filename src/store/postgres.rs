//! The PostgreSQL store, for several otpgate nodes sharing one database: a pool of
//! connections (r2d2) of the synchronous `postgres` client, each with its own cache of
//! prepared statements, and versioned migrations applied at start-up under an advisory lock.
//!
//! Every attack bound is one statement, so one round trip and one transaction that decides
//! with its rows locked: plain SQL (`postgres_statements`) or, for a challenge's start, a
//! plpgsql function (`postgres_bounds`). The login path's calls come in batches
//! (`postgres_login`): the logins, starts and answers that queued beside each other share
//! one statement. The admin's bulk writes are one transaction each. TLS is not supported
//! yet: connect over loopback, a private network or a TLS tunnel (NoTls).

pub use crate::config::database::{is_url, masked_url};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{NoTls, Row, Statement};

use super::postgres_bounds::MIGRATIONS;
use super::postgres_login;
use super::postgres_statements as statements;
use super::{
    Answer, AnswerClaim, AuditRow, ChallengeRow, ChallengeStart, Expected, FailureClaim,
    FailureRules, GatewayStateRow, Limit, LoginAsk, LoginStart, OpenChallenge, Resend, StartAsk,
    Started, Store, StoreError, StoreResult, TokenRow, Unusable, UserRow,
};

/// The advisory lock key that migrations run under, the same on every node.
const MIGRATION_LOCK: i64 = 0x6f74_7067_6174_6501;
/// The advisory lock key the periodic purges run under, so that one node at a time purges.
pub(crate) const PURGE_LOCK: i64 = 0x6f74_7067_6174_6502;
/// How long a new challenge may wait for its code MAC (the second round trip of
/// `open_challenge`) before the next PIN request takes it for a dead node's and ends it.
pub(super) const MAC_GRACE_MS: i64 = 60_000;

/// How a node connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Overrides the URL's password (`database_password_file`).
    pub password: Option<String>,
    /// Connections in the pool: the store threads' concurrency.
    pub pool: u32,
    /// Connect timeout, pool checkout timeout and statement timeout.
    pub timeout: Duration,
    /// This node's name, kept with its audit rows and breaker states.
    pub node: String,
}

/// One pooled connection and the statements prepared on it.
pub struct PgConnection {
    client: postgres::Client,
    statements: HashMap<&'static str, Statement>,
    /// To connect again when the first statement of a call finds the connection lost.
    config: postgres::Config,
    /// No statement of the current call has run yet (set at each checkout).
    first: bool,
}

/// Whether `e` says that the connection was lost, not that the statement failed: the client
/// closed, or the server shutting down or restarting.
fn connection_lost(e: &postgres::Error, client: &postgres::Client) -> bool {
    client.is_closed()
        || e.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        })
}

impl PgConnection {
    /// The statement for `sql`, prepared on first use on this connection (one round trip,
    /// once per connection).
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs `sql` with `run`. When it is the call's first statement and the connection
    /// turns out lost (PostgreSQL restarted since the connection was last used: the pool
    /// cannot tell without a round trip per checkout), connects again and runs it once more.
    /// Every statement here is a transaction of its own, so a lost connection means it did
    /// not commit, unless the server went away between its commit and the reply.
    fn run<T>(
        &mut self,
        sql: &'static str,
        run: impl Fn(&mut postgres::Client, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let first = std::mem::replace(&mut self.first, false);
        let result = self
            .prepared(sql)
            .and_then(|statement| run(&mut self.client, &statement));
        match result {
            Err(e) if first && connection_lost(&e, &self.client) => {
                tracing::warn!(error = %describe(&e), "PostgreSQL connection lost: connecting again");
                self.client = self.config.connect(NoTls)?;
                self.statements.clear();
                let statement = self.prepared(sql)?;
                run(&mut self.client, &statement)
            }
            other => other,
        }
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        self.run(sql, |client, statement| client.query(statement, params))
    }

    fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        self.run(sql, |client, statement| client.query_one(statement, params))
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        self.run(sql, |client, statement| client.query_opt(statement, params))
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        self.run(sql, |client, statement| client.execute(statement, params))
    }
}

pub struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
            config: self.config.clone(),
            first: true,
        })
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client.is_closed()
    }
}

pub struct PostgresStore {
    /// Always Some; taken only by `Drop`.
    pool: Option<r2d2::Pool<Manager>>,
    node: String,
    pool_size: u32,
    /// How often `start_challenge` found the counter moved by another request and took the
    /// two-step path.
    counter_moved: std::sync::atomic::AtomicU64,
}

/// The hosts a config tries, for error messages.
fn hosts(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A postgres error with the server's message, which `Display` alone leaves out.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Database(describe(&e))
    }
}

fn conflict_or(e: postgres::Error, what: String) -> StoreError {
    match e.code() {
        Some(code)
            if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION =>
        {
            StoreError::Conflict(what)
        }
        _ => e.into(),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (libpq format, several hosts allowed), brings its
    /// schema up to date under an advisory lock, and refuses a schema newer than this
    /// binary. Runs on a thread of its own, so that it may be called from async code (the
    /// synchronous client runs a runtime of its own per connection).
    pub fn open(url: &str, options: &PgOptions) -> StoreResult<PostgresStore> {
        let (url, options) = (url.to_string(), options.clone());
        std::thread::scope(|scope| {
            scope
                .spawn(|| Self::open_here(&url, &options))
                .join()
                .unwrap_or_else(|_| {
                    Err(StoreError::Database("opening the database panicked".into()))
                })
        })
    }

    /// Connects without changing anything, for `check-config`: the server's version and the
    /// schema's, or an error that names the hosts and the problem.
    pub fn probe(url: &str, options: &PgOptions) -> StoreResult<String> {
        off_runtime(|| {
            let (config, where_) = Self::client_config(url, options)?;
            let mut client = config.connect(NoTls).map_err(|e| {
                StoreError::Database(format!(
                    "cannot connect to PostgreSQL at {where_}: {}",
                    describe(&e)
                ))
            })?;
            let row = client.query_one(
                        "SELECT current_setting('server_version'),
                                (SELECT version FROM otpgate_schema WHERE to_regclass('otpgate_schema') IS NOT NULL)",
                        &[],
                    );
            // The schema table may not exist yet: ask again without it.
            let (server, schema) = match row {
                Ok(row) => (row.get::<_, String>(0), row.get::<_, Option<i64>>(1)),
                Err(_) => {
                    let row = client.query_one("SELECT current_setting('server_version')", &[])?;
                    (row.get(0), None)
                }
            };
            let schema = match schema {
                Some(v) if v as usize > MIGRATIONS.len() => format!(
                    "schema version {v}, newer than this otpgate knows ({}): upgrade otpgate",
                    MIGRATIONS.len()
                ),
                Some(v) => format!("schema version {v} of {}", MIGRATIONS.len()),
                None => "no otpgate schema yet (created at the first start)".into(),
            };
            Ok(format!("PostgreSQL {server} at {where_}, {schema}"))
        })
    }

    /// The client config for `url` with the node's password and timeouts, and its hosts.
    fn client_config(url: &str, options: &PgOptions) -> StoreResult<(postgres::Config, String)> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Database(format!("{}: not a PostgreSQL URL: {e}", masked_url(url)))
        })?;
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        if config.get_application_name().is_none() {
            config.application_name(&format!("otpgate {}", options.node));
        }
        let timeout_ms = options.timeout.as_millis().max(1);
        let mut server_options = config.get_options().unwrap_or_default().to_string();
        server_options.push_str(&format!(" -c statement_timeout={timeout_ms}"));
        // Every statement otpgate prepares looks rows up by key, so one plan fits all values;
        // left to choose, PostgreSQL planned those with array parameters again at every call
        // (pg_stat_statements: 140 us of planning per login, a tenth of its CPU).
        server_options.push_str(" -c plan_cache_mode=force_generic_plan");
        // A generic plan is made once per connection, at first use: on a fresh database the
        // tables are empty then, and PostgreSQL would scan them whole, a plan kept as they
        // grow (a batch of answers scanned every challenge). Every statement here has an
        // index to take; a statement without one (an admin's listing) still scans. A scan
        // kept that way counts as costly enough for JIT compiling (half a second a
        // statement), which a statement of a few rows never gains from.
        server_options.push_str(" -c enable_seqscan=off -c jit=off");
        config.options(server_options.trim());
        config.connect_timeout(options.timeout);
        let where_ = hosts(&config);
        Ok((config, where_))
    }

    fn open_here(url: &str, options: &PgOptions) -> StoreResult<PostgresStore> {
        let (config, where_) = Self::client_config(url, options)?;
        let unreachable = |e: &postgres::Error| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL at {where_}: {}",
                describe(e)
            ))
        };
        let mut first = config.connect(NoTls).map_err(|e| unreachable(&e))?;
        migrate(&mut first)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool.max(1))
            .min_idle(Some(0))
            // A broken connection shows at its next use, which then fails once; checking every
            // checkout would cost a round trip per store call.
            .test_on_check_out(false)
            .connection_timeout(options.timeout)
            .build_unchecked(Manager { config });
        Ok(PostgresStore {
            pool: Some(pool),
            node: options.node.clone(),
            pool_size: options.pool.max(1),
            counter_moved: Default::default(),
        })
    }

    /// How often a new challenge found its token's counter moved since the login read it (by
    /// another node, or a concurrent login on this one), so took two round trips.
    pub fn counter_moved(&self) -> u64 {
        self.counter_moved
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a start that found its token's counter moved since the login read it, and
    /// says so.
    pub(super) fn counter_moved_since_login(&self, serial: &str, expected: u64) {
        self.counter_moved
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(serial = %serial, expected, "the token's counter moved since the login read it: opening the challenge in two steps");
    }

    /// How many connections, so store threads, this store is meant to be used with.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    pub(super) fn conn(&self) -> StoreResult<r2d2::PooledConnection<Manager>> {
        self.pool
            .as_ref()
            .expect("the pool is taken only on drop")
            .get()
            .map(|mut conn| {
                conn.first = true;
                conn
            })
            .map_err(|e| StoreError::Database(format!("no PostgreSQL connection: {e}")))
    }

    /// Records `fingerprint` of the key file at the first start; afterwards, an error unless
    /// it is the same: every node must seal and pepper with one key.
    pub fn check_key_fingerprint(&self, fingerprint: &str) -> StoreResult<KeyCheck> {
        off_runtime(|| self.check_key_fingerprint_here(fingerprint))
    }

    fn check_key_fingerprint_here(&self, fingerprint: &str) -> StoreResult<KeyCheck> {
        let mut conn = self.conn()?;
        let row = conn.query_one(
            "WITH new AS (INSERT INTO otpgate_meta (key, value) VALUES ('key_fingerprint', $1)
                          ON CONFLICT (key) DO NOTHING RETURNING value)
             SELECT (SELECT value FROM new), (SELECT value FROM otpgate_meta WHERE key = 'key_fingerprint')",
            &[&fingerprint],
        )?;
        let stored_now: Option<String> = row.get(0);
        if stored_now.is_some() {
            return Ok(KeyCheck::Recorded);
        }
        // Neither inserted nor seen: another node's insert committed while this statement
        // waited on it, after this statement's snapshot. A new statement sees it.
        let stored: Option<String> = match row.get(1) {
            Some(stored) => Some(stored),
            None => conn
                .query_opt(
                    "SELECT value FROM otpgate_meta WHERE key = 'key_fingerprint'",
                    &[],
                )?
                .map(|r| r.get(0)),
        };
        match stored {
            Some(existing) if existing == fingerprint => Ok(KeyCheck::Same),
            Some(existing) => Ok(KeyCheck::Other(existing)),
            None => Err(StoreError::Database(
                "the key fingerprint was neither recorded nor found".into(),
            )),
        }
    }
}

/// Runs `work` where the synchronous client may block: the client runs a runtime of its
/// own per connection, which tokio refuses inside another's context (the server opens the
/// store from async code). Store calls through `StoreThread` run on plain threads already.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl Drop for PostgresStore {
    /// Closing a connection blocks too: close them off the runtime.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            off_runtime(move || drop(pool));
        }
    }
}

/// What `check_key_fingerprint` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// First start: this key's fingerprint is now the deployment's.
    Recorded,
    Same,
    /// The database was set up with another key, whose fingerprint this is.
    Other(String),
}

/// Applies the migrations this database lacks, one transaction each, under an advisory lock
/// so that nodes starting at once take turns; refuses a schema newer than this binary.
fn migrate(client: &mut postgres::Client) -> StoreResult<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = migrate_locked(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

fn migrate_locked(client: &mut postgres::Client) -> StoreResult<()> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS otpgate_schema (version bigint NOT NULL);
         INSERT INTO otpgate_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM otpgate_schema);",
    )?;
    let version: i64 = client
        .query_one("SELECT version FROM otpgate_schema", &[])?
        .get(0);
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "schema version {version} is newer than this otpgate knows ({}); upgrade otpgate",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let mut tx = client.transaction()?;
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Database(format!("schema step {}: {}", step + 1, describe(&e)))
        })?;
        tx.execute(
            "UPDATE otpgate_schema SET version = $1",
            &[&((step + 1) as i64)],
        )?;
        tx.commit()?;
    }
    Ok(())
}

fn token_from(row: &Row) -> TokenRow {
    token_at(row, 0)
}

pub(super) fn token_at(row: &Row, at: usize) -> TokenRow {
    TokenRow {
        serial: row.get(at),
        user: row.get(at + 1),
        phone: row.get(at + 2),
        pin_hash: row.get(at + 3),
        sealed_seed: row.get(at + 4),
        counter: row.get::<_, i64>(at + 5).max(0) as u64,
        otp_length: to_u32(row.get(at + 6)),
        fail_count: to_u32(row.get(at + 7)),
        locked_at: row.get(at + 8),
        disabled: row.get(at + 9),
        gateway: row.get(at + 10),
        created: row.get(at + 11),
    }
}

pub(super) fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The one result of a batch of one.
fn only<T>(results: Vec<StoreResult<T>>) -> StoreResult<T> {
    results
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(StoreError::Database("a batch of one gave no result".into())))
}

fn user_from(row: &Row) -> UserRow {
    UserRow {
        name: row.get(0),
        phone: row.get(1),
        created: row.get(2),
        group: row.get(3),
    }
}

fn audit_from(row: &Row) -> AuditRow {
    AuditRow {
        time: row.get(0),
        client: row.get(1),
        nas_ip: row.get(2),
        nas_identifier: row.get(3),
        calling_station_id: row.get(4),
        user: row.get(5),
        serial: row.get(6),
        outcome: row.get(7),
        reason: row.get(8),
        phone_masked: row.get(9),
        gateway: row.get(10),
        duration_ms: row.get::<_, i64>(11).max(0) as u64,
        attributes: row
            .get::<_, Option<String>>(12)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
    }
}

const INSERT_TOKEN: &str = "INSERT INTO tokens (serial, user_name, phone, pin_hash, sealed_seed, counter,
                                         otp_length, fail_count, locked_at, disabled, gateway, created)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Runs `insert` (`INSERT_TOKEN`, prepared once per transaction) for `t`.
fn insert_token(
    tx: &mut postgres::Transaction<'_>,
    insert: &Statement,
    t: &TokenRow,
) -> StoreResult<()> {
    tx.execute(
        insert,
        &[
            &t.serial,
            &t.user,
            &t.phone,
            &t.pin_hash,
            &t.sealed_seed,
            &(t.counter as i64),
            &i64::from(t.otp_length),
            &i64::from(t.fail_count),
            &t.locked_at,
            &t.disabled,
            &t.gateway,
            &t.created,
        ],
    )
    .map_err(|e| conflict_or(e, format!("token '{}' (or its user is missing)", t.serial)))?;
    Ok(())
}

const INSERT_AUDIT: &str =
    "INSERT INTO audit (time, client, nas_ip, nas_identifier, calling_station_id, user_name,
                        serial, outcome, reason, phone_masked, gateway, duration_ms, attributes, node)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// `text` as PostgreSQL's text can hold it: NUL, which a request's values may carry (valid
/// UTF-8 from a NAS), as U+FFFD. Left in, it would fail the insert of every row written with
/// it in one transaction.
fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn pg_optional_text(text: &Option<String>) -> Option<Cow<'_, str>> {
    text.as_deref().map(pg_text)
}

/// Calls `f` with the parameters of `INSERT_AUDIT` for `a`, written by `node`.
fn with_audit_params<T>(
    a: &AuditRow,
    node: &str,
    f: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T,
) -> T {
    let attributes = (!a.attributes.is_empty())
        .then(|| serde_json::to_string(&a.attributes).unwrap_or_default());
    f(&[
        &a.time,
        &pg_text(&a.client),
        &pg_optional_text(&a.nas_ip),
        &pg_optional_text(&a.nas_identifier),
        &pg_optional_text(&a.calling_station_id),
        &pg_text(&a.user),
        &pg_optional_text(&a.serial),
        &pg_text(&a.outcome),
        &pg_text(&a.reason),
        &pg_optional_text(&a.phone_masked),
        &pg_optional_text(&a.gateway),
        &(a.duration_ms as i64),
        // JSON writes NUL as an escape: nothing to replace.
        &attributes,
        &node,
    ])
}

pub(super) fn claim_from(code: &str) -> FailureClaim {
    match code {
        "claimed" => FailureClaim::Claimed {
            lock_cleared: false,
        },
        "claimed+cleared" => FailureClaim::Claimed { lock_cleared: true },
        "usable" => FailureClaim::Usable {
            lock_cleared: false,
        },
        "usable+cleared" => FailureClaim::Usable { lock_cleared: true },
        "busy" => FailureClaim::Busy,
        "disabled" => FailureClaim::Refused(Unusable::Disabled),
        "locked" => FailureClaim::Refused(Unusable::Locked),
        _ => FailureClaim::Missing,
    }
}

fn limit_from(key: Option<String>) -> StoreResult<Limit> {
    let key = key.unwrap_or_default();
    Limit::ALL
        .into_iter()
        .find(|l| l.key() == key)
        .ok_or_else(|| StoreError::Database(format!("unknown SMS limit '{key}'")))
}

/// What `otpgate_open_challenge` or `otpgate_start_challenge` returned; a new challenge
/// without its MAC gets it stored here (the second round trip).
pub(super) fn started_from(
    conn: &mut PgConnection,
    row: &Row,
    start: &ChallengeStart<'_>,
    code_mac: &dyn Fn(u64) -> Vec<u8>,
) -> StoreResult<Started> {
    let kind: String = row.get(0);
    let open = || OpenChallenge {
        transaction_id: row.get::<_, Option<String>>(1).unwrap_or_default(),
        counter: row.get::<_, Option<i64>>(2).unwrap_or(0).max(0) as u64,
        expires: row.get::<_, Option<i64>>(3).unwrap_or(0),
    };
    Ok(match kind.as_str() {
        "new" => {
            let open = open();
            let mac = code_mac(open.counter);
            let stored = conn.execute(
                "UPDATE challenges SET otp_mac = $2 WHERE transaction_id = $1 AND otp_mac IS NULL",
                &[&open.transaction_id, &mac],
            );
            if let Err(e) = stored {
                // Best effort: a challenge left without its MAC would only wait to be
                // taken for a dead node's.
                let _ = conn.execute(
                    "DELETE FROM challenges WHERE transaction_id = $1 AND otp_mac IS NULL",
                    &[&open.transaction_id],
                );
                return Err(e.into());
            }
            Started::New(open)
        }
        // New, with the MAC stored in the same round trip (`otpgate_start_challenge`).
        "opened" => Started::New(open()),
        "too_soon" => Started::Again(open(), Resend::TooSoon),
        "claimed" => Started::Again(open(), Resend::Claimed),
        "again_limited" => Started::Again(open(), Resend::Limited(limit_from(row.get(4))?)),
        "limited" => Started::Limited(limit_from(row.get(4))?),
        _ => return Err(StoreError::NotFound(format!("token '{}'", start.serial))),
    })
}

impl Store for PostgresStore {
    fn concurrency(&self) -> usize {
        self.pool_size as usize
    }

    fn batch_limit(&self) -> usize {
        postgres_login::MAX_BATCH
    }

    /// `pg_counter_moved=N`: new challenges that took two round trips because their token's
    /// counter moved since the login read it.
    fn counters(&self) -> String {
        match self.counter_moved() {
            0 => String::new(),
            n => format!("pg_counter_moved={n}"),
        }
    }

    fn add_user(&self, user: &UserRow) -> StoreResult<()> {
        self.add_users(std::slice::from_ref(user))
    }

    fn add_users(&self, users: &[UserRow]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        let insert = tx.prepare(
            "INSERT INTO users (name, phone, created, user_group) VALUES ($1, $2, $3, $4)",
        )?;
        for user in users {
            tx.execute(
                &insert,
                &[&user.name, &user.phone, &user.created, &user.group],
            )
            .map_err(|e| conflict_or(e, format!("user '{}'", user.name)))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn user(&self, name: &str) -> StoreResult<Option<UserRow>> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT name, phone, created, user_group FROM users WHERE name = $1",
                &[&name],
            )?
            .map(|r| user_from(&r)))
    }

    fn users(&self) -> StoreResult<Vec<UserRow>> {
        Ok(self
            .conn()?
            .query(
                "SELECT name, phone, created, user_group FROM users ORDER BY name",
                &[],
            )?
            .iter()
            .map(user_from)
            .collect())
    }

    fn delete_user(&self, name: &str) -> StoreResult<bool> {
        // Tokens and their challenges go with the user (ON DELETE CASCADE), token rows locked
        // before their challenges, as everywhere.
        Ok(self
            .conn()?
            .execute("DELETE FROM users WHERE name = $1", &[&name])?
            > 0)
    }

    fn user_attributes(&self, name: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .conn()?
            .query(
                "SELECT attribute FROM user_attributes WHERE user_name = $1 ORDER BY position",
                &[&name],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn set_user_attributes(&self, name: &str, attributes: &[String]) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        let exists = tx
            .query_opt("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&name])?
            .is_some();
        if !exists {
            return Ok(false);
        }
        tx.execute("DELETE FROM user_attributes WHERE user_name = $1", &[&name])?;
        let insert = tx.prepare(
            "INSERT INTO user_attributes (user_name, position, attribute) VALUES ($1, $2, $3)",
        )?;
        for (position, attribute) in attributes.iter().enumerate() {
            tx.execute(&insert, &[&name, &(position as i64), attribute])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn add_token(&self, token: &TokenRow) -> StoreResult<()> {
        self.add_tokens(std::slice::from_ref(token))
    }

    fn add_tokens(&self, tokens: &[TokenRow]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        let insert = tx.prepare(INSERT_TOKEN)?;
        for t in tokens {
            insert_token(&mut tx, &insert, t)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The user row locked first, so that a second first login waits for this one and then
    /// sees its token (each statement of a READ COMMITTED transaction reads anew).
    fn enroll_first(&self, user: &UserRow, token: &TokenRow) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        tx.execute(
            "INSERT INTO users (name, phone, created, user_group) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
            &[&user.name, &user.phone, &user.created, &user.group],
        )?;
        tx.execute(
            "SELECT 1 FROM users WHERE name = $1 FOR UPDATE",
            &[&user.name],
        )?;
        let has_token: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE user_name = $1)",
                &[&user.name],
            )?
            .get(0);
        if has_token {
            return Ok(false);
        }
        let insert = tx.prepare(INSERT_TOKEN)?;
        insert_token(&mut tx, &insert, token)?;
        tx.commit()?;
        Ok(true)
    }

    fn token(&self, serial: &str) -> StoreResult<Option<TokenRow>> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT serial, user_name, phone, pin_hash, sealed_seed, counter, otp_length, \
                 fail_count, locked_at, disabled, gateway, created FROM tokens WHERE serial = $1",
                &[&serial],
            )?
            .map(|r| token_from(&r)))
    }

    fn tokens(&self, user: Option<&str>) -> StoreResult<Vec<TokenRow>> {
        Ok(self
            .conn()?
            .query(
                "SELECT serial, user_name, phone, pin_hash, sealed_seed, counter, otp_length, \
                 fail_count, locked_at, disabled, gateway, created FROM tokens
                 WHERE $1::text IS NULL OR user_name = $1 ORDER BY serial",
                &[&user],
            )?
            .iter()
            .map(token_from)
            .collect())
    }

    fn login_view(&self, name: &str) -> StoreResult<Option<(UserRow, Vec<TokenRow>)>> {
        // One round trip: the user joined with their tokens (none: one row of NULL tokens).
        let rows = self.conn()?.query(
            "SELECT u.name, u.phone, u.created, u.user_group,
                    t.serial, t.user_name, t.phone, t.pin_hash, t.sealed_seed, t.counter,
                    t.otp_length, t.fail_count, t.locked_at, t.disabled, t.gateway, t.created
             FROM users u LEFT JOIN tokens t ON t.user_name = u.name
             WHERE u.name = $1 ORDER BY t.serial",
            &[&name],
        )?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let user = user_from(first);
        let tokens = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(4).is_some())
            .map(|r| token_at(r, 4))
            .collect();
        Ok(Some((user, tokens)))
    }

    fn set_disabled(&self, serial: &str, disabled: bool) -> StoreResult<bool> {
        let row = self.conn()?.query_one(
            "WITH t AS (UPDATE tokens SET disabled = $2 WHERE serial = $1 RETURNING serial),
                  c AS (UPDATE challenges SET used = true
                        WHERE $2 AND serial IN (SELECT serial FROM t) AND NOT used)
             SELECT count(*) FROM t",
            &[&serial, &disabled],
        )?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    fn unlock(&self, serial: &str) -> StoreResult<bool> {
        Ok(self.conn()?.execute(
            "UPDATE tokens SET fail_count = 0, pending = 0, locked_at = NULL WHERE serial = $1",
            &[&serial],
        )? > 0)
    }

    fn delete_token(&self, serial: &str) -> StoreResult<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM tokens WHERE serial = $1", &[&serial])?
            > 0)
    }

    fn set_pin_hash(&self, serial: &str, pin_hash: &str) -> StoreResult<bool> {
        let row = self.conn()?.query_one(
            "WITH t AS (UPDATE tokens SET pin_hash = $2 WHERE serial = $1 RETURNING serial),
                  c AS (UPDATE challenges SET used = true
                        WHERE serial IN (SELECT serial FROM t) AND NOT used)
             SELECT count(*) FROM t",
            &[&serial, &pin_hash],
        )?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    fn otp_lengths(&self) -> StoreResult<Vec<u32>> {
        let row = self.conn()?.query_one(statements::OTP_LENGTHS, &[])?;
        Ok(row.get::<_, Vec<i64>>(0).into_iter().map(to_u32).collect())
    }

    fn claim_failures(
        &self,
        serials: &[String],
        now: i64,
        rules: &FailureRules,
    ) -> StoreResult<Vec<FailureClaim>> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let row = self.conn()?.query_one(
            statements::CLAIM_FAILURES,
            &[
                &serials,
                &now,
                &i64::from(rules.max_failures),
                &rules.clear_after_ms,
                &rules.count,
                &rules.claim_ttl_ms,
            ],
        )?;
        let codes: Vec<String> = row.get(0);
        Ok(codes.iter().map(|c| claim_from(c)).collect())
    }

    /// One round trip: `statements::BEGIN_LOGINS`.
    fn begin_login(&self, user: &str, now: i64, rules: &FailureRules) -> StoreResult<LoginStart> {
        let ask = LoginAsk {
            user,
            now,
            rules: *rules,
        };
        only(self.begin_logins(&[ask]))
    }

    fn begin_logins(&self, asks: &[LoginAsk<'_>]) -> Vec<StoreResult<LoginStart>> {
        postgres_login::begin_logins(self, asks)
    }

    fn refund_failures(&self, serials: &[String]) -> StoreResult<()> {
        if serials.is_empty() {
            return Ok(());
        }
        // A serial named twice is refunded twice, as on SQLite.
        self.conn()?.execute(
            "UPDATE tokens t SET fail_count = GREATEST(t.fail_count - r.n, 0),
                                 pending = GREATEST(t.pending - r.n, 0)
             FROM (SELECT s, count(*) AS n FROM unnest($1::text[]) AS s GROUP BY s) r
             WHERE t.serial = r.s",
            &[&serials],
        )?;
        Ok(())
    }

    fn settle_failures(
        &self,
        serials: &[String],
        now: i64,
        max_failures: u32,
    ) -> StoreResult<Vec<String>> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let row = self.conn()?.query_one(
            statements::SETTLE_FAILURES,
            &[&serials, &now, &i64::from(max_failures)],
        )?;
        Ok(row.get(0))
    }

    /// Two round trips for a new challenge, one otherwise: the code MAC depends on the
    /// counter the first one takes, and only otpgate can compute it (the seed is sealed). In
    /// between, the new challenge has no MAC: no code can match it, and nobody can have
    /// been sent one yet.
    fn open_challenge(
        &self,
        start: &ChallengeStart<'_>,
        code_mac: &dyn Fn(u64) -> Vec<u8>,
    ) -> StoreResult<Started> {
        let caps: Vec<i64> = Limit::ALL
            .iter()
            .map(|l| i64::from(l.cap(&start.caps).0))
            .collect();
        let mut conn = self.conn()?;
        let row = conn.query_one(
            "SELECT r_kind, r_transaction_id, r_counter, r_expires, r_limit
             FROM otpgate_open_challenge($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &start.transaction_id,
                &start.serial,
                &start.user,
                &start.client,
                &start.phone,
                &start.now,
                &start.expires,
                &start.resend_interval_ms,
                &caps,
                &MAC_GRACE_MS,
            ],
        )?;
        started_from(&mut conn, &row, start, code_mac)
    }

    /// One round trip when the token's counter is still the one the login read (the MAC
    /// comes along), else the refund in it and `open_challenge`'s two.
    fn start_challenge(
        &self,
        start: &ChallengeStart<'_>,
        refund: &[String],
        expected: &Expected<'_>,
        code_mac: &dyn Fn(u64) -> Vec<u8>,
    ) -> StoreResult<Started> {
        let ask = StartAsk {
            start: start.clone(),
            refund,
            expected: *expected,
            code_mac,
        };
        only(self.start_challenges(&[ask]))
    }

    fn start_challenges(&self, asks: &[StartAsk<'_>]) -> Vec<StoreResult<Started>> {
        postgres_login::start_challenges(self, asks)
    }

    fn answer_challenge(&self, claim: &AnswerClaim<'_>) -> StoreResult<Answer> {
        only(self.answer_challenges(std::slice::from_ref(claim)))
    }

    fn answer_challenges(&self, claims: &[AnswerClaim<'_>]) -> Vec<StoreResult<Answer>> {
        postgres_login::answer_challenges(self, claims)
    }

    fn delete_challenge(&self, transaction_id: &str) -> StoreResult<()> {
        self.conn()?.execute(
            "DELETE FROM challenges WHERE transaction_id = $1",
            &[&transaction_id],
        )?;
        Ok(())
    }

    /// Under the purge lock; 0 when another node holds it (it is purging).
    fn purge_challenges(&self, before: i64) -> StoreResult<usize> {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let mut conn = self.conn()?;
        under_purge_lock(&mut conn, "challenges", |conn| {
            conn.execute(
                "DELETE FROM sms_sends WHERE time < $1",
                &[&before.saturating_sub(DAY_MS)],
            )?;
            // Rows another transaction holds are left for the next purge: a purge that
            // waited for them could deadlock with a batch of answers, which holds some
            // challenges while it waits for others.
            Ok(conn.execute(
                "DELETE FROM challenges WHERE transaction_id IN (
                     SELECT transaction_id FROM challenges WHERE expires < $1
                     FOR UPDATE SKIP LOCKED)",
                &[&before],
            )? as usize)
        })
    }

    fn open_challenges(&self, now: i64) -> StoreResult<u64> {
        let mut conn = self.conn()?;
        let row = conn.query_one(
            "SELECT count(*) FROM challenges WHERE NOT used AND expires > $1",
            &[&now],
        )?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn append_audit(&self, a: &AuditRow) -> StoreResult<()> {
        let mut conn = self.conn()?;
        with_audit_params(a, &self.node, |params| conn.execute(INSERT_AUDIT, params))?;
        Ok(())
    }

    /// One statement (so one round trip and one commit) for the whole batch: the columns
    /// as arrays, zipped back into rows by `unnest`.
    fn add_audit_rows(&self, rows: &[AuditRow]) -> StoreResult<()> {
        let column = |f: &dyn Fn(&AuditRow) -> Option<&str>| -> Vec<Option<Cow<'_, str>>> {
            rows.iter().map(|r| f(r).map(pg_text)).collect()
        };
        let times: Vec<i64> = rows.iter().map(|r| r.time).collect();
        let durations: Vec<i64> = rows.iter().map(|r| r.duration_ms as i64).collect();
        let clients = column(&|r| Some(r.client.as_str()));
        let nas_ips = column(&|r| r.nas_ip.as_deref());
        let nas_identifiers = column(&|r| r.nas_identifier.as_deref());
        let stations = column(&|r| r.calling_station_id.as_deref());
        let users = column(&|r| Some(r.user.as_str()));
        let serials = column(&|r| r.serial.as_deref());
        let outcomes = column(&|r| Some(r.outcome.as_str()));
        let reasons = column(&|r| Some(r.reason.as_str()));
        let phones = column(&|r| r.phone_masked.as_deref());
        let gateways = column(&|r| r.gateway.as_deref());
        // JSON writes NUL as an escape: nothing to replace.
        let attributes: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                (!r.attributes.is_empty())
                    .then(|| serde_json::to_string(&r.attributes).unwrap_or_default())
            })
            .collect();
        self.conn()?.execute(
            "INSERT INTO audit (time, client, nas_ip, nas_identifier, calling_station_id, user_name,
                                serial, outcome, reason, phone_masked, gateway, duration_ms,
                                attributes, node)
             SELECT t, c, ip, id, st, u, se, o, r, ph, g, d, a, $14
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::bigint[], $13::text[])
                  AS x(t, c, ip, id, st, u, se, o, r, ph, g, d, a)",
            &[
                &times,
                &clients,
                &nas_ips,
                &nas_identifiers,
                &stations,
                &users,
                &serials,
                &outcomes,
                &reasons,
                &phones,
                &gateways,
                &durations,
                &attributes,
                &self.node,
            ],
        )?;
        Ok(())
    }

    fn audit_page(&self, after: i64, limit: usize) -> StoreResult<Vec<(i64, AuditRow)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .conn()?
            .query(
                "SELECT time, client, nas_ip, nas_identifier, calling_station_id, user_name, serial,
                        outcome, reason, phone_masked, gateway, duration_ms, attributes, id
                 FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
            )?
            .iter()
            .map(|r| (r.get(13), audit_from(r)))
            .collect())
    }

    fn open_challenge_rows(&self, now: i64) -> StoreResult<Vec<ChallengeRow>> {
        Ok(self
            .conn()?
            .query(
                "SELECT transaction_id, serial, user_name, client, counter, created, expires, attempts,
                        sends, last_sent, otp_mac
                 FROM challenges WHERE NOT used AND expires > $1 AND otp_mac IS NOT NULL
                 ORDER BY created",
                &[&now],
            )?
            .iter()
            .map(|r| ChallengeRow {
                transaction_id: r.get(0),
                serial: r.get(1),
                user: r.get(2),
                client: r.get(3),
                counter: r.get::<_, i64>(4).max(0) as u64,
                created: r.get(5),
                expires: r.get(6),
                attempts: to_u32(r.get(7)),
                sends: to_u32(r.get(8)),
                last_sent: r.get(9),
                otp_mac: r.get(10),
            })
            .collect())
    }

    fn add_challenges(&self, challenges: &[ChallengeRow]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        let insert = tx.prepare(
            "INSERT INTO challenges (transaction_id, serial, user_name, client, counter, created,
                                     expires, attempts, sends, last_sent, otp_mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )?;
        for c in challenges {
            tx.execute(
                &insert,
                &[
                    &c.transaction_id,
                    &c.serial,
                    &c.user,
                    &c.client,
                    &(c.counter as i64),
                    &c.created,
                    &c.expires,
                    &i64::from(c.attempts),
                    &i64::from(c.sends),
                    &c.last_sent,
                    &c.otp_mac,
                ],
            )
            .map_err(|e| {
                conflict_or(
                    e,
                    format!(
                        "a challenge of token '{}' (or the token is missing)",
                        c.serial
                    ),
                )
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    fn accepted_before(
        &self,
        user: &str,
        client: &str,
        calling_station_id: Option<&str>,
    ) -> StoreResult<bool> {
        Ok(self
            .conn()?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM audit WHERE user_name = $1 AND outcome = 'accept'
                    AND (calling_station_id = $3
                         OR ($3::text IS NULL AND calling_station_id IS NULL AND client = $2)))",
                &[&user, &client, &calling_station_id],
            )?
            .get(0))
    }

    fn audit(&self, user: Option<&str>, limit: usize) -> StoreResult<Vec<AuditRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .conn()?
            .query(
                "SELECT time, client, nas_ip, nas_identifier, calling_station_id, user_name, serial,
                        outcome, reason, phone_masked, gateway, duration_ms, attributes
                 FROM audit WHERE $1::text IS NULL OR user_name = $1 ORDER BY id DESC LIMIT $2",
                &[&user, &limit],
            )?
            .iter()
            .map(audit_from)
            .collect())
    }

    /// Replaces this node's breaker states; other nodes keep theirs.
    fn save_gateway_states(&self, states: &[GatewayStateRow]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        tx.execute("DELETE FROM gateway_state WHERE node = $1", &[&self.node])?;
        let insert = tx.prepare(
            "INSERT INTO gateway_state (node, gateway, state, failures, last_error, open_until, updated)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        for g in states {
            tx.execute(
                &insert,
                &[
                    &self.node,
                    &g.gateway,
                    &g.state,
                    &i64::from(g.failures),
                    &g.last_error,
                    &g.open_until,
                    &g.updated,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every node's breaker states.
    fn gateway_states(&self) -> StoreResult<Vec<GatewayStateRow>> {
        Ok(self
            .conn()?
            .query(
                "SELECT gateway, state, failures, last_error, open_until, updated, node
                 FROM gateway_state ORDER BY gateway, node",
                &[],
            )?
            .iter()
            .map(|r| GatewayStateRow {
                node: Some(r.get(6)),
                gateway: r.get(0),
                state: r.get(1),
                failures: to_u32(r.get(2)),
                last_error: r.get(3),
                open_until: r.get(4),
                updated: r.get(5),
            })
            .collect())
    }

    /// Under the purge lock; 0 when another node holds it (it is purging).
    fn purge_audit(&self, before: i64) -> StoreResult<usize> {
        let mut conn = self.conn()?;
        under_purge_lock(&mut conn, "audit rows", |conn| {
            Ok(conn.execute(
                "DELETE FROM audit WHERE id IN
                    (SELECT id FROM audit WHERE time < $1 ORDER BY id LIMIT $2)",
                &[&before, &(super::PURGE_AUDIT_BATCH as i64)],
            )? as usize)
        })
    }
}

/// Runs a purge holding `PURGE_LOCK` on this connection (`pg_try_advisory_lock`, released
/// after it, or with the session if the connection breaks): when another node holds it,
/// that node is purging, and this one deletes nothing (0).
fn under_purge_lock(
    conn: &mut PgConnection,
    what: &str,
    purge: impl FnOnce(&mut PgConnection) -> StoreResult<usize>,
) -> StoreResult<usize> {
    let locked: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PURGE_LOCK])?
        .get(0);
    if !locked {
        tracing::debug!("another node is purging {what}: skipped");
        return Ok(0);
    }
    let purged = purge(conn);
    let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&PURGE_LOCK]);
    let purged = purged?;
    unlocked?;
    Ok(purged)
}

#[cfg(test)]
#[path = "../../tests/common/pg.rs"]
mod pg_cluster;

#[cfg(test)]
mod tests {
    use super::pg_cluster::PgCluster;
    use super::*;
    use crate::store::contract;

    fn options(node: &str) -> PgOptions {
        PgOptions {
            password: None,
            pool: 8,
            timeout: Duration::from_secs(5),
            node: node.into(),
        }
    }

    /// A store on a fresh database of `cluster`, with the URL, and a challenge opened at
    /// 1,000 for each (transaction id, serial, user), the user enrolled with that token.
    fn with_challenges(
        cluster: &PgCluster,
        challenges: &[(&str, &str, &str)],
    ) -> (String, PostgresStore) {
        use crate::store::contract::{enroll, mac, start};
        let url = cluster.fresh_database();
        let store = PostgresStore::open(&url, &options("a")).unwrap();
        for &(tid, serial, user) in challenges {
            enroll(&store, user, serial, "+491701234567");
            store
                .open_challenge(&start(tid, serial, user, 1_000), &mac)
                .unwrap();
        }
        (url, store)
    }

    /// A plain client on `url`, as another node's (or an admin's) connection.
    fn other_client(url: &str) -> postgres::Client {
        off_runtime(|| url.parse::<postgres::Config>().unwrap().connect(NoTls)).unwrap()
    }

    #[test]
    fn keeps_the_store_contract() {
        let cluster = PgCluster::start();
        contract::run_all(&|| {
            Box::new(PostgresStore::open(&cluster.fresh_database(), &options("a")).unwrap())
        });
    }

    /// 8 threads, each a store of its own (as 8 nodes would be), 50 wrong answers each on one
    /// challenge: the locked rows make each answer one step for all of them.
    #[test]
    fn attempts_hold_across_connections_under_a_burst() {
        let cluster = PgCluster::start();
        let (url, first) = with_challenges(&cluster, &[("t1", "S1", "alice")]);
        let shared = PostgresStore::open(&url, &options("b")).unwrap();
        let compared = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for n in 0..8 {
                let (url, shared, compared) = (&url, &shared, &compared);
                scope.spawn(move || {
                    // Half the threads share one pool, half have a store of their own.
                    let own =
                        (n % 2 == 0).then(|| PostgresStore::open(url, &options("c")).unwrap());
                    let store = own.as_ref().unwrap_or(shared);
                    let wrongs = super::super::contract::wrong_answers(store, "t1", 50);
                    compared.fetch_add(wrongs, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        assert_eq!(
            compared.into_inner(),
            3,
            "max_attempts comparisons, of 400 tries"
        );
        let token = first.token("S1").unwrap().unwrap();
        assert_eq!(token.fail_count, 3, "each comparison counted one failure");
        assert!(token.locked_at.is_some(), "max_failures reached: locked");
    }

    /// `count` stores on `url`, as `count` nodes would have.
    fn nodes_on(url: &str, count: usize) -> Vec<PostgresStore> {
        (0..count)
            .map(|n| PostgresStore::open(url, &options(&format!("n{n}"))).unwrap())
            .collect()
    }

    /// Runs `run` on every store at the same instant, one thread each; the results in
    /// store order.
    fn all_at_once<T: Send>(
        stores: &[PostgresStore],
        run: impl Fn(usize, &PostgresStore) -> T + Sync,
    ) -> Vec<T> {
        let barrier = std::sync::Barrier::new(stores.len());
        std::thread::scope(|scope| {
            let runs: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(n, store)| {
                    let (barrier, run) = (&barrier, &run);
                    scope.spawn(move || {
                        barrier.wait();
                        run(n, store)
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    }

    /// Eight nodes making dave's first token at once: one token.
    #[test]
    fn first_logins_on_many_nodes_at_once_make_one_token() {
        use crate::store::contract::{dave, first_token};
        let cluster = PgCluster::start();
        let stores = nodes_on(&cluster.fresh_database(), 8);
        let made = all_at_once(&stores, |n, store| {
            store
                .enroll_first(&dave(), &first_token("dave", &format!("D{n}")))
                .unwrap()
        });
        assert_eq!(made.iter().filter(|made| **made).count(), 1);
        assert_eq!(stores[0].tokens(Some("dave")).unwrap().len(), 1);
    }

    /// Tokens of eight new OTP lengths added at once from eight connections: every length
    /// is in the kept set, and a deleted token's length goes with it.
    #[test]
    fn the_otp_lengths_follow_tokens_added_at_once() {
        use crate::store::contract::first_token;
        let cluster = PgCluster::start();
        let stores = nodes_on(&cluster.fresh_database(), 8);
        for n in 0..stores.len() {
            stores[0]
                .add_user(&UserRow {
                    name: format!("u{n}"),
                    phone: "+491701234567".into(),
                    created: 1,
                    group: None,
                })
                .unwrap();
        }
        all_at_once(&stores, |n, store| {
            store
                .add_token(&TokenRow {
                    otp_length: 6 + n as u32,
                    ..first_token(&format!("u{n}"), &format!("S{n}"))
                })
                .unwrap()
        });
        let all: Vec<u32> = (6..14).collect();
        assert_eq!(stores[0].otp_lengths().unwrap(), all);
        let rules = FailureRules {
            max_failures: 5,
            clear_after_ms: 0,
            count: false,
            claim_ttl_ms: 1_000,
        };
        assert_eq!(
            stores[1].begin_login("u0", 1, &rules).unwrap().otp_lengths,
            all
        );
        assert!(stores[2].delete_token("S7").unwrap());
        assert_eq!(stores[3].otp_lengths().unwrap(), all[..7].to_vec());
    }

    /// While another node holds the purge lock, a purge deletes nothing; once it is
    /// released, the next purge does the work.
    #[test]
    fn purges_run_on_one_node_at_a_time() {
        let cluster = PgCluster::start();
        let (url, store) = with_challenges(&cluster, &[("t1", "S1", "alice")]);
        let row = AuditRow {
            time: 1_000,
            client: "vpn".into(),
            user: "alice".into(),
            outcome: "reject".into(),
            reason: "wrong PIN".into(),
            ..AuditRow::default()
        };
        store.append_audit(&row).unwrap();
        let later = 100 * 60_000;
        // The other node, purging: it holds the lock.
        let mut other = other_client(&url);
        other
            .execute("SELECT pg_advisory_lock($1)", &[&PURGE_LOCK])
            .unwrap();
        assert_eq!(store.purge_challenges(later).unwrap(), 0);
        assert_eq!(store.purge_audit(later).unwrap(), 0);
        assert_eq!(store.audit(None, 10).unwrap().len(), 1, "not purged");
        other
            .execute("SELECT pg_advisory_unlock($1)", &[&PURGE_LOCK])
            .unwrap();
        assert_eq!(store.purge_challenges(later).unwrap(), 1);
        assert_eq!(store.purge_audit(later).unwrap(), 1);
        assert!(store.audit(None, 10).unwrap().is_empty());
        // This node released the lock: the other one may take it now.
        let got: bool = other
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PURGE_LOCK])
            .unwrap()
            .get(0);
        assert!(got, "the purge lock was released");
    }

    /// A purge never waits for a challenge another transaction holds (a batch of answers
    /// holding some while it waits for others would deadlock with it): it leaves that one
    /// for the next purge.
    #[test]
    fn a_purge_leaves_a_held_challenge_for_the_next() {
        let cluster = PgCluster::start();
        let (url, store) = with_challenges(&cluster, &[("t1", "S1", "alice"), ("t2", "B1", "bob")]);
        let mut other = other_client(&url);
        let mut holding = other.transaction().unwrap();
        holding
            .execute(
                "SELECT 1 FROM challenges WHERE transaction_id = 't1' FOR UPDATE",
                &[],
            )
            .unwrap();
        let later = 100 * 60_000;
        let started = std::time::Instant::now();
        assert_eq!(store.purge_challenges(later).unwrap(), 1, "t2 only");
        assert!(started.elapsed() < Duration::from_secs(2), "did not wait");
        holding.rollback().unwrap();
        assert_eq!(store.purge_challenges(later).unwrap(), 1, "t1, released");
        assert_eq!(store.open_challenge_rows(0).unwrap(), vec![]);
    }

    /// The contract's moved-counter case takes the two-step path once, and counts it.
    #[test]
    fn a_moved_counter_is_counted() {
        let cluster = PgCluster::start();
        let store = PostgresStore::open(&cluster.fresh_database(), &options("a")).unwrap();
        contract::start_challenge_takes_the_expected_counter_or_the_one_there_is(&store);
        assert_eq!(store.counter_moved(), 1);
        assert_eq!(store.counters(), "pg_counter_moved=1");
    }

    /// Nodes starting at once on an empty database: one schema, both open; a schema newer
    /// than the binary is refused.
    #[test]
    fn migrations_run_once_under_the_lock_and_newer_schemas_are_refused() {
        let cluster = PgCluster::start();
        let url = cluster.fresh_database();
        std::thread::scope(|scope| {
            let opened: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| PostgresStore::open(&url, &options("a")).map(|_| ())))
                .collect();
            for node in opened {
                node.join().unwrap().unwrap();
            }
        });
        let name = url.rsplit('/').next().unwrap();
        assert_eq!(
            cluster.psql(name, "SELECT version FROM otpgate_schema"),
            MIGRATIONS.len().to_string()
        );
        assert_eq!(
            cluster.psql(name, "SELECT count(*) FROM otpgate_schema"),
            "1"
        );
        cluster.psql(name, "UPDATE otpgate_schema SET version = version + 1");
        let refused = PostgresStore::open(&url, &options("a")).err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("newer than this otpgate knows"),
            "{refused}"
        );
    }

    #[test]
    fn the_first_key_fingerprint_is_kept_and_another_is_reported() {
        let cluster = PgCluster::start();
        let url = cluster.fresh_database();
        let store = PostgresStore::open(&url, &options("a")).unwrap();
        assert_eq!(
            store.check_key_fingerprint("aa").unwrap(),
            KeyCheck::Recorded
        );
        assert_eq!(store.check_key_fingerprint("aa").unwrap(), KeyCheck::Same);
        assert_eq!(
            store.check_key_fingerprint("bb").unwrap(),
            KeyCheck::Other("aa".into())
        );
    }

    #[test]
    fn an_unreachable_database_is_reported_with_its_host() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://otp:s3cret@127.0.0.1:{port}/otpgate");
        let error = PostgresStore::open(&url, &options("a"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn urls_are_logged_with_the_password_masked() {
        assert_eq!(
            masked_url(
                "postgres://otp:s3cret@db1:5432,db2:5432/otpgate?target_session_attrs=read-write"
            ),
            "postgres://otp:****@db1:5432,db2:5432/otpgate?target_session_attrs=read-write"
        );
        assert_eq!(
            masked_url("postgresql://db/otpgate?user=otp&password=s3cret&sslmode=disable"),
            "postgresql://db/otpgate?user=otp&password=****&sslmode=disable"
        );
        assert_eq!(masked_url("postgres://otp@db/x"), "postgres://otp@db/x");
    }
}
