//! The class of a decision's reason, a short fixed word for metrics: the audit reason is
//! free text (it names attempts, gateways, limits), a metric label must not be. One table,
//! tested against the reasons the engine writes.

use super::{Decision, Verdict};

/// Reason texts (by prefix, first match wins) and their class. More specific first.
const CLASSES: &[(&str, &str)] = &[
    ("OTP accepted", "accept"),
    ("PIN and OTP accepted", "accept"),
    ("wrong PIN", "wrong_pin"),
    ("wrong OTP", "wrong_otp"),
    ("PIN right, wrong OTP", "wrong_otp"),
    ("PIN right, challenge still open, SMS limit", "limited"),
    ("PIN right, SMS limit", "limited"),
    ("PIN right, SMS failed", "sms_failed"),
    ("PIN right, same challenge, re-send failed", "sms_failed"),
    ("PIN right, no SMS", "number_refused"),
    ("PIN right, no open challenge", "unknown_challenge"),
    ("challenge expired", "expired"),
    ("challenge has no attempts left", "no_attempts_left"),
    ("challenge used or ended", "unknown_challenge"),
    ("challenge belongs to another user", "unknown_challenge"),
    ("unknown challenge", "unknown_challenge"),
    ("token of the challenge was deleted", "unknown_challenge"),
    ("token locked", "locked"),
    ("token disabled", "disabled"),
    ("user has no token", "no_token"),
    ("unknown user", "unknown_user"),
    ("every failure left is claimed", "busy"),
    ("no User-Password", "no_password"),
    ("internal error", "internal_error"),
];

/// `accept`, `challenge`, `wrong_pin`, `wrong_otp`, `expired`, `locked`, `limited`, ...;
/// `other` for a reason this table does not know.
pub fn reason_class(verdict: &Verdict) -> &'static str {
    if let Some((_, class)) = CLASSES
        .iter()
        .find(|(prefix, _)| verdict.reason.starts_with(prefix))
    {
        return class;
    }
    match verdict.decision {
        Decision::Challenge { .. } => "challenge",
        Decision::Accept(_) => "accept",
        Decision::Reject { .. } => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::engine::reject;

    fn class(reason: &str) -> &'static str {
        reason_class(&reject(reason))
    }

    #[test]
    fn each_reason_the_engine_writes_has_a_class() {
        assert_eq!(class("wrong PIN"), "wrong_pin");
        assert_eq!(class("wrong OTP, attempt 2"), "wrong_otp");
        assert_eq!(
            class("PIN right, wrong OTP, attempt 1, token locked"),
            "wrong_otp"
        );
        assert_eq!(
            class("PIN right, SMS limit per_token_hour reached"),
            "limited"
        );
        assert_eq!(
            class("PIN right, challenge still open, SMS limit global_day reached"),
            "limited"
        );
        assert_eq!(
            class("PIN right, SMS failed: not sent: a: timed out"),
            "sms_failed"
        );
        assert_eq!(class("challenge expired"), "expired");
        assert_eq!(class("token locked"), "locked");
        assert_eq!(class("unknown user"), "unknown_user");
        assert_eq!(class("internal error: disk"), "internal_error");
        assert_eq!(class("something new"), "other");
        let challenge = Verdict {
            decision: Decision::Challenge {
                state: crate::auth::TransactionId::random().unwrap(),
                prompt: String::new(),
                timeout: std::time::Duration::from_secs(1),
            },
            ..reject("PIN right, challenge created, sent via local")
        };
        assert_eq!(reason_class(&challenge), "challenge");
    }
}
