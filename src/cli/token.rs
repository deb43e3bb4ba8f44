//! `otpgate token add|list|enable|disable|unlock|delete|set-pin`. PINs come from stdin
//! (`--pin-stdin`) or an interactive prompt, never from the command line.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;

use super::output;
use crate::auth::enroll::{self, NewToken};
use crate::auth::pin::PinHasher;
use crate::config::EventKind;
use crate::limits::NumberPolicy;
use crate::phone::Phone;
use crate::store::TokenRow;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Add an SMS token to a user; prints its serial.
    Add {
        user: String,
        /// Send to this phone instead of the user's.
        #[arg(long)]
        phone: Option<String>,
        /// Send through this gateway instead of [sms] default_chain.
        #[arg(long)]
        gateway: Option<String>,
        /// OTP digits (6-10); default [challenge] otp_length.
        #[arg(long)]
        otp_length: Option<u32>,
        /// Read the PIN from the first line of stdin.
        #[arg(long)]
        pin_stdin: bool,
    },
    /// List tokens.
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Allow a token to be used again.
    Enable { serial: String },
    /// Refuse every login with a token.
    Disable { serial: String },
    /// Clear a token's fail counter and lock.
    Unlock { serial: String },
    /// Delete a token.
    Delete { serial: String },
    /// Add tokens from a CSV file with the header `user,pin` (optionally `,phone`,
    /// `,gateway`, `,otp_length`), hashing PINs on every core and storing all in one
    /// transaction. The file holds PINs: delete it afterwards.
    Import { file: std::path::PathBuf },
    /// Change a token's PIN.
    SetPin {
        serial: String,
        #[arg(long)]
        pin_stdin: bool,
    },
}

pub fn run(config_path: &Path, command: TokenCommand) -> Result<()> {
    let (config, store, keys) = super::open(config_path)?;
    let hasher = || PinHasher::new(keys.clone(), &config.pin).map_err(|e| anyhow!(e));
    let changed = |done: bool, serial: &str, what: &str| -> Result<()> {
        if !done {
            bail!("no token with serial '{serial}'");
        }
        println!("{what} {serial}");
        Ok(())
    };
    match command {
        TokenCommand::Add {
            user,
            phone,
            gateway,
            otp_length,
            pin_stdin,
        } => {
            if store.user(&user)?.is_none() {
                bail!("no user named '{user}' (add it with: otpgate user add {user} --phone +...)");
            }
            let phone = phone
                .map(|p| Phone::parse(&p, config.sms.default_region.as_deref()))
                .transpose()
                .map_err(|e| anyhow!(e))?;
            if let Some(phone) = &phone {
                NumberPolicy::new(&config.limits).check(phone)?;
            }
            if let Some(gateway) = &gateway
                && !config.gateways.contains_key(gateway)
            {
                bail!("no gateway named '{gateway}' in {}", config_path.display());
            }
            let pin = read_pin(pin_stdin)?;
            let spec = NewToken {
                user: &user,
                phone: phone.map(|p| p.e164().to_string()),
                gateway,
                otp_length: otp_length.unwrap_or(config.challenge.otp_length),
                created: super::now_ms(),
            };
            let token = enroll::new_token(spec, &pin, &keys, &hasher()?).map_err(|e| anyhow!(e))?;
            store.add_token(&token)?;
            println!("{}", token.serial);
            super::notify(&config, &store, EventKind::TokenAdded, &token.serial)?;
        }
        TokenCommand::Import { file } => {
            let records = super::read_csv(&file, &["user", "pin"])?;
            let pins = hasher()?;
            let region = config.sms.default_region.clone();
            let numbers = NumberPolicy::new(&config.limits);
            let build = |(line, record): (usize, &std::collections::HashMap<String, String>)| -> Result<TokenRow> {
                let at = || format!("{}:{}", file.display(), line + 2);
                let field = |name: &str| record.get(name).filter(|v| !v.is_empty()).cloned();
                let phone = field("phone")
                    .map(|p| {
                        let phone = Phone::parse(&p, region.as_deref())?;
                        numbers.check(&phone).map_err(|e| e.to_string())?;
                        Ok::<_, String>(phone.e164().to_string())
                    })
                    .transpose()
                    .map_err(|e| anyhow!("{}: {e}", at()))?;
                let gateway = field("gateway");
                if let Some(gateway) = &gateway
                    && !config.gateways.contains_key(gateway)
                {
                    bail!("{}: no gateway named '{gateway}'", at());
                }
                let otp_length = match field("otp_length") {
                    Some(n) => n.parse().map_err(|_| anyhow!("{}: otp_length '{n}' is not a number", at()))?,
                    None => config.challenge.otp_length,
                };
                let user = field("user").unwrap_or_default();
                let spec = NewToken { user: &user, phone, gateway, otp_length, created: super::now_ms() };
                let pin = field("pin").unwrap_or_default();
                enroll::new_token(spec, &pin, &keys, &pins).map_err(|e| anyhow!("{}: {e}", at()))
            };
            let tokens = in_parallel(&records, build)?;
            store.add_tokens(&tokens)?;
            println!("imported {} token(s)", tokens.len());
        }
        TokenCommand::List { user, json } => {
            let rows: Vec<serde_json::Value> = store
                .tokens(user.as_deref())?
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "serial": t.serial,
                        "user": t.user,
                        "phone": t.phone,
                        "gateway": t.gateway,
                        "otp_length": t.otp_length,
                        "counter": t.counter,
                        "fail_count": t.fail_count,
                        "locked": t.locked_at.is_some(),
                        "disabled": t.disabled,
                    })
                })
                .collect();
            output::print_rows(
                &rows,
                json,
                &["SERIAL", "USER", "PHONE", "GATEWAY", "FAILS", "STATE"],
                |r| {
                    let state = if r["disabled"] == true {
                        "disabled"
                    } else if r["locked"] == true {
                        "locked"
                    } else {
                        "active"
                    };
                    vec![
                        r["serial"].as_str().unwrap_or("").to_string(),
                        r["user"].as_str().unwrap_or("").to_string(),
                        r["phone"].as_str().unwrap_or("(user's)").to_string(),
                        r["gateway"].as_str().unwrap_or("(default)").to_string(),
                        r["fail_count"].to_string(),
                        state.to_string(),
                    ]
                },
            )?;
        }
        TokenCommand::Enable { serial } => {
            changed(store.set_disabled(&serial, false)?, &serial, "enabled")?
        }
        TokenCommand::Disable { serial } => {
            changed(store.set_disabled(&serial, true)?, &serial, "disabled")?
        }
        TokenCommand::Unlock { serial } => {
            changed(store.unlock(&serial)?, &serial, "unlocked")?;
            super::notify(&config, &store, EventKind::TokenUnlocked, &serial)?;
        }
        TokenCommand::Delete { serial } => {
            // Notify first: afterwards the token and its owner's phone are gone.
            if store.token(&serial)?.is_none() {
                bail!("no token with serial '{serial}'");
            }
            super::notify(&config, &store, EventKind::TokenDeleted, &serial)?;
            changed(store.delete_token(&serial)?, &serial, "deleted")?
        }
        TokenCommand::SetPin { serial, pin_stdin } => {
            let Some(token) = store.token(&serial)? else {
                bail!("no token with serial '{serial}'");
            };
            let pin = read_pin(pin_stdin)?;
            enroll::check_pin(&pin).map_err(|e| anyhow!(e))?;
            let hash = hasher()?
                .hash_for(&token.user, &pin)
                .map_err(|e| anyhow!(e))?;
            changed(
                store.set_pin_hash(&serial, &hash)?,
                &serial,
                "new PIN set for",
            )?;
            super::notify(&config, &store, EventKind::PinChanged, &serial)?;
        }
    }
    Ok(())
}

/// Maps `build` over the records on every core, keeping their order; the first error wins.
fn in_parallel<T: Send>(
    records: &[std::collections::HashMap<String, String>],
    build: impl Fn((usize, &std::collections::HashMap<String, String>)) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = records.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                let build = &build;
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, r)| build((n * chunk + i, r)))
                        .collect::<Result<Vec<T>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(records.len());
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| anyhow!("an import thread panicked"))??,
            );
        }
        Ok(all)
    })
}

/// Reads a PIN from stdin's first line, or asks twice on the terminal.
fn read_pin(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the PIN from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let pin = rpassword::prompt_password("PIN: ")
        .context("reading the PIN (use --pin-stdin without a terminal)")?;
    let again = rpassword::prompt_password("PIN again: ").context("reading the PIN")?;
    if pin != again {
        bail!("the two PINs differ");
    }
    Ok(pin)
}
