//! radclient (freeradius-utils) as an independent RADIUS client: it checks our Response
//! Authenticator and Message-Authenticator itself and prints the reply by name.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// A reply as radclient printed it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// "Access-Accept", "Access-Challenge", "Access-Reject", or "none" if no reply came.
    pub code: String,
    pub attributes: Vec<(String, String)>,
    pub output: String,
}

impl Reply {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.attributes
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The State as radclient prints it (0x...), to send back.
    pub fn state(&self) -> String {
        self.get("State")
            .unwrap_or_else(|| panic!("no State in {}", self.output))
            .to_string()
    }
}

/// Sends one request of `kind` ("auth" or "status") with the given attribute list
/// (radclient syntax, comma-separated) and waits up to `timeout_s` seconds, no retries.
pub fn send(
    server: SocketAddr,
    kind: &str,
    secret: &str,
    attributes: &str,
    timeout_s: u32,
) -> Reply {
    send_with_dictionary(server, kind, secret, attributes, timeout_s, None)
}

/// Like `send`, with radclient reading its dictionaries from `dictionary_dir` (-D).
pub fn send_with_dictionary(
    server: SocketAddr,
    kind: &str,
    secret: &str,
    attributes: &str,
    timeout_s: u32,
    dictionary_dir: Option<&std::path::Path>,
) -> Reply {
    let target = match server {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    };
    let mut command = Command::new("radclient");
    command.args(["-x", "-r", "1", "-t", &timeout_s.to_string()]);
    if server.is_ipv6() {
        command.arg("-6");
    }
    if let Some(dir) = dictionary_dir {
        command.arg("-D").arg(dir);
    }
    let mut child = command
        .args([&target, kind, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient is installed (Debian package freeradius-utils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{attributes}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&text)
}

/// An Access-Request with a Message-Authenticator.
pub fn auth(server: SocketAddr, attributes: &str) -> Reply {
    send(
        server,
        "auth",
        super::SECRET,
        &format!("{attributes},Message-Authenticator=0x00"),
        3,
    )
}

/// A Status-Server with a Message-Authenticator.
pub fn status(server: SocketAddr) -> Reply {
    send(
        server,
        "status",
        super::SECRET,
        "Message-Authenticator=0x00",
        3,
    )
}

fn parse(text: &str) -> Reply {
    let mut code = "none".to_string();
    let mut attributes = Vec::new();
    let mut in_reply = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Received ") {
            code = rest.split_whitespace().next().unwrap_or("").to_string();
            in_reply = true;
            continue;
        }
        if in_reply {
            let Some(attribute) = line.strip_prefix('\t') else {
                in_reply = false;
                continue;
            };
            if let Some((name, value)) = attribute.split_once(" = ") {
                attributes.push((
                    name.trim().to_string(),
                    value.trim().trim_matches('"').to_string(),
                ));
            }
        }
    }
    Reply {
        code,
        attributes,
        output: text.to_string(),
    }
}
