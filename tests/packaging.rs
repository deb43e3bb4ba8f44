//! What the Debian package installs, checked without installing it (scripts/package-check.sh
//! installs the real .deb in CI): the systemd unit passes `systemd-analyze verify`, and the
//! packaged config is valid once its absolute paths point into a temporary folder, and the
//! man page names every command the binary has.

mod common;

use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/systemd/otpgate.service");
const MAN_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/debian/otpgate.1");
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
    // man:otpgate(1) exists once the package is installed (package-check verifies that).
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
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

/// The commands listed under "Commands:" in `otpgate ARGS --help`, without `help`.
fn commands(args: &[&str]) -> Vec<String> {
    let output = Command::new(common::binary())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_man_page_names_every_command_of_the_binary() {
    let page = std::fs::read_to_string(MAN_PAGE).unwrap();
    // The text as man shows it: no font changes, plain hyphens.
    let text = page
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\-", "-");
    let top = commands(&[]);
    assert!(top.len() >= 7, "{top:?}");
    for command in top {
        let sub = commands(&[&command]);
        if sub.is_empty() {
            assert!(text.contains(&command), "the man page lacks {command}");
        }
        for s in sub {
            let both = format!("{command} {s}");
            assert!(text.contains(&both), "the man page lacks {both}");
        }
    }
}
