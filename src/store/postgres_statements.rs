//! The login path's statements on PostgreSQL: each bound decided by one SQL statement, so one
//! round trip and one implicit transaction, with no plpgsql in between. A profile of the
//! plpgsql versions (`postgres_bounds`, migrations 1 and 2) showed PostgreSQL's CPU per
//! login going to the dozens of statements the functions ran one by one (each planned,
//! started and ended, its expressions set up again in every transaction), not to the work
//! they did.
//!
//! Why one statement is still atomic under READ COMMITTED: every row a decision reads is
//! locked by the statement first (`FOR UPDATE` in a `MATERIALIZED` CTE), and a locked row
//! is re-read at its newest version (PostgreSQL's EvalPlanQual), so the decision is made on
//! what no other transaction can change before this one commits; the `UPDATE`s then write
//! the values decided from it. Rows are locked in the order the other statements use: a
//! token before its challenges, tokens in serial order.
//!
//! What cannot be plain SQL: `otpgate_start_challenge` counts SMS sends and looks for the
//! open challenge *after* waiting for locks, and a statement's snapshot is taken before it
//! waits; that function stays plpgsql, whose every statement sees what committed before it
//! started (`otpgate_start_challenges` runs it for each member of a batch).
//!
//! `BEGIN_LOGINS` and `ANSWERS` take a batch (`postgres_login`): arrays of their members,
//! one row per member (tagged with its position), the rows they lock taken together in the
//! same order.

/// The failure claim (DESIGN section 8; `sqlite_bounds::claim_failure`, the reference) on
/// the token row `h`, locked and read at its newest version, with the rules in `p` (`now`,
/// `max`, `clear_after`, `count`, `ttl`). Gives `k.claim` (missing, disabled, locked,
/// claimed, usable, busy; `+cleared` when an expired lock was cleared on the way) and the
/// row's new values `n.fail`, `n.pending`, `n.until`, `n.locked`, to be written when
/// `n.writes` (a disabled or still locked token is left as it is).
macro_rules! failure_claim {
    () => {
        "
 CROSS JOIN LATERAL (SELECT
     CASE WHEN h.pending > 0 AND p.now > h.pending_until THEN 0 ELSE h.pending END AS p0,
     h.locked_at IS NOT NULL AND p.clear_after > 0 AND p.now - h.locked_at >= p.clear_after
         AS cleared OFFSET 0) s
 CROSS JOIN LATERAL (SELECT
     -- The lock period is over: the count starts again, so the lock re-arms.
     CASE WHEN s.cleared THEN s.p0 ELSE h.fail_count END AS f0,
     h.locked_at IS NOT NULL AND NOT s.cleared AS still_locked OFFSET 0) f
 CROSS JOIN LATERAL (SELECT CASE
     WHEN h.serial IS NULL THEN 'missing'
     WHEN h.disabled THEN 'disabled'
     WHEN f.still_locked THEN 'locked'
     WHEN f.f0 < p.max THEN CASE WHEN p.count THEN 'claimed' ELSE 'usable' END
         || CASE WHEN s.cleared THEN '+cleared' ELSE '' END
     WHEN s.p0 > 0 THEN 'busy'
     -- Every failure of the period is settled: the token locks now.
     ELSE 'locked' END AS claim OFFSET 0) k
 CROSS JOIN LATERAL (SELECT
     h.serial IS NOT NULL AND NOT h.disabled AND NOT f.still_locked AS writes,
     f.f0 + (k.claim LIKE 'claimed%')::int AS fail,
     s.p0 + (k.claim LIKE 'claimed%')::int AS pending,
     CASE WHEN k.claim LIKE 'claimed%' THEN GREATEST(h.pending_until, p.now + p.ttl)
          ELSE h.pending_until END AS until,
     CASE WHEN k.claim = 'locked' THEN p.now END AS locked OFFSET 0) n
"
    };
}

/// Writes the claims decided in `d` (columns `serial`, `writes`, `fail`, `n_pending`,
/// `until`, `locked`, and the row as read: `fail_count`, `pending`, `pending_until`,
/// `locked_at`), skipping rows they leave as they were.
macro_rules! write_claims {
    () => {
        "
claims_written AS (
    UPDATE tokens t SET fail_count = d.fail, pending = d.n_pending, pending_until = d.until,
                        locked_at = d.locked
    FROM d
    WHERE t.serial = d.serial AND d.writes
      AND (d.fail, d.n_pending, d.until, d.locked)
          IS DISTINCT FROM (d.fail_count, d.pending, d.pending_until, d.locked_at)
)"
    };
}

/// The rules of a claim, as the columns of the relation `p` that `failure_claim!` reads
/// (`now`, `max`, `clear_after`, `count`, `ttl`), from the expressions given.
macro_rules! claim_rules {
    ($now:literal, $max:literal, $clear_after:literal, $count:literal, $ttl:literal) => {
        concat!(
            $now,
            "::bigint AS now, ",
            $max,
            "::bigint AS max, ",
            $clear_after,
            "::bigint AS clear_after, ",
            $count,
            "::boolean AS count, ",
            $ttl,
            "::bigint AS ttl"
        )
    };
}

/// The token columns of `d`, as `token_at` reads them.
macro_rules! token_columns {
    ($of:literal) => {
        concat!(
            $of,
            ".serial, ",
            $of,
            ".user_name, ",
            $of,
            ".phone, ",
            $of,
            ".pin_hash, ",
            $of,
            ".sealed_seed, ",
            $of,
            ".counter, ",
            $of,
            ".otp_length, ",
            $of,
            ".fail_count, ",
            $of,
            ".locked_at, ",
            $of,
            ".disabled, ",
            $of,
            ".gateway, ",
            $of,
            ".created"
        )
    };
}

/// `locked_at` after a claimed check failed (`sqlite_bounds::settle_failure`): the token
/// locks once its settled failures, `fail` less the claims still `pending` after this one,
/// reach `max`.
macro_rules! settled_lock {
    ($fail:literal, $pending:literal, $locked:literal, $now:literal, $max:literal) => {
        concat!(
            "CASE WHEN ",
            $locked,
            " IS NULL AND ",
            $fail,
            " - ",
            $pending,
            " >= ",
            $max,
            " THEN ",
            $now,
            " ELSE ",
            $locked,
            " END"
        )
    };
}

/// The distinct OTP lengths, as the trigger on tokens keeps them (migration 4).
macro_rules! otp_lengths {
    () => {
        "coalesce((SELECT lengths FROM otpgate_otp_lengths WHERE one), otpgate_otp_lengths_of_tokens())"
    };
}

/// `Store::otp_lengths`.
pub(super) const OTP_LENGTHS: &str = concat!("/* otpgate otp_lengths */ SELECT ", otp_lengths!());

/// `Store::begin_logins`: $1 users (distinct), $2 their nows, $3 max_failures, $4
/// clear_after, $5 count, $6 claim ttl. Rows, in the order of $1 and each user's tokens by
/// serial: the distinct OTP lengths (column 0, on every row), the member's position in $1
/// (1), the user (2-5; NULL when there is none), each of their tokens as read before its
/// claim (6-17; one row of NULLs when they have none) and its claim (18). The users' tokens
/// are locked together in serial order, as every statement locks tokens.
pub(super) const BEGIN_LOGINS: &str = concat!(
    "/* otpgate begin_logins */ WITH w AS (
    SELECT * FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS w(name, now, at)
),
h AS MATERIALIZED (
    SELECT tk.* FROM tokens tk WHERE tk.user_name = ANY ($1::text[]) ORDER BY tk.serial FOR UPDATE
),
d AS MATERIALIZED (
    SELECT h.*, k.claim, n.writes, n.fail, n.pending AS n_pending, n.until, n.locked
    FROM h JOIN (SELECT w.name, ",
    claim_rules!("w.now", "$3", "$4", "$5", "$6"),
    " FROM w) p ON p.name = h.user_name",
    failure_claim!(),
    "),",
    write_claims!(),
    "
SELECT ",
    otp_lengths!(),
    ",
       w.at, u.name, u.phone, u.created, u.user_group, ",
    token_columns!("d"),
    ", d.claim
FROM w
LEFT JOIN users u ON u.name = w.name
LEFT JOIN d ON d.user_name = u.name
ORDER BY w.at, d.serial"
);

/// `Store::claim_failures` on distinct serials: $1 serials, then the rules as in
/// `BEGIN_LOGINS`. One row: the claims, in the order of $1.
pub(super) const CLAIM_FAILURES: &str = concat!(
    "/* otpgate claim_failures */ WITH ",
    "p AS (SELECT ",
    claim_rules!("$2", "$3", "$4", "$5", "$6"),
    "),
h AS MATERIALIZED (
    SELECT tk.* FROM tokens tk WHERE tk.serial = ANY ($1::text[]) ORDER BY tk.serial FOR UPDATE
),
d AS MATERIALIZED (
    SELECT h.serial, h.fail_count, h.pending, h.pending_until, h.locked_at,
           k.claim, n.writes, n.fail, n.pending AS n_pending, n.until, n.locked
    FROM h CROSS JOIN p",
    failure_claim!(),
    "),",
    write_claims!(),
    "
SELECT coalesce(array_agg(coalesce(d.claim, 'missing') ORDER BY w.at), '{}')
FROM unnest($1::text[]) WITH ORDINALITY AS w(serial, at)
LEFT JOIN d ON d.serial = w.serial"
);

/// `Store::settle_failures`: $1 serials (one failure each time a serial is named), $2 now,
/// $3 max_failures. One row: the serials this call locked.
pub(super) const SETTLE_FAILURES: &str = concat!(
    "/* otpgate settle_failures */ WITH settled AS (SELECT serial, count(*) AS n FROM unnest($1::text[]) AS serial GROUP BY serial),
held AS MATERIALIZED (
    SELECT tk.serial FROM tokens tk WHERE tk.serial = ANY ($1::text[]) ORDER BY tk.serial FOR UPDATE
),
written AS (
    UPDATE tokens t SET pending = GREATEST(t.pending - s.n, 0),
        -- Locks on the settled failures only: claims of checks still running may be refunded.
        locked_at = ",
    settled_lock!(
        "t.fail_count",
        "GREATEST(t.pending - s.n, 0)",
        "t.locked_at",
        "$2::bigint",
        "$3::bigint"
    ),
    "
    FROM settled s JOIN held ON held.serial = s.serial
    WHERE t.serial = s.serial
    RETURNING t.serial, t.locked_at IS NOT DISTINCT FROM $2::bigint AS locked_now
)
SELECT coalesce(array_agg(serial ORDER BY serial) FILTER (WHERE locked_now), '{}') FROM written"
);

/// `Store::answer_challenges` (`sqlite_bounds::answer_challenge`, the reference), for the
/// members of $1-$6: $1 the transaction id for State + OTP, else $2 the serial whose open
/// challenge is answered; $3 user, $4 the code's MAC, $5 now, $6 whether the request holds a
/// failure claim from its PIN check already; then $7 max_attempts, $8 max_failures, $9
/// clear_after, $10 claim ttl. One member per token is answered: the others of the same
/// token get `retry`, to be answered by a later statement that sees this one's writes. A
/// row per member, in order: its position (0); outcome (accepted, wrong, retry, or the
/// refusal: unknown_challenge, no_open_challenge, other_user, used, expired,
/// no_attempts_left, token_gone, disabled, locked, busy), attempts, ended, locked_now,
/// expires, serial, lock_cleared, whether the owner was read, the user (9-12) and token
/// (13-24) as read before the answer, the user's attributes (25).
pub(super) const ANSWERS: &str = concat!(
    "/* otpgate answers */ WITH m AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[],
                         $6::boolean[])
        WITH ORDINALITY AS m(tid, given, user_name, mac, now, held, at)
),
-- Each member's token: its challenge's, or the one named.
target AS MATERIALIZED (
    SELECT m.*, CASE WHEN m.tid IS NULL THEN m.given ELSE ch.serial END AS serial
    FROM m LEFT JOIN challenges ch ON ch.transaction_id = m.tid
),
going AS MATERIALIZED (
    SELECT t.* FROM (
        SELECT target.*, row_number() OVER (PARTITION BY target.serial ORDER BY target.at) AS nth
        FROM target
    ) t
    WHERE t.serial IS NULL OR t.nth = 1
),
-- The tokens first, in serial order, as every statement that changes a challenge locks
-- its token first.
h AS MATERIALIZED (
    SELECT tk.* FROM tokens tk
    WHERE tk.serial = ANY (ARRAY(SELECT g.serial FROM going g WHERE g.serial IS NOT NULL))
    ORDER BY tk.serial FOR UPDATE
),
-- `(SELECT count(*) FROM h) >= 0` holds always; it makes the tokens' locks come before
-- the challenges' (an init plan, run before the scan).
by_id AS MATERIALIZED (
    SELECT ch.transaction_id, ch.serial, ch.user_name, ch.expires, ch.attempts, ch.used,
           ch.otp_mac
    FROM challenges ch
    WHERE ch.transaction_id = ANY (ARRAY(SELECT g.tid FROM going g WHERE g.tid IS NOT NULL))
      AND (SELECT count(*) FROM h) >= 0
    FOR UPDATE
),
open_of AS MATERIALIZED (
    SELECT ch.transaction_id, ch.serial, ch.user_name, ch.expires, ch.attempts, ch.used,
           ch.otp_mac
    FROM challenges ch
    WHERE ch.serial = ANY (ARRAY(SELECT g.given FROM going g WHERE g.tid IS NULL))
      AND NOT ch.used AND (SELECT count(*) FROM h) >= 0
    FOR UPDATE
),
c AS (
    SELECT g.at AS c_at, b.* FROM going g JOIN by_id b ON b.transaction_id = g.tid
    UNION ALL
    SELECT g.at, o.* FROM going g JOIN open_of o ON o.serial = g.given WHERE g.tid IS NULL
),
decided AS MATERIALIZED (
    SELECT g.at, g.held, p.now AS p_now, c.transaction_id, c.serial AS challenge_serial,
           c.expires AS challenge_expires, c.attempts + 1 AS attempts_now,
           c.user_name AS owner_name,
           u.name AS u_name, u.phone AS u_phone, u.created AS u_created, u.user_group,
           h.*, k.claim, n.writes, n.fail, n.pending AS n_pending, n.until, n.locked,
           CASE
               WHEN c.transaction_id IS NULL THEN
                   CASE WHEN g.tid IS NOT NULL THEN 'unknown_challenge'
                        ELSE 'no_open_challenge' END
               WHEN c.user_name <> g.user_name THEN 'other_user'
               WHEN c.used THEN 'used'
               WHEN c.expires <= p.now THEN 'expired'
               WHEN c.attempts >= $7::bigint THEN 'no_attempts_left'
               WHEN u.name IS NULL OR h.serial IS NULL THEN 'token_gone'
               WHEN g.held AND h.disabled THEN 'disabled'
               WHEN g.held THEN 'compare'
               -- Not compared, and the challenge stays: the answer may be sent again.
               WHEN k.claim = 'busy' THEN 'busy'
               WHEN k.claim IN ('disabled', 'locked') THEN k.claim
               WHEN k.claim NOT LIKE 'claimed%' THEN 'token_gone'
               ELSE 'compare'
           END AS step,
           -- Comparing digests of the MACs: the time an early mismatch saves tells nothing
           -- about the stored MAC's bytes.
           c.otp_mac IS NOT NULL AND g.mac IS NOT NULL
               AND length(c.otp_mac) = length(g.mac) AND sha256(c.otp_mac) = sha256(g.mac)
               AS right_code
    FROM going g
    CROSS JOIN LATERAL (SELECT ",
    claim_rules!("g.now", "$8", "$9", "true", "$10"),
    ") p
    LEFT JOIN c ON c.c_at = g.at
    LEFT JOIN h ON h.serial = c.serial
    LEFT JOIN users u ON u.name = c.user_name",
    failure_claim!(),
    "),
ended AS MATERIALIZED (
    SELECT d.*, o.outcome, t.fail_now, t.pending_now, t.until_now, t.locked_at_now,
           w.locked_now,
           -- A wrong code ends the challenge once no attempt is left or the token locked.
           o.outcome = 'wrong' AND (d.attempts_now >= $7::bigint OR w.locked_now) AS ended_now
    FROM decided d
    CROSS JOIN LATERAL (SELECT d.p_now AS now, $8::bigint AS max) p
    CROSS JOIN LATERAL (SELECT CASE WHEN d.step <> 'compare' THEN d.step
                                    WHEN d.right_code THEN 'accepted' ELSE 'wrong' END AS outcome OFFSET 0) o
    -- The token after the claim this answer took (none when the request holds one).
    CROSS JOIN LATERAL (SELECT NOT d.held AND d.step IN ('compare', 'busy', 'locked')
                               AND coalesce(d.writes, false) AS applies OFFSET 0) ca
    CROSS JOIN LATERAL (SELECT
        CASE WHEN ca.applies THEN d.fail ELSE d.fail_count END AS fail,
        CASE WHEN ca.applies THEN d.n_pending ELSE d.pending END AS pending,
        CASE WHEN ca.applies THEN d.until ELSE d.pending_until END AS until,
        CASE WHEN ca.applies THEN d.locked ELSE d.locked_at END AS locked OFFSET 0) a
    CROSS JOIN LATERAL (SELECT GREATEST(a.pending - 1, 0) AS pending OFFSET 0) rest
    CROSS JOIN LATERAL (SELECT
        -- A login resets the count; other checks still running keep their claims.
        CASE o.outcome WHEN 'accepted' THEN rest.pending ELSE a.fail END AS fail_now,
        CASE WHEN o.outcome IN ('accepted', 'wrong') THEN rest.pending ELSE a.pending END
            AS pending_now,
        a.until AS until_now,
        CASE o.outcome WHEN 'accepted' THEN NULL
                       WHEN 'wrong' THEN ",
    settled_lock!("a.fail", "rest.pending", "a.locked", "p.now", "p.max"),
    "
                       ELSE a.locked END AS locked_at_now OFFSET 0) t
    CROSS JOIN LATERAL (SELECT o.outcome = 'wrong' AND t.locked_at_now IS NOT DISTINCT FROM p.now
                                   AS locked_now OFFSET 0) w
),
token_written AS (
    UPDATE tokens t SET fail_count = e.fail_now, pending = e.pending_now,
                        pending_until = e.until_now, locked_at = e.locked_at_now
    FROM ended e
    WHERE t.serial = e.serial
      AND (e.fail_now, e.pending_now, e.until_now, e.locked_at_now)
          IS DISTINCT FROM (e.fail_count, e.pending, e.pending_until, e.locked_at)
),
challenge_written AS (
    UPDATE challenges ch
    SET attempts = CASE WHEN e.outcome IN ('accepted', 'wrong') THEN e.attempts_now
                        ELSE ch.attempts END,
        used = e.outcome <> 'wrong' OR e.ended_now
    FROM ended e
    WHERE ch.transaction_id = e.transaction_id AND e.outcome NOT IN ('busy', 'used')
)
SELECT m.at, coalesce(e.outcome, 'retry'), e.attempts_now, e.ended_now, e.locked_now,
       e.challenge_expires, e.challenge_serial,
       NOT e.held AND e.step = 'compare' AND e.claim = 'claimed+cleared',
       e.step IN ('compare', 'busy', 'disabled', 'locked'),
       e.u_name, e.u_phone, e.u_created, e.user_group, ",
    token_columns!("e"),
    ",
       CASE WHEN e.outcome = 'accepted' THEN
           (SELECT coalesce(array_agg(a.attribute ORDER BY a.position), '{}')
            FROM user_attributes a WHERE a.user_name = e.owner_name)
       ELSE '{}' END
FROM m LEFT JOIN ended e ON e.at = m.at
ORDER BY m.at"
);
