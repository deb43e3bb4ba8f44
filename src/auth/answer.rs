//! The answer step: State + OTP, and the OTP part of PIN + OTP. The store claims the attempt
//! (and the failure it may become), compares the code's MAC and records the outcome in one
//! call (`Store::answer_challenge`); this turns what it decided into a verdict.
//!
//! Neither path unseals a seed or runs Argon2, so answers never wait behind PIN work.

use std::time::Duration;

use super::engine::{BusyWait, Engine, Step, WRONG_CODE, accept, reject};
use super::{Decision, Request, TransactionId, Verdict};
use crate::store::{
    Answer, AnswerClaim, AnswerOutcome, ChallengeRef, Refusal, StateAnswer, TokenRow, UserRow,
};

/// Which way the code came in, for the verdict.
enum Path {
    /// State + OTP: a wrong code with attempts left gets the same challenge again.
    State(TransactionId),
    /// PIN + OTP: a wrong code is a reject.
    Pin,
}

impl Engine {
    /// State + OTP: the second step of the challenge flow.
    pub(super) async fn answer_with_state(
        &self,
        request: &Request,
        state: &[u8],
        otp_given: &[u8],
    ) -> Step<Verdict> {
        let Some(tid) = TransactionId::parse(state) else {
            return Ok(reject(
                "unknown challenge (State is not an otpgate transaction id)",
            ));
        };
        let code_mac = self.keys.code_mac(&request.user_name, otp_given);
        let (key, user, now) = (
            tid.as_str().to_string(),
            request.user_name.clone(),
            crate::time::now_ms(),
        );
        let (max_attempts, failures) = (
            self.policy.challenge.max_attempts,
            self.policy.failure_rules(true),
        );
        // While every failure left is claimed by PIN checks still running, the answer waits
        // for them rather than fail.
        let mut wait = BusyWait::new();
        let answer = loop {
            let answer = self
                .store()
                .answer_state(StateAnswer {
                    transaction_id: key.clone(),
                    user: user.clone(),
                    code_mac: code_mac.clone(),
                    now: crate::time::now_ms(),
                    max_attempts,
                    failures,
                })
                .await?;
            if answer.outcome != AnswerOutcome::Refused(Refusal::Busy) || !wait.again().await {
                break answer;
            }
        };
        self.answer_verdict(request, answer, Path::State(tid), now)
            .await
    }

    /// PIN + OTP, the PIN right: the code is compared against the token's one open
    /// challenge. `refund` are the PIN step's claims on the user's other tokens; with
    /// `claim_held` the PIN check's claim on this token becomes the answer's.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer_with_pin(
        &self,
        request: &Request,
        user: &UserRow,
        token: TokenRow,
        otp_given: &[u8],
        refund: Vec<String>,
        claim_held: bool,
        now: i64,
    ) -> Step<Verdict> {
        let code_mac = self.keys.code_mac(&user.name, otp_given);
        let (serial, name) = (token.serial.clone(), user.name.clone());
        let (max_attempts, failures) = (
            self.policy.challenge.max_attempts,
            self.policy.failure_rules(true),
        );
        let answer = self
            .db(move |s| {
                s.refund_failures(&refund)?;
                let answer = s.answer_challenge(&AnswerClaim {
                    target: ChallengeRef::OpenOf(&serial),
                    user: &name,
                    code_mac: &code_mac,
                    now,
                    max_attempts,
                    failures,
                    claim_held,
                })?;
                // Nothing was compared: the PIN check's claim has nothing to pay for.
                if claim_held && matches!(answer.outcome, AnswerOutcome::Refused(_)) {
                    s.refund_failures(std::slice::from_ref(&serial))?;
                }
                Ok(answer)
            })
            .await?;
        let mut verdict = self.answer_verdict(request, answer, Path::Pin, now).await?;
        verdict.serial = Some(token.serial);
        Ok(verdict)
    }

    async fn answer_verdict(
        &self,
        request: &Request,
        answer: Answer,
        path: Path,
        now: i64,
    ) -> Step<Verdict> {
        let Answer {
            outcome,
            serial,
            owner,
            lock_cleared,
        } = answer;
        if let (true, Some((user, token))) = (lock_cleared, &owner) {
            self.lock_cleared(user, token);
        }
        let verdict = match (outcome, owner) {
            (AnswerOutcome::Accepted { attributes }, Some((user, token))) => {
                let grants = self.after_login(request, &user, &token, attributes).await?;
                let reason = match path {
                    Path::State(_) => "OTP accepted",
                    Path::Pin => "PIN and OTP accepted",
                };
                accept(reason, grants)
            }
            (
                AnswerOutcome::Wrong {
                    attempts,
                    ended,
                    locked_now,
                    expires,
                },
                owner,
            ) => {
                if let (true, Some((user, token))) = (locked_now, &owner) {
                    self.locked(request, user, token);
                }
                let prefix = match path {
                    Path::State(_) => "wrong OTP",
                    Path::Pin => "PIN right, wrong OTP",
                };
                match path {
                    Path::State(tid) if !ended => Verdict {
                        decision: Decision::Challenge {
                            state: tid,
                            prompt: WRONG_CODE.to_string(),
                            timeout: Duration::from_millis(
                                u64::try_from(expires.saturating_sub(now)).unwrap_or(0),
                            ),
                        },
                        ..reject(format!("{prefix}, attempt {attempts}"))
                    },
                    _ if locked_now => {
                        reject(format!("{prefix}, attempt {attempts}, token locked"))
                    }
                    _ if ended => reject(format!("{prefix}, attempt {attempts}, no attempts left")),
                    _ => reject(format!("{prefix}, attempt {attempts}")),
                }
            }
            (AnswerOutcome::Refused(refusal), _) => reject(refusal.reason()),
            (AnswerOutcome::Accepted { .. }, None) => reject(Refusal::TokenGone.reason()),
        };
        Ok(Verdict { serial, ..verdict })
    }
}
