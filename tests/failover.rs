//! Failover chains and breakers through the built server: a first gateway that refuses
//! (connection refused, HTTP 500, XML-RPC fault) lets the second deliver within the
//! deadline, the breaker skips it on the next send, and `otpgate gateway list` shows it.

mod common;

use std::time::{Duration, Instant};

use common::http_peer::{Answer, HttpPeer};
use common::peers::Peer;
use common::{Options, PIN, Server};

fn last_reason(server: &Server) -> String {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["audit", "--json", "--limit", "1"], None)).unwrap();
    rows[0]["reason"].as_str().unwrap().to_string()
}

#[test]
fn each_kind_of_refusal_fails_over_and_opens_the_breaker() {
    let scratch = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let http_500 = HttpPeer::start(Answer {
        status: 500,
        ..Answer::default()
    });
    let fault = Peer::start(
        "xmlrpc_peer.py",
        scratch.path(),
        &["--user", "u", "--password", "p", "--answer", "fault"],
    );
    let firsts = [
        (
            format!("[gateway.first]\ntype = \"http\"\nurl = \"http://{closed}/send\"\n"),
            "connection failed",
        ),
        (
            format!(
                "[gateway.first]\ntype = \"http\"\nurl = \"{}\"\n",
                http_500.url("/send")
            ),
            "HTTP 500",
        ),
        (
            format!(
                "[gateway.first]\ntype = \"sipgate\"\nusername = \"u\"\npassword = \"p\"\nurl = \"http://127.0.0.1:{}/RPC2\"\n",
                fault.address
            ),
            "XML-RPC fault 407",
        ),
    ];
    for (first, error) in firsts {
        let options = Options {
            extra: first,
            chain: vec!["first".into(), "local".into()],
            reply_within: "3s",
            // Every PIN request sends: the test counts what each send tried.
            resend_interval: "0s",
            ..Options::default()
        };
        let (server, _) = Server::with_alice(&options);
        let started = Instant::now();
        assert_eq!(server.login(PIN).code, "Access-Challenge");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "within the deadline"
        );
        server.wait_for_sms(1);
        let reason = last_reason(&server);
        assert!(
            reason.contains("sent via local after first: ") && reason.contains(error),
            "{reason}"
        );

        assert_eq!(server.login(PIN).code, "Access-Challenge");
        let reason = last_reason(&server);
        assert!(
            reason.contains("sent via local (skipped first: breaker open)"),
            "{reason}"
        );
        server.wait_for_sms(2);

        // The server records breakers for `gateway list` about once a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listed = loop {
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&server.cli(&["gateway", "list", "--json"], None)).unwrap();
            let first = list.iter().find(|g| g["name"] == "first").unwrap().clone();
            if first["breaker"] == "open" || Instant::now() > deadline {
                break first;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(listed["breaker"], "open", "{listed}");
        assert!(
            listed["last_error"].as_str().unwrap().contains(error),
            "{listed}"
        );
    }
    assert_eq!(
        http_500.requests().len(),
        1,
        "the breaker spared the second attempt"
    );
}

#[test]
fn the_breaker_probes_again_after_its_backoff() {
    let peer = HttpPeer::start(Answer {
        status: 503,
        ..Answer::default()
    });
    let options = Options {
        extra: format!(
            "[gateway.flaky]\ntype = \"http\"\nurl = \"{}\"\n",
            peer.url("/send")
        ),
        chain: vec!["flaky".into(), "local".into()],
        ..Options::default()
    };
    let options = Options {
        sms_extra: "breaker_backoff = \"1s\"".into(),
        resend_interval: "0s",
        ..options
    };
    let (server, _) = Server::with_alice(&options);
    server.login(PIN);
    server.login(PIN);
    assert_eq!(peer.requests().len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    server.login(PIN);
    assert_eq!(peer.requests().len(), 2, "probed after the back-off");
}

#[test]
fn the_chain_deadline_bounds_a_hanging_gateway() {
    let peer = HttpPeer::start(Answer {
        delay: Duration::from_secs(10),
        ..Answer::default()
    });
    let options = Options {
        extra: format!(
            "[gateway.hangs]\ntype = \"http\"\nurl = \"{}\"\ntimeout = \"30s\"\n",
            peer.url("/send")
        ),
        chain: vec!["hangs".into(), "local".into()],
        reply_within: "1s",
        ..Options::default()
    };
    let options = Options {
        sms_extra: "send_within = \"2s\"".into(),
        ..options
    };
    let (server, _) = Server::with_alice(&options);
    let started = Instant::now();
    // reply_within passes first: the challenge goes out while the chain keeps trying.
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    assert!(started.elapsed() < Duration::from_millis(1800));
    // At the 2 s deadline the hanging gateway is given up; the next one is not reached.
    assert!(server.wait_for_log("chain deadline passed", Duration::from_secs(4)));
    assert_eq!(server.spooled(), 0);
}
