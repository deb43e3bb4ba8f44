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

use super::{Store, StoreError, StoreResult};

type Job = Box<dyn FnOnce(&dyn Store) + Send>;

pub struct StoreThread {
    jobs: mpsc::Sender<Job>,
}

impl StoreThread {
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<StoreThread> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("otpgate-store".into())
            .spawn(move || {
                // Ends when every sender is gone, after the queued calls ran.
                while let Ok(job) = receiver.recv() {
                    job(store.as_ref());
                }
            })?;
        Ok(StoreThread { jobs })
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
}

impl StoreThread {
    /// Queues `call` without waiting for it, for a write whose result no reply depends on
    /// (an audit row). It runs in order with every other call, so a later call, and
    /// `flush`, see it done; a failure is logged with `what`.
    pub fn submit<F>(&self, what: &'static str, call: F)
    where
        F: FnOnce(&dyn Store) -> StoreResult<()> + Send + 'static,
    {
        let job: Job = Box::new(move |store| {
            if let Err(e) = call(store) {
                tracing::error!(error = %e, "cannot write {what}");
            }
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
        let thread = StoreThread::start(Arc::new(SqliteStore::in_memory().unwrap())).unwrap();
        for n in 0..100 {
            let user = UserRow {
                name: format!("u{n}"),
                phone: "+491".into(),
                created: 0,
                group: None,
            };
            thread.submit("a user", move |s| s.add_user(&user));
        }
        thread.flush().await.unwrap();
        let users = thread.run(|s| s.users()).await.unwrap();
        assert_eq!(users.len(), 100);
    }
}
