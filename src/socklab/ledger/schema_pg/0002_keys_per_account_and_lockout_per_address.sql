-- Idempotency keys per account, and failed logins per (account, client address): the
-- SQLite migration of the same number (../schema/0002_*.sql; read its header comment).
--
-- requests.key_scope gets the account of each stored key's fingerprint
-- ('op:account:counterparty:amount'), so every stored key keeps replaying for the account
-- that used it; UNIQUE (key_scope, key) replaces UNIQUE (key) (requests_key_key, the name
-- PostgreSQL gave it in 0001). socklab_post_batch is replaced to claim and look up keys
-- in their scope: each request of p_requests has s, its key's scope (base.key_scope).

ALTER TABLE requests ADD COLUMN key_scope TEXT;

UPDATE requests SET key_scope = split_part(fingerprint, ':', 2) WHERE key IS NOT NULL;

ALTER TABLE requests DROP CONSTRAINT requests_key_key;

ALTER TABLE requests ADD CONSTRAINT requests_key_scope_key UNIQUE (key_scope, key);

ALTER TABLE requests ADD CONSTRAINT requests_key_has_scope
    CHECK ((key IS NULL) = (key_scope IS NULL));

CREATE TABLE login_failures (
    account_id      BIGINT  NOT NULL,
    client          TEXT    NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_failure_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    locked_until    DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, client)
);


-- As in 0001, with keys claimed and found in their scope (req.s).
CREATE OR REPLACE FUNCTION socklab_post_batch(
    p_requests JSON, p_failures BIGINT, p_now DOUBLE PRECISION
) RETURNS TABLE (
    outcome TEXT, posting_id BIGINT, balance_after BIGINT,
    rejection_code TEXT, rejection_message TEXT
) LANGUAGE plpgsql AS $$
DECLARE
    int64_max CONSTANT BIGINT := 9223372036854775807;
    n_successful BIGINT := 0;
    n_failed BIGINT := p_failures;
    stored RECORD;
    account BIGINT;
    other BIGINT;
    amount BIGINT;
    balance BIGINT;
    other_balance BIGINT;
    req RECORD;
BEGIN
    -- Every customer row this batch may change, locked in id order (see the header).
    PERFORM 1 FROM accounts a
    WHERE a.id IN (
        SELECT unnest(ARRAY[x.a, x.c])
        FROM json_to_recordset(p_requests) AS x (a BIGINT, c BIGINT, rc TEXT)
        WHERE x.rc IS NULL)
    ORDER BY a.id
    FOR UPDATE;

    FOR req IN SELECT * FROM json_to_recordset(p_requests)
        AS x (k TEXT, s TEXT, f TEXT, o TEXT, a BIGINT, c BIGINT, m BIGINT, rc TEXT, rm TEXT)
    LOOP
        account := req.a;
        other := req.c;
        amount := req.m;
        outcome := 'new';
        balance_after := NULL;
        rejection_code := req.rc;
        rejection_message := req.rm;

        INSERT INTO requests (key, key_scope, fingerprint, op, account_id, counterparty_id,
                              amount_cents, error_code, error_message, created_at)
        VALUES (req.k, req.s, req.f, req.o, account, other, amount,
                rejection_code, rejection_message, p_now)
        ON CONFLICT (key_scope, key) DO NOTHING
        RETURNING id INTO posting_id;

        IF NOT FOUND THEN  -- a stored key (committed, or earlier in this batch)
            SELECT r.id, r.fingerprint, r.error_code, r.error_message INTO stored
            FROM requests r WHERE r.key_scope = req.s AND r.key = req.k;
            IF stored.id IS NULL THEN
                RAISE EXCEPTION 'idempotency key % is neither stored nor free', req.k;
            END IF;
            posting_id := stored.id;
            IF stored.fingerprint IS DISTINCT FROM req.f THEN
                outcome := 'key_reused';
                rejection_code := NULL;
                rejection_message := NULL;
                n_failed := n_failed + 1;
            ELSE
                outcome := 'replayed';
                rejection_code := stored.error_code;
                rejection_message := stored.error_message;
                IF rejection_code IS NULL THEN
                    SELECT e.balance_after_cents INTO balance_after FROM entries e
                    WHERE e.account_id = account AND e.request_id = stored.id;
                END IF;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF rejection_code IS NULL THEN
            -- The common case in one statement per account; a miss is explained below.
            IF req.o = 'deposit' THEN
                UPDATE accounts a SET balance_cents = a.balance_cents + amount
                WHERE a.id = account AND a.kind = 'customer'
                  AND a.balance_cents <= int64_max - amount
                RETURNING a.balance_cents INTO balance_after;
                IF FOUND THEN
                    INSERT INTO entries (account_id, request_id, amount_cents,
                                         balance_after_cents)
                    VALUES (account, posting_id, amount, balance_after),
                           (0, posting_id, -amount, NULL);  -- the vault: no running balance
                END IF;
            ELSE
                UPDATE accounts a SET balance_cents = a.balance_cents - amount
                WHERE a.id = account AND a.kind = 'customer' AND a.balance_cents >= amount
                RETURNING a.balance_cents INTO balance_after;
                IF FOUND AND req.o = 'withdraw' THEN
                    INSERT INTO entries (account_id, request_id, amount_cents,
                                         balance_after_cents)
                    VALUES (account, posting_id, -amount, balance_after),
                           (0, posting_id, amount, NULL);
                ELSIF FOUND THEN
                    UPDATE accounts a SET balance_cents = a.balance_cents + amount
                    WHERE a.id = other AND a.kind = 'customer'
                      AND a.balance_cents <= int64_max - amount
                    RETURNING a.balance_cents INTO other_balance;
                    IF FOUND THEN
                        INSERT INTO entries (account_id, request_id, amount_cents,
                                             balance_after_cents)
                        VALUES (account, posting_id, -amount, balance_after),
                               (other, posting_id, amount, other_balance);
                    ELSE  -- undo the debit; the counterparty is explained below
                        UPDATE accounts a SET balance_cents = a.balance_cents + amount
                        WHERE a.id = account;
                        balance_after := NULL;
                    END IF;
                END IF;
            END IF;

            IF balance_after IS NULL THEN  -- rejected: find the first reason, in order
                SELECT a.balance_cents INTO balance FROM accounts a
                WHERE a.id = account AND a.kind = 'customer';
                IF NOT FOUND THEN
                    rejection_code := 'unknown_account';
                    rejection_message := 'no account ' || account;
                ELSIF req.o = 'deposit' THEN
                    rejection_code := 'invalid_amount';
                    rejection_message := 'this deposit would overflow the balance';
                ELSIF req.o = 'transfer' THEN
                    SELECT a.balance_cents INTO other_balance FROM accounts a
                    WHERE a.id = other AND a.kind = 'customer';
                    IF NOT FOUND THEN
                        rejection_code := 'unknown_account';
                        rejection_message := 'no account ' || other;
                    ELSIF other_balance > int64_max - amount THEN
                        rejection_code := 'invalid_amount';
                        rejection_message := 'this transfer would overflow the balance';
                    END IF;
                END IF;
                IF rejection_code IS NULL THEN
                    rejection_code := 'insufficient_funds';
                    rejection_message := 'insufficient funds';
                END IF;
                UPDATE requests SET error_code = rejection_code, error_message = rejection_message
                WHERE id = posting_id;
            END IF;
        END IF;

        IF rejection_code IS NULL THEN
            n_successful := n_successful + 1;
        ELSE
            n_failed := n_failed + 1;
        END IF;
        RETURN NEXT;
    END LOOP;

    IF n_successful <> 0 OR n_failed <> 0 THEN
        INSERT INTO stats AS s (shard, successful, failed)
        VALUES (pg_backend_pid() % 16, n_successful, n_failed)
        ON CONFLICT (shard) DO UPDATE
        SET successful = s.successful + excluded.successful,
            failed = s.failed + excluded.failed;
    END IF;
END
$$;
