//! The SQLite store: one connection in WAL mode behind a mutex (SQLite serialises writers
//! anyway), schema migrations by `PRAGMA user_version` at open.
//!
//! A std `Mutex` is right here: nothing awaits while holding it, and every caller is already
//! on the blocking pool.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::checkpoint::Checkpointer;
use super::sqlite_bounds;
use super::{
    Answer, AnswerClaim, AuditRow, ChallengeRow, ChallengeStart, FailureClaim, FailureRules,
    GatewayStateRow, Started, Store, StoreError, StoreResult, TokenRow, UserRow,
};

/// Schema steps; entry N brings `user_version` from N to N + 1. Never edit a shipped step.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        name     TEXT PRIMARY KEY,
        phone    TEXT NOT NULL,
        created  INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        serial      TEXT PRIMARY KEY,
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        phone       TEXT,
        pin_hash    TEXT NOT NULL,
        sealed_seed BLOB NOT NULL,
        counter     INTEGER NOT NULL,
        otp_length  INTEGER NOT NULL,
        fail_count  INTEGER NOT NULL DEFAULT 0,
        locked_at   INTEGER,
        disabled    INTEGER NOT NULL DEFAULT 0,
        gateway     TEXT,
        created     INTEGER NOT NULL
    );
    CREATE INDEX tokens_user ON tokens(user);
    CREATE TABLE challenges (
        transaction_id TEXT PRIMARY KEY,
        serial         TEXT NOT NULL REFERENCES tokens(serial) ON DELETE CASCADE,
        user           TEXT NOT NULL,
        client         TEXT NOT NULL,
        counter        INTEGER NOT NULL,
        created        INTEGER NOT NULL,
        expires        INTEGER NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0,
        sends          INTEGER NOT NULL DEFAULT 1,
        used           INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX challenges_serial ON challenges(serial);
    CREATE INDEX challenges_expires ON challenges(expires);
    CREATE TABLE audit (
        id                 INTEGER PRIMARY KEY,
        time               INTEGER NOT NULL,
        client             TEXT NOT NULL,
        nas_ip             TEXT,
        nas_identifier     TEXT,
        calling_station_id TEXT,
        user               TEXT NOT NULL,
        serial             TEXT,
        outcome            TEXT NOT NULL,
        reason             TEXT NOT NULL,
        phone_masked       TEXT,
        gateway            TEXT,
        duration_ms        INTEGER NOT NULL
    );
    CREATE INDEX audit_user ON audit(user, id);
"#,
    r#"
    CREATE TABLE gateway_state (
        gateway     TEXT PRIMARY KEY,
        state       TEXT NOT NULL,
        failures    INTEGER NOT NULL,
        last_error  TEXT,
        open_until  INTEGER,
        updated     INTEGER NOT NULL
    );
    CREATE INDEX audit_accepted ON audit(user, outcome, calling_station_id);
"#,
    r#"
    ALTER TABLE users ADD COLUMN user_group TEXT;
    CREATE TABLE user_attributes (
        user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        position   INTEGER NOT NULL,
        attribute  TEXT NOT NULL,
        PRIMARY KEY (user, position)
    );
    ALTER TABLE audit ADD COLUMN attributes TEXT;
"#,
    // The attack bounds (DESIGN section 8). Challenges opened before carry no code MAC and
    // could not be answered, so they end here; that also lets the index below hold.
    r#"
    UPDATE challenges SET used = 1 WHERE used = 0;
    ALTER TABLE challenges ADD COLUMN otp_mac BLOB;
    ALTER TABLE challenges ADD COLUMN last_sent INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX challenges_one_open ON challenges(serial) WHERE used = 0;
    CREATE TABLE sms_sends (
        id      INTEGER PRIMARY KEY,
        time    INTEGER NOT NULL,
        serial  TEXT,
        phone   TEXT NOT NULL,
        client  TEXT NOT NULL
    );
    CREATE INDEX sms_sends_time ON sms_sends(time);
    CREATE INDEX sms_sends_serial ON sms_sends(serial, time);
    CREATE INDEX sms_sends_phone ON sms_sends(phone, time);
    CREATE INDEX sms_sends_client ON sms_sends(client, time);
    CREATE INDEX tokens_otp_length ON tokens(otp_length);
    ALTER TABLE tokens ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tokens ADD COLUMN pending_until INTEGER NOT NULL DEFAULT 0;
"#,
];

/// Bytes the WAL file is cut back to whenever it starts over (`journal_size_limit`).
pub(super) const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

pub struct SqliteStore {
    /// Declared first so that it stops before `connection` closes (fields drop in order).
    checkpointer: Option<Checkpointer>,
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date. The database
    /// and its -wal and -shm files are kept 0600 (`files::private_database`).
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        crate::files::private_database(path)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", path.display())))?;
        let connection = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        let mut store = Self::prepare(connection)?;
        let checkpointer = super::checkpoint::start(path, &mut store.db())?;
        store.checkpointer = Some(checkpointer);
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(mut connection: Connection) -> StoreResult<SqliteStore> {
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        // Room for every cached statement in this file (about 25), so that a burst of
        // failures or a purge does not evict the login path's statements (rusqlite keeps 16).
        connection.set_prepared_statement_cache_capacity(64);
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL loses at most the last transactions on power loss, never integrity.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // After a burst has grown the WAL file, give the space back when it restarts.
        connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // Plans must not depend on bound values: otherwise SQLite (built with STAT4) re-parses
        // and re-plans a cached statement such as `tokens WHERE user = ?1` at every new user,
        // which a profile showed as a sixth of the store thread's time.
        connection.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "schema version {version} is newer than this otpgate knows ({}); upgrade otpgate",
                MIGRATIONS.len()
            )));
        }
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = connection.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (step + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            checkpointer: None,
            connection: Mutex::new(connection),
        })
    }

    /// Runs `step` in one IMMEDIATE transaction: the write lock is taken at BEGIN, so no
    /// other writer of the file (the CLI) can change what `step` read before it commits.
    fn immediate<T>(
        &self,
        step: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = step(&tx)?;
        tx.commit()?;
        Ok(result)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each statement is
        // atomic), so a poisoned lock is still usable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

const TOKEN_COLUMNS: &str = "serial, user, phone, pin_hash, sealed_seed, counter, otp_length, fail_count, \
                             locked_at, disabled, gateway, created";
fn token_from(row: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        serial: row.get(0)?,
        user: row.get(1)?,
        phone: row.get(2)?,
        pin_hash: row.get(3)?,
        sealed_seed: row.get(4)?,
        counter: row.get::<_, i64>(5)?.max(0) as u64,
        otp_length: row.get(6)?,
        fail_count: row.get(7)?,
        locked_at: row.get(8)?,
        disabled: row.get(9)?,
        gateway: row.get(10)?,
        created: row.get(11)?,
    })
}

fn user_from(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: row.get(0)?,
        phone: row.get(1)?,
        created: row.get(2)?,
        group: row.get(3)?,
    })
}

/// A user and one of their tokens, read in the caller's transaction.
pub(super) fn owner(
    db: &Connection,
    user: &str,
    serial: &str,
) -> rusqlite::Result<Option<(UserRow, TokenRow)>> {
    let user = db
        .prepare_cached("SELECT name, phone, created, user_group FROM users WHERE name = ?1")?
        .query_row([user], user_from)
        .optional()?;
    let token = db
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE serial = ?1"
        ))?
        .query_row([serial], token_from)
        .optional()?;
    Ok(user.zip(token))
}

fn audit_from(row: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        time: row.get(0)?,
        client: row.get(1)?,
        nas_ip: row.get(2)?,
        nas_identifier: row.get(3)?,
        calling_station_id: row.get(4)?,
        user: row.get(5)?,
        serial: row.get(6)?,
        outcome: row.get(7)?,
        reason: row.get(8)?,
        phone_masked: row.get(9)?,
        gateway: row.get(10)?,
        duration_ms: row.get::<_, i64>(11)?.max(0) as u64,
        attributes: row
            .get::<_, Option<String>>(12)?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
    })
}

fn insert_token(db: &Connection, token: &TokenRow) -> StoreResult<()> {
    db.prepare_cached(&format!(
        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        token.serial,
        token.user,
        token.phone,
        token.pin_hash,
        token.sealed_seed,
        token.counter as i64,
        token.otp_length,
        token.fail_count,
        token.locked_at,
        token.disabled,
        token.gateway,
        token.created
    ])
    .map_err(|e| {
        conflict_or(
            e,
            format!("token '{}' (or its user is missing)", token.serial),
        )
    })?;
    Ok(())
}

fn insert_audit(db: &Connection, a: &AuditRow) -> rusqlite::Result<()> {
    let mut statement = db.prepare_cached(
        "INSERT INTO audit (time, client, nas_ip, nas_identifier, calling_station_id, user, serial, outcome,
                            reason, phone_masked, gateway, duration_ms, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    statement.execute(params![
        a.time,
        a.client,
        a.nas_ip,
        a.nas_identifier,
        a.calling_station_id,
        a.user,
        a.serial,
        a.outcome,
        a.reason,
        a.phone_masked,
        a.gateway,
        a.duration_ms as i64,
        (!a.attributes.is_empty())
            .then(|| serde_json::to_string(&a.attributes).unwrap_or_default())
    ])?;
    Ok(())
}

/// Ends a token's open challenge, if it has one.
fn end_open_challenge(tx: &rusqlite::Transaction<'_>, serial: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE challenges SET used = 1 WHERE serial = ?1 AND used = 0")?
        .execute([serial])?;
    Ok(())
}

fn conflict_or(e: rusqlite::Error, what: String) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what)
        }
        other => other.into(),
    }
}

impl Store for SqliteStore {
    fn add_user(&self, user: &UserRow) -> StoreResult<()> {
        self.add_users(std::slice::from_ref(user))
    }

    fn add_users(&self, users: &[UserRow]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO users (name, phone, created, user_group) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for user in users {
                insert
                    .execute(params![user.name, user.phone, user.created, user.group])
                    .map_err(|e| conflict_or(e, format!("user '{}'", user.name)))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn user(&self, name: &str) -> StoreResult<Option<UserRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT name, phone, created, user_group FROM users WHERE name = ?1",
                [name],
                user_from,
            )
            .optional()?)
    }

    fn users(&self) -> StoreResult<Vec<UserRow>> {
        let db = self.db();
        let mut statement =
            db.prepare_cached("SELECT name, phone, created, user_group FROM users ORDER BY name")?;
        let rows = statement
            .query_map([], user_from)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn delete_user(&self, name: &str) -> StoreResult<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM challenges WHERE user = ?1", [name])?;
        let deleted = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    fn user_attributes(&self, name: &str) -> StoreResult<Vec<String>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT attribute FROM user_attributes WHERE user = ?1 ORDER BY position",
        )?;
        let rows = statement
            .query_map([name], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn set_user_attributes(&self, name: &str, attributes: &[String]) -> StoreResult<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(false);
        }
        tx.execute("DELETE FROM user_attributes WHERE user = ?1", [name])?;
        for (position, attribute) in attributes.iter().enumerate() {
            tx.execute(
                "INSERT INTO user_attributes (user, position, attribute) VALUES (?1, ?2, ?3)",
                params![name, position as i64, attribute],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn add_token(&self, token: &TokenRow) -> StoreResult<()> {
        self.add_tokens(std::slice::from_ref(token))
    }

    fn add_tokens(&self, tokens: &[TokenRow]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for token in tokens {
            insert_token(&tx, token)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn enroll_first(&self, user: &UserRow, token: &TokenRow) -> StoreResult<bool> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO users (name, phone, created, user_group) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![user.name, user.phone, user.created, user.group])?;
        let has_token: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE user = ?1)")?
            .query_row([&user.name], |r| r.get(0))?;
        if has_token {
            return Ok(false);
        }
        insert_token(&tx, token)?;
        tx.commit()?;
        Ok(true)
    }

    fn token(&self, serial: &str) -> StoreResult<Option<TokenRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE serial = ?1"
        ))?;
        Ok(statement.query_row([serial], token_from).optional()?)
    }

    fn tokens(&self, user: Option<&str>) -> StoreResult<Vec<TokenRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ?1 IS NULL OR user = ?1 ORDER BY serial"
        ))?;
        let rows = statement
            .query_map([user], token_from)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn login_view(&self, name: &str) -> StoreResult<Option<(UserRow, Vec<TokenRow>)>> {
        let db = self.db();
        let user = db
            .prepare_cached("SELECT name, phone, created, user_group FROM users WHERE name = ?1")?
            .query_row([name], user_from)
            .optional()?;
        let Some(user) = user else {
            return Ok(None);
        };
        let mut statement = db.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user = ?1 ORDER BY serial"
        ))?;
        let tokens = statement
            .query_map([name], token_from)?
            .collect::<Result<_, _>>()?;
        Ok(Some((user, tokens)))
    }

    fn set_disabled(&self, serial: &str, disabled: bool) -> StoreResult<bool> {
        self.immediate(|tx| {
            let changed = tx.execute(
                "UPDATE tokens SET disabled = ?2 WHERE serial = ?1",
                params![serial, disabled],
            )?;
            if disabled {
                end_open_challenge(tx, serial)?;
            }
            Ok(changed > 0)
        })
    }

    fn unlock(&self, serial: &str) -> StoreResult<bool> {
        Ok(self.db().execute(
            "UPDATE tokens SET fail_count = 0, pending = 0, locked_at = NULL WHERE serial = ?1",
            [serial],
        )? > 0)
    }

    fn delete_token(&self, serial: &str) -> StoreResult<bool> {
        Ok(self
            .db()
            .execute("DELETE FROM tokens WHERE serial = ?1", [serial])?
            > 0)
    }

    fn set_pin_hash(&self, serial: &str, pin_hash: &str) -> StoreResult<bool> {
        self.immediate(|tx| {
            let changed = tx.execute(
                "UPDATE tokens SET pin_hash = ?2 WHERE serial = ?1",
                [serial, pin_hash],
            )?;
            end_open_challenge(tx, serial)?;
            Ok(changed > 0)
        })
    }

    fn otp_lengths(&self) -> StoreResult<Vec<u32>> {
        // A skip scan over the index: one seek per distinct length, not a read of every token.
        let db = self.db();
        let mut statement = db.prepare_cached(
            "WITH RECURSIVE lengths(n) AS (
                 SELECT MIN(otp_length) FROM tokens
                 UNION ALL
                 SELECT (SELECT MIN(otp_length) FROM tokens WHERE otp_length > n) FROM lengths
                 WHERE n IS NOT NULL
             )
             SELECT n FROM lengths WHERE n IS NOT NULL",
        )?;
        let rows = statement
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn claim_failures(
        &self,
        serials: &[String],
        now: i64,
        rules: &FailureRules,
    ) -> StoreResult<Vec<FailureClaim>> {
        self.immediate(|tx| {
            serials
                .iter()
                .map(|serial| Ok(sqlite_bounds::claim_failure(tx, serial, now, rules)?))
                .collect()
        })
    }

    fn refund_failures(&self, serials: &[String]) -> StoreResult<()> {
        if serials.is_empty() {
            return Ok(());
        }
        self.immediate(|tx| {
            for serial in serials {
                sqlite_bounds::refund(tx, serial)?;
            }
            Ok(())
        })
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
        self.immediate(|tx| {
            let mut locked = Vec::new();
            for serial in serials {
                if sqlite_bounds::settle_failure(tx, serial, now, max_failures)? {
                    locked.push(serial.clone());
                }
            }
            Ok(locked)
        })
    }

    fn open_challenge(
        &self,
        start: &ChallengeStart<'_>,
        code_mac: &dyn Fn(u64) -> Vec<u8>,
    ) -> StoreResult<Started> {
        self.immediate(|tx| sqlite_bounds::open_challenge(tx, start, code_mac))
    }

    /// The refund and the challenge in one transaction: one commit on the PIN step's path,
    /// not two. The counter is taken inside the transaction, so `expected` is not needed.
    fn start_challenge(
        &self,
        start: &ChallengeStart<'_>,
        refund: &[String],
        _expected: &super::Expected<'_>,
        code_mac: &dyn Fn(u64) -> Vec<u8>,
    ) -> StoreResult<Started> {
        self.immediate(|tx| {
            for serial in refund {
                sqlite_bounds::refund(tx, serial)?;
            }
            sqlite_bounds::open_challenge(tx, start, code_mac)
        })
    }

    fn answer_challenge(&self, claim: &AnswerClaim<'_>) -> StoreResult<Answer> {
        self.immediate(|tx| sqlite_bounds::answer_challenge(tx, claim))
    }

    fn delete_challenge(&self, transaction_id: &str) -> StoreResult<()> {
        self.db().execute(
            "DELETE FROM challenges WHERE transaction_id = ?1",
            [transaction_id],
        )?;
        Ok(())
    }

    fn purge_challenges(&self, before: i64) -> StoreResult<usize> {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let db = self.db();
        db.execute(
            "DELETE FROM sms_sends WHERE time < ?1",
            [before.saturating_sub(DAY_MS)],
        )?;
        Ok(db.execute("DELETE FROM challenges WHERE expires < ?1", [before])?)
    }

    fn open_challenges(&self, now: i64) -> StoreResult<u64> {
        let count: i64 = self.db().query_row(
            "SELECT count(*) FROM challenges WHERE used = 0 AND expires > ?1",
            [now],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn append_audit(&self, a: &AuditRow) -> StoreResult<()> {
        insert_audit(&self.db(), a)?;
        Ok(())
    }

    fn add_audit_rows(&self, rows: &[AuditRow]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for row in rows {
            insert_audit(&tx, row)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn audit_page(&self, after: i64, limit: usize) -> StoreResult<Vec<(i64, AuditRow)>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT time, client, nas_ip, nas_identifier, calling_station_id, user, serial, outcome, reason,
                    phone_masked, gateway, duration_ms, attributes, id
             FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![after, limit], |r| Ok((r.get(13)?, audit_from(r)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn open_challenge_rows(&self, now: i64) -> StoreResult<Vec<ChallengeRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT transaction_id, serial, user, client, counter, created, expires, attempts, sends,
                    last_sent, otp_mac
             FROM challenges WHERE used = 0 AND expires > ?1 AND otp_mac IS NOT NULL
             ORDER BY created",
        )?;
        let rows = statement
            .query_map([now], |r| {
                Ok(ChallengeRow {
                    transaction_id: r.get(0)?,
                    serial: r.get(1)?,
                    user: r.get(2)?,
                    client: r.get(3)?,
                    counter: r.get::<_, i64>(4)?.max(0) as u64,
                    created: r.get(5)?,
                    expires: r.get(6)?,
                    attempts: r.get(7)?,
                    sends: r.get(8)?,
                    last_sent: r.get(9)?,
                    otp_mac: r.get(10)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn add_challenges(&self, challenges: &[ChallengeRow]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO challenges (transaction_id, serial, user, client, counter, created, expires,
                                         attempts, sends, last_sent, otp_mac)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for c in challenges {
                insert
                    .execute(params![
                        c.transaction_id,
                        c.serial,
                        c.user,
                        c.client,
                        c.counter as i64,
                        c.created,
                        c.expires,
                        c.attempts,
                        c.sends,
                        c.last_sent,
                        c.otp_mac
                    ])
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
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM audit WHERE user = ?1 AND outcome = 'accept'
                AND (calling_station_id = ?3 OR (?3 IS NULL AND calling_station_id IS NULL AND client = ?2)))",
        )?;
        Ok(statement.query_row(params![user, client, calling_station_id], |r| r.get(0))?)
    }

    fn save_gateway_states(&self, states: &[GatewayStateRow]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM gateway_state", [])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO gateway_state (gateway, state, failures, last_error, open_until, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for g in states {
                insert.execute(params![
                    g.gateway,
                    g.state,
                    g.failures,
                    g.last_error,
                    g.open_until,
                    g.updated
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn gateway_states(&self) -> StoreResult<Vec<GatewayStateRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT gateway, state, failures, last_error, open_until, updated FROM gateway_state ORDER BY gateway",
        )?;
        let rows = statement
            .query_map([], |r| {
                Ok(GatewayStateRow {
                    node: None,
                    gateway: r.get(0)?,
                    state: r.get(1)?,
                    failures: r.get(2)?,
                    last_error: r.get(3)?,
                    open_until: r.get(4)?,
                    updated: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn audit(&self, user: Option<&str>, limit: usize) -> StoreResult<Vec<AuditRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT time, client, nas_ip, nas_identifier, calling_station_id, user, serial, outcome, reason,
                    phone_masked, gateway, duration_ms, attributes
             FROM audit WHERE ?1 IS NULL OR user = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![user, limit], audit_from)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn purge_audit(&self, before: i64) -> StoreResult<usize> {
        // No index on time (a migration for it would rewrite a large table): rows are written
        // in time order, so walking ids from the oldest finds a batch at the front, and only
        // the last, short batch reads the whole table.
        let db = self.db();
        let mut statement = db.prepare_cached(
            "DELETE FROM audit WHERE id IN
                (SELECT id FROM audit WHERE time < ?1 ORDER BY id LIMIT ?2)",
        )?;
        Ok(statement.execute(params![before, super::PURGE_AUDIT_BATCH as i64])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_store_contract() {
        super::super::contract::run_all(&|| Box::new(SqliteStore::in_memory().unwrap()));
    }

    /// Several connections to one file, as the server and the CLI are: IMMEDIATE
    /// transactions make each claim one step for all of them.
    #[test]
    fn attempts_hold_across_connections_under_a_burst() {
        use super::super::contract::{enroll, mac, start};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db");
        let first = SqliteStore::open(&path).unwrap();
        enroll(&first, "alice", "S1", "+491701234567");
        first
            .open_challenge(&start("t1", "S1", "alice", 1_000), &mac)
            .unwrap();
        let compared = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let store = SqliteStore::open(&path).unwrap();
                    let wrongs = super::super::contract::wrong_answers(&store, "t1", 50);
                    compared.fetch_add(wrongs, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        assert_eq!(
            compared.into_inner(),
            3,
            "max_attempts comparisons, of 400 tries"
        );
    }

    #[test]
    fn user_attributes_are_replaced_in_order_and_go_with_the_user() {
        let store = SqliteStore::in_memory().unwrap();
        super::super::contract::enroll(&store, "alice", "S1", "+491701234567");
        let lines = vec!["Filter-Id=a".to_string(), "Class=0x01".to_string()];
        assert!(store.set_user_attributes("alice", &lines).unwrap());
        assert_eq!(store.user_attributes("alice").unwrap(), lines);
        assert!(store.set_user_attributes("alice", &lines[1..]).unwrap());
        assert_eq!(store.user_attributes("alice").unwrap(), &lines[1..]);
        assert!(!store.set_user_attributes("nobody", &lines).unwrap());
        store.delete_user("alice").unwrap();
        assert!(store.user_attributes("alice").unwrap().is_empty());
    }

    #[test]
    fn audit_rows_before_the_cutoff_are_purged_in_batches() {
        let store = SqliteStore::in_memory().unwrap();
        let row = |time: i64, user: &str| AuditRow {
            time,
            client: "vpn".into(),
            user: user.into(),
            outcome: "reject".into(),
            reason: "wrong PIN".into(),
            ..AuditRow::default()
        };
        for _ in 0..crate::store::PURGE_AUDIT_BATCH + 1 {
            store.append_audit(&row(100, "old")).unwrap();
        }
        store.append_audit(&row(1_000, "cutoff")).unwrap();
        store.append_audit(&row(2_000, "new")).unwrap();
        // A row written late with an old time is purged too, not only those at the front.
        store.append_audit(&row(999, "late")).unwrap();
        assert_eq!(
            store.purge_audit(1_000).unwrap(),
            crate::store::PURGE_AUDIT_BATCH
        );
        assert_eq!(store.purge_audit(1_000).unwrap(), 2);
        assert_eq!(store.purge_audit(1_000).unwrap(), 0);
        let users: Vec<String> = store
            .audit(None, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.user)
            .collect();
        assert_eq!(
            users,
            ["new", "cutoff"],
            "newest first, the cutoff itself kept"
        );
    }

    #[test]
    fn migrations_run_once_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db/otpgate.db");
        drop(SqliteStore::open(&path).unwrap());
        let store = SqliteStore::open(&path).unwrap();
        let mode: String = store
            .db()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
