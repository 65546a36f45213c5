-- The ledger's first schema. Money is INTEGER cents.
--
-- accounts  customers (id >= 1) and the system vault (id 0): deposits come out of the vault
--           and withdrawals go into it, so the journal of all money sums to zero. The
--           vault's balance is not stored (every posting would update that one hot row);
--           it is the sum of its journal entries, -(money held by customers).
-- requests  every keyed money request with its outcome (the idempotency record). An applied
--           request is a posting: error_code IS NULL and it owns journal entries summing
--           to zero. A rejected one has error_code set and no entries. Opening deposits
--           have no key. account/counterparty/amount are NULL in a rejection when they do
--           not fit in 64 bits (the fingerprint still has them).
-- entries   the double-entry journal: one row per account a posting touches, with the
--           customer's balance after it (NULL for the vault). Clustered by account for
--           statements.
-- stats     one row of request counters.
--
-- No FOREIGN KEY clauses: SQLite does not enforce them unless asked per connection, and
-- only the ledger's writer writes here; verify() checks every reference instead.

CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('customer', 'system')),
    name            TEXT    NOT NULL,
    balance_cents   INTEGER CHECK (
                        (kind = 'customer' AND balance_cents >= 0)
                        OR (kind = 'system' AND balance_cents IS NULL)),
    pin_hash        TEXT,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    REAL    NOT NULL DEFAULT 0,
    created_at      REAL    NOT NULL
);

INSERT INTO accounts (id, kind, name, balance_cents, created_at)
VALUES (0, 'system', 'vault', NULL, CAST(strftime('%s', 'now') AS REAL));

CREATE TABLE requests (
    id              INTEGER PRIMARY KEY,
    key             TEXT UNIQUE,
    fingerprint     TEXT,
    op              TEXT    NOT NULL CHECK (op IN ('deposit', 'withdraw', 'transfer')),
    account_id      INTEGER,
    counterparty_id INTEGER,
    amount_cents    INTEGER,
    error_code      TEXT,
    error_message   TEXT,
    created_at      REAL    NOT NULL
);

CREATE TABLE entries (
    account_id          INTEGER NOT NULL,
    request_id          INTEGER NOT NULL,
    amount_cents        INTEGER NOT NULL,
    balance_after_cents INTEGER,
    PRIMARY KEY (account_id, request_id)
) WITHOUT ROWID;

CREATE TABLE stats (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    successful  INTEGER NOT NULL,
    failed      INTEGER NOT NULL
);

INSERT INTO stats (id, successful, failed) VALUES (1, 0, 0);
