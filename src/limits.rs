//! Number checks: whether SMS may go to a phone number, by `[limits] allowed_countries` and
//! `blocked_number_types` (DESIGN section 8). libphonenumber's metadata says which country a
//! number is in and what type it is. Enrollment refuses such numbers and the engine checks
//! again before each send, since the config may have changed since. How many SMS may be sent
//! is not decided here: the store counts the sends.

use crate::config::{LimitsConfig, NumberType};
use crate::phone::{self, Phone};

/// The region libphonenumber and CLDR write for "no known country".
const UNKNOWN_REGION: &str = "ZZ";

/// The number rules of `[limits]`, ready to check phones with.
#[derive(Debug, Clone)]
pub struct NumberPolicy {
    /// Upper-case ISO 3166 alpha-2 codes; empty = every country.
    allowed_countries: Vec<String>,
    blocked_number_types: Vec<NumberType>,
}

/// Why SMS may not go to a number. The texts name the rule and the key to change, and show
/// the phone masked: they go into CLI errors, audit reasons and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberRefused {
    /// The number's country is not in `allowed_countries`; `region` is its ISO code, or "ZZ"
    /// when libphonenumber cannot tell the country.
    #[error("{}", country_text(phone, region))]
    Country { phone: Phone, region: String },
    /// libphonenumber types the number as one of `blocked_number_types`.
    #[error(
        "{} is a {} number, and [limits] blocked_number_types refuses those",
        phone.masked(),
        kind.label()
    )]
    Type { phone: Phone, kind: NumberType },
}

fn country_text(phone: &Phone, region: &str) -> String {
    if region == UNKNOWN_REGION {
        format!(
            "{} is in no country libphonenumber knows, and [limits] allowed_countries refuses those",
            phone.masked()
        )
    } else {
        format!(
            "{} is a number in {region}, and [limits] allowed_countries does not list {region}",
            phone.masked()
        )
    }
}

impl NumberPolicy {
    /// Also loads libphonenumber's metadata (about 100 ms, once per process), so that the
    /// first login after start does not wait for it.
    pub fn new(limits: &LimitsConfig) -> NumberPolicy {
        phone::numbering();
        NumberPolicy {
            allowed_countries: limits.allowed_countries.clone(),
            blocked_number_types: limits.blocked_number_types.clone(),
        }
    }

    /// Whether SMS may go to `phone`: its country first, then its type.
    pub fn check(&self, phone: &Phone) -> Result<(), NumberRefused> {
        if self.allowed_countries.is_empty() && self.blocked_number_types.is_empty() {
            return Ok(());
        }
        let number = parsed(phone);
        if !self.allowed_countries.is_empty() {
            let id = number.as_ref().and_then(|n| n.country().id());
            let region = id.as_ref().map_or(UNKNOWN_REGION, AsRef::as_ref);
            if !self.allowed_countries.iter().any(|c| c == region) {
                return Err(NumberRefused::Country {
                    phone: phone.clone(),
                    region: region.to_string(),
                });
            }
        }
        if !self.blocked_number_types.is_empty() {
            let kind = number.map_or(NumberType::Unknown, |n| {
                number_type(n.number_type(phone::numbering()))
            });
            if self.blocked_number_types.contains(&kind) {
                return Err(NumberRefused::Type {
                    phone: phone.clone(),
                    kind,
                });
            }
        }
        Ok(())
    }

    /// The ISO 3166 code of the phone's country (`"DE"`), if libphonenumber can tell it.
    pub fn region(&self, phone: &Phone) -> Option<String> {
        phone.region()
    }
}

/// libphonenumber's reading of a phone. `Phone::parse` made it with the same crate, so this
/// only fails for a `Phone` from elsewhere; such a number counts as in no known country and
/// of unknown type.
fn parsed(phone: &Phone) -> Option<phonenumber::PhoneNumber> {
    phonenumber::parse_with(phone::numbering(), None, phone.e164()).ok()
}

/// libphonenumber's types as `blocked_number_types` names them. The types it has only for
/// short numbers (emergency, short codes, ...) never come out of a full number's typing.
fn number_type(kind: phonenumber::Type) -> NumberType {
    use phonenumber::Type;
    match kind {
        Type::FixedLine => NumberType::FixedLine,
        Type::Mobile => NumberType::Mobile,
        Type::FixedLineOrMobile => NumberType::FixedLineOrMobile,
        Type::TollFree => NumberType::TollFree,
        Type::PremiumRate => NumberType::PremiumRate,
        Type::SharedCost => NumberType::SharedCost,
        Type::PersonalNumber => NumberType::PersonalNumber,
        Type::Voip => NumberType::Voip,
        Type::Pager => NumberType::Pager,
        Type::Uan => NumberType::Uan,
        Type::Voicemail => NumberType::Voicemail,
        Type::Emergency
        | Type::ShortCode
        | Type::StandardRate
        | Type::Carrier
        | Type::NoInternational
        | Type::Unknown => NumberType::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(text: &str) -> Phone {
        Phone::parse(text, None).unwrap()
    }

    /// The defaults, with `[sms] default_region = "DE"`.
    fn german() -> NumberPolicy {
        NumberPolicy::new(&LimitsConfig {
            allowed_countries: vec!["DE".into()],
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn a_german_premium_rate_number_is_refused_by_type() {
        let refused = german().check(&phone("+49 900 1234567")).unwrap_err();
        assert_eq!(
            refused,
            NumberRefused::Type {
                phone: phone("+499001234567"),
                kind: NumberType::PremiumRate
            }
        );
        assert_eq!(
            refused.to_string(),
            "+49********67 is a premium_rate number, and [limits] blocked_number_types refuses those"
        );
    }

    #[test]
    fn german_toll_free_and_shared_cost_numbers_are_refused_by_type() {
        let kind = |text: &str| match german().check(&phone(text)) {
            Err(NumberRefused::Type { kind, .. }) => Some(kind),
            _ => None,
        };
        assert_eq!(kind("+49 800 1234567"), Some(NumberType::TollFree));
        assert_eq!(kind("+49 180 5123456"), Some(NumberType::SharedCost));
    }

    #[test]
    fn a_german_mobile_passes_with_countries_de() {
        let policy = german();
        let mobile = phone("+49 170 1234567");
        assert_eq!(policy.check(&mobile), Ok(()));
        assert_eq!(policy.region(&mobile).as_deref(), Some("DE"));
    }

    #[test]
    fn a_french_mobile_is_refused_by_country_unless_every_country_is_allowed() {
        let french = phone("+33 6 12 34 56 78");
        let refused = german().check(&french).unwrap_err();
        assert_eq!(
            refused,
            NumberRefused::Country {
                phone: french.clone(),
                region: "FR".into()
            }
        );
        assert_eq!(
            refused.to_string(),
            "+33*******78 is a number in FR, and [limits] allowed_countries does not list FR"
        );
        let everywhere = NumberPolicy::new(&LimitsConfig::default());
        assert_eq!(everywhere.check(&french), Ok(()));
        assert_eq!(everywhere.region(&french).as_deref(), Some("FR"));
    }

    #[test]
    fn a_number_of_no_known_country_is_refused_only_where_countries_are_listed() {
        // +800: international freephone, a calling code of no country.
        let freephone = phone("+800 1234 5678");
        let refused = german().check(&freephone).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "+80*******78 is in no country libphonenumber knows, and [limits] allowed_countries refuses those"
        );
        let everywhere = NumberPolicy::new(&LimitsConfig {
            blocked_number_types: Vec::new(),
            ..LimitsConfig::default()
        });
        assert_eq!(everywhere.region(&freephone), None);
        assert_eq!(everywhere.check(&freephone), Ok(()));
    }

    #[test]
    fn a_number_libphonenumber_cannot_type_is_refused_only_if_unknown_is_listed() {
        // Too short for a German mobile: no type's pattern matches.
        let untyped = phone("+49 170 12345");
        assert_eq!(german().check(&untyped), Ok(()));
        let strict = NumberPolicy::new(&LimitsConfig {
            blocked_number_types: vec![NumberType::Unknown],
            ..LimitsConfig::default()
        });
        assert_eq!(
            strict.check(&untyped),
            Err(NumberRefused::Type {
                phone: untyped.clone(),
                kind: NumberType::Unknown
            })
        );
        assert_eq!(strict.check(&phone("+49 170 1234567")), Ok(()));
    }

    /// `cargo test --release --lib limits -- --ignored --nocapture` prints what one check
    /// costs: for one German number over and over, and for a mobile of every region in turn
    /// (where the crate's own pattern cache of 100 was too small).
    #[test]
    #[ignore = "a timing, meaningful in a release build only"]
    fn one_check_costs_a_few_microseconds() {
        let policy = NumberPolicy::new(&LimitsConfig::default());
        let per_check = |phones: &[Phone], rounds: u32| {
            for phone in phones {
                let _ = policy.check(phone);
            }
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                for phone in phones {
                    std::hint::black_box(policy.check(std::hint::black_box(phone))).ok();
                }
            }
            start.elapsed() / (rounds * phones.len() as u32)
        };
        let german = per_check(&[phone("+491701234567")], 100_000);
        let every_region: Vec<Phone> = phone::numbering()
            .iter()
            .filter_map(|meta| {
                let example = meta.descriptors().mobile()?.example()?;
                Phone::parse(&format!("+{}{example}", meta.country_code()), None).ok()
            })
            .collect();
        let mixed = per_check(&every_region, 50);
        println!(
            "one check: {german:?} (a German mobile), {mixed:?} (mobiles of {} regions in turn)",
            every_region.len()
        );
        assert!(german < std::time::Duration::from_micros(20), "{german:?}");
        assert!(mixed < std::time::Duration::from_micros(50), "{mixed:?}");
    }
}
