//! The store threads: OS threads that run every store call of the server (requests,
//! notifications' audit rows, purging, breaker records) from one shared queue.
//!
//! The engine used to send each call to tokio's blocking pool, where the calls of
//! concurrent requests then queued for the connection's mutex: two thread hand-offs and a
//! contended lock per call, which a profile showed as the server's largest cost after
//! Argon2. Store threads own the order instead; under load they take call after call
//! without sleeping. SQLite serialises writers anyway, so it gets exactly one thread (and
//! calls run in the order queued); PostgreSQL gets one per pooled connection
//! (`database_pool`), so that calls wait on the network side by side, and takes the login
//! path's calls that queued beside each other in one call (`batch`, `Store::batch_limit`).

use std::collections::VecDeque;
use std::sync::{Arc, Barrier, Condvar, Mutex};

use tokio::sync::Semaphore;

use super::batch::{self, Batch, ChallengeToStart, Login, QueuedAudit, StateAnswer, Waiting};
use super::{Answer, AuditRow, FailureRules, LoginStart, Started, Store, StoreError, StoreResult};
use crate::ops::metrics::Metrics;

type Job = Box<dyn FnOnce(&dyn Store) + Send>;

/// How many submitted calls may wait unanswered. Nobody awaits a submitted call, so without
/// a bound a flood of requests that reject before touching the store (each still queues
/// its audit row) could queue rows faster than the disk takes them.
const MAX_SUBMITTED: usize = 4096;

/// The jobs the threads take, first in first out.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// No more jobs come: the threads end once the queue is empty.
    closed: bool,
}

impl Queue {
    /// Queues `jobs` one after the other, with no other job between them.
    fn push(&self, jobs: impl IntoIterator<Item = Job>) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(StoreError::Database("the store thread has stopped".into()));
        }
        state.jobs.extend(jobs);
        drop(state);
        self.ready.notify_all();
        Ok(())
    }

    /// The next job, waiting for one; None once closed and empty.
    fn take(&self) -> Option<Job> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

pub struct StoreThread {
    /// For `counters`; the threads hold their own.
    store: Arc<dyn Store>,
    queue: Arc<Queue>,
    threads: usize,
    /// One permit per submitted call not yet run; `submit` waits when none is left.
    submitted: Arc<Semaphore>,
    /// Audit rows submitted and not yet taken by a write, each with its permit.
    audit: Arc<Batch<QueuedAudit>>,
    logins: Arc<Batch<Waiting<Login, LoginStart>>>,
    starts: Arc<Batch<Waiting<ChallengeToStart, Started>>>,
    answers: Arc<Batch<Waiting<StateAnswer, Answer>>>,
}

impl StoreThread {
    /// As many threads as the store runs calls at once (`Store::concurrency`): one for
    /// SQLite, every call in the order queued.
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<StoreThread> {
        let threads = store.concurrency();
        StoreThread::with_threads(store, threads)
    }

    /// `threads` threads taking calls from one queue (PostgreSQL: one per pooled
    /// connection), so calls run concurrently.
    pub fn with_threads(store: Arc<dyn Store>, threads: usize) -> std::io::Result<StoreThread> {
        StoreThread::with_submit_limit(store, threads, MAX_SUBMITTED)
    }

    fn with_submit_limit(
        store: Arc<dyn Store>,
        threads: usize,
        limit: usize,
    ) -> std::io::Result<StoreThread> {
        let threads = threads.max(1);
        let batch_limit = store.batch_limit();
        // Each call alone, at once, where the store does not batch.
        let lanes = if batch_limit > 1 {
            batch::LANES
        } else {
            usize::MAX
        };
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for n in 0..threads {
            let (jobs, store) = (queue.clone(), store.clone());
            let name = if threads == 1 {
                "otpgate-store".to_string()
            } else {
                format!("otpgate-store-{n}")
            };
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                // Ends when the StoreThread is dropped, after the queued calls ran.
                let seconds = &Metrics::global().store_seconds;
                while let Some(job) = jobs.take() {
                    let started = std::time::Instant::now();
                    job(store.as_ref());
                    seconds.observe(started.elapsed().as_secs_f64());
                }
            });
            if let Err(e) = spawned {
                queue.close();
                return Err(e);
            }
        }
        Ok(StoreThread {
            store,
            queue,
            threads,
            submitted: Arc::new(Semaphore::new(limit)),
            // Unbounded lanes: a row submitted before `flush` is in a job queued before it.
            audit: Arc::new(Batch::new(usize::MAX, usize::MAX)),
            logins: Arc::new(Batch::new(batch_limit, lanes)),
            starts: Arc::new(Batch::new(batch_limit, lanes)),
            answers: Arc::new(Batch::new(batch_limit, lanes)),
        })
    }

    /// The store's own counters (`Store::counters`), read here, off the store threads: they
    /// are atomics.
    pub fn counters(&self) -> String {
        self.store.counters()
    }

    /// Runs `call` on a store thread. Cancel-safe: a dropped future leaves the call to
    /// finish on its own, which every store call can (each is atomic).
    pub async fn run<T, F>(&self, call: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = sender.send(call(store));
        });
        self.queue.push([job])?;
        receiver.await.map_err(|_| dropped())?
    }

    /// Queues `call` without waiting for it to run, for a write whose result no reply
    /// depends on (an audit row). With one thread it runs in order with every other call,
    /// so a later call sees it done; with several, `flush` does. A failure is logged with
    /// `what`. Waits only while `MAX_SUBMITTED` calls are already queued.
    pub async fn submit<F>(&self, what: &'static str, call: F)
    where
        F: FnOnce(&dyn Store) -> StoreResult<()> + Send + 'static,
    {
        let Ok(permit) = self.submitted.clone().acquire_owned().await else {
            tracing::error!("cannot write {what}: the store thread has stopped");
            return;
        };
        let job: Job = Box::new(move |store| {
            if let Err(e) = call(store) {
                tracing::error!(error = %e, "cannot write {what}");
            }
            drop(permit);
        });
        if self.queue.push([job]).is_err() {
            tracing::error!("cannot write {what}: the store thread has stopped");
        }
    }

    /// Queues an audit row, as `submit` does, to be written in one transaction with the
    /// rows submitted while the write waited for a thread: under load, one commit carries
    /// many rows (on PostgreSQL, one round trip and one WAL flush instead of one per row).
    /// A killed node loses the rows still queued (milliseconds' worth); `flush` waits for
    /// them.
    pub async fn submit_audit(&self, row: AuditRow) {
        let Ok(permit) = self.submitted.clone().acquire_owned().await else {
            tracing::error!("cannot write the audit row: the store thread has stopped");
            return;
        };
        if self.audit.add((row, permit))
            && self
                .queue_batch(self.audit.clone(), batch::add_audit_rows)
                .is_err()
        {
            tracing::error!("cannot write the audit row: the store thread has stopped");
        }
    }

    /// `Store::begin_login`, in one call with the logins queued beside it
    /// (`Store::begin_logins`).
    pub async fn begin_login(
        &self,
        user: String,
        now: i64,
        rules: FailureRules,
    ) -> StoreResult<LoginStart> {
        let login = Login { user, now, rules };
        self.in_batch(&self.logins, batch::begin_logins, login)
            .await
    }

    /// `Store::start_challenge`, in one call with the starts queued beside it
    /// (`Store::start_challenges`).
    pub async fn start_challenge(&self, start: ChallengeToStart) -> StoreResult<Started> {
        self.in_batch(&self.starts, batch::start_challenges, start)
            .await
    }

    /// `Store::answer_challenge` of a State + OTP answer, in one call with the answers
    /// queued beside it (`Store::answer_challenges`).
    pub async fn answer_state(&self, answer: StateAnswer) -> StoreResult<Answer> {
        self.in_batch(&self.answers, batch::answer_challenges, answer)
            .await
    }

    /// Adds `ask` to `batch`, queueing the job that runs it with `run` unless one will, and
    /// waits for its result.
    async fn in_batch<A: Send + 'static, O: Send + 'static>(
        &self,
        batch: &Arc<Batch<Waiting<A, O>>>,
        run: fn(&dyn Store, Vec<Waiting<A, O>>),
        ask: A,
    ) -> StoreResult<O> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        if batch.add(Waiting { ask, reply }) {
            self.queue_batch(batch.clone(), run)?;
        }
        receiver.await.map_err(|_| dropped())?
    }

    /// Queues the job that takes `batch`'s waiting members and runs them with `run`.
    fn queue_batch<I: Send + 'static>(
        &self,
        batch: Arc<Batch<I>>,
        run: fn(&dyn Store, Vec<I>),
    ) -> StoreResult<()> {
        self.queue.push([batch_job(self.queue.clone(), batch, run)])
    }

    /// Waits until every call queued before it has run, on every thread.
    ///
    /// It queues one barrier job per thread, together. The queue is first in first out, so
    /// every earlier call is taken before any barrier job; a thread that takes one waits in
    /// it, so it takes no other, and once all threads hold one, each has finished the call
    /// it had before.
    pub async fn flush(&self) -> StoreResult<()> {
        let barrier = Arc::new(Barrier::new(self.threads));
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let sender = Arc::new(Mutex::new(Some(sender)));
        let jobs = (0..self.threads).map(|_| {
            let (barrier, sender) = (barrier.clone(), sender.clone());
            Box::new(move |_: &dyn Store| {
                if barrier.wait().is_leader()
                    && let Some(sender) = sender.lock().unwrap_or_else(|p| p.into_inner()).take()
                {
                    let _ = sender.send(());
                }
            }) as Job
        });
        self.queue.push(jobs)?;
        receiver.await.map_err(|_| dropped())
    }

    /// How many threads run calls.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

fn dropped() -> StoreError {
    StoreError::Database("the store thread dropped a call".into())
}

/// A job taking a batch's members; when more wait than it takes, it queues the next first,
/// so that another thread can take them meanwhile.
fn batch_job<I: Send + 'static>(
    queue: Arc<Queue>,
    batch: Arc<Batch<I>>,
    run: fn(&dyn Store, Vec<I>),
) -> Job {
    Box::new(move |store| {
        let queue_next = || {
            if queue
                .push([batch_job(queue.clone(), batch.clone(), run)])
                .is_err()
            {
                tracing::error!("cannot run queued store calls: the store thread has stopped");
            }
        };
        let (members, more) = batch.take();
        if more {
            queue_next();
        }
        run(store, members);
        if batch.done() {
            queue_next();
        }
    })
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, UserRow};

    #[tokio::test]
    async fn calls_run_in_order_on_the_thread() {
        let thread = StoreThread::start(Arc::new(SqliteStore::in_memory().unwrap())).unwrap();
        let user = UserRow {
            name: "a".into(),
            phone: "+491".into(),
            created: 0,
            group: None,
        };
        thread.run(move |s| s.add_user(&user)).await.unwrap();
        let users = thread.run(|s| s.users()).await.unwrap();
        assert_eq!(users.len(), 1);
        let duplicate = UserRow {
            name: "a".into(),
            phone: "+491".into(),
            created: 0,
            group: None,
        };
        assert!(matches!(
            thread.run(move |s| s.add_user(&duplicate)).await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn submitted_calls_are_done_when_flush_returns() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let thread = StoreThread::start(store.clone()).unwrap();
        for n in 0..100 {
            let user = UserRow {
                name: format!("u{n}"),
                phone: "+491".into(),
                created: 0,
                group: None,
            };
            thread.submit("a user", move |s| s.add_user(&user)).await;
        }
        thread.flush().await.unwrap();
        // Read past the thread: a call queued behind the submissions would see them done
        // whether or not `flush` waited.
        assert_eq!(store.users().unwrap().len(), 100);
    }

    /// Holds the (one) store thread in a call until the test sends on the returned sender;
    /// returns once the call runs.
    async fn hold(
        thread: &Arc<StoreThread>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<StoreResult<()>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let blocked = tokio::spawn({
            let thread = thread.clone();
            async move {
                thread
                    .run(move |_| {
                        let _ = started.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            }
        });
        running.await.unwrap();
        (release, blocked)
    }

    /// Rows submitted while the thread is busy are written together, in order, and all of
    /// them are in when `flush` returns; the limit counts rows, not writes.
    #[tokio::test]
    async fn audit_rows_queued_behind_a_busy_thread_are_written_in_order() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let thread = Arc::new(StoreThread::with_submit_limit(store.clone(), 1, 300).unwrap());
        let (release, blocked) = hold(&thread).await;
        let row = |n: i64| AuditRow {
            time: n,
            user: format!("u{n}"),
            ..AuditRow::default()
        };
        for n in 0..300 {
            thread.submit_audit(row(n)).await;
        }
        let over = tokio::spawn({
            let thread = thread.clone();
            async move { thread.submit_audit(row(300)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!over.is_finished(), "row 301 waits for room");
        assert!(
            store.audit(None, 1000).unwrap().is_empty(),
            "nothing written yet"
        );
        release.send(()).unwrap();
        blocked.await.unwrap().unwrap();
        over.await.unwrap();
        thread.flush().await.unwrap();
        let written = store.audit_page(0, 1000).unwrap();
        let times: Vec<i64> = written.iter().map(|(_, r)| r.time).collect();
        assert_eq!(times, (0..=300).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn submit_waits_while_the_limit_of_queued_calls_is_reached() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let thread = Arc::new(StoreThread::with_submit_limit(store, 1, 2).unwrap());
        let (release, blocked) = hold(&thread).await;
        for _ in 0..2 {
            thread.submit("nothing", |_| Ok(())).await;
        }
        let third = tokio::spawn({
            let thread = thread.clone();
            async move { thread.submit("nothing", |_| Ok(())).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!third.is_finished(), "a third queued call waits for room");
        release.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), third)
            .await
            .expect("room after the store thread ran the queued calls")
            .unwrap();
        blocked.await.unwrap().unwrap();
    }

    /// A slow store call, to show calls side by side.
    fn pause() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    #[tokio::test]
    async fn several_threads_run_calls_side_by_side() {
        let thread = Arc::new(
            StoreThread::with_threads(Arc::new(SqliteStore::in_memory().unwrap()), 8).unwrap(),
        );
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let thread = thread.clone();
                tokio::spawn(async move {
                    thread
                        .run(|s| {
                            pause();
                            s.users()
                        })
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(300),
            "8 calls of 50 ms on 8 threads took {took:?}"
        );
    }

    /// flush waits for slow submitted calls on every thread, not only the first to finish.
    #[tokio::test]
    async fn flush_waits_for_the_calls_of_every_thread() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let thread = StoreThread::with_threads(store.clone(), 4).unwrap();
        for n in 0..40 {
            let user = UserRow {
                name: format!("u{n}"),
                phone: "+491".into(),
                created: 0,
                group: None,
            };
            thread
                .submit("a user", move |s| {
                    if n % 10 == 0 {
                        pause();
                    }
                    s.add_user(&user)
                })
                .await;
        }
        thread.flush().await.unwrap();
        assert_eq!(store.users().unwrap().len(), 40);
        // And again, with nothing queued.
        thread.flush().await.unwrap();
    }
}
