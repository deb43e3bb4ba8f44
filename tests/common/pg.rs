//! A PostgreSQL cluster of the test's own: `initdb` and `pg_ctl` from Debian's `postgresql`
//! package (scripts/test.sh installs it), in a temporary directory, on a free loopback port,
//! run as an unprivileged user when the tests run as root (PostgreSQL refuses root). Stopped
//! on drop. No mock: if the cluster cannot start, the test fails and says why.
//!
//! Used by the integration tests (`mod common`) and, through `#[path]`, by the store's unit
//! tests, so it needs nothing but std and tempfile.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
    databases: AtomicUsize,
    /// The server options it started with, to start it again on the same port.
    options: String,
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             run scripts/test.sh, which installs Debian's postgresql package"
        ),
    }
}

/// Whether the tests run as root (as CI does): daemons that refuse root run as another user.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// When the tests run as root (as CI does), a server that refuses root (PostgreSQL) or
/// should not have it (slapd) runs as `preferred` if that system user exists, else as
/// nobody: `dir` and everything in it become that user's. None when not root.
pub fn unprivileged_owner(dir: &Path, preferred: &str) -> Option<String> {
    if !is_root() {
        return None;
    }
    let exists = Command::new("id")
        .arg(preferred)
        .output()
        .is_ok_and(|o| o.status.success());
    let user = if exists { preferred } else { "nobody" };
    let status = Command::new("chown")
        .args(["-R", user])
        .arg(dir)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R {user} {} failed", dir.display());
    Some(user.to_string())
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn check(what: &str, output: std::io::Result<Output>) -> Output {
    let output = output.unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl PgCluster {
    /// Starts a new cluster with a superuser `otpgate` that connects without a password, with
    /// pg_stat_statements loaded (`CREATE EXTENSION` it in a database to count statements).
    pub fn start() -> PgCluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("otpgate-pg")
            .tempdir()
            .expect("a temporary directory");
        let run_as = unprivileged_owner(dir.path(), "postgres");
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            run_as,
            databases: AtomicUsize::new(0),
            options: String::new(),
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "otpgate",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // A port taken between probing and binding makes pg_ctl fail: try another.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
                 -c synchronous_commit=off -c max_connections=300 \
                 -c shared_preload_libraries=pg_stat_statements",
                cluster.dir.path().display()
            );
            let log = format!("{}/log", cluster.dir.path().display());
            let output = cluster
                .command("pg_ctl")
                .args([
                    "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
                ])
                .output()
                .expect("cannot run pg_ctl");
            if output.status.success() {
                cluster.port = port;
                cluster.options = options;
                return cluster;
            }
            last = format!(
                "{}\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!(
            "cannot start PostgreSQL with {}: {last}",
            cluster.bin.display()
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended), keeping its data.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the stopped server again, on the same port.
    pub fn start_again(&self) {
        let log = format!("{}/log", self.dir.path().display());
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &self.options,
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command.current_dir(self.dir.path());
                command
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        check(program, self.command(program).args(args).output())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://otpgate@127.0.0.1:{}/{name}", self.port)
    }

    /// A client program of the cluster (createdb, psql), connecting as `otpgate` over
    /// loopback.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "otpgate",
        ]);
        command
    }

    /// Creates a new, empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::Relaxed));
        check("createdb", self.client("createdb").arg(&name).output());
        self.url(&name)
    }

    /// Runs SQL in database `name` with psql, returning its unaligned output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let output = check(
            "psql",
            self.client("psql")
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    name,
                    "-c",
                    sql,
                ])
                .output(),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
