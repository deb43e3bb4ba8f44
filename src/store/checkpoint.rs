//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that fills the WAL past 1,000 pages,
//! on the committing connection: on the server that is the store thread, which then spends
//! several milliseconds copying pages and waiting for fsync while every queued request waits
//! behind it. At 60 logins/s that happened every second or so and made the answer step's
//! p99 several times its median. Here a second connection does that work a little earlier,
//! so at such rates commits only append. At thousands of logins/s the WAL refills faster
//! than any concurrent checkpoint can empty it; there the writer checkpoints itself at
//! SQLite's usual size, as before, and the checkpointer's few passes per second only make
//! those checkpoints shorter.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use super::{StoreError, StoreResult};

/// WAL pages (4 KiB each) after which the checkpointer is woken, early enough that it has
/// usually emptied the WAL before the writer's own threshold.
const WAKE_AT_PAGES: i32 = 700;
/// At most one wake per interval: a checkpointer running all the time beside a busy writer
/// costs more than it saves (measured at 5,000 flows/s: +12% CPU per flow when woken at
/// every threshold, -6% with this limit; see BENCHMARKS.md).
const MIN_WAKE_INTERVAL: Duration = Duration::from_millis(250);
/// Passes the checkpointer makes after one wake, chasing the writer's latest commits.
const CATCH_UP_PASSES: usize = 5;
/// Pause before another pass when the writer holds the checkpoint lock.
const BUSY_PAUSE: Duration = Duration::from_millis(2);
/// WAL pages after which the writer checkpoints itself: SQLite's own default. A longer WAL
/// costs every read (measured with 8,000: +32% CPU per flow).
const WRITER_CHECKPOINTS_AT_PAGES: i32 = 1_000;

enum Signal {
    /// The WAL has grown: copy it into the database.
    Wake,
    Stop,
}

/// The running checkpointer. Dropping it stops the thread and closes its connection.
pub struct Checkpointer {
    signals: mpsc::SyncSender<Signal>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the checkpointer for the database at `path` and hands checkpoints over to it from
/// `writer`.
pub fn start(path: &Path, writer: &mut Connection) -> StoreResult<Checkpointer> {
    let checkpointer = Connection::open(path).map_err(|e| {
        StoreError::Database(format!(
            "cannot open {} for checkpoints: {e}",
            path.display()
        ))
    })?;
    checkpointer.busy_timeout(Duration::from_secs(5))?;
    checkpointer.pragma_update(None, "synchronous", "NORMAL")?;
    // One pending wake is enough: a checkpoint copies everything committed before it starts.
    let (signals, received) = mpsc::sync_channel::<Signal>(1);
    let thread = std::thread::Builder::new()
        .name("otpgate-wal".into())
        .spawn(move || {
            while let Ok(Signal::Wake) = received.recv() {
                catch_up(&checkpointer);
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start the WAL checkpointer: {e}")))?;
    let wake = signals.clone();
    let mut last_wake: Option<Instant> = None;
    writer.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
        if pages >= WRITER_CHECKPOINTS_AT_PAGES {
            // Best effort, and never an error: the transaction has committed already, and
            // an error here would be reported as its failure. Busy means the checkpointer
            // is at work; the next commit tries again.
            if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                tracing::debug!(error = %e, pages, "writer's WAL checkpoint deferred");
            }
        } else if pages >= WAKE_AT_PAGES
            && last_wake.is_none_or(|at| at.elapsed() >= MIN_WAKE_INTERVAL)
            && wake.try_send(Signal::Wake).is_ok()
        {
            last_wake = Some(Instant::now());
        }
        Ok(())
    }))?;
    Ok(Checkpointer {
        signals,
        thread: Some(thread),
    })
}

/// Checkpoints until nothing is left to copy, a few passes at most. The WAL can only start
/// over once a checkpoint has copied all of it, and the writer keeps appending during a pass;
/// without the short extra passes the WAL would grow to the writer's own threshold. Busy
/// means the writer is checkpointing itself at that moment: wait a little and try again,
/// or the wake would be lost.
fn catch_up(checkpointer: &Connection) {
    for _ in 0..CATCH_UP_PASSES {
        match checkpointer.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((log, copied)) if copied < log => continue,
            Ok(_) => return,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                std::thread::sleep(BUSY_PAUSE);
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; the writer will checkpoint later");
                return;
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Waits for a checkpoint in progress, so that the writer, closing after this, is the
        // last connection and can remove the WAL.
        let _ = self.signals.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::store::{AuditRow, SqliteStore, Store};

    fn audit_row(i: usize) -> AuditRow {
        AuditRow {
            time: i as i64,
            client: "nas".into(),
            nas_ip: None,
            nas_identifier: None,
            calling_station_id: None,
            user: format!("user-{i}"),
            serial: None,
            outcome: "reject".into(),
            reason: "x".repeat(3000),
            phone_masked: None,
            gateway: None,
            duration_ms: 0,
            attributes: Vec::new(),
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Pages reach the database file only through checkpoints. The writer would not
    /// checkpoint before 1,000 WAL pages (160 such rows write about 820), so growth is
    /// the checkpointer's.
    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db");
        let store = SqliteStore::open(&path).unwrap();
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        for i in 0..160 {
            store.append_audit(&audit_row(i)).unwrap();
        }
        wait_for("the database file to grow", || size() > before + 384 * 1024);
        assert_eq!(store.audit(None, 10).unwrap().len(), 10);
    }

    /// A write loop that never pauses keeps the checkpointer from catching up; the writer
    /// then checkpoints itself, every commit still succeeds, and the WAL keeps starting over.
    #[test]
    fn the_wal_stays_bounded_when_the_checkpointer_falls_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db");
        let store = SqliteStore::open(&path).unwrap();
        let rows = 6_000;
        for i in 0..rows {
            store.append_audit(&audit_row(i)).unwrap();
        }
        // Every commit appends at least one 4 KiB page (a row holds 3,000 bytes), so a WAL
        // that never started over would hold about 24 MiB by now. The file is a high-water
        // mark: a checkpoint slowed by a busy disk lets it grow past the limit for a while,
        // and the first commit after the WAL starts over cuts it back to the limit. A few
        // more writes may be needed for that when the loop ended inside such a stretch.
        let limit = crate::store::sqlite::WAL_SIZE_LIMIT as u64;
        assert!(limit < rows as u64 * 4096);
        let wal_size = || {
            std::fs::metadata(dir.path().join("otpgate.db-wal"))
                .unwrap()
                .len()
        };
        let mut written = rows;
        while wal_size() > limit && written < 2 * rows {
            store.append_audit(&audit_row(written)).unwrap();
            written += 1;
        }
        assert!(wal_size() <= limit, "WAL grew to {} bytes", wal_size());
        assert_eq!(store.audit(None, written).unwrap().len(), written);
    }

    /// The checkpointer's connection closes with the store: the last connection to close
    /// checkpoints and removes the WAL.
    #[test]
    fn the_checkpointer_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db");
        let wal = dir.path().join("otpgate.db-wal");
        let store = SqliteStore::open(&path).unwrap();
        store.append_audit(&audit_row(1)).unwrap();
        assert!(wal.exists());
        drop(store);
        wait_for("the WAL file to go", || !wal.exists());
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.audit(None, 10).unwrap().len(), 1);
    }
}
