//! The `Store` contract, written once over `&dyn Store` so that every backend runs the same
//! checks of the attack bounds (DESIGN section 8): one open challenge per token, the resend
//! interval and the caps, attempts and failures claimed before a comparison, locks that
//! re-arm. Each check takes a fresh, empty store.

use super::{
    AnswerClaim, AnswerOutcome, AuditRow, ChallengeRef, ChallengeRow, ChallengeStart, Expected,
    FailureClaim, FailureRules, Limit, LoginAsk, Refusal, Resend, StartAsk, Started, Store,
    TokenRow, Unusable, UserRow,
};
use crate::config::SendCaps;

pub const MINUTE: i64 = 60_000;
const RULES: FailureRules = FailureRules {
    max_failures: 3,
    clear_after_ms: 10 * MINUTE,
    count: true,
    claim_ttl_ms: MINUTE,
};

/// Adds user `name` with token `serial` (6-digit codes) sending to `phone`.
pub fn enroll(store: &dyn Store, name: &str, serial: &str, phone: &str) {
    if store.user(name).unwrap().is_none() {
        store
            .add_user(&UserRow {
                name: name.into(),
                phone: phone.into(),
                created: 1,
                group: None,
            })
            .unwrap();
    }
    store
        .add_token(&TokenRow {
            phone: Some(phone.into()),
            pin_hash: "h".into(),
            sealed_seed: vec![1, 2, 3],
            ..first_token(name, serial)
        })
        .unwrap();
}

/// A PIN-only request of `serial` at `now`, with a new transaction id `tid`.
pub fn start<'a>(tid: &'a str, serial: &'a str, user: &'a str, now: i64) -> ChallengeStart<'a> {
    ChallengeStart {
        transaction_id: tid,
        serial,
        user,
        client: "vpn",
        phone: "+491701234567",
        now,
        expires: now + 5 * MINUTE,
        resend_interval_ms: 30_000,
        caps: SendCaps::default(),
    }
}

/// The MAC a challenge at `counter` stores: the code is the counter, for the tests.
pub fn mac(counter: u64) -> Vec<u8> {
    format!("code-{counter}").into_bytes()
}

pub fn answer<'a>(
    target: ChallengeRef<'a>,
    user: &'a str,
    code: &'a [u8],
    now: i64,
) -> AnswerClaim<'a> {
    AnswerClaim {
        target,
        user,
        code_mac: code,
        now,
        max_attempts: 3,
        failures: RULES,
        claim_held: false,
    }
}

fn opened(started: Started) -> (String, u64) {
    match started {
        Started::New(open) => (open.transaction_id, open.counter),
        other => panic!("expected a new challenge, got {other:?}"),
    }
}

pub fn a_token_has_one_open_challenge_and_resends_wait(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let now = 1_000_000;
    let (tid, counter) = opened(
        store
            .open_challenge(&start("t1", "S1", "alice", now), &mac)
            .unwrap(),
    );
    assert_eq!((tid.as_str(), counter), ("t1", 0));
    match store
        .open_challenge(&start("t2", "S1", "alice", now + 1_000), &mac)
        .unwrap()
    {
        Started::Again(open, Resend::TooSoon) => {
            assert_eq!((open.transaction_id.as_str(), open.counter), ("t1", 0))
        }
        other => panic!("{other:?}"),
    }
    match store
        .open_challenge(&start("t3", "S1", "alice", now + 31_000), &mac)
        .unwrap()
    {
        Started::Again(open, Resend::Claimed) => assert_eq!(open.transaction_id, "t1"),
        other => panic!("{other:?}"),
    }
    // Expired: the next PIN opens a new challenge with the next counter.
    let later = now + 6 * MINUTE;
    let (tid, counter) = opened(
        store
            .open_challenge(&start("t4", "S1", "alice", later), &mac)
            .unwrap(),
    );
    assert_eq!((tid.as_str(), counter), ("t4", 1));
    assert_eq!(store.token("S1").unwrap().unwrap().counter, 2);
}

/// Caps with `limit` at `n` and every other cap off.
fn only(limit: Limit, n: u32) -> SendCaps {
    let mut caps = SendCaps::default();
    let slot = match limit {
        Limit::PerTokenHour => &mut caps.per_token_hour,
        Limit::PerTokenDay => &mut caps.per_token_day,
        Limit::PerPhoneHour => &mut caps.per_phone_hour,
        Limit::PerClientMinute => &mut caps.per_client_minute,
        Limit::GlobalMinute => &mut caps.global_minute,
        Limit::GlobalDay => &mut caps.global_day,
    };
    *slot = n;
    caps
}

pub fn no_resend_interval_means_no_wait_even_for_an_earlier_clock(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let now = 1_000_000;
    let at = |tid, t| ChallengeStart {
        resend_interval_ms: 0,
        ..start(tid, "S1", "alice", t)
    };
    opened(store.open_challenge(&at("t1", now), &mac).unwrap());
    // Another request read the clock a little before the send above was recorded.
    match store.open_challenge(&at("t2", now - 5), &mac).unwrap() {
        Started::Again(open, Resend::Claimed) => assert_eq!(open.transaction_id, "t1"),
        other => panic!("{other:?}"),
    }
}

pub fn sending_caps_stop_sms_per_token_phone_client_and_globally(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    enroll(store, "bob", "S2", "+491701234567");
    enroll(store, "carol", "S3", "+491709999999");
    for (round, limit) in Limit::ALL.into_iter().enumerate() {
        let caps = only(limit, 2);
        // Each round far from the last, so earlier sends are outside every window.
        let now = 10_000_000_000 + round as i64 * 10 * 24 * 60 * MINUTE;
        let tids: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|t| format!("{t}{round}"))
            .collect();
        // Sends 2 s apart, all inside the shortest window.
        let at = |i: usize, serial, user, phone, t| ChallengeStart {
            phone,
            caps,
            resend_interval_ms: 1_000,
            ..start(&tids[i], serial, user, t)
        };
        let first = store
            .open_challenge(&at(0, "S1", "alice", "+491701234567", now), &mac)
            .unwrap();
        assert!(matches!(first, Started::New(_)), "{limit:?}: {first:?}");
        let again = store
            .open_challenge(&at(1, "S1", "alice", "+491701234567", now + 2_000), &mac)
            .unwrap();
        assert!(
            matches!(again, Started::Again(_, Resend::Claimed)),
            "{limit:?}: {again:?}"
        );
        let third = store
            .open_challenge(&at(2, "S1", "alice", "+491701234567", now + 4_000), &mac)
            .unwrap();
        // Whatever the cap counts, alice's own third send is over it.
        let expected_third = Started::Again(
            super::OpenChallenge {
                transaction_id: tids[0].clone(),
                counter: round as u64,
                expires: now + 5 * MINUTE,
            },
            Resend::Limited(limit),
        );
        assert_eq!(third, expected_third, "{limit:?}");
        // bob shares alice's phone; carol shares nothing but the client and the deployment.
        let bob = store
            .open_challenge(&at(3, "S2", "bob", "+491701234567", now + 5_000), &mac)
            .unwrap();
        let carol = store
            .open_challenge(&at(4, "S3", "carol", "+491709999999", now + 6_000), &mac)
            .unwrap();
        let stopped = |s: &Started| matches!(s, Started::Limited(l) if *l == limit);
        match limit {
            Limit::PerTokenHour | Limit::PerTokenDay => {
                assert!(matches!(bob, Started::New(_)), "{limit:?}: {bob:?}");
                assert!(matches!(carol, Started::New(_)), "{limit:?}: {carol:?}");
            }
            Limit::PerPhoneHour => {
                assert!(stopped(&bob), "{limit:?}: {bob:?}");
                assert!(matches!(carol, Started::New(_)), "{limit:?}: {carol:?}");
            }
            _ => {
                assert!(stopped(&bob), "{limit:?}: {bob:?}");
                assert!(stopped(&carol), "{limit:?}: {carol:?}");
            }
        }
        // End every open challenge for the next round.
        for serial in ["S1", "S2", "S3"] {
            store.set_disabled(serial, true).unwrap();
            store.set_disabled(serial, false).unwrap();
        }
    }
}

pub fn an_answer_is_compared_at_most_max_attempts_times_and_accepted_once(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    enroll(store, "alice", "S2", "+491701234567");
    let now = 1_000_000;
    opened(
        store
            .open_challenge(&start("t1", "S1", "alice", now), &mac)
            .unwrap(),
    );
    let right = mac(0);
    let accepted = store
        .answer_challenge(&answer(
            ChallengeRef::Transaction("t1"),
            "alice",
            &right,
            now + 1,
        ))
        .unwrap();
    assert!(
        matches!(accepted.outcome, AnswerOutcome::Accepted { .. }),
        "{accepted:?}"
    );
    let again = store
        .answer_challenge(&answer(
            ChallengeRef::Transaction("t1"),
            "alice",
            &right,
            now + 2,
        ))
        .unwrap();
    assert_eq!(again.outcome, AnswerOutcome::Refused(Refusal::Used), "once");

    opened(
        store
            .open_challenge(&start("t2", "S2", "alice", now), &mac)
            .unwrap(),
    );
    let wrong = b"nope".to_vec();
    let outcomes: Vec<AnswerOutcome> = (0..5)
        .map(|i| {
            store
                .answer_challenge(&answer(
                    ChallengeRef::Transaction("t2"),
                    "alice",
                    &wrong,
                    now + i,
                ))
                .unwrap()
                .outcome
        })
        .collect();
    assert!(
        matches!(
            outcomes[0],
            AnswerOutcome::Wrong {
                attempts: 1,
                ended: false,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            outcomes[1],
            AnswerOutcome::Wrong {
                attempts: 2,
                ended: false,
                ..
            }
        ),
        "{outcomes:?}"
    );
    // The third failure also reaches max_failures (3) and locks S2.
    assert!(
        matches!(
            outcomes[2],
            AnswerOutcome::Wrong {
                attempts: 3,
                ended: true,
                locked_now: true,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[3], AnswerOutcome::Refused(Refusal::Used));
    // The right code after the attempts ran out is refused too, without comparison.
    let late = store
        .answer_challenge(&answer(
            ChallengeRef::Transaction("t2"),
            "alice",
            &mac(0),
            now + 9,
        ))
        .unwrap();
    assert_eq!(late.outcome, AnswerOutcome::Refused(Refusal::Used));
    assert_eq!(store.token("S2").unwrap().unwrap().fail_count, 3);
}

pub fn answers_are_refused_for_other_users_expired_unknown_and_locked(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let now = 1_000_000;
    let code = mac(0);
    let refused = |store: &dyn Store, tid, user, at| {
        store
            .answer_challenge(&answer(ChallengeRef::Transaction(tid), user, &code, at))
            .unwrap()
            .outcome
    };
    assert_eq!(
        refused(store, "nope", "alice", now),
        AnswerOutcome::Refused(Refusal::UnknownChallenge)
    );
    opened(
        store
            .open_challenge(&start("t1", "S1", "alice", now), &mac)
            .unwrap(),
    );
    assert_eq!(
        refused(store, "t1", "bob", now),
        AnswerOutcome::Refused(Refusal::OtherUser)
    );
    assert_eq!(
        refused(store, "t1", "alice", now),
        AnswerOutcome::Refused(Refusal::Used),
        "another user's try ends it"
    );
    opened(
        store
            .open_challenge(&start("t2", "S1", "alice", now), &mac)
            .unwrap(),
    );
    assert_eq!(
        refused(store, "t2", "alice", now + 5 * MINUTE),
        AnswerOutcome::Refused(Refusal::Expired)
    );
    // A locked token: its right code is not even compared.
    opened(
        store
            .open_challenge(&start("t3", "S1", "alice", now + 6 * MINUTE), &mac)
            .unwrap(),
    );
    let serials = vec!["S1".to_string()];
    for _ in 0..3 {
        store
            .claim_failures(&serials, now + 6 * MINUTE, &RULES)
            .unwrap();
    }
    // Claimed but not settled: the answer waits its turn, uncompared.
    let code = mac(1);
    let busy = store
        .answer_challenge(&answer(
            ChallengeRef::Transaction("t3"),
            "alice",
            &code,
            now + 6 * MINUTE + 1,
        ))
        .unwrap();
    assert_eq!(busy.outcome, AnswerOutcome::Refused(Refusal::Busy));
    for _ in 0..3 {
        store.settle_failures(&serials, now, 3).unwrap();
    }
    let locked = store
        .answer_challenge(&answer(
            ChallengeRef::Transaction("t3"),
            "alice",
            &code,
            now + 6 * MINUTE + 1,
        ))
        .unwrap();
    assert_eq!(
        locked.outcome,
        AnswerOutcome::Refused(Refusal::Unusable(Unusable::Locked))
    );
    // PIN + OTP with no open challenge.
    let none = store
        .answer_challenge(&answer(ChallengeRef::OpenOf("S1"), "alice", &code, now))
        .unwrap();
    assert_eq!(
        none.outcome,
        AnswerOutcome::Refused(Refusal::NoOpenChallenge)
    );
}

pub fn failure_claims_lock_at_max_and_the_lock_re_arms(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let serials = vec!["S1".to_string()];
    let now = 1_000_000;
    for period in 0..3 {
        let t = now + period * 11 * MINUTE;
        for i in 0..3 {
            let claim = store.claim_failures(&serials, t + i, &RULES).unwrap()[0];
            assert_eq!(
                claim,
                FailureClaim::Claimed {
                    lock_cleared: period > 0 && i == 0
                },
                "period {period}, claim {i}"
            );
            let locked = store.settle_failures(&serials, t + i, 3).unwrap();
            assert_eq!(locked.is_empty(), i < 2, "the third failure locks");
        }
        assert_eq!(
            store.claim_failures(&serials, t + 5, &RULES).unwrap()[0],
            FailureClaim::Refused(Unusable::Locked),
            "period {period}"
        );
    }
}

pub fn claims_never_exceed_the_failures_left_and_refunds_free_them(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let serials = vec!["S1".to_string()];
    let now = 1_000_000;
    for _ in 0..3 {
        assert!(matches!(
            store.claim_failures(&serials, now, &RULES).unwrap()[0],
            FailureClaim::Claimed { .. }
        ));
    }
    assert_eq!(
        store.claim_failures(&serials, now, &RULES).unwrap()[0],
        FailureClaim::Busy,
        "three checks running, three failures left"
    );
    store.refund_failures(&serials).unwrap();
    assert!(matches!(
        store.claim_failures(&serials, now, &RULES).unwrap()[0],
        FailureClaim::Claimed { .. }
    ));
    // Claims whose node died count as failures once their time is up: the token locks.
    assert_eq!(
        store
            .claim_failures(&serials, now + 2 * MINUTE, &RULES)
            .unwrap()[0],
        FailureClaim::Refused(Unusable::Locked)
    );
    let token = store.token("S1").unwrap().unwrap();
    assert_eq!(
        (token.fail_count, token.locked_at),
        (3, Some(now + 2 * MINUTE))
    );
    // Not counting: usable, nothing added.
    store.unlock("S1").unwrap();
    let look = FailureRules {
        count: false,
        ..RULES
    };
    assert_eq!(
        store.claim_failures(&serials, now, &look).unwrap()[0],
        FailureClaim::Usable {
            lock_cleared: false
        }
    );
    assert_eq!(store.token("S1").unwrap().unwrap().fail_count, 0);
    store.set_disabled("S1", true).unwrap();
    assert_eq!(
        store.claim_failures(&serials, now, &RULES).unwrap()[0],
        FailureClaim::Refused(Unusable::Disabled)
    );
    assert_eq!(
        store
            .claim_failures(&["nope".to_string()], now, &RULES)
            .unwrap()[0],
        FailureClaim::Missing
    );
}

pub fn a_held_claim_is_not_counted_twice(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let serials = vec!["S1".to_string()];
    let now = 1_000_000;
    opened(
        store
            .open_challenge(&start("t1", "S1", "alice", now), &mac)
            .unwrap(),
    );
    store.claim_failures(&serials, now, &RULES).unwrap();
    let wrong = b"nope".to_vec();
    let held = AnswerClaim {
        claim_held: true,
        ..answer(ChallengeRef::OpenOf("S1"), "alice", &wrong, now)
    };
    let outcome = store.answer_challenge(&held).unwrap().outcome;
    assert!(
        matches!(outcome, AnswerOutcome::Wrong { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        store.token("S1").unwrap().unwrap().fail_count,
        1,
        "one failure, not two"
    );
}

pub fn pin_changes_disabling_and_deleting_end_the_open_challenge(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    let now = 1_000_000;
    let code = mac(0);
    let check = |store: &dyn Store, tid| {
        store
            .answer_challenge(&answer(
                ChallengeRef::Transaction(tid),
                "alice",
                &code,
                now + 1,
            ))
            .unwrap()
            .outcome
    };
    opened(
        store
            .open_challenge(&start("t1", "S1", "alice", now), &mac)
            .unwrap(),
    );
    store.set_pin_hash("S1", "new").unwrap();
    assert_eq!(check(store, "t1"), AnswerOutcome::Refused(Refusal::Used));
    opened(
        store
            .open_challenge(&start("t2", "S1", "alice", now), &mac)
            .unwrap(),
    );
    store.set_disabled("S1", true).unwrap();
    assert_eq!(check(store, "t2"), AnswerOutcome::Refused(Refusal::Used));
    store.set_disabled("S1", false).unwrap();
    opened(
        store
            .open_challenge(&start("t3", "S1", "alice", now), &mac)
            .unwrap(),
    );
    store.delete_token("S1").unwrap();
    assert_eq!(
        check(store, "t3"),
        AnswerOutcome::Refused(Refusal::UnknownChallenge)
    );
    enroll(store, "alice", "S2", "+491701234567");
    opened(
        store
            .open_challenge(&start("t4", "S2", "alice", now), &mac)
            .unwrap(),
    );
    store.delete_user("alice").unwrap();
    assert_eq!(
        check(store, "t4"),
        AnswerOutcome::Refused(Refusal::UnknownChallenge)
    );
}

pub fn otp_lengths_are_the_distinct_lengths_of_all_tokens(store: &dyn Store) {
    assert!(store.otp_lengths().unwrap().is_empty());
    for (serial, length) in [("A", 8), ("B", 6), ("C", 8), ("D", 10)] {
        enroll(store, "alice", serial, "+491701234567");
        let mut token = store.token(serial).unwrap().unwrap();
        store.delete_token(serial).unwrap();
        token.otp_length = length;
        store.add_token(&token).unwrap();
    }
    assert_eq!(store.otp_lengths().unwrap(), vec![6, 8, 10]);
}

/// Users, tokens, attributes, audit rows and breaker states come back as written.
pub fn rows_come_back_as_written(store: &dyn Store) {
    use super::{AuditRow, GatewayStateRow, StoreError};
    store
        .add_user(&UserRow {
            name: "nobody-tokens".into(),
            phone: "+491700000000".into(),
            created: 7,
            group: Some("staff".into()),
        })
        .unwrap();
    let (user, tokens) = store.login_view("nobody-tokens").unwrap().unwrap();
    assert_eq!((user.group.as_deref(), tokens.len()), (Some("staff"), 0));
    assert!(store.login_view("ghost").unwrap().is_none());
    enroll(store, "alice", "S2", "+491701234567");
    enroll(store, "alice", "S1", "+491701234567");
    let (_, tokens) = store.login_view("alice").unwrap().unwrap();
    let serials: Vec<&str> = tokens.iter().map(|t| t.serial.as_str()).collect();
    assert_eq!(serials, ["S1", "S2"], "ordered by serial");
    assert_eq!(tokens[0], store.token("S1").unwrap().unwrap());
    assert_eq!(tokens[0].sealed_seed, vec![1, 2, 3]);
    assert_eq!(store.tokens(None).unwrap().len(), 2);
    assert!(store.tokens(Some("nobody-tokens")).unwrap().is_empty());
    assert!(matches!(
        store.add_user(&user),
        Err(StoreError::Conflict(_))
    ));
    let orphan = TokenRow {
        user: "ghost".into(),
        serial: "S9".into(),
        ..tokens[0].clone()
    };
    assert!(matches!(
        store.add_token(&orphan),
        Err(StoreError::Conflict(_))
    ));
    let lines = vec!["Filter-Id=a".to_string(), "Class=0x01".to_string()];
    assert!(store.set_user_attributes("alice", &lines).unwrap());
    assert_eq!(store.user_attributes("alice").unwrap(), lines);
    assert!(store.set_user_attributes("alice", &lines[1..]).unwrap());
    assert_eq!(store.user_attributes("alice").unwrap(), &lines[1..]);
    assert!(!store.set_user_attributes("ghost", &lines).unwrap());
    assert!(store.unlock("S1").unwrap() && !store.unlock("S9").unwrap());
    assert!(store.delete_token("S2").unwrap() && !store.delete_token("S2").unwrap());
    let row = |time: i64, outcome: &str, station: Option<&str>| AuditRow {
        time,
        client: "vpn".into(),
        calling_station_id: station.map(Into::into),
        user: "alice".into(),
        serial: Some("S1".into()),
        outcome: outcome.into(),
        reason: "r".into(),
        duration_ms: 3,
        attributes: vec!["User-Name=alice".into()],
        ..AuditRow::default()
    };
    store
        .append_audit(&row(100, "reject", Some("10.0.0.1")))
        .unwrap();
    store
        .append_audit(&row(200, "accept", Some("10.0.0.2")))
        .unwrap();
    let rows = store.audit(Some("alice"), 10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        row(200, "accept", Some("10.0.0.2")),
        "newest first"
    );
    assert!(store.audit(Some("bob"), 10).unwrap().is_empty());
    assert!(
        store
            .accepted_before("alice", "vpn", Some("10.0.0.2"))
            .unwrap()
    );
    assert!(
        !store
            .accepted_before("alice", "vpn", Some("10.0.0.1"))
            .unwrap()
    );
    assert!(!store.accepted_before("alice", "vpn", None).unwrap());
    assert_eq!(store.purge_audit(150).unwrap(), 1);
    assert_eq!(store.audit(None, 10).unwrap().len(), 1);
    let state = |gateway: &str| GatewayStateRow {
        node: None,
        gateway: gateway.into(),
        state: "open".into(),
        failures: 4,
        last_error: Some("timeout".into()),
        open_until: Some(9),
        updated: 8,
    };
    store
        .save_gateway_states(&[state("b"), state("a")])
        .unwrap();
    store
        .save_gateway_states(&[state("c"), state("a")])
        .unwrap();
    // A networked store names the node that recorded each row; this one is the only one.
    let recorded: Vec<GatewayStateRow> = store
        .gateway_states()
        .unwrap()
        .into_iter()
        .map(|row| GatewayStateRow { node: None, ..row })
        .collect();
    assert_eq!(recorded, vec![state("a"), state("c")]);
    assert!(store.delete_user("alice").unwrap() && !store.delete_user("alice").unwrap());
    assert!(
        store.token("S1").unwrap().is_none() && store.user_attributes("alice").unwrap().is_empty()
    );
}

/// Sends `tries` wrong answers to challenge `tid` of alice; returns how many were compared.
pub fn wrong_answers(store: &dyn Store, tid: &str, tries: usize) -> usize {
    let wrong = b"wrong".to_vec();
    (0..tries)
        .filter(|_| {
            let claim = answer(ChallengeRef::Transaction(tid), "alice", &wrong, 2_000);
            matches!(
                store.answer_challenge(&claim).unwrap().outcome,
                AnswerOutcome::Wrong { .. }
            )
        })
        .count()
}

/// `begin_login` is `otp_lengths`, `login_view` (read before the claims) and
/// `claim_failures` in one.
pub fn begin_login_reads_the_view_and_claims_in_one(store: &dyn Store) {
    enroll(store, "alice", "S2", "+491701234567");
    enroll(store, "alice", "S1", "+491701234567");
    let begun = store.begin_login("alice", 1_000, &RULES).unwrap();
    assert_eq!(begun.otp_lengths, vec![6]);
    let (user, tokens) = begun.view.expect("alice");
    assert_eq!(user.name, "alice");
    let serials: Vec<&str> = tokens.iter().map(|t| t.serial.as_str()).collect();
    assert_eq!(serials, ["S1", "S2"]);
    assert!(
        tokens.iter().all(|t| t.fail_count == 0),
        "read before the claims"
    );
    assert_eq!(
        begun.claims,
        vec![
            FailureClaim::Claimed {
                lock_cleared: false
            };
            2
        ]
    );
    assert_eq!(store.token("S1").unwrap().unwrap().fail_count, 1);
    let unknown = store.begin_login("mallory", 1_000, &RULES).unwrap();
    assert_eq!(
        (unknown.otp_lengths, unknown.view, unknown.claims),
        (vec![6], None, vec![])
    );
    store
        .add_user(&UserRow {
            name: "bob".into(),
            phone: "+491701234568".into(),
            created: 1,
            group: None,
        })
        .unwrap();
    let tokenless = store.begin_login("bob", 1_000, &RULES).unwrap();
    let (user, tokens) = tokenless.view.expect("bob");
    assert_eq!((user.name.as_str(), tokens.len()), ("bob", 0));
    assert!(tokenless.claims.is_empty());
}

/// `start_challenge` refunds and opens as `refund_failures` + `open_challenge` do, whether
/// the counter the caller expected is still the token's or another request moved it: then
/// the MAC computed for the expected counter is never stored.
pub fn start_challenge_takes_the_expected_counter_or_the_one_there_is(store: &dyn Store) {
    enroll(store, "alice", "S1", "+491701234567");
    enroll(store, "bob", "S2", "+491701234568");
    let now = 1_000_000;
    let refund = vec!["S1".to_string()];
    // The expected counter: one round trip where the store can.
    store.claim_failures(&refund, now, &RULES).unwrap();
    let right = mac(0);
    let expected = Expected {
        counter: 0,
        code_mac: &right,
    };
    let (tid, counter) = opened(
        store
            .start_challenge(&start("t1", "S1", "alice", now), &refund, &expected, &mac)
            .unwrap(),
    );
    assert_eq!((tid.as_str(), counter), ("t1", 0));
    assert_eq!(
        store.token("S1").unwrap().unwrap().fail_count,
        0,
        "refunded"
    );
    let claim = answer(ChallengeRef::Transaction("t1"), "alice", &right, now + 1);
    assert!(matches!(
        store.answer_challenge(&claim).unwrap().outcome,
        AnswerOutcome::Accepted { .. }
    ));
    // Another request took counters 0 and 1 since the login read 0: the challenge gets the
    // counter there is, with its own MAC, not the one computed for 0.
    store
        .open_challenge(&start("t2", "S2", "bob", now), &mac)
        .unwrap();
    store.delete_challenge("t2").unwrap();
    store
        .open_challenge(&start("t3", "S2", "bob", now), &mac)
        .unwrap();
    store.delete_challenge("t3").unwrap();
    let refund = vec!["S2".to_string()];
    store.claim_failures(&refund, now, &RULES).unwrap();
    let stale = mac(0);
    let expected = Expected {
        counter: 0,
        code_mac: &stale,
    };
    let (tid, counter) = opened(
        store
            .start_challenge(&start("t4", "S2", "bob", now), &refund, &expected, &mac)
            .unwrap(),
    );
    assert_eq!((tid.as_str(), counter), ("t4", 2));
    assert_eq!(store.token("S2").unwrap().unwrap().counter, 3);
    assert_eq!(
        store.token("S2").unwrap().unwrap().fail_count,
        0,
        "refunded"
    );
    let claim = answer(ChallengeRef::Transaction("t4"), "bob", &stale, now + 1);
    assert!(matches!(
        store.answer_challenge(&claim).unwrap().outcome,
        AnswerOutcome::Wrong { .. }
    ));
    let fresh = mac(2);
    let claim = answer(ChallengeRef::Transaction("t4"), "bob", &fresh, now + 2);
    assert!(matches!(
        store.answer_challenge(&claim).unwrap().outcome,
        AnswerOutcome::Accepted { .. }
    ));
    // A challenge already open is answered again, the refund given back all the same.
    store.claim_failures(&refund, now, &RULES).unwrap();
    store
        .open_challenge(&start("t5", "S2", "bob", now), &mac)
        .unwrap();
    let next = mac(3);
    let expected = Expected {
        counter: 4,
        code_mac: &next,
    };
    match store
        .start_challenge(&start("t6", "S2", "bob", now + 1), &refund, &expected, &mac)
        .unwrap()
    {
        Started::Again(open, Resend::TooSoon) => assert_eq!(open.transaction_id, "t5"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.token("S2").unwrap().unwrap().fail_count,
        0,
        "refunded"
    );
}

/// Every check, each on a fresh store from `fresh`.
/// `store copy` moves users with groups and attributes, tokens with their counters and
/// locks, the challenges still open (not the expired) with their attempts, and the audit
/// trail in order; into an empty store only.
pub fn copy_moves_everything_into_an_empty_store(from: &dyn Store, to: &dyn Store) {
    let now = 100 * MINUTE;
    enroll(from, "alice", "S1", "+491701234567");
    enroll(from, "bob", "S2", "+491701234568");
    from.set_user_attributes("alice", &["Filter-Id=vpn".to_string()])
        .unwrap();
    // bob: locked (max_failures settled) and his challenge expired.
    opened(
        from.open_challenge(&start("old", "S2", "bob", now - 10 * MINUTE), &mac)
            .unwrap(),
    );
    for _ in 0..RULES.max_failures {
        from.claim_failures(&["S2".into()], now, &RULES).unwrap();
        from.settle_failures(&["S2".into()], now, RULES.max_failures)
            .unwrap();
    }
    // alice: an open challenge with one wrong attempt.
    opened(
        from.open_challenge(&start("t1", "S1", "alice", now), &mac)
            .unwrap(),
    );
    from.answer_challenge(&answer(
        ChallengeRef::Transaction("t1"),
        "alice",
        b"no",
        now,
    ))
    .unwrap();
    for (time, outcome) in [(1, "challenge"), (2, "reject"), (3, "accept")] {
        from.append_audit(&AuditRow {
            time,
            user: "alice".into(),
            outcome: outcome.into(),
            attributes: vec![format!("Class={time}")],
            ..AuditRow::default()
        })
        .unwrap();
    }

    let copied = super::copy(from, to, now).unwrap();
    assert_eq!(
        copied,
        super::Copied {
            users: 2,
            tokens: 2,
            challenges: 1,
            audit_rows: 3
        }
    );
    assert_eq!(to.users().unwrap(), from.users().unwrap());
    assert_eq!(to.tokens(None).unwrap(), from.tokens(None).unwrap());
    assert!(to.token("S2").unwrap().unwrap().locked_at.is_some());
    assert_eq!(to.user_attributes("alice").unwrap(), ["Filter-Id=vpn"]);
    assert_eq!(to.audit(None, 10).unwrap(), from.audit(None, 10).unwrap());
    // The open challenge kept its attempt: two are left of max_attempts 3, then it ends.
    assert_eq!(wrong_answers(to, "t1", 5), 2);
    let old = to
        .answer_challenge(&answer(
            ChallengeRef::Transaction("old"),
            "bob",
            &mac(0),
            now,
        ))
        .unwrap();
    assert!(
        !matches!(old.outcome, AnswerOutcome::Accepted { .. }),
        "{old:?}"
    );
    // On the source, the challenge is still open and answers.
    let accepted = from
        .answer_challenge(&answer(
            ChallengeRef::Transaction("t1"),
            "alice",
            &mac(0),
            now,
        ))
        .unwrap();
    assert!(matches!(accepted.outcome, AnswerOutcome::Accepted { .. }));
    assert!(matches!(
        super::copy(from, to, now),
        Err(super::StoreError::Conflict(_))
    ));
}

/// A token for `user` as `auto_enroll` makes it (no PIN, the user's phone), 6-digit codes.
pub fn first_token(user: &str, serial: &str) -> TokenRow {
    TokenRow {
        serial: serial.into(),
        user: user.into(),
        phone: None,
        pin_hash: String::new(),
        sealed_seed: vec![1],
        counter: 0,
        otp_length: 6,
        fail_count: 0,
        locked_at: None,
        disabled: false,
        gateway: None,
        created: 1,
    }
}

pub fn dave() -> UserRow {
    UserRow {
        name: "dave".into(),
        phone: "+491701234569".into(),
        created: 1,
        group: None,
    }
}

/// `enroll_first` makes the user and a token once; a second call adds nothing, and a user
/// with a token of their own gets no other.
pub fn enroll_first_makes_one_token(store: &dyn Store) {
    assert!(
        store
            .enroll_first(&dave(), &first_token("dave", "D1"))
            .unwrap()
    );
    assert!(
        !store
            .enroll_first(&dave(), &first_token("dave", "D2"))
            .unwrap()
    );
    let serials: Vec<String> = store
        .tokens(Some("dave"))
        .unwrap()
        .into_iter()
        .map(|t| t.serial)
        .collect();
    assert_eq!(serials, ["D1"]);
    enroll(store, "erin", "E1", "+491701234560");
    let erin = store.user("erin").unwrap().unwrap();
    assert!(
        !store
            .enroll_first(&erin, &first_token("erin", "E2"))
            .unwrap()
    );
    assert_eq!(store.tokens(Some("erin")).unwrap().len(), 1);
}

/// `begin_logins`, `answer_challenges` and `start_challenges` decide each member as the
/// single calls would, one after the other: `batched` takes the batches, `single` the same
/// calls one by one, and both end with the same results, tokens and challenges. The batches
/// repeat users, transaction ids and tokens (by transaction id and by serial), and mix in
/// the unknown.
pub fn batches_decide_as_calls_one_after_another(batched: &dyn Store, single: &dyn Store) {
    for store in [batched, single] {
        enroll(store, "alice", "S1", "+491701234567");
        enroll(store, "alice", "S2", "+491701234567");
        enroll(store, "bob", "B1", "+491701234568");
        store
            .add_user(&UserRow {
                name: "carol".into(),
                phone: "+491701234569".into(),
                created: 1,
                group: None,
            })
            .unwrap();
    }
    let logins: Vec<LoginAsk<'_>> = [
        "alice", "bob", "alice", "mallory", "carol", "bob", "bob", "bob", "alice",
    ]
    .into_iter()
    .enumerate()
    .map(|(n, user)| LoginAsk {
        user,
        now: 1_000 + n as i64,
        rules: RULES,
    })
    .collect();
    let begun = same_as_one_by_one(&logins, batched.begin_logins(&logins), |a| {
        single.begin_login(a.user, a.now, &a.rules)
    });
    assert_eq!(
        begun[7].as_ref().unwrap().claims,
        vec![FailureClaim::Busy],
        "bob's fourth claim finds every failure claimed"
    );
    let mut tids = Vec::new();
    for store in [batched, single] {
        let claimed: Vec<String> = ["S1", "S2", "B1"]
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.to_string(), 3))
            .collect();
        store.refund_failures(&claimed).unwrap();
        let (ta, alice_counter) = opened(
            store
                .open_challenge(&start("ta", "S1", "alice", 2_000), &mac)
                .unwrap(),
        );
        let (tb, bob_counter) = opened(
            store
                .open_challenge(&start("tb", "B1", "bob", 2_000), &mac)
                .unwrap(),
        );
        tids = vec![(ta, alice_counter), (tb, bob_counter)];
    }
    let (right_a, right_b, wrong) = (mac(tids[0].1), mac(tids[1].1), b"wrong".to_vec());
    let answers = [
        answer(ChallengeRef::Transaction("ta"), "alice", &wrong, 2_100),
        answer(ChallengeRef::Transaction("tb"), "bob", &wrong, 2_100),
        answer(ChallengeRef::OpenOf("S1"), "alice", &wrong, 2_100),
        answer(ChallengeRef::Transaction("ta"), "alice", &right_a, 2_100),
        answer(ChallengeRef::Transaction("nope"), "alice", &right_a, 2_100),
        answer(ChallengeRef::OpenOf("S2"), "alice", &right_a, 2_100),
        answer(ChallengeRef::Transaction("tb"), "bob", &right_b, 2_100),
        answer(ChallengeRef::Transaction("ta"), "alice", &right_a, 2_100),
        answer(ChallengeRef::Transaction("tb"), "alice", &right_b, 2_100),
    ];
    let answered = same_as_one_by_one(&answers, batched.answer_challenges(&answers), |a| {
        single.answer_challenge(a)
    });
    let outcomes: Vec<&AnswerOutcome> = answered
        .iter()
        .map(|a| &a.as_ref().unwrap().outcome)
        .collect();
    assert!(matches!(
        outcomes[2],
        AnswerOutcome::Wrong { attempts: 2, .. }
    ));
    assert!(matches!(outcomes[3], AnswerOutcome::Accepted { .. }));
    assert!(matches!(outcomes[6], AnswerOutcome::Accepted { .. }));
    assert_eq!(outcomes[7], &AnswerOutcome::Refused(Refusal::Used));
    let state = |store: &dyn Store| -> (Vec<TokenRow>, Vec<ChallengeRow>) {
        (
            store.tokens(None).unwrap(),
            store.open_challenge_rows(0).unwrap(),
        )
    };
    assert_eq!(state(batched), state(single));

    // Starts: two for one token (the second finds the first's challenge), one that gives back
    // another token's claim, one whose counter moved since its login read it, one for a token
    // that is gone.
    for store in [batched, single] {
        store
            .claim_failures(&["S2".to_string()], 3_000, &RULES)
            .unwrap();
    }
    let counter = |serial: &str| batched.token(serial).unwrap().unwrap().counter;
    let (s1, b1) = (counter("S1"), counter("B1"));
    let (mac_s1, mac_b1, refund) = (mac(s1), mac(b1 + 7), vec!["S2".to_string()]);
    let ask = |start: ChallengeStart<'static>, refund, counter, code_mac| StartAsk {
        start,
        refund,
        expected: Expected { counter, code_mac },
        code_mac: &mac,
    };
    let asks = [
        ask(start("n1", "S1", "alice", 3_000), &refund, s1, &mac_s1),
        ask(start("n2", "S1", "alice", 3_000), &[], s1, &mac_s1),
        ask(start("n3", "B1", "bob", 3_000), &[], b1 + 7, &mac_b1),
        ask(start("n4", "GONE", "alice", 3_000), &[], 0, &mac_s1),
    ];
    let started = same_as_one_by_one(&asks, batched.start_challenges(&asks), |a| {
        single.start_challenge(&a.start, a.refund, &a.expected, a.code_mac)
    });
    assert!(matches!(started[0], Ok(Started::New(_))));
    assert!(matches!(started[1], Ok(Started::Again(_, Resend::TooSoon))));
    assert!(
        matches!(started[2], Ok(Started::New(_))),
        "{:?}",
        started[2]
    );
    assert!(started[3].is_err());
    assert_eq!(state(batched), state(single));
    assert_eq!(
        batched.token("S2").unwrap().unwrap().fail_count,
        0,
        "refunded"
    );
}

/// A batch's results, asserted equal to those of `single` on each ask one after the other
/// (errors by their text).
fn same_as_one_by_one<A, T: PartialEq + std::fmt::Debug>(
    asks: &[A],
    batched: Vec<super::StoreResult<T>>,
    single: impl Fn(&A) -> super::StoreResult<T>,
) -> Vec<Result<T, String>> {
    let shown = |r: super::StoreResult<T>| r.map_err(|e| e.to_string());
    let batched: Vec<_> = batched.into_iter().map(shown).collect();
    let one_by_one: Vec<_> = asks.iter().map(|a| shown(single(a))).collect();
    assert_eq!(batched, one_by_one);
    batched
}

pub fn run_all(fresh: &dyn Fn() -> Box<dyn Store>) {
    a_token_has_one_open_challenge_and_resends_wait(fresh().as_ref());
    sending_caps_stop_sms_per_token_phone_client_and_globally(fresh().as_ref());
    no_resend_interval_means_no_wait_even_for_an_earlier_clock(fresh().as_ref());
    an_answer_is_compared_at_most_max_attempts_times_and_accepted_once(fresh().as_ref());
    answers_are_refused_for_other_users_expired_unknown_and_locked(fresh().as_ref());
    failure_claims_lock_at_max_and_the_lock_re_arms(fresh().as_ref());
    claims_never_exceed_the_failures_left_and_refunds_free_them(fresh().as_ref());
    a_held_claim_is_not_counted_twice(fresh().as_ref());
    pin_changes_disabling_and_deleting_end_the_open_challenge(fresh().as_ref());
    otp_lengths_are_the_distinct_lengths_of_all_tokens(fresh().as_ref());
    rows_come_back_as_written(fresh().as_ref());
    begin_login_reads_the_view_and_claims_in_one(fresh().as_ref());
    start_challenge_takes_the_expected_counter_or_the_one_there_is(fresh().as_ref());
    copy_moves_everything_into_an_empty_store(fresh().as_ref(), fresh().as_ref());
    enroll_first_makes_one_token(fresh().as_ref());
    batches_decide_as_calls_one_after_another(fresh().as_ref(), fresh().as_ref());
}
