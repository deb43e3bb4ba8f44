//! The modes of the files otpgate writes, through the built binary: the database with its
//! -wal and -shm files, and the spool gateway's messages. Loose modes here would hand PIN
//! hashes, sealed seeds, the audit trail or live OTPs to every local user.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Starts a server whose spool gateway has `file_mode` (none: the default) and returns the
/// mode of the OTP message a login spools.
fn spooled_message_mode(file_mode: Option<&str>) -> u32 {
    let (dir, config) = Server::prepare(&Options::default());
    if let Some(file_mode) = file_mode {
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "type = \"spool\"\n",
            &format!("type = \"spool\"\nfile_mode = \"{file_mode}\"\n"),
        );
        std::fs::write(&config, text).unwrap();
    }
    enroll_alice(&config);
    let server = Server::start(dir, config);
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    server.wait_for_sms(1);
    let message = std::fs::read_dir(server.spool())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("a message file");
    mode(&message)
}

#[test]
fn spooled_messages_are_0600_unless_file_mode_says_otherwise() {
    assert_eq!(spooled_message_mode(None), 0o600);
    assert_eq!(spooled_message_mode(Some("0640")), 0o640);
}

#[test]
fn a_file_mode_that_is_not_octal_stops_start_up_naming_the_key() {
    let (_dir, config) = Server::prepare(&Options::default());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "type = \"spool\"\n",
        "type = \"spool\"\nfile_mode = \"0999\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = common::cli(&config, &["serve"], None);
    assert!(!ok);
    let expected = format!(
        "{}: gateway.local.file_mode: '0999' is not an octal file mode",
        config.display()
    );
    assert!(err.contains(&expected), "{err}");
}

/// Runs `otpgate ARGS --config CONFIG`; (success, stderr). A command still running after a
/// few seconds (a `serve` that started) is killed and counts as a failure to stop.
fn run_briefly(config: &Path, args: &[&str]) -> (bool, String) {
    use std::io::Read;
    let mut child = Command::new(common::binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("otpgate {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

#[test]
fn a_key_file_readable_by_others_stops_serve_and_the_cli_with_the_fix() {
    let (dir, config) = Server::prepare(&Options::default());
    common::cli_ok(&config, &["init"], None);
    let key = dir.path().join("otpgate.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fix = format!("run `chmod 600 {}`", key.display());
    for command in [&["serve"][..], &["user", "list"], &["audit"]] {
        let (ok, err) = run_briefly(&config, command);
        assert!(!ok, "{command:?} went on with a 0644 key file");
        assert!(
            err.contains(&format!(
                "{}: open to group or others (mode 0644)",
                key.display()
            )),
            "{command:?}: {err}"
        );
        assert!(err.contains(&fix), "{command:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    common::cli_ok(&config, &["user", "list"], None);
}
