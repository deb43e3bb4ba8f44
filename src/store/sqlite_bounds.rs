//! The attack bounds on SQLite (DESIGN section 8): failure claims, the one open challenge per
//! token with its SMS send claim, and the claimed, compared and recorded answer. Each runs
//! inside one IMMEDIATE transaction the caller opened, so the check and the count it
//! guards are one step for every writer of the file, the CLI's included.
//!
//! The decisions read rows and write them back inside that transaction; the engine only
//! ever sees the outcome.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{
    Answer, AnswerClaim, AnswerOutcome, ChallengeRef, ChallengeStart, FailureClaim, FailureRules,
    Limit, OpenChallenge, Refusal, Resend, Started, StoreResult, Unusable,
};
use crate::config::SendCaps;

/// The token columns a claim decides on.
struct TokenState {
    disabled: bool,
    locked_at: Option<i64>,
    fail_count: u32,
    /// Claims not yet settled (counted in `fail_count` already).
    pending: u32,
    pending_until: i64,
}

fn token_state(tx: &Transaction<'_>, serial: &str) -> rusqlite::Result<Option<TokenState>> {
    tx.prepare_cached(
        "SELECT disabled, locked_at, fail_count, pending, pending_until FROM tokens
         WHERE serial = ?1",
    )?
    .query_row([serial], |r| {
        Ok(TokenState {
            disabled: r.get(0)?,
            locked_at: r.get(1)?,
            fail_count: r.get(2)?,
            pending: r.get(3)?,
            pending_until: r.get(4)?,
        })
    })
    .optional()
}

/// Claims one failure on a token (see `Store::claim_failures`).
///
/// A claim counts in `fail_count` at once and is `pending` until its check settles it
/// (`settle_failure`) or gives it back (`refund`), so concurrent checks can never claim
/// more than the failures left. Claims past their `claim_ttl_ms` (the request's node died)
/// stay counted as failures.
pub(super) fn claim_failure(
    tx: &Transaction<'_>,
    serial: &str,
    now: i64,
    rules: &FailureRules,
) -> rusqlite::Result<FailureClaim> {
    let Some(mut state) = token_state(tx, serial)? else {
        return Ok(FailureClaim::Missing);
    };
    if state.disabled {
        return Ok(FailureClaim::Refused(Unusable::Disabled));
    }
    if state.pending > 0 && now > state.pending_until {
        state.pending = 0;
    }
    let mut lock_cleared = false;
    if let Some(locked_at) = state.locked_at {
        let expired =
            rules.clear_after_ms > 0 && now.saturating_sub(locked_at) >= rules.clear_after_ms;
        if !expired {
            return Ok(FailureClaim::Refused(Unusable::Locked));
        }
        // The lock period is over: the count starts again, so the lock re-arms.
        state.fail_count = state.pending;
        state.locked_at = None;
        lock_cleared = true;
    }
    let claim = if state.fail_count < rules.max_failures {
        if rules.count {
            state.fail_count += 1;
            state.pending += 1;
            state.pending_until = state
                .pending_until
                .max(now.saturating_add(rules.claim_ttl_ms));
            FailureClaim::Claimed { lock_cleared }
        } else {
            FailureClaim::Usable { lock_cleared }
        }
    } else if state.pending > 0 {
        FailureClaim::Busy
    } else {
        // Every failure of the period is settled: the token locks now (also where
        // `max_failures` was lowered, or a dead node's claims expired).
        state.locked_at = Some(now);
        FailureClaim::Refused(Unusable::Locked)
    };
    tx.prepare_cached(
        "UPDATE tokens SET fail_count = ?2, pending = ?3, pending_until = ?4, locked_at = ?5
         WHERE serial = ?1",
    )?
    .execute(params![
        serial,
        state.fail_count,
        state.pending,
        state.pending_until,
        state.locked_at
    ])?;
    Ok(claim)
}

pub(super) fn refund(tx: &Transaction<'_>, serial: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE tokens SET fail_count = MAX(fail_count - 1, 0), pending = MAX(pending - 1, 0)
         WHERE serial = ?1",
    )?
    .execute([serial])?;
    Ok(())
}

/// A claimed check failed: its failure stands; locks the token if the count is reached.
/// True if this call locked it.
pub(super) fn settle_failure(
    tx: &Transaction<'_>,
    serial: &str,
    now: i64,
    max_failures: u32,
) -> rusqlite::Result<bool> {
    let locked: Option<bool> = tx
        .prepare_cached(
            // Locks on the settled failures only: the claims of checks still running
            // may yet be refunded.
            "UPDATE tokens SET pending = MAX(pending - 1, 0),
                locked_at = CASE WHEN locked_at IS NULL AND fail_count - MAX(pending - 1, 0) >= ?3
                            THEN ?2 ELSE locked_at END
             WHERE serial = ?1 RETURNING locked_at IS ?2",
        )?
        .query_row(params![serial, now, max_failures], |r| r.get(0))
        .optional()?;
    Ok(locked == Some(true))
}

pub(super) fn open_challenge(
    tx: &Transaction<'_>,
    start: &ChallengeStart<'_>,
    code_mac: &dyn Fn(u64) -> Vec<u8>,
) -> StoreResult<Started> {
    // An expired challenge is no longer the token's open one.
    tx.prepare_cached(
        "UPDATE challenges SET used = 1 WHERE serial = ?1 AND used = 0 AND expires <= ?2",
    )?
    .execute(params![start.serial, start.now])?;
    let open = tx
        .prepare_cached(
            "SELECT transaction_id, counter, expires, last_sent FROM challenges
             WHERE serial = ?1 AND used = 0",
        )?
        .query_row([start.serial], |r| {
            Ok((
                OpenChallenge {
                    transaction_id: r.get(0)?,
                    counter: r.get::<_, i64>(1)?.max(0) as u64,
                    expires: r.get(2)?,
                },
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    if let Some((open, last_sent)) = open {
        // No interval means no wait, even where another request's send carries a slightly
        // later clock than this one's `now`.
        if start.resend_interval_ms > 0
            && start.now.saturating_sub(last_sent) < start.resend_interval_ms
        {
            return Ok(Started::Again(open, Resend::TooSoon));
        }
        if let Some(limit) = limit_reached(tx, start)? {
            return Ok(Started::Again(open, Resend::Limited(limit)));
        }
        tx.prepare_cached(
            "UPDATE challenges SET last_sent = ?2, sends = sends + 1 WHERE transaction_id = ?1",
        )?
        .execute(params![open.transaction_id, start.now])?;
        record_send(tx, start)?;
        return Ok(Started::Again(open, Resend::Claimed));
    }
    if let Some(limit) = limit_reached(tx, start)? {
        return Ok(Started::Limited(limit));
    }
    let counter: Option<i64> = tx
        .prepare_cached(
            "UPDATE tokens SET counter = counter + 1 WHERE serial = ?1 RETURNING counter - 1",
        )?
        .query_row([start.serial], |r| r.get(0))
        .optional()?;
    let counter = counter
        .ok_or_else(|| super::StoreError::NotFound(format!("token '{}'", start.serial)))?
        .max(0) as u64;
    tx.prepare_cached(
        "INSERT INTO challenges (transaction_id, serial, user, client, counter, created, expires,
                                 attempts, sends, used, otp_mac, last_sent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 1, 0, ?8, ?6)",
    )?
    .execute(params![
        start.transaction_id,
        start.serial,
        start.user,
        start.client,
        counter as i64,
        start.now,
        start.expires,
        code_mac(counter),
    ])?;
    record_send(tx, start)?;
    Ok(Started::New(OpenChallenge {
        transaction_id: start.transaction_id.to_string(),
        counter,
        expires: start.expires,
    }))
}

/// The first cap a send would go over, counted over the rolling windows.
fn limit_reached(tx: &Transaction<'_>, start: &ChallengeStart<'_>) -> StoreResult<Option<Limit>> {
    for limit in Limit::ALL {
        let (cap, window) = limit.cap(&start.caps);
        if cap == 0 {
            continue;
        }
        let since = start.now.saturating_sub(window);
        // Counting stops at the cap: a full day's global count need not be read in full.
        let sql = match limit {
            Limit::PerTokenHour | Limit::PerTokenDay => {
                "SELECT COUNT(*) FROM (SELECT 1 FROM sms_sends WHERE serial = ?1 AND time > ?2 LIMIT ?3)"
            }
            Limit::PerPhoneHour => {
                "SELECT COUNT(*) FROM (SELECT 1 FROM sms_sends WHERE phone = ?1 AND time > ?2 LIMIT ?3)"
            }
            Limit::PerClientMinute => {
                "SELECT COUNT(*) FROM (SELECT 1 FROM sms_sends WHERE client = ?1 AND time > ?2 LIMIT ?3)"
            }
            Limit::GlobalMinute | Limit::GlobalDay => {
                "SELECT COUNT(*) FROM (SELECT 1 FROM sms_sends WHERE ?1 IS NOT NULL AND time > ?2 LIMIT ?3)"
            }
        };
        let key = match limit {
            Limit::PerTokenHour | Limit::PerTokenDay => start.serial,
            Limit::PerPhoneHour => start.phone,
            Limit::PerClientMinute => start.client,
            Limit::GlobalMinute | Limit::GlobalDay => "",
        };
        let sent: u32 = tx
            .prepare_cached(sql)?
            .query_row(params![key, since, cap], |r| r.get(0))?;
        if sent >= cap {
            return Ok(Some(limit));
        }
    }
    Ok(None)
}

/// Sends are recorded only while some cap counts them.
fn record_send(tx: &Transaction<'_>, start: &ChallengeStart<'_>) -> rusqlite::Result<()> {
    if !any_cap(&start.caps) {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO sms_sends (time, serial, phone, client) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![start.now, start.serial, start.phone, start.client])?;
    Ok(())
}

/// Whether any cap is set, so that sends need recording at all.
fn any_cap(caps: &SendCaps) -> bool {
    Limit::ALL.iter().any(|l| l.cap(caps).0 > 0)
}

/// The challenge columns an answer decides on.
struct ChallengeState {
    transaction_id: String,
    serial: String,
    user: String,
    expires: i64,
    attempts: u32,
    used: bool,
    otp_mac: Option<Vec<u8>>,
}

pub(super) fn answer_challenge(
    tx: &Transaction<'_>,
    claim: &AnswerClaim<'_>,
) -> StoreResult<Answer> {
    let challenge = find_challenge(tx, claim.target)?;
    let Some(challenge) = challenge else {
        let refusal = match claim.target {
            ChallengeRef::Transaction(_) => Refusal::UnknownChallenge,
            ChallengeRef::OpenOf(_) => Refusal::NoOpenChallenge,
        };
        return Ok(refused(refusal, None));
    };
    let serial = Some(challenge.serial.clone());
    let end = |tx: &Transaction<'_>| -> rusqlite::Result<()> {
        tx.prepare_cached("UPDATE challenges SET used = 1 WHERE transaction_id = ?1")?
            .execute([&challenge.transaction_id])?;
        Ok(())
    };
    if challenge.user != claim.user {
        end(tx)?;
        return Ok(refused(Refusal::OtherUser, serial));
    }
    if challenge.used {
        return Ok(refused(Refusal::Used, serial));
    }
    if challenge.expires <= claim.now {
        end(tx)?;
        return Ok(refused(Refusal::Expired, serial));
    }
    if challenge.attempts >= claim.max_attempts {
        end(tx)?;
        return Ok(refused(Refusal::NoAttemptsLeft, serial));
    }
    let owner = super::sqlite::owner(tx, &challenge.user, &challenge.serial)?;
    let Some(owner) = owner else {
        end(tx)?;
        return Ok(refused(Refusal::TokenGone, serial));
    };
    // The failure this comparison may become: claimed now, or held from the PIN check.
    let lock_cleared = if claim.claim_held {
        if owner.1.disabled {
            end(tx)?;
            return Ok(Answer {
                owner: Some(owner),
                ..refused(Refusal::Unusable(Unusable::Disabled), serial)
            });
        }
        false
    } else {
        let rules = FailureRules {
            count: true,
            ..claim.failures
        };
        match claim_failure(tx, &challenge.serial, claim.now, &rules)? {
            FailureClaim::Claimed { lock_cleared } => lock_cleared,
            FailureClaim::Busy => {
                // Not compared, and the challenge stays: the answer may be sent again.
                return Ok(Answer {
                    owner: Some(owner),
                    ..refused(Refusal::Busy, serial)
                });
            }
            FailureClaim::Refused(why) => {
                end(tx)?;
                return Ok(Answer {
                    owner: Some(owner),
                    ..refused(Refusal::Unusable(why), serial)
                });
            }
            FailureClaim::Usable { .. } | FailureClaim::Missing => {
                end(tx)?;
                return Ok(refused(Refusal::TokenGone, serial));
            }
        }
    };
    let attempts = challenge.attempts + 1;
    let right = challenge
        .otp_mac
        .as_deref()
        .is_some_and(|expected| macs_equal(expected, claim.code_mac));
    let outcome = if right {
        tx.prepare_cached(
            "UPDATE challenges SET used = 1, attempts = ?2 WHERE transaction_id = ?1",
        )?
        .execute(params![challenge.transaction_id, attempts])?;
        // A login resets the count; other checks still running keep their own claims.
        tx.prepare_cached(
            "UPDATE tokens SET pending = MAX(pending - 1, 0), fail_count = MAX(pending - 1, 0),
                locked_at = NULL
             WHERE serial = ?1",
        )?
        .execute([&challenge.serial])?;
        let attributes = tx
            .prepare_cached(
                "SELECT attribute FROM user_attributes WHERE user = ?1 ORDER BY position",
            )?
            .query_map([&challenge.user], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        AnswerOutcome::Accepted { attributes }
    } else {
        let locked_now = settle_failure(
            tx,
            &challenge.serial,
            claim.now,
            claim.failures.max_failures,
        )?;
        let ended = attempts >= claim.max_attempts || locked_now;
        tx.prepare_cached(
            "UPDATE challenges SET attempts = ?2, used = ?3 WHERE transaction_id = ?1",
        )?
        .execute(params![challenge.transaction_id, attempts, ended])?;
        AnswerOutcome::Wrong {
            attempts,
            ended,
            locked_now,
            expires: challenge.expires,
        }
    };
    Ok(Answer {
        outcome,
        serial,
        owner: Some(owner),
        lock_cleared,
    })
}

fn find_challenge(
    tx: &Transaction<'_>,
    target: ChallengeRef<'_>,
) -> rusqlite::Result<Option<ChallengeState>> {
    const COLUMNS: &str = "transaction_id, serial, user, expires, attempts, used, otp_mac";
    let read = |r: &rusqlite::Row<'_>| {
        Ok(ChallengeState {
            transaction_id: r.get(0)?,
            serial: r.get(1)?,
            user: r.get(2)?,
            expires: r.get(3)?,
            attempts: r.get(4)?,
            used: r.get(5)?,
            otp_mac: r.get(6)?,
        })
    };
    match target {
        ChallengeRef::Transaction(tid) => tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM challenges WHERE transaction_id = ?1"
            ))?
            .query_row([tid], read)
            .optional(),
        ChallengeRef::OpenOf(serial) => tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM challenges WHERE serial = ?1 AND used = 0"
            ))?
            .query_row([serial], read)
            .optional(),
    }
}

fn refused(refusal: Refusal, serial: Option<String>) -> Answer {
    Answer {
        outcome: AnswerOutcome::Refused(refusal),
        serial,
        owner: None,
        lock_cleared: false,
    }
}

/// Both are keyed MACs (`Keys::code_mac`); compared in constant time all the same.
fn macs_equal(expected: &[u8], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(expected.ct_eq(given))
}
