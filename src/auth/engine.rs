//! The decision: `Engine::decide(Request) -> Verdict`, every row of the table in DESIGN
//! section 4. Protocol and policy meet here and nowhere else.
//!
//! Slow work goes off the async threads: the store runs on its own thread, Argon2 on its
//! own low-priority threads (`pin_pool`, one per core), and an SMS that
//! outlives `reply_within` finishes in the background on the engine's task tracker.
//!
//! `decide` is cancel-safe in the sense that every store step is atomic on its own; a
//! cancelled request can leave an unanswered challenge, which simply expires.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::task::TaskTracker;

use super::lockout::{LockState, lock_state};
use super::pin_pool::PinPool;
use super::{Decision, Grants, Request, TransactionId, Verdict, otp, pin::PinHasher};
use crate::auth::keys::Keys;
use crate::config::{ChallengeConfig, ClientMode, Config, EventKind, LockoutConfig};
use crate::events::{Event, Notifier};
use crate::sms::template::{Escape, Tag, Template};
use crate::sms::{Chain, Gateways, Message, Phone};
use crate::store::{AuditRow, ChallengeRow, Store, StoreError, StoreThread, TokenRow, UserRow};

/// What the NAS sees for every failure whose reason it must not learn.
pub const AUTHENTICATION_FAILED: &str = "Authentication failed.";
/// The PIN was right but no gateway took the SMS.
pub const SMS_NOT_SENT: &str = "The PIN was correct, but the SMS could not be sent.";
/// A wrong OTP with attempts left.
pub const WRONG_CODE: &str = "Wrong code, try again.";

/// The policy parts of the config the engine applies.
#[derive(Debug, Clone)]
pub struct Policy {
    pub challenge: ChallengeConfig,
    pub prompt: Template,
    pub sms_text: Template,
    pub lockout: LockoutConfig,
    pub reply_within: Duration,
    pub default_chain: Vec<String>,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        Policy {
            challenge: config.challenge.clone(),
            prompt: config.prompt.clone(),
            sms_text: config.sms_text.clone(),
            lockout: config.lockout.clone(),
            reply_within: config.sms.reply_within,
            default_chain: config.sms.default_chain.clone(),
        }
    }
}

pub struct Engine {
    /// Where every store call of a request runs.
    store_thread: Arc<StoreThread>,
    gateways: Gateways,
    notifier: Arc<Notifier>,
    /// The longest a chain may take, background delivery included.
    send_within: Duration,
    pins: PinHasher,
    keys: Arc<Keys>,
    policy: Policy,
    /// Runs Argon2, one thread per core at a lower priority.
    pin_pool: PinPool,
    /// SMS deliveries still running after their reply was sent.
    background: TaskTracker,
}

/// How a request without State relates to one of the user's tokens.
enum PasswordMatch {
    /// password == PIN
    Trigger(TokenRow),
    /// password == PIN + OTP
    Answer(TokenRow, Vec<u8>),
    None,
}

/// An internal failure: store or key trouble. Becomes a Reject, logged with the cause.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

type Step<T> = Result<T, Failure>;

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
            policy,
            pin_pool: PinPool::new(cores, config.limits.pin_queue)
                .map_err(|e| format!("cannot start the Argon2 threads: {e}"))?,
            background: TaskTracker::new(),
        })
    }

    /// SMS deliveries still running in the background; serve waits for them at shutdown.
    pub fn background(&self) -> &TaskTracker {
        &self.background
    }

    /// Decides a request, writes its audit row, and returns the verdict.
    pub async fn decide(&self, request: &Request) -> Verdict {
        let started = Instant::now();
        let verdict = match self.decide_inner(request).await {
            Ok(verdict) => verdict,
            Err(failure) => {
                tracing::error!(user = %request.user_name, error = %failure, "request failed on an internal error");
                reject(format!("internal error: {failure}"))
            }
        };
        let row = AuditRow {
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
        self.store_thread
            .submit("the audit row", move |s| s.append_audit(&row))
            .await;
        verdict
    }

    async fn decide_inner(&self, request: &Request) -> Step<Verdict> {
        let Some(password) = request.password.as_deref() else {
            return Ok(reject("no User-Password (only PAP is supported)"));
        };
        match &request.state {
            Some(state) => self.answer_with_state(request, state, password).await,
            None => self.without_state(request, password).await,
        }
    }

    /// State + OTP: the second step of the challenge flow.
    ///
    /// The common case, a right OTP on an open challenge, is read and applied in one store
    /// call: the check runs on the store thread, so a login costs one trip there, not two.
    /// Everything else takes the general path below with what that call read.
    async fn answer_with_state(
        &self,
        request: &Request,
        state: &[u8],
        otp_given: &[u8],
    ) -> Step<Verdict> {
        let Some(tid) = TransactionId::parse(state) else {
            return Ok(reject(
                "unknown challenge (State is not an otpgate transaction id)",
            ));
        };
        let key = tid.as_str().to_string();
        let check = AnswerCheck {
            user_name: request.user_name.clone(),
            otp_given: otp_given.to_vec(),
            now: now_ms(),
            clear_after: self.policy.lockout.clear_after.0,
            keys: self.keys.clone(),
        };
        let read = self
            .db(move |s| {
                let Some((challenge, owner)) = s.challenge_view(&key)? else {
                    return Ok(None);
                };
                let finished = match &owner {
                    Some((user, token)) if check.accepts(&challenge, token) => Some(
                        s.finish_login(&challenge.transaction_id, &token.serial, &user.name)?,
                    ),
                    _ => None,
                };
                Ok(Some((challenge, owner, finished)))
            })
            .await?;
        let Some((challenge, owner, finished)) = read else {
            return Ok(reject("unknown challenge"));
        };
        let with_serial = |mut v: Verdict| {
            v.serial = Some(challenge.serial.clone());
            v
        };
        if let (Some(finished), Some((user, token))) = (finished, &owner) {
            let Some(attributes) = finished else {
                return Ok(with_serial(reject("challenge already used")));
            };
            let grants = self.after_login(request, user, token, attributes).await?;
            return Ok(with_serial(accept("OTP accepted", grants)));
        }
        if challenge.user != request.user_name {
            self.consume(&challenge).await?;
            return Ok(with_serial(reject("challenge belongs to another user")));
        }
        if challenge.used {
            return Ok(with_serial(reject("challenge already used")));
        }
        let Some((user, token)) = owner else {
            return Ok(with_serial(reject("token of the challenge was deleted")));
        };
        let now = now_ms();
        if challenge.expires <= now {
            self.consume(&challenge).await?;
            self.fail(request, &user, &[&token]).await?;
            return Ok(with_serial(reject("challenge expired")));
        }
        if let Some(reason) = self.unusable(&user, &token, now).await? {
            self.consume(&challenge).await?;
            return Ok(with_serial(reject(reason)));
        }
        if otp_right(&self.keys, &token, challenge.counter, otp_given)? {
            let Some(grants) = self
                .login_succeeded(request, &user, &token, &challenge)
                .await?
            else {
                return Ok(with_serial(reject("challenge already used")));
            };
            return Ok(with_serial(accept("OTP accepted", grants)));
        }
        let newly_locked = self.fail(request, &user, &[&token]).await?;
        let key = challenge.transaction_id.clone();
        let attempts = self.db(move |s| s.add_attempt(&key)).await?;
        if attempts < self.policy.challenge.max_attempts && newly_locked.is_empty() {
            let remaining =
                Duration::from_millis(u64::try_from(challenge.expires - now).unwrap_or(0));
            let decision = Decision::Challenge {
                state: tid,
                prompt: WRONG_CODE.to_string(),
                timeout: remaining,
            };
            return Ok(with_serial(Verdict {
                decision,
                ..reject(format!("wrong OTP, attempt {attempts}"))
            }));
        }
        self.consume(&challenge).await?;
        Ok(with_serial(reject(format!(
            "wrong OTP, attempt {attempts}, no attempts left"
        ))))
    }

    /// PIN only (trigger) or PIN + OTP (answer).
    ///
    /// Every reject here costs as many Argon2 runs as a wrong PIN would, so that timing does
    /// not tell an unknown user, a wrong PIN, or a right PIN on a locked or disabled token
    /// apart (DESIGN section 4). Only a challenge or an accept, which differ anyway, may
    /// return sooner.
    async fn without_state(&self, request: &Request, password: &[u8]) -> Step<Verdict> {
        let name = request.user_name.clone();
        let view = self.db(move |s| s.login_view(&name)).await?;
        let (user, tokens) = match view {
            Some((user, tokens)) if !tokens.is_empty() => (user, tokens),
            found => {
                let runs = runs_per_token(password, self.policy.challenge.otp_length);
                self.spend_decoy_time(password, runs).await;
                let reason = if found.is_some() {
                    "user has no token"
                } else {
                    "unknown user"
                };
                return Ok(reject(reason));
            }
        };
        let wrong_pin_runs: usize = tokens
            .iter()
            .map(|t| runs_per_token(password, t.otp_length))
            .sum();
        let (matched, runs) = self.match_password(&tokens, password).await;
        let now = now_ms();
        let (token, otp_given) = match matched {
            PasswordMatch::None => {
                if self.policy.lockout.count_wrong_pin {
                    let all: Vec<&TokenRow> = tokens.iter().collect();
                    self.fail(request, &user, &all).await?;
                }
                return Ok(reject("wrong PIN"));
            }
            PasswordMatch::Trigger(token) => (token, None),
            PasswordMatch::Answer(token, otp) => (token, Some(otp)),
        };
        if let Some(reason) = self.unusable(&user, &token, now).await? {
            let missing = wrong_pin_runs.saturating_sub(runs);
            self.spend_decoy_time(password, missing).await;
            return Ok(Verdict {
                serial: Some(token.serial),
                ..reject(reason)
            });
        }
        match otp_given {
            None => self.trigger(request, &user, token, now).await,
            Some(otp) => self.answer_with_pin(request, &user, token, &otp, now).await,
        }
    }

    /// Checks each token's PIN against the password and against the password less an OTP,
    /// stopping at the first match. Returns the match and how many Argon2 runs it took.
    async fn match_password(&self, tokens: &[TokenRow], password: &[u8]) -> (PasswordMatch, usize) {
        let mut runs = 0;
        for token in tokens {
            runs += 1;
            if self.verify_pin(password, &token.pin_hash).await {
                return (PasswordMatch::Trigger(token.clone()), runs);
            }
            let otp_length = token.otp_length as usize;
            if let Some(pin_length) = password.len().checked_sub(otp_length).filter(|n| *n > 0) {
                runs += 1;
                let (pin, otp) = password.split_at(pin_length);
                if self.verify_pin(pin, &token.pin_hash).await {
                    return (PasswordMatch::Answer(token.clone(), otp.to_vec()), runs);
                }
            }
        }
        (PasswordMatch::None, runs)
    }

    /// Spends the time of `runs` Argon2 verifications.
    async fn spend_decoy_time(&self, password: &[u8], runs: usize) {
        for _ in 0..runs {
            // One pool client for every request until the engine passes request.client.
            let _ = self.pin_pool.verify_decoy("", &self.pins, password).await;
        }
    }

    async fn verify_pin(&self, pin: &[u8], hash: &str) -> bool {
        // One pool client for every request until the engine passes request.client.
        self.pin_pool
            .verify("", &self.pins, pin, hash)
            .await
            .unwrap_or(false)
    }

    /// Why a token cannot be used now, clearing an expired lock on the way.
    async fn unusable(
        &self,
        user: &UserRow,
        token: &TokenRow,
        now: i64,
    ) -> Step<Option<&'static str>> {
        match usability(token, now, self.policy.lockout.clear_after.0) {
            Usability::Usable => Ok(None),
            Usability::Blocked(reason) => Ok(Some(reason)),
            Usability::LockExpired => {
                let serial = token.serial.clone();
                self.db(move |s| s.unlock(&serial)).await?;
                tracing::info!(serial = %token.serial, event = "token_unlocked", "lock cleared after clear_after");
                self.notifier
                    .notify(self.event(EventKind::TokenUnlocked, user, Some(token), None));
                Ok(None)
            }
        }
    }

    /// PIN right: make a challenge, send the SMS, answer per the client's mode.
    async fn trigger(
        &self,
        request: &Request,
        user: &UserRow,
        token: TokenRow,
        now: i64,
    ) -> Step<Verdict> {
        let phone = owner_phone(user, &token).map_err(Failure::Other)?;
        let phone_masked = phone.masked();
        let chain = self.chain_for(&token)?;
        let validity = self.policy.challenge.validity.0;
        let validity_ms = i64::try_from(validity.as_millis()).unwrap_or(i64::MAX);
        let tid = TransactionId::random().map_err(|e| Failure::Other(e.to_string()))?;
        let challenge = ChallengeRow {
            transaction_id: tid.as_str().to_string(),
            serial: token.serial.clone(),
            user: user.name.clone(),
            client: request.client.clone(),
            counter: 0,
            created: now,
            expires: now.saturating_add(validity_ms),
            attempts: 0,
            sends: 1,
            used: false,
        };
        let counter = self.db(move |s| s.start_challenge(&challenge)).await?;
        let seed = self
            .keys
            .unseal(&token.sealed_seed)
            .map_err(|e| Failure::Other(e.to_string()))?;
        let code = otp::hotp(&seed, counter, token.otp_length);

        let text = self.policy.sms_text.render(|_| code.clone(), Escape::None);
        let deadline = Instant::now() + self.send_within;
        let message = Message { to: phone, text };
        let sending = self
            .background
            .spawn(async move { chain.send(&message, deadline).await });
        let base = Verdict {
            decision: Decision::Reject { message: None },
            reason: String::new(),
            serial: Some(token.serial.clone()),
            phone_masked: Some(phone_masked.clone()),
            gateway: None,
        };
        let (gateway, reason) = match tokio::time::timeout(self.policy.reply_within, sending).await
        {
            Ok(Ok(delivery)) if delivery.delivered() => {
                (delivery.gateway.clone(), delivery.summary())
            }
            Ok(Ok(delivery)) => {
                let key = tid.as_str().to_string();
                self.db(move |s| s.delete_challenge(&key)).await?;
                tracing::warn!(user = %user.name, serial = %token.serial, to = %phone_masked, event = "sms_failed", "{}", delivery.summary());
                let client = Some(client_of(request));
                self.notifier
                    .notify(self.event(EventKind::SmsFailed, user, Some(&token), client));
                return Ok(Verdict {
                    decision: Decision::Reject {
                        message: Some(SMS_NOT_SENT.to_string()),
                    },
                    reason: format!("PIN right, SMS failed: {}", delivery.summary()),
                    ..base
                });
            }
            Ok(Err(join)) => return Err(Failure::Other(format!("SMS task failed: {join}"))),
            Err(_) => (
                None,
                format!("SMS still sending after {:?}", self.policy.reply_within),
            ),
        };
        let prompt = self.policy.prompt.render(
            |tag| {
                if tag == Tag::PhoneMasked {
                    phone_masked.clone()
                } else {
                    String::new()
                }
            },
            Escape::None,
        );
        let decision = match request.mode {
            ClientMode::Challenge => Decision::Challenge {
                state: tid,
                prompt,
                timeout: validity,
            },
            ClientMode::TwoPass => Decision::Reject {
                message: Some(prompt),
            },
        };
        Ok(Verdict {
            decision,
            reason: format!("PIN right, challenge created, {reason}"),
            gateway,
            ..base
        })
    }

    /// PIN + OTP: accept if the OTP matches an open challenge of the token.
    async fn answer_with_pin(
        &self,
        request: &Request,
        user: &UserRow,
        token: TokenRow,
        otp_given: &[u8],
        now: i64,
    ) -> Step<Verdict> {
        let seed = self
            .keys
            .unseal(&token.sealed_seed)
            .map_err(|e| Failure::Other(e.to_string()))?;
        // Finding the challenge and consuming it are one store call, as on the State path.
        let (serial, name, digits) = (token.serial.clone(), user.name.clone(), token.otp_length);
        let otp_given = otp_given.to_vec();
        let (open, finished) = self
            .db(move |s| {
                let open = s.open_challenges(&serial, now)?;
                let mut matched = None;
                // Check every open challenge so the time does not tell which one matched.
                for challenge in &open {
                    if otp::matches(&otp::hotp(&seed, challenge.counter, digits), &otp_given) {
                        matched = Some(&challenge.transaction_id);
                    }
                }
                let finished = match matched {
                    Some(tid) => Some(s.finish_login(tid, &serial, &name)?),
                    None => None,
                };
                Ok((open.len(), finished))
            })
            .await?;
        let serial = Some(token.serial.clone());
        match finished {
            Some(Some(attributes)) => {
                let grants = self.after_login(request, user, &token, attributes).await?;
                Ok(Verdict {
                    serial,
                    ..accept("PIN and OTP accepted", grants)
                })
            }
            Some(None) => Ok(Verdict {
                serial,
                ..reject("challenge already used")
            }),
            None => {
                self.fail(request, user, &[&token]).await?;
                let reason = if open == 0 {
                    "PIN right, no open challenge"
                } else {
                    "PIN right, wrong OTP"
                };
                Ok(Verdict {
                    serial,
                    ..reject(reason)
                })
            }
        }
    }

    fn chain_for(&self, token: &TokenRow) -> Step<Chain> {
        let names = match &token.gateway {
            Some(name) => std::slice::from_ref(name),
            None => &self.policy.default_chain[..],
        };
        self.gateways
            .chain(names)
            .map_err(|e| Failure::Other(format!("token {}: {e}", token.serial)))
    }

    async fn consume(&self, challenge: &ChallengeRow) -> Step<bool> {
        let key = challenge.transaction_id.clone();
        Ok(self.db(move |s| s.consume_challenge(&key)).await?)
    }

    /// Counts a failure on tokens, notifies about those it locked, and returns them.
    async fn fail(
        &self,
        request: &Request,
        user: &UserRow,
        tokens: &[&TokenRow],
    ) -> Step<Vec<String>> {
        let serials: Vec<String> = tokens.iter().map(|t| t.serial.clone()).collect();
        let max = self.policy.lockout.max_failures;
        let now = now_ms();
        let locked = self
            .db(move |s| s.record_failure(&serials, max, now))
            .await?;
        for token in tokens.iter().filter(|t| locked.contains(&t.serial)) {
            tracing::warn!(user = %user.name, serial = %token.serial, event = "token_locked", "token locked after {max} failures");
            let mut event = self.event(
                EventKind::TokenLocked,
                user,
                Some(token),
                Some(client_of(request)),
            );
            event.failures = Some(token.fail_count.saturating_add(1));
            self.notifier.notify(event);
        }
        Ok(locked)
    }

    /// A login went through: consume the challenge (None if another request did first),
    /// reset the fail counter, and go on as `after_login`.
    async fn login_succeeded(
        &self,
        request: &Request,
        user: &UserRow,
        token: &TokenRow,
        challenge: &ChallengeRow,
    ) -> Step<Option<Grants>> {
        let (tid, serial, name) = (
            challenge.transaction_id.clone(),
            token.serial.clone(),
            user.name.clone(),
        );
        let Some(attributes) = self
            .db(move |s| s.finish_login(&tid, &serial, &name))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(
            self.after_login(request, user, token, attributes).await?,
        ))
    }

    /// After the challenge was consumed: tell the rules that listen, and gather what the
    /// Access-Accept grants.
    async fn after_login(
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

    fn event(
        &self,
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

    /// Runs a store call on the store thread.
    async fn db<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.store_thread.run(call).await
    }
}

/// Whether a token can be used now.
enum Usability {
    Usable,
    Blocked(&'static str),
    /// Locked, and `clear_after` has passed: usable once the lock is cleared.
    LockExpired,
}

fn usability(token: &TokenRow, now: i64, clear_after: Duration) -> Usability {
    if token.disabled {
        return Usability::Blocked("token disabled");
    }
    match lock_state(token.locked_at, now, clear_after) {
        LockState::Unlocked => Usability::Usable,
        LockState::Locked => Usability::Blocked("token locked"),
        LockState::Expired => Usability::LockExpired,
    }
}

/// Whether `given` is the token's OTP for `counter`, compared in constant time.
fn otp_right(keys: &Keys, token: &TokenRow, counter: u64, given: &[u8]) -> Step<bool> {
    let seed = keys
        .unseal(&token.sealed_seed)
        .map_err(|e| Failure::Other(e.to_string()))?;
    Ok(otp::matches(
        &otp::hotp(&seed, counter, token.otp_length),
        given,
    ))
}

/// The answer step's common case, decided on the store thread: a State + OTP answer that
/// may consume its challenge at once. Anything it does not accept goes the general way.
struct AnswerCheck {
    user_name: String,
    otp_given: Vec<u8>,
    now: i64,
    clear_after: Duration,
    keys: Arc<Keys>,
}

impl AnswerCheck {
    fn accepts(&self, challenge: &ChallengeRow, token: &TokenRow) -> bool {
        challenge.user == self.user_name
            && !challenge.used
            && challenge.expires > self.now
            && matches!(
                usability(token, self.now, self.clear_after),
                Usability::Usable
            )
            && otp_right(&self.keys, token, challenge.counter, &self.otp_given).unwrap_or(false)
    }
}

/// The phone a token sends to: its own, or its owner's.
fn owner_phone(user: &UserRow, token: &TokenRow) -> Result<Phone, String> {
    Phone::parse(token.phone.as_deref().unwrap_or(&user.phone), None)
}

/// Who logged in from where, for notifications: Calling-Station-Id, else the RADIUS client.
fn client_of(request: &Request) -> String {
    request
        .calling_station_id
        .clone()
        .unwrap_or_else(|| request.client.clone())
}

/// Argon2 runs a wrong password costs against one token: the whole password, and the
/// password less an OTP when it is long enough to hold one.
fn runs_per_token(password: &[u8], otp_length: u32) -> usize {
    if password.len() > otp_length as usize {
        2
    } else {
        1
    }
}

fn reject(reason: impl Into<String>) -> Verdict {
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

fn accept(reason: &str, grants: Grants) -> Verdict {
    Verdict {
        decision: Decision::Accept(grants),
        reason: reason.to_string(),
        serial: None,
        phone_masked: None,
        gateway: None,
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn token(keys: &Keys) -> TokenRow {
        TokenRow {
            serial: "S1".into(),
            user: "alice".into(),
            phone: None,
            pin_hash: String::new(),
            sealed_seed: keys.seal(b"12345678901234567890").unwrap(),
            counter: 1,
            otp_length: 6,
            fail_count: 0,
            locked_at: None,
            disabled: false,
            gateway: None,
            created: 0,
        }
    }

    fn challenge() -> ChallengeRow {
        ChallengeRow {
            transaction_id: "t".into(),
            serial: "S1".into(),
            user: "alice".into(),
            client: "nas".into(),
            counter: 0,
            created: NOW - 1,
            expires: NOW + 1,
            attempts: 0,
            sends: 1,
            used: false,
        }
    }

    fn check(otp: &str) -> AnswerCheck {
        AnswerCheck {
            user_name: "alice".into(),
            otp_given: otp.as_bytes().to_vec(),
            now: NOW,
            clear_after: Duration::from_secs(60),
            keys: Arc::new(Keys::for_tests()),
        }
    }

    #[test]
    fn the_store_thread_accepts_only_a_right_otp_on_an_open_challenge_of_a_usable_token() {
        // RFC 4226 Appendix D: counter 0 of this seed is 755224.
        let right = check("755224");
        let keys = Keys::for_tests();
        assert!(right.accepts(&challenge(), &token(&keys)));

        assert!(!check("755225").accepts(&challenge(), &token(&keys)));
        assert!(!check("75522").accepts(&challenge(), &token(&keys)));
        let refused: [(&str, ChallengeRow, TokenRow); 6] = [
            (
                "other user",
                ChallengeRow {
                    user: "bob".into(),
                    ..challenge()
                },
                token(&keys),
            ),
            (
                "used",
                ChallengeRow {
                    used: true,
                    ..challenge()
                },
                token(&keys),
            ),
            (
                "expired",
                ChallengeRow {
                    expires: NOW,
                    ..challenge()
                },
                token(&keys),
            ),
            (
                "disabled",
                challenge(),
                TokenRow {
                    disabled: true,
                    ..token(&keys)
                },
            ),
            (
                "locked",
                challenge(),
                TokenRow {
                    locked_at: Some(NOW - 1),
                    ..token(&keys)
                },
            ),
            (
                // The general path clears the lock and tells the rules first.
                "lock expired",
                challenge(),
                TokenRow {
                    locked_at: Some(NOW - 60_000),
                    ..token(&keys)
                },
            ),
        ];
        for (what, challenge, token) in refused {
            assert!(!right.accepts(&challenge, &token), "{what}");
        }
        let unreadable = TokenRow {
            sealed_seed: vec![0; 40],
            ..token(&keys)
        };
        assert!(
            !right.accepts(&challenge(), &unreadable),
            "seed cannot be unsealed"
        );
    }
}
