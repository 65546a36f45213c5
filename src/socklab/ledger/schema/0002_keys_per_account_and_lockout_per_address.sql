-- Idempotency keys per account, and failed logins per (account, client address).
--
-- requests.key_scope  the namespace of requests.key: the account the request was made on,
--           as text (base.key_scope). UNIQUE (key_scope, key) replaces UNIQUE (key): a key
--           used by one account says nothing to another. Existing keyed rows get the
--           account of their fingerprint ('op:account:counterparty:amount'), so every
--           stored key keeps replaying for the account that used it. Opening deposits
--           have neither. SQLite cannot drop a column's UNIQUE: the table is rebuilt, ids
--           kept (entries refer to them).
-- login_failures  per (account, client address): wrong PINs in a row, the time of the
--           last one and a lock for that address only. accounts.failed_logins and
--           accounts.locked_until are now the account-wide backstop (for every address).
--           A row goes on a success from its address or an unlock.

CREATE TABLE requests_v2 (
    id              INTEGER PRIMARY KEY,
    key             TEXT,
    key_scope       TEXT,
    fingerprint     TEXT,
    op              TEXT    NOT NULL CHECK (op IN ('deposit', 'withdraw', 'transfer')),
    account_id      INTEGER,
    counterparty_id INTEGER,
    amount_cents    INTEGER,
    error_code      TEXT,
    error_message   TEXT,
    created_at      REAL    NOT NULL,
    UNIQUE (key_scope, key),
    CHECK ((key IS NULL) = (key_scope IS NULL))
);

INSERT INTO requests_v2 (id, key, key_scope, fingerprint, op, account_id, counterparty_id,
                         amount_cents, error_code, error_message, created_at)
SELECT id, key,
       CASE WHEN key IS NULL THEN NULL ELSE
           substr(substr(fingerprint, instr(fingerprint, ':') + 1), 1,
                  instr(substr(fingerprint, instr(fingerprint, ':') + 1), ':') - 1)
       END,
       fingerprint, op, account_id, counterparty_id, amount_cents, error_code,
       error_message, created_at
FROM requests ORDER BY id;

DROP TABLE requests;

ALTER TABLE requests_v2 RENAME TO requests;

CREATE TABLE login_failures (
    account_id      INTEGER NOT NULL,
    client          TEXT    NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_failure_at REAL    NOT NULL DEFAULT 0,
    locked_until    REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, client)
) WITHOUT ROWID;
