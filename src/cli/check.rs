//! `otpgate check-config`: loads and checks the config, builds every gateway, prints the
//! effective `[limits]` (defaults filled in, so an admin sees what applies), and exits.

use std::path::Path;

use anyhow::{Result, anyhow};

use crate::config::LimitsConfig;
use crate::sms::Gateways;

pub fn run(config_path: &Path) -> Result<()> {
    let config = super::load_config(config_path)?;
    Gateways::from_config(&config).map_err(|e| anyhow!(e))?;
    if let Some(radsec) = &config.radsec {
        // Reads the certificates and key as serve would, so their problems show here too.
        crate::radius::tls_config::build(radsec, &config.path).map_err(|e| anyhow!(e))?;
    }
    for warning in crate::sms::cost::warnings(&config) {
        eprintln!("warning: {warning}");
    }
    let list = |addresses: &[std::net::SocketAddr]| {
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let radsec = config
        .radsec
        .as_ref()
        .map(|r| format!(", radsec on {}", list(&r.listen)))
        .unwrap_or_default();
    println!(
        "{}: ok ({} client(s), {} gateway(s), listening on {}{radsec})",
        config_path.display(),
        config.clients.len(),
        config.gateways.len(),
        list(&config.server.listen)
    );
    println!("{}", limits_line(&config.limits));
    if let crate::config::Database::Postgres(pg) = &config.server.database {
        // Connects, and changes nothing: the schema is brought up to date at start-up.
        let found =
            crate::store::PostgresStore::probe(pg.url.expose(), &super::pg_options(&config, pg))
                .map_err(|e| anyhow!("database {}: {e}", pg.masked_url()))?;
        println!("database: {found}; node {}", config.server.node_name);
    }
    Ok(())
}

/// `limits: resend_interval 30s; per token 20/hour 50/day; ...`, 0 caps as "off".
fn limits_line(limits: &LimitsConfig) -> String {
    let cap = |n: u32, per: &str| match n {
        0 => format!("off/{per}"),
        n => format!("{n}/{per}"),
    };
    let sends = &limits.sends;
    let countries = match limits.allowed_countries.as_slice() {
        [] => "all".to_string(),
        list => list.join(", "),
    };
    let blocked = match limits.blocked_number_types.as_slice() {
        [] => "none".to_string(),
        list => list
            .iter()
            .map(|kind| kind.label())
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "limits: resend_interval {}; per token {} {}; per phone {}; per client {}; global {} {}; \
         countries {countries}; blocked {blocked}; pin_queue {} per core",
        humantime::format_duration(limits.resend_interval),
        cap(sends.per_token_hour, "hour"),
        cap(sends.per_token_day, "day"),
        cap(sends.per_phone_hour, "hour"),
        cap(sends.per_client_minute, "minute"),
        cap(sends.global_minute, "minute"),
        cap(sends.global_day, "day"),
        limits.pin_queue,
    )
}
