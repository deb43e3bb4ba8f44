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

/// Members waiting for a thread, and the jobs that take them: at most one job queued, and
/// at most `lanes` jobs running, so that members arriving while those run wait for the next
/// job together (on PostgreSQL, fewer statements at once make bigger batches).
pub(super) struct Batch<I> {
    state: Mutex<BatchState<I>>,
    /// The most one job takes (`Store::batch_limit`).
    max: usize,
    lanes: usize,
}

struct BatchState<I> {
    pending: Vec<I>,
    /// A job is queued and not yet taken by a thread.
    queued: bool,
    running: usize,
}

impl<I> Batch<I> {
    pub(super) fn new(max: usize, lanes: usize) -> Batch<I> {
        Batch {
            state: Mutex::new(BatchState {
                pending: Vec::new(),
                queued: false,
                running: 0,
            }),
            max: max.max(1),
            lanes: lanes.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BatchState<I>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a job should be queued now: members wait, none is queued, and a lane is free.
    /// Marks it queued when so.
    fn wants_job(&self, state: &mut BatchState<I>) -> bool {
        let wanted = !state.pending.is_empty() && !state.queued && state.running < self.lanes;
        state.queued |= wanted;
        wanted
    }

    /// Adds `member`. True when the caller must queue a job to take it; otherwise a queued
    /// job will, or a running one queues it when it ends (`done`).
    pub(super) fn add(&self, member: I) -> bool {
        let mut state = self.state();
        state.pending.push(member);
        self.wants_job(&mut state)
    }

    /// A job starts: the members it takes, first come first, and whether the caller must
    /// queue another job for members still waiting.
    pub(super) fn take(&self) -> (Vec<I>, bool) {
        let mut state = self.state();
        state.queued = false;
        state.running += 1;
        let members = if state.pending.len() <= self.max {
            std::mem::take(&mut state.pending)
        } else {
            let rest = state.pending.split_off(self.max);
            std::mem::replace(&mut state.pending, rest)
        };
        let more = self.wants_job(&mut state);
        (members, more)
    }

    /// A job ended. True when the caller must queue another job for the members that
    /// arrived meanwhile.
    pub(super) fn done(&self) -> bool {
        let mut state = self.state();
        state.running = state.running.saturating_sub(1);
        self.wants_job(&mut state)
    }
}

/// Jobs of one kind (logins, starts, answers) running at once where the store batches:
/// while one runs, the next gathers everything that arrives. One each measured best on
/// PostgreSQL (bench/run.sh, two cores, the default pool of 8): 2,881 flows/s one node and
/// 2,705 two nodes, at 0.35 ms of PostgreSQL's CPU per flow, against 2,178 and 1,958 with
/// two, and 2,275-2,391 and 1,820-1,851 with a job per thread.
pub(super) const LANES: usize = 1;

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
    fn one_job_is_queued_while_members_wait_and_lanes_bound_the_running_ones() {
        let batch = Batch::new(2, 1);
        assert!(batch.add(1), "the first member asks for a job");
        assert!(!batch.add(2), "the queued job will take it");
        assert!(!batch.add(3));
        assert_eq!(batch.take(), (vec![1, 2], false), "the one lane is taken");
        assert!(!batch.add(4), "waits for the running job");
        assert!(batch.done(), "which asks for the next job when it ends");
        assert_eq!(batch.take(), (vec![3, 4], false));
        assert!(!batch.done(), "nothing waits");
        assert!(batch.add(5), "nothing runs: a new job");

        let wide = Batch::new(1, 2);
        assert!(wide.add(1));
        assert!(!wide.add(2));
        assert_eq!(wide.take(), (vec![1], true), "a second lane for the rest");
        assert_eq!(wide.take(), (vec![2], false));
        assert!(!wide.add(3), "both lanes run");
        assert!(wide.done());
        assert!(!wide.done(), "the queued job takes member 3");
    }
}
