//! Users from a real OpenLDAP (tests/common/slapd.rs) with `first_factor = "directory"`:
//! the directory password, then the SMS code to the directory's mobile; groups mapped to
//! reply attributes; auto_enroll; failures counted and locking; disabled users and users
//! without a phone; hostile names; failover, a stopped server, StartTLS, LDAPS and a
//! certificate from another CA; and the time of a reject.

mod common;

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use common::raw::{Client, access_request, random_authenticator};
use common::slapd::{ALICE_MOBILE, ALICE_PASSWORD, Pki, SERVICE_DN, STAFF_DN, SUFFIX, Slapd};
use common::timing::interleaved_medians;
use common::{Options, Server, otp_of, radclient};

/// The `[directory]` table for `urls`, trusting `ca`, with `extra` keys; plus the group
/// mapping and a spool gateway for notifications.
/// The timing test runs alone (write), the others side by side (read): medians taken beside
/// other tests' slapd and otpgate processes would measure the neighbours.
static TIMING: RwLock<()> = RwLock::new(());

fn directory_toml(dir: &Path, urls: &[String], ca: &Path, extra: &str) -> String {
    let password = Slapd::service_password_file(dir);
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
[directory]
urls = [{urls}]
ca_file = "{ca}"
bind_dn = "{SERVICE_DN}"
bind_password_file = "{password}"
base_dn = "{SUFFIX}"
disabled_filter = "(employeeType=disabled)"
auto_enroll = true
timeout = "2s"
cache = "0s"
breaker_backoff = "1s"
{extra}

[group.staff]
attributes = ["Idle-Timeout=600"]
directory_group = "{STAFF_DN}"

[gateway.notify]
type = "spool"
directory = "{dir}/notify"

[[event]]
on = "token_added"
gateway = "notify"
to = "+491609999999"
text = "token {{serial}} added for {{user}}"
"#,
        urls = urls.join(", "),
        ca = ca.display(),
        password = password.display(),
        dir = dir.display(),
    )
}

fn options(toml: String) -> Options {
    Options {
        client_extra: "first_factor = \"directory\"".into(),
        extra: toml,
        max_failures: 3,
        ..Options::default()
    }
}

/// A server whose directory is `slapd` over StartTLS, with `extra` `[directory]` keys.
/// Runs the calling test beside the others: only the timing test runs alone.
fn beside_others() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|p| p.into_inner())
}

/// A slapd of its own and a server on it with the default directory config, beside the
/// other tests.
fn on_a_slapd() -> (RwLockReadGuard<'static, ()>, Slapd, Server) {
    let timing = beside_others();
    let slapd = Slapd::start();
    let server = start(&slapd, "", None);
    (timing, slapd, server)
}

fn start(slapd: &Slapd, extra: &str, urls: Option<Vec<String>>) -> Server {
    let keys = tempfile::tempdir().unwrap();
    let urls = urls.unwrap_or_else(|| vec![slapd.plain_url()]);
    let toml = directory_toml(keys.path(), &urls, &slapd.pki.ca, extra);
    let (dir, config) = Server::prepare(&options(toml));
    // The password file lives beside the config from here on.
    let moved = dir.path().join("ldap-password");
    std::fs::copy(keys.path().join("ldap-password"), &moved).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &keys.path().display().to_string(),
        &dir.path().display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    Server::start(dir, config)
}

fn login(server: &Server, user: &str, password: &str) -> radclient::Reply {
    radclient::auth(
        server.address(),
        &format!("User-Name={user},User-Password={password}"),
    )
}

/// The audit rows, newest first, once at least `at_least` are there.
fn audit(server: &Server, at_least: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json = server.cli(&["audit", "--json", "--limit", "1000"], None);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        if rows.len() >= at_least || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn last_reason(server: &Server, rows: usize) -> String {
    audit(server, rows)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn directory_password_then_code_accepts_with_the_mapped_group_and_enrolls_at_first_login() {
    let (_timing, _slapd, server) = on_a_slapd();
    // Before the first login: the directory's view only.
    let shown = server.cli(&["user", "show", "alice"], None);
    assert!(shown.contains("uid=alice,ou=people"), "{shown}");
    assert!(
        shown.contains("vpn-staff") || shown.contains("staff"),
        "{shown}"
    );
    assert!(
        !shown.contains(ALICE_MOBILE),
        "the phone is masked: {shown}"
    );

    let challenge = login(&server, "alice", ALICE_PASSWORD);
    assert_eq!(challenge.code, "Access-Challenge", "{}", server.log());
    let (to, text) = server.wait_for_sms(1);
    assert!(
        to.contains(&ALICE_MOBILE[1..]),
        "SMS to the directory's mobile: {to}"
    );
    let state = challenge.get("State").unwrap().to_string();
    let accept = server.answer(&state, &otp_of(&text));
    assert_eq!(accept.code, "Access-Accept");
    assert_eq!(
        accept.get("Idle-Timeout"),
        Some("600"),
        "vpn-staff -> [group.staff]"
    );

    // The token made at the first login: CLI, token_added, no PIN.
    let tokens: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["token", "list", "--user", "alice", "--json"], None))
            .unwrap();
    assert_eq!(tokens.len(), 1, "one token made by auto_enroll");
    let serial = tokens[0]["serial"].as_str().unwrap().to_string();
    let notify = server.dir.path().join("notify");
    let deadline = Instant::now() + Duration::from_secs(10);
    let announced = loop {
        let texts: Vec<String> = std::fs::read_dir(&notify)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        if !texts.is_empty() || Instant::now() > deadline {
            break texts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        announced
            .iter()
            .any(|t| t.contains(&format!("token {serial} added for alice"))),
        "token_added: {announced:?}"
    );
    let shown = server.cli(&["user", "show", "alice"], None);
    assert!(
        shown.contains(&serial) && shown.contains("uid=alice"),
        "{shown}"
    );

    // Password + OTP in one step, against a fresh challenge.
    let second = login(&server, "alice", ALICE_PASSWORD);
    assert_eq!(second.code, "Access-Challenge");
    let (_, text) = server.wait_for_sms(2);
    let one_shot = login(
        &server,
        "alice",
        &format!("{ALICE_PASSWORD}{}", otp_of(&text)),
    );
    assert_eq!(one_shot.code, "Access-Accept", "{}", server.log());
    assert_eq!(one_shot.get("Idle-Timeout"), Some("600"));
    // A name in other case is the same user: no second token.
    let upper = login(&server, "ALICE", ALICE_PASSWORD);
    assert_eq!(upper.code, "Access-Challenge");
    let tokens = server.cli(&["token", "list", "--json"], None);
    assert_eq!(tokens.matches("SMS").count(), 1, "{tokens}");

    // bob is in no mapped group: no group attributes.
    let bob = login(&server, "bob", "bob-secret");
    assert_eq!(bob.code, "Access-Challenge");
    let (_, text) = server.wait_for_sms(4);
    let accept = radclient::auth(
        server.address(),
        &format!(
            "User-Name=bob,User-Password={},State={}",
            otp_of(&text),
            bob.get("State").unwrap()
        ),
    );
    assert_eq!(accept.code, "Access-Accept");
    assert_eq!(accept.get("Idle-Timeout"), None);
}

#[test]
fn a_mobile_changed_in_the_directory_takes_effect_at_the_next_login() {
    let (_timing, slapd, server) = on_a_slapd();
    assert_eq!(
        login(&server, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    let (to, _) = server.wait_for_sms(1);
    assert!(to.contains("491701111111"), "{to}");
    slapd.modify(
        "modify",
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: mobile\nmobile: +491705550000\n",
    );
    // A new challenge (the first one is still open and would be re-sent to its number).
    let serial = server.cli(&["token", "list", "--user", "alice"], None);
    let serial = serial
        .split_whitespace()
        .find(|w| w.starts_with("SMS"))
        .unwrap();
    server.cli(&["token", "disable", serial], None);
    server.cli(&["token", "enable", serial], None);
    assert_eq!(
        login(&server, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    let (to, _) = server.wait_for_sms(2);
    assert!(to.contains("491705550000"), "the new number: {to}");
}

#[test]
fn wrong_directory_passwords_count_and_lock_the_token_and_then_no_bind_is_made() {
    let (_timing, slapd, server) = on_a_slapd();
    assert_eq!(
        login(&server, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    for n in 1..=3 {
        let reply = login(&server, "alice", "wrong-password");
        assert_eq!(reply.code, "Access-Reject");
        assert_eq!(reply.get("Reply-Message"), Some("Authentication failed."));
        assert_eq!(last_reason(&server, n + 1), "wrong directory password");
    }
    // The failures are settled just after each reply.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = server.cli(&["token", "list", "--user", "alice", "--json"], None);
        let tokens: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        if tokens[0]["locked"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "locked after max_failures = 3");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.wait_for_log("token_locked", Duration::from_secs(5)));
    let binds_before = slapd.log().matches("BIND dn=\"uid=alice").count();
    let reply = login(&server, "alice", ALICE_PASSWORD);
    assert_eq!(reply.code, "Access-Reject");
    assert_eq!(last_reason(&server, 5), "token locked");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        slapd.log().matches("BIND dn=\"uid=alice").count(),
        binds_before,
        "a locked token's user gets no bind"
    );
}

/// 200 wrong directory passwords at once: exactly max_failures (3) of them reach a bind as
/// alice, and the token locks; the rest are refused before the directory sees them.
#[test]
fn a_burst_of_wrong_directory_passwords_binds_max_failures_times_and_locks() {
    let (_timing, slapd, server) = on_a_slapd();
    assert_eq!(
        login(&server, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    let binds = || slapd.log().matches("BIND dn=\"uid=alice").count();
    std::thread::sleep(Duration::from_millis(300));
    let before = binds();
    let replies = common::on_threads(20, |_| {
        (0..10)
            .map(|_| login(&server, "alice", "wrong-password").code)
            .collect()
    });
    assert_eq!(replies.len(), 200);
    assert!(replies.iter().all(|c| c == "Access-Reject"), "{replies:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        binds() - before,
        3,
        "binds as alice: max_failures of 200 tries"
    );
    let listed = server.cli(&["token", "list", "--user", "alice", "--json"], None);
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(tokens[0]["locked"], true, "{listed}");
    assert_eq!(tokens[0]["fail_count"], 3, "{listed}");
}

#[test]
fn disabled_users_users_without_phone_and_ambiguous_names_are_rejected_with_their_reason() {
    let (_timing, _slapd, server) = on_a_slapd();
    let cases = [
        ("dave", "dave-secret", "directory user disabled"),
        (
            "nophone",
            "nophone-secret",
            "directory password right, the directory has no phone for the user",
        ),
        (
            "twin",
            "twin-secret",
            "several directory entries match the user name",
        ),
        // The subtree holds a referral object: a name not found here may be there.
        (
            "mallory",
            "whatever",
            "the directory answered with a referral",
        ),
    ];
    for (n, (user, password, reason)) in cases.iter().enumerate() {
        let reply = login(&server, user, password);
        assert_eq!(reply.code, "Access-Reject", "{user}");
        assert_eq!(&last_reason(&server, n + 1), reason, "{user}");
    }
    // radclient sends no empty User-Password: the raw client does.
    let client = Client::new(server.address());
    let empty = access_request(7, random_authenticator(), "bob", "", true, &[]);
    assert_eq!(client.exchange(&empty).expect("a reply")[0], 3);
    assert_eq!(
        last_reason(&server, cases.len() + 1),
        "empty password (never sent to the directory)"
    );
    assert_eq!(server.spooled(), 0, "no SMS went out");
}

#[test]
fn hostile_user_names_match_nobody() {
    let (_timing, slapd, server) = on_a_slapd();
    let client = Client::new(server.address());
    let before = slapd.search_results().len();
    let names = [
        "*",
        "*)(uid=*",
        "alice)(|(uid=*",
        "alice\0",
        "\\2a",
        "(uid=alice)",
    ];
    for (i, name) in names.iter().enumerate() {
        let request = access_request(
            i as u8,
            random_authenticator(),
            name,
            ALICE_PASSWORD,
            true,
            &[],
        );
        let reply = client.exchange(&request).expect("a reply");
        assert_eq!(reply[0], 3, "{name:?}: Access-Reject");
    }
    // An empty password never reaches a bind, even for a real user.
    let request = access_request(99, random_authenticator(), "alice", "", true, &[]);
    assert_eq!(client.exchange(&request).expect("a reply")[0], 3);
    std::thread::sleep(Duration::from_millis(300));
    let results = slapd.search_results();
    let searched = &results[before..];
    assert!(!searched.is_empty(), "the names were searched for");
    assert!(
        searched.iter().all(|&n| n == 0),
        "no search matched anyone: {searched:?}"
    );
    assert!(server.spooled() == 0);
    assert!(
        !slapd.log().contains("BIND dn=\"uid=alice"),
        "no bind as alice was made"
    );
}

#[test]
fn a_dead_first_url_is_skipped_by_its_breaker_and_a_stopped_directory_rejects_in_time() {
    let _timing = beside_others();
    let mut slapd = Slapd::start();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let urls = vec![format!("ldap://127.0.0.1:{closed}"), slapd.plain_url()];
    let server = start(&slapd, "", Some(urls));
    assert_eq!(
        login(&server, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    assert!(
        server.wait_for_log(
            "directory server skipped until its back-off ends",
            Duration::from_secs(5)
        ),
        "the dead URL's breaker opened"
    );
    let skipped = server
        .log()
        .matches("skipped until its back-off ends")
        .count();
    assert_eq!(login(&server, "bob", "bob-secret").code, "Access-Challenge");
    assert_eq!(
        server
            .log()
            .matches("skipped until its back-off ends")
            .count(),
        skipped,
        "the second login did not try the dead URL again"
    );

    slapd.stop();
    let started = Instant::now();
    let reply = login(&server, "alice", ALICE_PASSWORD);
    assert_eq!(reply.code, "Access-Reject");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "within timeout (2s)"
    );
    let reason = last_reason(&server, 3);
    assert!(reason.starts_with("directory unavailable"), "{reason}");

    slapd.start_again();
    // The breakers let a probe through after breaker_backoff (1s).
    std::thread::sleep(Duration::from_millis(1200));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = login(&server, "bob", "bob-secret");
        if reply.code == "Access-Challenge" {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn starttls_and_ldaps_work_with_the_test_ca_and_another_ca_is_refused() {
    let _timing = beside_others();
    let slapd = Slapd::start();
    let ldaps = start(&slapd, "", Some(vec![slapd.ldaps_url()]));
    assert_eq!(
        login(&ldaps, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    drop(ldaps);
    let starttls = start(&slapd, "starttls = true", Some(vec![slapd.plain_url()]));
    assert_eq!(
        login(&starttls, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    drop(starttls);

    // A CA that did not sign slapd's certificate.
    let other = tempfile::tempdir().unwrap();
    let pki = Pki::generate(other.path(), "other");
    for url in [slapd.ldaps_url(), slapd.plain_url()] {
        let keys = tempfile::tempdir().unwrap();
        let toml = directory_toml(keys.path(), std::slice::from_ref(&url), &pki.ca, "");
        let (dir, config) = Server::prepare(&options(toml));
        let server = Server::start(dir, config);
        let reply = login(&server, "alice", ALICE_PASSWORD);
        assert_eq!(reply.code, "Access-Reject", "{url}");
        let reason = last_reason(&server, 1);
        assert!(
            reason.starts_with("directory unavailable") && reason.contains("not trusted"),
            "{url}: a clear error: {reason}"
        );
        assert_eq!(server.spooled(), 0);
    }
}

#[test]
fn plain_ldap_without_starttls_is_refused_at_start_up() {
    let _timing = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let toml = directory_toml(
        dir.path(),
        &["ldap://127.0.0.1:389".to_string()],
        &dir.path().join("ldap-password"),
        "starttls = false",
    );
    let (_dir, config) = Server::prepare(&options(toml));
    let (ok, _, err) = common::cli(&config, &["check-config"], None);
    assert!(!ok);
    assert!(
        err.contains("directory.urls[0]") && err.contains("in clear"),
        "{err}"
    );
}

#[test]
fn an_unknown_directory_user_and_a_wrong_password_take_the_same_time() {
    let _timing = TIMING.write().unwrap_or_else(|p| p.into_inner());
    let slapd = Slapd::start();
    // The lockout out of reach, the cache on as in production.
    let keys = tempfile::tempdir().unwrap();
    let toml = directory_toml(keys.path(), &[slapd.plain_url()], &slapd.pki.ca, "")
        .replace("cache = \"0s\"", "cache = \"60s\"");
    let (dir, config) = Server::prepare(&Options {
        max_failures: 1000,
        ..options(toml)
    });
    let server = Server::start(dir, config);
    // alice has a token (so failures are claimed and settled, as in production).
    assert_eq!(
        login(&server, "alice", ALICE_PASSWORD).code,
        "Access-Challenge"
    );
    let client = Client::new(server.address());
    let kinds = [
        ("mallory", "wrong-password-1234"),
        ("alice", "wrong-password-1234"),
        ("bob", "wrong-password-1234"),
    ];
    let medians = interleaved_medians(&client, &kinds, 100, |_, reply| {
        assert_eq!(reply[0], 3);
    });
    println!("medians unknown user / wrong password: {medians:?}");
    let ratio = |a: Duration, b: Duration| a.max(b).as_secs_f64() / a.min(b).as_secs_f64();
    // The issue's bound: an unknown name and a wrong password look the same.
    assert!(
        ratio(medians[0], medians[1]) < 1.15,
        "unknown user and wrong password medians differ by 15% or more: {medians:?}"
    );
    // A user without a token settles no failure claim, which saves a store call; it may
    // show (about 10% here), but not by much.
    assert!(
        ratio(medians[2], medians[1]) < 1.3,
        "a user without a token stands out: {medians:?}"
    );
}
