//! No PIN, OTP, shared secret, gateway password or full phone number reaches the log (at
//! debug level, every crate) or the audit trail; none but the phone reaches the database.

mod common;

use std::time::Duration;

use common::http_peer::{Answer, HttpPeer};
use common::{Options, SECRET, Server, cli_ok, radclient};

const PIN: &str = "Pin-Xq7-Secret";
const GATEWAY_PASSWORD: &str = "Gw-Pass-Zk9";
const FULL_PHONE: &str = "491701234567";

#[test]
fn secrets_never_reach_the_log_the_audit_or_the_database() {
    let peer = HttpPeer::start(Answer::default());
    let extra = format!(
        "[gateway.provider]\ntype = \"http\"\nurl = \"{}\"\nusername = \"u\"\npassword = \"{GATEWAY_PASSWORD}\"\n\
         parameters = {{ key = \"{GATEWAY_PASSWORD}\" }}\noptions = {{ to = \"{{phone}}\", text = \"{{otp}}\" }}\n",
        peer.url("/send")
    );
    // Ten digits make an accidental match with a timestamp impossible.
    let options = Options {
        extra,
        chain: vec!["provider".into()],
        otp_length: 10,
        ..Options::default()
    };
    let (dir, config) = Server::prepare(&options);
    cli_ok(
        &config,
        &["user", "add", "alice", "--phone", "+49 170 1234567"],
        None,
    );
    cli_ok(
        &config,
        &["token", "add", "alice", "--pin-stdin"],
        Some(PIN),
    );
    let server = Server::start(dir, config);

    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let text = peer
        .wait_for(1, Duration::from_secs(5))
        .field("text")
        .unwrap();
    let otp = text.trim_start_matches("Your code: ").to_string();
    assert_eq!(otp.len(), 10);
    let wrong = radclient::auth(
        server.address(),
        &format!("User-Name=alice,User-Password=9{}", &otp[1..]),
    );
    assert_eq!(wrong.code, "Access-Reject");
    let accept = radclient::auth(
        server.address(),
        &format!("User-Name=alice,User-Password={PIN}{otp}"),
    );
    assert_eq!(accept.code, "Access-Accept");
    assert!(server.wait_for_log("PIN and OTP accepted", Duration::from_secs(2)));

    let log = server.log();
    let audit = server.cli(&["audit", "--json"], None);
    assert!(
        audit.contains("+49********67"),
        "the audit keeps the masked phone"
    );
    for (what, secret) in [
        ("PIN", PIN),
        ("OTP", otp.as_str()),
        ("shared secret", SECRET),
        ("gateway password", GATEWAY_PASSWORD),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log");
        assert!(!audit.contains(secret), "the {what} is in the audit trail");
        for file in ["otpgate.db", "otpgate.db-wal"] {
            let bytes = std::fs::read(server.dir.path().join(file)).unwrap_or_default();
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "the {what} is in {file}");
        }
    }
    assert!(
        !log.contains(FULL_PHONE),
        "the full phone number is in the log"
    );
    assert!(
        !audit.contains(FULL_PHONE),
        "the full phone number is in the audit trail"
    );
    // The log is at debug level: the check above covered more than info lines.
    assert!(log.contains("DEBUG"));
}
