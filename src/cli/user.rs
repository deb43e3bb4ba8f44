//! `otpgate user add|list|delete`.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;

use super::output;
use crate::sms::Phone;
use crate::store::UserRow;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with the phone their tokens send to.
    Add {
        name: String,
        /// E.164 (+491701234567), or national with [sms] default_region.
        #[arg(long)]
        phone: String,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a user with their tokens and challenges.
    Delete { name: String },
}

pub fn run(config_path: &Path, command: UserCommand) -> Result<()> {
    let (config, store, _keys) = super::open(config_path)?;
    match command {
        UserCommand::Add { name, phone } => {
            check_name(&name)?;
            let phone = Phone::parse(&phone, config.sms.default_region.as_deref())
                .map_err(|e| anyhow!(e))?;
            store.add_user(&UserRow {
                name: name.clone(),
                phone: phone.e164().to_string(),
                created: super::now_ms(),
                group: None,
            })?;
            println!("added user {name} ({})", phone.masked());
        }
        UserCommand::List { json } => {
            let users = store.users()?;
            let rows: Vec<serde_json::Value> = users
                .iter()
                .map(|u| serde_json::json!({ "name": u.name, "phone": u.phone, "created": output::time(u.created) }))
                .collect();
            output::print_rows(&rows, json, &["NAME", "PHONE", "CREATED"], |r| {
                ["name", "phone", "created"]
                    .iter()
                    .map(|k| r[k].as_str().unwrap_or("").to_string())
                    .collect()
            })?;
        }
        UserCommand::Delete { name } => {
            if !store.delete_user(&name)? {
                bail!("no user named '{name}'");
            }
            println!("deleted user {name}");
        }
    }
    Ok(())
}

/// User-Name is at most 253 octets on the wire; control characters make logs ambiguous.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 253 || name.chars().any(char::is_control) {
        bail!("a user name must have 1 to 253 octets and no control characters");
    }
    Ok(())
}
