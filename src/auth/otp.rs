//! HOTP (RFC 4226): HMAC-SHA1 of the counter, dynamic truncation, `digits` decimal digits.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The OTP for `counter`, zero-padded to `digits` (6 to 10).
pub fn hotp(seed: &[u8], counter: u64, digits: u32) -> String {
    // HMAC accepts keys of any length (RFC 2104).
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(seed).expect("HMAC takes keys of any length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    // RFC 4226 section 5.3: the low nibble of the last byte picks 4 bytes (offset <= 15 of 20).
    let offset = usize::from(hash[19] & 0x0f);
    let code = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    let digits = digits.clamp(6, 10);
    let value = u64::from(code) % 10u64.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// Constant-time comparison of an expected OTP with what the user typed.
pub fn matches(expected: &str, given: &[u8]) -> bool {
    bool::from(expected.as_bytes().ct_eq(given))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4226_appendix_d() {
        let seed = b"12345678901234567890";
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, otp) in expected.iter().enumerate() {
            assert_eq!(hotp(seed, counter as u64, 6), *otp, "counter {counter}");
        }
    }

    #[test]
    fn longer_codes_keep_leading_zeros_and_length() {
        // RFC 4226 Appendix D, counter 0: truncated value 1284755224.
        assert_eq!(hotp(b"12345678901234567890", 0, 10), "1284755224");
        assert_eq!(hotp(b"12345678901234567890", 0, 8), "84755224");
        assert!((0..50).all(|c| hotp(b"k", c, 7).len() == 7));
    }

    #[test]
    fn comparison_requires_equal_length_and_content() {
        assert!(matches("123456", b"123456"));
        assert!(!matches("123456", b"123457"));
        assert!(!matches("123456", b"12345"));
    }
}
