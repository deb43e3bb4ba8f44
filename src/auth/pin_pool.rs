//! The threads that run Argon2: one per core, scheduled SCHED_IDLE. A PIN check takes
//! milliseconds of pure CPU; at normal priority it would keep the short, latency-bound work
//! (answers, SQLite, replies) waiting for a time slice. As idle work, Argon2 still gets
//! every cycle nothing else wants, so throughput under load stays the same.
//!
//! The queue in front of the threads is bounded: `queue_per_thread` jobs per thread, and a
//! job that finds no room is refused at once (`PinRefused::Overloaded`) so that the RADIUS
//! layer drops the request and the NAS retransmits it. Every request without State costs
//! Argon2 time, unknown users included (decoy runs hide which users exist), so a flood
//! queues work faster than the threads do it. Unbounded, the queue only grew: two bursts
//! of 300 unknown-user requests left the server answering no PIN request for ~9 s after
//! the flood had stopped. Bounded, a job waits behind at most `queue_per_thread` others
//! per thread. And a job whose caller stopped waiting (the request timed out or was
//! cancelled) is dropped by the thread that takes it instead of being computed: nobody
//! would get its answer, and a flood leaves many such jobs behind.
//!
//! Room in the queue and turns on the threads are shared between RADIUS clients, so one
//! client's flood cannot starve the others: each client with queued jobs has a queue of
//! its own, and the threads take jobs from those queues in turn. When the queue is full, a
//! client whose queue is longer than the newcomer's would be gives up its oldest job (also
//! `Overloaded`) to make room; only when no client holds more than that is the newcomer
//! refused. A light client thus always gets in, and floods from two clients share evenly.
//!
//! The pool also bounds memory: one `[pin] memory_kib` per thread. Each thread keeps its
//! Argon2 memory between jobs (allocating it per job costs page faults and address-space
//! lock contention, see `PinHasher::verify_in`) and wipes and frees it after `IDLE` without
//! work, so an idle server holds none.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::pin::WorkingMemory;

/// What the pool's threads are named, followed by their index (`otpgate-bench` tells them
/// apart from the request path's threads by it).
pub const THREAD_NAME_PREFIX: &str = "otpgate-argon2-";

/// How long a thread keeps its Argon2 memory with no PIN to check.
const IDLE: Duration = Duration::from_secs(30);

/// Why the pool did not run a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinRefused {
    /// No room in the queue: drop the request, the NAS sends it again.
    #[error("the PIN queue is full")]
    Overloaded,
    /// The thread that took the job ended without finishing it.
    #[error("the PIN threads have stopped")]
    Stopped,
}

/// A queued job with its result type erased.
trait Job: Send {
    /// Whether the caller stopped waiting for the result.
    fn abandoned(&self) -> bool;
    fn run(self: Box<Self>, memory: &mut WorkingMemory);
    fn refuse(self: Box<Self>, why: PinRefused);
}

struct Task<W, T> {
    work: W,
    reply: oneshot::Sender<Result<T, PinRefused>>,
}

impl<W, T> Job for Task<W, T>
where
    W: FnOnce(&mut WorkingMemory) -> T + Send,
    T: Send,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(self: Box<Self>, memory: &mut WorkingMemory) {
        let Task { work, reply } = *self;
        let _ = reply.send(Ok(work(memory)));
    }

    fn refuse(self: Box<Self>, why: PinRefused) {
        let _ = self.reply.send(Err(why));
    }
}

pub struct PinPool {
    queue: Arc<Queue>,
    /// Bytes of Argon2 memory the threads hold between jobs.
    held: Arc<AtomicUsize>,
}

/// Jobs waiting for a thread. A condition variable rather than a channel behind a mutex:
/// every idle thread waits on it with its own timeout, so each one notices that it has been
/// idle (with a shared receiver only the thread holding the lock could).
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    /// The clients with queued jobs, the one whose turn is next first. A list, not a map:
    /// clients are configured NASes, and there are never more entries than queued jobs.
    clients: VecDeque<ClientJobs>,
    /// Jobs queued over all clients.
    len: usize,
    /// The most jobs that may wait; running ones do not count.
    capacity: usize,
    closed: bool,
}

struct ClientJobs {
    name: Box<str>,
    /// Never empty: a client whose last job is taken leaves `clients`.
    jobs: VecDeque<Box<dyn Job>>,
}

impl QueueState {
    /// Queues `client`'s job, returning a job evicted to make room; or refuses `job` and
    /// returns it. Neither is dropped here, under the lock: it holds the caller's closure.
    fn push(
        &mut self,
        client: &str,
        job: Box<dyn Job>,
    ) -> Result<Option<Box<dyn Job>>, Box<dyn Job>> {
        let mut evicted = None;
        if self.len >= self.capacity {
            let own = self
                .clients
                .iter()
                .find(|c| *c.name == *client)
                .map_or(0, |c| c.jobs.len());
            // A client gives up a job only if it holds more than `client` will, so it keeps
            // at least as many (and at least one): shares converge to equal ones, and two
            // clients at equal shares do not trade jobs back and forth. Its oldest job goes:
            // the one whose NAS has most likely retransmitted or given up already.
            let fullest = self
                .clients
                .iter_mut()
                .filter(|c| *c.name != *client)
                .max_by_key(|c| c.jobs.len())
                .filter(|c| c.jobs.len() > own + 1);
            match fullest.and_then(|c| c.jobs.pop_front()) {
                Some(oldest) => evicted = Some(oldest),
                None => return Err(job),
            }
            self.len -= 1;
        }
        match self.clients.iter_mut().find(|c| *c.name == *client) {
            Some(own) => own.jobs.push_back(job),
            None => self.clients.push_back(ClientJobs {
                name: client.into(),
                jobs: VecDeque::from([job]),
            }),
        }
        self.len += 1;
        Ok(evicted)
    }

    /// The oldest job of the client whose turn it is; that client's next turn comes after
    /// every other client's.
    fn next_job(&mut self) -> Option<Box<dyn Job>> {
        while let Some(mut turn) = self.clients.pop_front() {
            let Some(job) = turn.jobs.pop_front() else {
                continue;
            };
            if !turn.jobs.is_empty() {
                self.clients.push_back(turn);
            }
            self.len -= 1;
            return Some(job);
        }
        None
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Jobs run outside the lock, so a poisoned lock still guards a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs jobs until the pool is dropped; frees `memory` after `idle` without one.
    fn serve(&self, idle: Duration, held: Arc<AtomicUsize>) {
        let mut memory = WorkingMemory::counted(held);
        let mut state = self.lock();
        loop {
            if let Some(job) = state.next_job() {
                drop(state);
                if !job.abandoned() {
                    job.run(&mut memory);
                }
                state = self.lock();
                continue;
            }
            if state.closed {
                return;
            }
            let (next, waited) = self
                .ready
                .wait_timeout(state, idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if waited.timed_out() && state.len == 0 && memory.bytes() > 0 {
                drop(state);
                memory.release();
                state = self.lock();
            }
        }
    }
}

impl PinPool {
    /// `threads` Argon2 threads with room for `queue_per_thread` waiting jobs each.
    pub fn new(threads: usize, queue_per_thread: usize) -> std::io::Result<PinPool> {
        Self::with_idle(threads, queue_per_thread, IDLE)
    }

    fn with_idle(
        threads: usize,
        queue_per_thread: usize,
        idle: Duration,
    ) -> std::io::Result<PinPool> {
        let threads = threads.max(1);
        let capacity = threads.saturating_mul(queue_per_thread);
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                clients: VecDeque::new(),
                len: 0,
                capacity,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let held = Arc::new(AtomicUsize::new(0));
        for index in 0..threads {
            let (queue, held) = (queue.clone(), held.clone());
            std::thread::Builder::new()
                .name(format!("{THREAD_NAME_PREFIX}{index}"))
                .spawn(move || {
                    lower_priority();
                    queue.serve(idle, held);
                })?;
        }
        Ok(PinPool { queue, held })
    }

    /// Bytes of Argon2 memory the pool's threads keep for their next PIN check.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.queue.lock().len
    }

    /// Runs `work` on one of the pool's threads with that thread's Argon2 memory, as a job
    /// of RADIUS client `client`.
    pub async fn run<T: Send + 'static>(
        &self,
        client: &str,
        work: impl FnOnce(&mut WorkingMemory) -> T + Send + 'static,
    ) -> Result<T, PinRefused> {
        let (reply, answer) = oneshot::channel();
        // Refused rather than left to wait for room: a request that waits longer than the
        // NAS does is answered to nobody, and its retransmission would queue again.
        let pushed = self
            .queue
            .lock()
            .push(client, Box::new(Task { work, reply }));
        match pushed {
            Ok(evicted) => {
                self.queue.ready.notify_one();
                if let Some(evicted) = evicted {
                    evicted.refuse(PinRefused::Overloaded);
                }
            }
            Err(_) => return Err(PinRefused::Overloaded),
        }
        // The reply is dropped unsent only if the work panicked, which ends its thread.
        answer.await.unwrap_or(Err(PinRefused::Stopped))
    }
}

impl Drop for PinPool {
    /// The threads finish the queued jobs someone still waits for, then end.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// SCHED_IDLE: the kernel runs these threads only when no normal thread wants the CPU.
fn lower_priority() {
    use thread_priority::ThreadPriority;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = %e, "Argon2 threads keep the normal scheduling priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::pin::PinHasher;

    impl PinPool {
        async fn verify(
            &self,
            client: &str,
            pins: &PinHasher,
            pin: &[u8],
            hash: &str,
        ) -> Result<bool, PinRefused> {
            let (pins, pin, hash) = (pins.clone(), pin.to_vec(), hash.to_string());
            self.run(client, move |memory| pins.verify_in(&pin, &hash, memory))
                .await
        }
    }
    use crate::auth::keys::Keys;
    use crate::config::PinConfig;
    use std::pin::Pin;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Waker};

    /// A one-pass hasher with `memory_kib`, and its hash of PIN 1234.
    fn hasher_and_hash(memory_kib: u32) -> (PinHasher, String) {
        let config = PinConfig {
            memory_kib,
            iterations: 1,
            parallelism: 1,
        };
        let pins = PinHasher::new(Keys::for_tests(), &config).unwrap();
        let hash = pins.hash_for("alice", "1234").unwrap();
        (pins, hash)
    }

    /// Waits up to 5 s for the pool to hold no Argon2 memory.
    async fn until_nothing_held(pool: &PinPool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.held_bytes() != 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 5 s for `done`.
    async fn eventually(done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(done(), "still not done after 5 s");
    }

    /// Polls `job` once, which queues it unless the pool refuses it at once.
    fn poll_once<F: Future + Unpin>(job: &mut F) -> Poll<F::Output> {
        Pin::new(job).poll(&mut Context::from_waker(Waker::noop()))
    }

    type Waiting<'a, T> = Pin<Box<dyn Future<Output = Result<T, PinRefused>> + 'a>>;

    /// Every thread of a pool busy with a job that waits until the gate opens, so that what
    /// the test queues next stays queued.
    struct Gate<'a> {
        release: Vec<mpsc::Sender<()>>,
        jobs: Vec<Waiting<'a, ()>>,
    }

    impl Gate<'_> {
        async fn close(pool: &PinPool, threads: usize) -> Gate<'_> {
            let mut gate = Gate {
                release: Vec::new(),
                jobs: Vec::new(),
            };
            for _ in 0..threads {
                let (release, wait) = mpsc::channel::<()>();
                let mut job = Box::pin(pool.run("gate", move |_| {
                    let _ = wait.recv();
                }));
                assert!(poll_once(&mut job).is_pending());
                gate.release.push(release);
                gate.jobs.push(job);
            }
            // A thread blocked in one gate job cannot take another, so once none is queued
            // each thread holds one.
            eventually(|| pool.queued() == 0).await;
            gate
        }

        async fn open(self) {
            drop(self.release);
            for job in self.jobs {
                job.await.unwrap();
            }
        }
    }

    /// With every thread busy, exactly `threads * queue_per_thread` jobs wait, and the next
    /// one is refused without waiting.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = PinPool::new(2, 3).unwrap();
        let gate = Gate::close(&pool, 2).await;
        let mut waiting: Vec<_> = (0..6)
            .map(|i| Box::pin(pool.run("a", move |_| i)))
            .collect();
        for job in &mut waiting {
            assert!(poll_once(job).is_pending());
        }
        assert_eq!(pool.queued(), 6);
        let mut refused = Box::pin(pool.run("a", |_| 6));
        assert_eq!(
            poll_once(&mut refused),
            Poll::Ready(Err(PinRefused::Overloaded))
        );
        assert_eq!(pool.queued(), 6);
        gate.open().await;
        for (i, job) in waiting.into_iter().enumerate() {
            assert_eq!(job.await, Ok(i));
        }
    }

    /// A client's few jobs are taken in turn with a flooding client's, not after its
    /// backlog. One thread, so that the order the jobs ran in is the order they were taken.
    #[tokio::test]
    async fn clients_take_turns() {
        let pool = PinPool::new(1, 128).unwrap();
        let gate = Gate::close(&pool, 1).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let submit = |client: &'static str| {
            let order = order.clone();
            let mut job = Box::pin(pool.run(client, move |_| order.lock().unwrap().push(client)));
            assert!(poll_once(&mut job).is_pending());
            job
        };
        let flood: Vec<_> = (0..100).map(|_| submit("a")).collect();
        let light: Vec<_> = (0..5).map(|_| submit("b")).collect();
        gate.open().await;
        for job in light.into_iter().chain(flood) {
            job.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order.len(), 105);
        assert_eq!(order[..10], ["a", "b"].repeat(5), "{order:?}");
        assert!(order[10..].iter().all(|c| *c == "a"));
    }

    /// A queue full of one client's jobs still takes another client's: the flooding
    /// client's oldest job makes room and is refused. Shares stop moving once even.
    #[tokio::test]
    async fn a_full_queue_evicts_from_the_client_holding_most() {
        let pool = PinPool::new(1, 4).unwrap();
        let gate = Gate::close(&pool, 1).await;
        let mut a: Vec<_> = (0..4)
            .map(|i| Box::pin(pool.run("a", move |_| i)))
            .collect();
        for job in &mut a {
            assert!(poll_once(job).is_pending());
        }
        let mut a_more = Box::pin(pool.run("a", |_| 4));
        let overloaded = Poll::Ready(Err(PinRefused::Overloaded));
        assert_eq!(
            poll_once(&mut a_more),
            overloaded,
            "a evicts none of its own"
        );
        let mut b: Vec<_> = (10..13)
            .map(|i| Box::pin(pool.run("b", move |_| i)))
            .collect();
        assert!(poll_once(&mut b[0]).is_pending(), "b's first job gets in");
        assert_eq!(poll_once(&mut a[0]), overloaded, "in place of a's oldest");
        assert!(
            poll_once(&mut b[1]).is_pending(),
            "a's 3 are more than b's 2"
        );
        assert_eq!(poll_once(&mut a[1]), overloaded);
        assert_eq!(
            poll_once(&mut b[2]),
            overloaded,
            "a's 2 are not more than b's 3"
        );
        assert_eq!(pool.queued(), 4);
        gate.open().await;
        for (job, expected) in a.drain(2..).zip([2, 3]) {
            assert_eq!(job.await, Ok(expected));
        }
        for (job, expected) in b.drain(..2).zip([10, 11]) {
            assert_eq!(job.await, Ok(expected));
        }
    }

    /// Jobs whose futures were dropped while they waited are never run.
    #[tokio::test]
    async fn abandoned_jobs_are_skipped() {
        let pool = PinPool::new(1, 16).unwrap();
        let gate = Gate::close(&pool, 1).await;
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let ran = ran.clone();
            let mut job = Box::pin(pool.run("a", move |_| ran.fetch_add(1, Ordering::Relaxed)));
            assert!(poll_once(&mut job).is_pending());
        }
        assert_eq!(pool.queued(), 5);
        gate.open().await;
        // Queued behind the abandoned jobs, so they have been dealt with once it is done.
        let last = ran.clone();
        pool.run("a", move |_| last.fetch_add(1, Ordering::Relaxed))
            .await
            .unwrap();
        assert_eq!(ran.load(Ordering::Relaxed), 1, "only the last job ran");
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn verifies_on_the_pool() {
        let (pins, hash) = hasher_and_hash(8);
        let pool = PinPool::new(2, 16).unwrap();
        let mut results = Vec::new();
        for pin in [&b"1234"[..], b"9999", b"1234"] {
            results.push(pool.verify("a", &pins, pin, &hash).await.unwrap());
        }
        assert_eq!(results, vec![true, false, true]);
    }

    #[tokio::test]
    async fn threads_keep_their_memory_while_busy_and_free_it_when_idle() {
        let (pins, hash) = hasher_and_hash(64);
        let pool = PinPool::with_idle(1, 16, Duration::from_millis(200)).unwrap();
        assert_eq!(pool.held_bytes(), 0);
        assert!(pool.verify("a", &pins, b"1234", &hash).await.unwrap());
        assert_eq!(pool.held_bytes(), 64 * 1024);
        assert!(!pool.verify("a", &pins, b"4321", &hash).await.unwrap());
        assert_eq!(
            pool.held_bytes(),
            64 * 1024,
            "the memory is reused, not added"
        );
        until_nothing_held(&pool).await;
        assert_eq!(pool.held_bytes(), 0, "idle threads give their memory back");
        assert!(pool.verify("a", &pins, b"1234", &hash).await.unwrap());
    }

    /// Every thread gives its memory back, not only the one that happens to wait first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn all_threads_free_their_memory_when_idle() {
        let (pins, hash) = hasher_and_hash(4096);
        let pool =
            std::sync::Arc::new(PinPool::with_idle(3, 16, Duration::from_millis(200)).unwrap());
        // Rounds of concurrent checks until more than one thread holds memory: on a busy
        // machine one thread may take a whole round before the others wake.
        let one_thread = 4096 * 1024;
        for _ in 0..20 {
            let checks: Vec<_> = (0..12)
                .map(|_| {
                    let (pool, pins, hash) = (pool.clone(), pins.clone(), hash.clone());
                    tokio::spawn(async move { pool.verify("a", &pins, b"1234", &hash).await })
                })
                .collect();
            for check in checks {
                assert!(check.await.unwrap().unwrap());
            }
            if pool.held_bytes() > one_thread {
                break;
            }
        }
        assert!(
            pool.held_bytes() > one_thread,
            "more than one thread worked"
        );
        until_nothing_held(&pool).await;
        assert_eq!(
            pool.held_bytes(),
            0,
            "every idle thread gives its memory back"
        );
    }
}
