//! Reply attributes by name (dictionaries issue): per client, per group and per user,
//! checked in radclient's -x output of the Access-Accept, and on the wire with tshark.

mod common;

use std::path::Path;

use common::radclient::{self, Reply};
use common::{Options, PIN, SECRET, Server, cli, otp_of};

const GROUP: &str = r#"[group.staff]
attributes = ["Framed-IP-Address=10.11.12.13", "Idle-Timeout=600", "Tunnel-Type:1=VLAN", "Tunnel-Medium-Type:1=IEEE-802", "Tunnel-Private-Group-Id:1=42"]
"#;

fn options() -> Options {
    Options {
        extra: GROUP.into(),
        client_attributes: vec![
            "Service-Type=Framed-User".into(),
            "Cisco-AVPair=shell:priv-lvl=15".into(),
        ],
        return_serial: true,
        ..Options::default()
    }
}

/// A server with alice in group staff and her own attributes.
fn server() -> (Server, String) {
    let (dir, config) = Server::prepare(&options());
    common::cli_ok(
        &config,
        &[
            "user",
            "add",
            "alice",
            "--phone",
            common::PHONE,
            "--group",
            "staff",
        ],
        None,
    );
    common::cli_ok(
        &config,
        &[
            "user",
            "set-attr",
            "alice",
            "Filter-Id=vpn-staff",
            "Fortinet-Group-Name=admins",
        ],
        None,
    );
    let serial = common::cli_ok(
        &config,
        &["token", "add", "alice", "--pin-stdin"],
        Some(PIN),
    )
    .trim()
    .to_string();
    (Server::start(dir, config), serial)
}

/// The whole flow with radclient, reading its dictionaries from `dictionary_dir` if given.
fn login(server: &Server, dictionary_dir: Option<&Path>) -> Reply {
    let before = server.spooled();
    let challenge = server.login(PIN);
    let otp = otp_of(&server.wait_for_sms(before + 1).1);
    let attributes = format!(
        "User-Name=alice,User-Password={otp},State={},Message-Authenticator=0x00",
        challenge.state()
    );
    radclient::send_with_dictionary(
        server.address(),
        "auth",
        SECRET,
        &attributes,
        3,
        dictionary_dir,
    )
}

#[test]
fn the_accept_carries_client_group_and_user_attributes_by_name() {
    let (server, serial) = server();
    let accept = login(&server, None);
    assert_eq!(accept.code, "Access-Accept", "{}", accept.output);
    let expected = [
        ("Service-Type", "Framed-User"),
        ("Cisco-AVPair", "shell:priv-lvl=15"),
        ("Framed-IP-Address", "10.11.12.13"),
        ("Idle-Timeout", "600"),
        ("Tunnel-Type:1", "VLAN"),
        ("Tunnel-Medium-Type:1", "IEEE-802"),
        ("Tunnel-Private-Group-Id:1", "42"),
        ("Filter-Id", "vpn-staff"),
        ("Fortinet-Group-Name", "admins"),
    ];
    for (name, value) in expected {
        assert_eq!(accept.get(name), Some(value), "{name} in {}", accept.output);
    }
    // radclient's own dictionary does not know otpgate's vendor: the serial is there unnamed.
    assert!(
        accept.output.contains(&hex::encode(serial.as_bytes())),
        "{}",
        accept.output
    );
    // The challenge carried none of them.
    let challenge = server.login(PIN);
    let names: Vec<&str> = challenge
        .attributes
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Message-Authenticator",
            "State",
            "Reply-Message",
            "Session-Timeout"
        ]
    );
}

#[test]
fn radclient_names_the_serial_with_the_shipped_otpgate_dictionary() {
    let (server, serial) = server();
    let scratch = tempfile::tempdir().unwrap();
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dictionaries/dictionary.otpgate"
    );
    std::fs::write(
        scratch.path().join("dictionary"),
        format!("$INCLUDE /usr/share/freeradius/dictionary\n$INCLUDE {shipped}\n"),
    )
    .unwrap();
    let accept = login(&server, Some(scratch.path()));
    assert!(
        accept
            .output
            .contains(&format!("Otpgate-Serial = \"{serial}\"")),
        "{}",
        accept.output
    );
}

#[test]
fn user_show_and_set_attr_validate_against_the_dictionary() {
    let (_dir, config) = Server::prepare(&options());
    common::cli_ok(
        &config,
        &[
            "user",
            "add",
            "bob",
            "--phone",
            common::PHONE,
            "--group",
            "staff",
        ],
        None,
    );
    let (ok, _, err) = cli(
        &config,
        &[
            "user",
            "add",
            "carol",
            "--phone",
            common::PHONE,
            "--group",
            "nope",
        ],
        None,
    );
    assert!(!ok && err.contains("no group named 'nope'"), "{err}");
    let (ok, _, err) = cli(
        &config,
        &["user", "set-attr", "bob", "Framed-IP-Address=10.0.0.999"],
        None,
    );
    assert!(!ok && err.contains("not an IPv4 address"), "{err}");
    let (ok, _, err) = cli(&config, &["user", "set-attr", "bob", "No-Such=1"], None);
    assert!(!ok && err.contains("unknown attribute 'No-Such'"), "{err}");
    common::cli_ok(
        &config,
        &[
            "user",
            "set-attr",
            "bob",
            "Session-Timeout=3600",
            "Class=0x0a0b",
        ],
        None,
    );
    let shown: serde_json::Value = serde_json::from_str(&common::cli_ok(
        &config,
        &["user", "show", "bob", "--json"],
        None,
    ))
    .unwrap();
    assert_eq!(shown["group"], "staff");
    assert_eq!(
        shown["attributes"],
        serde_json::json!(["Session-Timeout=3600", "Class=0x0a0b"])
    );
    common::cli_ok(&config, &["user", "set-attr", "bob", "--clear"], None);
    let text = common::cli_ok(&config, &["user", "show", "bob"], None);
    assert!(
        text.contains("group       staff") && text.contains("attributes  -"),
        "{text}"
    );
}

#[test]
fn bad_attributes_and_broken_dictionaries_stop_start_up_with_file_and_line() {
    let mut bad = options();
    bad.client_attributes = vec![format!("Filter-Id={}", "x".repeat(300))];
    let (_dir, config) = Server::prepare(&bad);
    let (ok, _, err) = cli(&config, &["check-config"], None);
    assert!(
        !ok && err
            .contains("client[0] (test-nas).accept_attributes: Filter-Id: the value is longer"),
        "{err}"
    );

    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(
        scratch.path().join("dictionary"),
        "ATTRIBUTE\tGood\t1\tstring\n$INCLUDE dictionary.broken\n",
    )
    .unwrap();
    std::fs::write(
        scratch.path().join("dictionary.broken"),
        "# a vendor file\nATTRIBUTE\tBroken\t300\tstring\n",
    )
    .unwrap();
    let (_dir, config) = Server::prepare(&Options::default());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[server]\n",
        &format!(
            "[server]\ndictionaries = \"{}\"\n",
            scratch.path().display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = cli(&config, &["serve"], None);
    assert!(!ok);
    let expected = format!(
        "server.dictionaries: {}/dictionary.broken:2: attribute number '300' is not 1-255",
        scratch.path().display()
    );
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn the_audit_shows_request_attributes_by_name_with_the_password_redacted() {
    let (server, _) = server();
    let reply = radclient::auth(
        server.address(),
        "User-Name=alice,User-Password=0000,NAS-Port-Type=Virtual,Calling-Station-Id=203.0.113.9,Cisco-AVPair=\"client=anyconnect\"",
    );
    assert_eq!(reply.code, "Access-Reject");
    let text = server.cli(&["audit", "--attributes", "--limit", "1"], None);
    for expected in [
        "User-Name = \"alice\"",
        "User-Password = [redacted]",
        "NAS-Port-Type = Virtual",
        "Calling-Station-Id = \"203.0.113.9\"",
        "Cisco-AVPair = \"client=anyconnect\"",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
    assert!(!text.contains("0000"));
    assert!(
        server.log().contains("User-Password = [redacted]"),
        "debug log by name"
    );
}

#[test]
fn tshark_decodes_the_accept_with_vendor_and_tagged_attributes_cleanly() {
    let (server, _) = server();
    let text = common::background::capture_radius(server.address().port(), SECRET, || {
        assert_eq!(login(&server, None).code, "Access-Accept");
    });
    common::background::assert_clean(&text);
    let accept = text
        .split("Code: Access-Accept")
        .nth(1)
        .expect("an Access-Accept in the capture");
    for expected in [
        "Cisco-AVPair",
        "Tunnel-Type",
        "Tunnel-Private-Group-Id",
        "Fortinet",
        "Framed-IP-Address: 10.11.12.13",
    ] {
        assert!(
            accept.contains(expected),
            "{expected} not decoded:\n{accept}"
        );
    }
    assert!(
        accept.contains("(32473)"),
        "the otpgate vendor's VSA: {accept}"
    );
}
