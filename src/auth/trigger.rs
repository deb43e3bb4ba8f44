//! The PIN was right: the token's one open challenge (a new one, or the one already open)
//! and its SMS, within the resend interval and the sending caps that the store counts
//! (`Store::open_challenge`, DESIGN section 8).
//!
//! The reply waits at most `reply_within` for the gateway chain; a delivery still running
//! then goes on in the background on the engine's task tracker.

use std::sync::Mutex;
use std::time::Instant;

use super::engine::{
    Engine, Failure, SMS_NOT_SENT, Step, TOO_MANY_CODES, client_of, millis, owner_phone,
};
use super::{Decision, Request, TransactionId, Verdict, otp};
use crate::config::{ClientMode, EventKind};
use crate::sms::{Chain, Message};
use crate::store::{ChallengeToStart, Limit, OpenChallenge, Resend, Started, TokenRow, UserRow};
use crate::template::{Escape, Tag};

/// How often one limit may notify `sms_limited`: an attacker who keeps hitting a cap must
/// not turn the admin's phone into the next target.
const LIMITED_NOTICE_EVERY_MS: i64 = 60_000;

/// When each limit last notified, so `sms_limited` goes out at most once a minute per limit.
#[derive(Default)]
pub struct LimitNotices {
    last: Mutex<[i64; Limit::ALL.len()]>,
}

impl LimitNotices {
    /// Whether `limit` may notify at `now`; if so, counts it as notified.
    fn due(&self, limit: Limit, now: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = last.get_mut(limit as usize) else {
            return false;
        };
        if now.saturating_sub(*slot) < LIMITED_NOTICE_EVERY_MS {
            return false;
        }
        *slot = now;
        true
    }
}

/// What came of handing the code to the gateway chain within `reply_within`.
enum Sent {
    Delivered {
        gateway: Option<String>,
        summary: String,
    },
    Failed(String),
    StillSending,
}

impl Engine {
    /// PIN right: open or reuse the challenge, send the SMS if the limits allow it, and
    /// answer per the client's mode. `refund` are the PIN check's failure claims.
    pub(super) async fn trigger(
        &self,
        request: &Request,
        user: &UserRow,
        token: TokenRow,
        refund: Vec<String>,
        now: i64,
    ) -> Step<Verdict> {
        let phone = owner_phone(user, &token).map_err(Failure::Other)?;
        let phone_masked = phone.masked();
        if let Err(refused) = self.numbers.check(&phone) {
            self.refund(refund).await?;
            return Ok(Verdict {
                decision: Decision::Reject {
                    message: Some(SMS_NOT_SENT.to_string()),
                },
                reason: format!("PIN right, no SMS: {refused}"),
                serial: Some(token.serial.clone()),
                phone_masked: Some(phone_masked),
                gateway: None,
            });
        }
        let chain = self.chain_for(&token)?;
        let seed = self
            .keys
            .unseal(&token.sealed_seed)
            .map_err(|e| Failure::Other(e.to_string()))?;
        let tid = TransactionId::random().map_err(|e| Failure::Other(e.to_string()))?;
        let validity_ms = millis(self.policy.challenge.validity.0);
        let (keys, digits) = (self.keys.clone(), token.otp_length);
        let (resend_interval_ms, caps) = (
            millis(self.policy.limits.resend_interval),
            self.policy.limits.sends,
        );
        // The counter the login read: if no other request took it meanwhile, the store opens
        // the challenge with this MAC in one round trip.
        let expected_counter = token.counter;
        let expected_mac = keys.code_mac(
            &user.name,
            otp::hotp(&seed, expected_counter, digits).as_bytes(),
        );
        let (mac_seed, mac_user) = (seed.clone(), user.name.clone());
        let started = self
            .store()
            .start_challenge(ChallengeToStart {
                transaction_id: tid.as_str().to_string(),
                serial: token.serial.clone(),
                user: user.name.clone(),
                client: request.client.clone(),
                phone: phone.e164().to_string(),
                now,
                expires: now.saturating_add(validity_ms),
                resend_interval_ms,
                caps,
                refund,
                expected_counter,
                expected_mac,
                code_mac: Box::new(move |counter| {
                    keys.code_mac(&mac_user, otp::hotp(&mac_seed, counter, digits).as_bytes())
                }),
            })
            .await?;
        let base = Verdict {
            decision: Decision::Reject { message: None },
            reason: String::new(),
            serial: Some(token.serial.clone()),
            phone_masked: Some(phone_masked.clone()),
            gateway: None,
        };
        let (open, resend) = match started {
            Started::Limited(limit) => {
                self.sms_limited(request, user, &token, limit, now);
                return Ok(Verdict {
                    decision: Decision::Reject {
                        message: Some(TOO_MANY_CODES.to_string()),
                    },
                    reason: format!("PIN right, SMS limit {} reached", limit.key()),
                    ..base
                });
            }
            Started::New(open) => (open, None),
            Started::Again(open, resend) => (open, Some(resend)),
        };
        let code = otp::hotp(&seed, open.counter, token.otp_length);
        let (gateway, reason) = match resend {
            Some(Resend::TooSoon) => (
                None,
                "PIN right, challenge still open, SMS not sent again within resend_interval"
                    .to_string(),
            ),
            Some(Resend::Limited(limit)) => {
                self.sms_limited(request, user, &token, limit, now);
                (
                    None,
                    format!(
                        "PIN right, challenge still open, SMS limit {} reached",
                        limit.key()
                    ),
                )
            }
            Some(Resend::Claimed) => match self.send(chain, phone, code).await? {
                Sent::Delivered { gateway, summary } => {
                    (gateway, format!("PIN right, same challenge, {summary}"))
                }
                // The code sent before may well have arrived: the challenge stays.
                Sent::Failed(summary) => {
                    self.sms_failed(request, user, &token, &summary);
                    (
                        None,
                        format!("PIN right, same challenge, re-send failed: {summary}"),
                    )
                }
                Sent::StillSending => (None, self.still_sending("PIN right, same challenge")),
            },
            None => match self.send(chain, phone, code).await? {
                Sent::Delivered { gateway, summary } => {
                    (gateway, format!("PIN right, challenge created, {summary}"))
                }
                Sent::Failed(summary) => {
                    let key = open.transaction_id.clone();
                    self.db(move |s| s.delete_challenge(&key)).await?;
                    self.sms_failed(request, user, &token, &summary);
                    return Ok(Verdict {
                        decision: Decision::Reject {
                            message: Some(SMS_NOT_SENT.to_string()),
                        },
                        reason: format!("PIN right, SMS failed: {summary}"),
                        ..base
                    });
                }
                Sent::StillSending => (None, self.still_sending("PIN right, challenge created")),
            },
        };
        Ok(Verdict {
            decision: self.challenge_decision(request, &open, &phone_masked, now)?,
            reason,
            gateway,
            ..base
        })
    }

    /// Gives back the PIN check's failure claims when no store call follows to do it.
    async fn refund(&self, serials: Vec<String>) -> Step<()> {
        Ok(self.db(move |s| s.refund_failures(&serials)).await?)
    }

    /// Hands the code to the chain and waits at most `reply_within` for it.
    async fn send(&self, chain: Chain, to: crate::phone::Phone, code: String) -> Step<Sent> {
        let text = self.policy.sms_text.render(|_| code.clone(), Escape::None);
        let deadline = Instant::now() + self.send_within;
        let message = Message { to, text };
        let sending = self
            .background
            .spawn(async move { chain.send(&message, deadline).await });
        match tokio::time::timeout(self.policy.reply_within, sending).await {
            Ok(Ok(delivery)) if delivery.delivered() => Ok(Sent::Delivered {
                gateway: delivery.gateway.clone(),
                summary: delivery.summary(),
            }),
            Ok(Ok(delivery)) => Ok(Sent::Failed(delivery.summary())),
            Ok(Err(join)) => Err(Failure::Other(format!("SMS task failed: {join}"))),
            Err(_) => Ok(Sent::StillSending),
        }
    }

    fn still_sending(&self, what: &str) -> String {
        format!(
            "{what}, SMS still sending after {:?}",
            self.policy.reply_within
        )
    }

    /// The challenge as the client's mode answers it.
    fn challenge_decision(
        &self,
        request: &Request,
        open: &OpenChallenge,
        phone_masked: &str,
        now: i64,
    ) -> Step<Decision> {
        let state = TransactionId::parse(open.transaction_id.as_bytes())
            .ok_or_else(|| Failure::Other("a stored transaction id is malformed".into()))?;
        let prompt = self.policy.prompt.render(
            |tag| {
                if tag == Tag::PhoneMasked {
                    phone_masked.to_string()
                } else {
                    String::new()
                }
            },
            Escape::None,
        );
        let remaining = u64::try_from(open.expires.saturating_sub(now)).unwrap_or(0);
        Ok(match request.mode {
            ClientMode::Challenge => Decision::Challenge {
                state,
                prompt,
                timeout: std::time::Duration::from_millis(remaining),
            },
            ClientMode::TwoPass => Decision::Reject {
                message: Some(prompt),
            },
        })
    }

    fn sms_failed(&self, request: &Request, user: &UserRow, token: &TokenRow, summary: &str) {
        let to = owner_phone(user, token)
            .map(|p| p.masked())
            .unwrap_or_default();
        tracing::warn!(user = %crate::logging::printable(&user.name), serial = %token.serial, to = %to, event = "sms_failed", "{summary}");
        let client = Some(client_of(request));
        self.notifier
            .notify(self.event(EventKind::SmsFailed, user, Some(token), client));
    }

    /// A cap stopped an SMS: count it, log it, and notify (at most once a minute per limit).
    fn sms_limited(
        &self,
        request: &Request,
        user: &UserRow,
        token: &TokenRow,
        limit: Limit,
        now: i64,
    ) {
        self.stats.limited(limit);
        tracing::warn!(user = %crate::logging::printable(&user.name), serial = %token.serial, client = %request.client, limit = limit.key(), event = "sms_limited", "SMS limit reached");
        if self.limit_notices.due(limit, now) {
            let event = self.event(
                EventKind::SmsLimited,
                user,
                Some(token),
                Some(client_of(request)),
            );
            self.notifier.notify(event);
        }
    }

    fn chain_for(&self, token: &TokenRow) -> Step<Chain> {
        let names = match &token.gateway {
            Some(name) => std::slice::from_ref(name),
            None => &self.policy.default_chain[..],
        };
        self.gateways
            .chain(names)
            .map_err(|e| Failure::Other(format!("token {}: {e}", token.serial)))
    }
}
