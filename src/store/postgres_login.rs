//! The login path's batches on PostgreSQL: the logins and answers that queued while a store
//! thread was busy go in one statement (`postgres_statements::BEGIN_LOGINS`, `ANSWERS`),
//! so one round trip and one commit for all of them. A profile put most of PostgreSQL's CPU
//! per flow in what every statement costs whatever it does (setting up its plan, its
//! transaction and commit, the wake-ups of a round trip); eight logins in one statement
//! cost it less than twice one login (pgbench: 336 us against 228 us).
//!
//! A statement takes a run of members that share their rules and touch distinct rows: one
//! login per user, one answer per transaction id or token. The member that would break the
//! run waits for the next statement, which sees the writes of the one before: each member is
//! decided as if alone, after the ones queued before it.

use postgres::Row;

use super::postgres::{MAC_GRACE_MS, PostgresStore, claim_from, started_from, to_u32, token_at};
use super::postgres_statements as statements;
use super::{
    Answer, AnswerClaim, AnswerOutcome, ChallengeRef, Limit, LoginAsk, LoginStart, Refusal,
    StartAsk, Started, Store, StoreError, StoreResult, Unusable, UserRow,
};

/// The most members one statement takes: a batch holds its rows' locks until it commits,
/// so a big one would keep other requests for those rows waiting longer.
pub(super) const MAX_BATCH: usize = 16;

/// Splits `members` into rounds one statement can take each: runs of members with equal
/// `rules` and distinct `key`s, a member that would break the run starting the next. Rounds
/// run in order, so every member is decided after the ones before it, as if alone.
fn rounds<T, R: PartialEq, K: PartialEq>(
    members: &[T],
    rules: impl Fn(&T) -> R,
    key: impl Fn(&T) -> K,
) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, member) in members.iter().enumerate() {
        match rounds.last_mut() {
            Some(round)
                if rules(&members[round[0]]) == rules(member)
                    && round.iter().all(|&j| key(&members[j]) != key(member)) =>
            {
                round.push(i)
            }
            _ => rounds.push(vec![i]),
        }
    }
    rounds
}

/// Hands each member its result: `results` of a round, in its order, or its error for all.
fn place<T>(slots: &mut [Option<StoreResult<T>>], round: &[usize], results: StoreResult<Vec<T>>) {
    match results {
        Ok(results) => {
            for (&i, result) in round.iter().zip(results) {
                slots[i] = Some(Ok(result));
            }
        }
        Err(e) => {
            for &i in round {
                slots[i] = Some(Err(e.clone()));
            }
        }
    }
}

/// A batch statement gives one row per member: anything else is refused, not guessed at.
fn row_per_member(rows: &[Row], members: usize, statement: &str) -> StoreResult<()> {
    if rows.len() == members {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "the {statement} statement gave {} rows for {members} members",
        rows.len()
    )))
}

fn collect<T>(slots: Vec<Option<StoreResult<T>>>) -> Vec<StoreResult<T>> {
    slots
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| Err(StoreError::Database("a batch member had no result".into())))
        })
        .collect()
}

pub(super) fn begin_logins(
    store: &PostgresStore,
    asks: &[LoginAsk<'_>],
) -> Vec<StoreResult<LoginStart>> {
    let mut slots: Vec<Option<StoreResult<LoginStart>>> = asks.iter().map(|_| None).collect();
    for round in rounds(asks, |a| a.rules, |a| a.user) {
        let members: Vec<&LoginAsk<'_>> = round.iter().map(|&i| &asks[i]).collect();
        place(&mut slots, &round, begin_login_round(store, &members));
    }
    collect(slots)
}

/// One `BEGIN_LOGINS` statement for members with distinct users and the same rules.
fn begin_login_round(
    store: &PostgresStore,
    members: &[&LoginAsk<'_>],
) -> StoreResult<Vec<LoginStart>> {
    let Some(rules) = members.first().map(|m| m.rules) else {
        return Ok(Vec::new());
    };
    let users: Vec<&str> = members.iter().map(|m| m.user).collect();
    let nows: Vec<i64> = members.iter().map(|m| m.now).collect();
    let rows = store.conn()?.query(
        statements::BEGIN_LOGINS,
        &[
            &users as &(dyn postgres::types::ToSql + Sync),
            &nows,
            &i64::from(rules.max_failures),
            &rules.clear_after_ms,
            &rules.count,
            &rules.claim_ttl_ms,
        ],
    )?;
    let mut starts = Vec::with_capacity(members.len());
    for at in 1..=members.len() as i64 {
        let of_member: Vec<&Row> = rows.iter().filter(|r| r.get::<_, i64>(1) == at).collect();
        starts.push(login_start(&of_member));
    }
    Ok(starts)
}

/// One member's `LoginStart` from its rows of `BEGIN_LOGINS`.
fn login_start(rows: &[&Row]) -> LoginStart {
    let otp_lengths = rows
        .first()
        .map(|r| r.get::<_, Vec<i64>>(0))
        .unwrap_or_default()
        .into_iter()
        .map(to_u32)
        .collect();
    let view = match rows.first() {
        Some(first) if first.get::<_, Option<String>>(2).is_some() => {
            let user = UserRow {
                name: first.get(2),
                phone: first.get(3),
                created: first.get(4),
                group: first.get(5),
            };
            let tokens = rows
                .iter()
                .filter(|r| r.get::<_, Option<String>>(6).is_some())
                .map(|r| token_at(r, 6))
                .collect();
            Some((user, tokens))
        }
        _ => None,
    };
    let claims = rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(18))
        .map(|code| claim_from(&code))
        .collect();
    LoginStart {
        otp_lengths,
        view,
        claims,
    }
}

pub(super) fn answer_challenges(
    store: &PostgresStore,
    claims: &[AnswerClaim<'_>],
) -> Vec<StoreResult<Answer>> {
    let mut slots: Vec<Option<StoreResult<Answer>>> = claims.iter().map(|_| None).collect();
    for round in rounds(claims, |c| (c.max_attempts, c.failures), |c| c.target) {
        // Answers of one token by different ways (two transaction ids, or one and the
        // token's serial) are told apart by the statement: it answers the first and gives
        // the others back, for the next statement.
        let mut waiting = round;
        while !waiting.is_empty() {
            let members: Vec<&AnswerClaim<'_>> = waiting.iter().map(|&i| &claims[i]).collect();
            match answer_round(store, &members) {
                Ok(answers) => {
                    let mut again = Vec::new();
                    for (&i, answer) in waiting.iter().zip(answers) {
                        match answer {
                            Some(answer) => slots[i] = Some(Ok(answer)),
                            None => again.push(i),
                        }
                    }
                    if again.len() == waiting.len() {
                        // Cannot happen (the first of every token is answered); never loop.
                        place::<Answer>(
                            &mut slots,
                            &again,
                            Err(StoreError::Database(
                                "an answer batch made no progress".into(),
                            )),
                        );
                        break;
                    }
                    waiting = again;
                }
                Err(e) => {
                    place::<Answer>(&mut slots, &waiting, Err(e));
                    break;
                }
            }
        }
    }
    collect(slots)
}

/// One `ANSWERS` statement for members with the same rules and distinct targets: an answer
/// for each, or None for those to be answered by the next statement.
fn answer_round(
    store: &PostgresStore,
    members: &[&AnswerClaim<'_>],
) -> StoreResult<Vec<Option<Answer>>> {
    let Some(first) = members.first() else {
        return Ok(Vec::new());
    };
    let (max_attempts, failures) = (first.max_attempts, first.failures);
    let mut tids: Vec<Option<&str>> = Vec::with_capacity(members.len());
    let mut serials: Vec<Option<&str>> = Vec::with_capacity(members.len());
    for m in members {
        match m.target {
            ChallengeRef::Transaction(tid) => {
                tids.push(Some(tid));
                serials.push(None);
            }
            ChallengeRef::OpenOf(serial) => {
                tids.push(None);
                serials.push(Some(serial));
            }
        }
    }
    let users: Vec<&str> = members.iter().map(|m| m.user).collect();
    let macs: Vec<&[u8]> = members.iter().map(|m| m.code_mac).collect();
    let nows: Vec<i64> = members.iter().map(|m| m.now).collect();
    let held: Vec<bool> = members.iter().map(|m| m.claim_held).collect();
    let rows = store.conn()?.query(
        statements::ANSWERS,
        &[
            &tids as &(dyn postgres::types::ToSql + Sync),
            &serials,
            &users,
            &macs,
            &nows,
            &held,
            &i64::from(max_attempts),
            &i64::from(failures.max_failures),
            &failures.clear_after_ms,
            &failures.claim_ttl_ms,
        ],
    )?;
    row_per_member(&rows, members.len(), "answer")?;
    rows.iter().map(answer_from).collect()
}

/// One member's row of `ANSWERS`; None for `retry`.
fn answer_from(row: &Row) -> StoreResult<Option<Answer>> {
    let outcome: String = row.get(1);
    let outcome = match outcome.as_str() {
        "retry" => return Ok(None),
        "accepted" => AnswerOutcome::Accepted {
            attributes: row.get(25),
        },
        "wrong" => AnswerOutcome::Wrong {
            attempts: to_u32(row.get(2)),
            ended: row.get(3),
            locked_now: row.get(4),
            expires: row.get(5),
        },
        refusal => AnswerOutcome::Refused(match refusal {
            "unknown_challenge" => Refusal::UnknownChallenge,
            "no_open_challenge" => Refusal::NoOpenChallenge,
            "other_user" => Refusal::OtherUser,
            "used" => Refusal::Used,
            "expired" => Refusal::Expired,
            "no_attempts_left" => Refusal::NoAttemptsLeft,
            "token_gone" => Refusal::TokenGone,
            "disabled" => Refusal::Unusable(Unusable::Disabled),
            "locked" => Refusal::Unusable(Unusable::Locked),
            "busy" => Refusal::Busy,
            other => {
                return Err(StoreError::Database(format!(
                    "unknown answer outcome '{other}'"
                )));
            }
        }),
    };
    // As on SQLite: the owner comes with a comparison, and with the refusals that read it.
    let with_owner = matches!(
        outcome,
        AnswerOutcome::Accepted { .. }
            | AnswerOutcome::Wrong { .. }
            | AnswerOutcome::Refused(Refusal::Busy | Refusal::Unusable(_))
    );
    let owner = (with_owner && row.get::<_, Option<bool>>(8).unwrap_or(false)).then(|| {
        (
            UserRow {
                name: row.get(9),
                phone: row.get(10),
                created: row.get(11),
                group: row.get(12),
            },
            token_at(row, 13),
        )
    });
    Ok(Some(Answer {
        outcome,
        serial: row.get(6),
        owner,
        lock_cleared: row.get::<_, Option<bool>>(7).unwrap_or(false),
    }))
}

pub(super) fn start_challenges(
    store: &PostgresStore,
    asks: &[StartAsk<'_>],
) -> Vec<StoreResult<Started>> {
    let mut slots: Vec<Option<StoreResult<Started>>> = asks.iter().map(|_| None).collect();
    // `otpgate_start_challenges` takes its members one after the other: any may share a
    // token, and none shares a transaction id.
    let rules = |a: &StartAsk<'_>| (a.start.resend_interval_ms, a.start.caps);
    for round in rounds(asks, rules, |a| a.start.transaction_id) {
        let members: Vec<&StartAsk<'_>> = round.iter().map(|&i| &asks[i]).collect();
        match start_round(store, &members) {
            Ok(results) => {
                for (&i, result) in round.iter().zip(results) {
                    slots[i] = Some(result);
                }
            }
            Err(e) => place::<Started>(&mut slots, &round, Err(e)),
        }
    }
    collect(slots)
}

/// One `otpgate_start_challenges` call for members with the same rules; a member whose
/// token's counter moved since its login read it then opens its challenge in two steps.
fn start_round<'a>(
    store: &PostgresStore,
    members: &[&StartAsk<'a>],
) -> StoreResult<Vec<StoreResult<Started>>> {
    let Some(first) = members.first() else {
        return Ok(Vec::new());
    };
    let caps: Vec<i64> = Limit::ALL
        .iter()
        .map(|l| i64::from(l.cap(&first.start.caps).0))
        .collect();
    let mut refund: Vec<&str> = Vec::new();
    let mut refund_of: Vec<i32> = Vec::new();
    for (at, m) in (1..).zip(members) {
        for serial in m.refund {
            refund.push(serial);
            refund_of.push(at);
        }
    }
    let column = |f: fn(&StartAsk<'a>) -> &'a str| -> Vec<&'a str> {
        members.iter().map(|m| f(m)).collect()
    };
    let expected: Vec<i64> = members
        .iter()
        .map(|m| i64::try_from(m.expected.counter).unwrap_or(-1))
        .collect();
    let macs: Vec<&[u8]> = members.iter().map(|m| m.expected.code_mac).collect();
    let nows: Vec<i64> = members.iter().map(|m| m.start.now).collect();
    let expires: Vec<i64> = members.iter().map(|m| m.start.expires).collect();
    let mut conn = store.conn()?;
    let rows = conn.query(
        "SELECT r_kind, r_transaction_id, r_counter, r_expires, r_limit, r_at
         FROM otpgate_start_challenges($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                       $13, $14)",
        &[
            &refund as &(dyn postgres::types::ToSql + Sync),
            &refund_of,
            &expected,
            &macs,
            &column(|m| m.start.transaction_id),
            &column(|m| m.start.serial),
            &column(|m| m.start.user),
            &column(|m| m.start.client),
            &column(|m| m.start.phone),
            &nows,
            &expires,
            &first.start.resend_interval_ms,
            &caps,
            &MAC_GRACE_MS,
        ],
    )?;
    row_per_member(&rows, members.len(), "start")?;
    let mut results = Vec::with_capacity(members.len());
    let mut moved = Vec::new();
    for (i, (m, row)) in members.iter().zip(&rows).enumerate() {
        if row.get::<_, String>(0) == "counter_moved" {
            moved.push(i);
            results.push(Err(StoreError::Database("not started yet".into())));
        } else {
            results.push(started_from(&mut conn, row, &m.start, m.code_mac));
        }
    }
    // The two steps check a connection out again: give this one back first.
    drop(conn);
    for i in moved {
        let m = members[i];
        store.counter_moved_since_login(m.start.serial, m.expected.counter);
        results[i] = store.open_challenge(&m.start, m.code_mac);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::rounds;

    #[test]
    fn rounds_are_runs_of_distinct_keys_and_equal_rules() {
        // (rules, key)
        let members = [
            (1, "a"),
            (1, "b"),
            (1, "a"),
            (2, "c"),
            (1, "a"),
            (1, "d"),
            (2, "c"),
        ];
        let rounds = rounds(&members, |m| m.0, |m| m.1);
        assert_eq!(
            rounds,
            vec![vec![0, 1], vec![2], vec![3], vec![4, 5], vec![6]]
        );
    }
}
