//! Reply times of several kinds of request, measured side by side.

use std::time::{Duration, Instant};

use super::raw::{Client, access_request, random_authenticator};

/// Sends an Access-Request for each `(user, password)` of `kinds`, `rounds` times, each kind
/// taking every place in a round in turn (so no kind always follows another), and returns
/// each kind's median reply time. `reply` sees each kind's replies.
pub fn interleaved_medians(
    client: &Client,
    kinds: &[(&str, &str)],
    rounds: u8,
    mut reply: impl FnMut(usize, &[u8]),
) -> Vec<Duration> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for k in 0..kinds.len() {
            let i = (k + usize::from(round)) % kinds.len();
            let (user, password) = kinds[i];
            let request = access_request(round, random_authenticator(), user, password, true, &[]);
            let started = Instant::now();
            let answer = client.exchange(&request).expect("a reply");
            samples[i].push(started.elapsed());
            reply(i, &answer);
        }
    }
    samples.into_iter().map(median).collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
