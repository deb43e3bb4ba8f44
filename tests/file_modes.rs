//! The modes of the files otpgate writes, through the built binary: the database with its
//! -wal and -shm files, and the spool gateway's messages. Loose modes here would hand PIN
//! hashes, sealed seeds, the audit trail or live OTPs to every local user.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Options, PIN, Server, enroll_alice};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn side_files(database: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", database.display()));
    [database.to_path_buf(), with("-wal"), with("-shm")]
}

#[test]
fn the_database_and_its_wal_and_shm_files_are_created_0600() {
    let (server, _) = Server::with_alice(&Options::default());
    // A login writes through the WAL, so both side files exist while the server runs.
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    for file in side_files(&server.database()) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_database_open_to_others_is_tightened_at_start_up_and_logged() {
    let (dir, config) = Server::prepare(&Options::default());
    enroll_alice(&config);
    let files = side_files(&dir.path().join("otpgate.db"));
    for file in &files {
        // An empty -wal or -shm is what SQLite may find after a crash; it takes them as is.
        if !file.exists() {
            std::fs::write(file, b"").unwrap();
        }
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = Server::start(dir, config);
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert!(server.wait_for_log(
        "database file was open to group or others; mode set to 0600",
        Duration::from_secs(2)
    ));
}
