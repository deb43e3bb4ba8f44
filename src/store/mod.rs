//! Persistent state behind one narrow trait: users, tokens, challenges and the audit trail.
//! `store` knows rows, not policy: the engine decides, the store records atomically.
//!
//! The trait is synchronous; the server calls it on its store thread (`thread`) so the
//! receive loop and the async workers never wait on the database. Times are Unix milliseconds, passed in by the caller.

mod batch;
mod checkpoint;
#[cfg(test)]
pub(crate) mod contract;
pub mod copy;
pub mod postgres;
mod postgres_bounds;
mod postgres_login;
mod postgres_statements;
pub mod sqlite;
mod sqlite_bounds;
pub mod thread;

pub use batch::{ChallengeToStart, StateAnswer};
pub use copy::{Copied, copy};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use thread::StoreThread;

use crate::config::SendCaps;

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

/// What failure claims are decided against (`[lockout]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRules {
    pub max_failures: u32,
    /// A lock clears itself this long after it was set; 0 = only an admin unlocks.
    pub clear_after_ms: i64,
    /// Whether the check being claimed counts as a failure until refunded (a wrong PIN
    /// counts only with `count_wrong_pin`).
    pub count: bool,
    /// How long a claim may stay unsettled; past it (its node died mid-request) it counts
    /// as a failure, so that a crash can neither lose a failure nor wedge the token.
    pub claim_ttl_ms: i64,
}

/// What a failure claim found on one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClaim {
    /// The check may run; its failure is counted, pending until settled or refunded.
    Claimed {
        lock_cleared: bool,
    },
    /// Not counted (`count` false), but the token is usable.
    Usable {
        lock_cleared: bool,
    },
    /// Every failure left in this lock period is claimed by checks still running: ask
    /// again once they settle (a refund frees one).
    Busy,
    Refused(Unusable),
    /// No such token.
    Missing,
}

impl FailureClaim {
    /// Whether the token's PIN may be checked.
    pub fn allows_check(&self) -> bool {
        matches!(
            self,
            FailureClaim::Claimed { .. } | FailureClaim::Usable { .. }
        )
    }

    pub fn lock_cleared(&self) -> bool {
        matches!(
            self,
            FailureClaim::Claimed { lock_cleared: true }
                | FailureClaim::Usable { lock_cleared: true }
        )
    }
}

/// Why a token may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Disabled,
    Locked,
}

impl Unusable {
    pub fn reason(self) -> &'static str {
        match self {
            Unusable::Disabled => "token disabled",
            Unusable::Locked => "token locked",
        }
    }
}

/// A right PIN's request for a challenge and its SMS.
#[derive(Debug, Clone)]
pub struct ChallengeStart<'a> {
    /// The transaction id a new challenge gets.
    pub transaction_id: &'a str,
    pub serial: &'a str,
    pub user: &'a str,
    pub client: &'a str,
    /// E.164, for the per-phone cap.
    pub phone: &'a str,
    pub now: i64,
    /// When a new challenge expires.
    pub expires: i64,
    pub resend_interval_ms: i64,
    pub caps: SendCaps,
}

/// What `open_challenge` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new challenge; its SMS send is claimed.
    New(OpenChallenge),
    /// The token's challenge was already open: answer with it again.
    Again(OpenChallenge, Resend),
    /// No challenge was open and a cap stops the SMS: nothing stored.
    Limited(Limit),
}

/// A challenge that is open, as a PIN-only request answers with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenChallenge {
    pub transaction_id: String,
    pub counter: u64,
    pub expires: i64,
}

/// Whether an open challenge's SMS goes out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// The send is claimed: send the same code again.
    Claimed,
    /// Sent less than `resend_interval` ago.
    TooSoon,
    Limited(Limit),
}

/// The SMS cap that stopped a send (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    PerTokenHour,
    PerTokenDay,
    PerPhoneHour,
    PerClientMinute,
    GlobalMinute,
    GlobalDay,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Limit::PerTokenHour,
        Limit::PerTokenDay,
        Limit::PerPhoneHour,
        Limit::PerClientMinute,
        Limit::GlobalMinute,
        Limit::GlobalDay,
    ];

    /// The `[limits]` key.
    pub fn key(self) -> &'static str {
        match self {
            Limit::PerTokenHour => "per_token_hour",
            Limit::PerTokenDay => "per_token_day",
            Limit::PerPhoneHour => "per_phone_hour",
            Limit::PerClientMinute => "per_client_minute",
            Limit::GlobalMinute => "global_minute",
            Limit::GlobalDay => "global_day",
        }
    }

    /// The cap configured for it (0 = none) and its window in milliseconds.
    pub fn cap(self, caps: &SendCaps) -> (u32, i64) {
        const MINUTE: i64 = 60_000;
        const HOUR: i64 = 60 * MINUTE;
        const DAY: i64 = 24 * HOUR;
        match self {
            Limit::PerTokenHour => (caps.per_token_hour, HOUR),
            Limit::PerTokenDay => (caps.per_token_day, DAY),
            Limit::PerPhoneHour => (caps.per_phone_hour, HOUR),
            Limit::PerClientMinute => (caps.per_client_minute, MINUTE),
            Limit::GlobalMinute => (caps.global_minute, MINUTE),
            Limit::GlobalDay => (caps.global_day, DAY),
        }
    }
}

/// What a login reads and claims before its PIN is checked (`Store::begin_login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    /// `otp_lengths`.
    pub otp_lengths: Vec<u32>,
    /// `login_view`, read before the claims.
    pub view: Option<(UserRow, Vec<TokenRow>)>,
    /// `claim_failures` on the view's tokens, in their order; empty without a user.
    pub claims: Vec<FailureClaim>,
}

/// One user's login to begin (`Store::begin_logins`).
#[derive(Debug, Clone, Copy)]
pub struct LoginAsk<'a> {
    pub user: &'a str,
    pub now: i64,
    pub rules: FailureRules,
}

/// The counter a caller expects a token to be at (read with `login_view`) and the code MAC
/// for it, so that a new challenge can be opened in one step when nobody took the counter
/// in between (`Store::start_challenge`).
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub counter: u64,
    /// `code_mac(counter)`.
    pub code_mac: &'a [u8],
}

/// A right PIN's challenge to start (`Store::start_challenges`): `start_challenge`'s
/// arguments.
#[derive(Clone)]
pub struct StartAsk<'a> {
    pub start: ChallengeStart<'a>,
    pub refund: &'a [String],
    pub expected: Expected<'a>,
    pub code_mac: &'a dyn Fn(u64) -> Vec<u8>,
}

/// Which challenge an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRef<'a> {
    /// State + OTP: the transaction id.
    Transaction(&'a str),
    /// PIN + OTP: the token's one open challenge.
    OpenOf(&'a str),
}

/// An answer to claim and check.
#[derive(Debug, Clone)]
pub struct AnswerClaim<'a> {
    pub target: ChallengeRef<'a>,
    /// User-Name of the request; a challenge of another user is refused.
    pub user: &'a str,
    /// `Keys::code_mac` of the code the user typed.
    pub code_mac: &'a [u8],
    pub now: i64,
    pub max_attempts: u32,
    pub failures: FailureRules,
    /// PIN + OTP: the request's PIN check already holds a failure claim on the token, which
    /// becomes this answer's instead of a second one.
    pub claim_held: bool,
}

/// What `answer_challenge` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub outcome: AnswerOutcome,
    /// The challenge's token, if the challenge was found.
    pub serial: Option<String>,
    /// Its user and token as read before the answer; None if unknown or gone.
    pub owner: Option<(UserRow, TokenRow)>,
    /// The token's expired lock was cleared on the way.
    pub lock_cleared: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// Right code: the challenge is consumed; the user's reply attributes.
    Accepted { attributes: Vec<String> },
    /// Wrong code, compared as attempt `attempts`. `ended`: no attempt is left or the token
    /// locked, so the challenge is consumed. `locked_now`: this failure locked the token.
    Wrong {
        attempts: u32,
        ended: bool,
        locked_now: bool,
        expires: i64,
    },
    /// Not compared.
    Refused(Refusal),
}

/// Why an answer was refused without comparing its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownChallenge,
    NoOpenChallenge,
    OtherUser,
    Used,
    Expired,
    NoAttemptsLeft,
    TokenGone,
    Unusable(Unusable),
    /// The token's failures left are all claimed by checks still running.
    Busy,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownChallenge => "unknown challenge",
            Refusal::NoOpenChallenge => "PIN right, no open challenge",
            Refusal::OtherUser => "challenge belongs to another user",
            Refusal::Used => "challenge used or ended",
            Refusal::Expired => "challenge expired",
            Refusal::NoAttemptsLeft => "challenge has no attempts left",
            Refusal::TokenGone => "token of the challenge was deleted",
            Refusal::Unusable(why) => why.reason(),
            Refusal::Busy => "every failure left is claimed by checks still running",
        }
    }
}

/// An open challenge as `store copy` moves it: every column, the code only as its MAC.
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
    pub last_sent: i64,
    pub otp_mac: Vec<u8>,
}

/// A gateway's breaker as the running server last recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayStateRow {
    /// The node that recorded it (`[server] node_name`); None in a single-node store.
    pub node: Option<String>,
    pub gateway: String,
    pub state: String,
    pub failures: u32,
    pub last_error: Option<String>,
    pub open_until: Option<i64>,
    pub updated: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
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
    /// How many store threads should run this store's calls at once (`StoreThread::start`):
    /// 1 for SQLite, which serialises writers anyway; the pool's size for PostgreSQL.
    fn concurrency(&self) -> usize {
        1
    }

    /// How many logins, starts or answers one call of `begin_logins`, `start_challenges` or
    /// `answer_challenges` takes (`StoreThread`): 1 by default, each call alone, as soon as
    /// it is done. A networked store takes more, for the round trip and commit they share.
    fn batch_limit(&self) -> usize {
        1
    }

    /// The store's own counters for the periodic counters line, `name=n` non-zero only;
    /// empty by default.
    fn counters(&self) -> String {
        String::new()
    }

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
    /// Adds `user` unless it exists, then `token` only if the user has no token yet, in one
    /// transaction: `auto_enroll`, where two first logins at once (on one node or two) must
    /// make one token. False if the user had a token already.
    fn enroll_first(&self, user: &UserRow, token: &TokenRow) -> StoreResult<bool>;
    fn token(&self, serial: &str) -> StoreResult<Option<TokenRow>>;
    /// Tokens of one user, or all, ordered by serial.
    fn tokens(&self, user: Option<&str>) -> StoreResult<Vec<TokenRow>>;
    /// The user and their tokens in one read, for a login.
    fn login_view(&self, user: &str) -> StoreResult<Option<(UserRow, Vec<TokenRow>)>>;
    /// Disabling a token also ends its open challenge.
    fn set_disabled(&self, serial: &str, disabled: bool) -> StoreResult<bool>;
    /// Clears the fail counter and the lock.
    fn unlock(&self, serial: &str) -> StoreResult<bool>;
    fn delete_token(&self, serial: &str) -> StoreResult<bool>;
    /// A new PIN also ends the token's open challenge.
    fn set_pin_hash(&self, serial: &str, pin_hash: &str) -> StoreResult<bool>;
    /// The distinct OTP lengths of all tokens, ascending: which splits of a password into
    /// PIN + OTP a login tries, the same for every user.
    fn otp_lengths(&self) -> StoreResult<Vec<u32>>;
    /// Claims one failed check on each token before its PIN is checked (DESIGN section 8), in
    /// one transaction, and returns a claim per serial, in order. A claim is refused for a
    /// disabled or locked token and once `max_failures` claims are counted; an expired lock
    /// is cleared on the way. With `rules.count` false nothing is counted, usability only.
    fn claim_failures(
        &self,
        serials: &[String],
        now: i64,
        rules: &FailureRules,
    ) -> StoreResult<Vec<FailureClaim>>;
    /// `otp_lengths`, `login_view` and `claim_failures` on the user's tokens, for the start
    /// of a login. By default, the three calls (in-process on SQLite); a networked store
    /// makes it one round trip.
    fn begin_login(&self, user: &str, now: i64, rules: &FailureRules) -> StoreResult<LoginStart> {
        let otp_lengths = self.otp_lengths()?;
        let view = self.login_view(user)?;
        let claims = match &view {
            Some((_, tokens)) => {
                let serials: Vec<String> = tokens.iter().map(|t| t.serial.clone()).collect();
                self.claim_failures(&serials, now, rules)?
            }
            None => Vec::new(),
        };
        Ok(LoginStart {
            otp_lengths,
            view,
            claims,
        })
    }
    /// `begin_login` for several logins at once, a result for each in order: the logins
    /// that queued while a store thread was busy. By default one after the other; a
    /// networked store answers them in one round trip and one commit.
    fn begin_logins(&self, asks: &[LoginAsk<'_>]) -> Vec<StoreResult<LoginStart>> {
        asks.iter()
            .map(|ask| self.begin_login(ask.user, ask.now, &ask.rules))
            .collect()
    }
    /// Gives back claims whose check succeeded (or never ran).
    fn refund_failures(&self, serials: &[String]) -> StoreResult<()>;
    /// The claimed checks failed: their failures stand. Locks the tokens whose count
    /// reached `max_failures` and returns those this call locked.
    fn settle_failures(
        &self,
        serials: &[String],
        now: i64,
        max_failures: u32,
    ) -> StoreResult<Vec<String>>;
    /// The PIN was right: returns the token's one open challenge, or opens one (taking the
    /// token's counter and storing `code_mac(counter)`), and claims the SMS send against the
    /// resend interval and the caps, all in one transaction (DESIGN section 8).
    fn open_challenge(
        &self,
        start: &ChallengeStart<'_>,
        code_mac: &dyn Fn(u64) -> Vec<u8>,
    ) -> StoreResult<Started>;
    /// Gives back `refund` (`refund_failures`), then `open_challenge`. `expected` is the
    /// token's counter as the caller read it, with its MAC: a store that can take the counter
    /// only if it is still that one (PostgreSQL) opens a new challenge in one round trip, and
    /// falls back to `code_mac` when another request moved the counter in between. The
    /// outcome is the same either way; by default, the two calls.
    fn start_challenge(
        &self,
        start: &ChallengeStart<'_>,
        refund: &[String],
        expected: &Expected<'_>,
        code_mac: &dyn Fn(u64) -> Vec<u8>,
    ) -> StoreResult<Started> {
        let _ = expected;
        self.refund_failures(refund)?;
        self.open_challenge(start, code_mac)
    }
    /// `start_challenge` for several starts at once, a result for each in order, each as if
    /// started after the ones before it. By default one after the other; a networked store
    /// starts them in one round trip and one commit.
    fn start_challenges(&self, asks: &[StartAsk<'_>]) -> Vec<StoreResult<Started>> {
        asks.iter()
            .map(|ask| self.start_challenge(&ask.start, ask.refund, &ask.expected, ask.code_mac))
            .collect()
    }
    /// Answers a challenge, in one transaction: checks that it is open, unexpired, of this
    /// user, below `max_attempts`, and its token usable; claims the attempt (and a failure,
    /// unless the request holds one); compares the code's MAC; consumes the challenge on a
    /// right code and resets the fail counter, or counts the failure and ends the challenge
    /// when no attempt is left or the token locked.
    fn answer_challenge(&self, claim: &AnswerClaim<'_>) -> StoreResult<Answer>;
    /// `answer_challenge` for several answers at once, a result for each in order, each as
    /// if answered after the ones before it. By default one after the other; a networked
    /// store answers them in one round trip and one commit.
    fn answer_challenges(&self, claims: &[AnswerClaim<'_>]) -> Vec<StoreResult<Answer>> {
        claims
            .iter()
            .map(|claim| self.answer_challenge(claim))
            .collect()
    }
    fn delete_challenge(&self, transaction_id: &str) -> StoreResult<()>;
    /// Deletes challenges that expired before `before`, and SMS send records older than a
    /// day before it (no cap looks further back); returns how many challenges.
    fn purge_challenges(&self, before: i64) -> StoreResult<usize>;
    /// Challenges neither used nor expired at `now`: the metrics' gauge, and the readiness
    /// probe's proof that the store answers.
    fn open_challenges(&self, now: i64) -> StoreResult<u64>;

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

    /// Replaces the recorded breaker states of this node with these (`node` is ignored:
    /// the store knows which node it serves).
    fn save_gateway_states(&self, states: &[GatewayStateRow]) -> StoreResult<()>;
    /// The breaker states every node recorded, by gateway, then node.
    fn gateway_states(&self) -> StoreResult<Vec<GatewayStateRow>>;

    /// The challenges still open at `now` (not used, not expired), for `store copy`.
    fn open_challenge_rows(&self, now: i64) -> StoreResult<Vec<ChallengeRow>>;
    /// Adds challenges as they are, in one transaction: all or none.
    fn add_challenges(&self, challenges: &[ChallengeRow]) -> StoreResult<()>;
    /// Up to `limit` audit rows after the one numbered `after` (0: from the first), oldest
    /// first, each with its number: `store copy` pages through the trail with it.
    fn audit_page(&self, after: i64, limit: usize) -> StoreResult<Vec<(i64, AuditRow)>>;
    /// Adds audit rows in one transaction, in order.
    fn add_audit_rows(&self, rows: &[AuditRow]) -> StoreResult<()>;

    /// Deletes audit rows whose time is before `before`, oldest first and at most
    /// `PURGE_AUDIT_BATCH` per call, so that other calls get the database in between; returns
    /// how many (fewer than the batch: none is left).
    fn purge_audit(&self, before: i64) -> StoreResult<usize>;
}

/// The most audit rows one `purge_audit` call deletes.
pub const PURGE_AUDIT_BATCH: usize = 10_000;
