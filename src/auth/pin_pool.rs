//! The threads that run Argon2: one per core, scheduled SCHED_IDLE. A PIN check takes
//! milliseconds of pure CPU; at normal priority it would keep the short, latency-bound work
//! (answers, SQLite, replies) waiting for a time slice. As idle work, Argon2 still gets
//! every cycle nothing else wants, so throughput under load stays the same.
//!
//! The pool also bounds memory: at most one `[pin] memory_kib` per thread at once.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::pin::PinHasher;

type Job = Box<dyn FnOnce() + Send>;

pub struct PinPool {
    jobs: mpsc::Sender<Job>,
}

impl PinPool {
    pub fn new(threads: usize) -> std::io::Result<PinPool> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("otpgate-argon2-{index}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only to take the next job, never while running it.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(PinPool { jobs: sender })
    }

    /// Verifies `pin` against `hash` on the pool. False if the pool is gone.
    pub async fn verify(&self, pins: &PinHasher, pin: &[u8], hash: &str) -> bool {
        let (pins, pin, hash) = (pins.clone(), pin.to_vec(), hash.to_string());
        self.run(move || pins.verify(&pin, &hash))
            .await
            .unwrap_or(false)
    }

    /// Spends one verification's time on a hash that matches nothing.
    pub async fn verify_decoy(&self, pins: &PinHasher, pin: &[u8]) {
        let (pins, pin) = (pins.clone(), pin.to_vec());
        let _ = self.run(move || pins.verify_decoy(&pin)).await;
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sender.send(work());
        });
        self.jobs.send(job).ok()?;
        receiver.await.ok()
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
    use crate::config::PinConfig;

    #[tokio::test]
    async fn verifies_on_the_pool() {
        let pins = PinHasher::new(
            Keys::for_tests(),
            &PinConfig {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
        )
        .unwrap();
        let hash = pins.hash("1234").unwrap();
        let pool = PinPool::new(2).unwrap();
        let mut results = Vec::new();
        for pin in [&b"1234"[..], b"9999", b"1234"] {
            results.push(pool.verify(&pins, pin, &hash).await);
        }
        assert_eq!(results, vec![true, false, true]);
    }
}
