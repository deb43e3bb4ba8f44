//! Hostile input and faults: malformed datagrams during normal service, retransmission
//! storms, replies from the address that was asked, a restart between challenge and answer,
//! a hanging gateway, a full or read-only disk, and SIGTERM under load.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http_peer::{Answer, HttpPeer};
use common::raw::{Client, access_request, random_authenticator, verified_reply};
use common::{Options, PIN, SECRET, Server, is_root, otp_of, radclient};
use otpgate::radius::packet::{PacketBuilder, attr, code, hide_password};

/// Signs a request built attribute by attribute (the raw bytes are then mangled).
fn signed(attributes: &[(u8, Vec<u8>)]) -> (Vec<u8>, [u8; 16]) {
    let authenticator = random_authenticator();
    let mut builder = PacketBuilder::new(code::ACCESS_REQUEST, 9);
    builder.message_authenticator();
    for (kind, value) in attributes {
        builder.push(*kind, value);
    }
    (
        builder.finish_request(&authenticator, SECRET.as_bytes()),
        authenticator,
    )
}

/// Datagrams RFC 2865 / RFC 3579 say to drop silently.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let authenticator = random_authenticator();
    let password = |p: &[u8]| hide_password(p, SECRET.as_bytes(), &authenticator);
    let (valid, _) = signed(&[
        (attr::USER_NAME, b"alice".to_vec()),
        (attr::USER_PASSWORD, password(PIN.as_bytes())),
    ]);
    let with_length = |length: u16| {
        let mut bytes = valid.clone();
        bytes[2..4].copy_from_slice(&length.to_be_bytes());
        bytes
    };
    let mut cases: Vec<(&'static str, Vec<u8>)> = (0..20)
        .map(|n| ("truncated header", valid[..n].to_vec()))
        .collect();
    cases.push((
        "length larger than the datagram",
        with_length(valid.len() as u16 + 1),
    ));
    cases.push((
        "length smaller than the datagram",
        with_length(valid.len() as u16 - 3),
    ));
    cases.push(("length below 20", with_length(19)));
    for (name, length) in [
        ("attribute length 0", 0u8),
        ("attribute length 1", 1),
        ("attribute overrunning", 250),
    ] {
        let mut bytes = valid.clone();
        bytes[39] = length; // the User-Name after the Message-Authenticator
        cases.push((name, bytes));
    }
    cases.push((
        "4097 octets",
        [valid.clone(), vec![0u8; 4097 - valid.len()]].concat(),
    ));
    cases.push(("64 KiB", vec![1u8; 65_000]));
    let (two_states, _) = signed(&[
        (attr::USER_NAME, b"alice".to_vec()),
        (attr::USER_PASSWORD, password(b"123456")),
        (attr::STATE, b"0123456789abcdef0123456789abcdef".to_vec()),
        (attr::STATE, b"0123456789abcdef0123456789abcdef".to_vec()),
    ]);
    cases.push(("two State attributes", two_states));
    cases.push((
        "non-UTF-8 User-Name",
        signed(&[(attr::USER_NAME, vec![0xff, 0xfe, 0x80])]).0,
    ));
    for length in [15usize, 17, 130] {
        let (bytes, _) = signed(&[
            (attr::USER_NAME, b"alice".to_vec()),
            (attr::USER_PASSWORD, vec![7u8; length]),
        ]);
        cases.push(("bad User-Password length", bytes));
    }
    let mut short_ma = PacketBuilder::new(code::ACCESS_REQUEST, 3);
    short_ma
        .push(attr::MESSAGE_AUTHENTICATOR, &[0u8; 10])
        .push(attr::USER_NAME, b"alice");
    cases.push((
        "Message-Authenticator of 10 octets",
        short_ma.finish_request(&authenticator, SECRET.as_bytes()),
    ));
    let mut forged = valid.clone();
    forged[25] ^= 0x40;
    cases.push(("forged Message-Authenticator", forged));
    let mut accounting = valid;
    accounting[0] = 4;
    cases.push(("Accounting-Request", accounting));
    cases
}

#[test]
fn malformed_datagrams_are_dropped_while_valid_clients_keep_being_served() {
    let (server, _) = Server::with_alice(&Options::default());
    let address = server.address();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let valid_client = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            let client = Client::new(address);
            while !stop.load(Ordering::Relaxed) {
                let authenticator = random_authenticator();
                let request = access_request(1, authenticator, "mallory", "0000", true, &[]);
                let reply = client
                    .exchange(&request)
                    .expect("a valid client is always answered");
                assert_eq!(
                    verified_reply(&reply, &authenticator).code,
                    code::ACCESS_REJECT
                );
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cases = malformed();
    for round in 0..20 {
        for (_, datagram) in &cases {
            attacker.send_to(datagram, address).unwrap();
        }
        if round % 5 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut buffer = [0u8; 4096];
    assert!(
        attacker.recv_from(&mut buffer).is_err(),
        "a malformed datagram was answered"
    );
    stop.store(true, Ordering::Relaxed);
    valid_client.join().unwrap();
    assert!(served.load(Ordering::Relaxed) > 0);

    // 300 attributes in a well-formed, signed request is legal: it gets an answer.
    let many: Vec<(u8, Vec<u8>)> = std::iter::once((attr::USER_NAME, b"alice".to_vec()))
        .chain((0..300).map(|i| (25u8, vec![(i % 251) as u8])))
        .collect();
    let (request, authenticator) = signed(&many);
    let reply = Client::new(address).exchange(&request).expect("answered");
    assert_eq!(
        verified_reply(&reply, &authenticator).code,
        code::ACCESS_REJECT
    );
    assert!(server.wait_for_log("malformed", Duration::from_secs(2)));
    assert!(server.log().contains("bad_message_authenticator"));
    assert!(server.log().contains("unsupported_code"));
}

#[test]
fn five_retransmissions_of_a_pin_request_send_one_sms_and_get_identical_replies() {
    let (server, _) = Server::with_alice(&Options::default());
    let client = Client::new(server.address());
    let request = access_request(200, random_authenticator(), "alice", PIN, true, &[]);
    for _ in 0..6 {
        client.send(&request);
    }
    let mut replies = Vec::new();
    while let Some(reply) = client.receive() {
        replies.push(reply);
    }
    assert!(!replies.is_empty());
    assert!(
        replies.iter().all(|r| *r == replies[0]),
        "byte-identical replies"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.spooled(), 1, "exactly one SMS");
}

#[test]
fn replies_come_from_the_address_each_request_was_sent_to() {
    let options = Options {
        listen: vec!["127.0.0.1:0".into(), "127.0.0.2:0".into()],
        client_address: "127.0.0.0/8".into(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    assert_eq!(server.addresses.len(), 2);
    for address in &server.addresses {
        // The raw client checks the source address of the reply.
        let client = Client::new(*address);
        let authenticator = random_authenticator();
        let reply = client
            .exchange(&access_request(
                1,
                authenticator,
                "alice",
                "0000",
                true,
                &[],
            ))
            .unwrap();
        verified_reply(&reply, &authenticator);
    }
}

#[test]
fn a_challenge_survives_otpgate_being_killed_and_restarted() {
    let (server, _) = Server::with_alice(&Options::default());
    let challenge = server.login(PIN);
    let otp = otp_of(&server.wait_for_sms(1).1);
    let server = server.kill_and_restart();
    let accept = server.answer(&challenge.state(), &otp);
    assert_eq!(accept.code, "Access-Accept");
}

#[test]
fn a_gateway_that_hangs_does_not_stall_other_users() {
    let peer = HttpPeer::start(Answer {
        delay: Duration::from_secs(30),
        ..Answer::default()
    });
    let options = Options {
        extra: format!(
            "[gateway.hangs]\ntype = \"http\"\nurl = \"{}\"\ntimeout = \"25s\"\n",
            peer.url("/s")
        ),
        reply_within: "1s",
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    server.cli(&["user", "add", "bob", "--phone", "+491709999999"], None);
    server.cli(
        &["token", "add", "bob", "--gateway", "hangs", "--pin-stdin"],
        Some("8888"),
    );
    let address = server.address();
    let bobs = (0..5)
        .map(|_| {
            std::thread::spawn(move || {
                radclient::auth(address, "User-Name=bob,User-Password=8888").code
            })
        })
        .collect::<Vec<_>>();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let challenge = radclient::auth(address, &format!("User-Name=alice,User-Password={PIN}"));
    let otp = otp_of(&server.wait_for_sms(1).1);
    let accept = radclient::auth(
        address,
        &format!(
            "User-Name=alice,User-Password={otp},State={}",
            challenge.state()
        ),
    );
    assert_eq!(accept.code, "Access-Accept");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "alice waited {:?}",
        started.elapsed()
    );
    for bob in bobs {
        assert_eq!(
            bob.join().unwrap(),
            "Access-Challenge",
            "bob's challenge goes out after reply_within"
        );
    }
}

fn mount(args: &[&str]) {
    let status = Command::new("mount").args(args).status().unwrap();
    assert!(status.success(), "mount {args:?}");
}

/// A tmpfs that is unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_rejects_with_a_clear_log_line_and_service_resumes() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let disk_dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk(disk_dir.path().to_path_buf());
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=2m",
        "tmpfs",
        &disk.0.display().to_string(),
    ]);
    let options = Options {
        database_dir: Some(disk.0.clone()),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let login = || server.login(PIN);
    assert_eq!(login().code, "Access-Challenge");

    // Full: a filler takes every free block.
    let filler = disk.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let full = login();
    assert_eq!(full.code, "Access-Reject", "{}", full.output);
    assert!(server.wait_for_log(
        "request failed on an internal error",
        Duration::from_secs(2)
    ));
    assert!(server.log().contains("full"), "the log names the cause");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        login().code,
        "Access-Challenge",
        "service resumes when space is back"
    );

    // A read-only remount is refused while otpgate holds the database open for writing, so
    // that fault is not simulated here; it takes the same path (a store error) as this one.
}

#[test]
fn sigterm_under_load_never_corrupts_the_database() {
    let (mut server, _) = Server::with_alice(&Options::default());
    let address: SocketAddr = server.address();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|n| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = Client::new(address);
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let password = if n % 2 == 0 { PIN } else { "0000" };
                    let request =
                        access_request(n, random_authenticator(), "alice", password, true, &[]);
                    if client.exchange(&request).is_some() {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let status = server.terminate();
    stop.store(true, Ordering::Relaxed);
    let answered: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(status.success(), "{status:?}");
    assert!(answered > 10, "only {answered} answers under load");
    let check = Command::new("python3")
        .args(["-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"])
        .arg(server.database())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
}

/// A log line as otpgate's text format writes it, to be smuggled in after a line break.
const FORGED: &str = "1999-12-31T23:59:59.000000Z  INFO otpgate::radius::listener: decision client=test-nas user=alice outcome=accept";

/// Sends a request whose User-Name, NAS-Identifier and Calling-Station-Id carry line breaks
/// and terminal escapes, and checks that neither the log nor `otpgate audit` lets them
/// through, while `audit --json` still holds the raw values.
fn control_characters_reach_no_log_line_or_table_row(log_format: &'static str) {
    let (server, _) = Server::with_alice(&Options {
        log_format,
        ..Options::default()
    });
    let user = format!("mallory\n{FORGED}\u{1b}[2K\r");
    let nas = "nas\r\n\u{1b}[1A\u{1b}[2Kforged-nas";
    let station = format!("\u{1b}]0;title\u{7}\n{FORGED}\u{9b}2K");
    let authenticator = random_authenticator();
    let request = access_request(
        7,
        authenticator,
        &user,
        "0000",
        true,
        &[
            (attr::NAS_IDENTIFIER, nas.as_bytes()),
            (attr::CALLING_STATION_ID, station.as_bytes()),
        ],
    );
    let reply = Client::new(server.address())
        .exchange(&request)
        .expect("answered");
    assert_eq!(
        verified_reply(&reply, &authenticator).code,
        code::ACCESS_REJECT
    );
    let decided = match log_format {
        "json" => "\"outcome\":\"reject\"",
        _ => "outcome=\"reject\"",
    };
    assert!(server.wait_for_log(decided, Duration::from_secs(5)));

    let log = server.log();
    let forged_lines: Vec<&str> = log.lines().filter(|l| l.starts_with("1999-")).collect();
    assert!(
        forged_lines.is_empty(),
        "forged log lines: {forged_lines:?}"
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\r') && !log.contains('\u{9b}'));
    if log_format == "json" {
        let decision = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one object per line"))
            .find(|entry| entry["message"] == "decision")
            .expect("a decision line");
        let field = |name: &str| decision[name].as_str().unwrap_or_default().to_string();
        for name in ["user", "nas_identifier", "calling_station_id"] {
            assert!(
                !field(name).contains(char::is_control),
                "{name}: {}",
                field(name)
            );
        }
        assert!(
            field("user").starts_with("mallory\\n1999-"),
            "{}",
            field("user")
        );
        assert!(field("calling_station_id").starts_with("\\x1b]0;title\\x07\\n"));
    } else {
        assert!(log.contains("user=mallory\\n1999-"), "{log}");
        assert!(log.contains("nas_identifier=nas\\r\\n\\x1b[1A"), "{log}");
        assert!(
            log.contains("calling_station_id=\\x1b]0;title\\x07\\n1999-"),
            "{log}"
        );
    }

    // The audit row is written just after the reply; wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&server.cli(&["audit", "--json"], None)).expect("valid JSON");
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["user"],
        user.as_str(),
        "the database keeps the raw value"
    );
    assert_eq!(rows[0]["nas_identifier"], nas);
    assert_eq!(rows[0]["calling_station_id"], station.as_str());

    let table = server.cli(&["audit"], None);
    assert_eq!(table.lines().count(), 2, "a header and one row:\n{table}");
    assert!(!table.contains(['\u{1b}', '\r', '\u{9b}']), "{table:?}");
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains("mallory\\n1999-"), "{row}");
    assert!(row.contains("nas\\r\\n\\x1b[1A"), "{row}");
    assert!(
        row.contains("reject"),
        "the real outcome is in the row: {row}"
    );
    let listed = server.cli(&["audit", "--attributes"], None);
    assert!(!listed.contains(['\u{1b}', '\r', '\u{9b}']), "{listed:?}");
    assert!(
        listed
            .lines()
            .next()
            .unwrap_or_default()
            .contains("mallory\\n1999-")
    );
}

#[test]
fn control_characters_in_request_values_are_escaped_in_the_text_log_and_audit() {
    control_characters_reach_no_log_line_or_table_row("text");
}

#[test]
fn control_characters_in_request_values_are_escaped_in_the_json_log_and_audit() {
    control_characters_reach_no_log_line_or_table_row("json");
}

#[test]
fn a_message_authenticator_of_the_wrong_length_is_dropped_for_a_client_that_need_not_send_one() {
    let (server, _) = Server::with_alice(&Options {
        require_message_authenticator: false,
        ..Options::default()
    });
    let client = Client::new(server.address());
    // Attribute lengths 2, 10, 17 and 19: everything but 18 is to be discarded.
    for (identifier, value_length) in [(1u8, 0usize), (2, 8), (3, 15), (4, 17)] {
        let authenticator = random_authenticator();
        let mut builder = PacketBuilder::new(code::ACCESS_REQUEST, identifier);
        builder
            .push(attr::MESSAGE_AUTHENTICATOR, &vec![0u8; value_length])
            .push(attr::USER_NAME, b"alice")
            .push(
                attr::USER_PASSWORD,
                &hide_password(b"0000", SECRET.as_bytes(), &authenticator),
            );
        client.send(&builder.finish_request(&authenticator, SECRET.as_bytes()));
    }
    let authenticator = random_authenticator();
    client.send(&access_request(
        9,
        authenticator,
        "alice",
        "0000",
        false,
        &[],
    ));
    let mut replies = Vec::new();
    while let Some(reply) = client.receive() {
        replies.push(reply);
    }
    assert_eq!(
        replies.len(),
        1,
        "only the request without a Message-Authenticator is answered"
    );
    let reply = verified_reply(&replies[0], &authenticator);
    assert_eq!((reply.identifier, reply.code), (9, code::ACCESS_REJECT));
    assert!(server.wait_for_log("message_authenticator_wrong_length", Duration::from_secs(2)));
}
