//! `[directory]`: the LDAP / Active Directory user source (DESIGN section 10), as written in
//! TOML and as checked at start-up. A URL that would send passwords in clear, a filter without
//! `{user}` or that does not parse, a missing service account: each is a `file: key: problem`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Secret, Span};

/// `[directory]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectory {
    /// `ldap://` or `ldaps://` URLs, tried in this order.
    urls: Vec<String>,
    /// StartTLS on `ldap://` URLs (on by default: passwords go over these connections).
    #[serde(default = "super::yes")]
    starttls: bool,
    /// PEM file of the CA(s) that sign the servers' certificates; default the system's.
    ca_file: Option<PathBuf>,
    /// The service account that searches for users.
    bind_dn: Option<String>,
    /// A file whose first line is the service account's password.
    bind_password_file: Option<PathBuf>,
    /// Search without a service account (only when written here on purpose).
    #[serde(default)]
    anonymous_search: bool,
    base_dn: String,
    #[serde(default = "default_user_filter")]
    user_filter: String,
    #[serde(default = "default_phone_attributes")]
    phone_attributes: Vec<String>,
    #[serde(default = "default_group_attribute")]
    group_attribute: String,
    #[serde(default)]
    disabled_filter: String,
    #[serde(default)]
    auto_enroll: bool,
    #[serde(default = "default_timeout")]
    timeout: Span,
    #[serde(default = "default_pool_size")]
    pool_size: usize,
    #[serde(default = "default_cache")]
    cache: Span,
    #[serde(default = "default_cache_entries")]
    cache_entries: usize,
    #[serde(default)]
    allow_insecure: bool,
    #[serde(default = "default_breaker_backoff")]
    breaker_backoff: Span,
}

fn default_user_filter() -> String {
    "(&(objectClass=inetOrgPerson)(uid={user}))".into()
}
fn default_phone_attributes() -> Vec<String> {
    vec!["mobile".into()]
}
fn default_group_attribute() -> String {
    "memberOf".into()
}
fn default_timeout() -> Span {
    Span(Duration::from_secs(5))
}
fn default_pool_size() -> usize {
    4
}
fn default_cache() -> Span {
    Span(Duration::from_secs(60))
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_breaker_backoff() -> Span {
    Span(Duration::from_secs(30))
}

/// The tag of `user_filter` that the escaped user name replaces.
pub const USER_TAG: &str = "{user}";

/// The most connections of each kind (searches, binds) a pool may keep.
const MAX_POOL_SIZE: usize = 64;

/// `[directory]`, checked.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// Tried in order; each has its breaker.
    pub urls: Vec<url::Url>,
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    /// The service account; None for an anonymous search.
    pub service: Option<(String, Secret)>,
    pub base_dn: String,
    /// Has `{user}` where the RFC 4515-escaped name goes.
    pub user_filter: String,
    /// In order of preference: the first that holds a usable number is the phone.
    pub phone_attributes: Vec<String>,
    pub group_attribute: String,
    /// None when not set: nobody is disabled by the directory.
    pub disabled_filter: Option<String>,
    pub auto_enroll: bool,
    /// For a connect, a TLS handshake, and each operation.
    pub timeout: Duration,
    /// Connections per pool (one pool searches, one checks passwords).
    pub pool_size: usize,
    /// How long a lookup is kept; zero: every login asks the directory.
    pub cache: Duration,
    pub cache_entries: usize,
    pub allow_insecure: bool,
    pub breaker_backoff: Duration,
    /// `[group.NAME] directory_group`: (the group's DN, normalised by `normalise_dn`, NAME),
    /// in the order of the `[group.*]` tables.
    pub groups: Vec<(String, String)>,
}

/// A DN in the form two spellings of the same DN share: lower case, no blanks around `,`
/// and `=` (directories return `memberOf` values in their own spelling).
pub fn normalise_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

pub(super) fn check_directory(
    raw: RawDirectory,
    groups: Vec<(String, String)>,
    problems: &mut Problems,
) -> DirectoryConfig {
    if raw.urls.is_empty() {
        problems.add(
            "directory.urls",
            "give at least one ldap:// or ldaps:// URL",
        );
    }
    let mut urls = Vec::new();
    for (index, text) in raw.urls.iter().enumerate() {
        let key = format!("directory.urls[{index}]");
        match url::Url::parse(text) {
            Ok(url) if !matches!(url.scheme(), "ldap" | "ldaps") => {
                problems.add(&key, format!("'{text}' is not an ldap:// or ldaps:// URL"))
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                problems.add(&key, format!("'{text}' names no host"))
            }
            Ok(url) if url.path().len() > 1 || url.query().is_some() => problems.add(
                &key,
                format!("'{text}': give the server only; the base DN is directory.base_dn"),
            ),
            Ok(url) => {
                if url.scheme() == "ldap" && !raw.starttls && !raw.allow_insecure {
                    problems.add(
                        &key,
                        format!(
                            "'{text}' would send passwords in clear: set starttls = true, use \
                             ldaps://, or (test rigs only) allow_insecure = true"
                        ),
                    );
                }
                urls.push(url);
            }
            Err(e) => problems.add(&key, format!("'{text}' is not a URL: {e}")),
        }
    }
    if let Some(file) = &raw.ca_file
        && let Err(e) = std::fs::metadata(file)
    {
        problems.add(
            "directory.ca_file",
            format!("cannot read {}: {e}", file.display()),
        );
    }
    let service = match (&raw.bind_dn, &raw.bind_password_file, raw.anonymous_search) {
        (Some(dn), Some(file), false) => match super::read_secret(file) {
            Ok(password) if password.expose().is_empty() => {
                problems.add(
                    "directory.bind_password_file",
                    format!("{} is empty", file.display()),
                );
                None
            }
            Ok(password) => Some((dn.clone(), password)),
            Err(e) => {
                problems.add(
                    "directory.bind_password_file",
                    format!("cannot read {}: {e}", file.display()),
                );
                None
            }
        },
        (None, None, true) => None,
        (_, _, true) => {
            problems.add(
                "directory.anonymous_search",
                "give either anonymous_search = true or bind_dn and bind_password_file",
            );
            None
        }
        (None, _, false) => {
            problems.add(
                "directory.bind_dn",
                "missing: the service account that searches for users (or set \
                 anonymous_search = true)",
            );
            None
        }
        (Some(_), None, false) => {
            problems.add("directory.bind_password_file", "missing");
            None
        }
    };
    if raw.base_dn.trim().is_empty() {
        problems.add("directory.base_dn", "must not be empty");
    }
    check_filter("directory.user_filter", &raw.user_filter, true, problems);
    let disabled_filter = (!raw.disabled_filter.trim().is_empty()).then(|| {
        check_filter(
            "directory.disabled_filter",
            &raw.disabled_filter,
            false,
            problems,
        );
        raw.disabled_filter.clone()
    });
    if raw.phone_attributes.is_empty() {
        problems.add("directory.phone_attributes", "name at least one attribute");
    }
    for (key, names) in [
        ("directory.phone_attributes", &raw.phone_attributes),
        (
            "directory.group_attribute",
            &vec![raw.group_attribute.clone()],
        ),
    ] {
        for name in names.iter().filter(|n| !is_attribute_name(n)) {
            problems.add(key, format!("'{name}' is not an attribute name"));
        }
    }
    if raw.timeout.0.is_zero() {
        problems.add("directory.timeout", "must be longer than 0s");
    }
    if !(1..=MAX_POOL_SIZE).contains(&raw.pool_size) {
        problems.add(
            "directory.pool_size",
            format!("must be between 1 and {MAX_POOL_SIZE}"),
        );
    }
    if raw.cache_entries == 0 {
        problems.add(
            "directory.cache_entries",
            "must be at least 1 (cache = \"0s\" turns the cache off)",
        );
    }
    DirectoryConfig {
        urls,
        starttls: raw.starttls,
        ca_file: raw.ca_file,
        service,
        base_dn: raw.base_dn,
        user_filter: raw.user_filter,
        phone_attributes: raw.phone_attributes,
        group_attribute: raw.group_attribute,
        disabled_filter,
        auto_enroll: raw.auto_enroll,
        timeout: raw.timeout.0,
        pool_size: raw.pool_size,
        cache: raw.cache.0,
        cache_entries: raw.cache_entries,
        allow_insecure: raw.allow_insecure,
        breaker_backoff: raw.breaker_backoff.0,
        groups: groups
            .into_iter()
            .map(|(dn, name)| (normalise_dn(&dn), name))
            .collect(),
    }
}

/// An LDAP attribute description: a letter, then letters, digits and `-` (RFC 4512 section
/// 1.4 `descr`), or a dotted OID.
fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => chars.all(|c| c.is_ascii_alphanumeric() || c == '-'),
        Some(c) if c.is_ascii_digit() => name
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit())),
        _ => false,
    }
}

/// A filter must parse (with `{user}` filled in) and, for `user_filter`, have the tag.
fn check_filter(key: &str, filter: &str, needs_user: bool, problems: &mut Problems) {
    if needs_user && !filter.contains(USER_TAG) {
        problems.add(
            key,
            format!("has no {USER_TAG} tag, so it would match the same entries for every user"),
        );
        return;
    }
    if !needs_user && filter.contains(USER_TAG) {
        problems.add(key, format!("{USER_TAG} is for user_filter only"));
    }
    let sample = filter.replace(USER_TAG, "sample");
    if ldap3::parse_filter(&sample).is_err() {
        problems.add(key, format!("'{filter}' is not an LDAP filter (RFC 4515)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_spellings_of_one_dn_normalise_alike() {
        assert_eq!(
            normalise_dn("CN=VPN-Staff, OU=Groups,dc=Example,  DC = org"),
            normalise_dn("cn=vpn-staff,ou=groups,dc=example,dc=org")
        );
    }

    #[test]
    fn attribute_names_are_descriptors_or_oids() {
        for good in ["mobile", "telephoneNumber", "x-phone", "2.5.4.20"] {
            assert!(is_attribute_name(good), "{good}");
        }
        for bad in ["", "mobile)(uid=*", "1..2", "-x", "a b"] {
            assert!(!is_attribute_name(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod example {
    use std::path::Path;

    use crate::config::Config;

    /// etc/otpgate.toml with its `[directory]` block (and the `[group.staff]` after it)
    /// uncommented, the password file being `password`.
    fn with_directory(password: &Path) -> String {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml"))
                .unwrap();
        let start = text.find("# [directory]").unwrap();
        let end = start + text[start..].find("\n\n").unwrap();
        let block: String = text[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect::<Vec<_>>()
            .join("\n");
        let block = block.replace(
            "/etc/otpgate/ldap-password",
            &password.display().to_string(),
        );
        let block = block.replace("ca_file = \"/etc/otpgate/ldap-ca.pem\"", "");
        format!("{}{block}{}", &text[..start], &text[end..])
    }

    fn password() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "s3cret\n").unwrap();
        file
    }

    #[test]
    fn the_example_directory_block_loads_with_its_defaults() {
        let file = password();
        let config = Config::from_toml(&with_directory(file.path()), Path::new("t.toml")).unwrap();
        let directory = config.directory.unwrap();
        assert_eq!(directory.urls.len(), 2);
        assert_eq!(directory.phone_attributes, ["mobile"]);
        assert_eq!(
            directory.groups,
            [(
                "cn=vpn-staff,ou=groups,dc=example,dc=org".to_string(),
                "staff".to_string()
            )]
        );
        let (dn, secret) = directory.service.unwrap();
        assert_eq!(
            (dn.as_str(), secret.expose()),
            ("cn=otpgate,ou=services,dc=example,dc=org", "s3cret")
        );
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    #[test]
    fn a_stray_key_and_each_bad_value_is_named_at_start_up() {
        let file = password();
        let text = with_directory(file.path());
        let bad = |from: &str, to: &str| -> String {
            let changed = text.replacen(from, to, 1);
            assert_ne!(changed, text, "{from}");
            Config::from_toml(&changed, Path::new("t.toml"))
                .expect_err(to)
                .to_string()
        };
        assert!(bad("\n[directory]\n", "\n[directory]\nstray_key = 1\n").contains("stray_key"));
        let err = bad("starttls = true", "starttls = false");
        assert!(
            err.contains("t.toml: directory.urls[1]") && err.contains("in clear"),
            "{err}"
        );
        let err = bad("uid={user}", "uid=fixed");
        assert!(
            err.contains("directory.user_filter") && err.contains("{user}"),
            "{err}"
        );
        let err = bad("disabled_filter = \"\"", "disabled_filter = \"(broken\"");
        assert!(err.contains("directory.disabled_filter"), "{err}");
        let err = bad("ldaps://dc1.example.org", "https://dc1.example.org");
        assert!(err.contains("directory.urls[0]"), "{err}");
        let err = bad(
            "
bind_dn = ",
            "
# bind_dn = ",
        );
        assert!(err.contains("directory.bind_dn"), "{err}");
        let err = bad("pool_size = 4", "pool_size = 0");
        assert!(err.contains("directory.pool_size"), "{err}");
        let err = bad("anonymous_search = false", "anonymous_search = true");
        assert!(err.contains("directory.anonymous_search"), "{err}");
    }

    #[test]
    fn a_directory_client_or_group_needs_a_directory() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml"))
                .unwrap()
                .replace("# first_factor = \"pin\"", "first_factor = \"directory\"");
        let err = Config::from_toml(&text, Path::new("t.toml"))
            .expect_err("no [directory]")
            .to_string();
        assert!(err.contains("client (vpn).first_factor"), "{err}");
    }
}
