//! The wall clock as the store and the audit trail count it: Unix time in milliseconds.
//!
//! A leaf module so that the decision (`auth`) and the notifications (`events`) read the
//! same clock without importing each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds; 0 for a clock before 1970, `i64::MAX` past the year 292 million.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
