//! The outside view of a failure does not depend on its reason: unknown user, wrong PIN, and
//! a right PIN on a locked token get the same reply text and take about the same time.
//! Medians over interleaved samples, so that machine noise hits every kind alike.

mod common;

use std::time::{Duration, Instant};

use common::raw::{Client, access_request, random_authenticator};
use common::{Options, Server};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn unknown_user_wrong_pin_and_locked_token_take_the_same_time() {
    // A real Argon2 cost, so the PIN hash dominates as it does in production; the lockout
    // is out of reach of the wrong-PIN samples.
    let options = Options {
        pin_memory_kib: 4096,
        max_failures: 1000,
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    server.cli(&["user", "add", "carol", "--phone", "+491705555555"], None);
    let carol = server
        .cli(&["token", "add", "carol", "--pin-stdin"], Some("13572468"))
        .trim()
        .to_string();
    server.cli(&["token", "disable", &carol], None);
    let client = Client::new(server.address());
    // Passwords longer than an OTP, so that a wrong one costs two Argon2 runs per token (the
    // whole password, and the password less an OTP), while carol's right PIN matches at once.
    let kinds = [
        ("mallory", "47114711"),
        ("alice", "99999999"),
        ("carol", "13572468"),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut replies: Vec<Vec<u8>> = vec![Vec::new(); kinds.len()];
    for round in 0..25 {
        for (i, (user, password)) in kinds.iter().enumerate() {
            let request = access_request(round, random_authenticator(), user, password, true, &[]);
            let started = Instant::now();
            let reply = client.exchange(&request).expect("a reply");
            samples[i].push(started.elapsed());
            // Everything after the header: attributes only, the authenticator differs.
            replies[i] = reply[20..].to_vec();
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let slowest = *medians.iter().max().unwrap();
    let fastest = *medians.iter().min().unwrap();
    println!("medians unknown/wrong PIN/disabled: {medians:?}");
    assert!(
        slowest.as_secs_f64() / fastest.as_secs_f64() < 1.2,
        "medians differ by 20% or more: {medians:?}"
    );
    // The Message-Authenticator differs per packet; the Reply-Message after it must not.
    assert!(
        replies.iter().all(|r| r[18..] == replies[0][18..]),
        "reply attributes differ"
    );
}
