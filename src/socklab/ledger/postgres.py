"""The PostgreSQL ledger: the same ``Ledger`` as SQLite, for many server processes on many
hosts sharing one database. Needs the ``socklab[postgres]`` extra (psycopg 3, psycopg-pool).

How this works:

- The posting logic runs in the database, as the functions of ``schema_pg/``: a whole
  batch of keyed requests is one statement, ``socklab_post_batch``, so one round trip and
  one transaction (the statement's own: connections are in autocommit mode, and its
  result arrives only after the commit record is flushed, synchronous_commit=on). The
  SQL of the Python side is in ``postgres_store``.
- Group commit (the default): callers append their requests to a list and wait on a
  future; one writer task takes everything pending, posts it as one batch, then resolves
  the futures. If the database refuses a batch (a bug, never a business rejection), it
  has rolled back, and its requests are posted again one per transaction, so that the bad
  one fails alone (what SQLite's savepoint per request gives, without a subtransaction per
  request: ~15% of a batch's time). With ``group_commit=False`` every request is its own
  batch on its own pooled connection, concurrently.
- Concurrency is the database's: a batch first locks the customer rows it may change, in
  id order (SELECT ... ORDER BY id FOR UPDATE), so concurrent batches from any number of
  processes queue but never deadlock, and each account's posting ids grow in commit
  order. A key is claimed by INSERT ... ON CONFLICT DO NOTHING under a UNIQUE constraint:
  of two transactions racing with one key, the second waits for the first and replays
  what it committed. Statistics are sharded rows, so they are no hot spot either.
  (Chosen over SERIALIZABLE with retries by measurement: see docs/architecture.md.)
- Business rejections are rows too (``requests.error_code``), stored and replayed like
  successes; ``precheck`` (amount, same account, impossible ids) runs here, the rest
  (unknown account, overflow, funds) in SQL, in the order of ``sqlite_store.move_money``.
- Reads take a pooled connection each, except ``stats()``, which the bank service calls
  after every transaction: concurrent calls share one query.
- PIN hashing runs in threads, at most ``pin_hash_concurrency`` at once per process; a
  login's verdict (``base.decide_login``) is settled in a transaction holding the
  account's row lock, so concurrent guesses, from every process, are counted one after
  the other. The lockout counters are rows (``accounts``, ``login_failures``): every
  process sees the same.
- Migrations: ``schema_pg/NNNN_name.sql``, applied in order under a transaction-level
  advisory lock (per schema), recorded in ``schema_migrations``; processes starting at
  once wait for each other and the later ones find the work done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from socklab.errors import RequestRejected, StorageError
from socklab.ledger import pins
from socklab.ledger import postgres_store as store
from socklab.ledger.base import (
    DEMO_NAMES,
    DEMO_PIN,
    Account,
    AccountId,
    KeyedPostings,
    KeyedRequest,
    LedgerSettings,
    Posting,
    Receipt,
    Stats,
    VerifyReport,
    check_opening_deposit,
    fits_int64,
    locked_error,
    precheck,
    unknown_account,
    validate_key,
    validate_name,
)
from socklab.ledger.postgres_store import Conn
from socklab.ledger.sqlite_store import MAX_STATEMENT, wrong_pin

__all__ = ["PostgresLedger", "open_postgres_ledger"]

log = logging.getLogger(__name__)

MAX_BATCH = 1024
"""Requests per batch at most: bounds a batch's statement size and the latency it adds."""
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 8
"""Connections per process: the writer's and concurrent reads'. Several processes share
the server's max_connections (100 by default). With ``group_commit=False`` each request
holds one; measured with 16 callers, 8 connections post about as fast as 16 (the
requests queue on the same rows either way)."""
CONNECT_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 5
"""Tries of a batch that fails with a deadlock or serialization failure (none is expected
with the lock order of the schema; other clients of the database may still cause one)."""
_RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)


@dataclass(slots=True)
class _Pending:
    """A request waiting for its batch; ``req=None`` is a transient failure to count."""

    req: KeyedRequest | None
    rejection: RequestRejected | None
    """``precheck``'s verdict, stored as the request's outcome."""
    future: asyncio.Future[Receipt | RequestRejected | None]


class PostgresLedger(KeyedPostings):
    """The PostgreSQL ``Ledger``. Build it with ``open_postgres_ledger``; use it from the
    event loop that opened it."""

    def __init__(
        self, pool: AsyncConnectionPool[Conn], settings: LedgerSettings, where: str
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._where = where
        self._closed = False
        self._hasher = pins.PinHasher(settings.pin_hash_concurrency)
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stats_wanted: asyncio.Future[Stats] | None = None
        self._stats_reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        if settings.group_commit:
            self._writer = asyncio.get_running_loop().create_task(
                self._run_writer(), name="socklab-ledger-write"
            )

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<PostgresLedger {self._where} group_commit={self._settings.group_commit}{state}>"

    # --- plumbing -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection; database failures become ``StorageError``."""
        if self._closed:
            raise StorageError("the ledger is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise _storage_error(exc, self._where) from exc

    async def _submit(self, item: _Pending) -> Receipt | None:
        """Post ``item`` and wait for its commit. Raises its rejection, ``StorageError``."""
        if self._closed:
            raise StorageError("the ledger is closed")
        if self._writer is not None:
            self._pending.append(item)
            self._wakeup.set()
        else:
            # A task of its own, like a queued request: a cancelled caller does not cut
            # the transaction short (its outcome is stored under its key anyway).
            task = asyncio.get_running_loop().create_task(self._run_batch([item]))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        result = await item.future
        if isinstance(result, RequestRejected):
            raise result
        return result

    async def _run_writer(self) -> None:
        # One batch in flight: with several, the batches of one process wait for each
        # other's row locks through their commits, and are smaller. Measured with 16
        # callers: 1 writer 2.8k deposits/s, 2 writers 1.8k, 4 writers 1.8k.
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        """Post ``batch`` in one transaction and resolve its futures. Never raises.

        If the database refuses the batch's statement (a data or integrity error: a bug,
        never a business rejection), it has rolled back; the requests are then posted
        again one per transaction, so that the bad one fails alone (what a savepoint per
        request would give, without its cost on every batch).
        """
        results: list[Receipt | RequestRejected | None] | StorageError
        try:
            results = await self._post_batch(batch)
        except psycopg.Error as exc:
            if store.is_statement_error(exc) and len(batch) > 1:
                log.warning("ledger batch of %d refused (%s); posting one by one", len(batch), exc)
                for item in batch:
                    await self._run_batch([item])
                return
            log.error("ledger batch of %d failed: %s", len(batch), exc)
            results = _storage_error(exc, self._where)
        except Exception as exc:  # the callers hear it; the writer goes on
            log.exception("ledger batch of %d failed", len(batch))
            results = _storage_error(exc, self._where)
        for index, item in enumerate(batch):
            if item.future.done():  # the caller was cancelled; the work is done anyway
                continue
            if isinstance(results, StorageError):
                item.future.set_exception(results)
            else:
                item.future.set_result(results[index])

    async def _post_batch(self, batch: list[_Pending]) -> list[Receipt | RequestRejected | None]:
        """``store.post_batch`` on a pooled connection, retried on a deadlock or a
        serialization failure. Raises ``psycopg.Error``."""
        requests = [(item.req, item.rejection) for item in batch if item.req is not None]
        failures = len(batch) - len(requests)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self._pool.connection() as conn:
                    outcomes = iter(await store.post_batch(conn, requests, failures))
                break
            except _RETRYABLE as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.warning("ledger batch retried (attempt %d): %s", attempt, exc)
                await asyncio.sleep(0.001 * 2**attempt)
        return [None if item.req is None else next(outcomes) for item in batch]

    # --- accounts and PINs --------------------------------------------------------

    async def open_account(self, name: str, pin: str, deposit_cents: int = 0) -> Account:
        name = validate_name(name)
        pins.check_pin_format(pin)
        check_opening_deposit(deposit_cents, self._settings.max_amount_cents)
        pin_hash = await self._hasher.hash(pin)
        async with self._connection() as conn:
            return await store.create_account(
                conn, None, name, pin_hash, deposit_cents, self._settings.clock()
            )

    async def ensure_demo_accounts(self) -> bool:
        async with self._connection() as conn:
            if await store.has_customers(conn):
                return False
        hashes = await asyncio.gather(*(self._hasher.hash(DEMO_PIN) for _ in DEMO_NAMES))
        async with self._connection() as conn, conn.transaction():
            is_created = await store.create_demo_accounts(conn, hashes, self._settings.clock())
        if is_created:
            log.info("created the demo accounts 1 to %d", len(DEMO_NAMES))
        return is_created

    async def authenticate(self, account: AccountId, pin: str, *, client: str = "") -> Account:
        found = None
        if fits_int64(account):
            async with self._connection() as conn:
                found = await store.login_state(conn, account, client)
        pin_hash, state = found if found is not None else (None, None)
        if pin_hash is None or state is None:
            await self._hasher.verify(pin, None)  # as slow as a real check
            raise wrong_pin()
        locked = locked_error(state, self._settings.clock())
        if locked is not None:  # refused before hashing: a locked account costs no CPU
            raise locked
        is_match = await self._hasher.verify(pin, pin_hash)
        async with self._connection() as conn, conn.transaction():
            outcome = await store.settle_login(
                conn, account, client, pin_hash, is_match, self._settings, self._settings.clock()
            )
        if isinstance(outcome, RequestRejected):
            raise outcome
        return outcome

    async def change_pin(
        self, account: AccountId, old_pin: str, new_pin: str, *, client: str = ""
    ) -> None:
        pins.check_pin_format(new_pin)
        await self.authenticate(account, old_pin, client=client)
        new_hash = await self._hasher.hash(new_pin)
        async with self._connection() as conn:
            await store.set_pin_hash(conn, account, new_hash)

    async def unlock(self, account: AccountId) -> bool:
        was_locked = None
        if fits_int64(account):
            async with self._connection() as conn, conn.transaction():
                was_locked = await store.unlock(conn, account, self._settings.clock())
        if was_locked is None:
            raise unknown_account(account)
        log.info("account %s unlocked (was locked: %s)", account, was_locked)
        return was_locked

    # --- reads --------------------------------------------------------------------

    async def get_account(self, account: AccountId) -> Account:
        found = None
        if fits_int64(account):
            async with self._connection() as conn:
                found = await store.get_account(conn, account)
        if found is None:
            raise unknown_account(account)
        return found

    async def accounts(self) -> list[Account]:
        async with self._connection() as conn:
            return await store.list_accounts(conn)

    async def statement(
        self, account: AccountId, limit: int = 10, *, before: int | None = None
    ) -> list[Posting]:
        limit = max(0, min(limit, MAX_STATEMENT))
        before = None if before is None else min(before, 2**63 - 1)
        postings = None
        if fits_int64(account):
            async with self._connection() as conn:
                postings = await store.statement(conn, account, limit, before)
        if postings is None:
            raise unknown_account(account)
        return postings

    async def stats(self) -> Stats:
        # The bank service reads the statistics after every transaction: concurrent
        # calls share one query, started after all of them were made, so each sees at
        # least what was committed before it asked.
        if self._closed:
            raise StorageError("the ledger is closed")
        if self._stats_wanted is None:
            self._stats_wanted = asyncio.get_running_loop().create_future()
            self._stats_wanted.add_done_callback(_retrieve)
            if self._stats_reader is None:
                self._stats_reader = asyncio.get_running_loop().create_task(self._read_stats())
        return await asyncio.shield(self._stats_wanted)

    async def _read_stats(self) -> None:
        while (wanted := self._stats_wanted) is not None:
            self._stats_wanted = None  # who asks from now on waits for the next query
            try:  # the pool, not _connection(): also for callers who came before close()
                async with self._pool.connection() as conn:
                    wanted.set_result(await store.read_stats(conn))
            except Exception as exc:
                wanted.set_exception(_storage_error(exc, self._where))
        self._stats_reader = None

    async def verify(self) -> VerifyReport:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return await store.verify(conn)

    # --- money --------------------------------------------------------------------

    async def _post(self, req: KeyedRequest) -> Receipt:
        validate_key(req.key)
        rejection = precheck(
            req.account, req.counterparty, req.amount_cents, self._settings.max_amount_cents
        )
        receipt = await self._submit(_Pending(req, rejection, _new_future()))
        assert receipt is not None
        return receipt

    async def record_failure(self) -> None:
        await self._submit(_Pending(None, None, _new_future()))

    # --- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer  # it drains every request already queued
        if self._in_flight:
            await asyncio.gather(*self._in_flight)
        if self._stats_reader is not None:
            await self._stats_reader
        await self._pool.close()
        log.debug("ledger %s closed", self._where)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen: its callers may all have gone."""
    if not future.cancelled():
        future.exception()


def _new_future() -> asyncio.Future[Receipt | RequestRejected | None]:
    return asyncio.get_running_loop().create_future()


async def _check_if_suspicious(conn: Conn) -> None:
    """The pool's check before handing out ``conn``: the full check (an empty query, one
    round trip) only when the idle connection's socket has something to read. An idle
    connection has nothing to say; a backend that was terminated or a server that went
    away leaves an error message or an EOF there. Checking every connection every time
    cost about a fifth of the bank's throughput."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable or conn.broken:
        await AsyncConnectionPool.check_connection(conn)


def _storage_error(exc: Exception, where: str) -> StorageError:
    error = StorageError(f"ledger database error ({where}): {exc}")
    error.__cause__ = exc
    return error


async def open_postgres_ledger(dsn: str, settings: LedgerSettings | None = None) -> PostgresLedger:
    """Open the PostgreSQL ledger at ``dsn`` (a libpq URL or key=value string; the tables
    live in the first schema of its ``search_path``), creating and migrating the schema if
    needed.

    Raises ``StorageError`` if the database cannot be reached or migrated.
    """
    settings = settings or LedgerSettings()
    where = store.describe_dsn(dsn)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            conn = await AsyncConnection.connect(dsn, autocommit=True)
            async with conn:
                await store.configure(conn)
                version = await store.migrate(conn)
    except (psycopg.Error, TimeoutError) as exc:
        raise StorageError(f"cannot open the ledger at {where}: {exc}") from exc
    kwargs: dict[str, Any] = {"autocommit": True}
    if not conninfo_to_dict(dsn).get("application_name"):
        kwargs["application_name"] = "socklab"  # for pg_stat_activity
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        dsn,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        kwargs=kwargs,
        configure=store.configure,
        # A connection broken by a database restart is replaced instead of failing a
        # request; see _check_if_suspicious for why this costs no round trip.
        check=_check_if_suspicious,
        open=False,
        name="socklab-ledger",
        timeout=CONNECT_TIMEOUT_S,
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        await pool.close()
        raise StorageError(f"cannot open the ledger at {where}: {exc}") from exc
    log.debug(
        "ledger %s open (schema version %d, group_commit=%s)", where, version, settings.group_commit
    )
    return PostgresLedger(pool, settings, where)
