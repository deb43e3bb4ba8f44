//! `otpgate gateway test NAME --to +E164 [--text T]`: sends one real message.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;

use super::output;
use crate::config::GatewayKind;
use crate::phone::Phone;
use crate::sms::{Gateways, Message};

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// List the gateways and their breaker state as each running node last recorded it.
    List {
        #[arg(long)]
        json: bool,
    },
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
    if let GatewayCommand::List { json } = command {
        return list(config_path, json);
    }
    let config = super::load_config(config_path)?;
    crate::logging::init(&config.server.log_level, config.server.log_format);
    match command {
        GatewayCommand::List { .. } => {}
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

/// One row per gateway and node: each node records its own breakers (a single-node store
/// records them for this node).
fn list(config_path: &Path, json: bool) -> Result<()> {
    let (config, store, _keys) = super::open(config_path)?;
    let this_node = config.server.node_name.clone();
    let recorded = store.gateway_states()?;
    let node_of =
        |row: &crate::store::GatewayStateRow| row.node.clone().unwrap_or(this_node.clone());
    let mut nodes: Vec<String> = recorded.iter().map(node_of).collect();
    nodes.push(this_node.clone());
    nodes.sort();
    nodes.dedup();
    let rows: Vec<serde_json::Value> = config
        .gateways
        .values()
        .flat_map(|gateway| nodes.iter().map(move |node| (gateway, node)))
        .map(|(gateway, node)| {
            let state = recorded
                .iter()
                .find(|r| r.gateway == gateway.name && node_of(r) == *node);
            serde_json::json!({
                "name": gateway.name,
                "type": kind_name(&gateway.kind),
                "node": node,
                "breaker": state.map_or("closed", |s| s.state.as_str()),
                "failures": state.map_or(0, |s| s.failures),
                "last_error": state.and_then(|s| s.last_error.clone()),
                "open_until": state.and_then(|s| s.open_until).map(output::time),
                "recorded": state.map(|s| output::time(s.updated)),
            })
        })
        .collect();
    output::print_rows(
        &rows,
        json,
        &[
            "NAME",
            "TYPE",
            "NODE",
            "BREAKER",
            "FAILURES",
            "OPEN UNTIL",
            "LAST ERROR",
        ],
        |r| {
            let text = |key: &str| r[key].as_str().unwrap_or("-").to_string();
            vec![
                text("name"),
                text("type"),
                text("node"),
                text("breaker"),
                r["failures"].to_string(),
                text("open_until"),
                text("last_error"),
            ]
        },
    )
}

fn kind_name(kind: &GatewayKind) -> &'static str {
    match kind {
        GatewayKind::Http(_) => "http",
        GatewayKind::Spool(_) => "spool",
        GatewayKind::Sipgate(_) => "sipgate",
        GatewayKind::Smtp(_) => "smtp",
        GatewayKind::Modem(_) => "modem",
    }
}
