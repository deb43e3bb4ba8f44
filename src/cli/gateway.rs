//! `otpgate gateway test NAME --to +E164 [--text T]`: sends one real message.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;

use crate::sms::{Gateways, Message, Phone};

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Send a test message through one gateway.
    Test {
        name: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "otpgate test message")]
        text: String,
    },
}

pub fn run(config_path: &Path, command: GatewayCommand) -> Result<()> {
    let config = super::load_config(config_path)?;
    crate::logging::init(&config.server.log_level, config.server.log_format);
    match command {
        GatewayCommand::Test { name, to, text } => {
            let gateways = Gateways::from_config(&config).map_err(|e| anyhow!(e))?;
            let gateway = gateways
                .get(&name)
                .ok_or_else(|| anyhow!("no gateway named '{name}'"))?;
            let to =
                Phone::parse(&to, config.sms.default_region.as_deref()).map_err(|e| anyhow!(e))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let message = Message {
                to: to.clone(),
                text,
            };
            match runtime.block_on(gateway.send(&message)) {
                Ok(()) => println!("sent to {} via {name}", to.masked()),
                Err(e) => bail!("gateway {name}: {e}"),
            }
        }
    }
    Ok(())
}
