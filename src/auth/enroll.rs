//! Making new tokens: a random serial, a random 20-byte HOTP seed sealed with the key file,
//! and the Argon2id hash of the PIN; or, for a directory user, no PIN at all (`NO_PIN`).

use super::keys::{self, Keys};
use super::pin::PinHasher;
use crate::store::TokenRow;

/// The shortest and longest PIN accepted. The upper bound leaves room for a 10-digit OTP in
/// the 128 octets a User-Password can carry.
pub const PIN_LENGTH: std::ops::RangeInclusive<usize> = 4..=64;

/// The PIN hash of a token whose first factor is the directory password: no PHC string, so
/// no PIN ever matches it (a PIN client cannot log in with it).
pub const NO_PIN: &str = "";

/// What a new token needs besides its secrets.
pub struct NewToken<'a> {
    pub user: &'a str,
    pub phone: Option<String>,
    pub gateway: Option<String>,
    pub otp_length: u32,
    pub created: i64,
}

/// Checks a PIN's shape.
pub fn check_pin(pin: &str) -> Result<(), String> {
    let length = pin.chars().count();
    if !PIN_LENGTH.contains(&length) {
        return Err(format!(
            "a PIN must have {} to {} characters",
            PIN_LENGTH.start(),
            PIN_LENGTH.end()
        ));
    }
    if pin.chars().any(char::is_control) {
        return Err("a PIN must not contain control characters".into());
    }
    Ok(())
}

/// A token row ready to store.
pub fn new_token(
    spec: NewToken<'_>,
    pin: &str,
    keys: &Keys,
    pins: &PinHasher,
) -> Result<TokenRow, String> {
    check_pin(pin)?;
    let pin_hash = pins.hash_for(spec.user, pin)?;
    sealed_token(spec, pin_hash, keys)
}

/// A token row for a directory user (`auto_enroll`): the directory password is its first
/// factor, so it has no PIN.
pub fn new_directory_token(spec: NewToken<'_>, keys: &Keys) -> Result<TokenRow, String> {
    sealed_token(spec, NO_PIN.to_string(), keys)
}

fn sealed_token(spec: NewToken<'_>, pin_hash: String, keys: &Keys) -> Result<TokenRow, String> {
    if !(6..=10).contains(&spec.otp_length) {
        return Err("the OTP length must be between 6 and 10".into());
    }
    let mut seed = [0u8; 20];
    keys::random(&mut seed).map_err(|e| e.to_string())?;
    // 64 bits: a million tokens collide with a chance of about one in 30 million.
    let mut serial = [0u8; 8];
    keys::random(&mut serial).map_err(|e| e.to_string())?;
    Ok(TokenRow {
        serial: format!("SMS{}", hex::encode_upper(serial)),
        user: spec.user.to_string(),
        phone: spec.phone,
        pin_hash,
        sealed_seed: keys.seal(&seed).map_err(|e| e.to_string())?,
        counter: 0,
        otp_length: spec.otp_length,
        fail_count: 0,
        locked_at: None,
        disabled: false,
        gateway: spec.gateway,
        created: spec.created,
    })
}
