//! Event notifications: `[[event]]` rules turn what happened (a token locked, an SMS that
//! could not be sent, a login from a new client, ...) into messages through the gateways.
//!
//! The server sends them in the background on their own task tracker, so they never delay
//! or change a RADIUS reply; the CLI waits for them. Every notification, sent or not, is
//! logged and gets an audit row (outcome `notify`).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::task::TaskTracker;

use crate::config::{Config, EventKind, EventRule, Recipient};
use crate::logging::printable;
use crate::phone::Phone;
use crate::sms::{Gateways, Message};
use crate::store::{AuditRow, StoreThread};
use crate::template::{Escape, Tag};
use crate::time::now_ms;

/// Something that happened, with what the notification texts may mention.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub user: String,
    pub serial: Option<String>,
    /// The RADIUS client or Calling-Station-Id of the login, if any.
    pub client: Option<String>,
    pub failures: Option<u32>,
    /// The token owner's phone, for rules with `to = "owner"`.
    pub owner: Option<Phone>,
    /// For login_success: no earlier accept for this user from this client.
    pub new_client: bool,
}

impl Event {
    pub fn new(kind: EventKind, user: &str) -> Event {
        Event {
            kind,
            user: user.to_string(),
            serial: None,
            client: None,
            failures: None,
            owner: None,
            new_client: false,
        }
    }
}

pub struct Notifier {
    rules: Vec<EventRule>,
    gateways: Gateways,
    store: Arc<StoreThread>,
    send_within: std::time::Duration,
    tasks: TaskTracker,
}

impl Notifier {
    pub fn new(config: &Config, gateways: Gateways, store: Arc<StoreThread>) -> Notifier {
        Notifier {
            rules: config.events.clone(),
            gateways,
            store,
            send_within: config.sms.send_within,
            tasks: TaskTracker::new(),
        }
    }

    /// The notifier of a reloaded config: its rules and gateways, this one's store and
    /// tasks (so shutdown still waits for notifications sent under the old config).
    pub fn reconfigured(&self, config: &Config, gateways: Gateways) -> Notifier {
        Notifier {
            rules: config.events.clone(),
            gateways,
            store: self.store.clone(),
            send_within: config.sms.send_within,
            tasks: self.tasks.clone(),
        }
    }

    /// Whether any rule listens for `kind` (so callers can skip costly lookups).
    pub fn wants(&self, kind: EventKind) -> bool {
        crate::config::listens(&self.rules, kind)
    }

    /// Notifications still being sent.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Sends the notifications of `event` in the background.
    pub fn notify(self: &Arc<Self>, event: Event) {
        for rule in self.matching(&event) {
            let (notifier, event) = (self.clone(), event.clone());
            self.tasks
                .spawn(async move { notifier.deliver(&rule, &event).await });
        }
    }

    /// Sends the notifications of `event` and waits for them (for the CLI).
    pub async fn notify_and_wait(&self, event: Event) {
        for rule in self.matching(&event) {
            self.deliver(&rule, &event).await;
        }
    }

    fn matching(&self, event: &Event) -> Vec<EventRule> {
        self.rules
            .iter()
            .filter(|r| r.on == event.kind && (!r.only_new_client || event.new_client))
            .cloned()
            .collect()
    }

    async fn deliver(&self, rule: &EventRule, event: &Event) {
        let kind = event.kind.name();
        let to = match (&rule.to, &event.owner) {
            (Recipient::Fixed(phone), _) => phone.clone(),
            (Recipient::Owner, Some(phone)) => phone.clone(),
            (Recipient::Owner, None) => {
                tracing::warn!(event = kind, user = %printable(&event.user), "notification for the owner, but the owner has no phone");
                return;
            }
        };
        let text = rule.text.render(|tag| tag_value(tag, event), Escape::None);
        let message = Message {
            to: to.clone(),
            text,
        };
        let delivery = match self.gateways.chain(&rule.chain) {
            Ok(chain) => {
                chain
                    .send(&message, Instant::now() + self.send_within)
                    .await
            }
            Err(e) => {
                tracing::error!(event = kind, error = %e, "notification rule names no usable gateway");
                return;
            }
        };
        let reason = format!("{kind} notification {}", delivery.summary());
        if delivery.delivered() {
            tracing::info!(event = kind, user = %printable(&event.user), to = %to.masked(), "{reason}");
        } else {
            tracing::warn!(event = kind, user = %printable(&event.user), to = %to.masked(), "{reason}");
        }
        let row = AuditRow {
            time: now_ms(),
            client: event.client.clone().unwrap_or_else(|| "-".into()),
            user: event.user.clone(),
            serial: event.serial.clone(),
            outcome: "notify".into(),
            reason,
            phone_masked: Some(to.masked()),
            gateway: delivery.gateway.clone(),
            ..AuditRow::default()
        };
        if let Err(e) = self.store.run(move |s| s.append_audit(&row)).await {
            tracing::error!(error = %e, "cannot audit a notification");
        }
    }
}

/// The most characters a tag's text value puts into a notification.
const TAG_VALUE_MAX_CHARS: usize = 64;

fn tag_value(tag: Tag, event: &Event) -> String {
    let or_dash = |v: &Option<String>| v.as_deref().map_or_else(|| "-".into(), plain);
    match tag {
        Tag::User => plain(&event.user),
        Tag::Serial => or_dash(&event.serial),
        Tag::Client => or_dash(&event.client),
        Tag::Time => humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        Tag::Failures => event.failures.map_or_else(|| "-".into(), |f| f.to_string()),
        Tag::PhoneMasked => event
            .owner
            .as_ref()
            .map_or_else(|| "-".into(), Phone::masked),
        Tag::Phone | Tag::Otp | Tag::Message => String::new(),
    }
}

/// A text value as it may go into an SMS. `{client}` is the Calling-Station-Id, which whoever
/// sends the request chooses (and `{user}` may be too): without this a login could put line
/// breaks, terminal escapes or a whole paragraph of its own text into the owner's phone.
/// Keeps printable characters only and at most `TAG_VALUE_MAX_CHARS` of them.
fn plain(value: &str) -> String {
    value
        .chars()
        .filter(|c| !crate::logging::needs_escape(*c))
        .take(TAG_VALUE_MAX_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_lose_controls_and_are_capped_on_a_character_boundary() {
        assert_eq!(plain("ab\n\r\tc\u{1b}[2Kd\u{9b}\u{202e}e"), "abc[2Kde");
        let long = "ü".repeat(100);
        assert_eq!(plain(&long), "ü".repeat(64));
        assert_eq!(plain("198.51.100.1"), "198.51.100.1");
    }
}
