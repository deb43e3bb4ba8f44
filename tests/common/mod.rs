//! The test harness: starts the built `otpgate` binary with a temporary config on an
//! ephemeral loopback port, runs its CLI, and talks RADIUS to it with radclient
//! (freeradius-utils) or raw UDP. The server is killed on drop and its log printed if the
//! test failed.

#![allow(dead_code)]

pub mod background;
pub mod crowd;
pub mod freeradius;
pub mod http_peer;
pub mod peers;
pub mod pg;
// Every test binary has slapd.rs, which uses unprivileged_owner; is_root is for some.
#[allow(unused_imports)]
pub use pg::{free_port as free_tcp_port, is_root, unprivileged_owner};
pub mod radclient;
pub mod raw;
pub mod scrape;
pub mod slapd;
pub mod timing;
pub mod tls;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "a-test-secret-of-some-length";
pub const PIN: &str = "4711";
pub const PHONE: &str = "+491701234567";

/// Knobs of the generated config.
#[derive(Clone)]
pub struct Options {
    pub mode: &'static str,
    pub require_message_authenticator: bool,
    pub limit_proxy_state: bool,
    pub client_address: String,
    pub validity: &'static str,
    pub max_attempts: u32,
    pub max_failures: u32,
    pub clear_after: &'static str,
    pub reply_within: &'static str,
    pub listen: Vec<String>,
    /// Extra TOML appended to the config: `[gateway.X]` tables, more `[[client]]`s.
    pub extra: String,
    pub otp_length: u32,
    pub chain: Vec<String>,
    /// Argon2 cost: cheap by default so tests run fast.
    pub pin_memory_kib: u32,
    pub log_format: &'static str,
    pub prompt: String,
    /// Where the database lives, if not in the test's temporary folder.
    pub database_dir: Option<PathBuf>,
    /// `[server] database` as it is (a postgres:// URL), instead of a file.
    pub database: Option<String>,
    /// More `[server]` keys, one per line.
    pub server_extra: String,
    /// More `[sms]` keys, one per line.
    pub sms_extra: String,
    /// The test client's `accept_attributes`.
    pub client_attributes: Vec<String>,
    pub return_serial: bool,
    /// `[limits] resend_interval`; "0s" lets every PIN request send its SMS again.
    pub resend_interval: &'static str,
    /// More `[limits]` keys, one per line.
    pub limits_extra: String,
    /// More `[challenge]` keys, one per line.
    pub challenge_extra: String,
    /// More keys of the test client's `[[client]]` table, one per line.
    pub client_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: "challenge",
            require_message_authenticator: true,
            limit_proxy_state: true,
            client_address: "127.0.0.1/32".into(),
            validity: "300s",
            max_attempts: 3,
            max_failures: 10,
            clear_after: "15m",
            reply_within: "2s",
            listen: vec!["127.0.0.1:0".into()],
            extra: String::new(),
            otp_length: 6,
            chain: vec!["local".into()],
            pin_memory_kib: 8,
            log_format: "text",
            prompt: "Enter the code sent to {phone_masked}:".into(),
            database_dir: None,
            database: None,
            server_extra: String::new(),
            client_attributes: Vec::new(),
            sms_extra: String::new(),
            return_serial: false,
            resend_interval: "30s",
            limits_extra: String::new(),
            challenge_extra: String::new(),
            client_extra: String::new(),
        }
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Every UDP address the server logged as listening.
    pub addresses: Vec<SocketAddr>,
    /// The `[metrics]` endpoint's address, if it has one (logged before the listeners
    /// are all up, so known once `start` returns).
    pub http: Arc<Mutex<Option<SocketAddr>>>,
    /// Every RadSec (TCP) address the server logged as listening.
    pub radsec_addresses: Vec<SocketAddr>,
    child: Child,
    log: Arc<Mutex<String>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_otpgate")
}

impl Server {
    /// Writes the config and enrolls nothing; call `start` to run the server.
    pub fn prepare(options: &Options) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("otpgate.toml");
        std::fs::write(&config, config_text(dir.path(), options)).expect("write config");
        (dir, config)
    }

    /// A server with user "alice" and one token with PIN `PIN`.
    pub fn with_alice(options: &Options) -> (Server, String) {
        let (dir, config) = Server::prepare(options);
        let serial = enroll_alice(&config);
        (Server::start(dir, config), serial)
    }

    /// Starts the binary and waits until it logs every listening address.
    pub fn start(dir: tempfile::TempDir, config: PathBuf) -> Server {
        Server::start_with_env(dir, config, &[])
    }

    /// `start` with more environment variables (NOTIFY_SOCKET, WATCHDOG_USEC).
    pub fn start_with_env(
        dir: tempfile::TempDir,
        config: PathBuf,
        env: &[(&str, String)],
    ) -> Server {
        // Ephemeral RADIUS ports: those of `listen = [...]` lines ([metrics] has no list).
        let expected = std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .filter(|line| line.trim_start().starts_with("listen = ["))
            .map(|line| line.matches(":0\"").count())
            .sum::<usize>()
            .max(1);
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start otpgate");
        let log = Arc::new(Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let http = Arc::new(Mutex::new(None));
        let http_sink = http.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening http ").nth(1) {
                    *http_sink.lock().unwrap() = rest
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                }
                for (kind, marker) in [(false, "listening udp "), (true, "listening radsec ")] {
                    if let Some(rest) = line.split(marker).nth(1) {
                        // Text and JSON logs both: the address ends at the first other
                        // character.
                        let end = rest
                            .find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))
                            .unwrap_or(rest.len());
                        let _ =
                            sender.send(rest[..end].parse::<SocketAddr>().ok().map(|a| (kind, a)));
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (mut addresses, mut radsec_addresses) = (Vec::new(), Vec::new());
        while addresses.len() + radsec_addresses.len() < expected {
            match receiver.recv_timeout(Duration::from_secs(10)) {
                Ok(Some((false, address))) => addresses.push(address),
                Ok(Some((true, address))) => radsec_addresses.push(address),
                _ => {
                    let _ = child.kill();
                    panic!("otpgate did not start:\n{}", log.lock().unwrap());
                }
            }
        }
        Server {
            dir,
            config,
            addresses,
            http,
            radsec_addresses,
            child,
            log,
        }
    }

    /// The `[metrics]` endpoint's address; panics if the config has none.
    pub fn http_address(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(address) = *self.http.lock().unwrap() {
                return address;
            }
            assert!(Instant::now() < deadline, "no 'listening http' line");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.addresses[0]
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("otpgate.db")
    }

    /// The number of SMS files in the spool folder.
    pub fn spooled(&self) -> usize {
        spool_files(&self.spool()).len()
    }

    /// Waits for the `n`th SMS (1-based) in the spool and returns (number line, text).
    pub fn wait_for_sms(&self, n: usize) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let files = spool_files(&self.spool());
            if files.len() >= n {
                let content = std::fs::read_to_string(&files[n - 1]).unwrap();
                let (head, text) = content.split_once("\n\n").expect("smstools format");
                return (head.to_string(), text.to_string());
            }
            assert!(Instant::now() < deadline, "no SMS number {n} in the spool");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> String {
        cli_ok(&self.config, args, stdin)
    }

    /// Kills the server with SIGKILL (no chance to clean up) and starts it again on the same
    /// folder and config.
    pub fn kill_and_restart(mut self) -> Server {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = self.config.clone();
        drop(self);
        Server::start(dir, config)
    }

    /// An Access-Request for alice with `password` and no State (radclient, with MA).
    pub fn login(&self, password: &str) -> radclient::Reply {
        radclient::auth(
            self.address(),
            &format!("User-Name=alice,User-Password={password}"),
        )
    }

    /// alice's answer to a challenge: the OTP with the challenge's State.
    pub fn answer(&self, state: &str, otp: &str) -> radclient::Reply {
        radclient::auth(
            self.address(),
            &format!("User-Name=alice,User-Password={otp},State={state}"),
        )
    }

    /// Sends SIGHUP and waits for the reload's last log line: applied or refused.
    pub fn reload(&self) -> bool {
        let done = |log: &str| {
            log.matches("config reloaded").count() + log.matches("config not reloaded").count()
        };
        let before = done(&self.log());
        signal(self.child.id(), "HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while done(&self.log()) == before {
            assert!(Instant::now() < deadline, "no reload result in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = self.log();
        let last_applied = log.rfind("config reloaded");
        let last_refused = log.rfind("config not reloaded");
        last_applied > last_refused
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "otpgate did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- otpgate log ----\n{}", self.log());
        }
    }
}

/// A free UDP port on loopback (bound and released), for peers that need a fixed port.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Adds user "alice" (phone `PHONE`) with one token (PIN `PIN`); returns the serial.
pub fn enroll_alice(config: &Path) -> String {
    cli_ok(config, &["user", "add", "alice", "--phone", PHONE], None);
    cli_ok(config, &["token", "add", "alice", "--pin-stdin"], Some(PIN))
        .trim()
        .to_string()
}

/// Runs `otpgate ARGS --config CONFIG`, returning (success, stdout, stderr).
pub fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run otpgate");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            writeln!(input, "{text}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn cli_ok(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = cli(config, args, stdin);
    assert!(ok, "otpgate {args:?} failed: {err}");
    out
}

/// Imports the users, then the tokens, of two CSV files through the CLI.
pub fn import_csv(config: &Path, users: &Path, tokens: &Path) {
    for (what, file) in [("user", users), ("token", tokens)] {
        cli_ok(config, &[what, "import", file.to_str().unwrap()], None);
    }
}

fn config_text(dir: &Path, o: &Options) -> String {
    let listen = o
        .listen
        .iter()
        .map(|l| format!("\"{l}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let chain = o
        .chain
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[server]
listen = [{listen}]
database = "{database}"
key_file = "{dir}/otpgate.key"
{server_extra}
dedup_window = "30s"
log_format = "{log_format}"
return_serial = {return_serial}

[[client]]
name = "test-nas"
address = "{client_address}"
secret = "{SECRET}"
require_message_authenticator = {require}
limit_proxy_state = {limit}
mode = "{mode}"
accept_attributes = {client_attributes}
{client_extra}

[challenge]
validity = "{validity}"
max_attempts = {max_attempts}
otp_length = {otp_length}
prompt = "{prompt}"
sms_text = "Your code: {{otp}}"
{challenge_extra}

[lockout]
max_failures = {max_failures}
clear_after = "{clear_after}"

[pin]
memory_kib = {memory}
iterations = 1
parallelism = 1

[sms]
default_chain = [{chain}]
reply_within = "{reply_within}"
{sms_extra}
default_region = "DE"

[limits]
resend_interval = "{resend_interval}"
{limits_extra}

[gateway.local]
type = "spool"
directory = "{dir}/spool"

{extra}
"#,
        resend_interval = o.resend_interval,
        limits_extra = o.limits_extra,
        challenge_extra = o.challenge_extra,
        client_extra = o.client_extra,
        dir = dir.display(),
        client_address = o.client_address,
        require = o.require_message_authenticator,
        limit = o.limit_proxy_state,
        mode = o.mode,
        validity = o.validity,
        max_attempts = o.max_attempts,
        max_failures = o.max_failures,
        clear_after = o.clear_after,
        memory = o.pin_memory_kib,
        reply_within = o.reply_within,
        extra = o.extra,
        log_format = o.log_format,
        prompt = o.prompt,
        client_attributes = toml_strings(&o.client_attributes),
        return_serial = o.return_serial,
        sms_extra = o.sms_extra,
        database = o.database.clone().unwrap_or_else(|| format!(
            "{}/otpgate.db",
            o.database_dir.as_deref().unwrap_or(dir).display()
        )),
        server_extra = o.server_extra,
        otp_length = o.otp_length,
    )
}

/// A TOML array of strings.
fn toml_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The OTP in an SMS rendered from "Your code: {otp}".
pub fn otp_of(text: &str) -> String {
    text.strip_prefix("Your code: ")
        .unwrap_or_else(|| panic!("unexpected SMS text {text:?}"))
        .to_string()
}

/// Runs `each(worker)` on `workers` threads at once; what they returned, worker by worker.
pub fn on_threads<T: Send>(workers: usize, each: impl Fn(usize) -> Vec<T> + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..workers)
            .map(|w| {
                let each = &each;
                scope.spawn(move || each(w))
            })
            .collect();
        running
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect()
    })
}
