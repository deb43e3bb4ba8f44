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
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::sms::template::{Tag, Template};
use crate::sms::{PhoneFormat, PhoneRewrite};

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
    gateway: BTreeMap<String, RawGateway>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// UDP addresses to answer on, IPv4 and IPv6.
    listen: Vec<SocketAddr>,
    /// SQLite database file; created on first start.
    database: PathBuf,
    /// Key file (32 random bytes, hex); created with mode 0600 on first start.
    key_file: PathBuf,
    /// Folder of run-time dictionaries (dictionaries issue).
    #[serde(default = "default_dictionaries")]
    dictionaries: PathBuf,
    /// How long an answered request's reply is kept for retransmissions.
    #[serde(default = "default_dedup_window")]
    dedup_window: Span,
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
}

fn default_dictionaries() -> PathBuf {
    PathBuf::from("dictionaries")
}
fn default_dedup_window() -> Span {
    Span(Duration::from_secs(30))
}
fn default_log_level() -> String {
    "info".into()
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_request_timeout() -> Span {
    Span(Duration::from_secs(10))
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
    /// IP or CIDR; the most specific match wins.
    address: String,
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
}

fn yes() -> bool {
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RawGateway {
    Http(Box<RawHttpGateway>),
    Spool(RawSpoolGateway),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpGateway {
    url: String,
    #[serde(default)]
    method: HttpMethod,
    username: Option<String>,
    password: Option<Secret>,
    return_success: Option<String>,
    return_fail: Option<String>,
    proxy: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "yes")]
    check_ssl: bool,
    #[serde(default = "default_gateway_timeout")]
    timeout: Span,
    #[serde(default)]
    body: HttpBody,
    phone_regexp: Option<String>,
    #[serde(default)]
    phone_format: PhoneFormat,
}

fn default_gateway_timeout() -> Span {
    Span(Duration::from_secs(5))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpoolGateway {
    directory: PathBuf,
    phone_regexp: Option<String>,
    /// smstools3 wants international digits without '+'.
    #[serde(default = "digits")]
    phone_format: PhoneFormat,
}

fn digits() -> PhoneFormat {
    PhoneFormat::Digits
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "post")]
    Post,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpBody {
    #[default]
    Form,
    Json,
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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub database: PathBuf,
    pub key_file: PathBuf,
    pub dictionaries: PathBuf,
    pub dedup_window: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    pub network: IpNet,
    pub secret: Secret,
    pub require_message_authenticator: bool,
    pub limit_proxy_state: bool,
    pub send_message_authenticator: bool,
    pub mode: ClientMode,
}

#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub default_chain: Vec<String>,
    pub reply_within: Duration,
    pub default_region: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub name: String,
    pub phone_format: PhoneFormat,
    pub phone_rewrite: Option<PhoneRewrite>,
    pub kind: GatewayKind,
}

#[derive(Debug, Clone)]
pub enum GatewayKind {
    Http(Box<HttpGatewayConfig>),
    Spool(SpoolGatewayConfig),
}

#[derive(Debug, Clone)]
pub struct HttpGatewayConfig {
    pub url: Template,
    pub method: HttpMethod,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub return_success: Option<String>,
    pub return_fail: Option<String>,
    pub proxy: Option<String>,
    /// Fixed parameters and tag-rendered options, in that order.
    pub parameters: Vec<(String, String)>,
    pub options: Vec<(String, Template)>,
    pub headers: Vec<(String, String)>,
    pub check_ssl: bool,
    pub timeout: Duration,
    pub body: HttpBody,
}

#[derive(Debug, Clone)]
pub struct SpoolGatewayConfig {
    pub directory: PathBuf,
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

struct Problems {
    file: String,
    list: Vec<String>,
}

impl Problems {
    fn add(&mut self, key: &str, problem: impl fmt::Display) {
        self.list.push(format!("{}: {key}: {problem}", self.file));
    }
}

fn check(raw: RawConfig, path: &Path, problems: &mut Problems) -> Config {
    let server = check_server(raw.server, problems);
    let clients = check_clients(raw.client, problems);
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
    let gateways: BTreeMap<String, GatewayConfig> = raw
        .gateway
        .into_iter()
        .filter_map(|(name, gateway)| check_gateway(&name, gateway, problems).map(|g| (name, g)))
        .collect();
    let sms = check_sms(raw.sms, &gateways, problems);
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
    }
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
    if let Err(e) = raw
        .log_level
        .parse::<tracing_subscriber::filter::EnvFilter>()
    {
        problems.add(
            "server.log_level",
            format!("'{}' is not a log filter: {e}", raw.log_level),
        );
    }
    ServerConfig {
        listen: raw.listen,
        database: raw.database,
        key_file: raw.key_file,
        dictionaries: raw.dictionaries,
        dedup_window: raw.dedup_window.0,
        log_level: raw.log_level,
        log_format: raw.log_format,
        max_in_flight: raw.max_in_flight,
        request_timeout: raw.request_timeout.0,
    }
}

fn check_clients(raw: Vec<RawClient>, problems: &mut Problems) -> Vec<ClientConfig> {
    let mut clients: Vec<ClientConfig> = Vec::new();
    for (index, client) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("client[{index}] ({}).{field}", client.name);
        let network = match parse_network(&client.address) {
            Some(network) => network,
            None => {
                problems.add(
                    &key("address"),
                    format!("'{}' is not an IP address or CIDR", client.address),
                );
                continue;
            }
        };
        let secret = match (&client.secret, &client.secret_file) {
            (Some(secret), None) => secret.clone(),
            (None, Some(file)) => match std::fs::read_to_string(file) {
                Ok(text) => Secret::new(text.trim_end_matches(['\r', '\n']).to_string()),
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
            (None, None) => {
                problems.add(&key("secret"), "missing (set secret or secret_file)");
                continue;
            }
        };
        if secret.expose().len() < MIN_SECRET_LEN {
            problems.add(
                &key("secret"),
                format!("shorter than {MIN_SECRET_LEN} characters; use a long random secret"),
            );
        }
        if clients.iter().any(|c| c.name == client.name) {
            problems.add(&key("name"), "another client has this name");
        }
        if let Some(other) = clients.iter().find(|c| c.network == network) {
            problems.add(
                &key("address"),
                format!(
                    "{network} is already the address of client '{}'",
                    other.name
                ),
            );
        }
        clients.push(ClientConfig {
            name: client.name,
            network,
            secret,
            require_message_authenticator: client.require_message_authenticator,
            limit_proxy_state: client.limit_proxy_state,
            send_message_authenticator: client.send_message_authenticator,
            mode: client.mode,
        });
    }
    clients
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
}

fn parse_template(key: &str, text: &str, allowed: &[Tag], problems: &mut Problems) -> Template {
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
        && crate::sms::country_code(region).is_none()
    {
        problems.add(
            "sms.default_region",
            format!("'{region}' is not a region otpgate knows (ISO 3166 code, e.g. \"DE\")"),
        );
    }
    if raw.reply_within.0.is_zero() {
        problems.add("sms.reply_within", "must be longer than 0s");
    }
    SmsConfig {
        default_chain: raw.default_chain,
        reply_within: raw.reply_within.0,
        default_region: raw.default_region,
    }
}

fn check_gateway(name: &str, raw: RawGateway, problems: &mut Problems) -> Option<GatewayConfig> {
    let key = |field: &str| format!("gateway.{name}.{field}");
    let (phone_regexp, phone_format, kind) = match raw {
        RawGateway::Http(http) => {
            let url = parse_template(
                &key("url"),
                &http.url,
                &[Tag::Phone, Tag::Otp, Tag::Message],
                problems,
            );
            if reqwest::Url::parse(&http.url.replace(['{', '}'], "")).is_err() {
                problems.add(&key("url"), format!("'{}' is not a URL", http.url));
            }
            if let Some(proxy) = &http.proxy
                && reqwest::Proxy::all(proxy).is_err()
            {
                problems.add(&key("proxy"), format!("'{proxy}' is not a proxy URL"));
            }
            if http.password.is_some() && http.username.is_none() {
                problems.add(&key("password"), "set username too (basic auth)");
            }
            for clash in http
                .options
                .keys()
                .filter(|k| http.parameters.contains_key(*k))
            {
                problems.add(
                    &key("options"),
                    format!("'{clash}' is also in parameters; a name may be in only one"),
                );
            }
            for (header, value) in &http.headers {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(value).is_err()
                {
                    problems.add(
                        &key("headers"),
                        format!("'{header}' is not a valid HTTP header"),
                    );
                }
            }
            if http.timeout.0.is_zero() {
                problems.add(&key("timeout"), "must be longer than 0s");
            }
            let options = http
                .options
                .iter()
                .map(|(k, v)| {
                    let template = parse_template(
                        &key(&format!("options.{k}")),
                        v,
                        &[Tag::Phone, Tag::Otp, Tag::Message],
                        problems,
                    );
                    (k.clone(), template)
                })
                .collect();
            let config = HttpGatewayConfig {
                url,
                method: http.method,
                username: http.username,
                password: http.password,
                return_success: http.return_success,
                return_fail: http.return_fail,
                proxy: http.proxy,
                parameters: http.parameters.into_iter().collect(),
                options,
                headers: http.headers.into_iter().collect(),
                check_ssl: http.check_ssl,
                timeout: http.timeout.0,
                body: http.body,
            };
            (
                http.phone_regexp,
                http.phone_format,
                GatewayKind::Http(Box::new(config)),
            )
        }
        RawGateway::Spool(spool) => (
            spool.phone_regexp,
            spool.phone_format,
            GatewayKind::Spool(SpoolGatewayConfig {
                directory: spool.directory,
            }),
        ),
    };
    let phone_rewrite = match phone_regexp.as_deref().map(PhoneRewrite::parse) {
        None => None,
        Some(Ok(rewrite)) => Some(rewrite),
        Some(Err(e)) => {
            problems.add(&key("phone_regexp"), e);
            None
        }
    };
    Some(GatewayConfig {
        name: name.to_string(),
        phone_format,
        phone_rewrite,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml")).unwrap()
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn the_example_config_parses() {
        let config = load(&example()).unwrap();
        assert_eq!(config.clients.len(), 1);
        assert_eq!(config.sms.default_chain, vec!["local".to_string()]);
        assert!(config.gateways.contains_key("clickatell"));
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
        ] {
            let changed = text.replacen(table, &format!("{table}\nstray_key = 1"), 1);
            assert_ne!(changed, text, "{table} is in the example");
            let err = load(&changed).expect_err(table).to_string();
            assert!(err.contains("stray_key"), "{table}: {err}");
        }
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

    #[test]
    fn clients_from_the_config_are_looked_up_most_specific_first() {
        let text = example().replace(
            "[challenge]",
            "[[client]]\nname = \"wide\"\naddress = \"127.0.0.0/8\"\nsecret = \"another-long-secret-value\"\n\n[challenge]",
        );
        let config = load(&text).unwrap();
        let clients = crate::radius::clients::ClientTable::new(&config.clients);
        let name = |ip: &str| clients.lookup(ip.parse().unwrap()).map(|c| c.name.clone());
        assert_eq!(name("127.0.0.1").as_deref(), Some("vpn"));
        assert_eq!(name("127.0.0.2").as_deref(), Some("wide"));
        assert_eq!(name("10.0.0.1"), None);
    }
}
