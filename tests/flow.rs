//! The SMS challenge-response flow end to end: the built server, radclient as the NAS, the
//! OTP read from the spool folder the server wrote the SMS to (never from the database).
//! One test per row of the table in DESIGN section 4, plus expiry, reuse and lockout.

mod common;

use std::time::Duration;

use common::radclient;
use common::{Options, PIN, Server, otp_of};

fn audit_reasons(server: &Server) -> Vec<String> {
    let json = server.cli(&["audit", "--json", "--limit", "100"], None);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    rows.iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pin_gets_a_challenge_and_state_with_otp_is_accepted_once() {
    let (server, _) = Server::with_alice(&Options::default());
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    assert_eq!(
        challenge.get("Reply-Message"),
        Some("Enter the code sent to +49********67:")
    );
    assert_eq!(challenge.get("Session-Timeout"), Some("300"));
    let state = challenge.state();
    // State carries the 32 hex characters of the transaction id, as ASCII.
    assert_eq!(state.len(), 2 + 64, "{state}");

    let (to, text) = server.wait_for_sms(1);
    assert_eq!(to, "To: 491701234567");
    let otp = otp_of(&text);
    assert_eq!(otp.len(), 6);

    assert_eq!(server.answer(&state, &otp).code, "Access-Accept");
    assert_eq!(
        server.answer(&state, &otp).code,
        "Access-Reject",
        "an OTP is accepted once"
    );
    assert_eq!(server.spooled(), 1);
    let reasons = audit_reasons(&server);
    assert_eq!(reasons[0], "challenge used or ended");
    assert_eq!(reasons[1], "OTP accepted");
}

#[test]
fn pin_plus_otp_is_accepted_once() {
    let (server, _) = Server::with_alice(&Options::default());
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    let otp = otp_of(&server.wait_for_sms(1).1);
    assert_eq!(server.login(&format!("{PIN}{otp}")).code, "Access-Accept");
    assert_eq!(server.login(&format!("{PIN}{otp}")).code, "Access-Reject");
    // The State path cannot reuse it either.
    assert_eq!(audit_reasons(&server)[0], "PIN right, no open challenge");
}

#[test]
fn wrong_otp_with_attempts_left_gets_the_same_state_then_a_reject() {
    let options = Options {
        max_attempts: 2,
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let state = server.login(PIN).state();
    let otp = otp_of(&server.wait_for_sms(1).1);
    let wrong = if otp == "000000" { "111111" } else { "000000" };

    let again = server.answer(&state, wrong);
    assert_eq!(again.code, "Access-Challenge");
    assert_eq!(again.state(), state);
    assert_eq!(again.get("Reply-Message"), Some("Wrong code, try again."));

    let last = server.answer(&state, wrong);
    assert_eq!(last.code, "Access-Reject");
    assert_eq!(last.get("Reply-Message"), Some("Authentication failed."));
    // The challenge is consumed: even the right OTP is refused now.
    assert_eq!(server.answer(&state, &otp).code, "Access-Reject");
}

#[test]
fn unknown_user_wrong_pin_locked_and_disabled_look_the_same() {
    let (server, serial) = Server::with_alice(&Options::default());
    let unknown = radclient::auth(server.address(), "User-Name=mallory,User-Password=4711");
    let wrong_pin = server.login("9999");
    server.cli(&["token", "disable", &serial], None);
    let disabled = server.login(PIN);
    let replies = [&unknown, &wrong_pin, &disabled];
    for reply in replies {
        assert_eq!(reply.code, "Access-Reject", "{}", reply.output);
        assert_eq!(
            reply
                .attributes
                .iter()
                .filter(|(n, _)| n != "Message-Authenticator")
                .count(),
            1
        );
        assert_eq!(reply.get("Reply-Message"), Some("Authentication failed."));
    }
    assert_eq!(server.spooled(), 0);
    // The audit trail keeps the real reasons.
    let reasons = audit_reasons(&server);
    assert_eq!(
        &reasons[..3],
        ["token disabled", "wrong PIN", "unknown user"]
    );
}

#[test]
fn an_expired_challenge_is_refused_on_both_answer_paths() {
    let options = Options {
        validity: "1s",
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let first = server.login(PIN);
    assert_eq!(first.get("Session-Timeout"), Some("1"));
    let otp1 = otp_of(&server.wait_for_sms(1).1);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(server.answer(&first.state(), &otp1).code, "Access-Reject");
    // The expired challenge is no longer the open one: the next PIN opens a new one.
    let second = server.login(PIN);
    assert_eq!(second.code, "Access-Challenge");
    assert_ne!(second.state(), first.state());
    let otp2 = otp_of(&server.wait_for_sms(2).1);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(server.login(&format!("{PIN}{otp2}")).code, "Access-Reject");
    let reasons = audit_reasons(&server);
    assert_eq!(
        [reasons[0].as_str(), reasons[2].as_str()],
        ["challenge expired", "challenge expired"]
    );
}

#[test]
fn a_state_of_another_user_is_refused() {
    let (server, _) = Server::with_alice(&Options::default());
    server.cli(&["user", "add", "bob", "--phone", "+491709999999"], None);
    server.cli(&["token", "add", "bob", "--pin-stdin"], Some("8888"));
    let state = server.login(PIN).state();
    let otp = otp_of(&server.wait_for_sms(1).1);
    let stolen = radclient::auth(
        server.address(),
        &format!("User-Name=bob,User-Password={otp},State={state}"),
    );
    assert_eq!(stolen.code, "Access-Reject");
    // Consumed by the attempt: alice must start over.
    assert_eq!(server.answer(&state, &otp).code, "Access-Reject");
    assert_eq!(
        audit_reasons(&server)[1],
        "challenge belongs to another user"
    );
}

#[test]
fn failures_lock_the_token_until_clear_after_passes() {
    let options = Options {
        max_failures: 2,
        clear_after: "2s",
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    assert_eq!(server.login("0000").code, "Access-Reject");
    assert_eq!(server.login("0001").code, "Access-Reject");
    assert!(
        server.wait_for_log("token_locked", Duration::from_secs(2)),
        "the lock is logged"
    );
    let locked = server.login(PIN);
    assert_eq!(locked.code, "Access-Reject");
    assert_eq!(locked.get("Reply-Message"), Some("Authentication failed."));
    assert_eq!(server.spooled(), 0);
    let list = server.cli(&["token", "list", "--json"], None);
    assert!(list.contains("\"locked\": true"), "{list}");

    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        server.login(PIN).code,
        "Access-Challenge",
        "the lock clears itself"
    );
}

#[test]
fn an_admin_unlock_clears_a_lock_that_never_expires() {
    let options = Options {
        max_failures: 1,
        clear_after: "0s",
        ..Options::default()
    };
    let (server, serial) = Server::with_alice(&options);
    assert_eq!(server.login("0000").code, "Access-Reject");
    assert_eq!(server.login(PIN).code, "Access-Reject");
    assert_eq!(audit_reasons(&server)[0], "token locked");
    server.cli(&["token", "unlock", &serial], None);
    assert_eq!(server.login(PIN).code, "Access-Challenge");
}

#[test]
fn wrong_otps_count_towards_the_lockout() {
    let options = Options {
        max_failures: 2,
        max_attempts: 5,
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let state = server.login(PIN).state();
    let otp = otp_of(&server.wait_for_sms(1).1);
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    assert_eq!(server.answer(&state, wrong).code, "Access-Challenge");
    // The second failure locks the token, which ends the challenge.
    assert_eq!(server.answer(&state, wrong).code, "Access-Reject");
    assert_eq!(server.answer(&state, &otp).code, "Access-Reject");
}

#[test]
fn two_pass_mode_rejects_with_the_prompt_then_accepts_pin_plus_otp() {
    let options = Options {
        mode: "two-pass",
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let first = server.login(PIN);
    assert_eq!(first.code, "Access-Reject");
    assert_eq!(
        first.get("Reply-Message"),
        Some("Enter the code sent to +49********67:")
    );
    assert!(first.get("State").is_none());
    let otp = otp_of(&server.wait_for_sms(1).1);
    assert_eq!(server.login(&format!("{PIN}{otp}")).code, "Access-Accept");
}

#[test]
fn a_pin_request_while_a_challenge_is_open_returns_it_and_the_next_one_is_fresh() {
    let (server, _) = Server::with_alice(&Options::default());
    let a = server.login(PIN).state();
    let again = server.login(PIN).state();
    assert_eq!(a, again, "the open challenge, not a second one");
    let otp_a = otp_of(&server.wait_for_sms(1).1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.spooled(), 1, "no second SMS within resend_interval");
    assert_eq!(server.answer(&a, &otp_a).code, "Access-Accept");
    let b = server.login(PIN).state();
    assert_ne!(a, b);
    let otp_b = otp_of(&server.wait_for_sms(2).1);
    assert_ne!(otp_a, otp_b, "a new challenge takes the next counter");
    assert_eq!(server.answer(&b, &otp_a).code, "Access-Challenge");
    assert_eq!(server.answer(&b, &otp_b).code, "Access-Accept");
}

#[test]
fn the_audit_row_records_the_nas_and_the_calling_station() {
    let (server, serial) = Server::with_alice(&Options::default());
    let attributes = format!(
        "User-Name=alice,User-Password={PIN},NAS-IP-Address=192.0.2.7,NAS-Identifier=vpn-gw-1,Calling-Station-Id=203.0.113.9"
    );
    assert_eq!(
        radclient::auth(server.address(), &attributes).code,
        "Access-Challenge"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["audit", "--json", "--user", "alice"], None)).unwrap();
    let row = &rows[0];
    assert_eq!(row["client"], "test-nas");
    assert_eq!(row["nas_ip"], "192.0.2.7");
    assert_eq!(row["nas_identifier"], "vpn-gw-1");
    assert_eq!(row["calling_station_id"], "203.0.113.9");
    assert_eq!(row["serial"], serial.as_str());
    assert_eq!(row["outcome"], "challenge");
    assert_eq!(row["phone_masked"], "+49********67");
    assert_eq!(row["gateway"], "local");
    assert!(row["time"].as_i64().unwrap() > 1_700_000_000_000);
}

#[test]
fn a_right_otp_does_not_pass_a_token_disabled_after_its_challenge() {
    let (server, serial) = Server::with_alice(&Options::default());
    let state = server.login(PIN).state();
    let otp = otp_of(&server.wait_for_sms(1).1);
    server.cli(&["token", "disable", &serial], None);
    assert_eq!(server.answer(&state, &otp).code, "Access-Reject");
    // Disabling ended the challenge: enabling the token again does not revive it.
    assert_eq!(audit_reasons(&server)[0], "challenge used or ended");
    server.cli(&["token", "enable", &serial], None);
    assert_eq!(server.answer(&state, &otp).code, "Access-Reject");
    assert_eq!(audit_reasons(&server)[0], "challenge used or ended");
}

#[test]
fn a_right_otp_passes_once_the_lock_on_its_token_has_cleared() {
    let options = Options {
        max_failures: 2,
        clear_after: "2s",
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let state = server.login(PIN).state();
    let otp = otp_of(&server.wait_for_sms(1).1);
    // Two wrong PINs lock the token while its challenge is open.
    assert_eq!(server.login("0000").code, "Access-Reject");
    assert_eq!(server.login("0001").code, "Access-Reject");
    assert!(server.wait_for_log("token_locked", Duration::from_secs(2)));

    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(server.answer(&state, &otp).code, "Access-Accept");
    assert!(server.wait_for_log("token_unlocked", Duration::from_secs(2)));
    assert_eq!(audit_reasons(&server)[0], "OTP accepted");
}

#[test]
fn pin_plus_otp_is_compared_with_the_one_open_challenge_and_accepted_once() {
    let (server, _) = Server::with_alice(&Options::default());
    server.login(PIN).state();
    let code = otp_of(&server.wait_for_sms(1).1);
    let wrong = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| *c != code)
        .unwrap();
    assert_eq!(server.login(&format!("{PIN}{wrong}")).code, "Access-Reject");
    assert_eq!(audit_reasons(&server)[0], "PIN right, wrong OTP, attempt 1");
    assert_eq!(server.login(&format!("{PIN}{code}")).code, "Access-Accept");
    assert_eq!(audit_reasons(&server)[0], "PIN and OTP accepted");
    assert_eq!(server.login(&format!("{PIN}{code}")).code, "Access-Reject");
    assert_eq!(audit_reasons(&server)[0], "PIN right, no open challenge");
}
