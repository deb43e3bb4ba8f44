//! Wire rules of DESIGN section 3 against the built server: duplicate cache, Status-Server,
//! Message-Authenticator and Proxy-State policies, unknown clients, malformed datagrams,
//! IPv6, and a clean stop on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::http_peer::{Answer, HttpPeer};
use common::radclient;
use common::raw::{Client, access_request, random_authenticator, verified_reply};
use common::{Options, PIN, SECRET, Server};
use otpgate::radius::packet::{PacketBuilder, attr, code};

fn slow_http_gateway(peer: &HttpPeer) -> String {
    format!(
        "[gateway.slow]\ntype = \"http\"\nurl = \"{}\"\noptions = {{ to = \"{{phone}}\", text = \"{{otp}}\" }}\n",
        peer.url("/send")
    )
}

#[test]
fn a_retransmitted_pin_request_gets_identical_replies_and_sends_one_sms() {
    // The gateway answers after 600 ms, so the first retransmission arrives while the
    // request is still in flight.
    let peer = HttpPeer::start(Answer {
        delay: Duration::from_millis(600),
        ..Answer::default()
    });
    let options = Options {
        extra: slow_http_gateway(&peer),
        chain: vec!["slow".into()],
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let client = Client::new(server.address());
    let authenticator = random_authenticator();
    let request = access_request(42, authenticator, "alice", PIN, true, &[]);

    client.send(&request);
    std::thread::sleep(Duration::from_millis(100));
    client.send(&request); // in flight: dropped
    let first = client.receive().expect("a reply");
    assert_eq!(
        verified_reply(&first, &authenticator).code,
        code::ACCESS_CHALLENGE
    );
    assert!(
        client.receive().is_none(),
        "the in-flight duplicate got no reply of its own"
    );

    for _ in 0..4 {
        assert_eq!(
            client.exchange(&request).expect("cached reply"),
            first,
            "byte-identical"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(peer.requests().len(), 1, "exactly one SMS");
    assert!(server.log().contains("duplicate_in_flight"));
}

#[test]
fn the_same_id_with_a_new_authenticator_is_a_new_request() {
    // No resend interval, so that the second request's SMS shows it was handled anew.
    let options = Options {
        resend_interval: "0s",
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let client = Client::new(server.address());
    let a = client
        .exchange(&access_request(
            7,
            random_authenticator(),
            "alice",
            PIN,
            true,
            &[],
        ))
        .unwrap();
    let b = client
        .exchange(&access_request(
            7,
            random_authenticator(),
            "alice",
            PIN,
            true,
            &[],
        ))
        .unwrap();
    assert_ne!(a, b);
    server.wait_for_sms(2);
}

#[test]
fn status_server_is_answered_with_access_accept() {
    let (server, _) = Server::with_alice(&Options::default());
    let reply = radclient::status(server.address());
    assert_eq!(reply.code, "Access-Accept", "{}", reply.output);
    assert!(reply.get("Message-Authenticator").is_some());
    // Nothing else happens: no audit row, no SMS.
    assert_eq!(server.cli(&["audit", "--json"], None).trim(), "[]");
}

#[test]
fn requests_without_message_authenticator_are_dropped_when_required() {
    let (server, _) = Server::with_alice(&Options::default());
    let client = Client::new(server.address());
    assert!(
        client
            .exchange(&access_request(
                1,
                random_authenticator(),
                "alice",
                PIN,
                false,
                &[]
            ))
            .is_none()
    );
    assert!(server.wait_for_log("missing_message_authenticator", Duration::from_secs(2)));
    assert_eq!(server.spooled(), 0);
    // radclient without a Message-Authenticator gets no answer either.
    let reply = radclient::send(
        server.address(),
        "auth",
        SECRET,
        &format!("User-Name=alice,User-Password={PIN}"),
        1,
    );
    assert_eq!(reply.code, "none");
}

#[test]
fn a_client_without_message_authenticator_gets_one_warning_naming_it_and_the_fix() {
    // Debian 12's pam_radius_auth 2.0 sends no Message-Authenticator: without a warning the
    // operator sees only the NAS time out.
    let (mut server, _) = Server::with_alice(&Options::default());
    let client = Client::new(server.address());
    for identifier in 0..20 {
        client.send(&access_request(
            identifier,
            random_authenticator(),
            "alice",
            PIN,
            false,
            &[],
        ));
    }
    let dropped = "client=test-nas reason=missing_message_authenticator";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.log().matches(dropped).count() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "20 debug drop lines naming the client:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("Message-Authenticator"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning for 20 drops:\n{log}");
    assert!(
        warnings[0].contains("client test-nas sends no Message-Authenticator")
            && warnings[0].contains("require_message_authenticator = false"),
        "{}",
        warnings[0]
    );
    server.terminate();
    let stopped = server.log();
    let counters = stopped
        .lines()
        .find(|l| l.contains("stopped") && l.contains("stats="))
        .unwrap_or_else(|| panic!("a counters line at shutdown:\n{stopped}"));
    assert!(
        counters.contains("test-nas/missing_message_authenticator=20"),
        "{counters}"
    );
}

#[test]
fn requests_without_message_authenticator_are_answered_when_not_required() {
    let options = Options {
        require_message_authenticator: false,
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let reply = radclient::send(
        server.address(),
        "auth",
        SECRET,
        &format!("User-Name=alice,User-Password={PIN}"),
        3,
    );
    assert_eq!(reply.code, "Access-Challenge", "{}", reply.output);
    // Replies still carry a Message-Authenticator, first.
    assert_eq!(reply.attributes[0].0, "Message-Authenticator");
}

#[test]
fn proxy_state_without_message_authenticator_is_dropped_when_limited() {
    let options = Options {
        require_message_authenticator: false,
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let client = Client::new(server.address());
    let request = access_request(
        1,
        random_authenticator(),
        "alice",
        PIN,
        false,
        &[(attr::PROXY_STATE, b"x")],
    );
    assert!(client.exchange(&request).is_none());
    assert!(server.wait_for_log(
        "proxy_state_without_message_authenticator",
        Duration::from_secs(2)
    ));
}

#[test]
fn a_bad_message_authenticator_is_dropped() {
    let (server, _) = Server::with_alice(&Options::default());
    let client = Client::new(server.address());
    let mut request = access_request(1, random_authenticator(), "alice", PIN, true, &[]);
    request[22] ^= 0xff; // inside the Message-Authenticator value
    assert!(client.exchange(&request).is_none());
    assert!(server.wait_for_log("bad_message_authenticator", Duration::from_secs(2)));
}

#[test]
fn proxy_states_are_echoed_unchanged_and_in_order() {
    let (server, _) = Server::with_alice(&Options::default());
    let client = Client::new(server.address());
    let authenticator = random_authenticator();
    let states: [(u8, &[u8]); 3] = [
        (attr::PROXY_STATE, b"first"),
        (attr::PROXY_STATE, &[0, 1, 2, 255]),
        (attr::PROXY_STATE, b"third"),
    ];
    let reply = client
        .exchange(&access_request(
            9,
            authenticator,
            "alice",
            "wrong",
            true,
            &states,
        ))
        .unwrap();
    let packet = verified_reply(&reply, &authenticator);
    assert_eq!(packet.code, code::ACCESS_REJECT);
    assert_eq!(packet.identifier, 9);
    let echoed: Vec<&[u8]> = packet.all(attr::PROXY_STATE).collect();
    assert_eq!(
        echoed,
        vec![&b"first"[..], &[0, 1, 2, 255][..], &b"third"[..]]
    );
}

#[test]
fn an_unknown_client_is_dropped_and_counted() {
    let options = Options {
        client_address: "127.0.0.2/32".into(),
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    let reply = radclient::send(
        server.address(),
        "status",
        SECRET,
        "Message-Authenticator=0x00",
        1,
    );
    assert_eq!(reply.code, "none");
    assert!(server.wait_for_log("unknown_client", Duration::from_secs(2)));
}

#[test]
fn malformed_datagrams_are_dropped_and_the_server_keeps_serving() {
    let (server, _) = Server::with_alice(&Options::default());
    let client = Client::new(server.address());
    let valid = access_request(3, random_authenticator(), "alice", "wrong", true, &[]);
    let mut too_long_length = valid.clone();
    too_long_length[3] = too_long_length[3].wrapping_add(10);
    let mut zero_attribute = valid.clone();
    zero_attribute[21] = 0;
    let mut overrun = valid.clone();
    overrun[39] = 250;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![1, 2, 3, 4],
        valid[..19].to_vec(),
        too_long_length,
        zero_attribute,
        overrun,
        vec![0xff; 5000],
    ];
    for datagram in &garbage {
        client.send(datagram);
    }
    let status = {
        let authenticator = random_authenticator();
        let mut builder = PacketBuilder::new(code::STATUS_SERVER, 77);
        builder.message_authenticator();
        (
            builder.finish_request(&authenticator, SECRET.as_bytes()),
            authenticator,
        )
    };
    let reply = client.exchange(&status.0).expect("still serving");
    assert_eq!(verified_reply(&reply, &status.1).code, code::ACCESS_ACCEPT);
    assert!(server.wait_for_log("malformed", Duration::from_secs(2)));
}

/// A server listening on an IPv4 and an IPv6 address, with a NAS on each loopback.
fn dual_stack(listen: [&str; 2]) -> Server {
    let extra =
        format!("[[client]]\nname = \"v6-nas\"\naddress = \"::1\"\nsecret = \"{SECRET}\"\n");
    let options = Options {
        listen: listen.iter().map(|a| a.to_string()).collect(),
        extra,
        ..Options::default()
    };
    let (server, _) = Server::with_alice(&options);
    assert_eq!(server.addresses.len(), 2);
    server
}

#[test]
fn ipv4_and_ipv6_listeners_answer_from_their_own_socket() {
    let server = dual_stack(["127.0.0.1:0", "[::1]:0"]);
    for address in &server.addresses {
        let reply = radclient::auth(*address, &format!("User-Name=alice,User-Password={PIN}"));
        assert_eq!(
            reply.code, "Access-Challenge",
            "via {address}: {}",
            reply.output
        );
        // The raw client asserts the reply's source address.
        let client = Client::new(*address);
        let authenticator = random_authenticator();
        let reply = client
            .exchange(&access_request(1, authenticator, "alice", "bad", true, &[]))
            .unwrap();
        verified_reply(&reply, &authenticator);
    }
}

#[test]
fn wildcard_listeners_answer_from_the_address_the_request_went_to() {
    let server = dual_stack(["0.0.0.0:0", "[::]:0"]);
    // 127.0.0.2 is local too, but the kernel's route back to 127.0.0.1 would pick 127.0.0.1
    // as the source; the raw client asserts the reply comes from where the request went.
    let targets = server.addresses.iter().map(|address| {
        let ip: std::net::IpAddr = if address.is_ipv6() {
            "::1".parse().unwrap()
        } else {
            "127.0.0.2".parse().unwrap()
        };
        std::net::SocketAddr::new(ip, address.port())
    });
    for target in targets {
        let reply = radclient::auth(target, &format!("User-Name=alice,User-Password={PIN}"));
        assert_eq!(
            reply.code, "Access-Challenge",
            "via {target}: {}",
            reply.output
        );
        let client = Client::new(target);
        let authenticator = random_authenticator();
        let reply = client
            .exchange(&access_request(1, authenticator, "alice", PIN, true, &[]))
            .unwrap_or_else(|| panic!("no reply via {target}"));
        assert_eq!(
            verified_reply(&reply, &authenticator).code,
            code::ACCESS_CHALLENGE,
            "via {target}"
        );
        // Status-Server is answered on the receive loop itself, by another path.
        let authenticator = random_authenticator();
        let mut builder = PacketBuilder::new(code::STATUS_SERVER, 9);
        builder.message_authenticator();
        let status = builder.finish_request(&authenticator, SECRET.as_bytes());
        let reply = client.exchange(&status).expect("a Status-Server reply");
        assert_eq!(
            verified_reply(&reply, &authenticator).code,
            code::ACCESS_ACCEPT
        );
    }
}

#[test]
fn sigterm_stops_the_server_cleanly_and_frees_the_port() {
    let (mut server, _) = Server::with_alice(&Options::default());
    let address = server.address();
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(server.log().contains("stopped"));
    std::net::UdpSocket::bind(address).expect("the port is free again");
}
