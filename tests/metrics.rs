//! The `[metrics]` endpoint of the built server: flows move the counters they should,
//! the output passes Debian's `promtool check metrics` (prometheus package), no user name
//! or phone number appears, and `/readyz` turns 500 with a reason when every gateway of the
//! default chain is open-breaker.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::scrape::{self, METRICS_ON};
use common::{Options, PIN, Server, otp_of, radclient};

fn scraped(server: &Server) -> String {
    let (status, body) = scrape::get(server.http_address(), "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

fn value(text: &str, series: &str) -> f64 {
    scrape::value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn flows_move_the_counters_and_promtool_accepts_the_output() {
    let (server, _) = Server::with_alice(&Options {
        extra: METRICS_ON.into(),
        ..Options::default()
    });
    let before = scraped(&server);
    assert_eq!(value(&before, "otpgate_build_info{version=\"0.1.0\"}"), 1.0);
    assert_eq!(
        value(
            &before,
            "otpgate_requests_total{client=\"test-nas\",code=\"access_request\"}"
        ),
        0.0
    );

    let status = radclient::status(server.address());
    assert_eq!(status.code, "Access-Accept", "{}", status.output);
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&server.wait_for_sms(1).1);
    assert_eq!(
        server.answer(&challenge.state(), &otp).code,
        "Access-Accept"
    );
    assert_eq!(server.login("9999").code, "Access-Reject");
    // A wrong secret: the Message-Authenticator does not verify, and the datagram is dropped.
    let forged = radclient::send(
        server.address(),
        "auth",
        "not-the-secret-of-this-nas",
        "User-Name=alice,User-Password=4711,Message-Authenticator=0x00",
        1,
    );
    assert_eq!(forged.code, "none", "{}", forged.output);

    let text = scraped(&server);
    let nas =
        |name: &str, labels: &str| value(&text, &format!("{name}{{client=\"test-nas\",{labels}}}"));
    assert_eq!(
        nas("otpgate_requests_total", "code=\"access_request\""),
        3.0
    );
    assert_eq!(nas("otpgate_requests_total", "code=\"status_server\""), 1.0);
    assert_eq!(nas("otpgate_replies_total", "code=\"access_accept\""), 2.0);
    assert_eq!(
        nas("otpgate_replies_total", "code=\"access_challenge\""),
        1.0
    );
    assert_eq!(nas("otpgate_replies_total", "code=\"access_reject\""), 1.0);
    assert_eq!(
        nas(
            "otpgate_dropped_total",
            "reason=\"bad_message_authenticator\""
        ),
        1.0
    );
    for (outcome, reason) in [
        ("challenge", "challenge"),
        ("accept", "accept"),
        ("reject", "wrong_pin"),
    ] {
        assert_eq!(
            value(
                &text,
                &format!("otpgate_decisions_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}")
            ),
            1.0,
            "{outcome}/{reason}"
        );
    }
    for (step, count) in [("pin", 2.0), ("answer", 1.0), ("status", 1.0)] {
        assert_eq!(
            value(
                &text,
                &format!("otpgate_request_duration_seconds_count{{step=\"{step}\"}}")
            ),
            count,
            "{step}"
        );
    }
    assert_eq!(
        value(
            &text,
            "otpgate_sms_sent_total{country=\"DE\",gateway=\"local\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "otpgate_sms_send_duration_seconds_count{gateway=\"local\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "otpgate_gateway_breaker{gateway=\"local\",state=\"closed\"}"
        ),
        1.0
    );
    assert!(value(&text, "otpgate_argon2_duration_seconds_count") >= 2.0);
    assert!(value(&text, "otpgate_store_call_duration_seconds_count") >= 4.0);
    // The challenge was answered: none is open.
    assert_eq!(value(&text, "otpgate_open_challenges"), 0.0);
    assert_eq!(value(&text, "otpgate_pin_queue_depth"), 0.0);
    assert!(!text.contains("alice"), "a user name is a label:\n{text}");
    assert!(
        !text.contains("1701234567"),
        "a phone number is a label:\n{text}"
    );

    promtool_accepts(&text);
}

/// `promtool check metrics` reads the exposition on stdin and exits non-zero on a format
/// error or a lint problem (a counter without `_total`, a bad HELP, ...).
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn readyz_is_500_with_the_reason_once_every_gateway_of_the_default_chain_is_open() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (server, _) = Server::with_alice(&Options {
        extra: format!(
            "[gateway.down]\ntype = \"http\"\nurl = \"http://{closed}/send\"\n\n{METRICS_ON}"
        ),
        chain: vec!["down".into()],
        ..Options::default()
    });
    let address = server.http_address();
    assert_eq!(scrape::get(address, "/livez"), (200, "ok\n".into()));
    let (status, body) = scrape::get(address, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("default chain: down closed"), "{body}");
    assert!(body.contains("store: answers"), "{body}");

    assert_eq!(server.login(PIN).code, "Access-Reject");
    let (status, body) = scrape::get(address, "/readyz");
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("default chain: down open: every breaker is open"),
        "{body}"
    );
    let text = scraped(&server);
    assert_eq!(
        value(
            &text,
            "otpgate_sms_failed_total{country=\"DE\",gateway=\"down\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "otpgate_gateway_breaker{gateway=\"down\",state=\"open\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "otpgate_decisions_total{outcome=\"reject\",reason=\"sms_failed\"}"
        ),
        1.0
    );
    assert_eq!(scrape::get(address, "/nothing-here").0, 404);
}
