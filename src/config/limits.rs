//! `[limits]` and `[audit]`: the SMS sending limits, the number checks, the PIN queue bound
//! and audit retention (DESIGN section 8). Shapes and defaults only; the store counts the
//! sends (`store::SendLimits`), `crate::limits` checks numbers.

use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Span};

/// `[limits]` as written; every cap is a count, 0 = no cap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// The shortest time between two sends of one open challenge.
    #[serde(default = "default_resend_interval")]
    pub resend_interval: Span,
    /// SMS per token per rolling hour.
    #[serde(default = "default_per_token_hour")]
    pub per_token_hour: u32,
    /// SMS per token per rolling day.
    #[serde(default = "default_per_token_day")]
    pub per_token_day: u32,
    /// SMS per destination number per rolling hour, whoever the number belongs to.
    #[serde(default = "default_per_phone_hour")]
    pub per_phone_hour: u32,
    /// SMS per RADIUS client per rolling minute.
    #[serde(default)]
    pub per_client_minute: u32,
    /// SMS of the whole deployment per rolling minute.
    #[serde(default)]
    pub global_minute: u32,
    /// SMS of the whole deployment per rolling day.
    #[serde(default)]
    pub global_day: u32,
    /// ISO 3166 alpha-2 codes of the countries SMS may go to; absent: `[sms] default_region`
    /// when set, else every country.
    #[serde(default)]
    pub allowed_countries: Option<Vec<String>>,
    /// Number types no SMS goes to.
    #[serde(default = "default_blocked_number_types")]
    pub blocked_number_types: Vec<NumberType>,
    /// Argon2 jobs that may wait per core before new PIN requests are dropped as overloaded.
    #[serde(default = "default_pin_queue")]
    pub pin_queue: usize,
}

/// The kinds of phone number libphonenumber tells apart, as `blocked_number_types` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    FixedLine,
    Mobile,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Voip,
    Pager,
    Uan,
    Voicemail,
    Unknown,
}

impl NumberType {
    pub fn label(self) -> &'static str {
        match self {
            NumberType::FixedLine => "fixed_line",
            NumberType::Mobile => "mobile",
            NumberType::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberType::TollFree => "toll_free",
            NumberType::PremiumRate => "premium_rate",
            NumberType::SharedCost => "shared_cost",
            NumberType::PersonalNumber => "personal_number",
            NumberType::Voip => "voip",
            NumberType::Pager => "pager",
            NumberType::Uan => "uan",
            NumberType::Voicemail => "voicemail",
            NumberType::Unknown => "unknown",
        }
    }
}

fn default_resend_interval() -> Span {
    Span(Duration::from_secs(30))
}
fn default_per_token_hour() -> u32 {
    20
}
fn default_per_token_day() -> u32 {
    50
}
fn default_per_phone_hour() -> u32 {
    30
}
fn default_blocked_number_types() -> Vec<NumberType> {
    vec![
        NumberType::PremiumRate,
        NumberType::SharedCost,
        NumberType::TollFree,
    ]
}
fn default_pin_queue() -> usize {
    16
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            resend_interval: default_resend_interval(),
            per_token_hour: default_per_token_hour(),
            per_token_day: default_per_token_day(),
            per_phone_hour: default_per_phone_hour(),
            per_client_minute: 0,
            global_minute: 0,
            global_day: 0,
            allowed_countries: None,
            blocked_number_types: default_blocked_number_types(),
            pin_queue: default_pin_queue(),
        }
    }
}

/// `[limits]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub resend_interval: Duration,
    /// The caps the store enforces on every send.
    pub sends: SendCaps,
    /// Upper-case ISO 3166 alpha-2 codes; empty = every country.
    pub allowed_countries: Vec<String>,
    pub blocked_number_types: Vec<NumberType>,
    pub pin_queue: usize,
}

/// SMS caps over rolling windows; 0 = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendCaps {
    pub per_token_hour: u32,
    pub per_token_day: u32,
    pub per_phone_hour: u32,
    pub per_client_minute: u32,
    pub global_minute: u32,
    pub global_day: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let mut problems = Problems {
            file: String::new(),
            list: Vec::new(),
        };
        check_limits(RawLimits::default(), None, &mut problems)
    }
}

pub(super) fn check_limits(
    raw: RawLimits,
    default_region: Option<&str>,
    problems: &mut Problems,
) -> LimitsConfig {
    let allowed_countries = match raw.allowed_countries {
        Some(list) => list
            .iter()
            .filter_map(|code| {
                let upper = code.to_ascii_uppercase();
                if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
                    problems.add(
                        "limits.allowed_countries",
                        format!("'{code}' is not an ISO 3166 alpha-2 country code, e.g. \"DE\""),
                    );
                    None
                } else if crate::phone::region_id(&upper).is_none() {
                    // A code no number is ever in ("UK" for GB) would refuse that country
                    // silently.
                    problems.add(
                        "limits.allowed_countries",
                        format!("'{code}' is not a region libphonenumber knows"),
                    );
                    None
                } else {
                    Some(upper)
                }
            })
            .collect(),
        None => default_region
            .map(|r| vec![r.to_ascii_uppercase()])
            .unwrap_or_default(),
    };
    if raw.pin_queue == 0 {
        problems.add("limits.pin_queue", "must be at least 1");
    }
    LimitsConfig {
        resend_interval: raw.resend_interval.0,
        sends: SendCaps {
            per_token_hour: raw.per_token_hour,
            per_token_day: raw.per_token_day,
            per_phone_hour: raw.per_phone_hour,
            per_client_minute: raw.per_client_minute,
            global_minute: raw.global_minute,
            global_day: raw.global_day,
        },
        allowed_countries,
        blocked_number_types: raw.blocked_number_types,
        pin_queue: raw.pin_queue,
    }
}

/// `[audit]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Audit rows older than this are purged.
    #[serde(default = "default_keep")]
    pub keep: Span,
}

fn default_keep() -> Span {
    Span(Duration::from_secs(90 * 24 * 3600))
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            keep: default_keep(),
        }
    }
}

/// `[audit]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub keep: Duration,
}

pub(super) fn check_audit(raw: RawAudit, problems: &mut Problems) -> AuditConfig {
    if raw.keep.0 < Duration::from_secs(3600) {
        problems.add(
            "audit.keep",
            "must be at least 1h (the audit trail is what explains a login)",
        );
    }
    AuditConfig { keep: raw.keep.0 }
}
