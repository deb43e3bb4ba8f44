//! The Prometheus metrics of the process: one registry of `otpgate_*` families, served as
//! the classic text format 0.0.4 by `ops::http`. The counters here ARE the counters: the
//! radius and engine statistics hold handles into these families and their summary log
//! line reads them back, so nothing is counted twice.
//!
//! A leaf: it knows no other module of the crate, so every layer may feed it. Labels are
//! client names, packet codes, reasons, gateways, countries, steps: never a user name or a
//! phone number, and each label set is bounded by the config.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request and store latencies: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// SMS gateways answer in tens of milliseconds to tens of seconds.
const SEND_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

pub struct Metrics {
    registry: Registry,
    /// Verified requests by client and packet code (`access_request`, `status_server`).
    pub requests: IntCounterVec,
    /// Replies sent by client and code (`access_accept`, `access_reject`, `access_challenge`).
    pub replies: IntCounterVec,
    /// Datagrams dropped without an answer, by client (`-`: no configured client) and reason.
    pub drops: IntCounterVec,
    /// Decisions by outcome and reason class (`auth::reason_class`).
    pub decisions: IntCounterVec,
    /// Time from hand-off to reply, by step (`pin`, `answer`, `status`).
    pub request_seconds: HistogramVec,
    /// Argon2 jobs waiting for a PIN thread (set at scrape).
    pub pin_queue: IntGauge,
    /// Time one PIN job spent in Argon2.
    pub argon2_seconds: Histogram,
    /// PIN requests dropped because the PIN queue was full.
    pub pin_overloaded: IntCounter,
    pub sms_sent: IntCounterVec,
    pub sms_failed: IntCounterVec,
    pub sms_send_seconds: HistogramVec,
    /// SMS a `[limits]` cap stopped, by the cap's key.
    pub sms_limited: IntCounterVec,
    /// 1 for each gateway's current breaker state (set at scrape).
    pub breaker: IntGaugeVec,
    /// Challenges open and unexpired (set at scrape from the store).
    pub open_challenges: IntGauge,
    /// Time one store call ran on a store thread.
    pub store_seconds: Histogram,
    /// Config reloads by result (`success`, `failure`).
    pub reloads: IntCounterVec,
    /// 1 if the last reload was applied (or none was tried), 0 if it was refused.
    pub last_reload_successful: IntGauge,
    /// RadSec connections refused before carrying a request, by reason.
    pub radsec_refused: IntCounterVec,
    /// RadSec connections open.
    pub radsec_connections: IntGauge,
    /// When the RadSec server certificate in force expires, Unix seconds.
    pub radsec_certificate_expiry: IntGauge,
}

impl Metrics {
    /// The process's metrics, which the server feeds and `/metrics` serves.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    /// A registry of its own, for unit tests that count from zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            requests: counters(
                &registry,
                "otpgate_requests_total",
                "RADIUS requests that passed the guard, by client and packet code.",
                &["client", "code"],
            ),
            replies: counters(
                &registry,
                "otpgate_replies_total",
                "RADIUS replies sent, by client and packet code.",
                &["client", "code"],
            ),
            drops: counters(
                &registry,
                "otpgate_dropped_total",
                "Datagrams dropped without a reply, by client (- for no configured client) and reason.",
                &["client", "reason"],
            ),
            decisions: counters(
                &registry,
                "otpgate_decisions_total",
                "Decisions of the engine, by outcome and reason class.",
                &["outcome", "reason"],
            ),
            request_seconds: histograms(
                &registry,
                "otpgate_request_duration_seconds",
                "Time from receipt to reply, by step (pin, answer, status).",
                &["step"],
                LATENCY_BUCKETS,
            ),
            pin_queue: gauge(
                &registry,
                "otpgate_pin_queue_depth",
                "Argon2 jobs waiting for a PIN thread.",
            ),
            argon2_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "otpgate_argon2_duration_seconds",
                        "Time one PIN check spent in Argon2.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            pin_overloaded: register(
                &registry,
                IntCounter::new(
                    "otpgate_pin_overloaded_total",
                    "PIN requests dropped because the PIN queue was full.",
                ),
            ),
            sms_sent: counters(
                &registry,
                "otpgate_sms_sent_total",
                "SMS a gateway accepted, by gateway and destination country.",
                &["gateway", "country"],
            ),
            sms_failed: counters(
                &registry,
                "otpgate_sms_failed_total",
                "SMS a gateway failed to take, by gateway and destination country.",
                &["gateway", "country"],
            ),
            sms_send_seconds: histograms(
                &registry,
                "otpgate_sms_send_duration_seconds",
                "Time one gateway took to accept or fail an SMS.",
                &["gateway"],
                SEND_BUCKETS,
            ),
            sms_limited: counters(
                &registry,
                "otpgate_sms_limited_total",
                "SMS not sent because a [limits] cap was reached, by cap.",
                &["limit"],
            ),
            breaker: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "otpgate_gateway_breaker",
                        "1 for the current breaker state of each gateway (closed, open, probing).",
                    ),
                    &["gateway", "state"],
                ),
            ),
            open_challenges: gauge(
                &registry,
                "otpgate_open_challenges",
                "Challenges open and unexpired, as the store counts them.",
            ),
            store_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "otpgate_store_call_duration_seconds",
                        "Time one store call ran on a store thread.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            reloads: counters(
                &registry,
                "otpgate_config_reloads_total",
                "Config reloads (SIGHUP), by result.",
                &["result"],
            ),
            last_reload_successful: gauge(
                &registry,
                "otpgate_config_last_reload_successful",
                "1 if the last config reload was applied or none was tried, 0 if it was refused.",
            ),
            radsec_refused: counters(
                &registry,
                "otpgate_radsec_refused_total",
                "RadSec connections refused before carrying a request (TLS handshake failures and certificates of no client), by reason.",
                &["reason"],
            ),
            radsec_connections: gauge(
                &registry,
                "otpgate_radsec_connections",
                "RadSec connections open.",
            ),
            radsec_certificate_expiry: gauge(
                &registry,
                "otpgate_radsec_certificate_expiry_timestamp_seconds",
                "When the RadSec server certificate in force expires (Unix time).",
            ),
            registry,
        };
        let info: IntGaugeVec = register(
            &metrics.registry,
            IntGaugeVec::new(
                Opts::new("otpgate_build_info", "The running otpgate's version."),
                &["version"],
            ),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.last_reload_successful.set(1);
        for result in ["success", "failure"] {
            metrics.reloads.with_label_values(&[result]);
        }
        metrics
    }

    /// Every family in the text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a family the registry itself rejected at
        // registration; then the scrape shows what did encode.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The content type of `render`'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Registers a collector. Names, help texts and labels are the constants above, so only a
/// bug in this file can make it fail: each is checked by `every_family_renders` below.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: prometheus::Result<C>,
) -> C {
    let collector = collector.expect("a valid metric definition");
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help))
}

fn histograms(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["vpn", "access_request"])
            .inc();
        let text = metrics.render();
        assert!(text.contains("otpgate_build_info{version=\""), "{text}");
        assert!(text.contains("otpgate_requests_total{client=\"vpn\",code=\"access_request\"} 1"));
        assert!(text.contains("otpgate_config_reloads_total{result=\"failure\"} 0"));
        assert!(text.contains("# TYPE otpgate_store_call_duration_seconds histogram"));
    }
}
