"""The SQLite ledger's SQL: plain functions of a connection, no threads, no asyncio.

``socklab.ledger.sqlite`` calls the writing functions from its single writer thread,
inside a transaction and a savepoint it owns, and the reading ones from its reader.
The schema is in ``schema/NNNN_name.sql`` (read its header comment first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from socklab.errors import (
    REJECTIONS,
    InsufficientFunds,
    InvalidAmount,
    RequestRejected,
    StorageError,
)
from socklab.ledger import base
from socklab.ledger.base import (
    DEMO_BALANCE_CENTS,
    DEMO_NAMES,
    INT64_MAX,
    PROBLEM_EXAMPLES,
    VAULT_ID,
    Account,
    JournalEntry,
    KeyedRequest,
    LedgerSettings,
    LoginState,
    Op,
    Posting,
    Receipt,
    Stats,
    VerifyFindings,
    VerifyReport,
    int64_or_none,
    key_reused,
    migration_files,
    precheck,
    unknown_account,
    wrong_pin,
)

log = logging.getLogger(__name__)

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 10_000


# --- connections and migrations -----------------------------------------------------


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we say BEGIN), WAL, synchronous=FULL.

    Raises ``sqlite3.Error``, ``OSError``, ``StorageError`` (no WAL).
    """
    if path != MEMORY and not os.path.exists(path):
        # The file holds PIN hashes: its owner only (SQLite gives -wal and -shm its mode).
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=256
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != MEMORY:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot use WAL for {path!r} (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every ``schema/NNNN_name.sql``, in order."""
    return migration_files("schema")


def split_statements(script: str) -> list[str]:
    """The complete statements of ``script`` (``executescript`` would COMMIT on its own)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [ln for ln in pending.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise StorageError("a schema migration ends with an incomplete statement")
    return statements


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in order, one transaction each. Returns the version.

    Raises ``StorageError`` for a database newer than this code, ``sqlite3.Error``.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    known = migrations()
    for version, name, sql in known:
        conn.execute("BEGIN IMMEDIATE")  # then re-check: another process may be migrating
        try:
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
            if done.fetchone() is None:
                for statement in split_statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                log.debug("ledger schema migrated to %s", name)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    current = int(conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0)
    if current > len(known):
        raise StorageError(f"the database has schema version {current}, newer than this code")
    return current


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Several reads in one read transaction (a no-op inside the writer's transaction)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


# --- money (writer side) ------------------------------------------------------------
# Constant SQL strings, so that sqlite3's statement cache prepares each once. Balances
# are read and then written as values: the writer holds the write lock, and this is
# much cheaper than UPDATE ... RETURNING.

_FIND_KEY = (
    "SELECT id, fingerprint, error_code, error_message FROM requests"
    " WHERE key_scope = ? AND key = ?"
)
_BALANCE_AFTER = "SELECT balance_after_cents FROM entries WHERE account_id = ? AND request_id = ?"
_BALANCE = "SELECT balance_cents FROM accounts WHERE id = ? AND kind = 'customer'"
_SET_BALANCE = "UPDATE accounts SET balance_cents = ? WHERE id = ?"
_INSERT_REQUEST = (
    "INSERT INTO requests (key, key_scope, fingerprint, op, account_id, counterparty_id,"
    " amount_cents, error_code, error_message, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ENTRIES = (
    "INSERT INTO entries (account_id, request_id, amount_cents, balance_after_cents)"
    " VALUES (?, ?, ?, ?), (?, ?, ?, ?)"
)


def post(
    conn: sqlite3.Connection, req: KeyedRequest, max_amount_cents: int, now: float
) -> tuple[Receipt | RequestRejected, bool]:
    """Replay ``req``'s stored outcome, or decide it and store it with its effects.

    Returns (outcome, is_new): ``is_new`` is False for a replay (which must not count in
    the statistics again). A rejection is returned, not raised: it is stored too.
    """
    found = conn.execute(_FIND_KEY, (req.scope, req.key)).fetchone()
    if found is not None:
        request_id, stored_fingerprint, error_code, error_message = found
        if stored_fingerprint != req.fingerprint:
            return key_reused(), True
        if error_code is not None:
            return REJECTIONS[error_code](error_message, replayed=True), False
        (balance,) = conn.execute(_BALANCE_AFTER, (req.account, request_id)).fetchone()
        return _receipt(req, request_id, balance, replayed=True), False
    rejection = precheck(req.account, req.counterparty, req.amount_cents, max_amount_cents)
    if rejection is None:
        moved = move_money(conn, req, now)
        if not isinstance(moved, RequestRejected):
            return _receipt(req, *moved, replayed=False), True
        rejection = moved
    conn.execute(
        _INSERT_REQUEST,
        (
            req.key, req.scope, req.fingerprint, req.op, int64_or_none(req.account),
            int64_or_none(req.counterparty), int64_or_none(req.amount_cents),
            rejection.code, rejection.message, now,
        ),
    )  # fmt: skip
    return rejection, True


@dataclass(frozen=True, slots=True)
class Opening:
    """An opening deposit: a posting with no key and no fingerprint."""

    account: int
    amount_cents: int
    op: Op = "deposit"
    counterparty: None = None
    key: None = None
    fingerprint: None = None
    scope: None = None


def move_money(
    conn: sqlite3.Connection, req: KeyedRequest | Opening, now: float
) -> tuple[int, int] | RequestRejected:
    """Apply a prechecked request: balances, the posting, its two journal entries.

    Returns (posting id, balance of ``req.account`` after), or the rejection, having
    changed nothing, for an unknown account or short funds (checked in that order).
    """
    amount, account = req.amount_cents, req.account
    row = conn.execute(_BALANCE, (account,)).fetchone()
    if row is None:
        return unknown_account(account)
    other: int = VAULT_ID
    other_balance: int | None = None  # the vault keeps no running balance
    if req.op == "deposit":
        balance = row[0] + amount
        if balance > INT64_MAX:
            return InvalidAmount("this deposit would overflow the balance")
        signed = amount
    else:
        if req.op == "transfer":
            assert req.counterparty is not None
            other = req.counterparty
            other_row = conn.execute(_BALANCE, (other,)).fetchone()
            if other_row is None:
                return unknown_account(other)
            other_balance = other_row[0] + amount
            if other_balance > INT64_MAX:
                return InvalidAmount("this transfer would overflow the balance")
        if row[0] < amount:
            return InsufficientFunds("insufficient funds")
        balance = row[0] - amount
        signed = -amount
        if other_balance is not None:
            conn.execute(_SET_BALANCE, (other_balance, other))
    conn.execute(_SET_BALANCE, (balance, account))
    cursor = conn.execute(
        _INSERT_REQUEST,
        (
            req.key, req.scope, req.fingerprint, req.op, account, req.counterparty, amount,
            None, None, now,
        ),
    )  # fmt: skip
    request_id = cast(int, cursor.lastrowid)
    conn.execute(
        _INSERT_ENTRIES,
        (account, request_id, signed, balance, other, request_id, -signed, other_balance),
    )
    return request_id, balance


def _receipt(req: KeyedRequest, posting_id: int, balance: int, *, replayed: bool) -> Receipt:
    return Receipt(
        req.key, req.op, req.account, req.counterparty, req.amount_cents, balance,
        posting_id, replayed,
    )  # fmt: skip


def add_stats(conn: sqlite3.Connection, successful: int, failed: int) -> None:
    conn.execute(
        "UPDATE stats SET successful = successful + ?, failed = failed + ?", (successful, failed)
    )


# --- accounts and logins (writer side) ----------------------------------------------


def has_customers(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT 1 FROM accounts WHERE kind = 'customer' LIMIT 1").fetchone()
    return found is not None


def create_account(
    conn: sqlite3.Connection,
    account: int | None,
    name: str,
    pin_hash: str,
    deposit_cents: int,
    now: float,
) -> Account:
    """Insert a customer (``account=None``: the next id) with an opening deposit."""
    cursor = conn.execute(
        "INSERT INTO accounts (id, kind, name, balance_cents, pin_hash, created_at)"
        " VALUES (?, 'customer', ?, 0, ?, ?)",
        (account, name, pin_hash, now),
    )
    account_id = cast(int, cursor.lastrowid)
    if deposit_cents:
        moved = move_money(conn, Opening(account_id, deposit_cents), now)
        assert not isinstance(moved, RequestRejected), moved
    return Account(account_id, name, deposit_cents)


def create_demo_accounts(conn: sqlite3.Connection, pin_hashes: Sequence[str], now: float) -> bool:
    """The seed's accounts 1, 2, 3 on a ledger with no customers. Returns whether it
    created them (in the writer: nobody else writes meanwhile)."""
    if has_customers(conn):
        return False
    for number, (name, pin_hash) in enumerate(zip(DEMO_NAMES, pin_hashes, strict=True), 1):
        create_account(conn, number, name, pin_hash, DEMO_BALANCE_CENTS, now)
    return True


def settle_login(
    conn: sqlite3.Connection,
    account: int,
    client: str,
    checked_hash: str,
    is_match: bool,
    settings: LedgerSettings,
    now: float,
) -> Account | RequestRejected:
    """``base.settle_login`` on the stored row and counters; stores the new counters.
    Runs in the writer, which sees every attempt in order."""
    row = conn.execute(
        "SELECT name, balance_cents, pin_hash FROM accounts WHERE id = ? AND kind = 'customer'",
        (account,),
    ).fetchone()
    if row is None:
        return wrong_pin()
    name, balance, pin_hash = row
    state = login_counters(conn, account, client)
    changed, outcome = base.settle_login(
        Account(account, name, balance), client, state, pin_hash, checked_hash, is_match,
        settings, now,
    )  # fmt: skip
    if changed is not None:
        store_login_counters(conn, account, client, changed)
    return outcome


def login_counters(conn: sqlite3.Connection, account: int, client: str) -> LoginState:
    """The stored lockout counters of ``account`` and of it from ``client``."""
    row = conn.execute(
        "SELECT a.failed_logins, a.locked_until, COALESCE(f.failures, 0),"
        " COALESCE(f.locked_until, 0), COALESCE(f.last_failure_at, 0) FROM accounts a"
        " LEFT JOIN login_failures f ON f.account_id = a.id AND f.client = ?"
        " WHERE a.id = ?",
        (client, account),
    ).fetchone()
    return LoginState() if row is None else LoginState(*row)


def store_login_counters(
    conn: sqlite3.Connection, account: int, client: str, state: LoginState
) -> None:
    conn.execute(
        "UPDATE accounts SET failed_logins = ?, locked_until = ? WHERE id = ?",
        (state.account_failures, state.account_locked_until, account),
    )
    if state.client_failures or state.client_locked_until or state.client_last_failure:
        conn.execute(
            "INSERT INTO login_failures (account_id, client, failures, last_failure_at,"
            " locked_until) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, client) DO UPDATE"
            " SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,"
            " locked_until = excluded.locked_until",
            (account, client, state.client_failures, state.client_last_failure,
             state.client_locked_until),
        )  # fmt: skip
    else:
        conn.execute(
            "DELETE FROM login_failures WHERE account_id = ? AND client = ?", (account, client)
        )


def unlock(conn: sqlite3.Connection, account: int, now: float) -> bool | None:
    """Lift every lockout of ``account``; None if it is not a customer. Returns whether
    it was locked (for everyone or for some address)."""
    row = conn.execute(
        "SELECT locked_until FROM accounts WHERE id = ? AND kind = 'customer'", (account,)
    ).fetchone()
    if row is None:
        return None
    (locked,) = conn.execute(
        "SELECT COUNT(*) FROM login_failures WHERE account_id = ? AND locked_until > ?",
        (account, now),
    ).fetchone()
    conn.execute("UPDATE accounts SET failed_logins = 0, locked_until = 0 WHERE id = ?", (account,))
    conn.execute("DELETE FROM login_failures WHERE account_id = ?", (account,))
    return bool(row[0] > now or locked)


def set_pin_hash(conn: sqlite3.Connection, account: int, pin_hash: str) -> None:
    conn.execute(
        "UPDATE accounts SET pin_hash = ?, failed_logins = 0 WHERE id = ?", (pin_hash, account)
    )


# --- reads --------------------------------------------------------------------------


def login_state(
    conn: sqlite3.Connection, account: int, client: str
) -> tuple[str | None, LoginState] | None:
    """(PIN hash, lockout counters for ``client``) of a customer, or None."""
    with snapshot(conn):
        row = conn.execute(
            "SELECT pin_hash FROM accounts WHERE id = ? AND kind = 'customer'", (account,)
        ).fetchone()
        if row is None:
            return None
        return row[0], login_counters(conn, account, client)


def get_account(conn: sqlite3.Connection, account: int) -> Account | None:
    row = conn.execute(
        "SELECT id, name, balance_cents FROM accounts WHERE id = ? AND kind = 'customer'",
        (account,),
    ).fetchone()
    return None if row is None else Account(*row)


def list_accounts(conn: sqlite3.Connection) -> list[Account]:
    rows = conn.execute(
        "SELECT id, name, balance_cents FROM accounts WHERE kind = 'customer' ORDER BY id"
    )
    return [Account(*row) for row in rows]


def statement(
    conn: sqlite3.Connection, account: int, limit: int, before: int
) -> list[Posting] | None:
    """The newest ``limit`` postings of a customer with an id below ``before``, newest
    first; None if unknown."""
    with snapshot(conn):
        if conn.execute(_BALANCE, (account,)).fetchone() is None:
            return None
        rows = conn.execute(
            "SELECT e.request_id, r.op, e.amount_cents, e.balance_after_cents,"
            " CASE WHEN r.account_id = e.account_id THEN r.counterparty_id"
            " ELSE r.account_id END, r.key, r.created_at"
            " FROM entries e JOIN requests r ON r.id = e.request_id"
            " WHERE e.account_id = ? AND e.request_id < ? ORDER BY e.request_id DESC LIMIT ?",
            (account, before, limit),
        ).fetchall()
    return [Posting(*row) for row in rows]


def journal(conn: sqlite3.Connection, after: int, limit: int) -> list[JournalEntry]:
    """The first ``limit`` applied postings with an id above ``after``, by id."""
    rows = conn.execute(
        "SELECT r.id, r.created_at, r.op, r.account_id, r.counterparty_id, r.amount_cents,"
        " e.balance_after_cents, r.key FROM requests r"
        " JOIN entries e ON e.account_id = r.account_id AND e.request_id = r.id"
        " WHERE r.id > ? AND r.error_code IS NULL ORDER BY r.id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [JournalEntry(*row) for row in rows]


def read_stats(conn: sqlite3.Connection) -> Stats:
    successful, failed = conn.execute("SELECT successful, failed FROM stats").fetchone()
    return Stats(successful + failed, successful, failed)


def verify(conn: sqlite3.Connection) -> VerifyReport:
    """Re-derive every balance from the journal and check the ledger's invariants."""
    findings = VerifyFindings()

    def check(sql: str, name: str) -> None:
        findings.rows(name, conn.execute(f"{sql} LIMIT {PROBLEM_EXAMPLES + 1}").fetchall())

    per_posting = (
        "WITH p AS (SELECT request_id, COUNT(*) AS n, SUM(amount_cents) AS total,"
        " SUM(MAX(amount_cents, 0)) AS moved FROM entries GROUP BY request_id) "
    )
    with snapshot(conn):
        vault = conn.execute("SELECT kind FROM accounts WHERE id = ?", (VAULT_ID,)).fetchone()
        check(
            "SELECT a.id, a.balance_cents, COALESCE(SUM(e.amount_cents), 0) AS derived"
            " FROM accounts a LEFT JOIN entries e ON e.account_id = a.id"
            " WHERE a.kind = 'customer' GROUP BY a.id HAVING a.balance_cents IS NOT derived",
            "balance",
        )
        check(
            "SELECT id, balance_cents FROM accounts"
            " WHERE kind = 'customer' AND NOT balance_cents >= 0",
            "negative",
        )
        check(
            "SELECT account_id, request_id, balance_after_cents, running FROM ("
            " SELECT e.account_id, e.request_id, e.balance_after_cents, SUM(e.amount_cents)"
            " OVER (PARTITION BY e.account_id ORDER BY e.request_id) AS running"
            " FROM entries e JOIN accounts a ON a.id = e.account_id AND a.kind = 'customer')"
            " WHERE running IS NOT balance_after_cents",
            "running",
        )
        check(
            "SELECT e.account_id, e.request_id FROM entries e"
            " LEFT JOIN accounts a ON a.id = e.account_id WHERE a.id IS NULL",
            "entry_account",
        )
        check(
            per_posting + "SELECT r.id, r.error_code, COALESCE(p.n, 0), p.total, p.moved,"
            " r.amount_cents FROM requests r LEFT JOIN p ON p.request_id = r.id"
            " WHERE (r.error_code IS NULL AND (COALESCE(p.n, 0) != 2 OR p.total != 0"
            " OR p.moved IS NOT r.amount_cents)) OR (r.error_code IS NOT NULL AND p.n > 0)",
            "posting",
        )
        check(
            per_posting + "SELECT p.request_id FROM p LEFT JOIN requests r"
            " ON r.id = p.request_id WHERE r.id IS NULL",
            "entry_posting",
        )
        (journal_total,) = conn.execute(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM entries"
        ).fetchone()
        customers, customer_cents = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(balance_cents), 0) FROM accounts WHERE kind = 'customer'"
        ).fetchone()
        postings, keyed_ok, rejected = conn.execute(
            "SELECT COUNT(*) FILTER (WHERE error_code IS NULL),"
            " COUNT(*) FILTER (WHERE error_code IS NULL AND key IS NOT NULL),"
            " COUNT(*) FILTER (WHERE error_code IS NOT NULL) FROM requests"
        ).fetchone()
        stats = read_stats(conn)
        findings.totals(
            has_vault=vault is not None and vault[0] == "system",
            journal_total=journal_total,
            stats=stats,
            keyed_ok=keyed_ok,
            rejected=rejected,
        )
    return findings.report(accounts=customers, postings=postings, total_cents=customer_cents)
