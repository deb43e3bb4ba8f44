//! Transaction ids: 128 bits from the OS CSPRNG as 32 lowercase hex characters, carried in
//! the State attribute (DESIGN section 4).

use std::fmt;

use super::keys::{self, KeyError};

#[derive(Clone, PartialEq, Eq)]
pub struct TransactionId(String);

impl TransactionId {
    pub fn random() -> Result<TransactionId, KeyError> {
        let mut bytes = [0u8; 16];
        keys::random(&mut bytes)?;
        Ok(TransactionId(hex::encode(bytes)))
    }

    /// Accepts only what `random` produces; anything else cannot name a challenge.
    pub fn parse(state: &[u8]) -> Option<TransactionId> {
        let valid = state.len() == 32
            && state
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        // Checked to be ASCII just above.
        valid.then(|| TransactionId(String::from_utf8_lossy(state).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shows a prefix only: the full id answers a challenge together with the OTP.
impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionId({}..)", self.0.get(..8).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_distinct() {
        let a = TransactionId::random().unwrap();
        let b = TransactionId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(TransactionId::parse(a.as_str().as_bytes()), Some(a.clone()));
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn foreign_states_are_refused() {
        assert!(TransactionId::parse(b"").is_none());
        assert!(TransactionId::parse(&[b'A'; 32]).is_none());
        assert!(TransactionId::parse(&[0xff; 32]).is_none());
        assert!(TransactionId::parse(&[b'a'; 33]).is_none());
    }
}
