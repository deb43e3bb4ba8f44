//! Calls that queue while the store threads are busy, taken by one thread together: the
//! login path's begin_login, challenge start and State + OTP answer (`Store::begin_logins`,
//! `Store::start_challenges`, `Store::answer_challenges`: on PostgreSQL one round trip and
//! one commit for all), and the audit rows (one transaction). Under load a thread finds
//! many waiting and the per-call cost of the database (a round trip, a plan to start, a
//! commit) is paid once for them; with nothing waiting a call goes alone, as soon as a
//! thread is free, so a batch never waits to fill.

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

    /// Whether a job should be queued now: members wait, none is queued, and a lane is free
    /// or a full batch waits (so that a slow database bounds the batches' size, not the
    /// throughput: `max` members a round trip on one lane would be all). Marks it queued
    /// when so.
    fn wants_job(&self, state: &mut BatchState<I>) -> bool {
        let lane = state.running < self.lanes || state.pending.len() >= self.max;
        let wanted = !state.pending.is_empty() && !state.queued && lane;
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

/// A call waiting in a batch: what it asks, and where its result goes.
pub(super) struct Waiting<A, O> {
    pub ask: A,
    pub reply: Sender<StoreResult<O>>,
}

/// What a waiting call asks, as the store's batch call takes it.
pub(super) trait Ask {
    type View<'a>
    where
        Self: 'a;
    fn view(&self) -> Self::View<'_>;
}

/// Runs `call` on the views of the waiting asks, and hands each caller its result.
fn answer_waiting<A: Ask, O>(
    waiting: Vec<Waiting<A, O>>,
    call: impl FnOnce(&[A::View<'_>]) -> Vec<StoreResult<O>>,
) {
    let views: Vec<A::View<'_>> = waiting.iter().map(|w| w.ask.view()).collect();
    let results = call(&views);
    drop(views);
    for (w, result) in waiting.into_iter().zip(results) {
        let _ = w.reply.send(result);
    }
}

/// A login waiting to begin (`StoreThread::begin_login`).
pub(super) struct Login {
    pub user: String,
    pub now: i64,
    pub rules: FailureRules,
}

impl Ask for Login {
    type View<'a> = LoginAsk<'a>;
    fn view(&self) -> LoginAsk<'_> {
        LoginAsk {
            user: &self.user,
            now: self.now,
            rules: self.rules,
        }
    }
}

pub(super) fn begin_logins(store: &dyn Store, logins: Vec<Waiting<Login, LoginStart>>) {
    answer_waiting(logins, |asks| store.begin_logins(asks));
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

impl Ask for ChallengeToStart {
    type View<'a> = StartAsk<'a>;
    fn view(&self) -> StartAsk<'_> {
        StartAsk {
            start: ChallengeStart {
                transaction_id: &self.transaction_id,
                serial: &self.serial,
                user: &self.user,
                client: &self.client,
                phone: &self.phone,
                now: self.now,
                expires: self.expires,
                resend_interval_ms: self.resend_interval_ms,
                caps: self.caps,
            },
            refund: &self.refund,
            expected: Expected {
                counter: self.expected_counter,
                code_mac: &self.expected_mac,
            },
            code_mac: &self.code_mac,
        }
    }
}

pub(super) fn start_challenges(store: &dyn Store, starts: Vec<Waiting<ChallengeToStart, Started>>) {
    answer_waiting(starts, |asks| store.start_challenges(asks));
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

impl Ask for StateAnswer {
    type View<'a> = AnswerClaim<'a>;
    fn view(&self) -> AnswerClaim<'_> {
        AnswerClaim {
            target: ChallengeRef::Transaction(&self.transaction_id),
            user: &self.user,
            code_mac: &self.code_mac,
            now: self.now,
            max_attempts: self.max_attempts,
            failures: self.failures,
            claim_held: false,
        }
    }
}

pub(super) fn answer_challenges(store: &dyn Store, answers: Vec<Waiting<StateAnswer, Answer>>) {
    answer_waiting(answers, |claims| store.answer_challenges(claims));
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
        let batch = Batch::new(3, 1);
        assert!(batch.add(1), "the first member asks for a job");
        assert!(!batch.add(2), "the queued job will take it");
        assert_eq!(batch.take(), (vec![1, 2], false), "the one lane is taken");
        assert!(!batch.add(3), "waits for the running job");
        assert!(batch.done(), "which asks for the next job when it ends");
        assert_eq!(batch.take(), (vec![3], false));
        assert!(!batch.done(), "nothing waits");
        assert!(batch.add(4), "nothing runs: a new job");
    }

    #[test]
    fn a_full_batch_waiting_gets_a_job_beside_the_running_one() {
        let batch = Batch::new(2, 1);
        assert!(batch.add(1));
        assert_eq!(batch.take(), (vec![1], false));
        assert!(!batch.add(2), "not full: waits for the lane");
        assert!(batch.add(3), "full: a job of its own");
        assert!(!batch.add(4), "that job is queued");
        assert_eq!(
            batch.take(),
            (vec![2, 3], false),
            "4 alone waits for a lane"
        );
        assert!(!batch.done());
        assert!(batch.done(), "the last lane frees: member 4's job");
        assert_eq!(batch.take(), (vec![4], false));
    }
}
