//! `otpgate init`: creates the database (with its schema) and the key file.

use std::path::Path;

use anyhow::Result;

pub fn run(config_path: &Path) -> Result<()> {
    let (config, _store, _keys) = super::open(config_path)?;
    println!(
        "database {} and key file {} are ready",
        config.server.database,
        config.server.key_file.display()
    );
    Ok(())
}
