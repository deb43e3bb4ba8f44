//! The directory's view of a user for `otpgate user show` (DN, masked phone, mapped groups,
//! disabled), asked live with the server's `[directory]` settings.

use anyhow::{Result, anyhow};

use crate::config::Config;
use crate::directory::{Directory, Lookup};
use crate::phone::Phone;

/// The user as the directory has them, as JSON; None without a `[directory]`.
pub fn view(config: &Config, name: &str) -> Result<Option<serde_json::Value>> {
    let Some(settings) = &config.directory else {
        return Ok(None);
    };
    let directory = Directory::new(settings).map_err(|e| anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let canonical = Directory::canonical_name(name);
    let lookup = runtime.block_on(directory.lookup(&canonical));
    let region = config.sms.default_region.as_deref();
    Ok(Some(match lookup {
        Ok(Lookup::Found(user)) => serde_json::json!({
            "dn": user.dn,
            "phone": user.phones.iter().find_map(|p| Phone::parse(p, region).ok()).map(|p| p.masked()),
            "groups": user.groups,
            "disabled": user.disabled,
        }),
        Ok(Lookup::Unknown) => serde_json::json!({ "error": "no such directory user" }),
        Ok(Lookup::Several) => serde_json::json!({ "error": "several directory entries match" }),
        Ok(Lookup::Referral) => {
            serde_json::json!({ "error": "the directory answered with a referral" })
        }
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }))
}

/// The view as the lines of `user show`.
pub fn print(view: &serde_json::Value) {
    let text = |key: &str| view[key].as_str().unwrap_or("-").to_string();
    if let Some(error) = view["error"].as_str() {
        println!("directory   {error}");
        return;
    }
    let groups: Vec<String> = view["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    println!("dn          {}", crate::logging::printable(&text("dn")));
    println!("dir phone   {}", text("phone"));
    println!(
        "dir groups  {}",
        if groups.is_empty() {
            "-".to_string()
        } else {
            groups.join(", ")
        }
    );
    println!(
        "dir state   {}",
        if view["disabled"] == true {
            "disabled"
        } else {
            "enabled"
        }
    );
}
