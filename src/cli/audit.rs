//! `otpgate audit`: the newest decisions, as a table or JSON. The database keeps what the
//! request carried; only what is printed is escaped (`logging::printable`).

use std::path::Path;

use anyhow::Result;
use clap::Args;

use super::output;
use crate::logging::printable;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
    /// Also print each request's attributes (by dictionary name, secrets redacted).
    #[arg(long)]
    attributes: bool,
}

pub fn run(config_path: &Path, args: AuditArgs) -> Result<()> {
    let (_config, store, _keys) = super::open(config_path)?;
    let rows = store.audit(args.user.as_deref(), args.limit)?;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    if args.attributes && !args.json {
        for row in &rows {
            println!(
                "{} {} {} {} ({})",
                output::time(row.time),
                printable(&row.client),
                printable(&row.user),
                printable(&row.outcome),
                printable(&row.reason)
            );
            for attribute in &row.attributes {
                println!("    {}", printable(attribute));
            }
        }
        return Ok(());
    }
    output::print_rows(
        &rows,
        args.json,
        &[
            "TIME", "CLIENT", "NAS", "USER", "SERIAL", "OUTCOME", "PHONE", "GATEWAY", "MS",
            "REASON",
        ],
        |r| {
            vec![
                output::time(r.time),
                r.client.clone(),
                r.nas_ip
                    .clone()
                    .or_else(|| r.nas_identifier.clone())
                    .unwrap_or_else(|| "-".into()),
                r.user.clone(),
                dash(&r.serial),
                r.outcome.clone(),
                dash(&r.phone_masked),
                dash(&r.gateway),
                r.duration_ms.to_string(),
                r.reason.clone(),
            ]
        },
    )
}
