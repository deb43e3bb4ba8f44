//! An OpenLDAP server of the test's own: Debian's `slapd` (scripts/test.sh installs it and
//! `ldap-utils`) with a generated slapd.conf (mdb backend, `dc=example,dc=org`, the memberof
//! overlay), in a temporary directory, on free loopback ports for ldap:// (StartTLS) and
//! ldaps://, with a CA and server certificate the test generates. Run as the `openldap`
//! user (or nobody) when the tests run as root. Its stats log (`-d 256`) shows every search
//! and how many entries it returned. Stopped on drop. No mock: if slapd cannot start, the
//! test fails and says why.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const SERVICE_DN: &str = "cn=otpgate,ou=services,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "service-secret";
pub const STAFF_DN: &str = "cn=vpn-staff,ou=groups,dc=example,dc=org";
pub const ALICE_PASSWORD: &str = "alice-secret";
pub const ALICE_MOBILE: &str = "+491701111111";

/// The directory the tests log in against: alice (mobile, in vpn-staff), bob (mobile, in no
/// group), dave (disabled: employeeType=disabled), nophone (no mobile), two entries named
/// twin, the service account, and a referral object (ou=elsewhere), for which every subtree
/// search of the suffix also returns a continuation reference, as AD's domain root does.
const USERS: &str = "
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=other,dc=example,dc=org
objectClass: organizationalUnit
ou: other

dn: ou=services,dc=example,dc=org
objectClass: organizationalUnit
ou: services

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: cn=otpgate,ou=services,dc=example,dc=org
objectClass: person
cn: otpgate
sn: service
userPassword: service-secret

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mobile: +491701111111
userPassword: alice-secret

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Example
mobile: +491702222222
userPassword: bob-secret

dn: uid=dave,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dave
cn: Dave
sn: Example
mobile: +491703333333
employeeType: disabled
userPassword: dave-secret

dn: uid=nophone,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: nophone
cn: No Phone
sn: Example
userPassword: nophone-secret

dn: uid=twin,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: twin
cn: Twin
sn: One
mobile: +491704444441
userPassword: twin-secret

dn: uid=twin,ou=other,dc=example,dc=org
objectClass: inetOrgPerson
uid: twin
cn: Twin
sn: Two
mobile: +491704444442
userPassword: twin-secret

dn: ou=elsewhere,dc=example,dc=org
objectClass: referral
objectClass: extensibleObject
ou: elsewhere
ref: ldap://127.0.0.1:1/ou=elsewhere,dc=example,dc=org

dn: cn=vpn-staff,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: vpn-staff
member: uid=alice,ou=people,dc=example,dc=org
";

/// A certificate authority and what it signed, as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA in `dir` (files named after `name`) and a server certificate it signs for
    /// 127.0.0.1 and localhost.
    pub fn generate(dir: &Path, name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        let pki = Pki {
            ca: dir.join(format!("{name}-ca.pem")),
            certificate: dir.join(format!("{name}-server.pem")),
            key: dir.join(format!("{name}-server.key")),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.certificate, certificate.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

pub struct Slapd {
    dir: tempfile::TempDir,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    /// The CA that signed slapd's certificate.
    pub pki: Pki,
    run_as: Option<String>,
    child: Option<Child>,
}

use super::{free_tcp_port as free_port, unprivileged_owner};

impl Slapd {
    /// Starts slapd with the test directory loaded (through ldapadd, so that the memberof
    /// overlay sets alice's memberOf).
    pub fn start() -> Slapd {
        assert!(
            Path::new("/usr/sbin/slapd").exists() && which("ldapadd"),
            "slapd or ldapadd is missing: run scripts/test.sh, which installs Debian's slapd \
             and ldap-utils"
        );
        let dir = tempfile::Builder::new()
            .prefix("otpgate-slapd")
            .tempdir()
            .unwrap();
        let pki = Pki::generate(dir.path(), "slapd");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("slapd.conf"), config(dir.path(), &pki)).unwrap();
        let run_as = unprivileged_owner(dir.path(), "openldap");
        let mut slapd = Slapd {
            dir,
            ldap_port: 0,
            ldaps_port: 0,
            pki,
            run_as,
            child: None,
        };
        slapd.ldap_port = free_port();
        slapd.ldaps_port = free_port();
        slapd.start_again();
        slapd.modify("add", USERS);
        slapd
    }

    /// Starts the stopped slapd again on the same ports and data.
    pub fn start_again(&mut self) {
        let urls = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.ldap_port, self.ldaps_port
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new("/usr/sbin/slapd");
        command
            .args(["-d", "256", "-h", &urls, "-f"])
            .arg(self.dir.path().join("slapd.conf"));
        if let Some(user) = &self.run_as {
            command.args(["-u", user]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot run slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.ldaps_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.ldap_port)).is_err()
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("slapd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops slapd (SIGTERM), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs ldapmodify (`action` "add" or "modify") as the admin with `ldif`.
    pub fn modify(&self, action: &str, ldif: &str) {
        let mut args = vec![
            "-x".to_string(),
            "-H".to_string(),
            self.plain_url(),
            "-D".to_string(),
            ADMIN_DN.to_string(),
            "-w".to_string(),
            ADMIN_PASSWORD.to_string(),
            // ManageDsaIT: the referral object is added as an entry, not followed.
            "-M".to_string(),
        ];
        if action == "add" {
            args.push("-a".to_string());
        }
        let mut child = Command::new("ldapmodify")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run ldapmodify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "ldapmodify failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// ldap:// (for StartTLS).
    pub fn plain_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// slapd's stats log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The entry counts of every search result in the log, in order.
    pub fn search_results(&self) -> Vec<usize> {
        self.log()
            .lines()
            .filter(|l| l.contains("SEARCH RESULT"))
            .filter_map(|l| l.split("nentries=").nth(1))
            .filter_map(|n| n.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// The service account's password as a file for `bind_password_file`, in `dir`.
    pub fn service_password_file(dir: &Path) -> PathBuf {
        let file = dir.join("ldap-password");
        std::fs::write(&file, format!("{SERVICE_PASSWORD}\n")).unwrap();
        file
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- slapd log (last lines) ----");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn config(dir: &Path, pki: &Pki) -> String {
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {ca}
TLSCertificateFile {certificate}
TLSCertificateKeyFile {key}

database mdb
suffix \"{SUFFIX}\"
rootdn \"{ADMIN_DN}\"
rootpw {ADMIN_PASSWORD}
directory {dir}/data
maxsize 10485760
overlay memberof
",
        dir = dir.display(),
        ca = pki.ca.display(),
        certificate = pki.certificate.display(),
        key = pki.key.display(),
    )
}
