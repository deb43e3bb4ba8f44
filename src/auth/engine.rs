//! The decision: `Engine::decide(Request) -> Verdict`, every row of the table in DESIGN
//! section 4. Protocol and policy meet here and nowhere else.
//!
//! Every bound (attempts, failures, locks, one open challenge, SMS caps) is decided by one
//! atomic store call (DESIGN section 8); the engine asks, and acts on the answer. A PIN
//! check is claimed as a failure before Argon2 runs and refunded when it succeeds; an OTP
//! is compared by the store in the same step that claims its attempt (`answer`). The PIN
//! step's Argon2 work is one job on the PIN threads (`pin_check`), whose cost does not tell
//! anything about the user; the SMS side lives in `trigger`.
//!
//! `decide` is cancel-safe in the sense that every store step is atomic on its own, and a
//! failure claim whose check never ran is refunded when its request is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use super::pin::PinHasher;
use super::pin_check::{Candidate, PinCheck, PinMatch};
use super::pin_pool::{PinPool, PinRefused};
use super::stats::EngineStats;
use super::{Decision, Grants, Request, Verdict};
use crate::auth::keys::Keys;
use crate::config::{ChallengeConfig, Config, EventKind, FirstFactor, LimitsConfig, LockoutConfig};
use crate::events::{Event, Notifier};
use crate::ops::metrics::Metrics;
use crate::phone::Phone;
use crate::sms::Gateways;
use crate::store::{
    FailureClaim, FailureRules, Refusal, Store, StoreError, StoreThread, TokenRow, Unusable,
    UserRow,
};
use crate::template::Template;
use crate::time::now_ms;

/// What the NAS sees for every failure whose reason it must not learn.
pub const AUTHENTICATION_FAILED: &str = "Authentication failed.";
/// The PIN was right but no gateway took the SMS.
pub const SMS_NOT_SENT: &str = "The PIN was correct, but the SMS could not be sent.";
/// A wrong OTP with attempts left.
pub const WRONG_CODE: &str = "Wrong code, try again.";
/// An SMS cap stopped the code and no challenge was open.
pub const TOO_MANY_CODES: &str = "Too many codes were requested. Try again later.";

/// The policy parts of the config the engine applies.
#[derive(Debug, Clone)]
pub struct Policy {
    pub challenge: ChallengeConfig,
    pub prompt: Template,
    pub sms_text: Template,
    pub lockout: LockoutConfig,
    pub limits: LimitsConfig,
    pub reply_within: Duration,
    pub default_chain: Vec<String>,
    /// `[sms] default_region`, for numbers written without a country code.
    pub default_region: Option<String>,
    /// How long a request may take; a failure claim left unsettled longer counts as a
    /// failure.
    pub request_timeout: Duration,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        Policy {
            challenge: config.challenge.clone(),
            prompt: config.prompt.clone(),
            sms_text: config.sms_text.clone(),
            lockout: config.lockout.clone(),
            limits: config.limits.clone(),
            reply_within: config.sms.reply_within,
            default_chain: config.sms.default_chain.clone(),
            default_region: config.sms.default_region.clone(),
            request_timeout: config.server.request_timeout,
        }
    }

    /// The failure rules of `[lockout]`; `count` says whether the check counts.
    pub(super) fn failure_rules(&self, count: bool) -> FailureRules {
        FailureRules {
            max_failures: self.lockout.max_failures,
            clear_after_ms: millis(self.lockout.clear_after.0),
            count,
            claim_ttl_ms: millis(self.request_timeout),
        }
    }
}

/// The request was not decided because the PIN threads' queue had no room for it: the RADIUS
/// layer drops it (the NAS retransmits) and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the PIN queue is full")]
pub struct Overloaded;

/// The engine of one config. A reload builds another with `reconfigured`, which shares
/// what outlives a config (store, keys, PIN threads, background tasks, counters, breakers)
/// and rebuilds the rest; a request keeps the engine it started with to its end.
pub struct Engine {
    /// Where every store call of a request runs.
    pub(super) store_thread: Arc<StoreThread>,
    pub(super) gateways: Gateways,
    pub(super) notifier: Arc<Notifier>,
    /// The longest a chain may take, background delivery included.
    pub(super) send_within: Duration,
    pins: PinHasher,
    pub(super) keys: Arc<Keys>,
    pub(super) policy: Policy,
    /// Runs Argon2, one thread per core at a lower priority; shared by every config.
    pin_pool: Arc<PinPool>,
    /// SMS deliveries still running after their reply was sent.
    pub(super) background: TaskTracker,
    pub stats: Arc<EngineStats>,
    /// When each SMS limit last notified `sms_limited`.
    pub(super) limit_notices: Arc<super::trigger::LimitNotices>,
    /// `[limits]` countries and number types, checked again at every send: a number
    /// enrolled before the limits changed must not slip through.
    pub(super) numbers: crate::limits::NumberPolicy,
    /// `[directory]`, for clients whose first factor is the directory password.
    pub(super) directory: Option<Arc<crate::directory::Directory>>,
}

/// An internal failure: store or key trouble. Becomes a Reject, logged with the cause.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
    #[error("{0}")]
    Overloaded(#[from] Overloaded),
}

pub(super) type Step<T> = Result<T, Failure>;

impl Engine {
    pub fn new(
        store_thread: Arc<StoreThread>,
        gateways: Gateways,
        notifier: Arc<Notifier>,
        keys: Keys,
        config: &Config,
    ) -> Result<Engine, String> {
        let pins = PinHasher::new(keys.clone(), &config.pin)?;
        let policy = Policy::from_config(config);
        gateways.chain(&policy.default_chain)?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Engine {
            store_thread,
            gateways,
            notifier,
            send_within: config.sms.send_within,
            pins,
            keys: Arc::new(keys),
            pin_pool: Arc::new(
                PinPool::new(cores, config.limits.pin_queue)
                    .map_err(|e| format!("cannot start the Argon2 threads: {e}"))?,
            ),
            policy,
            background: TaskTracker::new(),
            stats: Arc::new(EngineStats::new(Metrics::global())),
            limit_notices: Default::default(),
            numbers: crate::limits::NumberPolicy::new(&config.limits),
            directory: None,
        })
    }

    /// The directory that `first_factor = "directory"` clients check passwords against.
    pub fn with_directory(mut self, directory: Arc<crate::directory::Directory>) -> Engine {
        self.directory = Some(directory);
        self
    }

    /// The engine of a new config (already checked by `Config::load`): its policy,
    /// gateways, events, number checks and PIN cost, with the store, keys, PIN threads,
    /// background tasks, counters and breakers of this one. `[limits] pin_queue` sizes the
    /// PIN threads' queue, which stays as it started.
    pub fn reconfigured(&self, config: &Config) -> Result<Engine, String> {
        let gateways = self.gateways.reconfigured(config)?;
        let policy = Policy::from_config(config);
        gateways.chain(&policy.default_chain)?;
        let notifier = Arc::new(self.notifier.reconfigured(config, gateways.clone()));
        Ok(Engine {
            store_thread: self.store_thread.clone(),
            gateways,
            notifier,
            send_within: config.sms.send_within,
            pins: PinHasher::new(self.keys.as_ref().clone(), &config.pin)?,
            keys: self.keys.clone(),
            pin_pool: self.pin_pool.clone(),
            policy,
            background: self.background.clone(),
            stats: self.stats.clone(),
            limit_notices: self.limit_notices.clone(),
            numbers: crate::limits::NumberPolicy::new(&config.limits),
            // A reload applies the new [directory] whole: a new pool, cache and breakers.
            directory: match &config.directory {
                Some(directory) => Some(Arc::new(crate::directory::Directory::new(directory)?)),
                None => None,
            },
        })
    }

    /// The store thread, for health checks and gauges read at scrape time.
    pub fn store(&self) -> &Arc<StoreThread> {
        &self.store_thread
    }

    /// The gateways of this config, with their shared breakers.
    pub fn gateways(&self) -> &Gateways {
        &self.gateways
    }

    /// `[sms] default_chain`, for readiness.
    pub fn default_chain(&self) -> &[String] {
        &self.policy.default_chain
    }

    /// Argon2 jobs waiting for a PIN thread.
    pub fn pin_queued(&self) -> usize {
        self.pin_pool.queued()
    }

    /// The notifications of this config; serve waits for their tasks at shutdown (shared
    /// by every config).
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// The store's own counters (`Store::counters`), for the counters line.
    pub fn store_counters(&self) -> String {
        self.store_thread.counters()
    }

    /// SMS deliveries still running in the background; serve waits for them at shutdown.
    pub fn background(&self) -> &TaskTracker {
        &self.background
    }

    /// Decides a request, writes its audit row, and returns the verdict; `Overloaded` when
    /// the request is to be dropped unanswered.
    pub async fn decide(&self, request: &Request) -> Result<Verdict, Overloaded> {
        let started = Instant::now();
        let verdict = match self.decide_inner(request).await {
            Ok(verdict) => verdict,
            Err(Failure::Overloaded(overloaded)) => {
                self.stats.overloaded();
                return Err(overloaded);
            }
            Err(failure) => {
                tracing::error!(user = %crate::logging::printable(&request.user_name), error = %failure, "request failed on an internal error");
                reject(format!("internal error: {failure}"))
            }
        };
        self.stats.decided(&verdict);
        let row = crate::store::AuditRow {
            time: now_ms(),
            client: request.client.clone(),
            nas_ip: request.nas_ip.clone(),
            nas_identifier: request.nas_identifier.clone(),
            calling_station_id: request.calling_station_id.clone(),
            user: request.user_name.clone(),
            serial: verdict.serial.clone(),
            outcome: verdict.decision.outcome().to_string(),
            reason: verdict.reason.clone(),
            phone_masked: verdict.phone_masked.clone(),
            gateway: verdict.gateway.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            attributes: request.attributes.clone(),
        };
        // The reply need not wait for the row: the store thread writes it next, and serve
        // flushes the store before it exits. (This waits only when thousands are queued.)
        self.store_thread.submit_audit(row).await;
        Ok(verdict)
    }

    async fn decide_inner(&self, request: &Request) -> Step<Verdict> {
        let Some(password) = request.password.as_deref() else {
            return Ok(reject("no User-Password (only PAP is supported)"));
        };
        // No user's name holds a control character (enrolment refuses them, and PostgreSQL's
        // text cannot hold NUL): such a name goes no further, where a batch of logins would
        // fail for every request that shares it.
        if request.user_name.chars().any(char::is_control) {
            return Ok(reject("a User-Name with a control character is no user's"));
        }
        if request.first_factor == FirstFactor::Directory {
            return self.decide_directory(request, password).await;
        }
        match &request.state {
            Some(state) => self.answer_with_state(request, state, password).await,
            None => self.without_state(request, password).await,
        }
    }

    /// PIN only (trigger) or PIN + OTP (answer).
    ///
    /// One store call (`begin_login`) reads the user and claims a failure on each token that may be checked;
    /// one job on the PIN threads checks the password (its cost the same for every user, see
    /// `pin_check`); a match refunds the claims in the store call that goes on.
    async fn without_state(&self, request: &Request, password: &[u8]) -> Step<Verdict> {
        let now = now_ms();
        let rules = self
            .policy
            .failure_rules(self.policy.lockout.count_wrong_pin);
        let name = request.user_name.clone();
        let crate::store::LoginStart {
            otp_lengths,
            view,
            claims,
        } = self.store_thread.begin_login(name, now, rules).await?;
        let HeldLogin {
            user,
            tokens,
            claims,
            mut held,
            checkable,
        } = self.hold_login(view, claims, &rules).await?;
        let check = PinCheck {
            user: request.user_name.clone(),
            password: zeroize::Zeroizing::new(password.to_vec()),
            otp_lengths,
            tokens: checkable
                .iter()
                .filter_map(|&i| tokens.get(i))
                .map(|t| Candidate {
                    pin_hash: t.pin_hash.clone(),
                    otp_length: t.otp_length,
                })
                .collect(),
        };
        let pins = self.pins.clone();
        let (matched, _runs) = self
            .pin_pool
            .run(&request.client, move |memory| {
                let started = Instant::now();
                let matched = check.run(&pins, memory);
                Metrics::global()
                    .argon2_seconds
                    .observe(started.elapsed().as_secs_f64());
                matched
            })
            .await
            .map_err(|refused| match refused {
                PinRefused::Overloaded => Failure::Overloaded(Overloaded),
                PinRefused::Stopped => Failure::Other("the PIN threads have stopped".into()),
            })?;
        let Some(user) = user else {
            return Ok(reject("unknown user"));
        };
        let token_at = |index: usize| {
            checkable
                .get(index)
                .and_then(|&i| tokens.get(i).map(|t| (i, t.clone())))
        };
        match matched {
            PinMatch::None => {
                let failed = held.take();
                let max = self.policy.lockout.max_failures;
                let locked = self
                    .db(move |s| s.settle_failures(&failed, now_ms(), max))
                    .await?;
                for token in tokens.iter().filter(|t| locked.contains(&t.serial)) {
                    self.locked(request, &user, token);
                }
                let reason = match (tokens.len(), checkable.len(), claims.first()) {
                    (0, _, _) => "user has no token",
                    (_, 0, Some(FailureClaim::Refused(Unusable::Disabled))) => "token disabled",
                    (_, 0, Some(FailureClaim::Busy)) => Refusal::Busy.reason(),
                    (_, 0, _) => "token locked",
                    _ => "wrong PIN",
                };
                let serial = (tokens.len() == 1)
                    .then(|| tokens.first().map(|t| t.serial.clone()))
                    .flatten();
                Ok(Verdict {
                    serial,
                    ..reject(reason)
                })
            }
            PinMatch::Trigger(index) => {
                let Some((_, token)) = token_at(index) else {
                    return Ok(reject("internal error: matched token out of range"));
                };
                let refund = held.take();
                // Now, not when the request came: claims may have waited for their turn.
                self.trigger(request, &user, token, refund, now_ms()).await
            }
            PinMatch::Answer(index, otp) => {
                let Some((i, token)) = token_at(index) else {
                    return Ok(reject("internal error: matched token out of range"));
                };
                let claim_held = matches!(claims.get(i), Some(FailureClaim::Claimed { .. }));
                let mut refund = held.take();
                refund.retain(|serial| *serial != token.serial);
                self.answer_with_pin(request, &user, token, &otp, refund, claim_held, now_ms())
                    .await
            }
        }
    }

    /// The start of a login once its claims are made: holds them (refunded if the request
    /// ends without settling them), asks again for those refused as `Busy`, announces locks
    /// that cleared, and names the tokens whose check may run. The PIN and the directory
    /// first factor both start so.
    pub(super) async fn hold_login(
        &self,
        view: Option<(UserRow, Vec<TokenRow>)>,
        mut claims: Vec<FailureClaim>,
        rules: &FailureRules,
    ) -> Step<HeldLogin> {
        let (user, tokens) = match view {
            Some((user, tokens)) => (Some(user), tokens),
            None => (None, Vec::new()),
        };
        let mut held = HeldClaims::new(self);
        held.add(&tokens, &claims);
        self.claim_busy(&tokens, &mut claims, &mut held, rules)
            .await?;
        if let Some(user) = &user {
            for (token, claim) in tokens.iter().zip(&claims) {
                if claim.lock_cleared() {
                    self.lock_cleared(user, token);
                }
            }
        }
        let checkable: Vec<usize> = (0..tokens.len())
            .filter(|&i| claims.get(i).is_some_and(FailureClaim::allows_check))
            .collect();
        Ok(HeldLogin {
            user,
            tokens,
            claims,
            held,
            checkable,
        })
    }

    /// Asks again for the claims refused as `Busy` (every failure left is claimed by checks
    /// still running) until those checks settle, for at most `BUSY_WAIT`: concurrent
    /// logins of one user wait their turn rather than fail, and never exceed the bound.
    pub(super) async fn claim_busy(
        &self,
        tokens: &[TokenRow],
        claims: &mut [FailureClaim],
        held: &mut HeldClaims,
        rules: &FailureRules,
    ) -> Step<()> {
        let mut wait = BusyWait::new();
        while claims.contains(&FailureClaim::Busy) && wait.again().await {
            let busy: Vec<usize> = (0..claims.len())
                .filter(|&i| claims.get(i) == Some(&FailureClaim::Busy))
                .collect();
            let serials: Vec<String> = busy
                .iter()
                .filter_map(|&i| tokens.get(i).map(|t| t.serial.clone()))
                .collect();
            let rules = *rules;
            let again = self
                .db(move |s| s.claim_failures(&serials, now_ms(), &rules))
                .await?;
            for (&i, claim) in busy.iter().zip(again) {
                if let (Some(slot), Some(token)) = (claims.get_mut(i), tokens.get(i)) {
                    *slot = claim;
                    held.add(std::slice::from_ref(token), std::slice::from_ref(&claim));
                }
            }
        }
        Ok(())
    }

    /// A token's expired lock was cleared on the way: tell the rules that listen.
    pub(super) fn lock_cleared(&self, user: &UserRow, token: &TokenRow) {
        tracing::info!(serial = %token.serial, event = "token_unlocked", "lock cleared after clear_after");
        self.notifier
            .notify(self.event(EventKind::TokenUnlocked, user, Some(token), None));
    }

    /// A failure locked a token: log it and tell the rules that listen.
    pub(super) fn locked(&self, request: &Request, user: &UserRow, token: &TokenRow) {
        announce_lock(&self.notifier, self.locked_event(request, user, token));
    }

    /// The `token_locked` event a failure that locks `token` announces.
    fn locked_event(&self, request: &Request, user: &UserRow, token: &TokenRow) -> Event {
        lock_event(
            user,
            token,
            client_of(request),
            self.policy.lockout.max_failures,
        )
    }

    /// After the challenge was consumed: tell the rules that listen, and gather what the
    /// Access-Accept grants.
    pub(super) async fn after_login(
        &self,
        request: &Request,
        user: &UserRow,
        token: &TokenRow,
        attributes: Vec<String>,
    ) -> Step<Grants> {
        if self.notifier.wants(EventKind::LoginSuccess) {
            let (name, client, station) = (
                user.name.clone(),
                request.client.clone(),
                request.calling_station_id.clone(),
            );
            let seen = self
                .db(move |s| s.accepted_before(&name, &client, station.as_deref()))
                .await?;
            let mut event = self.event(
                EventKind::LoginSuccess,
                user,
                Some(token),
                Some(client_of(request)),
            );
            event.new_client = !seen;
            self.notifier.notify(event);
        }
        Ok(Grants {
            group: user.group.clone(),
            attributes,
            serial: Some(token.serial.clone()),
        })
    }

    pub(super) fn event(
        &self,
        kind: EventKind,
        user: &UserRow,
        token: Option<&TokenRow>,
        client: Option<String>,
    ) -> Event {
        event_of(kind, user, token, client)
    }

    /// Runs a store call on the store thread.
    pub(super) async fn db<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.store_thread.run(call).await
    }
}

/// How long a request waits for a token whose failures left are all claimed.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// Waiting for the claims of checks still running to settle: growing pauses (2 ms to
/// 50 ms), for at most `BUSY_WAIT`.
pub(super) struct BusyWait {
    deadline: Instant,
    pause: Duration,
}

impl BusyWait {
    pub(super) fn new() -> BusyWait {
        BusyWait {
            deadline: Instant::now() + BUSY_WAIT,
            pause: Duration::from_millis(2),
        }
    }

    /// Pauses and returns true, or returns false at once if the time is up.
    pub(super) async fn again(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        true
    }
}

/// Failure claims a request holds while its PIN is checked. Dropped unsettled (the request
/// was cancelled, or its PIN job refused), they are given back: no check was answered, so
/// nothing was learnt that the count has to pay for.
/// A login's user, tokens and failure claims, held (`Engine::hold_login`).
pub(super) struct HeldLogin {
    pub(super) user: Option<UserRow>,
    pub(super) tokens: Vec<TokenRow>,
    pub(super) claims: Vec<FailureClaim>,
    pub(super) held: HeldClaims,
    /// Indexes of the tokens whose check may run.
    pub(super) checkable: Vec<usize>,
}

pub(super) struct HeldClaims {
    serials: Vec<String>,
    store_thread: Arc<StoreThread>,
}

impl HeldClaims {
    pub(super) fn new(engine: &Engine) -> HeldClaims {
        HeldClaims {
            serials: Vec::new(),
            store_thread: engine.store_thread.clone(),
        }
    }

    /// Holds the claims among `claims` (of `tokens`, in order) that were granted.
    pub(super) fn add(&mut self, tokens: &[TokenRow], claims: &[FailureClaim]) {
        for (token, claim) in tokens.iter().zip(claims) {
            if matches!(claim, FailureClaim::Claimed { .. }) {
                self.serials.push(token.serial.clone());
            }
        }
    }

    /// Takes the claims, for the caller to refund in its next store call.
    pub(super) fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.serials)
    }
}

impl Drop for HeldClaims {
    fn drop(&mut self) {
        if self.serials.is_empty() {
            return;
        }
        let serials = std::mem::take(&mut self.serials);
        let store_thread = self.store_thread.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                store_thread
                    .submit("a failure refund", move |s| s.refund_failures(&serials))
                    .await;
            });
        }
    }
}

/// An event about `user` (and `token`), with the owner's phone for `to = "owner"`. Parsing
/// that phone is not free: a path whose cost must not depend on the user builds events only
/// once it knows it sends them.
pub(super) fn event_of(
    kind: EventKind,
    user: &UserRow,
    token: Option<&TokenRow>,
    client: Option<String>,
) -> Event {
    Event {
        serial: token.map(|t| t.serial.clone()),
        client,
        failures: token.map(|t| t.fail_count),
        owner: token.and_then(|t| owner_phone(user, t).ok()),
        ..Event::new(kind, &user.name)
    }
}

/// The `token_locked` event of the failure that locked `token`.
pub(super) fn lock_event(user: &UserRow, token: &TokenRow, client: String, max: u32) -> Event {
    let mut event = event_of(EventKind::TokenLocked, user, Some(token), Some(client));
    event.failures = Some(max);
    event
}

/// Logs a lock and tells the rules that listen.
pub(super) fn announce_lock(notifier: &Arc<Notifier>, event: Event) {
    let (user, serial, max) = (
        crate::logging::printable(&event.user).to_string(),
        event.serial.clone().unwrap_or_default(),
        event.failures.unwrap_or_default(),
    );
    tracing::warn!(user = %user, serial = %serial, event = "token_locked", "token locked after {max} failures");
    notifier.notify(event);
}

/// The phone a token sends to: its own, or its owner's.
pub(super) fn owner_phone(user: &UserRow, token: &TokenRow) -> Result<Phone, String> {
    Phone::parse(token.phone.as_deref().unwrap_or(&user.phone), None)
}

/// Who logged in from where, for notifications: Calling-Station-Id, else the RADIUS client.
pub(super) fn client_of(request: &Request) -> String {
    request
        .calling_station_id
        .clone()
        .unwrap_or_else(|| request.client.clone())
}

pub(super) fn reject(reason: impl Into<String>) -> Verdict {
    Verdict {
        decision: Decision::Reject {
            message: Some(AUTHENTICATION_FAILED.to_string()),
        },
        reason: reason.into(),
        serial: None,
        phone_masked: None,
        gateway: None,
    }
}

pub(super) fn accept(reason: &str, grants: Grants) -> Verdict {
    Verdict {
        decision: Decision::Accept(grants),
        reason: reason.to_string(),
        serial: None,
        phone_masked: None,
        gateway: None,
    }
}

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
