//! The outside view of a failure does not depend on its reason: unknown user, wrong PIN, and
//! a right PIN on a locked token get the same reply text and take about the same time.
//! Medians over interleaved samples, so that machine noise hits every kind alike.

mod common;

use common::raw::{Client, access_request, random_authenticator};
use common::timing::interleaved_medians;
use common::{Options, Server};

#[test]
fn unknown_user_wrong_pin_three_tokens_locked_and_disabled_take_the_same_time() {
    // A real Argon2 cost, so the PIN hash dominates as it does in production; the lockout
    // is out of reach of the wrong-PIN samples.
    // A real Argon2 cost, so the PIN hash dominates as it does in production. The server
    // first runs with max_failures = 1 to lock erin's token, then again with a lockout out
    // of reach of the wrong-PIN samples.
    let (dir, config) = Server::prepare(&Options {
        pin_memory_kib: 1024,
        max_failures: 1,
        ..Options::default()
    });
    let cli = |args: &[&str], stdin: Option<&str>| common::cli_ok(&config, args, stdin);
    common::enroll_alice(&config);
    // dave: three tokens of different OTP lengths.
    cli(&["user", "add", "dave", "--phone", "+491705555501"], None);
    for (pin, length) in [("11112222", "6"), ("33334444", "8"), ("55556666", "10")] {
        cli(
            &[
                "token",
                "add",
                "dave",
                "--otp-length",
                length,
                "--pin-stdin",
            ],
            Some(pin),
        );
    }
    // carol: a disabled token; erin: a locked one. Both send their right PIN below.
    cli(&["user", "add", "carol", "--phone", "+491705555555"], None);
    let carol = cli(
        &["token", "add", "carol", "--pin-stdin"],
        Some("13572468135724"),
    );
    cli(&["token", "disable", carol.trim()], None);
    cli(&["user", "add", "erin", "--phone", "+491705555566"], None);
    cli(
        &["token", "add", "erin", "--pin-stdin"],
        Some("24681357246813"),
    );
    let mut server = Server::start(dir, config.clone());
    let client = Client::new(server.address());
    let wrong = access_request(0, random_authenticator(), "erin", "00000000", true, &[]);
    client.exchange(&wrong).expect("a reply");
    server.terminate();
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    drop(server);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("max_failures = 1\n", "max_failures = 1000\n"),
    )
    .unwrap();
    let server = Server::start(dir, config);
    let listed = server.cli(&["token", "list", "--user", "erin", "--json"], None);
    let erin: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(erin[0]["locked"], true, "erin's token is locked");
    let client = Client::new(server.address());
    // Passwords of one length, long enough to split at every OTP length in use (6, 8, 10):
    // each costs the whole password and three splits, four Argon2 runs for every kind.
    let kinds = [
        ("mallory", "47114711471147"),
        ("alice", "99999999999999"),
        ("dave", "98765432109876"),
        ("carol", "13572468135724"),
        ("erin", "24681357246813"),
    ];
    let mut replies: Vec<Vec<u8>> = vec![Vec::new(); kinds.len()];
    let medians = interleaved_medians(&client, &kinds, 100, |i, reply| {
        replies[i] = reply[20..].to_vec();
    });
    let slowest = *medians.iter().max().unwrap();
    let fastest = *medians.iter().min().unwrap();
    println!("medians unknown/wrong PIN/three tokens/disabled/locked: {medians:?}");
    assert!(
        slowest.as_secs_f64() / fastest.as_secs_f64() < 1.15,
        "medians differ by 15% or more: {medians:?}"
    );
    // The Message-Authenticator differs per packet; the Reply-Message after it must not.
    assert!(
        replies.iter().all(|r| r[18..] == replies[0][18..]),
        "reply attributes differ"
    );
}
