//! The store thread: one OS thread that runs every store call of the server in turn
//! (requests, notifications' audit rows, purging, breaker records).
//!
//! The engine used to send each call to tokio's blocking pool, where the calls of
//! concurrent requests then queued for the connection's mutex: two thread hand-offs and a
//! contended lock per call, which a profile showed as the server's largest cost after
//! Argon2. One thread owns the order instead; under load it takes call after call without
//! sleeping, and SQLite serialises writers anyway.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::Semaphore;

use super::{Store, StoreError, StoreResult};

type Job = Box<dyn FnOnce(&dyn Store) + Send>;

/// How many submitted calls may wait unanswered. Nobody awaits a submitted call, so without
/// a bound a flood of requests that reject before touching the store (each still queues
/// its audit row) could queue rows faster than the disk takes them.
const MAX_SUBMITTED: usize = 4096;

pub struct StoreThread {
    jobs: mpsc::Sender<Job>,
    /// One permit per submitted call not yet run; `submit` waits when none is left.
    submitted: Arc<Semaphore>,
}

impl StoreThread {
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<StoreThread> {
        StoreThread::with_submit_limit(store, MAX_SUBMITTED)
    }

    fn with_submit_limit(store: Arc<dyn Store>, limit: usize) -> std::io::Result<StoreThread> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("otpgate-store".into())
            .spawn(move || {
                // Ends when every sender is gone, after the queued calls ran.
                while let Ok(job) = receiver.recv() {
                    job(store.as_ref());
                }
            })?;
        Ok(StoreThread {
            jobs,
            submitted: Arc::new(Semaphore::new(limit)),
        })
    }

    /// Runs `call` on the store thread. Cancel-safe: a dropped future leaves the call to
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
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Database("the store thread has stopped".into()))?;
        receiver
            .await
            .map_err(|_| StoreError::Database("the store thread dropped a call".into()))?
    }

    /// Queues `call` without waiting for it to run, for a write whose result no reply
    /// depends on (an audit row). It runs in order with every other call, so a later call,
    /// and `flush`, see it done; a failure is logged with `what`. Waits only while
    /// `MAX_SUBMITTED` calls are already queued.
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
        if self.jobs.send(job).is_err() {
            tracing::error!("cannot write {what}: the store thread has stopped");
        }
    }

    /// Waits until every call queued before it has run.
    pub async fn flush(&self) -> StoreResult<()> {
        self.run(|_| Ok(())).await
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

    #[tokio::test]
    async fn submit_waits_while_the_limit_of_queued_calls_is_reached() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let thread = Arc::new(StoreThread::with_submit_limit(store, 2).unwrap());
        // Hold the store thread until the test lets go.
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
}
