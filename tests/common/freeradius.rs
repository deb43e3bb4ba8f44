//! FreeRADIUS 3.2 started by a test: a raddb in a scratch folder with one virtual server on
//! a loopback port that proxies every request to the realm `otpgate`, whose home server
//! comes from a snippet (the shipped UDP or RadSec one, with the test's ports and files).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::background::Background;

/// The secret between radclient and FreeRADIUS.
pub const NAS_SECRET: &str = "nas-to-freeradius-secret";

/// A free port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `radiusd.conf` in `dir`, listening on `listen`, with `snippet` (the home server,
/// pool and realm `otpgate`) as `otpgate-proxy.conf`.
pub fn write_config(dir: &Path, listen: u16, snippet: &str) {
    std::fs::write(dir.join("otpgate-proxy.conf"), snippet).unwrap();
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

/// Runs `freeradius -X` on the raddb in `dir` until it is ready.
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
