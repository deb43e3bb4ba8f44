//! Phone numbers: E.164 parsing and validation by libphonenumber, masking for logs, and
//! how a gateway wants them written (`phone_format`, `phone_regexp`).
//!
//! A leaf module: the config reads numbers and formats in these types, and `sms`, `limits`,
//! `auth`, `events` and the commands use them, so none of them has to import another for a
//! phone number.

use std::fmt;

use regex::Regex;
use serde::Deserialize;

/// A phone number in E.164: '+' and 1 to 15 digits, the first not 0.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Parses E.164, or national/00-prefixed input when `default_region` is given
    /// (`0170 1234567` with region DE becomes `+491701234567`). Spaces, dashes, dots, slashes
    /// and parentheses are ignored.
    ///
    /// libphonenumber reads the number: the country calling code must exist, the number must
    /// not be shorter than any of that country's, and national input is read by the
    /// region's own rules (its trunk prefix, or Italy's leading 0 that stays). Whether SMS may
    /// go to the number (its country and type) is `crate::limits::NumberPolicy`'s call.
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Phone, String> {
        let cleaned: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '(' | ')'))
            .collect();
        let not_a_number =
            || format!("'{input}' is not a phone number (E.164 allows up to 15 digits after '+')");
        // "00" means international whatever the region's own prefix for abroad is.
        let (region, digits) = if let Some(rest) = cleaned.strip_prefix('+') {
            (None, rest)
        } else if let Some(rest) = cleaned.strip_prefix("00") {
            (None, rest)
        } else if cleaned.starts_with('0') {
            let region = default_region
                .ok_or_else(|| format!("'{input}' is a national number; write it as +<country><number> or set [sms] default_region"))?;
            let id = region_id(region).ok_or_else(|| format!("unknown region '{region}'"))?;
            (Some(id), cleaned.as_str())
        } else {
            return Err(format!(
                "'{input}' is not a phone number; write it as +<country><number>"
            ));
        };
        // Digits only: libphonenumber would read letters as a vanity number ("+49 17O ..." as
        // 176) and drop an extension, turning a typo into somebody else's number.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_number());
        }
        let number = match region {
            None => phonenumber::parse_with(numbering(), None, format!("+{digits}")),
            Some(id) => phonenumber::parse_with(numbering(), Some(id), digits),
        }
        .map_err(|e| match e {
            phonenumber::ParseError::InvalidCountryCode => format!(
                "'{input}' is not a phone number: no country has the calling code it starts with"
            ),
            phonenumber::ParseError::NoNumber
            | phonenumber::ParseError::TooShortNsn
            | phonenumber::ParseError::TooShortAfterIdd => {
                format!("'{input}' is too short for a phone number")
            }
            phonenumber::ParseError::TooLong | phonenumber::ParseError::MalformedInteger(_) => {
                not_a_number()
            }
        })?;
        let e164 = number
            .format_with(numbering())
            .mode(phonenumber::Mode::E164)
            .to_string();
        // libphonenumber takes up to 17 digits after the country code; E.164 allows 15 in all.
        let valid = e164.strip_prefix('+').is_some_and(|digits| {
            (2..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        });
        if !valid {
            return Err(not_a_number());
        }
        Ok(Phone(e164))
    }

    /// The E.164 form, `+491701234567`.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The ISO 3166 code of the number's country (`"DE"`), if libphonenumber can tell it.
    pub fn region(&self) -> Option<String> {
        let number = phonenumber::parse_with(numbering(), None, self.e164()).ok()?;
        let id = number.country().id()?;
        Some(id.as_ref().to_string())
    }

    /// Digits without '+'.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// For logs and audit: country prefix and last two digits, `+49*******67`.
    pub fn masked(&self) -> String {
        let digits = self.digits();
        // Short numbers keep less, so that something is always hidden.
        let keep_start = if digits.len() > 4 { 2 } else { 1 };
        let keep_end = if digits.len() > 6 { 2 } else { 0 };
        let hidden = digits.len() - keep_start - keep_end;
        format!(
            "+{}{}{}",
            &digits[..keep_start],
            "*".repeat(hidden),
            &digits[digits.len() - keep_end..]
        )
    }

    /// The number as a gateway wants it.
    pub fn formatted(&self, format: PhoneFormat) -> String {
        match format {
            PhoneFormat::E164 => self.0.clone(),
            PhoneFormat::International => format!("00{}", self.digits()),
            PhoneFormat::Digits => self.digits().to_string(),
        }
    }
}

/// Phones are personal data: Debug shows only the masked form.
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

/// The libphonenumber region of an ISO 3166 alpha-2 code (`"DE"`, `"de"`), if
/// libphonenumber has numbering rules for it.
pub fn region_id(code: &str) -> Option<phonenumber::country::Id> {
    let id: phonenumber::country::Id = code.to_ascii_uppercase().parse().ok()?;
    numbering().by_id(id.as_ref()).map(|_| id)
}

/// How many compiled libphonenumber patterns stay cached. The crate keeps 100, fewer than
/// parsing alone uses across all regions (122), and typing a number adds about ten per
/// region: with numbers of a few dozen countries patterns were recompiled all the time, about
/// 1 ms a number instead of a few microseconds (measured). Parsing and typing an example
/// number of each type of every region used 1,197; the cache holds only the patterns of
/// the countries actually seen (about 1.3 MB each).
const PATTERN_CACHE: usize = 2048;

/// libphonenumber's metadata, with its pattern cache grown before first use. Loading it
/// takes about 100 ms once per process (`crate::limits::NumberPolicy::new` does it at start).
pub fn numbering() -> &'static phonenumber::metadata::Database {
    static GROWN: std::sync::Once = std::sync::Once::new();
    let database: &'static phonenumber::metadata::Database = &phonenumber::metadata::DATABASE;
    GROWN.call_once(|| {
        // A poisoned lock means a panic inside the crate; its default size still works.
        if let Ok(mut cache) = database.cache().lock() {
            cache.set_capacity(PATTERN_CACHE);
        }
    });
    database
}

/// How a gateway wants numbers written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneFormat {
    /// `+491701234567`
    #[default]
    E164,
    /// `00491701234567`
    International,
    /// `491701234567`
    Digits,
}

/// `phone_regexp = "/pattern/replacement/"`: a rewrite applied after `phone_format`.
#[derive(Debug, Clone)]
pub struct PhoneRewrite {
    pattern: Regex,
    replacement: String,
}

impl PhoneRewrite {
    pub fn parse(text: &str) -> Result<PhoneRewrite, String> {
        let shape = "write it as /pattern/replacement/";
        let inner = text
            .strip_prefix('/')
            .and_then(|t| t.strip_suffix('/'))
            .ok_or_else(|| shape.to_string())?;
        let (pattern, replacement) = inner.split_once('/').ok_or_else(|| shape.to_string())?;
        let pattern = Regex::new(pattern).map_err(|e| format!("bad pattern: {e}"))?;
        Ok(PhoneRewrite {
            pattern,
            replacement: replacement.to_string(),
        })
    }

    pub fn apply(&self, phone: &str) -> String {
        self.pattern
            .replace(phone, self.replacement.as_str())
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_e164_and_national_numbers() {
        assert_eq!(
            Phone::parse("+49 170 1234567", None).unwrap().e164(),
            "+491701234567"
        );
        assert_eq!(
            Phone::parse("0170/1234567", Some("DE")).unwrap().e164(),
            "+491701234567"
        );
        assert_eq!(
            Phone::parse("0049 170 1234567", None).unwrap().e164(),
            "+491701234567"
        );
        assert!(
            Phone::parse("0170 1234567", None)
                .unwrap_err()
                .contains("national")
        );
        assert!(Phone::parse("+12345678901234567", None).is_err());
        assert!(Phone::parse("+49abc", None).is_err());
        assert!(Phone::parse("hello", None).is_err());
        assert!(Phone::parse("+", None).is_err());
    }

    #[test]
    fn reads_national_numbers_by_the_regions_own_rules() {
        // The old table stripped any leading 0 and put the calling code before the rest,
        // which is wrong where the 0 belongs to the number (Italy) or the trunk prefix is
        // longer (Hungary's 06).
        assert_eq!(
            Phone::parse("06 1234 5678", Some("IT")).unwrap().e164(),
            "+390612345678"
        );
        assert_eq!(
            Phone::parse("06 30 123 4567", Some("hu")).unwrap().e164(),
            "+36301234567"
        );
        // Regions the table lacked.
        assert_eq!(
            Phone::parse("0912 345 6789", Some("PH")).unwrap().e164(),
            "+639123456789"
        );
        // A trunk 0 written after the calling code, as in "+49 (0)170 ...", is not dialled.
        assert_eq!(
            Phone::parse("+49 (0)170 1234567", None).unwrap().e164(),
            "+491701234567"
        );
        assert!(
            Phone::parse("0170 1234567", Some("XX"))
                .unwrap_err()
                .contains("unknown region 'XX'")
        );
    }

    #[test]
    fn refuses_what_libphonenumber_cannot_read_as_a_number() {
        let unknown_code = Phone::parse("+999 123456", None).unwrap_err();
        assert!(
            unknown_code.contains("no country has the calling code"),
            "{unknown_code}"
        );
        assert!(
            Phone::parse("+491", None)
                .unwrap_err()
                .contains("too short")
        );
        // A letter O typed for a zero would be read as a vanity 6.
        assert!(Phone::parse("+49 17O 1234567", None).is_err());
        assert!(Phone::parse("+49 170 1234567 ext 12", None).is_err());
        assert!(region_id("de").is_some());
        assert!(region_id("UK").is_none());
        assert!(region_id("001").is_none());
    }

    #[test]
    fn masks_all_but_prefix_and_last_two_digits() {
        let phone = Phone::parse("+491701234567", None).unwrap();
        assert_eq!(phone.masked(), "+49********67");
        assert_eq!(format!("{phone:?}"), "Phone(+49********67)");
        assert_eq!(Phone::parse("+123", None).unwrap().masked(), "+1**");
    }

    #[test]
    fn formats_and_rewrites_for_a_gateway() {
        let phone = Phone::parse("+491701234567", None).unwrap();
        assert_eq!(
            phone.formatted(PhoneFormat::International),
            "00491701234567"
        );
        assert_eq!(phone.formatted(PhoneFormat::Digits), "491701234567");
        let rewrite = PhoneRewrite::parse("/^\\+49/0/").unwrap();
        assert_eq!(rewrite.apply("+491701234567"), "01701234567");
        assert!(PhoneRewrite::parse("^x$").is_err());
        assert!(
            PhoneRewrite::parse("/(/x/")
                .unwrap_err()
                .contains("bad pattern")
        );
    }
}
