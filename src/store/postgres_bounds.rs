//! The attack bounds on PostgreSQL (DESIGN section 8), as plpgsql functions that the
//! migrations create. Each bound is one call of one function, so one statement, one
//! implicit transaction and one round trip: the rows it decides on are locked
//! (`SELECT ... FOR UPDATE`) before they are read, so concurrent calls from any node decide
//! one after the other, with the same outcomes as SQLite's IMMEDIATE transactions
//! (`sqlite_bounds`, the reference).
//!
//! Lock order, everywhere: the token row first, then its challenge rows. An answer finds its
//! challenge's token without a lock, locks the token, then locks and re-reads the challenge.
//! SMS caps that span tokens (per phone, per client, global) are counted under a
//! transaction-level advisory lock, so that two sends for different tokens cannot both pass
//! the last place under a cap.

/// Schema steps; entry N brings the schema from version N to N + 1. Never edit a shipped
/// step: add one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    name       text PRIMARY KEY,
    phone      text NOT NULL,
    created    bigint NOT NULL,
    user_group text
);
CREATE TABLE user_attributes (
    user_name  text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    position   bigint NOT NULL,
    attribute  text NOT NULL,
    PRIMARY KEY (user_name, position)
);
CREATE TABLE tokens (
    serial        text PRIMARY KEY,
    user_name     text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    phone         text,
    pin_hash      text NOT NULL,
    sealed_seed   bytea NOT NULL,
    counter       bigint NOT NULL,
    otp_length    bigint NOT NULL,
    fail_count    bigint NOT NULL DEFAULT 0,
    locked_at     bigint,
    disabled      boolean NOT NULL DEFAULT false,
    gateway       text,
    created       bigint NOT NULL,
    pending       bigint NOT NULL DEFAULT 0,
    pending_until bigint NOT NULL DEFAULT 0
);
CREATE INDEX tokens_user ON tokens(user_name);
CREATE INDEX tokens_otp_length ON tokens(otp_length);
CREATE TABLE challenges (
    transaction_id text PRIMARY KEY,
    serial         text NOT NULL REFERENCES tokens(serial) ON DELETE CASCADE,
    user_name      text NOT NULL,
    client         text NOT NULL,
    counter        bigint NOT NULL,
    created        bigint NOT NULL,
    expires        bigint NOT NULL,
    attempts       bigint NOT NULL DEFAULT 0,
    sends          bigint NOT NULL DEFAULT 1,
    used           boolean NOT NULL DEFAULT false,
    otp_mac        bytea,
    last_sent      bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX challenges_one_open ON challenges(serial) WHERE NOT used;
CREATE INDEX challenges_expires ON challenges(expires);
CREATE INDEX challenges_user ON challenges(user_name);
CREATE TABLE sms_sends (
    id     bigserial PRIMARY KEY,
    time   bigint NOT NULL,
    serial text,
    phone  text NOT NULL,
    client text NOT NULL
);
CREATE INDEX sms_sends_time ON sms_sends(time);
CREATE INDEX sms_sends_serial ON sms_sends(serial, time);
CREATE INDEX sms_sends_phone ON sms_sends(phone, time);
CREATE INDEX sms_sends_client ON sms_sends(client, time);
CREATE TABLE audit (
    id                 bigserial PRIMARY KEY,
    time               bigint NOT NULL,
    client             text NOT NULL,
    nas_ip             text,
    nas_identifier     text,
    calling_station_id text,
    user_name          text NOT NULL,
    serial             text,
    outcome            text NOT NULL,
    reason             text NOT NULL,
    phone_masked       text,
    gateway            text,
    duration_ms        bigint NOT NULL,
    attributes         text,
    node               text NOT NULL
);
CREATE INDEX audit_user ON audit(user_name, id);
CREATE INDEX audit_accepted ON audit(user_name, outcome, calling_station_id);
CREATE TABLE gateway_state (
    node        text NOT NULL,
    gateway     text NOT NULL,
    state       text NOT NULL,
    failures    bigint NOT NULL,
    last_error  text,
    open_until  bigint,
    updated     bigint NOT NULL,
    PRIMARY KEY (node, gateway)
);
-- Facts about the deployment: the key fingerprint.
CREATE TABLE otpgate_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- One failure claim on a locked token row (sqlite_bounds::claim_failure).
CREATE FUNCTION otpgate_claim_failure(p_serial text, p_now bigint, p_max bigint,
        p_clear_after bigint, p_count boolean, p_ttl bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    v_fail bigint;
    v_pending bigint;
    v_until bigint;
    v_locked bigint;
    v_cleared boolean := false;
    v_claim text;
BEGIN
    SELECT disabled, locked_at, fail_count, pending, pending_until INTO t
        FROM tokens WHERE serial = p_serial FOR UPDATE;
    IF NOT FOUND THEN RETURN 'missing'; END IF;
    IF t.disabled THEN RETURN 'disabled'; END IF;
    v_fail := t.fail_count; v_pending := t.pending; v_until := t.pending_until;
    v_locked := t.locked_at;
    IF v_pending > 0 AND p_now > v_until THEN v_pending := 0; END IF;
    IF v_locked IS NOT NULL THEN
        IF NOT (p_clear_after > 0 AND p_now - v_locked >= p_clear_after) THEN
            RETURN 'locked';
        END IF;
        -- The lock period is over: the count starts again, so the lock re-arms.
        v_fail := v_pending; v_locked := NULL; v_cleared := true;
    END IF;
    IF v_fail < p_max THEN
        IF p_count THEN
            v_fail := v_fail + 1; v_pending := v_pending + 1;
            v_until := GREATEST(v_until, p_now + p_ttl);
            v_claim := 'claimed';
        ELSE
            v_claim := 'usable';
        END IF;
        IF v_cleared THEN v_claim := v_claim || '+cleared'; END IF;
    ELSIF v_pending > 0 THEN
        v_claim := 'busy';
    ELSE
        -- Every failure of the period is settled: the token locks now.
        v_locked := p_now;
        v_claim := 'locked';
    END IF;
    UPDATE tokens SET fail_count = v_fail, pending = v_pending, pending_until = v_until,
        locked_at = v_locked WHERE serial = p_serial;
    RETURN v_claim;
END $$;

CREATE FUNCTION otpgate_claim_failures(p_serials text[], p_now bigint, p_max bigint,
        p_clear_after bigint, p_count boolean, p_ttl bigint) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    s text;
    v_claims text[] := '{}';
BEGIN
    FOREACH s IN ARRAY p_serials LOOP
        v_claims := v_claims || otpgate_claim_failure(s, p_now, p_max, p_clear_after, p_count, p_ttl);
    END LOOP;
    RETURN v_claims;
END $$;

-- A claimed check failed (sqlite_bounds::settle_failure): true if this call locked it.
CREATE FUNCTION otpgate_settle_failure(p_serial text, p_now bigint, p_max bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_locked boolean;
BEGIN
    -- Locks on the settled failures only: claims of checks still running may be refunded.
    UPDATE tokens SET pending = GREATEST(pending - 1, 0),
        locked_at = CASE WHEN locked_at IS NULL AND fail_count - GREATEST(pending - 1, 0) >= p_max
                    THEN p_now ELSE locked_at END
        WHERE serial = p_serial
        RETURNING locked_at IS NOT DISTINCT FROM p_now INTO v_locked;
    RETURN coalesce(v_locked, false);
END $$;

CREATE FUNCTION otpgate_settle_failures(p_serials text[], p_now bigint, p_max bigint)
        RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    s text;
    v_locked text[] := '{}';
BEGIN
    FOREACH s IN ARRAY p_serials LOOP
        IF otpgate_settle_failure(s, p_now, p_max) THEN v_locked := v_locked || s; END IF;
    END LOOP;
    RETURN v_locked;
END $$;

-- The first cap a send would go over (sqlite_bounds::limit_reached); caps in Limit::ALL
-- order, 0 = off. Counting stops at the cap.
CREATE FUNCTION otpgate_limit_reached(p_serial text, p_phone text, p_client text,
        p_now bigint, p_caps bigint[]) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    names text[] := ARRAY['per_token_hour', 'per_token_day', 'per_phone_hour',
                          'per_client_minute', 'global_minute', 'global_day'];
    windows bigint[] := ARRAY[3600000, 86400000, 3600000, 60000, 60000, 86400000];
    v_cap bigint;
    v_since bigint;
    n bigint;
BEGIN
    FOR i IN 1..6 LOOP
        v_cap := p_caps[i];
        CONTINUE WHEN v_cap IS NULL OR v_cap = 0;
        v_since := p_now - windows[i];
        IF i <= 2 THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM sms_sends
                WHERE serial = p_serial AND time > v_since LIMIT v_cap) x;
        ELSIF i = 3 THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM sms_sends
                WHERE phone = p_phone AND time > v_since LIMIT v_cap) x;
        ELSIF i = 4 THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM sms_sends
                WHERE client = p_client AND time > v_since LIMIT v_cap) x;
        ELSE
            SELECT count(*) INTO n FROM (SELECT 1 FROM sms_sends
                WHERE time > v_since LIMIT v_cap) x;
        END IF;
        IF n >= v_cap THEN RETURN names[i]; END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Constant-time equality of two MACs.
CREATE FUNCTION otpgate_macs_equal(a bytea, b bytea) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    d integer := 0;
BEGIN
    IF a IS NULL OR b IS NULL OR length(a) <> length(b) THEN RETURN false; END IF;
    FOR i IN 0 .. length(a) - 1 LOOP
        d := d | (get_byte(a, i) # get_byte(b, i));
    END LOOP;
    RETURN d = 0;
END $$;

-- Answers a challenge (sqlite_bounds::answer_challenge): p_tid for State + OTP, else the
-- open challenge of p_serial. r_outcome: accepted, wrong, or the refusal (unknown_challenge,
-- no_open_challenge, other_user, used, expired, no_attempts_left, token_gone, disabled,
-- locked, busy). The owner columns hold the user and token as read before the answer.
CREATE FUNCTION otpgate_answer(p_tid text, p_serial text, p_user text, p_mac bytea,
        p_now bigint, p_max_attempts bigint, p_max_failures bigint, p_clear_after bigint,
        p_ttl bigint, p_claim_held boolean)
    RETURNS TABLE (r_outcome text, r_attempts bigint, r_ended boolean, r_locked_now boolean,
                   r_expires bigint, r_serial text, r_lock_cleared boolean,
                   r_owner boolean, u_name text, u_phone text, u_created bigint, u_group text,
                   t_serial text, t_user text, t_phone text, t_pin_hash text,
                   t_sealed_seed bytea, t_counter bigint, t_otp_length bigint,
                   t_fail_count bigint, t_locked_at bigint, t_disabled boolean,
                   t_gateway text, t_created bigint, r_attributes text[])
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    u record;
    t record;
    v_serial text;
    v_claim text;
    v_attempts bigint;
    v_locked boolean;
    v_ended boolean;
BEGIN
    r_lock_cleared := false; r_owner := false; r_attributes := '{}';
    IF p_tid IS NOT NULL THEN
        SELECT ch.serial INTO v_serial FROM challenges ch WHERE ch.transaction_id = p_tid;
        IF FOUND THEN
            PERFORM 1 FROM tokens tk WHERE tk.serial = v_serial FOR UPDATE;
            SELECT ch.transaction_id, ch.serial, ch.user_name, ch.expires, ch.attempts, ch.used,
                   ch.otp_mac INTO c
                FROM challenges ch WHERE ch.transaction_id = p_tid FOR UPDATE;
        END IF;
        IF NOT FOUND THEN
            r_outcome := 'unknown_challenge'; RETURN NEXT; RETURN;
        END IF;
    ELSE
        PERFORM 1 FROM tokens tk WHERE tk.serial = p_serial FOR UPDATE;
        SELECT ch.transaction_id, ch.serial, ch.user_name, ch.expires, ch.attempts, ch.used,
               ch.otp_mac INTO c
            FROM challenges ch WHERE ch.serial = p_serial AND NOT ch.used FOR UPDATE;
        IF NOT FOUND THEN
            r_outcome := 'no_open_challenge'; RETURN NEXT; RETURN;
        END IF;
    END IF;
    r_serial := c.serial;
    IF c.user_name <> p_user THEN
        UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
        r_outcome := 'other_user'; RETURN NEXT; RETURN;
    END IF;
    IF c.used THEN
        r_outcome := 'used'; RETURN NEXT; RETURN;
    END IF;
    IF c.expires <= p_now THEN
        UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
        r_outcome := 'expired'; RETURN NEXT; RETURN;
    END IF;
    IF c.attempts >= p_max_attempts THEN
        UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
        r_outcome := 'no_attempts_left'; RETURN NEXT; RETURN;
    END IF;
    SELECT * INTO u FROM users WHERE name = c.user_name;
    IF FOUND THEN
        SELECT * INTO t FROM tokens tk WHERE tk.serial = c.serial;
    END IF;
    IF NOT FOUND THEN
        UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
        r_outcome := 'token_gone'; RETURN NEXT; RETURN;
    END IF;
    r_owner := true;
    u_name := u.name; u_phone := u.phone; u_created := u.created; u_group := u.user_group;
    t_serial := t.serial; t_user := t.user_name; t_phone := t.phone; t_pin_hash := t.pin_hash;
    t_sealed_seed := t.sealed_seed; t_counter := t.counter; t_otp_length := t.otp_length;
    t_fail_count := t.fail_count; t_locked_at := t.locked_at; t_disabled := t.disabled;
    t_gateway := t.gateway; t_created := t.created;
    -- The failure this comparison may become: claimed now, or held from the PIN check.
    IF p_claim_held THEN
        IF t.disabled THEN
            UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
            r_outcome := 'disabled'; RETURN NEXT; RETURN;
        END IF;
    ELSE
        v_claim := otpgate_claim_failure(c.serial, p_now, p_max_failures, p_clear_after, true,
                                         p_ttl);
        IF v_claim = 'busy' THEN
            -- Not compared, and the challenge stays: the answer may be sent again.
            r_outcome := 'busy'; RETURN NEXT; RETURN;
        ELSIF v_claim IN ('disabled', 'locked') THEN
            UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
            r_outcome := v_claim; RETURN NEXT; RETURN;
        ELSIF v_claim NOT LIKE 'claimed%' THEN
            UPDATE challenges SET used = true WHERE transaction_id = c.transaction_id;
            r_owner := false;
            r_outcome := 'token_gone'; RETURN NEXT; RETURN;
        END IF;
        r_lock_cleared := v_claim = 'claimed+cleared';
    END IF;
    v_attempts := c.attempts + 1;
    r_attempts := v_attempts;
    r_expires := c.expires;
    IF otpgate_macs_equal(c.otp_mac, p_mac) THEN
        UPDATE challenges SET used = true, attempts = v_attempts
            WHERE transaction_id = c.transaction_id;
        -- A login resets the count; other checks still running keep their own claims.
        UPDATE tokens SET pending = GREATEST(pending - 1, 0), fail_count = GREATEST(pending - 1, 0),
            locked_at = NULL WHERE serial = c.serial;
        SELECT coalesce(array_agg(attribute ORDER BY position), '{}') INTO r_attributes
            FROM user_attributes WHERE user_name = c.user_name;
        r_outcome := 'accepted';
    ELSE
        v_locked := otpgate_settle_failure(c.serial, p_now, p_max_failures);
        v_ended := v_attempts >= p_max_attempts OR v_locked;
        UPDATE challenges SET attempts = v_attempts, used = v_ended
            WHERE transaction_id = c.transaction_id;
        r_outcome := 'wrong'; r_ended := v_ended; r_locked_now := v_locked;
    END IF;
    RETURN NEXT;
END $$;
"#,
    r#"
-- The start of a login in one round trip (Store::begin_login): the distinct OTP lengths, the
-- user joined with their tokens as read before the claims (no user: one row of NULL user
-- columns; no token: one row of NULL token columns), and each token's failure claim,
-- taken in serial order as otpgate_claim_failures does.
CREATE FUNCTION otpgate_begin_login(p_user text, p_now bigint, p_max bigint,
        p_clear_after bigint, p_count boolean, p_ttl bigint)
    RETURNS TABLE (r_lengths bigint[], u_name text, u_phone text, u_created bigint,
                   u_group text, t_serial text, t_user text, t_phone text, t_pin_hash text,
                   t_sealed_seed bytea, t_counter bigint, t_otp_length bigint,
                   t_fail_count bigint, t_locked_at bigint, t_disabled boolean,
                   t_gateway text, t_created bigint, r_claim text)
LANGUAGE plpgsql AS $$
DECLARE
    v_lengths bigint[];
    r record;
BEGIN
    WITH RECURSIVE lengths(n) AS (
        SELECT MIN(otp_length) FROM tokens
        UNION ALL
        SELECT (SELECT MIN(tk.otp_length) FROM tokens tk WHERE tk.otp_length > lengths.n)
            FROM lengths WHERE lengths.n IS NOT NULL
    )
    SELECT coalesce(array_agg(n ORDER BY n), '{}') INTO v_lengths
        FROM lengths WHERE n IS NOT NULL;
    r_lengths := v_lengths;
    FOR r IN SELECT u.name, u.phone AS uphone, u.created AS ucreated, u.user_group,
                    tk.serial, tk.user_name, tk.phone, tk.pin_hash, tk.sealed_seed, tk.counter,
                    tk.otp_length, tk.fail_count, tk.locked_at, tk.disabled, tk.gateway,
                    tk.created
             FROM users u LEFT JOIN tokens tk ON tk.user_name = u.name
             WHERE u.name = p_user ORDER BY tk.serial LOOP
        u_name := r.name; u_phone := r.uphone; u_created := r.ucreated; u_group := r.user_group;
        t_serial := r.serial; t_user := r.user_name; t_phone := r.phone;
        t_pin_hash := r.pin_hash; t_sealed_seed := r.sealed_seed; t_counter := r.counter;
        t_otp_length := r.otp_length; t_fail_count := r.fail_count;
        t_locked_at := r.locked_at; t_disabled := r.disabled; t_gateway := r.gateway;
        t_created := r.created;
        r_claim := NULL;
        IF r.serial IS NOT NULL THEN
            r_claim := otpgate_claim_failure(r.serial, p_now, p_max, p_clear_after, p_count,
                                             p_ttl);
        END IF;
        RETURN NEXT;
    END LOOP;
    IF NOT FOUND THEN
        RETURN NEXT;
    END IF;
END $$;

-- The PIN was right (sqlite_bounds::open_challenge), in one round trip
-- (Store::start_challenge): gives back p_refund, then returns the token's open challenge
-- or opens one. With p_expected, a new challenge takes the token's counter only if it is
-- still that one and stores p_mac, computed for it, at once (kind 'opened'); another
-- request moved the counter in between: kind 'counter_moved', nothing opened (the refund
-- stands), and the caller takes the two-step path, otpgate_open_challenge below. Without
-- p_expected (that path) the challenge is stored without its MAC, which the caller computes
-- from the returned counter and stores with otpgate_set_code_mac (kind 'new'); an open
-- challenge still without one after p_stale ms (its node died in between) is ended.
-- Other kinds: too_soon, claimed, again_limited, limited, missing.
CREATE FUNCTION otpgate_start_challenge(p_refund text[], p_expected bigint, p_mac bytea,
        p_tid text, p_serial text, p_user text, p_client text,
        p_phone text, p_now bigint, p_expires bigint, p_resend bigint, p_caps bigint[],
        p_stale bigint)
    RETURNS TABLE (r_kind text, r_transaction_id text, r_counter bigint, r_expires bigint,
                   r_limit text)
LANGUAGE plpgsql AS $$
DECLARE
    o record;
    v_limit text;
    v_counter bigint;
    v_record boolean := false;
BEGIN
    -- Every token this touches, locked in serial order as the claims lock them.
    PERFORM 1 FROM tokens WHERE serial = ANY (array_append(p_refund, p_serial))
        ORDER BY serial FOR UPDATE;
    -- A serial named twice is refunded twice, as refund_failures does.
    UPDATE tokens t SET fail_count = GREATEST(t.fail_count - r.n, 0),
                        pending = GREATEST(t.pending - r.n, 0)
        FROM (SELECT s, count(*) AS n FROM unnest(p_refund) AS s GROUP BY s) r
        WHERE t.serial = r.s;
    FOR i IN 1..6 LOOP
        IF p_caps[i] > 0 THEN v_record := true; END IF;
        IF i >= 3 AND p_caps[i] > 0 THEN
            PERFORM pg_advisory_xact_lock(hashtext('otpgate-sms-sends'));
            EXIT;
        END IF;
    END LOOP;
    UPDATE challenges SET used = true WHERE serial = p_serial AND NOT used
        AND (expires <= p_now OR (otp_mac IS NULL AND created <= p_now - p_stale));
    SELECT transaction_id, counter, expires, last_sent INTO o FROM challenges
        WHERE serial = p_serial AND NOT used;
    IF FOUND THEN
        IF p_resend > 0 AND p_now - o.last_sent < p_resend THEN
            RETURN QUERY SELECT 'too_soon', o.transaction_id, o.counter, o.expires, NULL::text;
            RETURN;
        END IF;
        v_limit := otpgate_limit_reached(p_serial, p_phone, p_client, p_now, p_caps);
        IF v_limit IS NOT NULL THEN
            RETURN QUERY SELECT 'again_limited', o.transaction_id, o.counter, o.expires, v_limit;
            RETURN;
        END IF;
        UPDATE challenges SET last_sent = p_now, sends = sends + 1
            WHERE transaction_id = o.transaction_id;
        IF v_record THEN
            INSERT INTO sms_sends (time, serial, phone, client)
                VALUES (p_now, p_serial, p_phone, p_client);
        END IF;
        RETURN QUERY SELECT 'claimed', o.transaction_id, o.counter, o.expires, NULL::text;
        RETURN;
    END IF;
    v_limit := otpgate_limit_reached(p_serial, p_phone, p_client, p_now, p_caps);
    IF v_limit IS NOT NULL THEN
        RETURN QUERY SELECT 'limited', NULL::text, NULL::bigint, NULL::bigint, v_limit;
        RETURN;
    END IF;
    UPDATE tokens SET counter = counter + 1
        WHERE serial = p_serial AND (p_expected IS NULL OR counter = p_expected)
        RETURNING GREATEST(counter - 1, 0) INTO v_counter;
    IF v_counter IS NULL THEN
        IF EXISTS (SELECT 1 FROM tokens WHERE serial = p_serial) THEN
            RETURN QUERY SELECT 'counter_moved', NULL::text, NULL::bigint, NULL::bigint,
                                NULL::text;
        ELSE
            RETURN QUERY SELECT 'missing', NULL::text, NULL::bigint, NULL::bigint, NULL::text;
        END IF;
        RETURN;
    END IF;
    INSERT INTO challenges (transaction_id, serial, user_name, client, counter, created, expires,
                            attempts, sends, used, otp_mac, last_sent)
        VALUES (p_tid, p_serial, p_user, p_client, v_counter, p_now, p_expires, 0, 1, false,
                p_mac, p_now);
    IF v_record THEN
        INSERT INTO sms_sends (time, serial, phone, client)
            VALUES (p_now, p_serial, p_phone, p_client);
    END IF;
    RETURN QUERY SELECT CASE WHEN p_mac IS NULL THEN 'new' ELSE 'opened' END,
        p_tid, v_counter, p_expires, NULL::text;
END $$;

-- The two-step path of otpgate_start_challenge: no refund, any counter, the MAC after.
CREATE FUNCTION otpgate_open_challenge(p_tid text, p_serial text, p_user text, p_client text,
        p_phone text, p_now bigint, p_expires bigint, p_resend bigint, p_caps bigint[],
        p_stale bigint)
    RETURNS TABLE (r_kind text, r_transaction_id text, r_counter bigint, r_expires bigint,
                   r_limit text)
LANGUAGE sql AS $$
    SELECT * FROM otpgate_start_challenge(ARRAY[]::text[], NULL, NULL, p_tid, p_serial,
        p_user, p_client, p_phone, p_now, p_expires, p_resend, p_caps, p_stale)
$$;
"#,
    // The MAC comparison without a plpgsql loop over its bytes (dozens of interpreted steps
    // per answer): equal lengths, then equal SHA-256 digests. Comparing
    // digests of the secrets rather than the secrets (the "double MAC" comparison) makes
    // the time an early mismatch saves tell nothing about the stored MAC's bytes.
    r#"
CREATE OR REPLACE FUNCTION otpgate_macs_equal(a bytea, b bytea) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT a IS NOT NULL AND b IS NOT NULL AND length(a) = length(b) AND sha256(a) = sha256(b)
$$;
"#,
    // The login path in fewer statements (a profile put PostgreSQL's CPU per login in the
    // number of statements the functions ran, each one set up again in every transaction):
    // the claims, the answer and the settling are single statements now
    // (`postgres_statements`), so their functions go; the challenge's start, which has to
    // look again after waiting for its token's lock, runs four statements where it ran ten.
    r#"
DROP FUNCTION otpgate_begin_login(text, bigint, bigint, bigint, boolean, bigint);
DROP FUNCTION otpgate_answer(text, text, text, bytea, bigint, bigint, bigint, bigint, bigint,
                             boolean);
DROP FUNCTION otpgate_claim_failures(text[], bigint, bigint, bigint, boolean, bigint);
DROP FUNCTION otpgate_claim_failure(text, bigint, bigint, bigint, boolean, bigint);
DROP FUNCTION otpgate_settle_failures(text[], bigint, bigint);
DROP FUNCTION otpgate_settle_failure(text, bigint, bigint);
DROP FUNCTION otpgate_macs_equal(bytea, bytea);

-- Locks the token, then (a fresh look, after the lock) its open challenge. The refund of
-- this token's own claims goes with the counter's move when a challenge opens; refunds of
-- other tokens' claims (a user with several tokens) lock those tokens first, in serial order.
CREATE OR REPLACE FUNCTION otpgate_start_challenge(p_refund text[], p_expected bigint,
        p_mac bytea, p_tid text, p_serial text, p_user text, p_client text,
        p_phone text, p_now bigint, p_expires bigint, p_resend bigint, p_caps bigint[],
        p_stale bigint)
    RETURNS TABLE (r_kind text, r_transaction_id text, r_counter bigint, r_expires bigint,
                   r_limit text)
LANGUAGE plpgsql AS $$
DECLARE
    o record;
    v_open boolean;
    v_counter bigint;
    -- Claims on this token to give back; a serial named twice is refunded twice.
    v_own bigint := cardinality(array_positions(p_refund, p_serial));
    -- Sends are recorded only while some cap counts them.
    v_capped boolean := 0 < ANY (p_caps);
BEGIN
    IF cardinality(p_refund) > v_own THEN
        PERFORM 1 FROM tokens WHERE serial = ANY (array_append(p_refund, p_serial))
            ORDER BY serial FOR UPDATE;
        UPDATE tokens t SET fail_count = GREATEST(t.fail_count - r.n, 0),
                            pending = GREATEST(t.pending - r.n, 0)
            FROM (SELECT s, count(*) AS n FROM unnest(p_refund) AS s WHERE s <> p_serial
                  GROUP BY s) r
            WHERE t.serial = r.s;
    END IF;
    SELECT counter INTO v_counter FROM tokens WHERE serial = p_serial FOR UPDATE;
    IF NOT FOUND THEN
        r_kind := 'missing'; RETURN NEXT; RETURN;
    END IF;
    -- Caps that span tokens are counted under one lock, so that two sends for different
    -- tokens cannot both take the last place under a cap.
    IF p_caps[3] > 0 OR p_caps[4] > 0 OR p_caps[5] > 0 OR p_caps[6] > 0 THEN
        PERFORM pg_advisory_xact_lock(hashtext('otpgate-sms-sends'));
    END IF;
    SELECT transaction_id, counter, expires, last_sent, otp_mac, created INTO o
        FROM challenges WHERE serial = p_serial AND NOT used;
    v_open := FOUND;
    -- Expired, or still without its MAC long after its node took the counter (that node
    -- died in between): ended.
    IF v_open AND (o.expires <= p_now OR (o.otp_mac IS NULL AND o.created <= p_now - p_stale)) THEN
        UPDATE challenges SET used = true WHERE transaction_id = o.transaction_id;
        v_open := false;
    END IF;
    IF v_open THEN
        r_transaction_id := o.transaction_id; r_counter := o.counter; r_expires := o.expires;
        IF p_resend > 0 AND p_now - o.last_sent < p_resend THEN
            r_kind := 'too_soon';
        ELSE
            IF v_capped THEN
                r_limit := otpgate_limit_reached(p_serial, p_phone, p_client, p_now, p_caps);
            END IF;
            IF r_limit IS NOT NULL THEN
                r_kind := 'again_limited';
            ELSE
                UPDATE challenges SET last_sent = p_now, sends = sends + 1
                    WHERE transaction_id = o.transaction_id;
                IF v_capped THEN
                    INSERT INTO sms_sends (time, serial, phone, client)
                        VALUES (p_now, p_serial, p_phone, p_client);
                END IF;
                r_kind := 'claimed';
            END IF;
        END IF;
    ELSE
        IF v_capped THEN
            r_limit := otpgate_limit_reached(p_serial, p_phone, p_client, p_now, p_caps);
        END IF;
        IF r_limit IS NOT NULL THEN
            r_kind := 'limited';
        ELSIF p_expected IS NOT NULL AND v_counter <> p_expected THEN
            -- Another request moved the counter since the login read it: nothing opened
            -- (the refund stands), and the caller takes the two-step path.
            r_kind := 'counter_moved';
        ELSE
            UPDATE tokens SET counter = counter + 1,
                              fail_count = GREATEST(fail_count - v_own, 0),
                              pending = GREATEST(pending - v_own, 0)
                WHERE serial = p_serial;
            v_own := 0;
            INSERT INTO challenges (transaction_id, serial, user_name, client, counter, created,
                                    expires, attempts, sends, used, otp_mac, last_sent)
                VALUES (p_tid, p_serial, p_user, p_client, GREATEST(v_counter, 0), p_now,
                        p_expires, 0, 1, false, p_mac, p_now);
            IF v_capped THEN
                INSERT INTO sms_sends (time, serial, phone, client)
                    VALUES (p_now, p_serial, p_phone, p_client);
            END IF;
            r_kind := CASE WHEN p_mac IS NULL THEN 'new' ELSE 'opened' END;
            r_transaction_id := p_tid; r_counter := GREATEST(v_counter, 0);
            r_expires := p_expires;
        END IF;
    END IF;
    IF v_own > 0 THEN
        UPDATE tokens SET fail_count = GREATEST(fail_count - v_own, 0),
                          pending = GREATEST(pending - v_own, 0)
            WHERE serial = p_serial;
    END IF;
    RETURN NEXT;
END $$;
"#,
    // The distinct OTP lengths, which every login reads to split PIN + OTP, kept by a
    // trigger on tokens rather than looked up at each login (38 us of PostgreSQL's CPU per
    // login, pgbench). The refresh locks the one row before it counts, so the count, a statement
    // of its own, sees the tokens of every writer that held the lock before.
    r#"
CREATE TABLE otpgate_otp_lengths (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    lengths bigint[] NOT NULL
);
CREATE FUNCTION otpgate_otp_lengths_of_tokens() RETURNS bigint[]
LANGUAGE sql STABLE AS $$
    -- A skip scan over the index: one seek per distinct length.
    WITH RECURSIVE lengths(n) AS (
        SELECT MIN(otp_length) FROM tokens
        UNION ALL
        SELECT (SELECT MIN(tk.otp_length) FROM tokens tk WHERE tk.otp_length > lengths.n)
            FROM lengths WHERE lengths.n IS NOT NULL
    )
    SELECT coalesce(array_agg(n ORDER BY n), '{}') FROM lengths WHERE n IS NOT NULL
$$;
CREATE FUNCTION otpgate_refresh_otp_lengths() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM otpgate_otp_lengths FOR UPDATE;
    UPDATE otpgate_otp_lengths SET lengths = otpgate_otp_lengths_of_tokens();
    RETURN NULL;
END $$;
CREATE TRIGGER otpgate_otp_lengths
    AFTER INSERT OR DELETE OR UPDATE OF otp_length OR TRUNCATE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION otpgate_refresh_otp_lengths();
INSERT INTO otpgate_otp_lengths (lengths) VALUES (otpgate_otp_lengths_of_tokens());
"#,
    // The starts of a batch (`Store::start_challenges`) in one call: one round trip and one
    // commit for all, each member as `otpgate_start_challenge` decides it, in order. The
    // batch's tokens are locked first, in serial order, as every statement locks tokens (a
    // member locking its token after another member's could lock out of order). Refunds
    // come flat: p_refund[k] is given back by member p_refund_of[k].
    r#"
CREATE FUNCTION otpgate_start_challenges(p_refund text[], p_refund_of int[],
        p_expected bigint[], p_mac bytea[], p_tid text[], p_serial text[], p_user text[],
        p_client text[], p_phone text[], p_now bigint[], p_expires bigint[], p_resend bigint,
        p_caps bigint[], p_stale bigint)
    RETURNS TABLE (r_at int, r_kind text, r_transaction_id text, r_counter bigint,
                   r_expires bigint, r_limit text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM tokens WHERE serial = ANY (p_serial || p_refund) ORDER BY serial FOR UPDATE;
    FOR i IN 1 .. coalesce(cardinality(p_serial), 0) LOOP
        RETURN QUERY SELECT i, s.* FROM otpgate_start_challenge(
            ARRAY(SELECT r.serial FROM unnest(p_refund, p_refund_of) AS r(serial, of)
                  WHERE r.of = i),
            p_expected[i], p_mac[i], p_tid[i], p_serial[i], p_user[i], p_client[i],
            p_phone[i], p_now[i], p_expires[i], p_resend, p_caps, p_stale) s;
    END LOOP;
END $$;
"#,
];
