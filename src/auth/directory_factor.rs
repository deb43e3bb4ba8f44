//! The directory password as the first factor (`[[client]] first_factor = "directory"`,
//! DESIGN section 10): a request without State binds as the user's DN instead of checking a
//! token PIN; the password may carry the OTP at its end (password + OTP in one step), as a
//! PIN may (`pin_check`).
//!
//! The attack bounds of DESIGN section 8 hold as for PINs: a failure is claimed on each of
//! the user's tokens before any bind and settled or refunded after; a locked or disabled
//! token's user, an unknown user and a disabled one get no real bind but the same number of
//! decoy binds, so the time of a reject does not tell them from a wrong password. SMS limits
//! are those of `trigger`. The directory unreachable is a reject, never an accept.

use std::sync::Arc;

use super::engine::{Engine, HeldClaims, HeldLogin, Step, reject};
use super::enroll::{self, NewToken};
use super::{Decision, Request, Verdict};
use crate::config::EventKind;
use crate::directory::{Directory, DirectoryError, DirectoryUser, Lookup};
use crate::phone::Phone;
use crate::store::{FailureClaim, LoginStart, TokenRow, UserRow};
use crate::time::now_ms;

/// A reading of the password: the length of its directory-password part, and the OTP
/// length and part if it has one.
type Reading = (usize, Option<(u32, Vec<u8>)>);

impl Engine {
    /// A request of a `first_factor = "directory"` client.
    pub(super) async fn decide_directory(
        &self,
        request: &Request,
        password: &[u8],
    ) -> Step<Verdict> {
        let Some(directory) = self.directory.clone() else {
            return Ok(reject(
                "first_factor = directory, but no [directory] is configured",
            ));
        };
        // The directory matches names without regard to case: so must the tokens, or
        // "ALICE" would count failures on a token of its own.
        let mut request = request.clone();
        request.user_name = Directory::canonical_name(&request.user_name);
        match request.state.clone() {
            Some(state) => {
                let verdict = self.answer_with_state(&request, &state, password).await?;
                self.with_directory_groups(&directory, &request, verdict)
                    .await
            }
            None => {
                self.directory_password(&directory, &request, password)
                    .await
            }
        }
    }

    async fn directory_password(
        &self,
        directory: &Arc<Directory>,
        request: &Request,
        password: &[u8],
    ) -> Step<Verdict> {
        if password.is_empty() {
            return Ok(reject("empty password (never sent to the directory)"));
        }
        let now = now_ms();
        let rules = self
            .policy
            .failure_rules(self.policy.lockout.count_wrong_pin);
        let name = request.user_name.clone();
        // The store's claims and the directory's search at once: the claim a user with a
        // token costs is hidden behind the search an unknown user costs as well.
        let (start, lookup) = tokio::join!(
            self.store().begin_login(name, now, rules),
            directory.lookup(&request.user_name)
        );
        let LoginStart {
            otp_lengths,
            view,
            claims,
        } = start?;
        let lookup = match lookup {
            Ok(lookup) => lookup,
            Err(e) => {
                // The claims were made: give them back, nothing was checked.
                let (tokens, claims) = match &view {
                    Some((_, tokens)) => (tokens.clone(), claims),
                    None => (Vec::new(), Vec::new()),
                };
                let mut held = HeldClaims::new(self);
                held.add(&tokens, &claims);
                self.give_back(held.take()).await?;
                return Ok(unavailable(request, &e));
            }
        };
        let HeldLogin {
            user,
            tokens,
            claims,
            mut held,
            checkable,
        } = self.hold_login(view, claims, &rules).await?;
        let found = match &lookup {
            Lookup::Found(found) => Some(found.clone()),
            _ => None,
        };
        // Who is bound as: nobody (the decoy) for an unknown or disabled user and for a user
        // whose tokens may not be checked now.
        let bindable = found
            .clone()
            .filter(|f| !f.disabled && (tokens.is_empty() || !checkable.is_empty()));
        let dn = bindable.as_ref().map(|f| f.dn.clone());
        let mut matched = None;
        for (length, otp) in readings(password, &otp_lengths) {
            let part = password.get(..length).unwrap_or_default();
            match directory.check_password(dn.as_deref(), part).await {
                Ok(true) => {
                    matched = Some(otp);
                    break;
                }
                Ok(false) => {}
                Err(e) => return Ok(unavailable(request, &e)),
            }
        }
        let serial = (tokens.len() == 1)
            .then(|| tokens.first().map(|t| t.serial.clone()))
            .flatten();
        let (Some(otp), Some(found)) = (matched, bindable) else {
            let reason = match (&lookup, found.as_deref()) {
                (Lookup::Unknown, _) => "unknown directory user",
                (Lookup::Several, _) => "several directory entries match the user name",
                (Lookup::Referral, _) => "the directory answered with a referral",
                (_, Some(f)) if f.disabled => "directory user disabled",
                _ if !tokens.is_empty() && checkable.is_empty() => match claims.first() {
                    Some(FailureClaim::Refused(why)) => why.reason(),
                    Some(FailureClaim::Busy) => crate::store::Refusal::Busy.reason(),
                    _ => "token locked",
                },
                _ => "wrong directory password",
            };
            if dn.is_some() {
                self.settle_later(request, user.as_ref(), &tokens, held.take());
            } else {
                self.give_back(held.take()).await?;
            }
            return Ok(Verdict {
                serial,
                ..reject(reason)
            });
        };
        // The password was right from here on.
        let phone = self.directory_phone(&found);
        let wanted_length = otp.as_ref().map(|(length, _)| *length);
        let chosen = checkable
            .iter()
            .filter_map(|&i| tokens.get(i).map(|t| (i, t)))
            .find(|(_, t)| wanted_length.is_none_or(|l| t.otp_length == l))
            .map(|(i, t)| (i, t.clone()));
        let (user, token, index) = match (chosen, user) {
            (Some((i, token)), Some(user)) => (user, token, Some(i)),
            (None, _) if tokens.is_empty() && directory.auto_enroll() && otp.is_none() => {
                let Some(phone) = &phone else {
                    return Ok(reject(
                        "directory password right, the directory has no phone for the user",
                    ));
                };
                match self.auto_enroll(request, phone).await? {
                    Some((user, token)) => (user, token, None),
                    None => {
                        return Ok(reject(
                            "directory password right, auto_enroll found a token already",
                        ));
                    }
                }
            }
            (None, _) if tokens.is_empty() => {
                return Ok(reject("directory password right, the user has no token"));
            }
            _ => {
                self.give_back(held.take()).await?;
                return Ok(Verdict {
                    serial,
                    ..reject("directory password right, no token takes a code of this length")
                });
            }
        };
        // The token's own phone, set by an admin, wins; else the directory's, read now.
        let user = match (&token.phone, &phone) {
            (Some(_), _) => user,
            (None, Some(phone)) => UserRow {
                phone: phone.e164().to_string(),
                ..user
            },
            (None, None) => {
                self.give_back(held.take()).await?;
                return Ok(Verdict {
                    serial: Some(token.serial),
                    ..reject("directory password right, the directory has no phone for the user")
                });
            }
        };
        match otp {
            None => {
                let refund = held.take();
                self.trigger(request, &user, token, refund, now_ms()).await
            }
            Some((_, code)) => {
                let claim_held = index
                    .and_then(|i| claims.get(i))
                    .is_some_and(|c| matches!(c, FailureClaim::Claimed { .. }));
                let mut refund = held.take();
                refund.retain(|serial| *serial != token.serial);
                let verdict = self
                    .answer_with_pin(request, &user, token, &code, refund, claim_held, now_ms())
                    .await?;
                Ok(grant_groups(verdict, &found))
            }
        }
    }

    /// State + OTP accepted for a directory user: the groups are the directory's, read now,
    /// and a user the directory disabled (or lost) meanwhile gets no accept.
    async fn with_directory_groups(
        &self,
        directory: &Directory,
        request: &Request,
        verdict: Verdict,
    ) -> Step<Verdict> {
        if !matches!(verdict.decision, Decision::Accept(_)) {
            return Ok(verdict);
        }
        let reason = match directory.lookup(&request.user_name).await {
            Ok(Lookup::Found(found)) if !found.disabled => {
                return Ok(grant_groups(verdict, &found));
            }
            Ok(Lookup::Found(_)) => "OTP right, but the directory user is disabled".to_string(),
            Ok(_) => "OTP right, but the directory user is gone".to_string(),
            Err(e) => format!("OTP right, but {}", unavailable(request, &e).reason),
        };
        Ok(Verdict {
            serial: verdict.serial,
            ..reject(reason)
        })
    }

    /// The first of the directory's phone values that is a number.
    fn directory_phone(&self, found: &DirectoryUser) -> Option<Phone> {
        found
            .phones
            .iter()
            .find_map(|p| Phone::parse(p, self.policy.default_region.as_deref()).ok())
    }

    /// `auto_enroll`: the user's first login makes their user row (if none) and an SMS token
    /// without PIN, announced by `token_added`. None if another login made one meanwhile.
    async fn auto_enroll(
        &self,
        request: &Request,
        phone: &Phone,
    ) -> Step<Option<(UserRow, TokenRow)>> {
        let now = now_ms();
        let user = UserRow {
            name: request.user_name.clone(),
            phone: phone.e164().to_string(),
            created: now,
            group: None,
        };
        let token = enroll::new_directory_token(
            NewToken {
                user: &user.name,
                phone: None,
                gateway: None,
                otp_length: self.policy.challenge.otp_length,
                created: now,
            },
            &self.keys,
        )
        .map_err(super::engine::Failure::Other)?;
        let (row, new) = (user.clone(), token.clone());
        let added = self.db(move |s| s.enroll_first(&row, &new)).await?;
        if !added {
            return Ok(None);
        }
        tracing::info!(user = %crate::logging::printable(&user.name), serial = %token.serial, event = "token_added", "auto_enroll: SMS token created at the directory user's first login");
        let client = Some(super::engine::client_of(request));
        self.notifier
            .notify(self.event(EventKind::TokenAdded, &user, Some(&token), client));
        Ok(Some((user, token)))
    }

    /// The binds failed: their claimed failures stand. Settled after the reply, as the audit
    /// row is, so that a wrong password costs the reply no more store work than an unknown
    /// user does; until then the claims count as failures anyway, so the bound holds.
    fn settle_later(
        &self,
        request: &Request,
        user: Option<&UserRow>,
        tokens: &[TokenRow],
        failed: Vec<String>,
    ) {
        let owner = user.map(|user| (user.clone(), tokens.to_vec()));
        let client = super::engine::client_of(request);
        let (store, notifier) = (self.store_thread.clone(), self.notifier.clone());
        let max = self.policy.lockout.max_failures;
        self.background.spawn(async move {
            let locked = match store
                .run(move |s| s.settle_failures(&failed, now_ms(), max))
                .await
            {
                Ok(locked) => locked,
                Err(e) => {
                    tracing::error!(error = %e, "cannot settle failed directory binds");
                    return;
                }
            };
            let Some((user, tokens)) = owner else {
                return;
            };
            for token in tokens.iter().filter(|t| locked.contains(&t.serial)) {
                let event = super::engine::lock_event(&user, token, client.clone(), max);
                super::engine::announce_lock(&notifier, event);
            }
        });
    }

    /// Gives back failure claims whose check never ran.
    async fn give_back(&self, serials: Vec<String>) -> Step<()> {
        Ok(self.db(move |s| s.refund_failures(&serials)).await?)
    }
}

/// The readings a login tries, in order: the whole password, then the password less an OTP
/// of each length in use whose last characters are digits. Which readings there are depends
/// on the password and the deployment only, never on the user, so every reject of one
/// password costs the same binds.
fn readings(password: &[u8], otp_lengths: &[u32]) -> Vec<Reading> {
    let mut readings: Vec<Reading> = vec![(password.len(), None)];
    for &length in otp_lengths {
        let Some(rest) = password.len().checked_sub(length as usize) else {
            continue;
        };
        let otp = password.get(rest..).unwrap_or_default();
        if rest > 0 && otp.iter().all(u8::is_ascii_digit) {
            readings.push((rest, Some((length, otp.to_vec()))));
        }
    }
    readings
}

/// An accept carries the `[group.NAME]` of the user's first mapped directory group (in
/// `[group.*]` name order), or the store's group when none is mapped.
fn grant_groups(mut verdict: Verdict, found: &DirectoryUser) -> Verdict {
    if let Decision::Accept(grants) = &mut verdict.decision
        && let Some(group) = found.groups.first()
    {
        grants.group = Some(group.clone());
    }
    verdict
}

fn unavailable(request: &Request, error: &DirectoryError) -> Verdict {
    tracing::warn!(user = %crate::logging::printable(&request.user_name), error = %error, "rejected: the directory is unavailable");
    reject(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_split_only_where_digits_could_be_an_otp() {
        let lengths = |p: &str| -> Vec<usize> {
            readings(p.as_bytes(), &[6, 8])
                .iter()
                .map(|r| r.0)
                .collect()
        };
        assert_eq!(lengths("secret"), [6]);
        assert_eq!(lengths("secret123456"), [12, 6]);
        assert_eq!(lengths("secret12345678"), [14, 8, 6]);
        assert_eq!(lengths("123456"), [6], "no empty password part");
    }
}
