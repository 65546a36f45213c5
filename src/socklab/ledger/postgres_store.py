"""The PostgreSQL ledger's SQL: async functions of a connection, no pool, no writer.

``socklab.ledger.postgres`` calls them with pooled connections (autocommit mode: one
statement is one transaction unless the caller opens one). The schema and the posting
logic live in ``schema_pg/NNNN_name.sql``; read the header comment of 0001 first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from socklab.errors import REJECTIONS, RequestRejected, StorageError
from socklab.ledger import base
from socklab.ledger.base import (
    DEMO_BALANCE_CENTS,
    DEMO_NAMES,
    PROBLEM_EXAMPLES,
    VAULT_ID,
    Account,
    JournalEntry,
    KeyedRequest,
    LedgerSettings,
    LoginState,
    Posting,
    Receipt,
    Stats,
    VerifyFindings,
    VerifyReport,
    int64_or_none,
    key_reused,
    migration_files,
    wrong_pin,
)

log = logging.getLogger(__name__)

Conn = AsyncConnection[TupleRow]

MIGRATION_LOCK = 0x736F636B
"""First key of the migrations' advisory lock (the second is the schema's hash)."""


# --- connections and migrations -----------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """``dsn`` for messages and logs: user, host, port, database; never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable connection string)"
    host = parts.get("host") or "local socket"
    port = f":{parts['port']}" if parts.get("port") else ""
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


async def configure(conn: Conn) -> None:
    """Settings of every connection. Raises ``psycopg.Error``."""
    # An acknowledged posting must survive a crash, whatever the server's default.
    await conn.execute("SET synchronous_commit = on")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every ``schema_pg/NNNN_name.sql``, in order."""
    return migration_files("schema_pg")


async def migrate(conn: Conn) -> int:
    """Apply pending migrations in order, all in one transaction. Returns the version.

    The tables go into the first schema of the connection's ``search_path``. Raises
    ``StorageError`` (no schema to use, a database newer than this code), ``psycopg.Error``.
    """
    known = migrations()
    async with conn.transaction():
        (schema,) = await fetchone(conn, "SELECT current_schema()")
        if schema is None:
            raise StorageError("no schema to create the ledger in: check the search_path")
        # Processes starting at once wait here, and the later ones find the work done.
        # The lock is per schema: ledgers in other schemas of the database do not wait.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (MIGRATION_LOCK,)
        )
        (exists,) = await fetchone(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            await conn.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        applied = {version for (version,) in await cur.fetchall()}
        for version, name, sql in known:
            if version in applied:
                continue
            # No parameters: psycopg sends the file as one simple query (many statements).
            await conn.execute(sql.encode("utf-8"))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (version, name, time.time()),
            )
            log.info("ledger schema migrated to %s", name)
            applied.add(version)
    current = max(applied, default=0)
    if current > len(known):
        raise StorageError(f"the database has schema version {current}, newer than this code")
    return current


async def fetchone(conn: Conn, query: LiteralString, params: Sequence[Any] = ()) -> Any:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


# --- money --------------------------------------------------------------------------

_POST_BATCH: LiteralString = (
    "SELECT outcome, posting_id, balance_after, rejection_code, rejection_message"
    " FROM socklab_post_batch(%s::json, %s, %s)"
)


async def post_batch(
    conn: Conn,
    requests: Sequence[tuple[KeyedRequest, RequestRejected | None]],
    failures: int,
    now: float,
) -> list[Receipt | RequestRejected]:
    """Post ``requests`` (each with its ``precheck`` verdict) in order, and count
    ``failures`` transient failures, in one statement (so one transaction in autocommit
    mode). Returns each request's outcome: a stored rejection is returned, not raised.

    Raises ``psycopg.Error``: the whole batch is then rolled back.
    """
    payload = json.dumps(
        [
            {
                "k": req.key,
                "s": req.scope,
                "f": req.fingerprint,
                "o": req.op,
                # Prechecked: a value that does not fit in 64 bits comes with a
                # rejection, and is stored as NULL (the fingerprint keeps it).
                "a": int64_or_none(req.account),
                "c": int64_or_none(req.counterparty),
                "m": int64_or_none(req.amount_cents),
                "rc": None if rejection is None else rejection.code,
                "rm": None if rejection is None else rejection.message,
            }
            for req, rejection in requests
        ]
    )
    cur = await conn.execute(_POST_BATCH, (payload, failures, now))
    rows = await cur.fetchall()
    return [_outcome(req, row) for (req, _), row in zip(requests, rows, strict=True)]


def _outcome(req: KeyedRequest, row: TupleRow) -> Receipt | RequestRejected:
    outcome, posting_id, balance, code, message = row
    if outcome == "key_reused":
        return key_reused()
    if code is not None:
        return REJECTIONS[code](message, replayed=outcome == "replayed")
    return Receipt(
        req.key, req.op, req.account, req.counterparty, req.amount_cents, balance,
        posting_id, replayed=outcome == "replayed",
    )  # fmt: skip


def is_statement_error(exc: psycopg.Error) -> bool:
    """Whether the server refused a statement (so rolled its transaction back) for its
    data: a data exception, an integrity violation, an error raised by PL/pgSQL."""
    return exc.sqlstate is not None and exc.sqlstate[:2] in ("22", "23", "P0")


# --- accounts and logins ------------------------------------------------------------


async def create_account(
    conn: Conn, account: int | None, name: str, pin_hash: str, deposit_cents: int, now: float
) -> Account:
    """Insert a customer (``account=None``: the next id) with an opening deposit."""
    (account_id,) = await fetchone(
        conn,
        "SELECT socklab_open_account(%s, %s, %s, %s, %s)",
        (account, name, pin_hash, deposit_cents, now),
    )
    return Account(account_id, name, deposit_cents)


async def create_demo_accounts(conn: Conn, pin_hashes: Sequence[str], now: float) -> bool:
    """The seed's accounts 1, 2, 3 on a ledger with no customers. Returns whether it
    created them. Run it in a transaction."""
    # Writers wait (plain reads do not) until the commit, so that a concurrent
    # open_account cannot take id 1 first and two processes cannot both do this.
    await conn.execute("LOCK TABLE accounts IN EXCLUSIVE MODE")
    if await has_customers(conn):
        return False
    for number, (name, pin_hash) in enumerate(zip(DEMO_NAMES, pin_hashes, strict=True), 1):
        await create_account(conn, number, name, pin_hash, DEMO_BALANCE_CENTS, now)
    # Explicit ids do not move the identity sequence: move it past them.
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))"
    )
    return True


async def has_customers(conn: Conn) -> bool:
    row = await fetchone(conn, "SELECT 1 FROM accounts WHERE kind = 'customer' LIMIT 1")
    return row is not None


async def settle_login(
    conn: Conn,
    account: int,
    client: str,
    checked_hash: str,
    is_match: bool,
    settings: LedgerSettings,
    now: float,
) -> Account | RequestRejected:
    """``base.settle_login`` on the stored row and counters; stores the new counters.
    Run it in a transaction: it holds the account's row lock until the commit, so
    concurrent attempts (from any process) are counted in turn, and none succeeds once the
    failures before it have locked the account."""
    row = await fetchone(
        conn,
        "SELECT name, balance_cents, pin_hash, failed_logins, locked_until FROM accounts"
        " WHERE id = %s AND kind = 'customer' FOR UPDATE",
        (account,),
    )
    if row is None:
        return wrong_pin()
    name, balance, pin_hash, failed_logins, locked_until = row
    client_row = await fetchone(
        conn,
        "SELECT failures, locked_until, last_failure_at FROM login_failures"
        " WHERE account_id = %s AND client = %s",
        (account, client),
    )
    state = LoginState(failed_logins, locked_until, *(client_row or (0, 0.0, 0.0)))
    changed, outcome = base.settle_login(
        Account(account, name, balance), client, state, pin_hash, checked_hash, is_match,
        settings, now,
    )  # fmt: skip
    if changed is not None:
        await store_login_counters(conn, account, client, changed)
    return outcome


async def store_login_counters(conn: Conn, account: int, client: str, state: LoginState) -> None:
    await conn.execute(
        "UPDATE accounts SET failed_logins = %s, locked_until = %s WHERE id = %s",
        (state.account_failures, state.account_locked_until, account),
    )
    if state.client_failures or state.client_locked_until or state.client_last_failure:
        await conn.execute(
            "INSERT INTO login_failures (account_id, client, failures, last_failure_at,"
            " locked_until) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (account_id, client)"
            " DO UPDATE SET failures = excluded.failures,"
            " last_failure_at = excluded.last_failure_at, locked_until = excluded.locked_until",
            (account, client, state.client_failures, state.client_last_failure,
             state.client_locked_until),
        )  # fmt: skip
    else:
        await conn.execute(
            "DELETE FROM login_failures WHERE account_id = %s AND client = %s", (account, client)
        )


async def unlock(conn: Conn, account: int, now: float) -> bool | None:
    """Lift every lockout of ``account``; None if it is not a customer. Returns whether it
    was locked. Run it in a transaction (it takes the account's row lock, as logins do)."""
    row = await fetchone(
        conn,
        "SELECT locked_until FROM accounts WHERE id = %s AND kind = 'customer' FOR UPDATE",
        (account,),
    )
    if row is None:
        return None
    (locked,) = await fetchone(
        conn,
        "SELECT COUNT(*) FROM login_failures WHERE account_id = %s AND locked_until > %s",
        (account, now),
    )
    await conn.execute(
        "UPDATE accounts SET failed_logins = 0, locked_until = 0 WHERE id = %s", (account,)
    )
    await conn.execute("DELETE FROM login_failures WHERE account_id = %s", (account,))
    return bool(row[0] > now or locked)


async def set_pin_hash(conn: Conn, account: int, pin_hash: str) -> None:
    await conn.execute(
        "UPDATE accounts SET pin_hash = %s, failed_logins = 0 WHERE id = %s", (pin_hash, account)
    )


# --- reads --------------------------------------------------------------------------


async def login_state(
    conn: Conn, account: int, client: str
) -> tuple[str | None, LoginState] | None:
    """(PIN hash, lockout counters for ``client``) of a customer, or None."""
    row = await fetchone(
        conn,
        "SELECT a.pin_hash, a.failed_logins, a.locked_until, COALESCE(f.failures, 0),"
        " COALESCE(f.locked_until, 0), COALESCE(f.last_failure_at, 0) FROM accounts a"
        " LEFT JOIN login_failures f ON f.account_id = a.id AND f.client = %s"
        " WHERE a.id = %s AND a.kind = 'customer'",
        (client, account),
    )
    return None if row is None else (row[0], LoginState(*row[1:]))


async def get_account(conn: Conn, account: int) -> Account | None:
    row = await fetchone(
        conn,
        "SELECT id, name, balance_cents FROM accounts WHERE id = %s AND kind = 'customer'",
        (account,),
    )
    return None if row is None else Account(*row)


async def list_accounts(conn: Conn) -> list[Account]:
    cur = await conn.execute(
        "SELECT id, name, balance_cents FROM accounts WHERE kind = 'customer' ORDER BY id"
    )
    return [Account(*row) for row in await cur.fetchall()]


async def statement(conn: Conn, account: int, limit: int, before: int) -> list[Posting] | None:
    """The newest ``limit`` postings of a customer with an id below ``before``, newest
    first; None if unknown."""
    # One statement, so one snapshot: the account (no row: unknown) and its newest
    # postings (one row of NULLs: none).
    cur = await conn.execute(
        "SELECT p.* FROM accounts a LEFT JOIN LATERAL ("
        " SELECT e.request_id, r.op, e.amount_cents, e.balance_after_cents,"
        " CASE WHEN r.account_id = e.account_id THEN r.counterparty_id"
        " ELSE r.account_id END, r.key, r.created_at"
        " FROM entries e JOIN requests r ON r.id = e.request_id"
        " WHERE e.account_id = a.id AND e.request_id < %s ORDER BY e.request_id DESC LIMIT %s"
        ") p ON true WHERE a.id = %s AND a.kind = 'customer'",
        (before, limit, account),
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    return [Posting(*row) for row in rows if row[0] is not None]


async def journal(conn: Conn, after: int, limit: int) -> list[JournalEntry]:
    """The first ``limit`` applied postings with an id above ``after``, by id."""
    cur = await conn.execute(
        "SELECT r.id, r.created_at, r.op, r.account_id, r.counterparty_id, r.amount_cents,"
        " e.balance_after_cents, r.key FROM requests r"
        " JOIN entries e ON e.account_id = r.account_id AND e.request_id = r.id"
        " WHERE r.id > %s AND r.error_code IS NULL ORDER BY r.id LIMIT %s",
        (after, limit),
    )
    return [JournalEntry(*row) for row in await cur.fetchall()]


_STATS: LiteralString = (
    "SELECT COALESCE(SUM(successful), 0)::bigint, COALESCE(SUM(failed), 0)::bigint FROM stats"
)


async def read_stats(conn: Conn) -> Stats:
    """The sum of the stats shards."""
    successful, failed = await fetchone(conn, _STATS)
    return Stats(successful + failed, successful, failed)


async def verify(conn: Conn) -> VerifyReport:
    """Re-derive every balance from the journal and check the ledger's invariants (those
    every backend checks). Run it in a REPEATABLE READ transaction: one snapshot."""
    findings = VerifyFindings()

    async def check(sql: LiteralString, name: str) -> None:
        cur = await conn.execute(sql + " LIMIT %s", (PROBLEM_EXAMPLES + 1,))
        findings.rows(name, await cur.fetchall())

    per_posting: LiteralString = (
        "WITH p AS (SELECT request_id, COUNT(*) AS n, SUM(amount_cents) AS total,"
        " SUM(GREATEST(amount_cents, 0)) AS moved FROM entries GROUP BY request_id) "
    )
    vault = await fetchone(conn, "SELECT kind FROM accounts WHERE id = %s", (VAULT_ID,))
    await check(
        "SELECT a.id, a.balance_cents, COALESCE(SUM(e.amount_cents), 0) AS derived"
        " FROM accounts a LEFT JOIN entries e ON e.account_id = a.id"
        " WHERE a.kind = 'customer' GROUP BY a.id"
        " HAVING a.balance_cents IS DISTINCT FROM COALESCE(SUM(e.amount_cents), 0)",
        "balance",
    )
    await check(
        "SELECT id, balance_cents FROM accounts"
        " WHERE kind = 'customer' AND NOT COALESCE(balance_cents >= 0, false)",
        "negative",
    )
    await check(
        "SELECT account_id, request_id, balance_after_cents, running FROM ("
        " SELECT e.account_id, e.request_id, e.balance_after_cents, SUM(e.amount_cents)"
        " OVER (PARTITION BY e.account_id ORDER BY e.request_id) AS running"
        " FROM entries e JOIN accounts a ON a.id = e.account_id AND a.kind = 'customer') j"
        " WHERE running IS DISTINCT FROM balance_after_cents",
        "running",
    )
    await check(
        "SELECT e.account_id, e.request_id FROM entries e"
        " LEFT JOIN accounts a ON a.id = e.account_id WHERE a.id IS NULL",
        "entry_account",
    )
    await check(
        per_posting + "SELECT r.id, r.error_code, COALESCE(p.n, 0), p.total, p.moved,"
        " r.amount_cents FROM requests r LEFT JOIN p ON p.request_id = r.id"
        " WHERE (r.error_code IS NULL AND (COALESCE(p.n, 0) != 2 OR p.total != 0"
        " OR p.moved IS DISTINCT FROM r.amount_cents))"
        " OR (r.error_code IS NOT NULL AND p.n > 0)",
        "posting",
    )
    await check(
        per_posting + "SELECT p.request_id FROM p LEFT JOIN requests r"
        " ON r.id = p.request_id WHERE r.id IS NULL",
        "entry_posting",
    )
    (journal_total,) = await fetchone(conn, "SELECT COALESCE(SUM(amount_cents), 0) FROM entries")
    customers, customer_cents = await fetchone(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(balance_cents), 0) FROM accounts WHERE kind = 'customer'",
    )
    postings, keyed_ok, rejected = await fetchone(
        conn,
        "SELECT COUNT(*) FILTER (WHERE error_code IS NULL),"
        " COUNT(*) FILTER (WHERE error_code IS NULL AND key IS NOT NULL),"
        " COUNT(*) FILTER (WHERE error_code IS NOT NULL) FROM requests",
    )
    stats = await read_stats(conn)
    findings.totals(
        has_vault=vault is not None and vault[0] == "system",
        journal_total=journal_total,
        stats=stats,
        keyed_ok=keyed_ok,
        rejected=rejected,
    )
    return findings.report(accounts=customers, postings=postings, total_cents=customer_cents)
