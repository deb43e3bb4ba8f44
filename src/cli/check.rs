//! `otpgate check-config`: loads and checks the config, builds every gateway, and exits.

use std::path::Path;

use anyhow::{Result, anyhow};

use crate::sms::Gateways;

pub fn run(config_path: &Path) -> Result<()> {
    let config = super::load_config(config_path)?;
    Gateways::from_config(&config).map_err(|e| anyhow!(e))?;
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: ok ({} client(s), {} gateway(s), listening on {})",
        config_path.display(),
        config.clients.len(),
        config.gateways.len(),
        config
            .server
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
