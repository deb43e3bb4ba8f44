//! A flood of unknown-user PIN requests from one RADIUS client must not lock out a user on
//! another. Every request without State costs an Argon2 run, unknown users included, so a
//! flood at a multiple of the server's Argon2 capacity is pure PIN-thread work; the PIN
//! queue is bounded and shared fairly between clients, and what finds no room is dropped
//! (`overloaded`) for the NAS to retransmit.
//!
//! The test floods from client A (127.0.0.1) at 10x the capacity it measures, while alice
//! logs in from client B (127.0.0.2) as a NAS would: the PIN sent up to three times 2 s
//! apart, then State + OTP once. It checks that every PIN step of alice's is challenged
//! within those tries and every answer accepted at once; that client A's own PIN request is
//! answered within 1 s of the flood's end (a queue that grew with the flood would take
//! seconds to drain); that requests were dropped as overloaded (the flood really overloaded
//! the server); and that the server's resident size stayed bounded.
//!
//! `OTPGATE_FLOOD_LIMITS` adds `[limits]` lines, to see the assertions fail without the
//! bound, e.g. `OTPGATE_FLOOD_LIMITS='pin_queue = 100000' cargo test --test flood`.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::raw::{Client, access_request, random_authenticator, verified_reply};
use common::{Options, PIN, SECRET, Server};
use otpgate::radius::packet::{attr, code};

/// A real Argon2 cost, one run taking a few ms: the flooding client's share of the queue
/// (16 jobs per core) drains in about 16 runs' time after the flood, well inside the 1 s
/// allowed even when neighbours leave the (SCHED_IDLE) Argon2 threads half a core; and 10x
/// the capacity is a few thousand datagrams a second, which a loaded 2-core machine can
/// still send and the server's request path still take. The server is built with the
/// test's profile, and unoptimised Argon2 is about 15 times slower: 512 KiB there (6-8 ms a
/// run), 16 MiB in a release build.
const MEMORY_KIB: u32 = if cfg!(debug_assertions) { 512 } else { 16_384 };
const CLIENT_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const CLIENT_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The NAS's retransmission schedule.
const TRIES: u32 = 3;
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
const FLOOD_FACTOR: f64 = 10.0;
/// The flood lasts at least this long, and until alice's login in progress has ended.
const FLOOD_AT_LEAST: Duration = Duration::from_secs(3);
/// Alice's logins begin once the flood has filled the queue.
const LEGIT_AFTER: Duration = Duration::from_millis(500);
const RECOVERY_WITHIN: Duration = Duration::from_secs(1);
const RSS_BOUND_MIB: u64 = 300;

/// A reply to the request with `identifier`, waiting until `deadline`; others are skipped.
fn reply_until(client: &Client, identifier: u8, deadline: Instant) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        client
            .socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match client.socket.recv_from(&mut buffer) {
            Ok((n, _)) if n >= 20 && buffer[1] == identifier => return Some(buffer[..n].to_vec()),
            Ok(_) => continue,
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => continue,
        }
    }
}

/// Sends `request` as a NAS does, up to `tries` times `interval` apart (the same bytes),
/// and returns the reply and how many sends had gone out when it came.
fn exchange_retrying(
    client: &Client,
    request: &[u8],
    tries: u32,
    interval: Duration,
) -> Option<(Vec<u8>, u32)> {
    for sent in 1..=tries {
        client.send(request);
        if let Some(reply) = reply_until(client, request[1], Instant::now() + interval) {
            return Some((reply, sent));
        }
    }
    None
}

/// What one of alice's logins saw, or why it failed.
struct Login {
    pin_sends: u32,
    pin: Duration,
    answer: Duration,
}

/// alice's login number `n` (1-based: her `n`th SMS) from client B.
fn login(server: &Server, client: &Client, n: usize, identifier: &mut u8) -> Result<Login, String> {
    *identifier = identifier.wrapping_add(1);
    let authenticator = random_authenticator();
    let request = access_request(*identifier, authenticator, "alice", PIN, true, &[]);
    let started = Instant::now();
    let Some((reply, pin_sends)) = exchange_retrying(client, &request, TRIES, RETRY_INTERVAL)
    else {
        return Err(format!(
            "login {n}: no reply to the PIN after {TRIES} tries {RETRY_INTERVAL:?} apart"
        ));
    };
    let pin = started.elapsed();
    let packet = verified_reply(&reply, &authenticator);
    if packet.code != code::ACCESS_CHALLENGE {
        return Err(format!("login {n}: the PIN got code {}", packet.code));
    }
    let state = packet.first(attr::STATE).expect("State").to_vec();
    let (_, text) = server.wait_for_sms(n);
    let otp = common::otp_of(&text);
    *identifier = identifier.wrapping_add(1);
    let authenticator = random_authenticator();
    let request = access_request(
        *identifier,
        authenticator,
        "alice",
        &otp,
        true,
        &[(attr::STATE, &state)],
    );
    let started = Instant::now();
    client.send(&request);
    let Some(reply) = reply_until(client, *identifier, started + RETRY_INTERVAL) else {
        return Err(format!(
            "login {n}: the answer got no reply within {RETRY_INTERVAL:?} (dropped)"
        ));
    };
    let answer = started.elapsed();
    let packet = verified_reply(&reply, &authenticator);
    if packet.code != code::ACCESS_ACCEPT {
        return Err(format!("login {n}: the answer got code {}", packet.code));
    }
    Ok(Login {
        pin_sends,
        pin,
        answer,
    })
}

/// Unknown-user PIN requests from client A at `rate` per second until `stop`, not waiting
/// for replies; returns (sent, answered).
fn flood(server: SocketAddr, rate: f64, stop: &AtomicBool) -> (u64, u64) {
    let socket = UdpSocket::bind(SocketAddr::new(CLIENT_A, 0)).unwrap();
    socket.connect(server).unwrap();
    socket.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buffer = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let request = access_request(
                sent as u8,
                random_authenticator(),
                &format!("flood-{sent}"),
                PIN,
                true,
                &[],
            );
            // A full socket buffer drops the datagram, as a real flood's would be.
            let _ = socket.send(&request);
            sent += 1;
        }
        while let Ok(n) = socket.recv(&mut buffer) {
            answered += u64::from(n >= 20 && buffer[0] == code::ACCESS_REJECT);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (sent, answered)
}

/// A line of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The overloaded drops in the server's last log line, `stopped stats=replies=N dropped
/// ... overloaded=M ...`.
fn overloaded_at_stop(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" stopped ") && l.contains("stats="))?;
    let Some((_, rest)) = line.split_once("overloaded=") else {
        return Some(0);
    };
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_flood_from_one_client_does_not_lock_out_a_user_on_another() {
    let test_started = Instant::now();
    let options = Options {
        pin_memory_kib: MEMORY_KIB,
        extra: format!(
            "[[client]]\nname = \"nas-b\"\naddress = \"{CLIENT_B}/32\"\nsecret = \"{SECRET}\"\n"
        ),
        // alice logs in dozens of times: no SMS cap may stop her.
        limits_extra: format!(
            "per_token_hour = 0\nper_token_day = 0\nper_phone_hour = 0\n{}",
            std::env::var("OTPGATE_FLOOD_LIMITS").unwrap_or_default()
        ),
        ..Default::default()
    };
    let (dir, config) = Server::prepare(&options);
    common::enroll_alice(&config);
    // bob's PIN, from the flooding client, tells when the server has recovered.
    common::cli_ok(
        &config,
        &["user", "add", "bob", "--phone", "+491709876543"],
        None,
    );
    common::cli_ok(&config, &["token", "add", "bob", "--pin-stdin"], Some(PIN));
    let mut server = Server::start(dir, config);
    let address = server.address();
    let pid = server.pid();

    // The capacity: the fastest of a few sequential unknown-user requests is one Argon2 run
    // plus the request path; the server runs one PIN thread per core.
    let a = Client::bound_to(CLIENT_A, address);
    let mut fastest = Duration::MAX;
    for i in 0..9u8 {
        let authenticator = random_authenticator();
        let started = Instant::now();
        let reply = a
            .exchange(&access_request(i, authenticator, "nobody", PIN, true, &[]))
            .expect("an unknown user's PIN is answered");
        assert_eq!(
            verified_reply(&reply, &authenticator).code,
            code::ACCESS_REJECT
        );
        if i > 0 {
            fastest = fastest.min(started.elapsed());
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = cores as f64 / fastest.as_secs_f64();
    let rate = capacity * FLOOD_FACTOR;

    let stop_flood = AtomicBool::new(false);
    let stop_legit = AtomicBool::new(false);
    let sampling = AtomicBool::new(true);
    let rss_max_kib = AtomicU64::new(0);
    let (flood_result, logins, flood_time, recovery) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    rss_max_kib.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let flood_started = Instant::now();
        let flooder = scope.spawn(|| flood(address, rate, &stop_flood));
        std::thread::sleep(LEGIT_AFTER);
        let legit = scope.spawn(|| {
            let b = Client::bound_to(CLIENT_B, address);
            let mut identifier = 0u8;
            let mut logins = Vec::new();
            while !stop_legit.load(Ordering::Relaxed) {
                // A panic (no SMS, a reply failing its checks) is a failed login: the flood
                // must still be stopped.
                let n = logins.len() + 1;
                let login = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    login(&server, &b, n, &mut identifier)
                }))
                .unwrap_or_else(|_| Err(format!("login {n} panicked")));
                let failed = login.is_err();
                logins.push(login);
                if failed {
                    break;
                }
            }
            logins
        });
        // The flood goes on until FLOOD_AT_LEAST has passed and alice's login in progress
        // has ended, so that every login of hers ran entirely during the flood.
        while flood_started.elapsed() < FLOOD_AT_LEAST && !legit.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_legit.store(true, Ordering::Relaxed);
        let logins = legit.join().expect("alice's logins");
        stop_flood.store(true, Ordering::Relaxed);
        let flood_result = flooder.join().unwrap();
        let flood_stopped = Instant::now();
        let flood_time = flood_stopped - flood_started;
        sampling.store(false, Ordering::Relaxed);
        sampler.join().unwrap();

        // Recovery: bob's PIN from the flooding client, retransmitted every 100 ms; the
        // first reply must come within RECOVERY_WITHIN. Waits up to 5 s to report how long
        // it did take.
        let authenticator = random_authenticator();
        let request = access_request(200, authenticator, "bob", PIN, true, &[]);
        let recovery =
            exchange_retrying(&a, &request, 50, Duration::from_millis(100)).map(|(reply, _)| {
                let at = flood_stopped.elapsed();
                (verified_reply(&reply, &authenticator).code, at)
            });
        (flood_result, logins, flood_time, recovery)
    });
    let peak_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
    assert!(server.terminate().success(), "otpgate exited cleanly");
    let overloaded = overloaded_at_stop(&server.log());

    let (sent, answered) = flood_result;
    let ok: Vec<&Login> = logins.iter().filter_map(|l| l.as_ref().ok()).collect();
    let max_ms = |f: fn(&Login) -> Duration| {
        ok.iter()
            .map(|l| f(l).as_secs_f64() * 1000.0)
            .fold(0.0, f64::max)
    };
    let summary = format!(
        "capacity {capacity:.0} PIN checks/s (fastest request {fastest:?}, {cores} cores); \
         flood {rate:.0}/s for {:.1} s: {sent} sent, {answered} answered; alice: {} logins, \
         PIN answered after 1/2/3 sends {:?}, PIN max {:.1} ms, answer max {:.1} ms; recovery {recovery:?}; \
         overloaded {overloaded:?}; RSS max {} KiB, peak {peak_kib} KiB; test {:.1} s",
        flood_time.as_secs_f64(),
        ok.len(),
        (1..=TRIES)
            .map(|n| ok.iter().filter(|l| l.pin_sends == n).count())
            .collect::<Vec<_>>(),
        max_ms(|l| l.pin),
        max_ms(|l| l.answer),
        rss_max_kib.load(Ordering::Relaxed),
        test_started.elapsed().as_secs_f64(),
    );
    eprintln!("{summary}");

    // The flood was sent: at least half of its rate over its time (a machine too loaded to
    // send it would test nothing).
    assert!(
        sent as f64 >= rate * flood_time.as_secs_f64() / 2.0,
        "the flood was not sent at its rate: {summary}"
    );
    // Every PIN step of alice's got its challenge within the NAS's tries, and every answer
    // was accepted at its first send, within the NAS's retry interval.
    assert!(!logins.is_empty(), "alice never logged in: {summary}");
    for login in &logins {
        if let Err(e) = login {
            panic!("{e}: {summary}");
        }
    }
    // The flooding client's own PIN is answered normally soon after the flood.
    match recovery {
        Some((reply_code, at)) => {
            assert_eq!(reply_code, code::ACCESS_CHALLENGE, "bob's PIN: {summary}");
            assert!(
                at <= RECOVERY_WITHIN,
                "bob's PIN from client A answered only {at:?} after the flood: {summary}"
            );
        }
        None => panic!("bob's PIN from client A unanswered 5 s after the flood: {summary}"),
    }
    // The flood overloaded the server: requests were dropped, not queued without bound.
    assert!(
        overloaded.is_some_and(|n| n > 0),
        "no request was dropped as overloaded: {summary}"
    );
    // Bounded memory during the flood.
    let rss_max_mib = rss_max_kib.load(Ordering::Relaxed) / 1024;
    assert!(
        rss_max_mib > 0 && rss_max_mib < RSS_BOUND_MIB && peak_kib / 1024 < RSS_BOUND_MIB,
        "resident size {rss_max_mib} MiB (peak {} MiB) during the flood: {summary}",
        peak_kib / 1024
    );
    assert!(
        test_started.elapsed() < Duration::from_secs(30),
        "the test took too long: {summary}"
    );
}
