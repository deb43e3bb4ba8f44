//! Ordered failover: a chain tries its gateways one after another until one delivers, all
//! within one deadline. Gateways whose breaker is open are skipped, unless every gateway of
//! the chain is, in which case they are all tried rather than giving up untried.

use std::sync::Arc;
use std::time::Instant;

use super::breaker::Breakers;
use super::{Gateway, Message};
use crate::ops::metrics::Metrics;

/// Which gateway delivered, which failed before it, and which were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub gateway: Option<String>,
    /// (gateway, error) for each gateway that failed, in order.
    pub failures: Vec<(String, String)>,
    /// Gateways passed over because their breaker was open.
    pub skipped: Vec<String>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.gateway.is_some()
    }

    /// One line for logs and audit: `sent via b after a: timed out (skipped c: breaker open)`.
    pub fn summary(&self) -> String {
        let failed = self
            .failures
            .iter()
            .map(|(g, e)| format!("{g}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut text = match (&self.gateway, failed.is_empty()) {
            (Some(g), true) => format!("sent via {g}"),
            (Some(g), false) => format!("sent via {g} after {failed}"),
            (None, true) => "not sent: no gateway could be tried".to_string(),
            (None, false) => format!("not sent: {failed}"),
        };
        if !self.skipped.is_empty() {
            text.push_str(&format!(
                " (skipped {}: breaker open)",
                self.skipped.join(", ")
            ));
        }
        text
    }
}

/// Gateways tried in order.
#[derive(Clone)]
pub struct Chain {
    gateways: Vec<Arc<dyn Gateway>>,
    breakers: Arc<Breakers>,
}

impl Chain {
    pub fn new(gateways: Vec<Arc<dyn Gateway>>, breakers: Arc<Breakers>) -> Self {
        Chain { gateways, breakers }
    }

    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// Tries each gateway until one succeeds or `deadline` passes. Cancel-safe.
    pub async fn send(&self, message: &Message, deadline: Instant) -> Delivery {
        let mut delivery = Delivery::default();
        let every_one_open = self
            .gateways
            .iter()
            .all(|g| !self.breakers.allows(g.name()));
        // The label of the destination in the SMS metrics: its country, never the number.
        let country = message.to.region();
        let country = country.as_deref().unwrap_or("unknown");
        let metrics = Metrics::global();
        for gateway in &self.gateways {
            let name = gateway.name();
            if !every_one_open && !self.breakers.allows(name) {
                delivery.skipped.push(name.to_string());
                continue;
            }
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                delivery
                    .failures
                    .push((name.to_string(), "chain deadline passed".into()));
                break;
            };
            let started = Instant::now();
            let sent = tokio::time::timeout(left, gateway.send(message)).await;
            metrics
                .sms_send_seconds
                .with_label_values(&[name])
                .observe(started.elapsed().as_secs_f64());
            let counted = match sent {
                Ok(Ok(())) => &metrics.sms_sent,
                _ => &metrics.sms_failed,
            };
            counted.with_label_values(&[name, country]).inc();
            let error = match sent {
                Ok(Ok(())) => {
                    self.breakers.succeeded(name);
                    tracing::info!(gateway = name, to = %message.to.masked(), "sms sent");
                    delivery.gateway = Some(name.to_string());
                    return delivery;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "chain deadline passed".to_string(),
            };
            tracing::warn!(gateway = name, to = %message.to.masked(), error = %error, "sms gateway failed");
            self.breakers.failed(name, &error);
            delivery.failures.push((name.to_string(), error));
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::Phone;
    use crate::sms::{GatewayError, SendFuture};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Fake {
        name: &'static str,
        ok: bool,
        calls: AtomicUsize,
    }

    impl Gateway for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn send<'a>(&'a self, _: &'a Message) -> SendFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let ok = self.ok;
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err(GatewayError::Refused("HTTP 500".into()))
                }
            })
        }
    }

    fn fake(name: &'static str, ok: bool) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            ok,
            calls: AtomicUsize::new(0),
        })
    }

    fn message() -> Message {
        Message {
            to: Phone::parse("+4917012345", None).unwrap(),
            text: "1".into(),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn the_second_gateway_delivers_and_the_breaker_skips_the_first_next_time() {
        let (first, second, third) = (fake("a", false), fake("b", true), fake("c", true));
        let breakers = Arc::new(Breakers::new(Duration::from_secs(30)));
        let chain = Chain::new(vec![first.clone(), second.clone(), third.clone()], breakers);
        let delivery = chain.send(&message(), soon()).await;
        assert_eq!(delivery.gateway.as_deref(), Some("b"));
        assert_eq!(delivery.summary(), "sent via b after a: refused: HTTP 500");
        assert_eq!(third.calls.load(Ordering::SeqCst), 0);

        let delivery = chain.send(&message(), soon()).await;
        assert_eq!(delivery.summary(), "sent via b (skipped a: breaker open)");
        assert_eq!(first.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn when_every_breaker_is_open_the_gateways_are_tried_anyway() {
        let only = fake("a", false);
        let chain = Chain::new(
            vec![only.clone()],
            Arc::new(Breakers::new(Duration::from_secs(30))),
        );
        chain.send(&message(), soon()).await;
        let delivery = chain.send(&message(), soon()).await;
        assert_eq!(only.calls.load(Ordering::SeqCst), 2);
        assert!(!delivery.delivered());
    }
}
