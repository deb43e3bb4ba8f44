//! systemd's notify protocol as the built server speaks it: the test binds its own unix
//! datagram socket, passes it as NOTIFY_SOCKET, and reads what a service manager would:
//! READY=1 once listening, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP,
//! STOPPING=1 on SIGTERM, and WATCHDOG=1 pings when WATCHDOG_USEC is set.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Options, Server};

struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// The next message that is not a watchdog ping, within 10 s.
    fn next(&self) -> String {
        self.next_matching(|m| m != "WATCHDOG=1\n")
    }

    fn next_matching(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buffer = [0u8; 4096];
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("no notify message within 10 s");
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = self.socket.recv(&mut buffer).expect("a notify message");
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if wanted(&message) {
                return message;
            }
        }
    }
}

#[test]
fn ready_reloading_ready_and_stopping_arrive_in_order() {
    let manager = Manager::new();
    let (dir, config) = Server::prepare(&Options::default());
    let mut server =
        Server::start_with_env(dir, config, &[("NOTIFY_SOCKET", manager.path.clone())]);
    assert_eq!(manager.next(), "READY=1\n");

    assert!(server.reload(), "{}", server.log());
    let reloading = manager.next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec > 0);
    assert_eq!(manager.next(), "READY=1\n");

    assert!(server.terminate().success());
    assert_eq!(manager.next(), "STOPPING=1\n");
}

#[test]
fn watchdog_pings_come_at_half_of_watchdog_usec() {
    let manager = Manager::new();
    let (dir, config) = Server::prepare(&Options::default());
    let _server = Server::start_with_env(
        dir,
        config,
        &[
            ("NOTIFY_SOCKET", manager.path.clone()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    assert_eq!(manager.next(), "READY=1\n");
    let ping = |m: &str| m == "WATCHDOG=1\n";
    manager.next_matching(ping);
    let started = Instant::now();
    for _ in 0..3 {
        manager.next_matching(ping);
    }
    // Three intervals of 200 ms; a server that pinged at the full 400 ms would take 1.2 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1000),
        "three pings took {took:?}"
    );
}
