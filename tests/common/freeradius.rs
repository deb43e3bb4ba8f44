//! FreeRADIUS 3.2 as a proxy in front of otpgate, for the tests: a minimal radiusd.conf in
//! a folder of the test's own that includes one of the snippets shipped in etc/freeradius/
//! and proxies every request of a NAS on loopback to the realm `otpgate` it defines.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::SECRET;
use super::background::Background;

/// The secret between the NAS (radclient) and FreeRADIUS.
pub const NAS_SECRET: &str = "nas-to-freeradius-secret";

/// The shipped snippet `etc/freeradius/NAME` with otpgate's test secret and failure
/// detection quicker than production wants, so that a test need not wait long.
pub fn snippet(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("etc/freeradius")
            .join(name),
    )
    .unwrap()
    .replace(
        "secret = change-me-to-a-long-random-secret",
        &format!("secret = {SECRET}"),
    )
    .replace("response_window = 10", "response_window = 2")
    .replace("zombie_period = 20", "zombie_period = 2")
    .replace("check_interval = 10", "check_interval = 1")
    .replace("check_timeout = 4", "check_timeout = 1")
    .replace("num_answers_to_alive = 3", "num_answers_to_alive = 2")
}

/// A FreeRADIUS configuration in `dir`: one virtual server on `listen` that proxies every
/// request to the realm `otpgate` that `proxy` (the text of a snippet) defines.
pub fn write_config(dir: &Path, listen: u16, proxy: &str) {
    std::fs::write(dir.join("otpgate-proxy.conf"), proxy).unwrap();
    let d = dir.display();
    let config = format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
raddbdir = {d}
confdir = {d}
logdir = {d}
run_dir = {d}
db_dir = {d}
libdir = /usr/lib/freeradius
name = freeradius
pidfile = {d}/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
    destination = stderr
    colourise = no
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}}
proxy_requests = yes
proxy server {{
    default_fallback = no
}}
$INCLUDE otpgate-proxy.conf
client nas {{
    ipaddr = 127.0.0.1
    secret = {NAS_SECRET}
}}
thread pool {{
    start_servers = 2
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 2
}}
modules {{
}}
server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {listen}
    }}
    authorize {{
        update control {{
            &Proxy-To-Realm := "otpgate"
        }}
    }}
    authenticate {{
    }}
}}
"#
    );
    std::fs::write(dir.join("radiusd.conf"), config).unwrap();
}

/// Runs FreeRADIUS in the foreground with debug output on the config in `dir`, and waits
/// until it is ready.
pub fn start(dir: &Path) -> Background {
    let freeradius = Background::start(
        Command::new("freeradius")
            .args(["-X", "-f", "-n", "radiusd", "-d"])
            .arg(dir),
    );
    assert!(
        freeradius.wait_for("Ready to process requests", Duration::from_secs(10)),
        "FreeRADIUS did not start:\n{}",
        freeradius.output()
    );
    freeradius
}
