//! A background process (FreeRADIUS, tshark) whose output is collected for assertions.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A background process whose stderr and stdout are collected.
pub struct Background {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Background {
    pub fn start(command: &mut Command) -> Background {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = sink.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Background { child, output }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn interrupt(&mut self) {
        super::signal(self.child.id(), "INT");
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- output ----\n{}", self.output());
        }
    }
}

/// Captures loopback UDP on `port` with tshark until `run` returns, then decodes the capture
/// as RADIUS with the shared secret and returns tshark's verbose text.
pub fn capture_radius(port: u16, secret: &str, run: impl FnOnce()) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let capture = scratch.path().join("run.pcap");
    let mut tshark = Background::start(
        Command::new("tshark")
            .args(["-i", "lo", "-f", &format!("udp port {port}"), "-w"])
            .arg(&capture),
    );
    assert!(
        tshark.wait_for("Capturing on", Duration::from_secs(10)),
        "tshark did not start"
    );
    // dumpcap says so a moment before its capture is really running.
    std::thread::sleep(Duration::from_secs(1));
    run();
    std::thread::sleep(Duration::from_millis(500));
    tshark.interrupt();
    let decoded = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args([
            "-d",
            &format!("udp.port=={port},radius"),
            "-o",
            &format!("radius.shared_secret:{secret}"),
            "-V",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&decoded.stdout).into_owned()
}

/// Panics if tshark found anything malformed or wrong.
pub fn assert_clean(decoded: &str) {
    for bad in [
        "Malformed",
        "Expert Info (Error",
        "[incorrect]",
        "Incorrect",
    ] {
        assert!(!decoded.contains(bad), "tshark reports {bad}:\n{decoded}");
    }
}
