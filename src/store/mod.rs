//! Persistent state behind one narrow trait: users, tokens, challenges and the audit trail.
//! `store` knows rows, not policy: the engine decides, the store records atomically.
//!
//! The trait is synchronous; the server calls it on its store thread (`thread`) so the
//! receive loop and the async workers never wait on the database. Times are Unix milliseconds, passed in by the caller.

mod checkpoint;
pub mod sqlite;
pub mod thread;

pub use sqlite::SqliteStore;
pub use thread::StoreThread;

/// A user: a name and the phone new tokens send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    /// E.164.
    pub phone: String,
    pub created: i64,
    /// `[group.NAME]` whose attributes the user's Access-Accepts carry.
    pub group: Option<String>,
}

/// An SMS token. `Debug` is derived but holds only a hash and sealed seed, never secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub serial: String,
    pub user: String,
    /// Overrides the user's phone when set (E.164).
    pub phone: Option<String>,
    /// Argon2id PHC string.
    pub pin_hash: String,
    /// Nonce and AES-256-GCM ciphertext of the HOTP seed.
    pub sealed_seed: Vec<u8>,
    /// The next HOTP counter to use.
    pub counter: u64,
    pub otp_length: u32,
    pub fail_count: u32,
    /// When the token was locked; None while it is not.
    pub locked_at: Option<i64>,
    pub disabled: bool,
    /// Gateway or chain name; None = `[sms] default_chain`.
    pub gateway: Option<String>,
    pub created: i64,
}

/// An open or used challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    pub transaction_id: String,
    pub serial: String,
    pub user: String,
    pub client: String,
    pub counter: u64,
    pub created: i64,
    pub expires: i64,
    pub attempts: u32,
    pub sends: u32,
    pub used: bool,
}

/// One decision, as the audit trail keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub time: i64,
    pub client: String,
    pub nas_ip: Option<String>,
    pub nas_identifier: Option<String>,
    pub calling_station_id: Option<String>,
    pub user: String,
    pub serial: Option<String>,
    /// accept, challenge or reject.
    pub outcome: String,
    /// The real reason, which the NAS never sees.
    pub reason: String,
    pub phone_masked: Option<String>,
    pub gateway: Option<String>,
    pub duration_ms: u64,
    /// The request's attributes by dictionary name, secrets redacted.
    pub attributes: Vec<String>,
}

/// A challenge with its user and token; None where the user or token is gone.
pub type ChallengeView = (ChallengeRow, Option<(UserRow, TokenRow)>);

/// A gateway's breaker as the running server last recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayStateRow {
    pub gateway: String,
    pub state: String,
    pub failures: u32,
    pub last_error: Option<String>,
    pub open_until: Option<i64>,
    pub updated: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What the engine and the CLI need from a database.
pub trait Store: Send + Sync {
    fn add_user(&self, user: &UserRow) -> StoreResult<()>;
    fn user(&self, name: &str) -> StoreResult<Option<UserRow>>;
    fn users(&self) -> StoreResult<Vec<UserRow>>;
    /// Deletes a user with its tokens and challenges; false if there was none.
    fn delete_user(&self, name: &str) -> StoreResult<bool>;
    /// The user's own reply attributes, `Name=value`, in order.
    fn user_attributes(&self, name: &str) -> StoreResult<Vec<String>>;
    /// Replaces the user's reply attributes; false if there is no such user.
    fn set_user_attributes(&self, name: &str, attributes: &[String]) -> StoreResult<bool>;

    fn add_token(&self, token: &TokenRow) -> StoreResult<()>;
    /// Adds many users in one transaction: all or none.
    fn add_users(&self, users: &[UserRow]) -> StoreResult<()>;
    /// Adds many tokens in one transaction: all or none.
    fn add_tokens(&self, tokens: &[TokenRow]) -> StoreResult<()>;
    fn token(&self, serial: &str) -> StoreResult<Option<TokenRow>>;
    /// Tokens of one user, or all, ordered by serial.
    fn tokens(&self, user: Option<&str>) -> StoreResult<Vec<TokenRow>>;
    /// The user and their tokens in one read, for a login.
    fn login_view(&self, user: &str) -> StoreResult<Option<(UserRow, Vec<TokenRow>)>>;
    fn set_disabled(&self, serial: &str, disabled: bool) -> StoreResult<bool>;
    /// Clears the fail counter and the lock.
    fn unlock(&self, serial: &str) -> StoreResult<bool>;
    fn delete_token(&self, serial: &str) -> StoreResult<bool>;
    fn set_pin_hash(&self, serial: &str, pin_hash: &str) -> StoreResult<bool>;
    /// Adds one failure to each token; locks (at `now`) those reaching `max_failures` and
    /// returns the serials locked by this call.
    fn record_failure(
        &self,
        serials: &[String],
        max_failures: u32,
        now: i64,
    ) -> StoreResult<Vec<String>>;

    /// Takes the token's counter and stores the challenge with it, in one transaction;
    /// returns the counter (the `counter` field of `challenge` is ignored).
    fn start_challenge(&self, challenge: &ChallengeRow) -> StoreResult<u64>;
    /// A challenge with its user and token (None if either is gone), in one read.
    fn challenge_view(&self, transaction_id: &str) -> StoreResult<Option<ChallengeView>>;
    /// A login succeeded: consumes the challenge (None if it was already used), resets the
    /// token's fail counter and returns the user's reply attributes, in one transaction.
    fn finish_login(
        &self,
        transaction_id: &str,
        serial: &str,
        user: &str,
    ) -> StoreResult<Option<Vec<String>>>;
    /// Unused, unexpired challenges of a token.
    fn open_challenges(&self, serial: &str, now: i64) -> StoreResult<Vec<ChallengeRow>>;
    /// Marks a challenge used; true only for the one call that changed it.
    fn consume_challenge(&self, transaction_id: &str) -> StoreResult<bool>;
    /// Counts a wrong answer on an open challenge and returns the attempts so far.
    fn add_attempt(&self, transaction_id: &str) -> StoreResult<u32>;
    fn delete_challenge(&self, transaction_id: &str) -> StoreResult<()>;
    /// Deletes challenges that expired before `before`; returns how many.
    fn purge_challenges(&self, before: i64) -> StoreResult<usize>;

    fn append_audit(&self, row: &AuditRow) -> StoreResult<()>;
    /// Whether `user` was accepted before from this Calling-Station-Id (or, without one,
    /// from this RADIUS client).
    fn accepted_before(
        &self,
        user: &str,
        client: &str,
        calling_station_id: Option<&str>,
    ) -> StoreResult<bool>;
    /// Newest first.
    fn audit(&self, user: Option<&str>, limit: usize) -> StoreResult<Vec<AuditRow>>;

    /// Replaces the recorded breaker states with these.
    fn save_gateway_states(&self, states: &[GatewayStateRow]) -> StoreResult<()>;
    fn gateway_states(&self) -> StoreResult<Vec<GatewayStateRow>>;

    /// Deletes audit rows whose time is before `before`, oldest first and at most
    /// `PURGE_AUDIT_BATCH` per call, so that other calls get the database in between; returns
    /// how many (fewer than the batch: none is left).
    fn purge_audit(&self, before: i64) -> StoreResult<usize>;
}

/// The most audit rows one `purge_audit` call deletes.
pub const PURGE_AUDIT_BATCH: usize = 10_000;
