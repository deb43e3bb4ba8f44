//! Several otpgate nodes sharing one PostgreSQL (a cluster of the test's own, see
//! common/pg.rs): any node answers any step, the bounds hold across nodes, and a node with
//! another key file refuses to start.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::crowd;
use common::pg::PgCluster;
use common::raw::{Client, access_request, random_authenticator, verified_reply};
use common::{Options, PIN, Server, cli, otp_of};
use otpgate::radius::packet::{Packet, PacketBuilder, attr, code};

/// Node `name` on the database at `url`; with `key_from`, that node's key file.
fn node(url: &str, name: &str, key_from: Option<&Path>) -> (tempfile::TempDir, std::path::PathBuf) {
    node_with(&node_options(url, name, NODE_KEYS), key_from)
}

/// The `[server]` keys of the tests' nodes: a small pool, and a short statement timeout.
const NODE_KEYS: &str = "database_pool = 4\ndatabase_timeout = \"1s\"";

/// The options of node `name` on the database at `url`, with more `[server]` keys.
fn node_options(url: &str, name: &str, server_extra: &str) -> Options {
    Options {
        database: Some(url.to_string()),
        server_extra: format!("node_name = \"{name}\"\n{server_extra}"),
        resend_interval: "0s",
        ..Options::default()
    }
}

/// A node with `options`; with `key_from`, that node's key file.
fn node_with(
    options: &Options,
    key_from: Option<&Path>,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, config) = Server::prepare(options);
    if let Some(key) = key_from {
        std::fs::copy(key, dir.path().join("otpgate.key")).unwrap();
    }
    (dir, config)
}

/// Two nodes on one fresh database, alice enrolled through the first.
fn two_nodes(cluster: &PgCluster) -> (Server, Server) {
    two_nodes_on(&cluster.fresh_database())
}

/// Two nodes on the database at `url`, alice enrolled through the first.
fn two_nodes_on(url: &str) -> (Server, Server) {
    two_nodes_with(&|name| node_options(url, name, "database_pool = 4\ndatabase_timeout = \"1s\""))
}

/// Nodes "node-a" and "node-b" with the options `options_of` gives each, sharing node A's
/// key file; alice enrolled through node A.
fn two_nodes_with(options_of: &dyn Fn(&str) -> Options) -> (Server, Server) {
    let (dir_a, config_a) = node_with(&options_of("node-a"), None);
    common::enroll_alice(&config_a);
    let (dir_b, config_b) = node_with(
        &options_of("node-b"),
        Some(&dir_a.path().join("otpgate.key")),
    );
    (
        Server::start(dir_a, config_a),
        Server::start(dir_b, config_b),
    )
}

#[test]
fn a_challenge_opened_on_one_node_is_answered_on_the_other() {
    let cluster = PgCluster::start();
    let (a, b) = two_nodes(&cluster);
    for (first, second) in [(&a, &b), (&b, &a)] {
        let challenge = first.login(PIN);
        assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
        let (_, text) = first.wait_for_sms(1);
        let otp = otp_of(&text);
        let reply = second.answer(&challenge.state(), &otp);
        assert_eq!(
            reply.code, "Access-Accept",
            "step 2 on the other node: {}",
            reply.output
        );
        // The challenge is consumed for both nodes.
        assert_eq!(first.answer(&challenge.state(), &otp).code, "Access-Reject");
    }
    // PIN + OTP on B after the PIN step on A.
    let challenge = a.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let (_, text) = a.wait_for_sms(2);
    let otp = otp_of(&text);
    assert_eq!(b.login(&format!("{PIN}{otp}")).code, "Access-Accept");
    // Both nodes' rows are in the one audit trail.
    let json = a.cli(&["audit", "--json", "--limit", "100"], None);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let accepts = rows.iter().filter(|r| r["outcome"] == "accept").count();
    assert!(accepts >= 2, "{json}");
}

#[test]
fn wrong_guesses_split_over_two_nodes_are_compared_max_attempts_times() {
    let cluster = PgCluster::start();
    let (a, b) = two_nodes(&cluster);
    let challenge = a.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let state = hex::decode(challenge.state().trim_start_matches("0x")).unwrap();
    let started = Instant::now();
    let replies = common::on_threads(20, |w| {
        let server = if w % 2 == 0 { a.address() } else { b.address() };
        let client = Client::new(server);
        let extra: Vec<(u8, &[u8])> = vec![(attr::STATE, &state)];
        (0..50)
            .map(|i| {
                let bytes = access_request(
                    i as u8,
                    random_authenticator(),
                    "alice",
                    "000000x",
                    true,
                    &extra,
                );
                // A NAS resends an unanswered request as it was.
                (0..5)
                    .find_map(|_| client.exchange(&bytes))
                    .map(|r| Packet::decode(&r).unwrap().code)
                    .unwrap_or(0)
            })
            .collect()
    });
    assert_eq!(replies.len(), 1000);
    assert!(
        replies
            .iter()
            .all(|&c| c == code::ACCESS_REJECT || c == code::ACCESS_CHALLENGE),
        "every guess answered, none accepted: {:?}",
        replies
            .iter()
            .filter(|&&c| c != code::ACCESS_REJECT)
            .count()
    );
    // The audit rows are written off the reply path: wait for all 1,001.
    let compared = loop {
        let json = a.cli(&["audit", "--json", "--limit", "2000"], None);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        if rows.len() >= 1001 || started.elapsed() > Duration::from_secs(30) {
            break rows
                .iter()
                .filter(|r| r["reason"].as_str().unwrap_or("").starts_with("wrong OTP"))
                .count();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        compared, 3,
        "max_attempts comparisons of 1,000 guesses on two nodes"
    );
}

#[test]
fn wrong_pins_in_parallel_on_two_nodes_lock_at_max_failures_in_total() {
    let cluster = PgCluster::start();
    let (a, b) = two_nodes(&cluster);
    // 200 wrong PINs at once, half on each node: exactly max_failures (10) are compared,
    // then the token is locked for both nodes.
    let replies = common::on_threads(20, |w| {
        let server = if w % 2 == 0 { &a } else { &b };
        (0..10).map(|_| server.login("wrong-pin").code).collect()
    });
    assert!(replies.iter().all(|c| c == "Access-Reject"), "{replies:?}");
    let token: Vec<serde_json::Value> =
        serde_json::from_str(&b.cli(&["token", "list", "--json"], None)).unwrap();
    assert_eq!(token[0]["fail_count"], 10, "{token:?}");
    assert_eq!(token[0]["locked"], true, "{token:?}");
    // Locked on both nodes: the right PIN gets no challenge on either.
    for server in [&a, &b] {
        assert_eq!(server.login(PIN).code, "Access-Reject");
    }
    let json = a.cli(&["audit", "--json", "--limit", "500"], None);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let compared = rows
        .iter()
        .filter(|r| r["reason"].as_str().unwrap_or("").starts_with("wrong PIN"))
        .count();
    assert_eq!(compared, 10, "PINs compared over both nodes");
}

#[test]
fn a_node_with_another_key_file_refuses_to_start() {
    let cluster = PgCluster::start();
    let url = cluster.fresh_database();
    let (_dir_a, config_a) = node(&url, "node-a", None);
    common::enroll_alice(&config_a);
    let (_dir_c, config_c) = node(&url, "node-c", None);
    let (ok, _, err) = cli(&config_c, &["serve"], None);
    assert!(!ok, "started with another key");
    assert!(
        err.contains("copy the key file from the first node"),
        "{err}"
    );
    let (ok, out, err) = cli(&config_a, &["check-config"], None);
    assert!(ok, "{err}");
    assert!(out.contains("database: PostgreSQL"), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{out}"
    );
}

#[test]
fn check_config_names_the_host_it_cannot_reach() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://otp:s3cret@127.0.0.1:{port}/otpgate");
    let (_dir, config) = node(&url, "node-a", None);
    let (ok, out, err) = cli(&config, &["check-config"], None);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("s3cret") && !out.contains("s3cret"), "{err}");
}

/// The statements otpgate ran on the reply path in database `name` since the last reset
/// (pg_stat_statements: one call per statement executed, so per round trip once the
/// statement is prepared on the connection), as (calls, query) rows. Left out: the audit
/// row, written after the reply, and the periodic purges (with their lock) and breaker
/// records.
fn reply_path_statements(cluster: &PgCluster, name: &str) -> Vec<(u64, String)> {
    let rows = cluster.psql(
        name,
        "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%'
           AND query NOT LIKE 'INSERT INTO audit%'
           AND query NOT LIKE 'DELETE FROM%'
           AND query NOT LIKE '%gateway_state%'
           AND query NOT LIKE '%advisory%'",
    );
    rows.lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(calls, query)| (calls.parse().unwrap(), query.to_string()))
        .collect()
}

/// How many times the statements tagged `statement` ran on the reply path in `name`.
fn statement_calls(cluster: &PgCluster, name: &str, statement: &str) -> u64 {
    reply_path_statements(cluster, name)
        .iter()
        .filter(|(_, q)| q.contains(statement))
        .map(|(calls, _)| calls)
        .sum()
}

/// `user0` .. `user{users - 1}`, each counted `count` times.
fn each_user(users: usize, count: usize) -> std::collections::BTreeMap<String, usize> {
    (0..users).map(|n| (format!("user{n}"), count)).collect()
}

fn total(statements: &[(u64, String)]) -> u64 {
    statements.iter().map(|(calls, _)| calls).sum()
}

#[test]
fn the_pin_step_takes_two_round_trips_and_the_answer_one() {
    let cluster = PgCluster::start();
    let url = cluster.fresh_database();
    let (a, _b) = two_nodes_on(&url);
    let name = url.rsplit('/').next().unwrap();
    cluster.psql(name, "CREATE EXTENSION pg_stat_statements");
    // Warm up: the statements get prepared on the connections that run them.
    for n in 1..=2 {
        let challenge = a.login(PIN);
        assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
        let otp = otp_of(&a.wait_for_sms(n).1);
        assert_eq!(a.answer(&challenge.state(), &otp).code, "Access-Accept");
    }
    std::thread::sleep(Duration::from_millis(300));
    cluster.psql(name, "SELECT pg_stat_statements_reset()");
    let challenge = a.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    std::thread::sleep(Duration::from_millis(300));
    let pin_step = reply_path_statements(&cluster, name);
    assert!(total(&pin_step) <= 2, "PIN step: {pin_step:?}");
    assert!(
        pin_step
            .iter()
            .any(|(_, q)| q.contains("otpgate begin_logins"))
            && pin_step
                .iter()
                .any(|(_, q)| q.contains("otpgate_start_challenges")),
        "{pin_step:?}"
    );
    let otp = otp_of(&a.wait_for_sms(3).1);
    cluster.psql(name, "SELECT pg_stat_statements_reset()");
    assert_eq!(a.answer(&challenge.state(), &otp).code, "Access-Accept");
    std::thread::sleep(Duration::from_millis(300));
    let answer_step = reply_path_statements(&cluster, name);
    assert_eq!(total(&answer_step), 1, "answer step: {answer_step:?}");
    eprintln!(
        "round trips: PIN step {} {pin_step:?}, answer step {} {answer_step:?}",
        total(&pin_step),
        total(&answer_step)
    );
}

/// 120 users log in at once, the PIN on one node and the answer on the other, through nodes
/// with two connections each: the logins, starts and answers queued beside each other share
/// statements (fewer than one each), and each is still decided alone: every flow accepted,
/// with one audit row of its own. Logins under a name PostgreSQL cannot store, sent
/// meanwhile, are refused alone and kept in the audit trail.
#[test]
fn flows_of_many_users_at_once_share_statements_and_each_is_decided_alone() {
    const USERS: usize = 120;
    let cluster = PgCluster::start();
    let (a, b, name) = crowd_nodes(&cluster, USERS);
    cluster.psql(&name, "CREATE EXTENSION pg_stat_statements");
    cluster.psql(&name, "SELECT pg_stat_statements_reset()");
    // Beside the flows, logins under a name with NUL in it, which PostgreSQL's text cannot
    // hold: were one to reach a batch, the batch would fail for every flow in it.
    const HOSTILE: usize = 40;
    let (results, hostile) = std::thread::scope(|scope| {
        let hostile = scope.spawn(|| {
            let client = Client::new(a.address());
            (0..HOSTILE)
                .map(|i| {
                    let authenticator = random_authenticator();
                    let request =
                        access_request(i as u8, authenticator, "mal\0lory", PIN, true, &[]);
                    client
                        .exchange(&request)
                        .map(|reply| verified_reply(&reply, &authenticator).code)
                })
                .collect::<Vec<_>>()
        });
        let results = common::on_threads(USERS / 2, |w| {
            let (pin_node, answer_node) = if w % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let (pin_client, answer_client) = (
                Client::new(pin_node.address()),
                Client::new(answer_node.address()),
            );
            [w, w + USERS / 2]
                .into_iter()
                .map(|n| crowd::flow(pin_node, &pin_client, &answer_client, n).map(|_| n))
                .collect()
        });
        (results, hostile.join().unwrap())
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert_eq!(hostile, vec![Some(code::ACCESS_REJECT); HOSTILE]);
    let calls = |statement| statement_calls(&cluster, &name, statement);
    let (logins, starts, answers) = (
        calls("otpgate begin_logins"),
        calls("otpgate_start_challenges"),
        calls("otpgate answers"),
    );
    eprintln!("{USERS} flows: {logins} login, {starts} start, {answers} answer statements");
    assert!(logins > 0 && starts > 0 && answers > 0);
    assert!(
        logins + starts + answers < 3 * USERS as u64,
        "no statement was shared: {logins} + {starts} + {answers} for {USERS} flows"
    );
    // The audit rows are written off the reply path: wait for them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (accepted, refused) = loop {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&a.cli(&["audit", "--json", "--limit", "1000"], None)).unwrap();
        let user = |r: &serde_json::Value| r["user"].as_str().unwrap_or("").to_string();
        let mut users: Vec<String> = rows
            .iter()
            .filter(|r| r["outcome"] == "accept")
            .map(user)
            .collect();
        // Kept in the trail with the NUL replaced.
        let refused = rows
            .iter()
            .filter(|r| user(r) == "mal\u{FFFD}lory" && r["outcome"] == "reject")
            .count();
        if (users.len() >= USERS && refused >= HOSTILE) || Instant::now() > deadline {
            users.sort();
            break (users, refused);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut expected: Vec<String> = (0..USERS).map(|n| format!("user{n}")).collect();
    expected.sort();
    assert_eq!(accepted, expected, "one accept per user");
    assert_eq!(
        refused,
        HOSTILE,
        "every NUL login in the audit trail: {}",
        a.log()
            .lines()
            .filter(|l| l.contains("audit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Two nodes with two connections each on a fresh database, `users` of `crowd` enrolled
/// through the first, and that database's name.
fn crowd_nodes(cluster: &PgCluster, users: usize) -> (Server, Server, String) {
    let url = cluster.fresh_database();
    let name = url.rsplit('/').next().unwrap().to_string();
    let options = |node: &str| Options {
        limits_extra: "per_token_hour = 0\nper_token_day = 0\nper_phone_hour = 0".into(),
        ..node_options(&url, node, "database_pool = 2\ndatabase_timeout = \"5s\"")
    };
    let (dir_a, config_a) = node_with(&options("node-a"), None);
    crowd::enroll(&config_a, dir_a.path(), users);
    let (dir_b, config_b) = node_with(&options("node-b"), Some(&dir_a.path().join("otpgate.key")));
    (
        Server::start(dir_a, config_a),
        Server::start(dir_b, config_b),
        name,
    )
}

/// The audit rows of `server`'s database whose reason starts with `reason`, counted by user,
/// once at least `expected` are in (they are written off the reply path) or 20 s passed.
fn audited_by_user(
    server: &Server,
    reason: &str,
    expected: usize,
) -> std::collections::BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&server.cli(&["audit", "--json", "--limit", "5000"], None))
                .unwrap();
        let mut by_user = std::collections::BTreeMap::new();
        for r in rows
            .iter()
            .filter(|r| r["reason"].as_str().unwrap_or("").starts_with(reason))
        {
            *by_user
                .entry(r["user"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
        if by_user.values().sum::<usize>() >= expected || Instant::now() > deadline {
            return by_user;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 400 wrong PINs at once, 20 for each of 20 users, half on each node: the logins of
/// different users share statements, and each user's failures still stop at max_failures
/// (10): exactly 10 compared per user, every token locked.
#[test]
fn wrong_pins_of_many_users_at_once_lock_each_at_max_failures() {
    const USERS: usize = 20;
    let cluster = PgCluster::start();
    let (a, b, name) = crowd_nodes(&cluster, USERS);
    cluster.psql(&name, "CREATE EXTENSION pg_stat_statements");
    cluster.psql(&name, "SELECT pg_stat_statements_reset()");
    let replies = common::on_threads(2 * USERS, |w| {
        let node = if w < USERS { &a } else { &b };
        let client = Client::new(node.address());
        let user = format!("user{}", w % USERS);
        (0..10)
            .map(|i| {
                let authenticator = random_authenticator();
                let request = access_request(i, authenticator, &user, "9999", true, &[]);
                client
                    .exchange(&request)
                    .map(|reply| verified_reply(&reply, &authenticator).code)
            })
            .collect()
    });
    assert_eq!(replies, vec![Some(code::ACCESS_REJECT); 2 * USERS * 10]);
    let logins = statement_calls(&cluster, &name, "otpgate begin_logins");
    assert!(logins < 400, "{logins} login statements for 400 logins");
    let compared = audited_by_user(&a, "wrong PIN", USERS * 10);
    assert_eq!(
        compared,
        each_user(USERS, 10),
        "PINs compared per user over both nodes"
    );
    let tokens: Vec<serde_json::Value> =
        serde_json::from_str(&b.cli(&["token", "list", "--json"], None)).unwrap();
    assert_eq!(tokens.len(), USERS);
    for token in &tokens {
        assert_eq!(token["fail_count"], 10, "{token}");
        assert_eq!(token["locked"], true, "{token}");
    }
}

/// 20 users' challenges, each guessed 30 times at once (600 wrong answers, half on each
/// node): the answers to different challenges share statements, and each challenge is still
/// compared exactly max_attempts (3) times.
#[test]
fn wrong_answers_to_many_challenges_at_once_are_compared_max_attempts_each() {
    const USERS: usize = 20;
    let cluster = PgCluster::start();
    let (a, b, name) = crowd_nodes(&cluster, USERS);
    let states: Vec<Vec<u8>> = (0..USERS)
        .map(|n| {
            let authenticator = random_authenticator();
            let request =
                access_request(n as u8, authenticator, &format!("user{n}"), PIN, true, &[]);
            let reply = Client::new(a.address()).exchange(&request).unwrap();
            let packet = verified_reply(&reply, &authenticator);
            assert_eq!(packet.code, code::ACCESS_CHALLENGE);
            packet.first(attr::STATE).unwrap().to_vec()
        })
        .collect();
    cluster.psql(&name, "CREATE EXTENSION pg_stat_statements");
    cluster.psql(&name, "SELECT pg_stat_statements_reset()");
    let replies = common::on_threads(2 * USERS, |w| {
        let node = if w < USERS { &a } else { &b };
        let client = Client::new(node.address());
        let (user, state) = (format!("user{}", w % USERS), &states[w % USERS]);
        (0..15)
            .map(|i| {
                let authenticator = random_authenticator();
                let extra: Vec<(u8, &[u8])> = vec![(attr::STATE, state)];
                let request = access_request(i, authenticator, &user, "000000", true, &extra);
                client
                    .exchange(&request)
                    .map(|reply| verified_reply(&reply, &authenticator).code)
            })
            .collect()
    });
    assert!(
        replies
            .iter()
            .all(|c| *c == Some(code::ACCESS_REJECT) || *c == Some(code::ACCESS_CHALLENGE)),
        "every guess answered, none accepted"
    );
    let answers = statement_calls(&cluster, &name, "otpgate answers");
    assert!(answers < 600, "{answers} answer statements for 600 answers");
    let compared = audited_by_user(&a, "wrong OTP", USERS * 3);
    assert_eq!(
        compared,
        each_user(USERS, 3),
        "codes compared per challenge over both nodes"
    );
}

/// Status-Server, answered on the receive loop without the store.
fn status_server_answers(server: &Server) -> bool {
    let authenticator = random_authenticator();
    let mut builder = PacketBuilder::new(code::STATUS_SERVER, 7);
    builder.message_authenticator();
    let status = builder.finish_request(&authenticator, common::SECRET.as_bytes());
    Client::new(server.address())
        .exchange(&status)
        .is_some_and(|reply| verified_reply(&reply, &authenticator).code == code::ACCESS_ACCEPT)
}

#[test]
fn postgres_stopped_mid_run_rejects_and_the_first_login_after_its_restart_works() {
    let cluster = PgCluster::start();
    let (a, _b) = two_nodes(&cluster);
    let challenge = a.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&a.wait_for_sms(1).1);
    cluster.stop();
    // Both steps need the database: Reject, never Accept, and the node keeps running.
    let reply = a.answer(&challenge.state(), &otp);
    assert_eq!(reply.code, "Access-Reject", "{}", reply.output);
    let reply = a.login(PIN);
    assert_eq!(reply.code, "Access-Reject", "{}", reply.output);
    assert!(
        status_server_answers(&a),
        "Status-Server without the database"
    );
    assert!(a.log().contains("request failed on an internal error"));
    cluster.start_again();
    // The pooled connections are to the stopped server: the first login must not pay.
    let challenge = a.login(PIN);
    assert_eq!(
        challenge.code, "Access-Challenge",
        "first PIN step after the restart: {}",
        challenge.output
    );
    let otp = otp_of(&a.wait_for_sms(2).1);
    let reply = a.answer(&challenge.state(), &otp);
    assert_eq!(reply.code, "Access-Accept", "{}", reply.output);
}

#[test]
fn postgres_restarted_between_requests_costs_no_login() {
    let cluster = PgCluster::start();
    let (a, _b) = two_nodes(&cluster);
    // Warm connections, then a restart no request sees.
    for n in 1..=2 {
        let challenge = a.login(PIN);
        let otp = otp_of(&a.wait_for_sms(n).1);
        assert_eq!(a.answer(&challenge.state(), &otp).code, "Access-Accept");
    }
    cluster.stop();
    cluster.start_again();
    let challenge = a.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&a.wait_for_sms(3).1);
    let reply = a.answer(&challenge.state(), &otp);
    assert_eq!(reply.code, "Access-Accept", "{}", reply.output);
    assert!(
        a.log()
            .contains("PostgreSQL connection lost: connecting again")
    );
}

#[test]
fn a_node_killed_between_the_steps_leaves_step_2_to_the_other() {
    let cluster = PgCluster::start();
    let (a, b) = two_nodes(&cluster);
    let challenge = a.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&a.wait_for_sms(1).1);
    common::signal(a.pid(), "KILL");
    drop(a);
    let reply = b.answer(&challenge.state(), &otp);
    assert_eq!(reply.code, "Access-Accept", "{}", reply.output);
}

/// Writes a key file both nodes of a test share, before either starts.
fn shared_key(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("otpgate.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

#[test]
fn two_nodes_started_at_once_on_an_empty_database_make_one_schema_and_both_serve() {
    let cluster = PgCluster::start();
    let url = cluster.fresh_database();
    let (dir_a, config_a) = node(&url, "node-a", None);
    let key = shared_key(dir_a.path());
    let (dir_b, config_b) = node(&url, "node-b", Some(&key));
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Server::start(dir_a, config_a));
        let b = scope.spawn(|| Server::start(dir_b, config_b));
        (a.join().unwrap(), b.join().unwrap())
    });
    let name = url.rsplit('/').next().unwrap();
    assert_eq!(
        cluster.psql(name, "SELECT count(*) FROM otpgate_schema"),
        "1"
    );
    assert_eq!(
        cluster.psql(
            name,
            "SELECT count(*) FROM otpgate_meta WHERE key = 'key_fingerprint'"
        ),
        "1"
    );
    common::enroll_alice(&a.config);
    let challenge = b.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&b.wait_for_sms(1).1);
    assert_eq!(a.answer(&challenge.state(), &otp).code, "Access-Accept");
}

#[test]
fn gateway_list_shows_the_breakers_of_every_node() {
    let cluster = PgCluster::start();
    let url = cluster.fresh_database();
    // A gateway at a port nothing listens on: the node that sends through it opens its
    // breaker; the other node's stays closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "[gateway.first]\ntype = \"http\"\nurl = \"http://{}/send\"\n",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let (a, _b) = two_nodes_with(&|name| Options {
        extra: dead.clone(),
        chain: vec!["first".into(), "local".into()],
        ..node_options(&url, name, "")
    });
    assert_eq!(a.login(PIN).code, "Access-Challenge");
    a.wait_for_sms(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&a.cli(&["gateway", "list", "--json"], None)).unwrap();
        let breaker = |node: &str| {
            rows.iter()
                .find(|r| r["name"] == "first" && r["node"] == node)
                .map(|r| r["breaker"].clone())
        };
        if (breaker("node-a") == Some("open".into()) && breaker("node-b").is_some())
            || Instant::now() > deadline
        {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let state = |gateway: &str, node: &str| {
        rows.iter()
            .find(|r| r["name"] == gateway && r["node"] == node)
            .map(|r| r["breaker"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        state("first", "node-a").as_deref(),
        Some("open"),
        "{rows:?}"
    );
    assert_eq!(
        state("first", "node-b").as_deref(),
        Some("closed"),
        "{rows:?}"
    );
    assert_eq!(
        state("local", "node-b").as_deref(),
        Some("closed"),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 4, "two gateways on two nodes: {rows:?}");
}

#[test]
fn store_copy_moves_a_single_node_to_postgres_and_back() {
    let cluster = PgCluster::start();
    // A single node on SQLite, with a login under way when it stops.
    let options = Options {
        resend_interval: "0s",
        ..Options::default()
    };
    let (mut sqlite, _) = Server::with_alice(&options);
    let open = sqlite.login(PIN);
    assert_eq!(open.code, "Access-Challenge", "{}", open.output);
    let otp = otp_of(&sqlite.wait_for_sms(1).1);
    sqlite.terminate();
    let sqlite_file = sqlite.database();

    let url = cluster.fresh_database();
    let copy_to_postgres = || {
        cli(
            &sqlite.config,
            &[
                "store",
                "copy",
                "--from",
                sqlite_file.to_str().unwrap(),
                "--to",
                &url,
            ],
            None,
        )
    };
    let (ok, out, err) = copy_to_postgres();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("copied 1 user(s), 1 token(s), 1 open challenge(s)"),
        "{out}"
    );
    // Into a store that is no longer empty: refused, nothing merged.
    let (ok, _, err) = copy_to_postgres();
    assert!(!ok && err.contains("already holds 1 user(s)"), "{err}");

    // The PostgreSQL node, with the single node's key file: the login under way finishes,
    // and a new one works with the token made on SQLite.
    let (dir, config) = node(&url, "node-a", Some(&sqlite.dir.path().join("otpgate.key")));
    let pg = Server::start(dir, config);
    let reply = pg.answer(&open.state(), &otp);
    assert_eq!(reply.code, "Access-Accept", "{}", reply.output);
    let challenge = pg.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&pg.wait_for_sms(1).1);
    assert_eq!(pg.answer(&challenge.state(), &otp).code, "Access-Accept");

    // And back: a new SQLite file holds the user, the token (its counter moved on) and the
    // audit rows of both nodes' logins.
    let back = pg.dir.path().join("back.db");
    let (ok, out, err) = cli(
        &pg.config,
        &[
            "store",
            "copy",
            "--from",
            &url,
            "--to",
            back.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("copied 1 user(s), 1 token(s), 0 open challenge(s)"),
        "{out}"
    );
    let rows: Vec<&str> = out.split_whitespace().collect();
    let audit_rows: usize = rows[rows.iter().position(|w| *w == "and").unwrap() + 1]
        .parse()
        .unwrap();
    assert!(audit_rows >= 4, "{out}");
    let pg_tokens = pg.cli(&["token", "list", "--json"], None);
    let copied = std::fs::read_to_string(&pg.config)
        .unwrap()
        .replace(&url, back.to_str().unwrap())
        .lines()
        .filter(|l| !l.starts_with("database_"))
        .collect::<Vec<_>>()
        .join("\n");
    let back_config = pg.dir.path().join("back.toml");
    std::fs::write(&back_config, copied).unwrap();
    let back_tokens = common::cli_ok(&back_config, &["token", "list", "--json"], None);
    assert_eq!(back_tokens, pg_tokens);
}

#[test]
fn freeradius_balances_50_flows_over_both_nodes_with_the_shipped_pool() {
    use common::free_port;
    use common::freeradius::{self, NAS_SECRET};
    let cluster = PgCluster::start();
    let url = cluster.fresh_database();
    let (a, b) = two_nodes_with(&|name| Options {
        limits_extra: "per_token_hour = 0\nper_token_day = 0\nper_phone_hour = 0".into(),
        ..node_options(&url, name, "")
    });
    let pool = freeradius::snippet("otpgate-pool.conf")
        .replacen(
            "ipaddr = 192.0.2.11\n    port = 1812",
            &format!("ipaddr = 127.0.0.1\n    port = {}", a.address().port()),
            1,
        )
        .replacen(
            "ipaddr = 192.0.2.12\n    port = 1812",
            &format!("ipaddr = 127.0.0.1\n    port = {}", b.address().port()),
            1,
        );
    assert!(!pool.contains("192.0.2."), "both home servers replaced");
    let scratch = tempfile::tempdir().unwrap();
    let proxy_port = free_port();
    freeradius::write_config(scratch.path(), proxy_port, &pool);
    let _freeradius = freeradius::start(scratch.path());
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let through_proxy = |attributes: &str| {
        common::radclient::send(
            proxy,
            "auth",
            NAS_SECRET,
            &format!("{attributes},Message-Authenticator=0x00"),
            8,
        )
    };
    for flow in 1..=50 {
        let before = (a.spooled(), b.spooled());
        let challenge = through_proxy(&format!("User-Name=alice,User-Password={PIN}"));
        assert_eq!(
            challenge.code, "Access-Challenge",
            "flow {flow}: {}",
            challenge.output
        );
        // The code is in the spool of the node that took the PIN step.
        let deadline = Instant::now() + Duration::from_secs(10);
        let sender = loop {
            if a.spooled() > before.0 {
                break &a;
            }
            if b.spooled() > before.1 {
                break &b;
            }
            assert!(Instant::now() < deadline, "flow {flow}: no SMS");
            std::thread::sleep(Duration::from_millis(10));
        };
        let otp = otp_of(&sender.wait_for_sms(sender.spooled()).1);
        let accept = through_proxy(&format!(
            "User-Name=alice,User-Password={otp},State={}",
            challenge.state()
        ));
        assert_eq!(
            accept.code, "Access-Accept",
            "flow {flow}: {}",
            accept.output
        );
    }
    let name = url.rsplit('/').next().unwrap();
    let per_node = cluster.psql(
        name,
        "SELECT node || '=' || count(*) FROM audit WHERE outcome = 'accept' GROUP BY node ORDER BY node",
    );
    let counts: Vec<(String, u32)> = per_node
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(node, n)| (node.to_string(), n.parse().unwrap()))
        .collect();
    assert_eq!(counts.len(), 2, "accepts on both nodes: {per_node}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u32>(), 50, "{per_node}");
}

#[test]
fn an_answer_that_times_out_leaves_the_challenge_as_it_was() {
    let cluster = PgCluster::start();
    let url = cluster.fresh_database();
    let (dir, config) = node(&url, "node-a", None);
    common::enroll_alice(&config);
    let server = Server::start(dir, config);
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let otp = otp_of(&server.wait_for_sms(1).1);
    // Another session holds the token row for 3 s: the answer waits on it past the node's
    // 1 s statement timeout, and PostgreSQL rolls its transaction back.
    let name = url.rsplit('/').next().unwrap().to_string();
    let holder = std::thread::scope(|scope| {
        let holder = scope.spawn(|| {
            cluster.psql(
                &name,
                "BEGIN; SELECT 1 FROM tokens FOR UPDATE; SELECT pg_sleep(3); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let reply = server.answer(&challenge.state(), &otp);
        assert_eq!(reply.code, "Access-Reject", "{}", reply.output);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the timeout, not the lock, ended it"
        );
        holder.join().unwrap()
    });
    let _ = holder;
    assert!(
        server.log().contains("statement timeout"),
        "the reject is logged with its cause"
    );
    assert_eq!(
        cluster.psql(&name, "SELECT attempts, used FROM challenges"),
        "0|f",
        "no attempt spent, the challenge still open"
    );
    let reply = server.answer(&challenge.state(), &otp);
    assert_eq!(reply.code, "Access-Accept", "{}", reply.output);
}
