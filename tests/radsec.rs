//! RadSec (RADIUS over TLS, RFC 6614) and RADIUS/1.1 (RFC 9765) against the built binary,
//! with certificates the test makes (rcgen) and real TLS peers: rustls, FreeRADIUS 3.2 as a
//! RadSec client, radsecproxy as a UDP-to-TLS bridge, openssl s_client.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::background::Background;
use common::scrape::{self, METRICS_ON};
use common::tls::{Client, Make, NAS_NAME, Pki, client_config, client_toml};
use common::{Options, PIN, Server, otp_of, radclient};
use otpgate::radius::packet::{Packet, PacketBuilder, attr, code, hide_password};

/// The RFC 6614 shared secret of a RadSec client that sets none.
const RADSEC: &str = "radsec";

/// A server with alice enrolled, RadSec on with the test PKI and `radsec_extra` keys, and
/// the NAS client `nas1` (`client_extra` keys).
fn radsec_server(radsec_extra: &str, client_extra: &str) -> (Server, Pki) {
    radsec_server_with(&Options::default(), radsec_extra, client_extra)
}

/// `radsec_server` with `options`.
fn radsec_server_with(options: &Options, radsec_extra: &str, client_extra: &str) -> (Server, Pki) {
    let (dir, config) = Server::prepare(options);
    let pki = Pki::new(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&pki.radsec_toml(radsec_extra));
    text.push_str(&client_toml("nas1", NAS_NAME, client_extra));
    std::fs::write(&config, text).unwrap();
    common::enroll_alice(&config);
    (Server::start(dir, config), pki)
}

fn radsec_address(server: &Server) -> SocketAddr {
    server.radsec_addresses[0]
}

fn nas(server: &Server, pki: &Pki, alpn: &[&str]) -> Client {
    Client::connect(
        radsec_address(server),
        client_config(pki, Some(&pki.nas()), alpn),
    )
    .expect("the NAS connects")
}

/// A classic Access-Request of alice, signed with the RadSec secret, Message-Authenticator
/// first.
fn access_request(id: u8, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    access_request_of("alice", id, password, state)
}

/// `access_request` of `user`.
fn access_request_of(user: &str, id: u8, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let authenticator: [u8; 16] = std::array::from_fn(|i| (i as u8) ^ id ^ 0x5a);
    let mut b = PacketBuilder::new(code::ACCESS_REQUEST, id);
    b.message_authenticator()
        .push(attr::USER_NAME, user.as_bytes())
        .push(
            attr::USER_PASSWORD,
            &hide_password(password.as_bytes(), RADSEC.as_bytes(), &authenticator),
        );
    if let Some(state) = state {
        b.push(attr::STATE, state);
    }
    b.finish_request(&authenticator, RADSEC.as_bytes())
}

/// A RADIUS/1.1 Access-Request: Reserved-1 zero, the Token, clear password, no MA.
fn access_request_1_1(token: u32, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let mut field = [0u8; 16];
    field[..4].copy_from_slice(&token.to_be_bytes());
    let mut b = PacketBuilder::new(code::ACCESS_REQUEST, 0);
    b.push(attr::USER_NAME, b"alice")
        .push(attr::USER_PASSWORD, password.as_bytes());
    if let Some(state) = state {
        b.push(attr::STATE, state);
    }
    b.finish_unsigned(&field)
}

fn status_server(id: u8) -> Vec<u8> {
    let mut b = PacketBuilder::new(code::STATUS_SERVER, id);
    b.message_authenticator();
    b.finish_request(&[id; 16], RADSEC.as_bytes())
}

/// Checks the Response Authenticator as a classic RADIUS client would (RFC 2865 section 3).
fn assert_signed(reply: &[u8], request: &[u8]) {
    let mut check = reply.to_vec();
    check[4..20].copy_from_slice(&request[4..20]);
    let mut md5 = <md5::Md5 as md5::Digest>::new();
    md5::Digest::update(&mut md5, &check);
    md5::Digest::update(&mut md5, RADSEC.as_bytes());
    assert_eq!(&reply[4..20], md5::Digest::finalize(md5).as_slice());
}

#[test]
fn the_sms_flow_and_status_server_work_over_radsec() {
    let (server, pki) = radsec_server("", "");
    let mut client = nas(&server, &pki, &[]);
    assert_eq!(client.alpn(), None, "no ALPN offered: classic RADIUS/TLS");

    let status = status_server(0);
    let reply = client.exchange(&status).unwrap();
    assert_eq!(reply[0], code::ACCESS_ACCEPT);
    assert_signed(&reply, &status);

    let pin = access_request(1, PIN, None);
    let challenge = client.exchange(&pin).unwrap();
    assert_signed(&challenge, &pin);
    let packet = Packet::decode(&challenge).unwrap();
    assert_eq!(packet.code, code::ACCESS_CHALLENGE);
    assert_eq!(packet.attributes[0].kind, attr::MESSAGE_AUTHENTICATOR);
    let state = packet.first(attr::STATE).unwrap().to_vec();
    let otp = otp_of(&server.wait_for_sms(1).1);

    let answer = access_request(2, &otp, Some(&state));
    let accept = client.exchange(&answer).unwrap();
    assert_signed(&accept, &answer);
    assert_eq!(accept[0], code::ACCESS_ACCEPT, "the OTP is accepted");
    assert!(server.log().contains("radsec connection"));
}

#[test]
fn radius_1_1_is_negotiated_and_carries_the_flow_without_md5() {
    let (server, pki) = radsec_server("", "require_radius_1_1 = true");
    let mut client = nas(&server, &pki, &["radius/1.1", "radius/1.0"]);
    assert_eq!(client.alpn().as_deref(), Some("radius/1.1"));

    let challenge = client
        .exchange(&access_request_1_1(0xdead_beef, PIN, None))
        .unwrap();
    let packet = Packet::decode(&challenge).unwrap();
    assert_eq!(packet.code, code::ACCESS_CHALLENGE);
    assert_eq!(packet.identifier, 0);
    assert_eq!(packet.authenticator[..4], 0xdead_beef_u32.to_be_bytes());
    assert_eq!(packet.authenticator[4..], [0u8; 12]);
    assert_eq!(packet.count(attr::MESSAGE_AUTHENTICATOR), 0);
    let state = packet.first(attr::STATE).unwrap().to_vec();
    let otp = otp_of(&server.wait_for_sms(1).1);
    let accept = client
        .exchange(&access_request_1_1(7, &otp, Some(&state)))
        .unwrap();
    assert_eq!(accept[0], code::ACCESS_ACCEPT);
    assert_eq!(accept[4..8], 7u32.to_be_bytes());

    // The same client offering only radius/1.0 is refused: it requires RADIUS/1.1.
    let mut old = nas(&server, &pki, &["radius/1.0"]);
    assert_eq!(old.alpn().as_deref(), Some("radius/1.0"));
    assert!(old.exchange(&status_server(1)).is_err());
    assert!(server.wait_for_log("radius_1_1_required", Duration::from_secs(5)));
    let mut none = nas(&server, &pki, &[]);
    assert!(none.exchange(&status_server(1)).is_err());
}

#[test]
fn openssl_s_client_negotiates_radius_1_1_and_radius_1_0() {
    let (server, pki) = radsec_server("", "");
    let nas = pki.nas();
    for (offer, chosen) in [
        ("radius/1.1", "radius/1.1"),
        ("radius/1.0", "radius/1.0"),
        ("radius/1.0,radius/1.1", "radius/1.1"),
    ] {
        let output = Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(radsec_address(&server).to_string())
            .args(["-alpn", offer, "-cert"])
            .arg(&nas.cert)
            .arg("-key")
            .arg(&nas.key)
            .arg("-CAfile")
            .arg(pki.ca_file())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl is installed");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains(&format!("ALPN protocol: {chosen}")),
            "{offer}: {text}"
        );
    }
}

/// Tries a handshake and one Status-Server; true if the server answered.
fn answered(server: &Server, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    match Client::connect(radsec_address(server), config) {
        Ok(mut client) => client.exchange(&status_server(3)).is_ok(),
        Err(_) => false,
    }
}

#[test]
fn certificates_that_are_missing_foreign_expired_or_unknown_are_refused_with_a_reason() {
    let (mut server, pki) = radsec_server("", "");
    let expired = pki.issue("expired", &[NAS_NAME], NAS_NAME, Make::Expired);
    let foreign = pki.issue("foreign", &[NAS_NAME], NAS_NAME, Make::OtherCa);
    let stranger = pki.issue("stranger", &["nas9.example.org"], "nas9", Make::Valid);
    for (identity, reason) in [
        (None, "no_certificate"),
        (Some(&foreign), "unknown_ca"),
        (Some(&expired), "expired"),
        (Some(&stranger), "unknown_client"),
    ] {
        assert!(
            !answered(&server, client_config(&pki, identity, &[])),
            "{reason}"
        );
        assert!(
            server.wait_for_log(&format!("reason=\"{reason}\""), Duration::from_secs(5))
                || server.wait_for_log(&format!("reason={reason}"), Duration::from_secs(1)),
            "{reason} is logged"
        );
        assert!(
            answered(&server, client_config(&pki, Some(&pki.nas()), &[])),
            "still serving"
        );
    }
    assert!(
        server.log().contains("nas9.example.org"),
        "the refused name is logged"
    );
    server.terminate();
    let stopped = server.log();
    let line = stopped.lines().find(|l| l.contains("stopped")).unwrap();
    for reason in ["no_certificate", "unknown_ca", "expired", "unknown_client"] {
        assert!(
            line.contains(&format!("radsec_refused/{reason}=1")),
            "{line}"
        );
    }
    assert!(
        line.contains("radsec_open=0"),
        "no connection is left open: {line}"
    );
}

#[test]
fn a_bad_length_or_garbage_closes_that_connection_only() {
    let (server, pki) = radsec_server("", "");
    let mut good = nas(&server, &pki, &[]);
    for length in [5u16, 4097, 65535] {
        let mut bad = nas(&server, &pki, &[]);
        let mut bytes = vec![code::ACCESS_REQUEST, 1];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        bad.send(&bytes).unwrap();
        assert!(bad.is_closed(Duration::from_secs(5)), "length {length}");
        assert!(good.exchange(&status_server(9)).is_ok(), "after {length}");
    }
    let mut garbage = nas(&server, &pki, &[]);
    garbage.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(garbage.is_closed(Duration::from_secs(5)), "garbage");
    assert!(good.exchange(&status_server(10)).is_ok());
    assert!(server.log().matches("outside 20..=4096").count() >= 4);
}

#[test]
fn idle_connections_and_a_slowloris_do_not_delay_another_clients_flow() {
    let (server, pki) = radsec_server("idle_timeout = \"3s\"", "");
    let config = client_config(&pki, Some(&pki.nas()), &[]);
    let idle: Vec<Client> = (0..200)
        .map(|_| Client::connect(radsec_address(&server), config.clone()).unwrap())
        .collect();
    // The slowloris sends a request one octet at a time, slower than anyone would.
    let mut slow = Client::connect(radsec_address(&server), config.clone()).unwrap();
    let slow_request = access_request(40, PIN, None);
    let trickle = std::thread::spawn(move || {
        for byte in &slow_request {
            if slow.send(std::slice::from_ref(byte)).is_err() {
                return slow;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        slow
    });
    // A half-open handshake: TCP connected, no ClientHello.
    let _half_open = std::net::TcpStream::connect(radsec_address(&server)).unwrap();

    let started = Instant::now();
    let mut client = nas(&server, &pki, &[]);
    let challenge = client.exchange(&access_request(1, PIN, None)).unwrap();
    let packet = Packet::decode(&challenge).unwrap();
    assert_eq!(packet.code, code::ACCESS_CHALLENGE);
    let state = packet.first(attr::STATE).unwrap().to_vec();
    let otp = otp_of(&server.wait_for_sms(1).1);
    let accept = client
        .exchange(&access_request(2, &otp, Some(&state)))
        .unwrap();
    assert_eq!(accept[0], code::ACCESS_ACCEPT);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the flow took {:?}",
        started.elapsed()
    );

    // idle_timeout closes the idle ones and the slowloris, which never completes a packet.
    let mut slow = trickle.join().unwrap();
    assert!(
        slow.is_closed(Duration::from_secs(1)),
        "the slowloris is closed"
    );
    let mut idle = idle;
    assert!(
        idle[0].is_closed(Duration::from_secs(5)),
        "an idle connection is closed"
    );
    assert!(server.wait_for_log("idle for idle_timeout", Duration::from_secs(5)));
}

/// 200 requests pipelined on one connection, each an Argon2 check (an unknown user's decoy):
/// how many replies came, and the most PIN checks seen waiting at once (the metrics
/// endpoint, scraped all along).
fn pipelined_pin_checks(radsec_extra: &str) -> (usize, f64) {
    let (server, pki) = radsec_server_with(
        &Options {
            extra: METRICS_ON.into(),
            pin_memory_kib: 4 * 1024,
            ..Options::default()
        },
        radsec_extra,
        "",
    );
    let metrics = server.http_address();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, body) = scrape::get(metrics, "/metrics");
                peak = peak.max(scrape::value(&body, "otpgate_pin_queue_depth").unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        let mut client = nas(&server, &pki, &[]);
        for id in 0..200u8 {
            client
                .send(&access_request_of("mallory", id, "0000", None))
                .unwrap();
        }
        let mut answered = 0;
        while let Ok(reply) = client.receive() {
            assert_eq!(reply[0], code::ACCESS_REJECT);
            answered += 1;
            if answered == 200 {
                break;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (answered, sampler.join().unwrap())
    })
}

#[test]
fn one_connection_keeps_at_most_max_in_flight_per_connection_requests_at_work() {
    // The bound: with 4 in flight, at most 4 checks can wait for the PIN threads.
    let (answered, peak) = pipelined_pin_checks("max_in_flight_per_connection = 4");
    assert_eq!(answered, 200, "every request answered, in turn");
    assert!(peak <= 4.0, "{peak} PIN checks waited at once");
    // Without it (the default, 64), the same burst fills the PIN queue: the sampler sees
    // what the bound prevents.
    let (_, peak) = pipelined_pin_checks("");
    assert!(peak > 4.0, "the unbounded burst queued only {peak}");
}

#[test]
fn connections_over_max_connections_are_refused_and_counted() {
    let (mut server, pki) = radsec_server("max_connections = 3", "");
    let config = client_config(&pki, Some(&pki.nas()), &[]);
    let mut open: Vec<Client> = (0..3)
        .map(|_| Client::connect(radsec_address(&server), config.clone()).unwrap())
        .collect();
    // The fourth is closed at once, before any handshake.
    let mut extra = std::net::TcpStream::connect(radsec_address(&server)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(
        std::io::Read::read(&mut extra, &mut byte),
        Ok(0) | Err(_)
    ));
    for client in &mut open {
        assert!(
            client.exchange(&status_server(1)).is_ok(),
            "the first three are served"
        );
    }
    drop(open);
    std::thread::sleep(Duration::from_millis(300));
    assert!(answered(&server, config), "a slot is free again");
    server.terminate();
    assert!(server.log().contains("radsec_over_max_connections="));
}

/// FreeRADIUS's raddb: the shipped RadSec home-server snippet with this test's files.
fn freeradius_snippet(pki: &Pki, port: u16) -> String {
    let nas = pki.nas();
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/freeradius/otpgate-radsec.conf"
    ))
    .unwrap()
    .replace("port = 2083", &format!("port = {port}"))
    .replace(
        "/etc/freeradius/certs/nas1.pem",
        &nas.cert.display().to_string(),
    )
    .replace(
        "/etc/freeradius/certs/nas1.key",
        &nas.key.display().to_string(),
    )
    .replace(
        "/etc/freeradius/certs/otpgate-ca.pem",
        &pki.ca_file().display().to_string(),
    )
}

use common::free_tcp_port;

#[test]
fn freeradius_as_a_radsec_client_proxies_the_whole_challenge_flow() {
    let (server, pki) = radsec_server("", "");
    let port = radsec_address(&server).port();
    let scratch = tempfile::tempdir().unwrap();
    let proxy_port = common::free_port();
    let snippet = freeradius_snippet(&pki, port);
    common::freeradius::write_config(scratch.path(), proxy_port, &snippet);
    let _freeradius = common::freeradius::start(scratch.path());
    let proxy: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let send = |attributes: &str, seconds: u32| {
        radclient::send(
            proxy,
            "auth",
            common::freeradius::NAS_SECRET,
            &format!("{attributes},Message-Authenticator=0x00"),
            seconds,
        )
    };

    let challenge = send(&format!("User-Name=alice,User-Password={PIN}"), 8);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    assert_eq!(
        challenge.get("Reply-Message"),
        Some("Enter the code sent to +49********67:")
    );
    let otp = otp_of(&server.wait_for_sms(1).1);
    let accept = send(
        &format!(
            "User-Name=alice,User-Password={otp},State={}",
            challenge.get("State").unwrap()
        ),
        8,
    );
    assert_eq!(accept.code, "Access-Accept", "{}", accept.output);
    assert!(server.log().contains("radsec connection"));
}

#[test]
fn radsecproxy_bridges_udp_to_otpgate_over_tls() {
    let (server, pki) = radsec_server("", "");
    let scratch = tempfile::tempdir().unwrap();
    let udp_port = common::free_port();
    let nas = pki.nas();
    let config = scratch.path().join("radsecproxy.conf");
    std::fs::write(
        &config,
        format!(
            "ListenUDP 127.0.0.1:{udp_port}\nLogLevel 4\nLogDestination x-syslog:///\n\
             tls default {{\n    CACertificateFile {ca}\n    CertificateFile {cert}\n    CertificateKeyFile {key}\n}}\n\
             client nas {{\n    host 127.0.0.1\n    type udp\n    secret {secret}\n}}\n\
             server otpgate {{\n    host 127.0.0.1\n    port {port}\n    type tls\n    tls default\n    secret radsec\n    CertificateNameCheck off\n    StatusServer on\n}}\n\
             realm * {{\n    server otpgate\n}}\n",
            ca = pki.ca_file().display(),
            cert = nas.cert.display(),
            key = nas.key.display(),
            secret = common::freeradius::NAS_SECRET,
            port = radsec_address(&server).port(),
        ),
    )
    .unwrap();
    let bridge = Background::start(
        Command::new("radsecproxy")
            .arg("-f")
            .arg("-d")
            .arg("3")
            .arg("-c")
            .arg(&config),
    );
    std::thread::sleep(Duration::from_millis(500));
    let proxy: SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let send = |attributes: &str| {
        radclient::send(
            proxy,
            "auth",
            common::freeradius::NAS_SECRET,
            &format!("{attributes},Message-Authenticator=0x00"),
            8,
        )
    };
    let challenge = send(&format!("User-Name=alice,User-Password={PIN}"));
    assert_eq!(
        challenge.code,
        "Access-Challenge",
        "{}\n{}",
        challenge.output,
        bridge.output()
    );
    let otp = otp_of(&server.wait_for_sms(1).1);
    let accept = send(&format!(
        "User-Name=alice,User-Password={otp},State={}",
        challenge.get("State").unwrap()
    ));
    assert_eq!(accept.code, "Access-Accept", "{}", accept.output);
    // radsecproxy checks its server with Status-Server over TLS (about every 25 s when idle).
    assert!(
        server.wait_for_log("status-server answered", Duration::from_secs(60)),
        "no Status-Server from radsecproxy:\n{}",
        bridge.output()
    );
}

#[test]
fn the_bench_client_completes_flows_over_radius_1_1() {
    let capture = free_tcp_port();
    let options = Options {
        chain: vec!["capture".into()],
        // Each user logs in again and again: every PIN request sends its SMS.
        resend_interval: "0s",
        limits_extra: "per_token_hour = 0\nper_token_day = 0\nper_phone_hour = 0".into(),
        extra: format!(
            "\n[gateway.capture]\ntype = \"http\"\nurl = \"http://127.0.0.1:{capture}/sms\"\nmethod = \"POST\"\noptions = {{ to = \"{{phone}}\", text = \"{{otp}}\" }}\n"
        ),
        ..Options::default()
    };
    let (dir, config) = Server::prepare(&options);
    let pki = Pki::new(dir.path());
    // The capture gateway takes the SMS text for the code.
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("sms_text = \"Your code: {otp}\"", "sms_text = \"{otp}\"");
    text.push_str(&pki.radsec_toml(""));
    text.push_str(&client_toml("nas1", NAS_NAME, "require_radius_1_1 = true"));
    std::fs::write(&config, text).unwrap();
    let (users, tokens) = (dir.path().join("users.csv"), dir.path().join("tokens.csv"));
    let status = Command::new(env!("CARGO_BIN_EXE_otpgate-bench"))
        .args(["users", "--count", "4", "--users-csv"])
        .arg(&users)
        .arg("--tokens-csv")
        .arg(&tokens)
        .status()
        .unwrap();
    assert!(status.success());
    common::import_csv(&config, &users, &tokens);
    let server = Server::start(dir, config);

    let nas = pki.nas();
    let output = Command::new(env!("CARGO_BIN_EXE_otpgate-bench"))
        .args(["flow", "--server"])
        .arg(radsec_address(&server).to_string())
        .args(["--secret", RADSEC, "--users", "4", "--concurrency", "2"])
        .args(["--duration", "2s", "--capture"])
        .arg(format!("127.0.0.1:{capture}"))
        .args(["--tls", "--alpn", "radius/1.1", "--cert"])
        .arg(&nas.cert)
        .arg("--key")
        .arg(&nas.key)
        .arg("--ca")
        .arg(pki.ca_file())
        .arg("--json")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert!(report["completed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["timeouts"], 0, "{report}");
    assert!(server.log().contains("protocol=\"radius/1.1\""));
    assert!(!server.log().contains("protocol=\"radius/tls\""));
}

#[test]
fn certificate_problems_stop_check_config_and_serve_naming_file_and_key() {
    let (dir, config) = Server::prepare(&Options::default());
    let pki = Pki::new(dir.path());
    let base = std::fs::read_to_string(&config).unwrap();
    let write = |radsec: String| {
        std::fs::write(
            &config,
            format!("{base}{radsec}{}", client_toml("nas1", NAS_NAME, "")),
        )
        .unwrap();
    };
    write(pki.radsec_toml(""));
    let (ok, out, err) = common::cli(&config, &["check-config"], None);
    assert!(ok, "{err}");
    assert!(out.contains("radsec on 127.0.0.1:0"), "{out}");

    let d = dir.path().display().to_string();
    let server_cert = format!("{d}/server.pem");
    let cases = [
        (
            pki.radsec_toml("")
                .replace(&server_cert, &format!("{d}/missing.pem")),
            "radsec.cert_file: ",
            "No such file",
        ),
        (
            pki.radsec_toml("")
                .replace(&server_cert, &format!("{d}/server.key")),
            "radsec.cert_file: ",
            "no certificate",
        ),
        (
            pki.radsec_toml("")
                .replace(&format!("{d}/server.key"), &format!("{d}/nas.key")),
            "radsec.key_file: ",
            "does not go with",
        ),
    ];
    for (radsec, key, problem) in cases {
        write(radsec);
        for command in [&["check-config"][..], &["serve"][..]] {
            let (ok, _, err) = common::cli(&config, command, None);
            assert!(!ok, "{command:?} {problem}");
            assert!(
                err.contains(key) && err.contains(problem),
                "{command:?}: {err}"
            );
        }
    }
    write(pki.radsec_toml(""));
    std::fs::set_permissions(
        dir.path().join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (ok, _, err) = common::cli(&config, &["check-config"], None);
    assert!(
        !ok && err.contains("radsec.key_file: ") && err.contains("readable by group or others"),
        "{err}"
    );
}

#[test]
fn a_peer_that_never_reads_its_replies_loses_only_its_own_connection() {
    let (server, pki) = radsec_server("idle_timeout = \"2s\"", "");
    let config = client_config(&pki, Some(&pki.nas()), &[]);
    let mut deaf = Client::connect(radsec_address(&server), config.clone()).unwrap();
    // Status-Servers back to back, no reply ever read: the replies fill the socket buffers,
    // the server stops reading this connection, and after idle_timeout closes it.
    let flooding = std::thread::spawn(move || {
        let started = Instant::now();
        let packet = status_server(5);
        let mut burst = Vec::new();
        for _ in 0..1000 {
            burst.extend_from_slice(&packet);
        }
        while started.elapsed() < Duration::from_secs(60) {
            if deaf.send(&burst).is_err() {
                return Some(started.elapsed());
            }
        }
        None
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut other = nas(&server, &pki, &[]);
    for id in 0..20 {
        assert!(
            other.exchange(&status_server(id)).is_ok(),
            "the other client is served"
        );
    }
    let closed_after = flooding.join().unwrap();
    assert!(
        closed_after.is_some(),
        "the deaf peer's connection was never closed"
    );
    eprintln!("the deaf peer was cut off after {closed_after:?}");
    // `other` sat idle meanwhile and met idle_timeout too; a new connection is served.
    let mut again = nas(&server, &pki, &[]);
    assert!(again.exchange(&status_server(99)).is_ok());
}

#[test]
fn a_reload_adds_a_nas_by_certificate_and_a_certificate_that_does_not_load_is_refused() {
    let (server, pki) = radsec_server("", "");
    let nas2 = pki.issue("nas2", &["nas2.example.org"], "nas2", Make::Valid);
    assert!(
        !answered(&server, client_config(&pki, Some(&nas2), &[])),
        "nas2 is no client yet"
    );
    // A connection open before the reload keeps working after it.
    let mut open = nas(&server, &pki, &[]);
    assert!(open.exchange(&status_server(1)).is_ok());
    let original = std::fs::read_to_string(&server.config).unwrap();
    let with_nas2 = format!("{original}{}", client_toml("nas2", "nas2.example.org", ""));
    std::fs::write(&server.config, &with_nas2).unwrap();
    assert!(server.reload(), "{}", server.log());
    assert!(
        answered(&server, client_config(&pki, Some(&nas2), &[])),
        "nas2 is answered after the reload"
    );
    assert!(
        open.exchange(&status_server(2)).is_ok(),
        "the open connection stays"
    );
    // A server certificate that does not load refuses the whole reload; the old one serves.
    std::fs::write(
        &server.config,
        with_nas2.replace("server.pem", "missing.pem"),
    )
    .unwrap();
    assert!(!server.reload());
    assert!(
        server.log().contains("reload refused") && server.log().contains("radsec.cert_file"),
        "{}",
        server.log()
    );
    assert!(answered(&server, client_config(&pki, Some(&nas2), &[])));
    assert!(answered(
        &server,
        client_config(&pki, Some(&pki.nas()), &[])
    ));
}

#[test]
fn radsec_refusals_connections_and_the_certificate_expiry_are_metrics() {
    let options = Options::default();
    let (dir, config) = Server::prepare(&options);
    let pki = Pki::new(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&pki.radsec_toml(""));
    text.push_str(&client_toml("nas1", NAS_NAME, ""));
    text.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(dir, config);
    let scrape = || common::scrape::get(server.http_address(), "/metrics").1;
    let series = |text: &str, name: &str| common::scrape::value(text, name).unwrap_or(-1.0);
    let stranger = pki.issue("stranger", &["nas9.example.org"], "nas9", Make::Valid);
    assert!(!answered(
        &server,
        client_config(&pki, Some(&stranger), &[])
    ));
    let mut open = nas(&server, &pki, &[]);
    assert!(open.exchange(&status_server(1)).is_ok());
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape();
        if series(
            &text,
            "otpgate_radsec_refused_total{reason=\"unknown_client\"}",
        ) == 1.0
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        series(
            &text,
            "otpgate_radsec_refused_total{reason=\"unknown_client\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(series(&text, "otpgate_radsec_connections"), 1.0, "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = series(&text, "otpgate_radsec_certificate_expiry_timestamp_seconds");
    assert!(
        expiry > now,
        "the test certificate is valid: {expiry} vs {now}"
    );
}
