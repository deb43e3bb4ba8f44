//! What the configured texts cost to send: a text that needs UCS-2 or more than one SMS
//! segment works, but each segment may be billed, so `check-config` and `serve` warn.
//!
//! It lives in `sms` because only the SMS encoding knows the cost; the config only holds
//! the texts.

use super::encoding::{Encoding, split};
use crate::config::Config;
use crate::template::Escape;

/// Things that work but cost: SMS texts needing several segments or UCS-2, one line each
/// as `file: key: problem`.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let sample_otp = "0".repeat(config.challenge.otp_length as usize);
    let mut check = |key: &str, text: String| {
        let parts = split(&text);
        if parts.encoding() == Encoding::Ucs2 {
            warnings.push(format!(
                "{}: {key}: needs UCS-2 (a character outside the GSM alphabet): 70 characters per SMS",
                config.path.display()
            ));
        }
        if parts.count() > 1 {
            warnings.push(format!(
                "{}: {key}: needs {} SMS segments; gateways may bill each",
                config.path.display(),
                parts.count()
            ));
        }
    };
    check(
        "challenge.sms_text",
        config.sms_text.render(|_| sample_otp.clone(), Escape::None),
    );
    for (index, event) in config.events.iter().enumerate() {
        // Tags stand for short values; each gets a typical length.
        let text = event.text.render(|_| "x".repeat(12), Escape::None);
        check(&format!("event[{index}] ({}).text", event.on.name()), text);
    }
    warnings
}
