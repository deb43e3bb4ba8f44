//! The threads that run Argon2: one per core, scheduled SCHED_IDLE. A PIN check takes
//! milliseconds of pure CPU; at normal priority it would keep the short, latency-bound work
//! (answers, SQLite, replies) waiting for a time slice. As idle work, Argon2 still gets
//! every cycle nothing else wants, so throughput under load stays the same.
//!
//! The pool also bounds memory: one `[pin] memory_kib` per thread. Each thread keeps its
//! Argon2 memory between jobs (allocating it per job costs page faults and address-space
//! lock contention, see `PinHasher::verify_in`) and wipes and frees it after `IDLE` without
//! work, so an idle server holds none.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::pin::WorkingMemory;

type Job = Box<dyn FnOnce(&mut WorkingMemory) + Send>;

/// What the pool's threads are named, followed by their index (`otpgate-bench` tells them
/// apart from the request path's threads by it).
pub const THREAD_NAME_PREFIX: &str = "otpgate-argon2-";

/// How long a thread keeps its Argon2 memory with no PIN to check.
const IDLE: Duration = Duration::from_secs(30);

/// Why a job was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinRefused {
    #[error("the PIN queue is full")]
    Overloaded,
    #[error("the PIN threads have stopped")]
    Stopped,
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
    jobs: VecDeque<Job>,
    closed: bool,
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
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job(&mut memory);
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
            if waited.timed_out() && state.jobs.is_empty() && memory.bytes() > 0 {
                drop(state);
                memory.release();
                state = self.lock();
            }
        }
    }
}

impl PinPool {
    pub fn new(threads: usize, _queue_per_thread: usize) -> std::io::Result<PinPool> {
        Self::with_idle(threads, IDLE)
    }

    fn with_idle(threads: usize, idle: Duration) -> std::io::Result<PinPool> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let held = Arc::new(AtomicUsize::new(0));
        for index in 0..threads.max(1) {
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

    /// Runs `work` on a PIN thread for `client`'s request.
    pub async fn run<T: Send + 'static>(
        &self,
        _client: &str,
        work: impl FnOnce(&mut WorkingMemory) -> T + Send + 'static,
    ) -> Result<T, PinRefused> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = sender.send(work(memory));
        });
        {
            let mut state = self.queue.lock();
            state.jobs.push_back(job);
        }
        self.queue.ready.notify_one();
        receiver.await.map_err(|_| PinRefused::Stopped)
    }
}

impl Drop for PinPool {
    /// The threads finish the queued jobs, then end.
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
    use crate::auth::keys::Keys;
    use crate::auth::pin::PinHasher;
    use crate::config::PinConfig;

    impl PinPool {
        async fn verify(&self, pins: &PinHasher, pin: &[u8], hash: &str) -> bool {
            let (pins, pin, hash) = (pins.clone(), pin.to_vec(), hash.to_string());
            self.run("test", move |memory| pins.verify_in(&pin, &hash, memory))
                .await
                .unwrap_or(false)
        }
    }

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

    #[tokio::test]
    async fn verifies_on_the_pool() {
        let (pins, hash) = hasher_and_hash(8);
        let pool = PinPool::new(2, 16).unwrap();
        let mut results = Vec::new();
        for pin in [&b"1234"[..], b"9999", b"1234"] {
            results.push(pool.verify(&pins, pin, &hash).await);
        }
        assert_eq!(results, vec![true, false, true]);
    }

    #[tokio::test]
    async fn threads_keep_their_memory_while_busy_and_free_it_when_idle() {
        let (pins, hash) = hasher_and_hash(64);
        let pool = PinPool::with_idle(1, Duration::from_millis(200)).unwrap();
        assert_eq!(pool.held_bytes(), 0);
        assert!(pool.verify(&pins, b"1234", &hash).await);
        assert_eq!(pool.held_bytes(), 64 * 1024);
        assert!(!pool.verify(&pins, b"4321", &hash).await);
        assert_eq!(
            pool.held_bytes(),
            64 * 1024,
            "the memory is reused, not added"
        );
        until_nothing_held(&pool).await;
        assert_eq!(pool.held_bytes(), 0, "idle threads give their memory back");
        assert!(pool.verify(&pins, b"1234", &hash).await);
    }

    /// Every thread gives its memory back, not only the one that happens to wait first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn all_threads_free_their_memory_when_idle() {
        let (pins, hash) = hasher_and_hash(4096);
        let pool = std::sync::Arc::new(PinPool::with_idle(3, Duration::from_millis(200)).unwrap());
        // Enough concurrent checks that every thread takes at least one.
        let checks: Vec<_> = (0..12)
            .map(|_| {
                let (pool, pins, hash) = (pool.clone(), pins.clone(), hash.clone());
                tokio::spawn(async move { pool.verify(&pins, b"1234", &hash).await })
            })
            .collect();
        for check in checks {
            assert!(check.await.unwrap());
        }
        assert!(
            pool.held_bytes() > 4096 * 1024,
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
