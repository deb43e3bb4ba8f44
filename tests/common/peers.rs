//! Protocol peers written in Python (tests/peers/): started per test, they print how to
//! reach them on their first line of stdout and record what they received as JSON lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    child: Child,
    /// The first line the peer printed: a port or a device path.
    pub address: String,
    /// Where it records what it received.
    pub out: PathBuf,
}

impl Peer {
    /// Runs `tests/peers/SCRIPT` with `--out` set to a file under `dir`.
    pub fn start(script: &str, dir: &Path, args: &[&str]) -> Peer {
        let out = dir.join(format!("{script}.jsonl"));
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script);
        let mut child = Command::new("python3")
            .arg(&path)
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the test peers");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            !line.trim().is_empty(),
            "{script} did not start (are its Python packages installed? see scripts/test.sh)"
        );
        Peer {
            child,
            address: line.trim().to_string(),
            out,
        }
    }

    /// The records so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for the `n`th record (1-based).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(record) = self.records().get(n - 1) {
                return record.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the peer recorded no message number {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `tests/peers/SCRIPT ARGS` to completion and returns what it printed.
pub fn run(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs the test peers");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
