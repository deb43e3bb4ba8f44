//! Calls that queue while the store threads are busy, taken by one thread together: the
//! login path's begin_login and State + OTP answer (`Store::begin_logins`,
//! `Store::answer_challenges`: on PostgreSQL one statement and one commit for all), and the
//! audit rows (one transaction). Under load a thread finds many waiting and the per-call
//! cost of the database (a round trip, a plan to start, a commit) is paid once for them;
//! with nothing waiting a call goes alone, as soon as a thread is free, so a batch never
//! waits to fill.

use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::oneshot::Sender;

use super::{
    Answer, AnswerClaim, AuditRow, ChallengeRef, FailureRules, LoginAsk, LoginStart, Store,
    StoreResult,
};

/// Members waiting for a thread; one queued job takes them (`take`).
pub(super) struct Batch<I> {
    pending: Mutex<Vec<I>>,
    /// The most one job takes: a batch holds its rows' locks until it commits, so a big one
    /// would keep other requests for those rows waiting.
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

/// The most logins or answers one statement takes.
pub(super) const MAX_LOGIN_BATCH: usize = 16;

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
