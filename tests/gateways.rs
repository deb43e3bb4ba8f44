//! The http gateway against a real HTTP server, the failover chain, `reply_within`, and the
//! "could not be sent" reject, all through the built server and radclient.

mod common;

use std::time::{Duration, Instant};

use common::http_peer::{Answer, HttpPeer};
use common::radclient::{self};
use common::{Options, PIN, Server};

fn with_gateway(table: String, chain: &[&str]) -> Options {
    Options {
        extra: table,
        chain: chain.iter().map(|c| c.to_string()).collect(),
        ..Options::default()
    }
}

fn last_audit(server: &Server) -> serde_json::Value {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["audit", "--json", "--limit", "1"], None)).unwrap();
    rows[0].clone()
}

#[test]
fn http_get_sends_parameters_options_headers_and_basic_auth() {
    let peer = HttpPeer::start(Answer::default());
    let table = format!(
        r#"[gateway.provider]
type = "http"
url = "{}"
method = "GET"
username = "otp-user"
password = "gw-pass"
return_success = "ID"
parameters = {{ api_id = "12345" }}
options = {{ to = "{{phone}}", text = "{{otp}} & more" }}
headers = {{ X-Api-Key = "k1" }}
"#,
        peer.url("/http/sendmsg")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["provider"]));
    let challenge = server.login(PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let sent = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(sent.method, "GET");
    assert!(sent.target.starts_with("/http/sendmsg?"), "{}", sent.target);
    assert_eq!(sent.field("api_id").as_deref(), Some("12345"));
    assert_eq!(sent.field("to").as_deref(), Some("+491701234567"));
    let text = sent.field("text").unwrap();
    assert!(
        text.starts_with("Your code: ") && text.ends_with(" & more"),
        "{text}"
    );
    assert_eq!(sent.header("x-api-key"), Some("k1"));
    // base64("otp-user:gw-pass")
    assert_eq!(
        sent.header("authorization"),
        Some("Basic b3RwLXVzZXI6Z3ctcGFzcw==")
    );

    let otp = text
        .trim_start_matches("Your code: ")
        .trim_end_matches(" & more");
    let accept = server.answer(&challenge.state(), otp);
    assert_eq!(accept.code, "Access-Accept");
    let audit: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli(&["audit", "--json"], None)).unwrap();
    assert_eq!(audit[1]["gateway"], "provider");
}

#[test]
fn http_post_sends_a_form_or_a_json_body() {
    let peer = HttpPeer::start(Answer::default());
    let table = format!(
        r#"[gateway.form]
type = "http"
url = "{url}"
method = "POST"
parameters = {{ account = "a1" }}
options = {{ number = "{{phone}}", message = "{{message}}" }}
phone_format = "international"

[gateway.json]
type = "http"
url = "{url}"
method = "POST"
body = "json"
options = {{ number = "{{phone}}", message = "{{otp}}" }}
phone_regexp = "/^\\+49/0/"
"#,
        url = peer.url("/api")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["form"]));
    server.cli(&["user", "add", "bob", "--phone", "+491709999999"], None);
    server.cli(
        &["token", "add", "bob", "--gateway", "json", "--pin-stdin"],
        Some("8888"),
    );

    assert_eq!(server.login(PIN).code, "Access-Challenge");
    let form = peer.wait_for(1, Duration::from_secs(5));
    assert_eq!(form.method, "POST");
    assert_eq!(
        form.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(form.field("account").as_deref(), Some("a1"));
    assert_eq!(form.field("number").as_deref(), Some("00491701234567"));
    assert!(form.field("message").unwrap().starts_with("Your code: "));

    let bob = radclient::auth(server.address(), "User-Name=bob,User-Password=8888");
    assert_eq!(bob.code, "Access-Challenge");
    let json = peer.wait_for(2, Duration::from_secs(5));
    assert_eq!(json.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(body["number"], "01709999999", "phone_regexp applied");
    assert!(body["message"].as_str().unwrap().starts_with("Your code: "));
}

#[test]
fn tags_in_the_url_are_percent_encoded() {
    let peer = HttpPeer::start(Answer::default());
    let table = format!(
        "[gateway.path]\ntype = \"http\"\nurl = \"{}\"\n",
        peer.url("/to/{phone}/say/{otp}")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["path"]));
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    let sent = peer.wait_for(1, Duration::from_secs(5));
    assert!(
        sent.target
            .starts_with("/to/%2B491701234567/say/Your%20code%3A%20"),
        "{}",
        sent.target
    );
}

#[test]
fn a_failing_gateway_gives_the_could_not_be_sent_reject() {
    let peer = HttpPeer::start(Answer {
        status: 500,
        body: "boom".into(),
        ..Answer::default()
    });
    let table = format!(
        "[gateway.broken]\ntype = \"http\"\nurl = \"{}\"\n",
        peer.url("/send")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["broken"]));
    let reply = server.login(PIN);
    assert_eq!(reply.code, "Access-Reject");
    assert_eq!(
        reply.get("Reply-Message"),
        Some("The PIN was correct, but the SMS could not be sent.")
    );
    let audit = last_audit(&server);
    assert_eq!(
        audit["reason"],
        "PIN right, SMS failed: not sent: broken: refused: HTTP 500"
    );
    assert!(server.log().contains("sms_failed"));
    // The dropped challenge cannot be answered: the PIN + OTP path finds none.
    let guess = radclient::auth(
        server.address(),
        &format!("User-Name=alice,User-Password={PIN}000000"),
    );
    assert_eq!(guess.code, "Access-Reject");
    assert_eq!(
        last_audit(&server)["reason"],
        "PIN right, no open challenge"
    );
}

#[test]
fn return_success_and_return_fail_decide_delivery() {
    let peer = HttpPeer::start(Answer {
        body: "ERR: no credit".into(),
        ..Answer::default()
    });
    let table = format!(
        "[gateway.needs_id]\ntype = \"http\"\nurl = \"{url}\"\nreturn_success = \"ID\"\n\n\
         [gateway.no_err]\ntype = \"http\"\nurl = \"{url}\"\nreturn_fail = \"ERR\"\n",
        url = peer.url("/send")
    );
    for gateway in ["needs_id", "no_err"] {
        let (server, _) = Server::with_alice(&with_gateway(table.clone(), &[gateway]));
        let reply = server.login(PIN);
        assert_eq!(reply.code, "Access-Reject", "{gateway}");
        let reason = last_audit(&server)["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("return_"), "{gateway}: {reason}");
    }
}

#[test]
fn the_chain_fails_over_to_the_next_gateway() {
    // Connection refused: a port that was free a moment ago.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let table = format!(
        "[gateway.down]\ntype = \"http\"\nurl = \"http://{closed}/send\"\ntimeout = \"2s\"\n"
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["down", "local"]));
    let reply = server.login(PIN);
    assert_eq!(reply.code, "Access-Challenge", "{}", reply.output);
    server.wait_for_sms(1);
    let audit = last_audit(&server);
    assert_eq!(audit["gateway"], "local");
    let reason = audit["reason"].as_str().unwrap();
    assert!(
        reason.contains("sent via local after down: connection failed"),
        "{reason}"
    );
}

#[test]
fn a_gateway_slower_than_reply_within_still_yields_a_challenge_in_time() {
    let peer = HttpPeer::start(Answer {
        delay: Duration::from_millis(2500),
        ..Answer::default()
    });
    let table = format!(
        "[gateway.slow]\ntype = \"http\"\nurl = \"{}\"\ntimeout = \"10s\"\noptions = {{ text = \"{{otp}}\" }}\n",
        peer.url("/send")
    );
    let options = Options {
        reply_within: "500ms",
        ..with_gateway(table, &["slow"])
    };
    let (server, _) = Server::with_alice(&options);
    let started = Instant::now();
    let challenge = server.login(PIN);
    let elapsed = started.elapsed();
    assert_eq!(challenge.code, "Access-Challenge");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert!(
        last_audit(&server)["reason"]
            .as_str()
            .unwrap()
            .contains("still sending")
    );
    // Delivery finishes in the background; the OTP then works.
    let sent = peer.wait_for(1, Duration::from_secs(5));
    let otp = sent
        .field("text")
        .unwrap()
        .trim_start_matches("Your code: ")
        .to_string();
    assert!(server.wait_for_log("sms sent", Duration::from_secs(5)));
    let accept = server.answer(&challenge.state(), &otp);
    assert_eq!(accept.code, "Access-Accept");
}

#[test]
fn gateway_test_sends_a_real_message_or_prints_the_error() {
    let ok_peer = HttpPeer::start(Answer::default());
    let bad_peer = HttpPeer::start(Answer {
        status: 403,
        ..Answer::default()
    });
    let table = format!(
        "[gateway.good]\ntype = \"http\"\nurl = \"{}\"\noptions = {{ to = \"{{phone}}\", text = \"{{message}}\" }}\n\n\
         [gateway.bad]\ntype = \"http\"\nurl = \"{}\"\n",
        ok_peer.url("/s"),
        bad_peer.url("/s")
    );
    let (_dir, config) = Server::prepare(&with_gateway(table, &["good"]));
    let out = common::cli_ok(
        &config,
        &[
            "gateway",
            "test",
            "good",
            "--to",
            "0170 1234567",
            "--text",
            "hello",
        ],
        None,
    );
    assert!(out.contains("sent to +49********67 via good"), "{out}");
    let sent = ok_peer.wait_for(1, Duration::from_secs(2));
    assert_eq!(sent.field("text").as_deref(), Some("hello"));
    assert_eq!(sent.field("to").as_deref(), Some("+491701234567"));
    let (ok, _, err) = common::cli(
        &config,
        &["gateway", "test", "bad", "--to", "+491701234567"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("gateway bad: refused: HTTP 403"), "{err}");
}

#[test]
fn check_ssl_refuses_an_untrusted_certificate_unless_turned_off() {
    let peer = HttpPeer::start_tls(Answer::default());
    let table = format!(
        "[gateway.strict]\ntype = \"http\"\nurl = \"{url}\"\n\n\
         [gateway.lax]\ntype = \"http\"\nurl = \"{url}\"\ncheck_ssl = false\noptions = {{ text = \"{{otp}}\" }}\n",
        url = peer.url("/send")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["strict"]));
    let reply = server.login(PIN);
    assert_eq!(reply.code, "Access-Reject");
    let reason = last_audit(&server)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("strict: connection failed")
            && reason.to_lowercase().contains("certificate"),
        "{reason}"
    );
    assert!(peer.requests().is_empty());

    server.cli(&["user", "add", "bob", "--phone", "+491709999999"], None);
    server.cli(
        &["token", "add", "bob", "--gateway", "lax", "--pin-stdin"],
        Some("8888"),
    );
    let reply = radclient::auth(server.address(), "User-Name=bob,User-Password=8888");
    assert_eq!(reply.code, "Access-Challenge", "{}", reply.output);
    assert!(
        peer.wait_for(1, Duration::from_secs(5))
            .field("text")
            .unwrap()
            .starts_with("Your code: ")
    );
}

#[test]
fn the_configured_proxy_carries_the_request() {
    // A proxy receives the absolute URL; the origin need not exist.
    let proxy = HttpPeer::start(Answer::default());
    let table = format!(
        "[gateway.proxied]\ntype = \"http\"\nurl = \"http://sms.example.invalid/send\"\nproxy = \"{}\"\n\
         options = {{ to = \"{{phone}}\" }}\n",
        proxy.url("")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["proxied"]));
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    let sent = proxy.wait_for(1, Duration::from_secs(5));
    assert!(
        sent.target.starts_with("http://sms.example.invalid/send?"),
        "{}",
        sent.target
    );
    assert_eq!(sent.field("to").as_deref(), Some("+491701234567"));
}

#[test]
fn a_gateway_past_its_timeout_fails_and_the_chain_moves_on() {
    let peer = HttpPeer::start(Answer {
        delay: Duration::from_secs(3),
        ..Answer::default()
    });
    let table = format!(
        "[gateway.sleepy]\ntype = \"http\"\nurl = \"{}\"\ntimeout = \"300ms\"\n",
        peer.url("/send")
    );
    let (server, _) = Server::with_alice(&with_gateway(table, &["sleepy", "local"]));
    let started = Instant::now();
    assert_eq!(server.login(PIN).code, "Access-Challenge");
    assert!(started.elapsed() < Duration::from_millis(1500));
    let reason = last_audit(&server)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("sent via local after sleepy: timed out"),
        "{reason}"
    );
}
