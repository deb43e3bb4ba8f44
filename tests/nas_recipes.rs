//! The README's "NAS compatibility" recipes, run as written against real NAS software:
//! pam_radius_auth 2.0 driven by pamtester on a pseudo-terminal (tests/peers/pam_terminal.py),
//! and Wi-Fi 802.1X with EAP-TTLS/PAP terminated by FreeRADIUS 3.2 (Debian's stock raddb
//! with the recipe's edits), the inner tunnel proxied to otpgate, driven by eapol_test; and
//! node-radius (the `radius` npm package, tests/peers/node) as a NAS. Each test checks that
//! the README still carries the lines it uses.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::background::Background;
use common::{Options, PIN, SECRET, Server, free_port, is_root, otp_of};

const README: &str = include_str!("../README.md");
const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers");
const SNIPPETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/freeradius");
/// The stock configuration of Debian's freeradius package.
const STOCK_RADDB: &str = "/etc/freeradius/3.0";
/// The secret of the stock clients.conf's localhost client, which eapol_test uses.
const STOCK_CLIENT_SECRET: &str = "testing123";

fn assert_readme_has(line: &str) {
    assert!(
        README.lines().any(|l| l.trim() == line.trim()),
        "the README's NAS recipes lack the line {line:?}"
    );
}

/// Waits until one line of the server's log contains every one of `parts`.
fn logged(server: &Server, parts: &[&str]) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if server
            .log()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A PAM service file in /etc/pam.d (the only place pamtester's libpam looks), removed on
/// drop.
struct PamService {
    name: String,
}

impl PamService {
    fn new(test: &str, text: &str) -> PamService {
        assert!(
            is_root(),
            "this test writes a PAM service into /etc/pam.d and must run as root (as CI does)"
        );
        let name = format!("otpgate-test-{}-{test}", std::process::id());
        std::fs::write(Path::new("/etc/pam.d").join(&name), text).unwrap();
        PamService { name }
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new("/etc/pam.d").join(&self.name));
    }
}

/// pamtester on a terminal: types `PIN`, then the code of the newest SMS in `spool`.
/// Returns (success, what the terminal showed).
fn pamtester(service: &PamService, spool: &Path) -> (bool, String) {
    let output = Command::new("python3")
        .arg(format!("{PEERS}/pam_terminal.py"))
        .args([&service.name, "alice", PIN])
        .arg(spool)
        .output()
        .expect("python3 runs the pamtester terminal");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn pam_radius_auth_answers_the_challenge_with_the_code_hidden_and_is_accepted() {
    // The recipe: no Message-Authenticator from pam_radius_auth 2.0, Prompt = No-Echo sent.
    assert_readme_has("require_message_authenticator = false");
    assert_readme_has("send_prompt = true");
    let (server, _) = Server::with_alice(&Options {
        require_message_authenticator: false,
        challenge_extra: "send_prompt = true".into(),
        ..Options::default()
    });
    let scratch = tempfile::tempdir().unwrap();
    let servers = scratch.path().join("pam_radius_auth.conf");
    // The timeout (3 s, one try) exceeds [sms] reply_within (2 s), as the recipe says.
    std::fs::write(&servers, format!("{} {SECRET} 3\n", server.address())).unwrap();
    let line = "auth required pam_radius_auth.so conf=/etc/pam_radius_auth.conf prompt_attribute";
    assert_readme_has(line);
    let service = PamService::new(
        "hidden",
        &format!(
            "{}\n",
            line.replace("/etc/pam_radius_auth.conf", &servers.display().to_string())
        ),
    );

    let (ok, terminal) = pamtester(&service, &server.spool());
    assert!(ok, "pamtester failed:\n{terminal}");
    assert!(
        terminal.contains("Enter the code sent to +49********67:"),
        "{terminal}"
    );
    assert!(
        terminal.contains("successfully authenticated"),
        "{terminal}"
    );
    let otp = otp_of(&server.wait_for_sms(1).1);
    // Typed with echo off: neither the PIN nor the code appears on the terminal.
    assert!(!terminal.contains(&otp), "the code was echoed:\n{terminal}");
    assert!(!terminal.contains(PIN), "the PIN was echoed:\n{terminal}");
    assert!(
        logged(&server, &["outcome=\"challenge\""]),
        "{}",
        server.log()
    );
    assert!(logged(&server, &["outcome=\"accept\""]), "{}", server.log());
}

#[test]
fn without_send_prompt_pam_radius_auth_echoes_the_code() {
    // The recipe's send_prompt is what hides the code: without it the terminal shows it.
    let (server, _) = Server::with_alice(&Options {
        require_message_authenticator: false,
        ..Options::default()
    });
    let scratch = tempfile::tempdir().unwrap();
    let servers = scratch.path().join("pam_radius_auth.conf");
    std::fs::write(&servers, format!("{} {SECRET} 3\n", server.address())).unwrap();
    let service = PamService::new(
        "echoed",
        &format!(
            "auth required pam_radius_auth.so conf={} prompt_attribute\n",
            servers.display()
        ),
    );
    let (ok, terminal) = pamtester(&service, &server.spool());
    assert!(ok, "pamtester failed:\n{terminal}");
    let otp = otp_of(&server.wait_for_sms(1).1);
    assert!(
        terminal.contains(&otp),
        "the code was not echoed:\n{terminal}"
    );
}

/// node-radius as a NAS (tests/peers/node/radius_flow.js): the PIN, then the code of the
/// newest SMS in `server`'s spool once a challenge comes. Returns (accepted, what it printed).
fn node_radius(server: &Server, message_authenticator: bool) -> (bool, String) {
    use std::io::{BufRead, Write};
    let node = format!("{PEERS}/node");
    assert!(
        Path::new(&node).join("node_modules/radius").is_dir(),
        "run `npm ci` in {node} first (scripts/test.sh does)"
    );
    let address = server.address();
    let mut child = Command::new("node")
        .arg(format!("{node}/radius_flow.js"))
        .args([
            address.ip().to_string(),
            address.port().to_string(),
            SECRET.to_string(),
            "alice".into(),
            PIN.into(),
        ])
        .args(message_authenticator.then_some("--message-authenticator"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs the node-radius NAS");
    let mut stdin = child.stdin.take().unwrap();
    let mut printed = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line == "reply Access-Challenge" {
            let code = otp_of(&server.wait_for_sms(1).1);
            writeln!(stdin, "{code}").unwrap();
        }
    }
    (child.wait().unwrap().success(), printed)
}

#[test]
fn node_radius_told_to_add_the_message_authenticator_logs_in() {
    assert_readme_has("pass `add_message_authenticator: true` to `radius.encode`, or set");
    let (server, _) = Server::with_alice(&Options::default());
    let (accepted, printed) = node_radius(&server, true);
    assert!(accepted, "{printed}\n{}", server.log());
    assert_eq!(printed, "reply Access-Challenge\nreply Access-Accept\n");
}

#[test]
fn node_radius_without_the_message_authenticator_is_dropped_and_told_what_to_set() {
    let (server, _) = Server::with_alice(&Options::default());
    let (accepted, printed) = node_radius(&server, false);
    assert!(!accepted);
    assert_eq!(printed, "timeout\n", "dropped, as the README says");
    assert!(
        logged(
            &server,
            &[
                "sends no Message-Authenticator",
                "require_message_authenticator = false"
            ]
        ),
        "{}",
        server.log()
    );
    // The other way the README gives: the client entry stops requiring it.
    let (server, _) = Server::with_alice(&Options {
        require_message_authenticator: false,
        ..Options::default()
    });
    let (accepted, printed) = node_radius(&server, false);
    assert!(accepted, "{printed}\n{}", server.log());
}

/// Debian's stock raddb in `dir`, changed as the Wi-Fi recipe says, plus what a test needs
/// (ports, paths, certificates, its own outer server on `listen`).
fn wifi_raddb(dir: &Path, listen: u16, otpgate_port: u16) {
    let raddb = dir.join("raddb");
    let status = Command::new("cp")
        .args(["-rL", STOCK_RADDB])
        .arg(&raddb)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cannot copy {STOCK_RADDB} (Debian package freeradius)"
    );
    let edit = |file: &str, changes: &[(&str, String)]| {
        let path = raddb.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in changes {
            assert!(text.contains(from), "{file} has no {from:?}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(&path, text).unwrap();
    };
    let d = dir.display();
    // The test's own paths, and no switch to the freerad user.
    edit(
        "radiusd.conf",
        &[
            ("logdir = /var/log/freeradius", format!("logdir = {d}")),
            (
                "raddbdir = /etc/freeradius/3.0",
                format!("raddbdir = {d}/raddb"),
            ),
            (
                "run_dir = ${localstatedir}/run/${name}",
                format!("run_dir = {d}"),
            ),
            ("\tuser = freerad", String::new()),
            ("\tgroup = freerad", String::new()),
        ],
    );

    // The recipe: the inner tunnel goes to otpgate's Wi-Fi realm (the stock line after
    // `suffix` would send it to LOCAL), and the TTLS tunnel copies the outer request's
    // attributes in and the inner reply's out.
    let stock_line = "&Proxy-To-Realm := LOCAL";
    let recipe_line = "&Proxy-To-Realm := \"otpgate_wifi\"";
    assert_readme_has(stock_line);
    assert_readme_has(recipe_line);
    edit(
        "sites-enabled/inner-tunnel",
        &[
            (stock_line, recipe_line.to_string()),
            ("port = 18120", format!("port = {}", free_port())),
        ],
    );
    let eap = raddb.join("mods-enabled/eap");
    let stock_eap = std::fs::read_to_string(&eap).unwrap();
    let ttls_start = stock_eap.find("\tttls {").expect("a ttls section");
    let ttls_end = ttls_start + stock_eap[ttls_start..].find("\n\t}").expect("its end");
    assert_readme_has("copy_request_to_tunnel = yes");
    assert_readme_has("use_tunneled_reply = yes");
    let ttls = stock_eap[ttls_start..ttls_end]
        .replace(
            "copy_request_to_tunnel = no",
            "copy_request_to_tunnel = yes",
        )
        .replace("use_tunneled_reply = no", "use_tunneled_reply = yes");
    assert!(
        ttls.contains("copy_request_to_tunnel = yes") && ttls.contains("use_tunneled_reply = yes")
    );
    std::fs::write(
        &eap,
        format!(
            "{}{ttls}{}",
            &stock_eap[..ttls_start],
            &stock_eap[ttls_end..]
        )
        .replace(
            "/etc/ssl/private/ssl-cert-snakeoil.key",
            &format!("{d}/server.key"),
        )
        .replace(
            "/etc/ssl/certs/ssl-cert-snakeoil.pem",
            &format!("{d}/server.pem"),
        ),
    )
    .unwrap();
    write_certificates(dir);

    // Both shipped home-server snippets, pointed at the test's otpgate.
    for snippet in ["otpgate-proxy.conf", "otpgate-wifi.conf"] {
        let text = std::fs::read_to_string(format!("{SNIPPETS}/{snippet}"))
            .unwrap()
            .replace("port = 1812", &format!("port = {otpgate_port}"))
            .replace("# src_ipaddr = 127.0.0.1", "src_ipaddr = 127.0.0.1")
            .replace(
                "secret = change-me-to-a-long-random-secret",
                &format!("secret = {SECRET}"),
            );
        std::fs::write(raddb.join(snippet), text).unwrap();
    }
    let mut proxy = std::fs::read_to_string(raddb.join("proxy.conf")).unwrap();
    proxy.push_str("\n$INCLUDE otpgate-proxy.conf\n$INCLUDE otpgate-wifi.conf\n");
    std::fs::write(raddb.join("proxy.conf"), proxy).unwrap();

    // The stock default server listens on every address at 1812 and 1813; the test's
    // outer server does what the recipe adds to it: EAP here, everything else (VPN PAP
    // logins) to otpgate's challenge realm.
    let vpn_route = "if (!&EAP-Message) {";
    assert_readme_has(vpn_route);
    std::fs::remove_file(raddb.join("sites-enabled/default")).unwrap();
    std::fs::write(
        raddb.join("sites-enabled/default"),
        format!(
            r#"server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {listen}
    }}
    authorize {{
        filter_username
        preprocess
        eap {{
            ok = return
        }}
        {vpn_route}
            update control {{
                &Proxy-To-Realm := "otpgate"
            }}
        }}
    }}
    authenticate {{
        eap
    }}
    post-proxy {{
        eap
    }}
}}
"#
        ),
    )
    .unwrap();
}

/// A CA and a server certificate signed by it, for FreeRADIUS's TLS and eapol_test's
/// ca_cert.
fn write_certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "otpgate test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["radius.test".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "radius.test");
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// eapol_test logging in as alice with EAP-TTLS/PAP and `password`; true on EAP success.
fn eapol_test(dir: &Path, port: u16, password: &str) -> (bool, String) {
    let config = dir.join("eapol_test.conf");
    std::fs::write(
        &config,
        format!(
            r#"network={{
    ssid="otpgate-test"
    key_mgmt=WPA-EAP
    eap=TTLS
    identity="alice"
    anonymous_identity="anonymous"
    password="{password}"
    phase2="auth=PAP"
    ca_cert="{}/ca.pem"
    domain_match="radius.test"
}}
"#,
            dir.display()
        ),
    )
    .unwrap();
    let output = Command::new("eapol_test")
        .arg("-c")
        .arg(&config)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-s", STOCK_CLIENT_SECRET, "-t", "15"])
        .output()
        .expect("eapol_test runs (Debian package eapoltest)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (
        output.status.success() && text.trim_end().ends_with("SUCCESS"),
        text,
    )
}

#[test]
fn wifi_eap_ttls_pap_logs_in_two_pass_through_freeradius_while_vpn_gets_a_challenge() {
    let (otpgate_port, proxy_port) = (free_port(), free_port());
    // The recipe's two clients: the proxy's main address (VPN, challenge) and the second
    // address its Wi-Fi home server sends from (two-pass).
    assert_readme_has("src_ipaddr = 127.0.0.2");
    assert_readme_has("src_ipaddr = 127.0.0.1");
    assert_readme_has("mode = \"two-pass\"");
    let (dir, config) = Server::prepare(&Options {
        listen: vec![format!("127.0.0.1:{otpgate_port}")],
        extra: format!(
            "[[client]]\nname = \"wifi\"\naddress = \"127.0.0.2/32\"\nsecret = \"{SECRET}\"\n\
             mode = \"two-pass\"\n"
        ),
        ..Options::default()
    });
    common::enroll_alice(&config);
    let server = Server::start(dir, config);

    let scratch = tempfile::tempdir().unwrap();
    wifi_raddb(scratch.path(), proxy_port, otpgate_port);
    let freeradius = Background::start(
        Command::new("freeradius")
            .args(["-X", "-f", "-n", "radiusd", "-d"])
            .arg(scratch.path().join("raddb")),
    );
    assert!(
        freeradius.wait_for("Ready to process requests", Duration::from_secs(20)),
        "FreeRADIUS did not start:\n{}",
        freeradius.output()
    );

    // Pass one: the PIN as the Wi-Fi password. otpgate sends the SMS and rejects.
    let (ok, first) = eapol_test(scratch.path(), proxy_port, PIN);
    assert!(!ok, "the PIN alone logged in:\n{first}");
    let otp = otp_of(&server.wait_for_sms(1).1);
    // Two-pass: the PIN-only step is a Reject (with the prompt), not a challenge that the
    // supplicant could not answer inside the tunnel.
    assert!(
        logged(
            &server,
            &[
                "client=wifi user=alice",
                "outcome=\"reject\" reason=PIN right, challenge created"
            ]
        ),
        "the inner tunnel did not reach otpgate as the two-pass client wifi:\n{}",
        server.log()
    );
    // Pass two: PIN and code together.
    let (ok, second) = eapol_test(scratch.path(), proxy_port, &format!("{PIN}{otp}"));
    assert!(ok, "EAP-TTLS/PAP with PIN + code failed:\n{second}");
    assert!(second.contains("MPPE keys OK: 1"), "{second}");
    assert!(
        logged(&server, &["client=wifi", "outcome=\"accept\""]),
        "{}",
        server.log()
    );
    // The outer request's Calling-Station-Id reached otpgate (copy_request_to_tunnel).
    assert!(
        logged(
            &server,
            &["client=wifi", "calling_station_id=02-00-00-00-00-01"]
        ),
        "{}",
        server.log()
    );

    // The VPN through the same proxy, from its main address: a challenge.
    let vpn = common::radclient::send(
        format!("127.0.0.1:{proxy_port}").parse().unwrap(),
        "auth",
        STOCK_CLIENT_SECRET,
        &format!("User-Name=alice,User-Password={PIN},Message-Authenticator=0x00"),
        8,
    );
    assert_eq!(vpn.code, "Access-Challenge", "{}", vpn.output);
    assert!(
        logged(&server, &["client=test-nas", "outcome=\"challenge\""]),
        "{}",
        server.log()
    );
}
