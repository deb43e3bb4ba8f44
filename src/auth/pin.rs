//! PIN hashing with Argon2id, keyed with the pepper from the key file (DESIGN section 4).
//! Hashing is slow on purpose: callers run it on the blocking pool, never on the receive loop.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::keys::{self, Keys};
use crate::config::PinConfig;

/// Hashes and verifies PINs with one cost setting and pepper.
#[derive(Clone)]
pub struct PinHasher {
    keys: Keys,
    params: Params,
    /// A hash of a random PIN, verified for unknown users so that their reply takes as long as
    /// a wrong PIN's.
    decoy: String,
}

impl PinHasher {
    pub fn new(keys: Keys, config: &PinConfig) -> Result<Self, String> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| format!("Argon2 parameters: {e}"))?;
        let mut hasher = PinHasher {
            keys,
            params,
            decoy: String::new(),
        };
        let mut random_pin = [0u8; 16];
        keys::random(&mut random_pin).map_err(|e| e.to_string())?;
        hasher.decoy = hasher.hash(&hex::encode(random_pin))?;
        Ok(hasher)
    }

    fn argon2(&self, params: Params) -> Argon2<'_> {
        // The pepper is 32 bytes, within Argon2's secret limit, so this cannot fail.
        Argon2::new_with_secret(
            self.keys.pepper(),
            Algorithm::Argon2id,
            Version::V0x13,
            params,
        )
        .expect("a 32-byte secret is within Argon2's limits")
    }

    /// A PHC string for `pin` with a fresh salt.
    pub fn hash(&self, pin: &str) -> Result<String, String> {
        let mut salt = [0u8; 16];
        keys::random(&mut salt).map_err(|e| e.to_string())?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        self.argon2(self.params.clone())
            .hash_password(pin.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash PIN: {e}"))
    }

    /// Whether `pin` matches `hash`. Uses the cost stored in the hash, so changing `[pin]`
    /// affects new PINs only. A damaged hash never matches.
    pub fn verify(&self, pin: &[u8], hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        self.argon2(params).verify_password(pin, &parsed).is_ok()
    }

    /// Spends the time of one verification without a real hash.
    pub fn verify_decoy(&self, pin: &[u8]) {
        let _ = self.verify(pin, &self.decoy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PinConfig {
        PinConfig {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn verifies_the_right_pin_only() {
        let hasher = PinHasher::new(Keys::for_tests(), &cheap()).unwrap();
        let hash = hasher.hash("1234").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify(b"1234", &hash));
        assert!(!hasher.verify(b"1235", &hash));
        assert!(!hasher.verify(b"1234", "garbage"));
    }

    #[test]
    fn the_pepper_is_part_of_the_hash() {
        let hasher = PinHasher::new(Keys::for_tests(), &cheap()).unwrap();
        let hash = hasher.hash("1234").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other_keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let other = PinHasher::new(other_keys, &cheap()).unwrap();
        assert!(!other.verify(b"1234", &hash));
    }

    #[test]
    fn old_hashes_verify_after_the_cost_changes() {
        let hasher = PinHasher::new(Keys::for_tests(), &cheap()).unwrap();
        let hash = hasher.hash("1234").unwrap();
        let costlier = PinHasher::new(
            Keys::for_tests(),
            &PinConfig {
                memory_kib: 64,
                iterations: 2,
                parallelism: 1,
            },
        )
        .unwrap();
        assert!(costlier.verify(b"1234", &hash));
    }
}
