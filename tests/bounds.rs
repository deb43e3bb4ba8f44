//! The attack bounds (DESIGN section 8) under bursts: hundreds of requests sent at once,
//! before any reply is read, as a scripted VPN client or a compromised NAS would. Outcomes
//! are read from the audit trail, the spool and the replies, never from a log line.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::raw::{access_request, random_authenticator};
use common::{Options, PIN, Server, otp_of};
use otpgate::radius::packet::{Packet, attr, code};

/// Requests go out from sockets of at most this many, so identifiers stay unique per socket.
const PER_SOCKET: usize = 250;

/// Sends every request before reading any reply, and resends the unanswered ones with the
/// same bytes every 300 ms, as a NAS retransmits (the server drops what its PIN queue has no
/// room for). Returns each request's reply, in request order.
fn burst_replies(server: SocketAddr, requests: &[Vec<u8>], wait: Duration) -> Vec<Option<Vec<u8>>> {
    let sockets: Vec<UdpSocket> = (0..requests.len().div_ceil(PER_SOCKET))
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            socket
        })
        .collect();
    let mut replies: Vec<Option<Vec<u8>>> = vec![None; requests.len()];
    let deadline = Instant::now() + wait;
    let mut buffer = [0u8; 4096];
    while replies.contains(&None) && Instant::now() < deadline {
        for (i, request) in requests.iter().enumerate() {
            // Replies are matched to requests by identifier: `request` set it from the index.
            assert_eq!(
                usize::from(request[1]),
                i % PER_SOCKET,
                "built with its index"
            );
            if replies[i].is_none() {
                sockets[i / PER_SOCKET].send_to(request, server).unwrap();
            }
        }
        let round = Instant::now() + Duration::from_millis(300);
        while replies.contains(&None) && Instant::now() < round {
            for (s, socket) in sockets.iter().enumerate() {
                while let Ok(n) = socket.recv(&mut buffer) {
                    if let Some(slot) = replies.get_mut(s * PER_SOCKET + usize::from(buffer[1])) {
                        *slot = Some(buffer[..n].to_vec());
                    }
                }
            }
        }
    }
    replies
}

/// Each request's reply code (0 for none), in request order.
fn burst(server: SocketAddr, requests: &[Vec<u8>], wait: Duration) -> Vec<u8> {
    burst_replies(server, requests, wait)
        .into_iter()
        .map(|r| r.and_then(|r| r.first().copied()).unwrap_or(0))
        .collect()
}

/// An Access-Request for `user` with `password` (and State), identifier from its burst index.
fn request(index: usize, user: &str, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let extra: Vec<(u8, &[u8])> = state.map(|s| (attr::STATE, s)).into_iter().collect();
    access_request(
        (index % PER_SOCKET) as u8,
        random_authenticator(),
        user,
        password,
        true,
        &extra,
    )
}

/// The audit's reasons, newest first, once at least `at_least` rows are there.
fn audit_reasons(server: &Server, at_least: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json = server.cli(&["audit", "--json", "--limit", "100000"], None);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        if rows.len() >= at_least || Instant::now() > deadline {
            return rows
                .iter()
                .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(reasons: &[String], pred: impl Fn(&str) -> bool) -> usize {
    reasons.iter().filter(|r| pred(r)).count()
}

/// The State of a challenge reply, as raw bytes.
fn state_of(reply: &[u8]) -> Vec<u8> {
    let packet = Packet::decode(reply).unwrap();
    packet
        .attributes
        .iter()
        .find(|a| a.kind == attr::STATE)
        .map(|a| a.value.to_vec())
        .expect("a State")
}

/// alice's token as `token list --json` shows it.
fn alice_token(server: &Server) -> serde_json::Value {
    let json = server.cli(&["token", "list", "--user", "alice", "--json"], None);
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    tokens.into_iter().next().unwrap()
}

/// Opens alice's challenge; returns its State and code.
fn open_challenge(server: &Server, n: usize) -> (Vec<u8>, String) {
    let client = common::raw::Client::new(server.address());
    let reply = client
        .exchange(&request(0, "alice", PIN, None))
        .expect("a reply to the PIN");
    assert_eq!(reply[0], code::ACCESS_CHALLENGE);
    (state_of(&reply), otp_of(&server.wait_for_sms(n).1))
}

fn wrong_codes(right: &str) -> impl Iterator<Item = String> + '_ {
    (0..).map(|n| format!("{n:06}")).filter(move |c| c != right)
}

#[test]
fn a_burst_of_wrong_codes_on_one_state_is_compared_max_attempts_times() {
    let (server, _) = Server::with_alice(&Options::default());
    let (state, right) = open_challenge(&server, 1);
    let guesses: Vec<Vec<u8>> = wrong_codes(&right)
        .take(1000)
        .enumerate()
        .map(|(i, code)| request(i, "alice", &code, Some(&state)))
        .collect();
    let codes = burst(server.address(), &guesses, Duration::from_secs(10));
    assert_eq!(
        count_codes(&codes, code::ACCESS_CHALLENGE),
        2,
        "attempts 1 and 2 get the challenge again"
    );
    assert_eq!(count_codes(&codes, code::ACCESS_REJECT), 998);
    let reasons = audit_reasons(&server, 1001);
    let compared = count(&reasons, |r| r.starts_with("wrong OTP, attempt "));
    assert_eq!(compared, 3, "max_attempts comparisons of 1,000 guesses");
    assert_eq!(count(&reasons, |r| r.contains("attempt 4")), 0);
    assert_eq!(count(&reasons, |r| r == "challenge used or ended"), 997);
    // Consumed: the right code no longer passes.
    let client = common::raw::Client::new(server.address());
    let late = client
        .exchange(&request(0, "alice", &right, Some(&state)))
        .unwrap();
    assert_eq!(late[0], code::ACCESS_REJECT);
    assert!(alice_token(&server)["fail_count"].as_u64().unwrap() <= 10);
}

#[test]
fn the_right_code_after_max_attempts_wrong_ones_in_a_burst_is_not_compared() {
    for path in ["state", "pin"] {
        let (server, _) = Server::with_alice(&Options::default());
        let (state, right) = open_challenge(&server, 1);
        let mut wrong = wrong_codes(&right);
        let guesses: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                let code = if i == 3 {
                    right.clone()
                } else {
                    wrong.next().unwrap()
                };
                match path {
                    "state" => request(i, "alice", &code, Some(&state)),
                    _ => request(i, "alice", &format!("{PIN}{code}"), None),
                }
            })
            .collect();
        let codes = burst(server.address(), &guesses, Duration::from_secs(15));
        let reasons = audit_reasons(&server, 301);
        let wrongs = count(&reasons, |r| r.contains("wrong OTP, attempt "));
        let accepts = count(&reasons, |r| r.contains("accepted"));
        // The burst's order is not the server's: the right code may have been among the
        // first three compared, and then ended the challenge; otherwise it was not compared.
        if codes[3] == code::ACCESS_ACCEPT {
            assert_eq!(accepts, 1, "{path}");
            assert!(wrongs < 3, "{path}: accepted after {wrongs} wrong codes");
        } else {
            assert_eq!(
                codes[3],
                code::ACCESS_REJECT,
                "{path}: the hidden right code"
            );
            assert_eq!(
                (wrongs, accepts),
                (3, 0),
                "{path}: max_attempts comparisons"
            );
        }
        assert_eq!(
            count_codes(&codes, code::ACCESS_ACCEPT),
            accepts,
            "{path}: replies agree with the audit"
        );
        assert!(
            alice_token(&server)["fail_count"].as_u64().unwrap() <= 10,
            "{path}"
        );
    }
}

#[test]
fn a_burst_of_wrong_pins_counts_max_failures_and_the_lock_re_arms_every_period() {
    let options = Options {
        max_failures: 5,
        // Long enough that a burst on a loaded 2-core machine is over within one period.
        clear_after: "5s",
        // Room for the whole burst in the PIN queue, so that it is over well within a lock
        // period (a NAS's retransmissions would bring the rest later).
        limits_extra: "pin_queue = 128".into(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let client = common::raw::Client::new(server.address());
    let wrong_pin_reply = client
        .exchange(&request(0, "mallory", "0000", None))
        .unwrap();
    let mut rows = 1;
    for period in 0..3 {
        let guesses: Vec<Vec<u8>> = (0..200)
            .map(|i| request(i, "alice", &format!("{:04}", 1000 + i), None))
            .collect();
        let codes = burst(server.address(), &guesses, Duration::from_secs(15));
        assert_eq!(
            count_codes(&codes, code::ACCESS_REJECT),
            200,
            "period {period}"
        );
        rows += 200;
        let reasons = audit_reasons(&server, rows);
        let this_period = &reasons[..200];
        assert_eq!(
            count(this_period, |r| r == "wrong PIN"),
            5,
            "period {period}: max_failures PINs compared, of 200"
        );
        assert_eq!(
            count(this_period, |r| r == "token locked"),
            195,
            "period {period}"
        );
        // The right PIN on the locked token looks like any wrong PIN.
        let locked = client.exchange(&request(1, "alice", PIN, None)).unwrap();
        rows += 1;
        assert_eq!(locked[0], code::ACCESS_REJECT, "period {period}");
        // Header and Message-Authenticator (first, 18 octets) differ per packet.
        assert_eq!(
            locked[38..],
            wrong_pin_reply[38..],
            "the same reply attributes"
        );
        std::thread::sleep(Duration::from_millis(5100));
    }
    // After the last period the lock has cleared: the right PIN gets its challenge.
    let open = client.exchange(&request(2, "alice", PIN, None)).unwrap();
    assert_eq!(open[0], code::ACCESS_CHALLENGE);
    assert!(server.log().matches("event=\"token_locked\"").count() >= 3);
}

/// How many replies of a burst had `code`.
fn count_codes(codes: &[u8], code: u8) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

#[test]
fn a_burst_of_pin_requests_opens_one_challenge_and_sends_one_sms() {
    // Room in the PIN queue for the whole burst, so that no retransmission comes after
    // the resend interval on a slow machine.
    let options = Options {
        resend_interval: "3s",
        limits_extra: "pin_queue = 128".into(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let logins: Vec<Vec<u8>> = (0..200).map(|i| request(i, "alice", PIN, None)).collect();
    let sockets_codes = burst_states(&server, &logins);
    let states: std::collections::HashSet<&Vec<u8>> = sockets_codes.iter().collect();
    assert_eq!(
        states.len(),
        1,
        "every reply carries the one open challenge"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.spooled(), 1, "one SMS for 200 requests");
    let code = otp_of(&server.wait_for_sms(1).1);
    let reasons = audit_reasons(&server, 200);
    assert_eq!(count(&reasons, |r| r.contains("challenge created")), 1);
    // After resend_interval: the same challenge, the same code, sent again.
    std::thread::sleep(Duration::from_millis(3000));
    let again = burst_states(&server, &[request(0, "alice", PIN, None)]);
    assert_eq!(Some(&again[0]), states.into_iter().next());
    assert_eq!(otp_of(&server.wait_for_sms(2).1), code);
}

/// The State of each reply of a burst (all must be challenges).
fn burst_states(server: &Server, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
    burst_replies(server.address(), requests, Duration::from_secs(20))
        .into_iter()
        .map(|reply| {
            let reply = reply.expect("a reply to every request");
            assert_eq!(reply[0], code::ACCESS_CHALLENGE);
            state_of(&reply)
        })
        .collect()
}

/// Enrolls `count` users `u0`.. with PIN 4711, phones distinct unless `same_phone`.
fn enroll_many(server: &Server, count: usize, same_phone: bool) {
    let users = server.dir.path().join("users.csv");
    let tokens = server.dir.path().join("tokens.csv");
    let mut u = String::from("name,phone,group\n");
    let mut t = String::from("user,pin,otp_length\n");
    for i in 0..count {
        let phone = if same_phone { 0 } else { i };
        u.push_str(&format!("u{i},+4917055{phone:05},\n"));
        t.push_str(&format!("u{i},4711,\n"));
    }
    std::fs::write(&users, u).unwrap();
    std::fs::write(&tokens, t).unwrap();
    server.cli(&["user", "import", users.to_str().unwrap()], None);
    server.cli(&["token", "import", tokens.to_str().unwrap()], None);
}

#[test]
fn caps_hold_under_a_burst_of_pin_requests_of_many_users() {
    // Each cap in its own server: per phone (all users share one number), per client and
    // global (every user has their own number).
    for (cap, same_phone) in [
        ("per_phone_hour = 7", true),
        ("per_client_minute = 7", false),
        ("global_minute = 7", false),
        ("global_day = 7", false),
    ] {
        let options = Options {
            limits_extra: cap.into(),
            extra: "[[event]]\non = \"sms_limited\"\nto = \"+491609999999\"\ntext = \"SMS limit hit ({user})\"\n".into(),
            ..Options::default()
        };
        let (server, _) = Server::with_alice(&options);
        enroll_many(&server, 150, same_phone);
        let logins: Vec<Vec<u8>> = (0..150)
            .map(|i| request(i, &format!("u{i}"), "4711", None))
            .collect();
        let codes = burst(server.address(), &logins, Duration::from_secs(15));
        assert_eq!(count_codes(&codes, code::ACCESS_CHALLENGE), 7, "{cap}");
        assert_eq!(count_codes(&codes, code::ACCESS_REJECT), 143, "{cap}");
        let reasons = audit_reasons(&server, 150);
        let key = cap.split(' ').next().unwrap();
        assert_eq!(
            count(&reasons, |r| *r
                == format!("PIN right, SMS limit {key} reached")),
            143,
            "{cap}"
        );
        // Seven codes and one notification (at most one a minute per limit), to the admin.
        std::thread::sleep(Duration::from_millis(500));
        let sent = spool_numbers(&server);
        assert_eq!(sent.get("491609999999"), Some(&1), "{cap}: {sent:?}");
        assert_eq!(sent.values().sum::<usize>(), 8, "{cap}: {sent:?}");
    }
}

fn spool_numbers(server: &Server) -> HashMap<String, usize> {
    let mut numbers = HashMap::new();
    for entry in std::fs::read_dir(server.spool())
        .unwrap()
        .filter_map(Result::ok)
    {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let to = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("To: ")
            .to_string();
        *numbers.entry(to).or_insert(0) += 1;
    }
    numbers
}

#[test]
fn the_per_token_cap_holds_under_a_burst_of_one_users_pin_requests() {
    // No resend interval: every request of the burst asks for a send of the one challenge.
    let options = Options {
        resend_interval: "0s",
        limits_extra: "per_token_hour = 7".into(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let logins: Vec<Vec<u8>> = (0..200).map(|i| request(i, "alice", PIN, None)).collect();
    let states = burst_states(&server, &logins);
    assert!(states.iter().all(|s| *s == states[0]), "one challenge");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.spooled(), 7, "per_token_hour sends of 200 requests");
    let reasons = audit_reasons(&server, 200);
    assert_eq!(
        count(&reasons, |r| r
            .ends_with("SMS limit per_token_hour reached")),
        193
    );
}

#[test]
fn the_per_token_cap_answers_the_open_challenge_again_then_refuses_a_new_one() {
    let options = Options {
        resend_interval: "0s",
        limits_extra: "per_token_hour = 2".into(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let first = server.login(PIN);
    let second = server.login(PIN);
    assert_eq!(first.state(), second.state());
    let code = otp_of(&server.wait_for_sms(2).1);
    let third = server.login(PIN);
    assert_eq!(third.code, "Access-Challenge", "the open challenge again");
    assert_eq!(third.state(), first.state());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.spooled(), 2, "nothing sent for the third");
    assert_eq!(
        audit_reasons(&server, 3)[0],
        "PIN right, challenge still open, SMS limit per_token_hour reached"
    );
    assert_eq!(server.answer(&first.state(), &code).code, "Access-Accept");
    let fourth = server.login(PIN);
    assert_eq!(fourth.code, "Access-Reject");
    assert_eq!(
        fourth.get("Reply-Message"),
        Some("Too many codes were requested. Try again later.")
    );
    assert_eq!(
        audit_reasons(&server, 5)[0],
        "PIN right, SMS limit per_token_hour reached"
    );
}

#[test]
fn numbers_the_limits_now_refuse_get_no_sms_at_send() {
    // Enrolled while every country and type was allowed; the limits changed before the login.
    let (dir, config) = Server::prepare(&Options {
        limits_extra: "allowed_countries = []\nblocked_number_types = []".into(),
        ..Options::default()
    });
    for (user, phone) in [("pierre", "+33 6 12 34 56 78"), ("paul", "+49 900 1234567")] {
        common::cli_ok(&config, &["user", "add", user, "--phone", phone], None);
        common::cli_ok(&config, &["token", "add", user, "--pin-stdin"], Some(PIN));
    }
    let text = std::fs::read_to_string(&config).unwrap();
    let limited = text.replace(
        "allowed_countries = []\nblocked_number_types = []",
        "allowed_countries = [\"DE\"]",
    );
    assert_ne!(limited, text);
    std::fs::write(&config, limited).unwrap();
    let server = Server::start(dir, config);
    for (user, rule) in [
        ("pierre", "allowed_countries does not list FR"),
        (
            "paul",
            "is a premium_rate number, and [limits] blocked_number_types",
        ),
    ] {
        let reply = common::radclient::auth(
            server.address(),
            &format!("User-Name={user},User-Password={PIN}"),
        );
        assert_eq!(reply.code, "Access-Reject", "{user}");
        assert_eq!(
            reply.get("Reply-Message"),
            Some("The PIN was correct, but the SMS could not be sent.")
        );
        let reason = &audit_reasons(&server, 1)[0];
        assert!(reason.contains(rule), "{user}: {reason}");
    }
    assert_eq!(server.spooled(), 0);
}
