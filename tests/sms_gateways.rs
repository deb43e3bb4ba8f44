//! The sipgate, smtp and modem gateways against real protocol peers started by each test:
//! an XML-RPC server (Python's xmlrpc.server), an SMTP server (aiosmtpd, STARTTLS or TLS,
//! AUTH), and a modem emulator on a pseudo-terminal that decodes PDUs with
//! python-gsmmodem.

mod common;

use std::path::Path;
use std::time::Duration;

use common::peers::Peer;
use common::{Options, PIN, Server, cli, otp_of};

const GATEWAY_PASSWORD: &str = "gw-Secret-42";

/// `otpgate gateway test GATEWAY --to PHONE --text TEXT`: Ok, or the error it printed.
fn send_test(config: &Path, gateway: &str, text: &str) -> Result<(), String> {
    let (ok, _, err) = cli(
        config,
        &[
            "gateway",
            "test",
            gateway,
            "--to",
            "+491701234567",
            "--text",
            text,
        ],
        None,
    );
    if ok { Ok(()) } else { Err(err) }
}

fn options(extra: String, gateway: &str) -> Options {
    Options {
        extra,
        chain: vec![gateway.to_string()],
        ..Options::default()
    }
}

// ---- sipgate ----------------------------------------------------------------------------

fn sipgate_peer(dir: &Path, answer: &str) -> Peer {
    Peer::start(
        "xmlrpc_peer.py",
        dir,
        &[
            "--user",
            "sipuser",
            "--password",
            GATEWAY_PASSWORD,
            "--answer",
            answer,
        ],
    )
}

fn sipgate_table(peer: &Peer, password: &str) -> String {
    format!(
        "[gateway.sipgate]\ntype = \"sipgate\"\nusername = \"sipuser\"\npassword = \"{password}\"\n\
         url = \"http://127.0.0.1:{}/RPC2\"\n",
        peer.address
    )
}

#[test]
fn sipgate_delivers_the_otp_through_xml_rpc() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = sipgate_peer(scratch.path(), "ok");
    let (server, _) =
        Server::with_alice(&options(sipgate_table(&peer, GATEWAY_PASSWORD), "sipgate"));
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let call = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(call["RemoteUri"], "sip:491701234567@sipgate.de");
    assert_eq!(call["TOS"], "text");
    let otp = otp_of(call["Content"].as_str().unwrap());
    assert_eq!(
        server.answer(&challenge.state(), &otp).code,
        "Access-Accept"
    );
    // The debug log shows the exchange, with message and password redacted.
    let log = server.log();
    assert!(
        log.contains("sipgate request") && log.contains("[redacted]"),
        "{log}"
    );
    assert!(!log.contains(GATEWAY_PASSWORD) && !log.contains(&otp));
}

#[test]
fn sipgate_content_with_markup_characters_arrives_intact() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = sipgate_peer(scratch.path(), "ok");
    let (_dir, config) =
        Server::prepare(&options(sipgate_table(&peer, GATEWAY_PASSWORD), "sipgate"));
    let text = "Code 1 & 2 <b>\"x\"</b> 'y' ä€";
    send_test(&config, "sipgate", text).unwrap();
    assert_eq!(peer.wait_for(1, Duration::from_secs(5))["Content"], text);
}

#[test]
fn sipgate_faults_status_codes_and_bad_passwords_are_failures_with_the_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let cases = [
        (
            "fault",
            GATEWAY_PASSWORD,
            "XML-RPC fault 407: Unauthorized & not allowed",
        ),
        (
            "status",
            GATEWAY_PASSWORD,
            "StatusCode 401: Method not allowed",
        ),
        ("ok", "wrong-password", "HTTP 401"),
    ];
    for (answer, password, expected) in cases {
        let peer = sipgate_peer(scratch.path(), answer);
        let (_dir, config) = Server::prepare(&options(sipgate_table(&peer, password), "sipgate"));
        let err = send_test(&config, "sipgate", "test").unwrap_err();
        assert!(err.contains(expected), "{answer}: {err}");
    }
}

// ---- smtp -------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1, written as PEM files.
fn certificate(dir: &Path) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

fn smtp_peer(dir: &Path, tls: &str) -> (Peer, String) {
    let (cert, key) = certificate(dir);
    let peer = Peer::start(
        "smtp_peer.py",
        dir,
        &[
            "--tls",
            tls,
            "--cert",
            &cert,
            "--key",
            &key,
            "--user",
            "mailer",
            "--password",
            GATEWAY_PASSWORD,
        ],
    );
    (peer, cert)
}

fn smtp_table(peer: &Peer, tls: &str, trust: &str, password: &str) -> String {
    format!(
        r#"[smtp.relay]
host = "127.0.0.1"
port = {port}
tls = "{tls}"
username = "mailer"
password = "{password}"
from = "otpgate <otpgate@example.org>"
timeout = "5s"
{trust}

[gateway.email]
type = "smtp"
smtp = "relay"
mailto = "{{phone}}@sms.example.net"
phone_format = "digits"
"#,
        port = peer.address
    )
}

#[test]
fn smtp_with_starttls_auth_and_a_private_ca_delivers_the_otp() {
    let scratch = tempfile::tempdir().unwrap();
    let (peer, cert) = smtp_peer(scratch.path(), "starttls");
    let table = smtp_table(
        &peer,
        "starttls",
        &format!("ca_file = \"{cert}\""),
        GATEWAY_PASSWORD,
    );
    let (server, _) = Server::with_alice(&options(table, "email"));
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let mail = peer.wait_for(1, Duration::from_secs(10));
    assert_eq!(mail["rcpt_tos"][0], "491701234567@sms.example.net");
    assert_eq!(mail["mail_from"], "otpgate@example.org");
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["authenticated"], true);
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: 491701234567"),
        "default subject is {{phone}}: {data}"
    );
    let body = data
        .split("\r\n\r\n")
        .nth(1)
        .or_else(|| data.split("\n\n").nth(1))
        .unwrap()
        .trim();
    let otp = otp_of(body);
    assert_eq!(
        server.answer(&challenge.state(), &otp).code,
        "Access-Accept"
    );
}

/// Sends `text` through an SMTP gateway over implicit TLS with the `extra` gateway keys, and
/// returns the mail as the peer received it.
fn mail_over_implicit_tls(extra: &str, text: &str) -> serde_json::Value {
    let scratch = tempfile::tempdir().unwrap();
    let (peer, _) = smtp_peer(scratch.path(), "tls");
    let table = smtp_table(
        &peer,
        "tls",
        "accept_invalid_certs = true",
        GATEWAY_PASSWORD,
    ) + extra;
    let (_dir, config) = Server::prepare(&options(table, "email"));
    send_test(&config, "email", text).unwrap();
    peer.wait_for(1, Duration::from_secs(10))
}

#[test]
fn smtp_over_implicit_tls_with_templates_in_subject_and_body() {
    let mail = mail_over_implicit_tls(
        "subject = \"OTP for {phone}\"\nbody = \"Message: {message}\"\n",
        "hello",
    );
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: OTP for 491701234567"), "{data}");
    assert!(data.contains("Message: hello"), "{data}");
}

#[test]
fn smtp_non_ascii_text_arrives_as_utf_8_plain_text() {
    // A receiving gateway decodes the body by its declared charset; without one it reads
    // US-ASCII and garbles every umlaut and the euro sign.
    let mail = mail_over_implicit_tls(
        "subject = \"Code äöü\"\nbody = \"{message}\"\n",
        "äöü € 123456",
    );
    assert_eq!(mail["content_type"], "text/plain", "{mail}");
    assert_eq!(mail["charset"], "utf-8", "{mail}");
    assert_eq!(
        mail["text"].as_str().unwrap().trim_end(),
        "äöü € 123456",
        "{mail}"
    );
    assert_eq!(mail["subject"], "Code äöü", "{mail}");
}

#[test]
fn smtp_refusals_and_untrusted_certificates_are_failures() {
    let scratch = tempfile::tempdir().unwrap();
    let (peer, cert) = smtp_peer(scratch.path(), "starttls");
    let wrong = smtp_table(&peer, "starttls", &format!("ca_file = \"{cert}\""), "wrong");
    let (_dir, config) = Server::prepare(&options(wrong, "email"));
    let err = send_test(&config, "email", "test").unwrap_err();
    assert!(err.contains("smtp relay") && err.contains("535"), "{err}");

    let untrusted = smtp_table(&peer, "starttls", "", GATEWAY_PASSWORD);
    let (_dir, config) = Server::prepare(&options(untrusted, "email"));
    let err = send_test(&config, "email", "test").unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(peer.records().is_empty());
}

// ---- modem ------------------------------------------------------------------------------

fn modem(dir: &Path, extra: &[&str]) -> Peer {
    let commands = dir.join("commands.log").display().to_string();
    let mut args = vec!["--commands", &commands];
    args.extend_from_slice(extra);
    Peer::start("modem_emulator.py", dir, &args)
}

fn commands(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("commands.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn modem_table(peer: &Peer, extra: &str) -> String {
    format!(
        "[gateway.gsm]\ntype = \"modem\"\ndevice = \"{}\"\ntimeout = \"10s\"\n{extra}\n",
        peer.address
    )
}

#[test]
fn modem_in_pdu_mode_unlocks_the_sim_and_delivers_the_otp() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = modem(scratch.path(), &["--sim-pin", "2468"]);
    let (server, _) = Server::with_alice(&options(modem_table(&peer, "sim_pin = \"2468\""), "gsm"));
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let sms = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(sms["number"], "+491701234567");
    assert_eq!(sms["encoding"], "gsm7");
    assert_eq!(sms["parts"], 1);
    let otp = otp_of(sms["text"].as_str().unwrap());
    assert_eq!(
        server.answer(&challenge.state(), &otp).code,
        "Access-Accept"
    );
    let dialogue = commands(scratch.path());
    for expected in [
        "ATE0",
        "AT+CMEE=2",
        "AT+CPIN?",
        "AT+CPIN=****",
        "AT+CREG?",
        "AT+CMGF=0",
    ] {
        assert!(
            dialogue.iter().any(|c| c == expected),
            "{expected} missing from {dialogue:?}"
        );
    }
    assert!(!server.log().contains("2468"), "the SIM PIN is logged");
}

#[test]
fn modem_sends_ucs2_and_concatenated_messages() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = modem(scratch.path(), &[]);
    let (_dir, config) = Server::prepare(&options(modem_table(&peer, ""), "gsm"));
    let texts = [
        ("Ваш код: 123456", "ucs2", 1),
        (&"Long message in GSM seven bit. ".repeat(7)[..], "gsm7", 2),
        (&"Длинное сообщение. ".repeat(5)[..], "ucs2", 2),
    ];
    for (n, (text, encoding, parts)) in texts.iter().enumerate() {
        send_test(&config, "gsm", text).unwrap();
        let sms = peer.wait_for(n + 1, Duration::from_secs(5));
        assert_eq!(sms["text"], *text, "message {n}");
        assert_eq!(sms["encoding"], *encoding, "message {n}");
        assert_eq!(sms["parts"], *parts, "message {n}");
    }
}

#[test]
fn modem_in_text_mode_sends_to_the_formatted_number() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = modem(scratch.path(), &[]);
    let table = modem_table(&peer, "mode = \"text\"\nphone_format = \"international\"");
    let (_dir, config) = Server::prepare(&options(table, "gsm"));
    send_test(&config, "gsm", "Code 42").unwrap();
    let sms = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(sms["mode"], "text");
    assert_eq!(sms["number"], "00491701234567");
    assert_eq!(sms["text"], "Code 42");
    assert!(commands(scratch.path()).contains(&"AT+CMGF=1".to_string()));
}

#[test]
fn a_modem_error_fails_the_send_and_the_modem_is_initialised_again() {
    let scratch = tempfile::tempdir().unwrap();
    let peer = modem(scratch.path(), &["--fail-sends", "1"]);
    let (server, _) = Server::with_alice(&options(modem_table(&peer, ""), "gsm"));
    let first = server.login(PIN);
    assert_eq!(first.code, "Access-Reject");
    assert_eq!(
        first.get("Reply-Message"),
        Some("The PIN was correct, but the SMS could not be sent.")
    );
    assert!(server.log().contains("+CMS ERROR: 500"));
    // The breaker is open now, but the chain has only this gateway: it is tried anyway.
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    assert_eq!(
        peer.wait_for(1, Duration::from_secs(5))["number"],
        "+491701234567"
    );
    let inits = commands(scratch.path())
        .iter()
        .filter(|c| *c == "AT+CMEE=2")
        .count();
    assert_eq!(inits, 2, "initialised once per opening");
}
