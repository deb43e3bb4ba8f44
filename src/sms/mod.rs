//! Sending text messages: the `Gateway` trait, messages, and how each gateway shapes a
//! number (`crate::phone` holds the numbers themselves). `sms` knows phones and
//! texts, never users, tokens or challenges (DESIGN section 1).
//!
//! Gateways are built once from the config (`Gateways::from_config`) and looked up by name;
//! a `Chain` tries several in order.

pub use crate::breaker;
pub mod chain;
pub mod cost;
pub mod encoding;
pub mod http;
pub mod modem;
pub mod pdu;
pub mod sipgate;
pub mod smtp;
pub mod spool;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, GatewayConfig, GatewayKind};
use crate::phone::{Phone, PhoneFormat, PhoneRewrite};
use crate::template::Tag;
pub use chain::{Chain, Delivery};

/// How one gateway shapes numbers: format, then optional rewrite.
#[derive(Debug, Clone)]
pub struct PhoneShape {
    pub format: PhoneFormat,
    pub rewrite: Option<PhoneRewrite>,
}

impl PhoneShape {
    pub fn from_config(config: &GatewayConfig) -> Self {
        PhoneShape {
            format: config.phone_format,
            rewrite: config.phone_rewrite.clone(),
        }
    }

    pub fn apply(&self, phone: &Phone) -> String {
        let formatted = phone.formatted(self.format);
        match &self.rewrite {
            Some(rewrite) => rewrite.apply(&formatted),
            None => formatted,
        }
    }
}

/// A message to send. `Debug` hides the text: it may hold an OTP.
#[derive(Clone)]
pub struct Message {
    pub to: Phone,
    pub text: String,
}

impl Message {
    /// A gateway template's tag: `{phone}` as the gateway shaped it, `{otp}` and `{message}`
    /// the text. Other tags are not allowed in gateway templates (checked at load).
    pub fn tag(&self, tag: Tag, shaped_phone: &str) -> String {
        match tag {
            Tag::Phone => shaped_phone.to_string(),
            Tag::Otp | Tag::Message => self.text.clone(),
            _ => String::new(),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("text", &"..")
            .finish()
    }
}

/// Why a gateway did not deliver. Texts never contain the message or a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("local error: {0}")]
    Local(String),
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), GatewayError>> + Send + 'a>>;

/// Something that delivers text messages.
pub trait Gateway: Send + Sync {
    /// The config name, for logs and audit.
    fn name(&self) -> &str;
    /// Sends one message. Cancel-safe: dropping the future abandons the send.
    fn send<'a>(&'a self, message: &'a Message) -> SendFuture<'a>;
}

/// Every configured gateway, by name, with their shared breakers.
#[derive(Clone)]
pub struct Gateways {
    by_name: BTreeMap<String, Arc<dyn Gateway>>,
    breakers: Arc<breaker::Breakers>,
    /// Each gateway's config as `Debug` prints it (secrets masked), to tell on a reload
    /// which gateways changed and so start their breakers afresh.
    fingerprints: BTreeMap<String, String>,
}

impl Gateways {
    /// Builds every gateway of the config (HTTP clients, spool directories).
    pub fn from_config(config: &Config) -> Result<Gateways, String> {
        let breakers = Arc::new(breaker::Breakers::new(config.sms.breaker_backoff));
        Gateways::build(config, breakers)
    }

    /// The gateways of a reloaded config, sharing these breakers: a gateway whose name and
    /// settings stay keeps its breaker state; a changed or removed one is forgotten.
    pub fn reconfigured(&self, config: &Config) -> Result<Gateways, String> {
        let built = Gateways::build(config, self.breakers.clone())?;
        for (name, old) in &self.fingerprints {
            if built.fingerprints.get(name) != Some(old) {
                self.breakers.forget(name);
            }
        }
        self.breakers.set_backoff(config.sms.breaker_backoff);
        Ok(built)
    }

    /// Every gateway name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    fn build(config: &Config, breakers: Arc<breaker::Breakers>) -> Result<Gateways, String> {
        let mut by_name: BTreeMap<String, Arc<dyn Gateway>> = BTreeMap::new();
        for (name, gateway) in &config.gateways {
            let shape = PhoneShape::from_config(gateway);
            let located = |e: String| format!("{}: gateway.{name}: {e}", config.path.display());
            let built: Arc<dyn Gateway> = match &gateway.kind {
                GatewayKind::Http(http) => {
                    Arc::new(http::HttpGateway::new(name, shape, http).map_err(located)?)
                }
                GatewayKind::Spool(spool) => Arc::new(spool::SpoolGateway::new(name, shape, spool)),
                GatewayKind::Sipgate(sipgate) => {
                    Arc::new(sipgate::SipgateGateway::new(name, shape, sipgate).map_err(located)?)
                }
                GatewayKind::Smtp(smtp) => {
                    Arc::new(smtp::SmtpGateway::new(name, shape, smtp).map_err(located)?)
                }
                GatewayKind::Modem(modem) => Arc::new(modem::ModemGateway::new(name, shape, modem)),
            };
            by_name.insert(name.clone(), built);
        }
        let fingerprints = config
            .gateways
            .iter()
            .map(|(name, gateway)| (name.clone(), format!("{gateway:?}")))
            .collect();
        Ok(Gateways {
            by_name,
            breakers,
            fingerprints,
        })
    }

    pub fn breakers(&self) -> &Arc<breaker::Breakers> {
        &self.breakers
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Gateway>> {
        self.by_name.get(name).cloned()
    }

    /// A chain of the named gateways; unknown names are an error naming them.
    pub fn chain(&self, names: &[String]) -> Result<Chain, String> {
        let gateways = names
            .iter()
            .map(|n| self.get(n).ok_or_else(|| format!("no gateway named '{n}'")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain::new(gateways, self.breakers.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::{PhoneFormat, PhoneRewrite};

    #[test]
    fn a_reload_keeps_the_breaker_of_an_unchanged_gateway_and_forgets_a_changed_one() {
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml"))
                .unwrap();
        let load = |text: &str| Config::from_toml(text, std::path::Path::new("t.toml")).unwrap();
        let gateways = Gateways::from_config(&load(&example)).unwrap();
        gateways.breakers().failed("local", "disk full");
        gateways.breakers().failed("clickatell", "HTTP 500");
        let changed = example.replace(
            "http://api.clickatell.com/http/sendmsg",
            "https://api.clickatell.com/http/sendmsg",
        );
        assert_ne!(changed, example);
        let reloaded = gateways.reconfigured(&load(&changed)).unwrap();
        let states: Vec<(String, &str)> = reloaded
            .breakers()
            .snapshot()
            .into_iter()
            .map(|b| (b.gateway, b.state))
            .collect();
        assert_eq!(states, [("local".to_string(), "open")]);
        assert!(!reloaded.breakers().allows("local"));
        assert!(reloaded.breakers().allows("clickatell"));
    }

    #[test]
    fn shapes_a_number_for_a_gateway_format_then_rewrite() {
        let phone = Phone::parse("+491701234567", None).unwrap();
        let rewrite = PhoneRewrite::parse("/^\\+49/0/").unwrap();
        let shape = PhoneShape {
            format: PhoneFormat::E164,
            rewrite: Some(rewrite),
        };
        assert_eq!(shape.apply(&phone), "01701234567");
    }
}
