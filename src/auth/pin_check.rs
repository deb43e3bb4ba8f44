//! The PIN step's Argon2 work, as one job on the PIN threads: a password checked as a PIN
//! (trigger) and as PIN + OTP (answer) against the tokens a request may check.
//!
//! What it costs must not tell anything about the user (DESIGN section 8, equal outside
//! view). Every PIN of a user has the user's salt (`Keys::pin_salt`), so one Argon2 run per
//! candidate reading of the password checks all of the user's tokens at once; and the
//! candidates are the same for every user: the whole password, and the password less an OTP
//! of each length any token of the deployment has. So a reject costs
//! `1 + (OTP lengths in use that leave a PIN of at least 4 characters)` runs, for an unknown
//! user, a user with three tokens, and a locked or disabled token alike. A locked or
//! disabled token's hash is simply not compared.
//!
//! Hashes from before per-user salts (or from another `[pin]` cost) need a run of their
//! own and so cost more; `otpgate token set-pin` re-hashes them.

use super::enroll::PIN_LENGTH;
use super::pin::{Compared, PinHasher, WorkingMemory};

/// A token the password may be checked against.
pub struct Candidate {
    pub pin_hash: String,
    pub otp_length: u32,
}

/// Which token the password matched, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinMatch {
    /// password == PIN of token `index`.
    Trigger(usize),
    /// password == PIN + OTP of token `index`; the OTP part.
    Answer(usize, Vec<u8>),
    None,
}

/// A reading of the password: the PIN part, and the OTP length and part if it has one.
type Reading<'a> = (&'a [u8], Option<(u32, &'a [u8])>);

/// One request's PIN check.
pub struct PinCheck {
    pub user: String,
    pub password: zeroize::Zeroizing<Vec<u8>>,
    /// The OTP lengths of the deployment's tokens (`Store::otp_lengths`).
    pub otp_lengths: Vec<u32>,
    /// The tokens that may be checked, in the user's order; locked and disabled ones are
    /// left out by the caller.
    pub tokens: Vec<Candidate>,
}

impl PinCheck {
    /// Runs the check; stops early only on a match (an accept or a challenge differs from a
    /// reject anyway). Returns the match and the Argon2 runs it took.
    pub fn run(&self, pins: &PinHasher, memory: &mut WorkingMemory) -> (PinMatch, usize) {
        let mut runs = 0;
        let password = &self.password[..];
        let mut readings: Vec<Reading<'_>> = vec![(password, None)];
        for &length in &self.otp_lengths {
            let Some(pin_length) = password.len().checked_sub(length as usize) else {
                continue;
            };
            if pin_length < *PIN_LENGTH.start() {
                continue;
            }
            let (pin, otp) = password.split_at(pin_length);
            readings.push((pin, Some((length, otp))));
        }
        for (pin, otp) in readings {
            runs += 1;
            let digest = pins.digest(&self.user, pin, memory);
            for (index, token) in self.tokens.iter().enumerate() {
                if otp.is_some_and(|(length, _)| length != token.otp_length) {
                    continue;
                }
                let matched = match pins.compare(&self.user, &digest, &token.pin_hash) {
                    Compared::Match => true,
                    Compared::NoMatch => false,
                    Compared::OwnRun => {
                        runs += 1;
                        pins.verify_in(pin, &token.pin_hash, memory)
                    }
                };
                if matched {
                    return match otp {
                        None => (PinMatch::Trigger(index), runs),
                        Some((_, otp)) => (PinMatch::Answer(index, otp.to_vec()), runs),
                    };
                }
            }
        }
        (PinMatch::None, runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::Keys;
    use crate::auth::pin::Compared;
    use crate::config::PinConfig;

    fn hasher() -> PinHasher {
        let cheap = PinConfig {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        PinHasher::new(Keys::for_tests(), &cheap).unwrap()
    }

    fn check(user: &str, password: &str, lengths: &[u32], tokens: Vec<Candidate>) -> PinCheck {
        PinCheck {
            user: user.into(),
            password: zeroize::Zeroizing::new(password.as_bytes().to_vec()),
            otp_lengths: lengths.to_vec(),
            tokens,
        }
    }

    fn token(pins: &PinHasher, user: &str, pin: &str, otp_length: u32) -> Candidate {
        Candidate {
            pin_hash: pins.hash_for(user, pin).unwrap(),
            otp_length,
        }
    }

    #[test]
    fn a_reject_costs_the_same_runs_whoever_the_user_is() {
        let pins = hasher();
        let mut memory = WorkingMemory::default();
        let lengths = [6, 8, 10];
        let three = vec![
            token(&pins, "alice", "1111", 6),
            token(&pins, "alice", "2222", 8),
            token(&pins, "alice", "3333", 10),
        ];
        let password = "99999999999999";
        let (with_tokens, runs_alice) =
            check("alice", password, &lengths, three).run(&pins, &mut memory);
        let (unknown, runs_unknown) =
            check("mallory", password, &lengths, Vec::new()).run(&pins, &mut memory);
        assert_eq!((with_tokens, unknown), (PinMatch::None, PinMatch::None));
        assert_eq!(
            runs_alice, 4,
            "the whole password and one split per OTP length"
        );
        assert_eq!(runs_alice, runs_unknown);
        // A short password has no split that leaves a PIN: one run for everybody.
        let (_, short) = check("mallory", "1234", &lengths, Vec::new()).run(&pins, &mut memory);
        assert_eq!(short, 1);
    }

    #[test]
    fn finds_pin_and_pin_plus_otp_on_the_right_token() {
        let pins = hasher();
        let mut memory = WorkingMemory::default();
        let tokens = || {
            vec![
                token(&pins, "alice", "1111", 6),
                token(&pins, "alice", "2222", 8),
            ]
        };
        let lengths = [6, 8];
        let run = |password: &str, memory: &mut WorkingMemory| {
            check("alice", password, &lengths, tokens())
                .run(&pins, memory)
                .0
        };
        assert_eq!(run("2222", &mut memory), PinMatch::Trigger(1));
        assert_eq!(
            run("222212345678", &mut memory),
            PinMatch::Answer(1, b"12345678".to_vec())
        );
        assert_eq!(
            run("1111123456", &mut memory),
            PinMatch::Answer(0, b"123456".to_vec())
        );
        assert_eq!(
            run("2222123456", &mut memory),
            PinMatch::None,
            "token 1 has 8-digit codes"
        );
        // A hash of the same PIN for another user has another salt: the digest is no match.
        let alice = pins.hash_for("alice", "1111").unwrap();
        let digest = pins.digest("alice", b"1111", &mut memory);
        assert_eq!(pins.compare("alice", &digest, &alice), Compared::Match);
        let bob = pins.digest("bob", b"1111", &mut memory);
        assert_eq!(pins.compare("bob", &bob, &alice), Compared::OwnRun);
        let wrong = pins.digest("alice", b"1112", &mut memory);
        assert_eq!(pins.compare("alice", &wrong, &alice), Compared::NoMatch);
    }

    #[test]
    fn a_hash_with_its_own_salt_still_verifies_with_a_run_of_its_own() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let pins = hasher();
        let keys = Keys::for_tests();
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let argon2 = argon2::Argon2::new_with_secret(
            keys.pepper(),
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        )
        .unwrap();
        let random_salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let legacy = argon2
            .hash_password(b"4711", &random_salt)
            .unwrap()
            .to_string();
        let tokens = vec![Candidate {
            pin_hash: legacy,
            otp_length: 6,
        }];
        let mut memory = WorkingMemory::default();
        let (matched, runs) = check("alice", "4711", &[6], tokens).run(&pins, &mut memory);
        assert_eq!((matched, runs), (PinMatch::Trigger(0), 2));
    }
}
