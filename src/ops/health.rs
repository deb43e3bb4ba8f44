//! Liveness and readiness, and the gauges read at scrape time. Ready means the store
//! answers, a config is in force, and the default chain has a gateway whose breaker is
//! not open: a load balancer or a FreeRADIUS pool in front should send logins elsewhere
//! otherwise. The report says, one line each, what is wrong and what is fine.

use std::sync::Mutex;
use std::time::Duration;

use crate::ops::metrics::Metrics;
use crate::radius::listener::Live;
use crate::time::now_ms;

/// How long the store may take to answer the readiness probe's query.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// The breaker states `otpgate_gateway_breaker` has a series for.
const BREAKER_STATES: [&str; 3] = ["closed", "open", "probing"];

/// The readiness verdict and its lines.
pub struct Readiness {
    pub ready: bool,
    pub lines: Vec<String>,
}

/// Checks readiness and sets the gauges read at scrape time (open challenges, breakers,
/// PIN queue) from the same look: one store query serves both.
pub async fn check(live: &Live, config_path: &str) -> Readiness {
    let engine = live.engine();
    let metrics = Metrics::global();
    let mut problems = Vec::new();
    let mut fine = vec![match metrics.last_reload_successful.get() {
        0 => format!(
            "config: {config_path} in force as loaded before the last reload, which was refused (see the log)"
        ),
        _ => format!("config: {config_path} in force"),
    }];

    let now = now_ms();
    let store = engine.store().clone();
    match tokio::time::timeout(STORE_DEADLINE, store.run(move |s| s.open_challenges(now))).await {
        Ok(Ok(open)) => {
            metrics
                .open_challenges
                .set(i64::try_from(open).unwrap_or(i64::MAX));
            fine.push(format!("store: answers ({open} open challenges)"));
        }
        Ok(Err(e)) => problems.push(format!("store: {e}")),
        Err(_) => problems.push(format!(
            "store: no answer within {}s",
            STORE_DEADLINE.as_secs()
        )),
    }

    let breakers = engine.gateways().breakers().snapshot();
    let state_of = |gateway: &str| {
        breakers
            .iter()
            .find(|b| b.gateway == gateway)
            .map_or("closed", |b| b.state)
    };
    {
        // Two scrapes at once must not interleave the reset and the sets.
        static REFRESH: Mutex<()> = Mutex::new(());
        let _one = REFRESH.lock().unwrap_or_else(|p| p.into_inner());
        // Reset first: a gateway a reload removed loses its series.
        metrics.breaker.reset();
        for gateway in engine.gateways().names() {
            let state = state_of(gateway);
            for each in BREAKER_STATES {
                metrics
                    .breaker
                    .with_label_values(&[gateway, each])
                    .set(i64::from(each == state));
            }
        }
    }
    let chain = engine.default_chain();
    if !chain.is_empty() {
        let states: Vec<String> = chain
            .iter()
            .map(|g| format!("{g} {}", state_of(g)))
            .collect();
        let line = format!("default chain: {}", states.join(", "));
        if chain.iter().all(|g| state_of(g) == "open") {
            problems.push(format!("{line}: every breaker is open"));
        } else {
            fine.push(line);
        }
    }

    metrics
        .pin_queue
        .set(i64::try_from(engine.pin_queued()).unwrap_or(i64::MAX));

    let ready = problems.is_empty();
    problems.extend(fine);
    Readiness {
        ready,
        lines: problems,
    }
}
