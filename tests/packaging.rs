//! What the Debian package installs, checked without installing it (scripts/package-check.sh
//! installs the real .deb in CI): the systemd unit passes `systemd-analyze verify`, and the
//! packaged config is valid once its absolute paths point into a temporary folder.

mod common;

use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/systemd/otpgate.service");
const PACKAGED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/debian/otpgate.toml");

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/otpgate serve"));
    // verify checks that ExecStart is executable: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("otpgate.service");
    std::fs::write(&copy, unit.replace("/usr/bin/otpgate", common::binary())).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 on unknown keys and bad values ("ignoring"), so its complaints about
    // this unit count as failures too; other units' warnings (freeradius.service) do not.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("otpgate.service"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

#[test]
fn the_packaged_config_passes_check_config_with_its_paths_moved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dictionaries = concat!(env!("CARGO_MANIFEST_DIR"), "/dictionaries");
    let text = std::fs::read_to_string(PACKAGED_CONFIG).unwrap();
    for path in [
        "/var/lib/otpgate/",
        "/etc/otpgate/",
        "/usr/share/otpgate/dictionaries",
    ] {
        assert!(text.contains(path), "the packaged config names no {path}");
    }
    let moved = text
        .replace("/var/lib/otpgate/", &format!("{}/", root.display()))
        .replace("/etc/otpgate/", &format!("{}/", root.display()))
        .replace("/usr/share/otpgate/dictionaries", dictionaries);
    let config = root.join("otpgate.toml");
    std::fs::write(&config, moved).unwrap();
    // postinst writes this secret; without it check-config must say so.
    let (ok, _, err) = common::cli(&config, &["check-config"], None);
    assert!(!ok && err.contains("secret_file"), "{err}");
    std::fs::write(
        root.join("nas-example.secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = common::cli_ok(&config, &["check-config"], None);
    assert!(out.contains("1 client(s), 1 gateway(s)"), "{out}");
}
