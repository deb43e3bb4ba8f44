//! Reload on SIGHUP with the built server: a NAS added to the file is answered after the
//! signal, a changed secret replaces the old one, a broken file keeps the server serving on
//! the old config with file, key and problem in the log and the failure counted, and 200
//! logins running while the config is swapped all complete.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::crowd;
use common::raw::{Client, access_request, random_authenticator, verified_reply};
use common::scrape::{self, METRICS_ON};
use common::{Options, PIN, SECRET, Server, radclient};
use otpgate::radius::packet::code;

const SECOND_NAS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn edit(server: &Server, change: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&server.config).unwrap();
    let changed = change(text.clone());
    assert_ne!(changed, text, "the edit changed nothing");
    std::fs::write(&server.config, changed).unwrap();
}

fn pin_request(client: &Client, identifier: u8, user: &str) -> Option<u8> {
    let authenticator = random_authenticator();
    let reply = client.exchange(&access_request(
        identifier,
        authenticator,
        user,
        PIN,
        true,
        &[],
    ))?;
    Some(verified_reply(&reply, &authenticator).code)
}

#[test]
fn a_nas_added_by_sighup_is_answered_at_its_next_request() {
    let (server, _) = Server::with_alice(&Options::default());
    let nas = Client::bound_to(SECOND_NAS, server.address());
    assert_eq!(pin_request(&nas, 1, "alice"), None, "not a client yet");
    edit(&server, |text| {
        format!(
            "{text}\n[[client]]\nname = \"second-nas\"\naddress = \"{SECOND_NAS}/32\"\nsecret = \"{SECRET}\"\n"
        )
    });
    assert!(server.reload(), "{}", server.log());
    assert_eq!(pin_request(&nas, 2, "alice"), Some(code::ACCESS_CHALLENGE));
    // The first client is still served.
    assert_eq!(server.login(PIN).code, "Access-Challenge");
}

#[test]
fn a_changed_secret_drops_the_old_one_and_answers_the_new() {
    let (server, _) = Server::with_alice(&Options::default());
    let new_secret = "a-new-secret-after-the-reload";
    let ask = |secret: &str| {
        radclient::send(
            server.address(),
            "auth",
            secret,
            "User-Name=alice,User-Password=4711,Message-Authenticator=0x00",
            2,
        )
        .code
    };
    assert_eq!(ask(SECRET), "Access-Challenge");
    edit(&server, |text| text.replace(SECRET, new_secret));
    assert!(server.reload(), "{}", server.log());
    assert_eq!(ask(SECRET), "none", "the old secret is dropped");
    assert_eq!(ask(new_secret), "Access-Challenge");
}

#[test]
fn a_broken_file_keeps_the_server_serving_and_logs_file_key_and_problem() {
    let (server, _) = Server::with_alice(&Options {
        extra: METRICS_ON.into(),
        max_failures: 5,
        ..Options::default()
    });
    edit(&server, |text| {
        text.replace("max_failures = 5", "max_failures = 0")
    });
    assert!(!server.reload(), "a broken file was applied");
    let file = server.config.display().to_string();
    assert!(
        server.log().contains(&format!(
            "reload refused: {file}: lockout.max_failures: must be at least 1"
        )),
        "{}",
        server.log()
    );
    assert_eq!(server.login(PIN).code, "Access-Challenge");

    let (_, text) = scrape::get(server.http_address(), "/metrics");
    let value = |series: &str| scrape::value(&text, series);
    assert_eq!(
        value("otpgate_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(value("otpgate_config_last_reload_successful"), Some(0.0));

    // Fixed, it reloads, and the metric says so.
    edit(&server, |text| {
        text.replace("max_failures = 0", "max_failures = 5")
    });
    assert!(server.reload(), "{}", server.log());
    let (_, text) = scrape::get(server.http_address(), "/metrics");
    assert_eq!(
        scrape::value(&text, "otpgate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
}

#[test]
fn a_listen_change_is_logged_as_needing_a_restart() {
    let (server, _) = Server::with_alice(&Options::default());
    let port = server.address().port();
    edit(&server, |text| {
        text.replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:1\"]")
    });
    assert!(server.reload(), "{}", server.log());
    assert!(
        server
            .log()
            .contains("server.listen: changed; takes effect only after a restart"),
        "{}",
        server.log()
    );
    assert_eq!(server.address().port(), port);
    assert_eq!(server.login(PIN).code, "Access-Challenge");
}

const FLOWS: usize = 200;
const THREADS: usize = 20;
const OLD_PROMPT: &str = "Enter the code sent to";
const NEW_PROMPT: &str = "Reloaded: the code for";

#[test]
fn two_hundred_logins_running_through_a_reload_all_complete() {
    let (dir, config) = Server::prepare(&Options {
        limits_extra: "per_token_hour = 0\nper_token_day = 0\nper_phone_hour = 0".into(),
        ..Options::default()
    });
    crowd::enroll(&config, dir.path(), FLOWS);
    let server = Server::start(dir, config);

    let done = AtomicUsize::new(0);
    let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (server, done) = (&server, &done);
                scope.spawn(move || {
                    let client = Client::new(server.address());
                    (t..FLOWS)
                        .step_by(THREADS)
                        .map(|n| {
                            let result = crowd::flow(server, &client, &client, n);
                            done.fetch_add(1, Ordering::SeqCst);
                            result
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A quarter through, the prompt changes and the server reloads, twice.
        while done.load(Ordering::SeqCst) < FLOWS / 4 {
            std::thread::sleep(Duration::from_millis(5));
        }
        edit(&server, |text| text.replace(OLD_PROMPT, NEW_PROMPT));
        assert!(server.reload(), "{}", server.log());
        assert!(server.reload(), "{}", server.log());
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {FLOWS} failed: {failed:?}",
        failed.len()
    );
    let prompts: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(prompts.len(), FLOWS);
    let old = prompts.iter().filter(|p| p.starts_with(OLD_PROMPT)).count();
    let new = prompts.iter().filter(|p| p.starts_with(NEW_PROMPT)).count();
    assert!(old > 0 && new > 0, "old prompt {old}, new prompt {new}");
    assert_eq!(old + new, FLOWS);
}
