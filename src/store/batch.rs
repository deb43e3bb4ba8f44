//! Calls that queue while the store threads are busy, taken by one thread together: the
//! login path's begin_login, challenge start and State + OTP answer (`Store::begin_logins`,
//! `Store::start_challenges`, `Store::answer_challenges`: on PostgreSQL one round trip and
//! one commit for all), and the audit rows (one transaction). Under load a thread finds many waiting and the per-call
//! cost of the database (a round trip, a plan to start, a commit) is paid once for them;
//! with nothing waiting a call goes alone, as soon as a thread is free, so a batch never
//! waits to fill.

use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::oneshot::Sender;

use super::{
    Answer, AnswerClaim, AuditRow, ChallengeRef, ChallengeStart, Expected, FailureRules, LoginAsk,
    LoginStart, StartAsk, Started, Store, StoreResult,
};
use crate::config::SendCaps;

/// Members waiting for a thread; one queued job takes them (`take`).
pub(super) struct Batch<I> {
    pending: Mutex<Vec<I>>,
    /// The most one job takes (`Store::batch_limit`).
    max: usize,
}

impl<I> Batch<I> {
    pub(super) fn new(max: usize) -> Batch<I> {
        Batch {
            pending: Mutex::new(Vec::new()),
            max: max.max(1),
        }
    }

    /// Adds `member`. True when the caller must queue a job to take it: none is queued, since
    /// a job is queued exactly while members wait.
    pub(super) fn add(&self, member: I) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(member);
        pending.len() == 1
    }

    /// The members for one job, first come first, and whether others still wait (then the
    /// caller queues another job for them).
    pub(super) fn take(&self) -> (Vec<I>, bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() <= self.max {
            (std::mem::take(&mut *pending), false)
        } else {
            let rest = pending.split_off(self.max);
            (std::mem::replace(&mut *pending, rest), true)
        }
    }
}

/// A login waiting to begin (`StoreThread::begin_login`).
pub(super) struct Login {
    pub user: String,
    pub now: i64,
    pub rules: FailureRules,
    pub reply: Sender<StoreResult<LoginStart>>,
}

pub(super) fn begin_logins(store: &dyn Store, logins: Vec<Login>) {
    let asks: Vec<LoginAsk<'_>> = logins
        .iter()
        .map(|l| LoginAsk {
            user: &l.user,
            now: l.now,
            rules: l.rules,
        })
        .collect();
    let results = store.begin_logins(&asks);
    for (login, result) in logins.into_iter().zip(results) {
        let _ = login.reply.send(result);
    }
}

/// A right PIN's challenge waiting to start (`StoreThread::start_challenge`):
/// `Store::start_challenge`'s arguments, owned.
pub struct ChallengeToStart {
    pub transaction_id: String,
    pub serial: String,
    pub user: String,
    pub client: String,
    pub phone: String,
    pub now: i64,
    pub expires: i64,
    pub resend_interval_ms: i64,
    pub caps: SendCaps,
    pub refund: Vec<String>,
    pub expected_counter: u64,
    pub expected_mac: Vec<u8>,
    pub code_mac: Box<dyn Fn(u64) -> Vec<u8> + Send>,
}

pub(super) struct Starting {
    pub start: ChallengeToStart,
    pub reply: Sender<StoreResult<Started>>,
}

pub(super) fn start_challenges(store: &dyn Store, starts: Vec<Starting>) {
    let asks: Vec<StartAsk<'_>> = starts
        .iter()
        .map(|s| {
            let c = &s.start;
            StartAsk {
                start: ChallengeStart {
                    transaction_id: &c.transaction_id,
                    serial: &c.serial,
                    user: &c.user,
                    client: &c.client,
                    phone: &c.phone,
                    now: c.now,
                    expires: c.expires,
                    resend_interval_ms: c.resend_interval_ms,
                    caps: c.caps,
                },
                refund: &c.refund,
                expected: Expected {
                    counter: c.expected_counter,
                    code_mac: &c.expected_mac,
                },
                code_mac: &c.code_mac,
            }
        })
        .collect();
    let results = store.start_challenges(&asks);
    for (starting, result) in starts.into_iter().zip(results) {
        let _ = starting.reply.send(result);
    }
}

/// A State + OTP answer waiting (`StoreThread::answer_state`).
pub struct StateAnswer {
    pub transaction_id: String,
    pub user: String,
    pub code_mac: Vec<u8>,
    pub now: i64,
    pub max_attempts: u32,
    pub failures: FailureRules,
}

pub(super) struct Answering {
    pub answer: StateAnswer,
    pub reply: Sender<StoreResult<Answer>>,
}

pub(super) fn answer_challenges(store: &dyn Store, answers: Vec<Answering>) {
    let claims: Vec<AnswerClaim<'_>> = answers
        .iter()
        .map(|a| AnswerClaim {
            target: ChallengeRef::Transaction(&a.answer.transaction_id),
            user: &a.answer.user,
            code_mac: &a.answer.code_mac,
            now: a.answer.now,
            max_attempts: a.answer.max_attempts,
            failures: a.answer.failures,
            claim_held: false,
        })
        .collect();
    let results = store.answer_challenges(&claims);
    for (answering, result) in answers.into_iter().zip(results) {
        let _ = answering.reply.send(result);
    }
}

/// An audit row and its place among the submitted calls (`StoreThread::submit_audit`).
pub(super) type QueuedAudit = (AuditRow, OwnedSemaphorePermit);

pub(super) fn add_audit_rows(store: &dyn Store, batch: Vec<QueuedAudit>) {
    let (rows, permits): (Vec<AuditRow>, Vec<OwnedSemaphorePermit>) = batch.into_iter().unzip();
    if let Err(e) = store.add_audit_rows(&rows) {
        tracing::error!(error = %e, rows = rows.len(), "cannot write the audit rows");
    }
    drop(permits);
}

#[cfg(test)]
mod tests {
    use super::Batch;

    #[test]
    fn a_job_is_asked_for_exactly_while_members_wait() {
        let batch = Batch::new(2);
        assert!(batch.add(1), "the first member asks for a job");
        assert!(!batch.add(2), "the queued job will take it");
        assert!(!batch.add(3));
        assert_eq!(
            batch.take(),
            (vec![1, 2], true),
            "one more job for the rest"
        );
        assert!(!batch.add(4), "that job will take it");
        assert_eq!(batch.take(), (vec![3, 4], false));
        assert!(batch.add(5), "nothing waited: a new job");
    }
}
