//! `[[event]]` notifications through the built server and CLI, delivered to a real HTTP
//! server standing in for the SMS provider.

mod common;

use std::time::{Duration, Instant};

use common::http_peer::{Answer, HttpPeer, Recorded};
use common::radclient;
use common::{Options, PIN, Server, cli_ok};

fn notify_gateway(peer: &HttpPeer) -> String {
    format!(
        "[gateway.notify]\ntype = \"http\"\nurl = \"{}\"\noptions = {{ to = \"{{phone}}\", text = \"{{message}}\" }}\n",
        peer.url("/notify")
    )
}

fn with_events(peer: &HttpPeer, events: &str) -> Options {
    Options {
        extra: format!("{}\n{events}", notify_gateway(peer)),
        ..Options::default()
    }
}

fn audit(server: &Server) -> Vec<serde_json::Value> {
    serde_json::from_str(&server.cli(&["audit", "--json"], None)).unwrap()
}

fn text(record: &Recorded) -> String {
    record.field("text").unwrap()
}

#[test]
fn locking_a_token_notifies_its_owner() {
    let peer = HttpPeer::start(Answer::default());
    let events = r#"[[event]]
on = "token_locked"
gateway = "notify"
to = "owner"
text = "otpgate: token {serial} of {user} locked after {failures} failures ({phone_masked}, from {client})"
"#;
    let options = Options {
        max_failures: 2,
        ..with_events(&peer, events)
    };
    let (server, serial) = Server::with_alice(&options);
    for wrong in ["0000", "0001"] {
        let reply = radclient::auth(
            server.address(),
            &format!("User-Name=alice,User-Password={wrong}"),
        );
        assert_eq!(reply.code, "Access-Reject");
    }
    let sent = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(sent.field("to").as_deref(), Some("+491701234567"));
    assert_eq!(
        text(&sent),
        format!(
            "otpgate: token {serial} of alice locked after 2 failures (+49********67, from test-nas)"
        )
    );
    assert!(server.wait_for_log(
        "token_locked notification sent via notify",
        Duration::from_secs(2)
    ));
    let notify = audit(&server)
        .into_iter()
        .find(|r| r["outcome"] == "notify")
        .expect("an audit row");
    assert_eq!(notify["gateway"], "notify");
    assert_eq!(notify["phone_masked"], "+49********67");
    assert_eq!(
        peer.requests().len(),
        1,
        "one notification, not one per failure"
    );
}

#[test]
fn a_new_client_login_notifies_once_per_calling_station() {
    let peer = HttpPeer::start(Answer::default());
    let events = r#"[[event]]
on = "login_success"
gateway = ["notify"]
to = "+491609999999"
text = "{user} logged in from {client}"
only_new_client = true
"#;
    let (server, _) = Server::with_alice(&with_events(&peer, events));
    let login = |station: &str| {
        let attributes =
            format!("User-Name=alice,User-Password={PIN},Calling-Station-Id={station}");
        let before = server.spooled();
        let challenge = radclient::auth(server.address(), &attributes);
        let sms = server.wait_for_sms(before + 1);
        let otp = common::otp_of(&sms.1);
        let attributes = format!(
            "User-Name=alice,User-Password={otp},State={},Calling-Station-Id={station}",
            challenge.state()
        );
        assert_eq!(
            radclient::auth(server.address(), &attributes).code,
            "Access-Accept"
        );
    };
    login("198.51.100.1");
    let first = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(text(&first), "alice logged in from 198.51.100.1");
    assert_eq!(first.field("to").as_deref(), Some("+491609999999"));
    login("198.51.100.1");
    login("198.51.100.2");
    let second = peer.wait_for(2, Duration::from_secs(5));
    assert_eq!(text(&second), "alice logged in from 198.51.100.2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        peer.requests().len(),
        2,
        "the known client was not announced again"
    );
}

#[test]
fn admin_actions_notify_and_the_cli_waits_for_delivery() {
    let peer = HttpPeer::start(Answer::default());
    let events = r#"[[event]]
on = "token_added"
gateway = "notify"
text = "A token {serial} was added for {user}"

[[event]]
on = "pin_changed"
gateway = "notify"
to = "+491609999999"
text = "PIN of {serial} changed"
"#;
    let (_dir, config) = Server::prepare(&with_events(&peer, events));
    cli_ok(
        &config,
        &["user", "add", "alice", "--phone", common::PHONE],
        None,
    );
    let serial = cli_ok(
        &config,
        &["token", "add", "alice", "--pin-stdin"],
        Some(PIN),
    )
    .trim()
    .to_string();
    // No waiting: the CLI returned after delivery.
    let added = &peer.requests()[0];
    assert_eq!(text(added), format!("A token {serial} was added for alice"));
    assert_eq!(added.field("to").as_deref(), Some("+491701234567"));
    cli_ok(
        &config,
        &["token", "set-pin", &serial, "--pin-stdin"],
        Some("97531"),
    );
    assert_eq!(
        text(&peer.requests()[1]),
        format!("PIN of {serial} changed")
    );
}

#[test]
fn a_failed_sms_notifies_the_on_call_phone_through_another_gateway() {
    let peer = HttpPeer::start(Answer::default());
    let broken = HttpPeer::start(Answer {
        status: 500,
        ..Answer::default()
    });
    let events = format!(
        "[gateway.broken]\ntype = \"http\"\nurl = \"{}\"\n\n[[event]]\non = \"sms_failed\"\ngateway = \"notify\"\n\
         to = \"+491609999999\"\ntext = \"SMS to {{phone_masked}} for {{user}} failed\"\n",
        broken.url("/send")
    );
    let options = Options {
        chain: vec!["broken".into()],
        ..with_events(&peer, &events)
    };
    let (server, _) = Server::with_alice(&options);
    assert_eq!(server.login(PIN).code, "Access-Reject");
    let sent = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(text(&sent), "SMS to +49********67 for alice failed");
}

#[test]
fn a_hanging_notification_gateway_never_delays_a_reply() {
    let peer = HttpPeer::start(Answer {
        delay: Duration::from_secs(5),
        ..Answer::default()
    });
    let events = "[[event]]\non = \"token_locked\"\ngateway = \"notify\"\ntext = \"locked\"\n";
    let options = Options {
        max_failures: 1,
        ..with_events(&peer, events)
    };
    let (server, _) = Server::with_alice(&options);
    let started = Instant::now();
    let reply = radclient::auth(server.address(), "User-Name=alice,User-Password=0000");
    assert_eq!(reply.code, "Access-Reject");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    peer.wait_for(1, Duration::from_secs(2));
}

#[test]
fn event_rules_are_checked_at_start_up() {
    let peer = HttpPeer::start(Answer::default());
    let events = "[[event]]\non = \"token_locked\"\ngateway = \"nowhere\"\nto = \"somebody\"\ntext = \"{pin}\"\n\n\
                  [[event]]\non = \"token_added\"\ntext = \"x\"\nonly_new_client = true\n";
    let (_dir, config) = Server::prepare(&with_events(&peer, events));
    let (ok, _, err) = common::cli(&config, &["check-config"], None);
    assert!(!ok);
    for expected in [
        "event[0] (token_locked).gateway: no gateway named 'nowhere'",
        "event[0] (token_locked).to: 'somebody' is not a phone number",
        "event[0] (token_locked).text: unknown tag {pin}",
        "event[1] (token_added).only_new_client: applies to login_success only",
    ] {
        assert!(err.contains(expected), "{expected} not in {err}");
    }
}

#[test]
fn unlocking_notifies_whether_an_admin_or_clear_after_does_it() {
    let peer = HttpPeer::start(Answer::default());
    let events = "[[event]]\non = \"token_unlocked\"\ngateway = \"notify\"\ntext = \"{serial} unlocked\"\n\n\
                  [[event]]\non = \"token_deleted\"\ngateway = \"notify\"\ntext = \"{serial} deleted\"\n";
    let options = Options {
        max_failures: 1,
        clear_after: "1s",
        ..with_events(&peer, events)
    };
    let (server, serial) = Server::with_alice(&options);
    assert_eq!(
        radclient::auth(server.address(), "User-Name=alice,User-Password=0000").code,
        "Access-Reject"
    );
    server.cli(&["token", "unlock", &serial], None);
    assert_eq!(
        text(&peer.wait_for(1, Duration::from_secs(2))),
        format!("{serial} unlocked")
    );

    // Locked again; this time clear_after lifts the lock at the next login.
    assert_eq!(
        radclient::auth(server.address(), "User-Name=alice,User-Password=0000").code,
        "Access-Reject"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    assert_eq!(
        text(&peer.wait_for(2, Duration::from_secs(2))),
        format!("{serial} unlocked")
    );

    server.cli(&["token", "delete", &serial], None);
    assert_eq!(
        text(&peer.wait_for(3, Duration::from_secs(2))),
        format!("{serial} deleted")
    );
}

#[test]
fn a_calling_station_id_of_control_characters_reaches_a_notification_filtered_and_capped() {
    use common::raw::{Client, access_request, random_authenticator, verified_reply};
    use otpgate::radius::packet::{attr, code};
    let peer = HttpPeer::start(Answer::default());
    let events = r#"[[event]]
on = "login_success"
gateway = "notify"
to = "+491609999999"
text = "{user} logged in from {client}."
"#;
    let (server, _) = Server::with_alice(&with_events(&peer, events));
    // The longest a Calling-Station-Id can be (253 octets), mostly terminal escapes and line
    // breaks, with a forged message in between.
    let station: String = "\u{1b}[2J\r\n\u{7}\u{9b}Your bank: call +49 555 0100!\t"
        .chars()
        .cycle()
        .take(230)
        .collect();
    assert!(station.len() <= 253, "{}", station.len());
    let client = Client::new(server.address());
    let authenticator = random_authenticator();
    let request = access_request(
        1,
        authenticator,
        "alice",
        PIN,
        true,
        &[(attr::CALLING_STATION_ID, station.as_bytes())],
    );
    let reply = client.exchange(&request).expect("a challenge");
    let challenge = verified_reply(&reply, &authenticator);
    assert_eq!(challenge.code, code::ACCESS_CHALLENGE);
    let state = challenge.first(attr::STATE).expect("State").to_vec();
    let otp = common::otp_of(&server.wait_for_sms(1).1);
    let authenticator = random_authenticator();
    let request = access_request(
        2,
        authenticator,
        "alice",
        &otp,
        true,
        &[
            (attr::STATE, &state),
            (attr::CALLING_STATION_ID, station.as_bytes()),
        ],
    );
    let reply = client.exchange(&request).expect("an accept");
    assert_eq!(
        verified_reply(&reply, &authenticator).code,
        code::ACCESS_ACCEPT
    );

    let sent = text(&peer.wait_for(1, Duration::from_secs(5)));
    let client_part = sent
        .strip_prefix("alice logged in from ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert!(!sent.contains(char::is_control), "{sent:?}");
    assert_eq!(client_part.chars().count(), 64, "{client_part:?}");
    let expected: String = station
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    assert_eq!(client_part, expected);
}
