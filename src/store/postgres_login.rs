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

/// Runs `round` on each run of `members` one statement can take (members with equal
/// `rules` and distinct `key`s, a member that would break the run starting the next), in
/// order, so every member is decided after the ones before it, as if alone. A round's error
/// is every member's result.
fn in_rounds<T, O, R: PartialEq, K: PartialEq>(
    members: &[T],
    rules: impl Fn(&T) -> R,
    key: impl Fn(&T) -> K,
    mut round: impl FnMut(&[T]) -> StoreResult<Vec<StoreResult<O>>>,
) -> Vec<StoreResult<O>> {
    let mut results = Vec::with_capacity(members.len());
    for run in runs(members, rules, key) {
        match round(run) {
            Ok(decided) => results.extend(decided),
            Err(e) => results.extend(run.iter().map(|_| Err(e.clone()))),
        }
    }
    results
}

/// The runs `in_rounds` takes.
fn runs<T, R: PartialEq, K: PartialEq>(
    members: &[T],
    rules: impl Fn(&T) -> R,
    key: impl Fn(&T) -> K,
) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, member) in members.iter().enumerate() {
        let run = &members[start..i];
        let fits = run
            .first()
            .is_none_or(|first| rules(first) == rules(member))
            && run.iter().all(|m| key(m) != key(member));
        if !fits {
            runs.push(run);
            start = i;
        }
    }
    if start < members.len() {
        runs.push(&members[start..]);
    }
    runs
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

pub(super) fn begin_logins(
    store: &PostgresStore,
    asks: &[LoginAsk<'_>],
) -> Vec<StoreResult<LoginStart>> {
    in_rounds(
        asks,
        |a| a.rules,
        |a| a.user,
        |run| begin_login_round(store, run),
    )
}

/// One `BEGIN_LOGINS` statement for members with distinct users and the same rules.
fn begin_login_round(
    store: &PostgresStore,
    members: &[LoginAsk<'_>],
) -> StoreResult<Vec<StoreResult<LoginStart>>> {
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
    Ok((1..=members.len() as i64)
        .map(|at| {
            let of_member: Vec<&Row> = rows.iter().filter(|r| r.get::<_, i64>(1) == at).collect();
            Ok(login_start(&of_member))
        })
        .collect())
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
    let rules = |c: &AnswerClaim<'_>| (c.max_attempts, c.failures);
    in_rounds(
        claims,
        rules,
        |c| c.target,
        |run| Ok(answer_run(store, run)),
    )
}

/// A run's answers. Answers of one token by different ways (two transaction ids, or one
/// and the token's serial) are told apart by the statement: it answers the first and gives
/// the others back, for the next statement. An error is the result of those not answered
/// yet; the ones answered before it stand.
fn answer_run(store: &PostgresStore, run: &[AnswerClaim<'_>]) -> Vec<StoreResult<Answer>> {
    let mut results: Vec<Option<StoreResult<Answer>>> = run.iter().map(|_| None).collect();
    let mut waiting: Vec<usize> = (0..run.len()).collect();
    while !waiting.is_empty() {
        let members: Vec<&AnswerClaim<'_>> = waiting.iter().map(|&i| &run[i]).collect();
        let answers = match answer_round(store, &members) {
            Ok(answers) => answers,
            Err(e) => {
                for &i in &waiting {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
        };
        let before = waiting.len();
        waiting = waiting
            .into_iter()
            .zip(answers)
            .filter_map(|(i, answer)| match answer {
                Some(answer) => {
                    results[i] = Some(Ok(answer));
                    None
                }
                None => Some(i),
            })
            .collect();
        if waiting.len() == before {
            // Cannot happen (the first of every token is answered); never loop.
            break;
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError::Database(
                    "an answer batch made no progress".into(),
                ))
            })
        })
        .collect()
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
    let (tids, serials): (Vec<Option<&str>>, Vec<Option<&str>>) = members
        .iter()
        .map(|m| match m.target {
            ChallengeRef::Transaction(tid) => (Some(tid), None),
            ChallengeRef::OpenOf(serial) => (None, Some(serial)),
        })
        .unzip();
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
    // `otpgate_start_challenges` takes its members one after the other: any may share a
    // token, and none shares a transaction id.
    let rules = |a: &StartAsk<'_>| (a.start.resend_interval_ms, a.start.caps);
    in_rounds(
        asks,
        rules,
        |a| a.start.transaction_id,
        |run| start_round(store, run),
    )
}

/// One `otpgate_start_challenges` call for members with the same rules; a member whose
/// token's counter moved since its login read it then opens its challenge in two steps.
fn start_round<'a>(
    store: &PostgresStore,
    members: &[StartAsk<'a>],
) -> StoreResult<Vec<StoreResult<Started>>> {
    let Some(first) = members.first() else {
        return Ok(Vec::new());
    };
    let caps: Vec<i64> = Limit::ALL
        .iter()
        .map(|l| i64::from(l.cap(&first.start.caps).0))
        .collect();
    let (refund, refund_of): (Vec<&str>, Vec<i32>) = (1..)
        .zip(members)
        .flat_map(|(at, m)| m.refund.iter().map(move |serial| (serial.as_str(), at)))
        .unzip();
    let column =
        |f: fn(&StartAsk<'a>) -> &'a str| -> Vec<&'a str> { members.iter().map(f).collect() };
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
    // None: the counter moved.
    let started: Vec<Option<StoreResult<Started>>> = members
        .iter()
        .zip(&rows)
        .map(|(m, row)| {
            (row.get::<_, String>(0) != "counter_moved")
                .then(|| started_from(&mut conn, row, &m.start, m.code_mac))
        })
        .collect();
    // The two steps check a connection out again: give this one back first.
    drop(conn);
    Ok(members
        .iter()
        .zip(started)
        .map(|(m, started)| {
            started.unwrap_or_else(|| {
                store.counter_moved_since_login(m.start.serial, m.expected.counter);
                store.open_challenge(&m.start, m.code_mac)
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_have_distinct_keys_and_equal_rules() {
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
        let runs: Vec<Vec<&str>> = runs(&members, |m| m.0, |m| m.1)
            .iter()
            .map(|run| run.iter().map(|m| m.1).collect())
            .collect();
        assert_eq!(
            runs,
            vec![
                vec!["a", "b"],
                vec!["a"],
                vec!["c"],
                vec!["a", "d"],
                vec!["c"]
            ]
        );
        assert!(super::runs(&members[..0], |m| m.0, |m| m.1).is_empty());
    }
}
