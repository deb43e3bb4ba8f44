//! Ordered failover: a chain tries its gateways one after another until one delivers.
//! Each gateway bounds its own attempt with its timeout; the caller bounds the whole chain.

use std::sync::Arc;

use super::{Gateway, Message};

/// Which gateway delivered, and which failed before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub gateway: Option<String>,
    /// (gateway, error) for each gateway that failed, in order.
    pub failures: Vec<(String, String)>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.gateway.is_some()
    }

    /// One line for logs and audit: `sent via b after a: timed out`.
    pub fn summary(&self) -> String {
        let failed = self
            .failures
            .iter()
            .map(|(g, e)| format!("{g}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        match (&self.gateway, failed.is_empty()) {
            (Some(g), true) => format!("sent via {g}"),
            (Some(g), false) => format!("sent via {g} after {failed}"),
            (None, true) => "no gateway configured".to_string(),
            (None, false) => format!("not sent: {failed}"),
        }
    }
}

/// Gateways tried in order.
#[derive(Clone)]
pub struct Chain {
    gateways: Vec<Arc<dyn Gateway>>,
}

impl Chain {
    pub fn new(gateways: Vec<Arc<dyn Gateway>>) -> Self {
        Chain { gateways }
    }

    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// Tries each gateway until one succeeds. Cancel-safe.
    pub async fn send(&self, message: &Message) -> Delivery {
        let mut delivery = Delivery::default();
        for gateway in &self.gateways {
            match gateway.send(message).await {
                Ok(()) => {
                    tracing::info!(gateway = gateway.name(), to = %message.to.masked(), "sms sent");
                    delivery.gateway = Some(gateway.name().to_string());
                    return delivery;
                }
                Err(e) => {
                    tracing::warn!(gateway = gateway.name(), to = %message.to.masked(), error = %e, "sms gateway failed");
                    delivery
                        .failures
                        .push((gateway.name().to_string(), e.to_string()));
                }
            }
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::{GatewayError, Phone, SendFuture};
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    #[tokio::test]
    async fn the_second_gateway_delivers_when_the_first_fails() {
        let first = Arc::new(Fake {
            name: "a",
            ok: false,
            calls: AtomicUsize::new(0),
        });
        let second = Arc::new(Fake {
            name: "b",
            ok: true,
            calls: AtomicUsize::new(0),
        });
        let third = Arc::new(Fake {
            name: "c",
            ok: true,
            calls: AtomicUsize::new(0),
        });
        let chain = Chain::new(vec![first.clone(), second.clone(), third.clone()]);
        let message = Message {
            to: Phone::parse("+4917012345", None).unwrap(),
            text: "1".into(),
        };
        let delivery = chain.send(&message).await;
        assert_eq!(delivery.gateway.as_deref(), Some("b"));
        assert_eq!(delivery.summary(), "sent via b after a: refused: HTTP 500");
        assert_eq!(third.calls.load(Ordering::SeqCst), 0);
    }
}
