//! `[gateway.NAME]` and `[smtp.NAME]` tables (DESIGN section 5): their TOML shapes and the
//! checks serde cannot make (URLs, proxies, option names, templates, SMTP server names).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Secret, Span, parse_template, yes};
use crate::phone::{Phone, PhoneFormat, PhoneRewrite};
use crate::template::{Tag, Template};

/// Tags a gateway's templates may use.
const MESSAGE_TAGS: &[Tag] = &[Tag::Phone, Tag::Otp, Tag::Message];

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum RawGateway {
    Http(Box<RawHttpGateway>),
    Spool(RawSpoolGateway),
    Sipgate(Box<RawSipgateGateway>),
    Smtp(Box<RawSmtpGateway>),
    Modem(Box<RawModemGateway>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpGateway {
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
    #[serde(default = "five_seconds")]
    timeout: Span,
    #[serde(default)]
    body: HttpBody,
    phone_regexp: Option<String>,
    #[serde(default)]
    phone_format: PhoneFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpoolGateway {
    directory: PathBuf,
    /// Octal mode of the message files, e.g. "0640" for an smsd of the same group.
    #[serde(default = "default_spool_file_mode")]
    file_mode: String,
    phone_regexp: Option<String>,
    /// smstools3 wants international digits without '+'.
    #[serde(default = "digits")]
    phone_format: PhoneFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSipgateGateway {
    username: String,
    password: Secret,
    proxy: Option<String>,
    #[serde(default = "default_sipgate_url")]
    url: String,
    #[serde(default = "five_seconds")]
    timeout: Span,
    phone_regexp: Option<String>,
    /// RemoteUri is `sip:<digits>@sipgate.de`.
    #[serde(default = "digits")]
    phone_format: PhoneFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtpGateway {
    /// Name of an `[smtp.NAME]` server.
    smtp: String,
    mailto: String,
    #[serde(default = "default_subject")]
    subject: String,
    #[serde(default = "default_body")]
    body: String,
    phone_regexp: Option<String>,
    #[serde(default)]
    phone_format: PhoneFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModemGateway {
    device: PathBuf,
    #[serde(default = "default_baud")]
    baud: u32,
    sim_pin: Option<Secret>,
    #[serde(default)]
    mode: ModemMode,
    /// Service centre number; the SIM's when not set.
    smsc: Option<String>,
    #[serde(default = "default_modem_timeout")]
    timeout: Span,
    phone_regexp: Option<String>,
    #[serde(default)]
    phone_format: PhoneFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtpServer {
    host: String,
    port: Option<u16>,
    #[serde(default)]
    tls: SmtpTls,
    username: Option<String>,
    password: Option<Secret>,
    from: String,
    #[serde(default = "ten_seconds")]
    timeout: Span,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    accept_invalid_certs: bool,
}

fn five_seconds() -> Span {
    Span(Duration::from_secs(5))
}
fn ten_seconds() -> Span {
    Span(Duration::from_secs(10))
}
fn default_modem_timeout() -> Span {
    Span(Duration::from_secs(30))
}
fn digits() -> PhoneFormat {
    PhoneFormat::Digits
}
fn default_sipgate_url() -> String {
    "https://samurai.sipgate.net/RPC2".into()
}
fn default_subject() -> String {
    "{phone}".into()
}
fn default_body() -> String {
    "{otp}".into()
}
fn default_baud() -> u32 {
    115_200
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

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (only for a relay on the same host or a test rig).
    None,
    /// Plain connection upgraded with STARTTLS, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// How the modem is told the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModemMode {
    /// AT+CMGF=0: PDUs, GSM 7-bit or UCS-2, long texts concatenated.
    #[default]
    Pdu,
    /// AT+CMGF=1: the modem encodes; one SMS, GSM characters only.
    Text,
}

/// One checked gateway.
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
    Sipgate(Box<SipgateGatewayConfig>),
    Smtp(Box<SmtpGatewayConfig>),
    Modem(Box<ModemGatewayConfig>),
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
    /// Fixed parameters, then tag-rendered options.
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
    /// Permission bits of each message file (the umask does not apply).
    pub file_mode: u32,
}

fn default_spool_file_mode() -> String {
    "0600".into()
}

/// Parses an octal file mode such as "0640"; only permission bits (no setuid, setgid or
/// sticky bit: a message file has no use for them).
fn parse_file_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.starts_with('+') => Ok(mode),
        _ => Err(format!(
            "'{text}' is not an octal file mode of permission bits such as \"0600\" or \"0640\""
        )),
    }
}

#[derive(Debug, Clone)]
pub struct SipgateGatewayConfig {
    pub username: String,
    pub password: Secret,
    pub proxy: Option<String>,
    pub url: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SmtpGatewayConfig {
    pub server: SmtpServerConfig,
    pub mailto: Template,
    pub subject: Template,
    pub body: Template,
}

#[derive(Debug, Clone)]
pub struct SmtpServerConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub accept_invalid_certs: bool,
}

#[derive(Debug, Clone)]
pub struct ModemGatewayConfig {
    pub device: PathBuf,
    pub baud: u32,
    pub sim_pin: Option<Secret>,
    pub mode: ModemMode,
    pub smsc: Option<Phone>,
    pub timeout: Duration,
}

/// Checks every `[smtp.NAME]` server.
pub(super) fn check_smtp_servers(
    raw: BTreeMap<String, RawSmtpServer>,
    problems: &mut Problems,
) -> BTreeMap<String, SmtpServerConfig> {
    raw.into_iter()
        .map(|(name, server)| {
            let key = |field: &str| format!("smtp.{name}.{field}");
            if server.host.trim().is_empty() {
                problems.add(&key("host"), "must not be empty");
            }
            if server.from.parse::<lettre::message::Mailbox>().is_err() {
                problems.add(
                    &key("from"),
                    format!("'{}' is not an email address", server.from),
                );
            }
            if server.password.is_some() && server.username.is_none() {
                problems.add(&key("password"), "set username too");
            }
            if let Some(file) = &server.ca_file
                && let Err(e) = std::fs::read(file)
            {
                problems.add(
                    &key("ca_file"),
                    format!("cannot read {}: {e}", file.display()),
                );
            }
            if server.timeout.0.is_zero() {
                problems.add(&key("timeout"), "must be longer than 0s");
            }
            let port = server.port.unwrap_or(match server.tls {
                SmtpTls::None => 25,
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
            });
            let config = SmtpServerConfig {
                name: name.clone(),
                host: server.host,
                port,
                tls: server.tls,
                username: server.username,
                password: server.password,
                from: server.from,
                timeout: server.timeout.0,
                ca_file: server.ca_file,
                accept_invalid_certs: server.accept_invalid_certs,
            };
            (name, config)
        })
        .collect()
}

/// Checks one `[gateway.NAME]`.
pub(super) fn check_gateway(
    name: &str,
    raw: RawGateway,
    smtp_servers: &BTreeMap<String, SmtpServerConfig>,
    problems: &mut Problems,
) -> GatewayConfig {
    let key = |field: &str| format!("gateway.{name}.{field}");
    let (phone_regexp, phone_format, kind) = match raw {
        RawGateway::Http(http) => {
            let (regexp, format) = (http.phone_regexp.clone(), http.phone_format);
            (
                regexp,
                format,
                GatewayKind::Http(Box::new(check_http(&key, *http, problems))),
            )
        }
        RawGateway::Spool(spool) => {
            let file_mode = parse_file_mode(&spool.file_mode).unwrap_or_else(|e| {
                problems.add(&key("file_mode"), e);
                crate::files::PRIVATE
            });
            let kind = GatewayKind::Spool(SpoolGatewayConfig {
                directory: spool.directory,
                file_mode,
            });
            (spool.phone_regexp, spool.phone_format, kind)
        }
        RawGateway::Sipgate(sipgate) => {
            check_url(&key("url"), &sipgate.url, problems);
            check_proxy(&key("proxy"), sipgate.proxy.as_deref(), problems);
            check_timeout(&key("timeout"), sipgate.timeout, problems);
            let kind = GatewayKind::Sipgate(Box::new(SipgateGatewayConfig {
                username: sipgate.username,
                password: sipgate.password,
                proxy: sipgate.proxy,
                url: sipgate.url,
                timeout: sipgate.timeout.0,
            }));
            (sipgate.phone_regexp, sipgate.phone_format, kind)
        }
        RawGateway::Smtp(smtp) => {
            let server = smtp_servers.get(&smtp.smtp).cloned().unwrap_or_else(|| {
                problems.add(
                    &key("smtp"),
                    format!(
                        "no SMTP server named '{}' (define [smtp.{}])",
                        smtp.smtp, smtp.smtp
                    ),
                );
                placeholder_smtp_server()
            });
            let kind = GatewayKind::Smtp(Box::new(SmtpGatewayConfig {
                server,
                mailto: parse_template(&key("mailto"), &smtp.mailto, MESSAGE_TAGS, problems),
                subject: parse_template(&key("subject"), &smtp.subject, MESSAGE_TAGS, problems),
                body: parse_template(&key("body"), &smtp.body, MESSAGE_TAGS, problems),
            }));
            (smtp.phone_regexp, smtp.phone_format, kind)
        }
        RawGateway::Modem(modem) => {
            let smsc = modem.smsc.as_deref().and_then(|smsc| {
                Phone::parse(smsc, None)
                    .map_err(|e| problems.add(&key("smsc"), e))
                    .ok()
            });
            if modem.baud == 0 {
                problems.add(&key("baud"), "must be above 0");
            }
            check_timeout(&key("timeout"), modem.timeout, problems);
            let kind = GatewayKind::Modem(Box::new(ModemGatewayConfig {
                device: modem.device,
                baud: modem.baud,
                sim_pin: modem.sim_pin,
                mode: modem.mode,
                smsc,
                timeout: modem.timeout.0,
            }));
            (modem.phone_regexp, modem.phone_format, kind)
        }
    };
    let phone_rewrite = phone_regexp.as_deref().and_then(|text| {
        PhoneRewrite::parse(text)
            .map_err(|e| problems.add(&key("phone_regexp"), e))
            .ok()
    });
    GatewayConfig {
        name: name.to_string(),
        phone_format,
        phone_rewrite,
        kind,
    }
}

fn check_http(
    key: &dyn Fn(&str) -> String,
    http: RawHttpGateway,
    problems: &mut Problems,
) -> HttpGatewayConfig {
    let url = parse_template(&key("url"), &http.url, MESSAGE_TAGS, problems);
    check_url(&key("url"), &http.url.replace(['{', '}'], ""), problems);
    check_proxy(&key("proxy"), http.proxy.as_deref(), problems);
    check_timeout(&key("timeout"), http.timeout, problems);
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
    let options = http
        .options
        .iter()
        .map(|(name, text)| {
            (
                name.clone(),
                parse_template(
                    &key(&format!("options.{name}")),
                    text,
                    MESSAGE_TAGS,
                    problems,
                ),
            )
        })
        .collect();
    HttpGatewayConfig {
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
    }
}

fn check_url(key: &str, url: &str, problems: &mut Problems) {
    if reqwest::Url::parse(url).is_err() {
        problems.add(key, format!("'{url}' is not a URL"));
    }
}

fn check_proxy(key: &str, proxy: Option<&str>, problems: &mut Problems) {
    if let Some(proxy) = proxy
        && reqwest::Proxy::all(proxy).is_err()
    {
        problems.add(key, format!("'{proxy}' is not a proxy URL"));
    }
}

fn check_timeout(key: &str, timeout: Span, problems: &mut Problems) {
    if timeout.0.is_zero() {
        problems.add(key, "must be longer than 0s");
    }
}

/// Stands in for a missing server so that checking goes on and reports every problem.
fn placeholder_smtp_server() -> SmtpServerConfig {
    SmtpServerConfig {
        name: String::new(),
        host: String::new(),
        port: 25,
        tls: SmtpTls::None,
        username: None,
        password: None,
        from: String::new(),
        timeout: Duration::from_secs(1),
        ca_file: None,
        accept_invalid_certs: false,
    }
}
