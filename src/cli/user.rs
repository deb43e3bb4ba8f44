//! `otpgate user add|list|show|set-attr|delete`.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;

use super::output;
use crate::limits::NumberPolicy;
use crate::phone::Phone;
use crate::store::UserRow;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with the phone their tokens send to.
    Add {
        name: String,
        /// E.164 (+491701234567), or national with [sms] default_region.
        #[arg(long)]
        phone: String,
        /// A [group.NAME] whose attributes the user's Access-Accepts carry.
        #[arg(long)]
        group: Option<String>,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one user with group, attributes and tokens.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Set the user's own Access-Accept attributes ('Name=value', repeatable), replacing
    /// the ones set before; with --clear, remove them all.
    SetAttr {
        name: String,
        attributes: Vec<String>,
        #[arg(long, conflicts_with = "attributes")]
        clear: bool,
    },
    /// Delete a user with their tokens and challenges.
    Delete { name: String },
    /// Add users from a CSV file with the header `name,phone` (optionally `,group`), all in
    /// one transaction.
    Import { file: std::path::PathBuf },
}

pub fn run(config_path: &Path, command: UserCommand) -> Result<()> {
    let (config, store, _keys) = super::open(config_path)?;
    match command {
        UserCommand::Add { name, phone, group } => {
            check_name(&name)?;
            let phone = Phone::parse(&phone, config.sms.default_region.as_deref())
                .map_err(|e| anyhow!(e))?;
            NumberPolicy::new(&config.limits).check(&phone)?;
            if let Some(group) = &group
                && !config.groups.contains_key(group)
            {
                bail!(
                    "no group named '{group}' in {} (define [group.{group}])",
                    config_path.display()
                );
            }
            store.add_user(&UserRow {
                name: name.clone(),
                phone: phone.e164().to_string(),
                created: super::now_ms(),
                group,
            })?;
            println!("added user {name} ({})", phone.masked());
        }
        UserCommand::List { json } => {
            let rows: Vec<serde_json::Value> = store
                .users()?
                .iter()
                .map(|u| {
                    serde_json::json!({ "name": u.name, "phone": u.phone, "group": u.group, "created": output::time(u.created) })
                })
                .collect();
            output::print_rows(&rows, json, &["NAME", "PHONE", "GROUP", "CREATED"], |r| {
                ["name", "phone", "group", "created"]
                    .iter()
                    .map(|k| r[k].as_str().unwrap_or("-").to_string())
                    .collect()
            })?;
        }
        UserCommand::Show { name, json } => {
            let directory = super::directory::view(&config, &name)?;
            let known_there = directory.as_ref().is_some_and(|d| d["dn"].is_string());
            let user = match store.user(&name)? {
                Some(user) => user,
                // A directory user before their first login: the directory's view only.
                None if known_there => {
                    let value = serde_json::json!({ "name": name, "directory": directory });
                    if json {
                        println!("{}", serde_json::to_string_pretty(&value)?);
                    } else {
                        println!("user        {name} (no tokens yet)");
                        directory.iter().for_each(super::directory::print);
                    }
                    return Ok(());
                }
                None => bail!("no user named '{name}'"),
            };
            let attributes = store.user_attributes(&name)?;
            let tokens: Vec<String> = store
                .tokens(Some(&name))?
                .into_iter()
                .map(|t| t.serial)
                .collect();
            let value = serde_json::json!({
                "name": user.name,
                "phone": user.phone,
                "group": user.group,
                "attributes": attributes,
                "tokens": tokens,
                "created": output::time(user.created),
                "directory": directory,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("user        {}", user.name);
                println!("phone       {}", user.phone);
                println!("group       {}", user.group.as_deref().unwrap_or("-"));
                println!(
                    "tokens      {}",
                    if tokens.is_empty() {
                        "-".to_string()
                    } else {
                        tokens.join(", ")
                    }
                );
                println!(
                    "attributes  {}",
                    if attributes.is_empty() {
                        "-".to_string()
                    } else {
                        attributes.join("\n            ")
                    }
                );
                directory.iter().for_each(super::directory::print);
            }
        }
        UserCommand::SetAttr {
            name,
            attributes,
            clear,
        } => {
            if attributes.is_empty() && !clear {
                bail!("give attributes as 'Name=value', or --clear");
            }
            // Checked now against the dictionary, so that a login never meets a bad one.
            for line in &attributes {
                config.dictionary.encode(line).map_err(|e| anyhow!("{e}"))?;
            }
            if !store.set_user_attributes(&name, &attributes)? {
                bail!("no user named '{name}'");
            }
            println!("{} attribute(s) set for {name}", attributes.len());
        }
        UserCommand::Import { file } => {
            let created = super::now_ms();
            let numbers = NumberPolicy::new(&config.limits);
            let mut users = Vec::new();
            for (line, record) in super::read_csv(&file, &["name", "phone"])?
                .into_iter()
                .enumerate()
            {
                let at = || format!("{}:{}", file.display(), line + 2);
                let name = record.get("name").cloned().unwrap_or_default();
                check_name(&name).map_err(|e| anyhow!("{}: {e}", at()))?;
                let phone = Phone::parse(
                    record.get("phone").map_or("", String::as_str),
                    config.sms.default_region.as_deref(),
                )
                .map_err(|e| anyhow!("{}: {e}", at()))?;
                numbers
                    .check(&phone)
                    .map_err(|e| anyhow!("{}: {e}", at()))?;
                let group = record.get("group").filter(|g| !g.is_empty()).cloned();
                if let Some(group) = &group
                    && !config.groups.contains_key(group)
                {
                    bail!("{}: no group named '{group}'", at());
                }
                users.push(UserRow {
                    name,
                    phone: phone.e164().to_string(),
                    created,
                    group,
                });
            }
            store.add_users(&users)?;
            println!("imported {} user(s)", users.len());
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
