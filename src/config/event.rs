//! `[[event]]` rules: which event notifies whom, through which gateways, with what text.

use serde::Deserialize;

use super::{Problems, parse_template};
use crate::phone::Phone;
use crate::template::{Tag, Template};

/// Tags a notification text may use.
pub const EVENT_TAGS: &[Tag] = &[
    Tag::User,
    Tag::Serial,
    Tag::Client,
    Tag::Time,
    Tag::Failures,
    Tag::PhoneMasked,
];

/// Something that happened to a token or a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    TokenLocked,
    TokenUnlocked,
    TokenAdded,
    TokenDeleted,
    PinChanged,
    SmsFailed,
    /// An SMS cap stopped a code (`[limits]`); notifies at most once a minute per limit.
    SmsLimited,
    LoginSuccess,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::TokenLocked => "token_locked",
            EventKind::TokenUnlocked => "token_unlocked",
            EventKind::TokenAdded => "token_added",
            EventKind::TokenDeleted => "token_deleted",
            EventKind::PinChanged => "pin_changed",
            EventKind::SmsFailed => "sms_failed",
            EventKind::SmsLimited => "sms_limited",
            EventKind::LoginSuccess => "login_success",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GatewayRef {
    One(String),
    Chain(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    on: EventKind,
    /// A gateway or a list tried in order; `[sms] default_chain` when left out.
    gateway: Option<GatewayRef>,
    /// "owner" (the token's phone) or a fixed number.
    #[serde(default = "owner")]
    to: String,
    text: String,
    /// For login_success: only when the user logs in from a client not seen before.
    #[serde(default)]
    only_new_client: bool,
}

fn owner() -> String {
    "owner".into()
}

/// Who a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Owner,
    Fixed(Phone),
}

#[derive(Debug, Clone)]
pub struct EventRule {
    pub on: EventKind,
    pub chain: Vec<String>,
    pub to: Recipient,
    pub text: Template,
    pub only_new_client: bool,
}

/// Whether any rule listens for `kind`.
pub fn listens(rules: &[EventRule], kind: EventKind) -> bool {
    rules.iter().any(|rule| rule.on == kind)
}

pub(super) fn check_events(
    raw: Vec<RawEvent>,
    gateway_exists: &dyn Fn(&str) -> bool,
    default_chain: &[String],
    problems: &mut Problems,
) -> Vec<EventRule> {
    raw.into_iter()
        .enumerate()
        .map(|(index, event)| {
            let key = |field: &str| format!("event[{index}] ({}).{field}", event.on.name());
            let chain = match &event.gateway {
                Some(GatewayRef::One(name)) => vec![name.clone()],
                Some(GatewayRef::Chain(names)) => names.clone(),
                None => default_chain.to_vec(),
            };
            if chain.is_empty() {
                problems.add(
                    &key("gateway"),
                    "no gateway: name one, or set [sms] default_chain",
                );
            }
            for name in chain.iter().filter(|n| !gateway_exists(n)) {
                problems.add(&key("gateway"), format!("no gateway named '{name}'"));
            }
            let to = if event.to == "owner" {
                Recipient::Owner
            } else {
                match Phone::parse(&event.to, None) {
                    Ok(phone) => Recipient::Fixed(phone),
                    Err(e) => {
                        problems.add(&key("to"), format!("{e} (or write \"owner\")"));
                        Recipient::Owner
                    }
                }
            };
            if event.on == EventKind::SmsLimited && to == Recipient::Owner {
                problems.add(
                    &key("to"),
                    "sms_limited goes to an admin number, never to the number that was limited",
                );
            }
            if event.only_new_client && event.on != EventKind::LoginSuccess {
                problems.add(&key("only_new_client"), "applies to login_success only");
            }
            let text = parse_template(&key("text"), &event.text, EVENT_TAGS, problems);
            EventRule {
                on: event.on,
                chain,
                to,
                text,
                only_new_client: event.only_new_client,
            }
        })
        .collect()
}
