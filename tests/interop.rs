//! otpgate with real third-party RADIUS software: FreeRADIUS 3.2 as a proxy in front of it
//! (using the snippet shipped in etc/freeradius/), pyrad as a second independent client, and
//! tshark decoding a captured run.

mod common;

use std::time::{Duration, Instant};

use common::background::{assert_clean, capture_radius};
use common::freeradius::{self, NAS_SECRET};
use common::peers;
use common::radclient;
use common::{Options, PIN, SECRET, Server, free_port, otp_of};

#[test]
fn freeradius_proxies_the_whole_challenge_flow_and_marks_otpgate_alive_by_status_server() {
    let (otpgate_port, proxy_port) = (free_port(), free_port());
    let options = Options {
        listen: vec![format!("127.0.0.1:{otpgate_port}")],
        ..Options::default()
    };
    let (dir, config) = Server::prepare(&options);
    common::enroll_alice(&config);

    let scratch = tempfile::tempdir().unwrap();
    let proxy_snippet = freeradius::snippet("otpgate-proxy.conf")
        .replace("port = 1812", &format!("port = {otpgate_port}"));
    freeradius::write_config(scratch.path(), proxy_port, &proxy_snippet);
    let freeradius = freeradius::start(scratch.path());
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let through_proxy = |attributes: &str| {
        radclient::send(
            proxy,
            "auth",
            NAS_SECRET,
            &format!("{attributes},Message-Authenticator=0x00"),
            8,
        )
    };

    // otpgate is not running yet: the proxy's request times out and it marks otpgate zombie,
    // then probes it with Status-Server until otpgate, once started, answers.
    let unanswered = radclient::send(
        proxy,
        "auth",
        NAS_SECRET,
        "User-Name=alice,User-Password=x,Message-Authenticator=0x00",
        3,
    );
    assert_ne!(unanswered.code, "Access-Accept");
    assert!(
        freeradius.wait_for("zombie", Duration::from_secs(10)),
        "no zombie state"
    );
    let server = Server::start(dir, config);
    // FreeRADIUS pings at least every 6 s and wants 3 answers in a row.
    let marked_alive = |log: &str| {
        log.lines().any(|l| {
            l.contains(&format!("home server 127.0.0.1 port {otpgate_port}")) && l.contains("alive")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while !marked_alive(&freeradius.output()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        marked_alive(&freeradius.output()),
        "FreeRADIUS never marked otpgate alive"
    );
    assert!(!server.log().contains("bad_message_authenticator"));

    let challenge = through_proxy(&format!("User-Name=alice,User-Password={PIN}"));
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    assert_eq!(
        challenge.get("Reply-Message"),
        Some("Enter the code sent to +49********67:")
    );
    let otp = otp_of(&server.wait_for_sms(1).1);
    let accept = through_proxy(&format!(
        "User-Name=alice,User-Password={otp},State={}",
        challenge.state()
    ));
    assert_eq!(accept.code, "Access-Accept", "{}", accept.output);

    // The proxy added a Proxy-State, otpgate echoed it, and FreeRADIUS took the signed reply.
    let log = freeradius.output();
    let received = log
        .split("Received Access-Challenge")
        .nth(1)
        .expect("the proxy got the challenge");
    let reply_attributes: Vec<&str> = received
        .lines()
        .skip(1)
        .take_while(|l| l.contains("   "))
        .collect();
    assert!(
        reply_attributes[0].contains("Message-Authenticator"),
        "{reply_attributes:?}"
    );
    assert!(
        reply_attributes
            .iter()
            .any(|l| l.contains("Proxy-State = 0x")),
        "Proxy-State not echoed: {reply_attributes:?}"
    );
    assert!(!log.contains("invalid Message-Authenticator"), "{log}");
    let audit: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["audit", "--json"], None)).unwrap();
    assert_eq!(audit[0]["reason"], "OTP accepted");
}

fn pyrad_flow(server: &Server, with_message_authenticator: bool) -> serde_json::Value {
    let port = server.address().port().to_string();
    let spool = server.spool().display().to_string();
    let mut args = vec![
        "--port", &port, "--secret", SECRET, "--user", "alice", "--pin", PIN, "--spool", &spool,
    ];
    if with_message_authenticator {
        args.push("--message-authenticator");
    }
    serde_json::from_str(&peers::run("pyrad_flow.py", &args)).unwrap()
}

#[test]
fn pyrad_runs_the_flow_with_and_without_message_authenticator_and_reads_a_long_prompt() {
    let prompt = format!(
        "{} Enter the code sent to {{phone_masked}}:",
        "Welcome to the example VPN. ".repeat(12)
    );
    let options = Options {
        require_message_authenticator: false,
        prompt: prompt.clone(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    for with_ma in [true, false] {
        let result = pyrad_flow(&server, with_ma);
        let challenge = &result["challenge"];
        assert_eq!(challenge["code"], 11, "Access-Challenge: {result}");
        let expected = prompt.replace("{phone_masked}", "+49********67");
        assert!(expected.len() > 253);
        assert_eq!(challenge["reply_message"], expected.as_str());
        assert_eq!(challenge["reply_messages"], 2, "split into two attributes");
        assert_eq!(challenge["ma_ok"], true);
        assert_eq!(result["answer"]["code"], 2, "Access-Accept: {result}");
        assert_eq!(result["answer"]["ma_ok"], true);
    }
}

#[test]
fn tshark_decodes_every_packet_cleanly_with_message_authenticator_first_in_replies() {
    let (server, _) = Server::with_alice(&Options::default());
    let text = capture_radius(server.address().port(), SECRET, || {
        let challenge = server.login(PIN);
        let otp = otp_of(&server.wait_for_sms(1).1);
        let answer = format!(
            "User-Name=alice,User-Password={otp},State={}",
            challenge.state()
        );
        assert_eq!(
            radclient::auth(server.address(), &answer).code,
            "Access-Accept"
        );
        assert_eq!(
            radclient::auth(server.address(), "User-Name=alice,User-Password=nope").code,
            "Access-Reject"
        );
        let status = radclient::status(server.address());
        assert_eq!(status.code, "Access-Accept");
    });
    assert_clean(&text);
    let packets: Vec<&str> = text.split("\nFrame ").collect();
    assert_eq!(packets.len(), 8, "4 requests and 4 replies:\n{text}");
    let mut replies = 0;
    for packet in packets {
        let is_reply = [
            "Code: Access-Accept",
            "Code: Access-Challenge",
            "Code: Access-Reject",
        ]
        .iter()
        .any(|c| packet.contains(c));
        if is_reply {
            replies += 1;
            let first_avp = packet
                .lines()
                .find(|l| l.trim_start().starts_with("AVP: t="))
                .unwrap_or("");
            assert!(
                first_avp.contains("Message-Authenticator(80)"),
                "first AVP is {first_avp}:\n{packet}"
            );
        }
    }
    assert_eq!(replies, 4);
}
