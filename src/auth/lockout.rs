//! Whether a token is locked, given `[lockout] clear_after` (DESIGN section 4).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Unlocked,
    Locked,
    /// Was locked, and `clear_after` has passed: unlock it and go on.
    Expired,
}

/// `locked_at` and `now` in Unix milliseconds; `clear_after` zero means only an admin unlocks.
pub fn lock_state(locked_at: Option<i64>, now: i64, clear_after: Duration) -> LockState {
    match locked_at {
        None => LockState::Unlocked,
        Some(_) if clear_after.is_zero() => LockState::Locked,
        Some(at) => {
            let clear_ms = i64::try_from(clear_after.as_millis()).unwrap_or(i64::MAX);
            if now.saturating_sub(at) >= clear_ms {
                LockState::Expired
            } else {
                LockState::Locked
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_clear_after_the_configured_time_only() {
        let minute = Duration::from_secs(60);
        assert_eq!(lock_state(None, 0, minute), LockState::Unlocked);
        assert_eq!(lock_state(Some(1_000), 60_999, minute), LockState::Locked);
        assert_eq!(lock_state(Some(1_000), 61_000, minute), LockState::Expired);
        assert_eq!(
            lock_state(Some(1_000), i64::MAX, Duration::ZERO),
            LockState::Locked
        );
    }
}
