//! The TOML configuration: serde shapes (`Raw*`, every table `deny_unknown_fields`) and then
//! `Config::load`, which checks what serde cannot and reports every problem as
//! `file: key: problem` at start-up. Nothing else reads the config file.
//!
//! Relative paths (database, key file, spool directory, secret files) are relative to the
//! working directory, as the README's commands run from the repository root.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

pub mod database;
pub mod directory;
mod event;
mod gateway;
mod limits;
mod metrics;
mod radsec;

pub use directory::DirectoryConfig;
pub use event::{EVENT_TAGS, EventKind, EventRule, Recipient, listens};
pub use gateway::{
    GatewayConfig, GatewayKind, HttpBody, HttpGatewayConfig, HttpMethod, ModemGatewayConfig,
    ModemMode, SipgateGatewayConfig, SmtpGatewayConfig, SmtpServerConfig, SmtpTls,
    SpoolGatewayConfig,
};
pub use limits::{AuditConfig, LimitsConfig, NumberType, SendCaps};
pub use metrics::MetricsConfig;
pub use radsec::{RadsecConfig, TlsIdentity, TlsVersion};

use crate::radius::dictionary::{Dictionary, WireAttribute};
use crate::template::{Tag, Template};

/// A configuration that could not be loaded: one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// A duration written as "300s", "15m", "2s 500ms" (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Span).map_err(|e| {
            serde::de::Error::custom(format!(
                "'{text}' is not a duration ({e}); write e.g. \"300s\" or \"15m\""
            ))
        })
    }
}

/// A shared secret or password; `Debug` never prints it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret kept in a file of its own: its first line (a trailing newline is not part
    /// of it).
    pub fn from_file_text(text: &str) -> Self {
        Secret(text.lines().next().unwrap_or_default().to_string())
    }

    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw shapes, as written in TOML.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    client: Vec<RawClient>,
    #[serde(default)]
    challenge: ChallengeConfig,
    #[serde(default)]
    lockout: LockoutConfig,
    #[serde(default)]
    pin: PinConfig,
    #[serde(default)]
    sms: RawSms,
    #[serde(default)]
    gateway: BTreeMap<String, gateway::RawGateway>,
    #[serde(default)]
    smtp: BTreeMap<String, gateway::RawSmtpServer>,
    #[serde(default)]
    event: Vec<event::RawEvent>,
    #[serde(default)]
    group: BTreeMap<String, RawGroup>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    audit: limits::RawAudit,
    directory: Option<directory::RawDirectory>,
    metrics: Option<MetricsConfig>,
    radsec: Option<radsec::RawRadsec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// UDP addresses to answer on, IPv4 and IPv6.
    listen: Vec<SocketAddr>,
    /// SQLite database file (created on first start), or a `postgres://` /
    /// `postgresql://` URL in libpq's format for a database that several nodes share.
    database: String,
    /// PostgreSQL only: a file whose first line is the password (instead of the URL's).
    database_password_file: Option<PathBuf>,
    /// PostgreSQL only: pooled connections, so store calls at once.
    #[serde(default = "default_database_pool")]
    database_pool: u32,
    /// PostgreSQL only: connect timeout and statement timeout.
    #[serde(default = "default_database_timeout")]
    database_timeout: Span,
    /// This node's name in the audit trail and the breaker states; default the host name.
    node_name: Option<String>,
    /// Key file (32 random bytes, hex); created with mode 0600 on first start.
    key_file: PathBuf,
    /// Folder of run-time dictionaries (dictionaries issue).
    #[serde(default = "default_dictionaries")]
    dictionaries: PathBuf,
    /// How long an answered request's reply is kept for retransmissions.
    #[serde(default = "default_dedup_window")]
    dedup_window: Span,
    /// The most bytes the duplicate cache holds (replies and a fixed cost per entry).
    #[serde(default = "default_dedup_max_bytes")]
    dedup_max_bytes: usize,
    /// Default log level when RUST_LOG is not set.
    #[serde(default = "default_log_level")]
    log_level: String,
    /// "text" or "json".
    #[serde(default)]
    log_format: LogFormat,
    /// Requests handled at once; more are dropped (the NAS retransmits).
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    /// Upper bound on one request's handling, SMS wait included.
    #[serde(default = "default_request_timeout")]
    request_timeout: Span,
    /// Put the token serial into every Access-Accept (Otpgate-Serial).
    #[serde(default)]
    return_serial: bool,
}

fn default_dictionaries() -> PathBuf {
    PathBuf::from("dictionaries")
}
fn default_dedup_window() -> Span {
    Span(Duration::from_secs(30))
}
fn default_dedup_max_bytes() -> usize {
    64 * 1024 * 1024
}
/// Below this the duplicate cache would forget replies within a burst of normal traffic.
const MIN_DEDUP_MAX_BYTES: usize = 1024 * 1024;
fn default_log_level() -> String {
    "info".into()
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_request_timeout() -> Span {
    Span(Duration::from_secs(10))
}
fn default_database_pool() -> u32 {
    8
}
fn default_database_timeout() -> Span {
    Span(Duration::from_secs(5))
}

/// The host name, for `node_name`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "otpgate".into())
}

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(PostgresConfig),
}

impl fmt::Display for Database {
    /// The path, or the URL with its password masked: fit for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(pg) => f.write_str(&pg.masked_url()),
        }
    }
}

/// A PostgreSQL database shared by several nodes.
#[derive(Clone)]
pub struct PostgresConfig {
    /// libpq URL; may hold a password, so it is never logged as it is.
    pub url: Secret,
    /// From `database_password_file`; overrides the URL's.
    pub password: Option<Secret>,
    pub pool: u32,
    pub timeout: Duration,
}

impl PostgresConfig {
    pub fn masked_url(&self) -> String {
        database::masked_url(self.url.expose())
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.masked_url())
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    /// IP or CIDR; the most specific match wins. Optional for a RadSec client, where it
    /// restricts where the certificate may connect from.
    address: Option<String>,
    secret: Option<Secret>,
    secret_file: Option<PathBuf>,
    #[serde(default = "yes")]
    require_message_authenticator: bool,
    #[serde(default = "yes")]
    limit_proxy_state: bool,
    #[serde(default = "yes")]
    send_message_authenticator: bool,
    #[serde(default)]
    mode: ClientMode,
    #[serde(default)]
    first_factor: FirstFactor,
    /// Attributes added to every Access-Accept to this client, `Name=value`.
    #[serde(default)]
    accept_attributes: Vec<String>,
    /// RadSec: certificate DNS names (SAN, then CN) that are this client.
    #[serde(default)]
    tls_names: Vec<String>,
    /// RadSec: certificate SHA-256 fingerprints that are this client.
    #[serde(default)]
    tls_fingerprints: Vec<String>,
    /// RadSec: refuse connections that did not negotiate RADIUS/1.1.
    #[serde(default)]
    require_radius_1_1: bool,
}

/// `[group.NAME]`: attributes for the Access-Accept of the group's users.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    attributes: Vec<String>,
    /// The DN of the directory group whose members are in this group (`[directory]`).
    directory_group: Option<String>,
}

pub(crate) fn yes() -> bool {
    true
}

/// How a client learns that an SMS was sent (DESIGN section 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMode {
    /// PIN only -> Access-Challenge with State.
    #[default]
    Challenge,
    /// PIN only -> SMS and Access-Reject with the prompt; PIN + OTP -> Access-Accept.
    TwoPass,
}

/// What the password of a request without State is checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstFactor {
    /// The token's PIN.
    #[default]
    Pin,
    /// The user's directory password, checked by a bind as the user (`[directory]`).
    Directory,
}

/// `[challenge]`: how challenges look and how long they live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeConfig {
    /// How long a challenge can be answered.
    #[serde(default = "default_validity")]
    pub validity: Span,
    /// Wrong OTPs allowed per challenge before it is consumed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// OTP digits for new tokens (6-10).
    #[serde(default = "default_otp_length")]
    pub otp_length: u32,
    /// Reply-Message of the Access-Challenge; tags: {phone_masked}.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// SMS text; tags: {otp}.
    #[serde(default = "default_sms_text")]
    pub sms_text: String,
    /// Also send the Prompt attribute (RFC 2869 section 5.10) with value No-Echo.
    #[serde(default)]
    pub send_prompt: bool,
}

fn default_validity() -> Span {
    Span(Duration::from_secs(300))
}
fn default_max_attempts() -> u32 {
    3
}
fn default_otp_length() -> u32 {
    6
}
fn default_prompt() -> String {
    "Enter the code sent to {phone_masked}:".into()
}
fn default_sms_text() -> String {
    "{otp}".into()
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        ChallengeConfig {
            validity: default_validity(),
            max_attempts: default_max_attempts(),
            otp_length: default_otp_length(),
            prompt: default_prompt(),
            sms_text: default_sms_text(),
            send_prompt: false,
        }
    }
}

/// `[lockout]`: when failures lock a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Failures (wrong PIN, wrong OTP) that lock a token.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// A lock clears itself after this long; "0s" = only an admin unlocks.
    #[serde(default = "default_clear_after")]
    pub clear_after: Span,
    /// Whether a wrong PIN counts as a failure.
    #[serde(default = "yes")]
    pub count_wrong_pin: bool,
}

fn default_max_failures() -> u32 {
    10
}
fn default_clear_after() -> Span {
    Span(Duration::from_secs(15 * 60))
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: default_max_failures(),
            clear_after: default_clear_after(),
            count_wrong_pin: true,
        }
    }
}

/// The most memory a PIN hash may ask for. The config refuses more, and a stored hash that
/// asks for more is treated as damaged instead of allocated: each PIN thread would keep it.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;

/// `[pin]`: Argon2id cost for new PIN hashes (OWASP minimum by default).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    #[serde(default = "default_memory_kib")]
    pub memory_kib: u32,
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
}

fn default_memory_kib() -> u32 {
    19456
}
fn default_iterations() -> u32 {
    2
}
fn default_parallelism() -> u32 {
    1
}

impl Default for PinConfig {
    fn default() -> Self {
        PinConfig {
            memory_kib: default_memory_kib(),
            iterations: default_iterations(),
            parallelism: default_parallelism(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSms {
    #[serde(default)]
    default_chain: Vec<String>,
    #[serde(default = "default_reply_within")]
    reply_within: Span,
    #[serde(default)]
    default_region: Option<String>,
    /// A gateway that failed is skipped for this long, then probed again.
    #[serde(default = "default_breaker_backoff")]
    breaker_backoff: Span,
    /// The longest a chain may take in all, background delivery included.
    #[serde(default = "default_send_within")]
    send_within: Span,
}

fn default_breaker_backoff() -> Span {
    Span(Duration::from_secs(30))
}
fn default_send_within() -> Span {
    Span(Duration::from_secs(60))
}

fn default_reply_within() -> Span {
    Span(Duration::from_secs(2))
}

impl Default for RawSms {
    fn default() -> Self {
        RawSms {
            default_chain: Vec::new(),
            reply_within: default_reply_within(),
            default_region: None,
            breaker_backoff: default_breaker_backoff(),
            send_within: default_send_within(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checked configuration.

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub clients: Vec<ClientConfig>,
    pub challenge: ChallengeConfig,
    pub prompt: Template,
    pub sms_text: Template,
    pub lockout: LockoutConfig,
    pub pin: PinConfig,
    pub sms: SmsConfig,
    pub gateways: BTreeMap<String, GatewayConfig>,
    pub events: Vec<EventRule>,
    /// `[group.NAME]` attributes, encoded.
    pub groups: BTreeMap<String, Vec<WireAttribute>>,
    /// The run-time dictionaries of `[server] dictionaries`.
    pub dictionary: Arc<Dictionary>,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    /// `[directory]`, if users come from LDAP / Active Directory.
    pub directory: Option<DirectoryConfig>,
    /// `[metrics]`; `None`: no HTTP endpoint.
    pub metrics: Option<MetricsConfig>,
    /// `[radsec]`, when RadSec is on.
    pub radsec: Option<RadsecConfig>,
}

/// The vendor attribute that carries the token serial when `return_serial` is on.
pub const SERIAL_ATTRIBUTE: &str = "Otpgate-Serial";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub database: Database,
    /// `[server] node_name`, default the host name.
    pub node_name: String,
    pub key_file: PathBuf,
    pub dictionaries: PathBuf,
    pub dedup_window: Duration,
    pub dedup_max_bytes: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub return_serial: bool,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    /// Where the client may send from. Always set for a UDP client; for a RadSec client an
    /// optional restriction (None: anywhere).
    pub network: Option<IpNet>,
    /// Set for a RadSec client: the certificate decides which client a connection is, and
    /// the client is never matched for UDP.
    pub tls: Option<TlsIdentity>,
    pub secret: Secret,
    pub require_message_authenticator: bool,
    pub limit_proxy_state: bool,
    pub send_message_authenticator: bool,
    pub mode: ClientMode,
    pub first_factor: FirstFactor,
    /// Encoded attributes for every Access-Accept to this client.
    pub accept_attributes: Vec<WireAttribute>,
}

impl ClientConfig {
    /// A client named `name` with `secret`, reached from `network`, and every other key at
    /// the default a `[[client]]` entry gets.
    pub fn with_defaults(name: &str, network: Option<IpNet>, secret: &str) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            network,
            tls: None,
            secret: Secret::new(secret.into()),
            require_message_authenticator: true,
            limit_proxy_state: true,
            send_message_authenticator: true,
            mode: ClientMode::default(),
            first_factor: FirstFactor::default(),
            accept_attributes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub default_chain: Vec<String>,
    pub reply_within: Duration,
    pub default_region: Option<String>,
    pub breaker_backoff: Duration,
    pub send_within: Duration,
}

/// Shortest shared secret accepted (RFC 2865 section 3 recommends at least 16 octets).
const MIN_SECRET_LEN: usize = 16;

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and checks config text; `path` names the file in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![format!("{file}: {}", describe_toml_error(text, &e))],
        })?;
        let mut problems = Problems {
            file: file.clone(),
            list: Vec::new(),
        };
        let config = check(raw, path, &mut problems);
        if problems.list.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                problems: problems.list,
            })
        }
    }
}

/// `section.key (line N): problem`, from the error's span: toml's own message spreads over
/// several lines and does not name the table.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line_number = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string()
        });
    let path = match (section, key.starts_with('[')) {
        (_, true) => key.trim_matches(|c| c == '[' || c == ']').to_string(),
        (Some(section), false) if !key.is_empty() => format!("{section}.{key}"),
        (None, false) if !key.is_empty() => key.to_string(),
        (section, _) => section.unwrap_or_default(),
    };
    format!("{path} (line {line_number}): {message}")
}

pub(crate) struct Problems {
    file: String,
    list: Vec<String>,
}

impl Problems {
    pub(crate) fn add(&mut self, key: &str, problem: impl fmt::Display) {
        self.list.push(format!("{}: {key}: {problem}", self.file));
    }
}

fn check(raw: RawConfig, path: &Path, problems: &mut Problems) -> Config {
    let server = check_server(raw.server, problems);
    let dictionary = Dictionary::load_dir(&server.dictionaries).unwrap_or_else(|e| {
        problems.add("server.dictionaries", e);
        Dictionary::default()
    });
    if server.return_serial && dictionary.attribute(SERIAL_ATTRIBUTE).is_none() {
        problems.add(
            "server.return_serial",
            format!("the dictionaries define no {SERIAL_ATTRIBUTE}"),
        );
    }
    let radsec = raw
        .radsec
        .map(|radsec| radsec::check_radsec(radsec, problems));
    let clients = check_clients(raw.client, &dictionary, problems);
    if radsec.is_none()
        && let Some(client) = clients.iter().find(|c| c.tls.is_some())
    {
        problems.add(
            &format!("client ({}).tls_names", client.name),
            "a RadSec client needs a [radsec] section",
        );
    }
    let groups = raw
        .group
        .iter()
        .map(|(name, group)| {
            let key = format!("group.{name}.attributes");
            (
                name.clone(),
                encode_attributes(&key, &group.attributes, &dictionary, problems),
            )
        })
        .collect();
    check_challenge(&raw.challenge, problems);
    let prompt = parse_template(
        "challenge.prompt",
        &raw.challenge.prompt,
        &[Tag::PhoneMasked],
        problems,
    );
    let sms_text = parse_template(
        "challenge.sms_text",
        &raw.challenge.sms_text,
        &[Tag::Otp],
        problems,
    );
    check_pin(&raw.pin, problems);
    if raw.lockout.max_failures == 0 {
        problems.add("lockout.max_failures", "must be at least 1");
    }
    let smtp_servers = gateway::check_smtp_servers(raw.smtp, problems);
    let gateways: BTreeMap<String, GatewayConfig> = raw
        .gateway
        .into_iter()
        .map(|(name, raw)| {
            let checked = gateway::check_gateway(&name, raw, &smtp_servers, problems);
            (name, checked)
        })
        .collect();
    let sms = check_sms(raw.sms, &gateways, problems);
    let limits = limits::check_limits(raw.limits, sms.default_region.as_deref(), problems);
    let audit = limits::check_audit(raw.audit, problems);
    let directory_groups: Vec<(String, String)> = raw
        .group
        .iter()
        .filter_map(|(name, g)| Some((g.directory_group.clone()?, name.clone())))
        .collect();
    let directory = match raw.directory {
        Some(raw) => Some(directory::check_directory(raw, directory_groups, problems)),
        None => {
            if let Some((_, name)) = directory_groups.first() {
                problems.add(
                    &format!("group.{name}.directory_group"),
                    "needs a [directory] table",
                );
            }
            for client in clients
                .iter()
                .filter(|c| c.first_factor == FirstFactor::Directory)
            {
                problems.add(
                    &format!("client ({}).first_factor", client.name),
                    "\"directory\" needs a [directory] table",
                );
            }
            None
        }
    };
    let events = event::check_events(
        raw.event,
        &|name| gateways.contains_key(name),
        &sms.default_chain,
        problems,
    );
    Config {
        path: path.to_path_buf(),
        server,
        clients,
        challenge: raw.challenge,
        prompt,
        sms_text,
        lockout: raw.lockout,
        pin: raw.pin,
        sms,
        gateways,
        events,
        groups,
        dictionary: Arc::new(dictionary),
        limits,
        audit,
        directory,
        metrics: raw.metrics,
        radsec,
    }
}

/// `[server] database` and the keys that go with a PostgreSQL URL.
fn check_database(raw: &RawServer, problems: &mut Problems) -> Database {
    if !database::is_url(&raw.database) {
        if raw.database_password_file.is_some() {
            problems.add(
                "server.database_password_file",
                "is for a PostgreSQL database (a postgres:// URL) only",
            );
        }
        if raw.database.contains("://") {
            problems.add(
                "server.database",
                "is a file path or a postgres:// / postgresql:// URL",
            );
        }
        return Database::Sqlite(PathBuf::from(&raw.database));
    }
    let masked = database::masked_url(&raw.database);
    match raw.database.parse::<postgres::Config>() {
        Err(e) => problems.add("server.database", format!("{masked}: {e}")),
        Ok(url) => {
            use postgres::config::SslMode;
            if !matches!(url.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
                problems.add(
                    "server.database",
                    format!(
                        "{masked}: otpgate connects to PostgreSQL without TLS, so it cannot \
                         honour this sslmode; use sslmode=disable over a private network or a \
                         tunnel (stunnel, WireGuard)"
                    ),
                );
            }
        }
    }
    if raw.database_pool == 0 {
        problems.add("server.database_pool", "must be at least 1");
    }
    if raw.database_timeout.0.is_zero() {
        problems.add("server.database_timeout", "must be longer than 0s");
    }
    let password =
        raw.database_password_file
            .as_ref()
            .and_then(|file| match std::fs::read_to_string(file) {
                Ok(text) => Some(Secret::from_file_text(&text)),
                Err(e) => {
                    problems.add(
                        "server.database_password_file",
                        format!("cannot read {}: {e}", file.display()),
                    );
                    None
                }
            });
    Database::Postgres(PostgresConfig {
        url: Secret::new(raw.database.clone()),
        password,
        pool: raw.database_pool,
        timeout: raw.database_timeout.0,
    })
}

fn check_server(raw: RawServer, problems: &mut Problems) -> ServerConfig {
    if raw.listen.is_empty() {
        problems.add(
            "server.listen",
            "needs at least one address, e.g. \"127.0.0.1:1812\"",
        );
    }
    if raw.max_in_flight == 0 {
        problems.add("server.max_in_flight", "must be at least 1");
    }
    if raw.request_timeout.0.is_zero() {
        problems.add("server.request_timeout", "must be longer than 0s");
    }
    if raw.dedup_max_bytes < MIN_DEDUP_MAX_BYTES {
        problems.add(
            "server.dedup_max_bytes",
            format!("must be at least {MIN_DEDUP_MAX_BYTES} (1 MiB)"),
        );
    }
    if let Err(e) = raw
        .log_level
        .parse::<tracing_subscriber::filter::EnvFilter>()
    {
        problems.add(
            "server.log_level",
            format!("'{}' is not a log filter: {e}", raw.log_level),
        );
    }
    let database = check_database(&raw, problems);
    ServerConfig {
        listen: raw.listen,
        database,
        node_name: raw.node_name.clone().unwrap_or_else(host_name),
        key_file: raw.key_file,
        dictionaries: raw.dictionaries,
        dedup_window: raw.dedup_window.0,
        dedup_max_bytes: raw.dedup_max_bytes,
        log_level: raw.log_level,
        log_format: raw.log_format,
        max_in_flight: raw.max_in_flight,
        request_timeout: raw.request_timeout.0,
        return_serial: raw.return_serial,
    }
}

/// Encodes `Name=value` lines with the dictionary, reporting each bad one under `key`.
fn encode_attributes(
    key: &str,
    lines: &[String],
    dictionary: &Dictionary,
    problems: &mut Problems,
) -> Vec<WireAttribute> {
    lines
        .iter()
        .filter_map(|line| {
            dictionary
                .encode(line)
                .map_err(|e| problems.add(key, e))
                .ok()
        })
        .collect()
}

fn check_clients(
    raw: Vec<RawClient>,
    dictionary: &Dictionary,
    problems: &mut Problems,
) -> Vec<ClientConfig> {
    let mut clients: Vec<ClientConfig> = Vec::new();
    for (index, client) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("client[{index}] ({}).{field}", client.name);
        let tls = radsec::check_identity(
            &client.tls_names,
            &client.tls_fingerprints,
            client.require_radius_1_1,
            &key,
            problems,
        );
        let network = match (&client.address, &tls) {
            (Some(address), _) => match parse_network(address) {
                Some(network) => Some(network),
                None => {
                    problems.add(
                        &key("address"),
                        format!("'{address}' is not an IP address or CIDR"),
                    );
                    continue;
                }
            },
            (None, Some(_)) => None,
            (None, None) => {
                problems.add(
                    &key("address"),
                    "missing (a UDP client needs one; a RadSec client sets tls_names or tls_fingerprints)",
                );
                continue;
            }
        };
        let secret = match (&client.secret, &client.secret_file) {
            (Some(secret), None) => secret.clone(),
            (None, Some(file)) => match read_secret(file) {
                Ok(secret) => secret,
                Err(e) => {
                    problems.add(
                        &key("secret_file"),
                        format!("cannot read {}: {e}", file.display()),
                    );
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                problems.add(
                    &key("secret"),
                    "give either secret or secret_file, not both",
                );
                continue;
            }
            // RFC 6614 section 2.3: over TLS the shared secret is "radsec" unless set; TLS,
            // not the secret, protects the packets.
            (None, None) if tls.is_some() => Secret::new(RADSEC_SECRET.into()),
            (None, None) => {
                problems.add(&key("secret"), "missing (set secret or secret_file)");
                continue;
            }
        };
        let explicit_secret = client.secret.is_some() || client.secret_file.is_some();
        if explicit_secret && secret.expose().len() < MIN_SECRET_LEN {
            problems.add(
                &key("secret"),
                format!("shorter than {MIN_SECRET_LEN} characters; use a long random secret"),
            );
        }
        if clients.iter().any(|c| c.name == client.name) {
            problems.add(&key("name"), "another client has this name");
        }
        if tls.is_none()
            && let Some(other) = clients
                .iter()
                .find(|c| c.tls.is_none() && c.network == network)
        {
            problems.add(
                &key("address"),
                format!(
                    "{} is already the address of client '{}'",
                    client.address.as_deref().unwrap_or_default(),
                    other.name
                ),
            );
        }
        if let Some(identity) = &tls {
            check_identity_unique(identity, &clients, &key, problems);
        }
        let accept_attributes = encode_attributes(
            &key("accept_attributes"),
            &client.accept_attributes,
            dictionary,
            problems,
        );
        clients.push(ClientConfig {
            name: client.name,
            network,
            tls,
            secret,
            require_message_authenticator: client.require_message_authenticator,
            limit_proxy_state: client.limit_proxy_state,
            send_message_authenticator: client.send_message_authenticator,
            mode: client.mode,
            first_factor: client.first_factor,
            accept_attributes,
        });
    }
    clients
}

/// A secret kept in a file of its own: the file less its line end.
pub(crate) fn read_secret(file: &Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(file)?;
    Ok(Secret::new(text.trim_end_matches(['\r', '\n']).to_string()))
}

/// The shared secret of a RadSec client that sets none (RFC 6614 section 2.3).
pub const RADSEC_SECRET: &str = "radsec";

/// A certificate name or fingerprint must lead to one client only.
fn check_identity_unique(
    identity: &TlsIdentity,
    clients: &[ClientConfig],
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    for other in clients {
        let Some(theirs) = &other.tls else { continue };
        if let Some(name) = identity.names.iter().find(|n| theirs.names.contains(n)) {
            problems.add(
                &key("tls_names"),
                format!("'{name}' is already a name of client '{}'", other.name),
            );
        }
        if identity
            .fingerprints
            .iter()
            .any(|f| theirs.fingerprints.contains(f))
        {
            problems.add(
                &key("tls_fingerprints"),
                format!("a fingerprint of client '{}' is listed again", other.name),
            );
        }
    }
}

fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn check_challenge(challenge: &ChallengeConfig, problems: &mut Problems) {
    if !(6..=10).contains(&challenge.otp_length) {
        problems.add("challenge.otp_length", "must be between 6 and 10");
    }
    if challenge.max_attempts == 0 {
        problems.add("challenge.max_attempts", "must be at least 1");
    }
    if challenge.validity.0.is_zero() {
        problems.add("challenge.validity", "must be longer than 0s");
    }
}

fn check_pin(pin: &PinConfig, problems: &mut Problems) {
    if let Err(e) = argon2::Params::new(pin.memory_kib, pin.iterations, pin.parallelism, None) {
        problems.add("pin", format!("Argon2 parameters are not valid: {e}"));
    }
    let max = MAX_MEMORY_KIB;
    if pin.memory_kib > max {
        problems.add(
            "pin.memory_kib",
            format!("at most {max} (1 GiB): each PIN thread keeps this much while busy"),
        );
    }
}

pub(crate) fn parse_template(
    key: &str,
    text: &str,
    allowed: &[Tag],
    problems: &mut Problems,
) -> Template {
    Template::parse(text, allowed).unwrap_or_else(|e| {
        problems.add(key, e);
        Template::literal("")
    })
}

fn check_sms(
    raw: RawSms,
    gateways: &BTreeMap<String, GatewayConfig>,
    problems: &mut Problems,
) -> SmsConfig {
    for name in &raw.default_chain {
        if !gateways.contains_key(name) {
            problems.add(
                "sms.default_chain",
                format!("no gateway named '{name}' (define [gateway.{name}])"),
            );
        }
    }
    if let Some(region) = &raw.default_region
        && crate::phone::region_id(region).is_none()
    {
        problems.add(
            "sms.default_region",
            format!("'{region}' is not a region libphonenumber knows (ISO 3166 code, e.g. \"DE\")"),
        );
    }
    if raw.reply_within.0.is_zero() {
        problems.add("sms.reply_within", "must be longer than 0s");
    }
    if raw.send_within.0 < raw.reply_within.0 {
        problems.add("sms.send_within", "must not be shorter than reply_within");
    }
    SmsConfig {
        default_chain: raw.default_chain,
        reply_within: raw.reply_within.0,
        default_region: raw.default_region,
        breaker_backoff: raw.breaker_backoff.0,
        send_within: raw.send_within.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml")).unwrap()
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn the_database_is_a_path_or_a_postgres_url() {
        let config = load(&example()).unwrap();
        assert!(matches!(config.server.database, Database::Sqlite(_)));
        assert!(
            !config.server.node_name.is_empty(),
            "defaults to the host name"
        );
        let with = |lines: &str| {
            let mut text = example();
            let start = text.find("database =").unwrap();
            let end = start + text[start..].find('\n').unwrap();
            text.replace_range(start..end, lines);
            load(&text)
        };
        let url = "postgres://otp:s3cret@db1:5432,db2:5432/otpgate?target_session_attrs=read-write";
        let config = with(&format!("database = \"{url}\"\nnode_name = \"a\"")).unwrap();
        let Database::Postgres(pg) = &config.server.database else {
            panic!("{:?}", config.server.database)
        };
        assert_eq!((pg.pool, pg.timeout), (8, Duration::from_secs(5)));
        assert_eq!(config.server.node_name, "a");
        let shown = format!("{} {:?}", config.server.database, config.server);
        assert!(shown.contains("otp:****@db1:5432,db2:5432"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let config = with(&format!(
            "database = \"postgresql://otp@db/otpgate\"\ndatabase_password_file = \"{}\"\n\
             database_pool = 3\ndatabase_timeout = \"2s\"",
            file.display()
        ))
        .unwrap();
        let Database::Postgres(pg) = &config.server.database else {
            panic!()
        };
        assert_eq!(pg.password.as_ref().map(|p| p.expose()), Some("from-file"));
        assert_eq!((pg.pool, pg.timeout), (3, Duration::from_secs(2)));
        let err = with("database = \"postgres://db/x?connect_timeout=soon\"\ndatabase_pool = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.database: postgres://db/x"), "{err}");
        assert!(
            err.contains("server.database_pool: must be at least 1"),
            "{err}"
        );
        let err = with("database = \"x.db\"\ndatabase_password_file = \"pw\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.database_password_file: is for a PostgreSQL"),
            "{err}"
        );
        let err = with("database = \"postgres://db/x?sslmode=require\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("without TLS, so it cannot honour this sslmode"),
            "{err}"
        );
        assert!(with("database = \"postgres://db/x?sslmode=disable\"").is_ok());
        let err = with("database = \"mysql://db/x\"").unwrap_err().to_string();
        assert!(
            err.contains("server.database: is a file path or a postgres://"),
            "{err}"
        );
    }

    #[test]
    fn the_example_config_parses() {
        let config = load(&example()).unwrap();
        assert_eq!(config.clients.len(), 1);
        assert_eq!(config.sms.default_chain, vec!["local".to_string()]);
        assert!(config.gateways.contains_key("clickatell"));
        assert_eq!(config.limits.allowed_countries, vec!["DE".to_string()]);
        assert_eq!(config.limits.sends.per_token_hour, 20);
    }

    #[test]
    fn limits_default_to_the_design_values_and_report_bad_codes() {
        let text = example().replace("[limits]", "[limits]\nallowed_countries = [\"Germany\"]");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("test.toml: limits.allowed_countries: 'Germany' is not an ISO 3166"),
            "{err}"
        );
        let text = example().replace("[limits]", "[limits]\nallowed_countries = [\"de\", \"UK\"]");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("limits.allowed_countries: 'UK' is not a region libphonenumber knows"),
            "{err}"
        );
        assert!(!err.contains("'de'"), "{err}");
        let defaults = LimitsConfig::default();
        assert_eq!(defaults.resend_interval, Duration::from_secs(30));
        assert_eq!(
            (defaults.sends.per_token_day, defaults.sends.per_phone_hour),
            (50, 30)
        );
        assert_eq!(defaults.sends.global_day, 0, "off by default");
        assert!(defaults.allowed_countries.is_empty(), "every country");
        assert_eq!(defaults.pin_queue, 16);
    }

    #[test]
    fn the_default_region_is_any_that_libphonenumber_knows() {
        // The hand-written table knew 36 regions: the Philippines were refused.
        let philippines = example().replace("default_region = \"DE\"", "default_region = \"ph\"");
        assert_ne!(philippines, example());
        assert!(load(&philippines).is_ok());
        let uk = example().replace("default_region = \"DE\"", "default_region = \"UK\"");
        let err = load(&uk).unwrap_err().to_string();
        assert!(
            err.contains("sms.default_region: 'UK' is not a region libphonenumber knows"),
            "{err}"
        );
    }

    #[test]
    fn a_stray_key_in_any_table_is_rejected() {
        let text = example();
        for table in [
            "[server]",
            "[[client]]",
            "[challenge]",
            "[lockout]",
            "[pin]",
            "[sms]",
            "[gateway.local]",
            "[gateway.clickatell]",
            "[limits]",
            "[audit]",
        ] {
            let changed = text.replacen(table, &format!("{table}\nstray_key = 1"), 1);
            assert_ne!(changed, text, "{table} is in the example");
            let err = load(&changed).expect_err(table).to_string();
            assert!(err.contains("stray_key"), "{table}: {err}");
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_their_table_is_checked() {
        assert_eq!(load(&example()).unwrap().metrics, None);
        let on = format!("{}\n[metrics]\nlisten = \"127.0.0.1:9812\"\n", example());
        assert_eq!(
            load(&on).unwrap().metrics.map(|m| m.listen.to_string()),
            Some("127.0.0.1:9812".into())
        );
        let stray = on.replace("[metrics]", "[metrics]\nstray_key = 1");
        assert!(load(&stray).unwrap_err().to_string().contains("stray_key"));
        let bad = on.replace("127.0.0.1:9812", "localhost");
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("test.toml: metrics.listen (line"), "{err}");
    }

    #[test]
    fn a_spool_file_mode_is_octal_and_defaults_to_0600() {
        let spool_mode = |config: &Config| match &config.gateways["local"].kind {
            GatewayKind::Spool(spool) => spool.file_mode,
            other => panic!("{other:?}"),
        };
        assert_eq!(spool_mode(&load(&example()).unwrap()), 0o600);
        let with = |mode: &str| {
            example().replace(
                "directory = \"var/sms-outgoing\"",
                &format!("directory = \"var/sms-outgoing\"\nfile_mode = \"{mode}\""),
            )
        };
        assert_eq!(spool_mode(&load(&with("0640")).unwrap()), 0o640);
        for bad in ["0999", "rw-r-----", "", "+640", "4755", "0x1a4"] {
            let err = load(&with(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "test.toml: gateway.local.file_mode: '{bad}' is not an octal file mode"
                )),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_duplicate_cache_bound_defaults_to_64_mib_and_has_a_floor() {
        assert_eq!(load(&example()).unwrap().server.dedup_max_bytes, 64 << 20);
        let with = |value: &str| {
            example().replace(
                "dedup_window = \"30s\"",
                &format!("dedup_window = \"30s\"\ndedup_max_bytes = {value}"),
            )
        };
        assert_eq!(
            load(&with("16_777_216")).unwrap().server.dedup_max_bytes,
            16 << 20
        );
        let err = load(&with("4096")).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: server.dedup_max_bytes: must be at least 1048576"),
            "{err}"
        );
    }

    #[test]
    fn a_short_secret_is_refused_with_file_and_key() {
        let text = example().replace("change-me-to-a-long-random-secret", "short");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: client[0] (vpn).secret: shorter than 16"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = example()
            .replace("otp_length = 6", "otp_length = 5")
            .replace(
                "default_chain = [\"local\"]",
                "default_chain = [\"nowhere\"]",
            )
            .replace(
                "options = { to",
                "parameters2 = 1\noptions = { user = \"x\", to",
            );
        let err = load(&text.replace("parameters2 = 1\n", "")).unwrap_err();
        let joined = err.to_string();
        assert!(joined.contains("challenge.otp_length"), "{joined}");
        assert!(
            joined.contains("sms.default_chain: no gateway named 'nowhere'"),
            "{joined}"
        );
        assert!(
            joined.contains("gateway.clickatell.options: 'user' is also in parameters"),
            "{joined}"
        );
    }

    #[test]
    fn a_pin_memory_over_one_gib_is_refused() {
        let text = example().replace("memory_kib = 19456", "memory_kib = 2097152");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("test.toml: pin.memory_kib: at most 1048576 (1 GiB)"),
            "{err}"
        );
        assert!(load(&example().replace("memory_kib = 19456", "memory_kib = 1048576")).is_ok());
    }

    #[test]
    fn parse_errors_name_the_table_key_and_line() {
        let text = example().replace("[lockout]", "[lockout]\nmax_failurs = 3");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: lockout.max_failurs (line "),
            "{err}"
        );
        assert!(err.contains("unknown field `max_failurs`"), "{err}");
        assert_eq!(err.lines().count(), 1);
        let err = load(&example().replace("max_attempts = 3", "max_attempts = \"three\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test.toml: challenge.max_attempts (line "),
            "{err}"
        );
    }

    #[test]
    fn durations_and_unknown_tags_are_checked() {
        let err =
            load(&example().replace("validity = \"300s\"", "validity = \"soon\"")).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
        let err =
            load(&example().replace("sms_text = \"{otp}\"", "sms_text = \"{pin}\"")).unwrap_err();
        assert!(err.to_string().contains("challenge.sms_text"), "{err}");
    }

    /// The example config with a `[radsec]` section and `client` appended.
    fn with_radsec(dir: &Path, client: &str) -> String {
        let key = dir.join("radsec.key");
        std::fs::write(&key, "").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "{}\n[radsec]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"{dir}/radsec.pem\"\nkey_file = \"{dir}/radsec.key\"\nclient_ca_file = \"{dir}/ca.pem\"\n\n[[client]]\n{client}\n",
            example(),
            dir = dir.display()
        )
    }

    #[test]
    fn a_radsec_client_needs_no_address_and_defaults_its_secret_to_radsec() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(&with_radsec(
            dir.path(),
            "name = \"nas1\"\ntls_names = [\"NAS1.example.org\"]",
        ))
        .unwrap();
        let radsec = config.radsec.as_ref().unwrap();
        assert_eq!(radsec.tls_min_version, TlsVersion::Tls12);
        assert_eq!(radsec.idle_timeout, Duration::from_secs(60));
        assert_eq!(radsec.max_connections, 256);
        let nas = config.clients.iter().find(|c| c.name == "nas1").unwrap();
        assert_eq!(nas.secret.expose(), RADSEC_SECRET);
        assert_eq!(nas.network, None);
        let tls = nas.tls.as_ref().unwrap();
        assert_eq!(tls.names, ["nas1.example.org"]);
        assert!(!tls.require_radius_1_1);
    }

    #[test]
    fn radsec_mistakes_are_reported_with_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = with_radsec(
            dir.path(),
            "name = \"nas1\"\ntls_fingerprints = [\"sha256:zz\"]\ntls_names = [\"bad name\"]",
        )
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            "listen = [\"127.0.0.1:0\"]\ntls_min_version = \"1.1\"\nmax_connections = 0",
        );
        let err = load(&text).unwrap_err().to_string();
        for expected in [
            "test.toml: radsec.tls_min_version: '1.1' is not",
            "test.toml: radsec.max_connections: must be at least 1",
            "test.toml: client[1] (nas1).tls_fingerprints: \"sha256:zz\" is not",
            "test.toml: client[1] (nas1).tls_names: \"bad name\" is not a DNS name",
        ] {
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let loose = with_radsec(dir.path(), "name = \"nas1\"\ntls_names = [\"nas1\"]");
        std::fs::set_permissions(
            dir.path().join("radsec.key"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let err = load(&loose).unwrap_err().to_string();
        assert!(
            err.contains("radsec.key_file: ") && err.contains("readable by group or others"),
            "{err}"
        );
        let stray = with_radsec(dir.path(), "name = \"nas1\"\ntls_names = [\"nas1\"]")
            .replace("[radsec]", "[radsec]\nstray_key = 1");
        assert!(load(&stray).unwrap_err().to_string().contains("stray_key"));
    }

    #[test]
    fn certificate_keys_need_radsec_and_udp_clients_keep_their_rules() {
        let no_radsec = example().replace(
            "[challenge]",
            "[[client]]\nname = \"nas1\"\ntls_names = [\"nas1\"]\n\n[challenge]",
        );
        let err = load(&no_radsec).unwrap_err().to_string();
        assert!(err.contains("needs a [radsec] section"), "{err}");
        let udp_1_1 = example().replace(
            "mode = \"challenge\"",
            "mode = \"challenge\"\nrequire_radius_1_1 = true",
        );
        let err = load(&udp_1_1).unwrap_err().to_string();
        assert!(
            err.contains("(vpn).require_radius_1_1: only for a RadSec client"),
            "{err}"
        );
        let no_address = example().replace("address = \"127.0.0.1/32\"", "");
        let err = load(&no_address).unwrap_err().to_string();
        assert!(err.contains("(vpn).address: missing"), "{err}");
    }
}
