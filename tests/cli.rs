//! The admin CLI and start-up checks through the built binary: clear one-line errors naming
//! file and key, enrollment, listing as JSON, PIN changes, and the files `init` creates.

mod common;

use common::{Options, PHONE, PIN, Server, cli, cli_ok, radclient};

#[test]
fn a_stray_key_stops_start_up_naming_file_and_key() {
    let (_dir, config) = Server::prepare(&Options::default());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[lockout]", "[lockout]\nmax_failurs = 3");
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = cli(&config, &["serve"], None);
    assert!(!ok);
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("max_failurs"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn a_short_secret_and_an_unknown_gateway_are_reported_together() {
    let (_dir, config) = Server::prepare(&Options {
        chain: vec!["nowhere".into()],
        ..Options::default()
    });
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(common::SECRET, "too-short");
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = cli(&config, &["check-config"], None);
    assert!(!ok);
    assert!(
        err.contains("client[0] (test-nas).secret: shorter than 16 characters"),
        "{err}"
    );
    assert!(
        err.contains("sms.default_chain: no gateway named 'nowhere'"),
        "{err}"
    );
}

#[test]
fn the_example_config_checks_out() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml");
    let (ok, out, err) = cli(std::path::Path::new(example), &["check-config"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains(": ok (1 client(s), 2 gateway(s), listening on 127.0.0.1:1812)"),
        "{out}"
    );
}

#[test]
fn init_creates_the_database_and_a_private_key_file() {
    let (dir, config) = Server::prepare(&Options::default());
    cli_ok(&config, &["init"], None);
    let key = dir.path().join("otpgate.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
    assert!(dir.path().join("otpgate.db").exists());
}

#[test]
fn users_and_tokens_are_managed_and_listed_as_json() {
    let (_dir, config) = Server::prepare(&Options::default());
    cli_ok(
        &config,
        &["user", "add", "alice", "--phone", "0170 1234567"],
        None,
    );
    let (ok, _, err) = cli(
        &config,
        &["user", "add", "alice", "--phone", "+491701234567"],
        None,
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cli(
        &config,
        &["user", "add", "bob", "--phone", "not a phone"],
        None,
    );
    assert!(!ok && err.contains("not a phone number"), "{err}");
    let (ok, _, err) = cli(
        &config,
        &["token", "add", "nobody", "--pin-stdin"],
        Some(PIN),
    );
    assert!(!ok && err.contains("no user named 'nobody'"), "{err}");
    let (ok, _, err) = cli(
        &config,
        &["token", "add", "alice", "--pin-stdin"],
        Some("12"),
    );
    assert!(!ok && err.contains("4 to 64 characters"), "{err}");

    let users: serde_json::Value =
        serde_json::from_str(&cli_ok(&config, &["user", "list", "--json"], None)).unwrap();
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(
        users[0]["phone"], "+491701234567",
        "national input stored as E.164"
    );

    let serial = cli_ok(
        &config,
        &["token", "add", "alice", "--otp-length", "8", "--pin-stdin"],
        Some(PIN),
    )
    .trim()
    .to_string();
    assert!(serial.starts_with("SMS") && serial.len() == 19, "{serial}");
    cli_ok(&config, &["token", "disable", &serial], None);
    let tokens: serde_json::Value = serde_json::from_str(&cli_ok(
        &config,
        &["token", "list", "--user", "alice", "--json"],
        None,
    ))
    .unwrap();
    assert_eq!(tokens[0]["serial"], serial.as_str());
    assert_eq!(tokens[0]["otp_length"], 8);
    assert_eq!(tokens[0]["disabled"], true);
    let table = cli_ok(&config, &["token", "list"], None);
    assert!(
        table.starts_with("SERIAL") && table.contains("disabled"),
        "{table}"
    );

    let (ok, _, err) = cli(&config, &["token", "enable", "SMSNOPE"], None);
    assert!(
        !ok && err.contains("no token with serial 'SMSNOPE'"),
        "{err}"
    );
    cli_ok(&config, &["token", "delete", &serial], None);
    assert_eq!(
        cli_ok(&config, &["token", "list", "--json"], None).trim(),
        "[]"
    );
    cli_ok(&config, &["user", "delete", "alice"], None);
    assert_eq!(
        cli_ok(&config, &["user", "list", "--json"], None).trim(),
        "[]"
    );
}

#[test]
fn a_pin_cannot_be_given_on_the_command_line() {
    let (_dir, config) = Server::prepare(&Options::default());
    cli_ok(
        &config,
        &["user", "add", "alice", "--phone", "+491701234567"],
        None,
    );
    let (ok, _, err) = cli(&config, &["token", "add", "alice", "--pin", "4711"], None);
    assert!(!ok, "{err}");
    // Without --pin-stdin and without a terminal the prompt fails with a hint.
    let (ok, _, err) = cli(&config, &["token", "add", "alice"], None);
    assert!(!ok && err.contains("--pin-stdin"), "{err}");
}

#[test]
fn set_pin_replaces_the_old_pin() {
    let (server, serial) = Server::with_alice(&Options::default());
    server.cli(&["token", "set-pin", &serial, "--pin-stdin"], Some("2468"));
    let old = server.login(PIN);
    assert_eq!(old.code, "Access-Reject");
    let new = radclient::auth(server.address(), "User-Name=alice,User-Password=2468");
    assert_eq!(new.code, "Access-Challenge");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_decision_fields() {
    let (server, _) = Server::with_alice(&Options {
        log_format: "json",
        ..Options::default()
    });
    assert_eq!(
        radclient::auth(server.address(), "User-Name=alice,User-Password=0000").code,
        "Access-Reject"
    );
    assert!(server.wait_for_log("\"outcome\":\"reject\"", std::time::Duration::from_secs(2)));
    let log = server.log();
    let decision = log
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .find(|entry| entry["message"] == "decision")
        .expect("a decision line");
    assert_eq!(decision["user"], "alice");
    assert_eq!(decision["reason"], "wrong PIN");
    assert_eq!(decision["client"], "test-nas");
}

#[test]
fn check_config_warns_about_ucs2_and_multi_part_texts() {
    let (_dir, config) = Server::prepare(&Options::default());
    let long = "Ihr Anmeldecode lautet {otp}. ".repeat(6);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "sms_text = \"Your code: {otp}\"",
        &format!("sms_text = \"Код: {{otp}} {long}\""),
    );
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = cli(&config, &["check-config"], None);
    assert!(ok, "{err}");
    assert!(err.contains("challenge.sms_text: needs UCS-2"), "{err}");
    assert!(
        err.contains("challenge.sms_text: needs 3 SMS segments"),
        "{err}"
    );
}

#[test]
fn users_and_tokens_import_from_csv_in_one_transaction() {
    let (server, _) = Server::with_alice(&Options {
        extra: "[group.staff]\nattributes = []\n".into(),
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    std::fs::write(
        &users,
        "name,phone,group\nbob,+491701111111,staff\ncarol,0170 2222222,\n",
    )
    .unwrap();
    server.cli(&["user", "import", users.to_str().unwrap()], None);
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "user,pin,otp_length\nbob,2468,8\ncarol,1357,\n").unwrap();
    assert!(
        server
            .cli(&["token", "import", tokens.to_str().unwrap()], None)
            .contains("imported 2 token(s)")
    );
    let listed: serde_json::Value =
        serde_json::from_str(&server.cli(&["user", "list", "--json"], None)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(
        listed[2]["phone"], "+491702222222",
        "national numbers with the default region"
    );
    assert_eq!(listed[1]["group"], "staff");
    // The imported PINs work.
    let reply = radclient::auth(server.address(), "User-Name=bob,User-Password=2468");
    assert_eq!(reply.code, "Access-Challenge");

    // One bad row rejects the whole file, naming the line.
    std::fs::write(&tokens, "user,pin\ndave,1111\nbob,12\n").unwrap();
    let (ok, _, err) = cli(
        &server.config,
        &["token", "import", tokens.to_str().unwrap()],
        None,
    );
    assert!(
        !ok && err.contains("tokens.csv:3: a PIN must have 4 to 64 characters"),
        "{err}"
    );
    std::fs::write(&tokens, "user,pin\nnobody,1111\n").unwrap();
    let (ok, _, err) = cli(
        &server.config,
        &["token", "import", tokens.to_str().unwrap()],
        None,
    );
    assert!(!ok && err.contains("or its user is missing"), "{err}");
    let count =
        serde_json::from_str::<serde_json::Value>(&server.cli(&["token", "list", "--json"], None))
            .unwrap();
    assert_eq!(
        count.as_array().unwrap().len(),
        3,
        "nothing of a failed import is kept"
    );
}

#[test]
fn user_add_refuses_premium_rate_and_foreign_numbers_naming_the_rule() {
    // The test config has [sms] default_region = "DE" and no countries in [limits]: DE, and
    // premium_rate, shared_cost and toll_free blocked.
    let (_dir, config) = Server::prepare(&Options::default());
    let (ok, _, err) = cli(
        &config,
        &["user", "add", "alice", "--phone", "+49 900 1234567"],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains(
            "+49********67 is a premium_rate number, and [limits] blocked_number_types refuses those"
        ),
        "{err}"
    );
    assert!(!err.contains("9001234567"), "the number is masked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let (ok, _, err) = cli(
        &config,
        &["user", "add", "pierre", "--phone", "+33 6 12 34 56 78"],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains(
            "+33*******78 is a number in FR, and [limits] allowed_countries does not list FR"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    cli_ok(
        &config,
        &["user", "add", "alice", "--phone", "0170 1234567"],
        None,
    );
    let users: serde_json::Value =
        serde_json::from_str(&cli_ok(&config, &["user", "list", "--json"], None)).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    assert_eq!(users[0]["phone"], "+491701234567");
}

#[test]
fn token_add_and_the_imports_refuse_numbers_the_limits_refuse() {
    let (_dir, config) = Server::prepare(&Options::default());
    cli_ok(&config, &["user", "add", "alice", "--phone", PHONE], None);
    let (ok, _, err) = cli(
        &config,
        &[
            "token",
            "add",
            "alice",
            "--phone",
            "0800 1234567",
            "--pin-stdin",
        ],
        Some(PIN),
    );
    assert!(!ok);
    assert!(
        err.contains("is a toll_free number, and [limits] blocked_number_types refuses those"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    std::fs::write(
        &users,
        "name,phone\nbob,+491701111111\ncarol,01805 123456\n",
    )
    .unwrap();
    let (ok, _, err) = cli(&config, &["user", "import", users.to_str().unwrap()], None);
    assert!(!ok);
    assert!(
        err.contains(
            "users.csv:3: +49********56 is a shared_cost number, and [limits] blocked_number_types"
        ),
        "{err}"
    );
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "user,pin,phone\nalice,2468,+33612345678\n").unwrap();
    let (ok, _, err) = cli(
        &config,
        &["token", "import", tokens.to_str().unwrap()],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains(
            "tokens.csv:2: +33*******78 is a number in FR, and [limits] allowed_countries"
        ),
        "{err}"
    );
    assert_eq!(
        cli_ok(&config, &["token", "list", "--json"], None).trim(),
        "[]",
        "no token was added"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&cli_ok(&config, &["user", "list", "--json"], None)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "bob was not imported");
}

#[test]
fn the_configs_limits_decide_which_numbers_are_enrolled() {
    let (_dir, config) = Server::prepare(&Options {
        limits_extra: "allowed_countries = [\"DE\", \"fr\"]\nblocked_number_types = []\n".into(),
        ..Options::default()
    });
    cli_ok(
        &config,
        &["user", "add", "pierre", "--phone", "+33 6 12 34 56 78"],
        None,
    );
    cli_ok(
        &config,
        &["user", "add", "hotline", "--phone", "+49 900 1234567"],
        None,
    );
    let (ok, _, err) = cli(
        &config,
        &["user", "add", "ann", "--phone", "+43 664 1234567"],
        None,
    );
    assert!(
        !ok && err.contains("allowed_countries does not list AT"),
        "{err}"
    );
}

#[test]
fn check_config_reports_the_effective_limits() {
    let (_dir, config) = Server::prepare(&Options::default());
    let out = cli_ok(&config, &["check-config"], None);
    assert!(
        out.contains(
            "limits: resend_interval 30s; per token 20/hour 50/day; per phone 30/hour; \
             per client off/minute; global off/minute off/day; countries DE; \
             blocked premium_rate, shared_cost, toll_free; pin_queue 16 per core"
        ),
        "{out}"
    );
    let (_dir, config) = Server::prepare(&Options {
        resend_interval: "1m 30s",
        limits_extra: "per_token_day = 0\n\
                per_client_minute = 60\nglobal_minute = 300\nglobal_day = 20000\n\
                allowed_countries = []\nblocked_number_types = []\npin_queue = 4\n"
            .into(),
        ..Options::default()
    });
    let out = cli_ok(&config, &["check-config"], None);
    assert!(
        out.contains(
            "limits: resend_interval 1m 30s; per token 20/hour off/day; per phone 30/hour; \
             per client 60/minute; global 300/minute 20000/day; countries all; \
             blocked none; pin_queue 4 per core"
        ),
        "{out}"
    );
}

#[test]
fn serve_purges_audit_rows_older_than_audit_keep() {
    use otpgate::store::{AuditRow, SqliteStore, Store};
    let (dir, config) = Server::prepare(&Options::default());
    common::enroll_alice(&config);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day = 24 * 3600 * 1000;
    {
        // The default keep is 90 days: one row on each side of it.
        let store = SqliteStore::open(&dir.path().join("otpgate.db")).unwrap();
        for (user, age) in [("expired", 91 * day), ("kept", 89 * day)] {
            store
                .append_audit(&AuditRow {
                    time: now - age,
                    client: "test-nas".into(),
                    user: user.into(),
                    outcome: "reject".into(),
                    reason: "wrong PIN".into(),
                    ..AuditRow::default()
                })
                .unwrap();
        }
    }
    let server = Server::start(dir, config);
    assert!(server.wait_for_log(
        "audit rows older than [audit] keep deleted",
        std::time::Duration::from_secs(5)
    ));
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("audit rows older than"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("purged=1"), "{line}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["audit", "--json"], None)).unwrap();
    let users: Vec<&str> = rows.iter().filter_map(|r| r["user"].as_str()).collect();
    assert_eq!(users, ["kept"]);
}
