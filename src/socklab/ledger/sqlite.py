"""The embedded SQLite ledger: durable (WAL, synchronous=FULL), exactly-once, group commit.

How this works:

- One writer thread owns the write connection and takes jobs (functions of the
  connection) from a queue. It drains every pending job into one transaction (with
  ``group_commit=False``, one job per transaction), runs each job in its own SAVEPOINT
  (a job that fails unexpectedly is rolled back alone), adds the batch's request counts
  to the stats row, commits once, and only then resolves the jobs' futures on their
  event loop (``call_soon_threadsafe``): nobody hears "done" before the fsync.
- A money job looks its key up first: a hit is answered from the stored outcome (or is
  ``KeyReused``); a miss is decided and its outcome stored in the same transaction as the
  balance change (``sqlite_store.post``). The single writer serialises concurrent
  requests with the same key, also across processes (BEGIN IMMEDIATE).
- Business rejections are stored rows, returned by the job rather than raised, so their
  savepoint is released and they commit with the batch; ``_write`` raises them.
- Reads run the same way on a reader thread with a second connection, in batches but
  without a transaction (WAL readers do not wait for the writer). An in-memory database
  has a single connection, so there reads are writer jobs.
- PIN hashing (slow on purpose) runs in the default executor, never in the writer, at
  most ``pin_hash_concurrency`` at once (``pins.PinHasher``).
- Lockout counters (``base.decide_login``) are rows of the database, so every process
  sharing the file sees and counts the same failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from socklab.errors import RequestRejected, StorageError
from socklab.ledger import pins
from socklab.ledger import sqlite_store as store
from socklab.ledger.base import (
    DEMO_BALANCE_CENTS,
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
    unknown_account,
    validate_key,
    validate_name,
)

__all__ = ["SqliteLedger", "open_sqlite_ledger", "sqlite_path_from_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")
MEMORY = store.MEMORY
MAX_BATCH = 1024
"""Postings per transaction at most: bounds the latency a batch adds."""


def sqlite_path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``;
    ``sqlite://`` and ``sqlite:///:memory:`` -> ``:memory:``. Raises ``ValueError``."""
    prefix = "sqlite://"
    if not url.lower().startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len(prefix) :].partition("?")[0]
    if rest in ("", "/", "/" + MEMORY):
        return MEMORY
    if not rest.startswith("/"):
        raise ValueError("a sqlite URL has no host: use sqlite:///relative.db or sqlite:////abs.db")
    return rest[1:]


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection], object]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class _Worker:
    """A thread that owns one connection and runs queued jobs in batches.

    ``run_batch(conn, jobs)`` returns one result per job (an exception is a result too).
    A batch's futures are then resolved with one ``call_soon_threadsafe`` per event loop,
    which keeps the loop's wake-ups few under load.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        run_batch: Callable[[sqlite3.Connection, list[_Job]], list[object]],
        *,
        max_batch: int,
    ) -> None:
        self._connect = connect
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[sqlite3.Connection], object]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job(job, future, loop))
        return future

    def stop(self) -> None:
        """Finish every job queued so far, close the connection, end. Blocks."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        is_stopping = False
        while not is_stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [cast(_Job, first)]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    is_stopping = True
                    break
                batch.append(cast(_Job, item))
            try:
                if conn is None:
                    conn = self._connect()
                results = self._run_batch(conn, batch)
            except Exception as exc:  # no connection: every job fails alike
                results = [_storage_error(exc)] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]]
            by_loop = {}
            for job, result in zip(batch, results, strict=True):
                by_loop.setdefault(job.loop, []).append((job.future, result))
            for loop, outcomes in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_resolve, outcomes)
        if conn is not None:
            conn.close()


class SqliteLedger(KeyedPostings):
    """The SQLite ``Ledger``. Build it with ``open_sqlite_ledger``."""

    def __init__(self, path: str, settings: LedgerSettings, conn: sqlite3.Connection) -> None:
        self._path = path
        self._settings = settings
        self._closed = False
        self._hasher = pins.PinHasher(settings.pin_hash_concurrency)
        self._committed_stats: Stats | None = None
        # Request counts of the batch being written; only the writer thread touches them.
        self._successful = 0
        self._failed = 0
        self._writer = _Worker(
            "socklab-ledger-write",
            lambda: conn,
            self._write_batch,
            max_batch=MAX_BATCH if settings.group_commit else 1,
        )
        # In memory there is one connection, the writer's: reads are writer jobs there.
        self._reader = self._writer
        if path != MEMORY:
            self._reader = _Worker(
                "socklab-ledger-read", self._connect_reader, _read_batch, max_batch=MAX_BATCH
            )

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<SqliteLedger {self._path!r} group_commit={self._settings.group_commit}{state}>"

    # --- the writer and the reader ------------------------------------------------

    async def _write(self, job: Callable[[sqlite3.Connection], T | RequestRejected]) -> T:
        """Run ``job`` in the writer's next transaction and wait for the commit.

        Raises a rejection the job returns, ``StorageError`` if the write failed.
        """
        if self._closed:
            raise StorageError("the ledger is closed")
        result: T | RequestRejected = await self._writer.submit(job)
        if isinstance(result, RequestRejected):
            raise result
        return result

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on the read connection. Raises ``StorageError``."""
        if self._closed:
            raise StorageError("the ledger is closed")
        result: T = await self._reader.submit(job)
        return result

    def _connect_reader(self) -> sqlite3.Connection:
        conn = store.connect(self._path)
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[object]:
        """One transaction for ``batch``: a savepoint per job, one commit."""
        results: list[object] = []
        self._successful = self._failed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                counts = (self._successful, self._failed)
                conn.execute("SAVEPOINT job")
                try:
                    result = job.run(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._successful, self._failed = counts
                    log.exception("ledger job failed; rolled back alone")
                    result = _storage_error(exc)
                else:
                    conn.execute("RELEASE job")
                results.append(result)
            stats = None
            if self._successful or self._failed:
                store.add_stats(conn, self._successful, self._failed)
                stats = store.read_stats(conn)
            conn.execute("COMMIT")
            if stats is not None:
                self._committed_stats = stats  # before any caller of this batch is answered
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("ledger transaction failed: %s", exc)
            results = [_storage_error(exc)] * len(batch)
        return results

    def _count(self, result: object, is_new: bool) -> None:
        if is_new:
            if isinstance(result, RequestRejected):
                self._failed += 1
            else:
                self._successful += 1

    # --- accounts and PINs --------------------------------------------------------

    async def open_account(self, name: str, pin: str, deposit_cents: int = 0) -> Account:
        name = validate_name(name)
        pins.check_pin_format(pin)
        check_opening_deposit(deposit_cents, self._settings.max_amount_cents)
        pin_hash = await self._hasher.hash(pin)
        now = self._settings.clock()
        return await self._write(
            lambda conn: store.create_account(conn, None, name, pin_hash, deposit_cents, now)
        )

    async def ensure_demo_accounts(self) -> bool:
        if await self._read(store.has_customers):
            return False
        hashes = await asyncio.gather(*(self._hasher.hash(DEMO_PIN) for _ in DEMO_NAMES))
        now = self._settings.clock()

        def create(conn: sqlite3.Connection) -> bool:
            if store.has_customers(conn):
                return False
            for number, (name, pin_hash) in enumerate(zip(DEMO_NAMES, hashes, strict=True), 1):
                store.create_account(conn, number, name, pin_hash, DEMO_BALANCE_CENTS, now)
            return True

        is_created = await self._write(create)
        if is_created:
            log.debug("created the demo accounts 1 to %d", len(DEMO_NAMES))
        return is_created

    async def authenticate(self, account: AccountId, pin: str, *, client: str = "") -> Account:
        found = None
        if fits_int64(account):
            found = await self._read(lambda conn: store.login_state(conn, account, client))
        pin_hash, state = found if found is not None else (None, None)
        if pin_hash is None or state is None:
            await self._hasher.verify(pin, None)  # as slow as a real check
            raise store.wrong_pin()
        locked = locked_error(state, self._settings.clock())
        if locked is not None:  # refused before hashing: a locked account costs no CPU
            raise locked
        is_match = await self._hasher.verify(pin, pin_hash)
        settings = self._settings
        return await self._write(
            lambda conn: store.settle_login(
                conn, account, client, pin_hash, is_match, settings, settings.clock()
            )
        )

    async def change_pin(
        self, account: AccountId, old_pin: str, new_pin: str, *, client: str = ""
    ) -> None:
        pins.check_pin_format(new_pin)
        await self.authenticate(account, old_pin, client=client)
        new_hash = await self._hasher.hash(new_pin)
        await self._write(lambda conn: store.set_pin_hash(conn, account, new_hash))

    async def unlock(self, account: AccountId) -> bool:
        was_locked = None
        if fits_int64(account):
            now = self._settings.clock()
            was_locked = await self._write(lambda conn: store.unlock(conn, account, now))
        if was_locked is None:
            raise unknown_account(account)
        log.info("account %s unlocked (was locked: %s)", account, was_locked)
        return was_locked

    # --- reads --------------------------------------------------------------------

    async def get_account(self, account: AccountId) -> Account:
        found = None
        if fits_int64(account):
            found = await self._read(lambda conn: store.get_account(conn, account))
        if found is None:
            raise unknown_account(account)
        return found

    async def accounts(self) -> list[Account]:
        return await self._read(store.list_accounts)

    async def statement(
        self, account: AccountId, limit: int = 10, *, before: int | None = None
    ) -> list[Posting]:
        limit = max(0, min(limit, store.MAX_STATEMENT))
        before = None if before is None else min(before, 2**63 - 1)
        postings = None
        if fits_int64(account):
            postings = await self._read(lambda conn: store.statement(conn, account, limit, before))
        if postings is None:
            raise unknown_account(account)
        return postings

    async def stats(self) -> Stats:
        # The statistics as of the writer's last commit (read inside that transaction, so
        # they include every process's committed counts): each caller answered so far sees
        # its own request counted, without a trip to the reader thread. Until this process
        # has written, the database is read.
        committed = self._committed_stats
        if committed is not None:
            return committed
        return await self._read(store.read_stats)

    async def verify(self) -> VerifyReport:
        return await self._read(store.verify)

    # --- money --------------------------------------------------------------------

    async def _post(self, req: KeyedRequest) -> Receipt:
        validate_key(req.key)
        max_amount_cents = self._settings.max_amount_cents
        clock = self._settings.clock

        def job(conn: sqlite3.Connection) -> Receipt | RequestRejected:
            result, is_new = store.post(conn, req, max_amount_cents, clock())
            self._count(result, is_new)
            return result

        return await self._write(job)

    async def record_failure(self) -> None:
        def job(conn: sqlite3.Connection) -> None:
            self._failed += 1

        await self._write(job)

    # --- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Every job queued before this point finishes first: the queues are FIFO.
        await asyncio.to_thread(self._writer.stop)
        if self._reader is not self._writer:
            await asyncio.to_thread(self._reader.stop)
        log.debug("ledger %s closed", self._path)


def _resolve(outcomes: list[tuple[asyncio.Future[Any], object]]) -> None:
    for future, result in outcomes:
        if future.done():  # the caller was cancelled; the work is done (and keyed) anyway
            continue
        if isinstance(result, Exception) and not isinstance(result, RequestRejected):
            future.set_exception(result)
        else:
            future.set_result(result)


def _read_batch(conn: sqlite3.Connection, batch: list[_Job]) -> list[object]:
    results: list[object] = []
    for job in batch:
        try:
            results.append(job.run(conn))
        except Exception as exc:
            results.append(_storage_error(exc))
    return results


def _storage_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error | OSError):
        error = StorageError(f"ledger storage failed: {exc}")
        error.__cause__ = exc
        return error
    return exc


async def open_sqlite_ledger(path: str, settings: LedgerSettings | None = None) -> SqliteLedger:
    """Open the SQLite ledger at ``path`` (``:memory:`` for a throwaway one), creating
    and migrating the database if needed.

    Raises ``StorageError`` if the database cannot be opened or migrated.
    """

    def open_and_migrate() -> sqlite3.Connection:
        conn = store.connect(path)
        try:
            store.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        conn = await asyncio.to_thread(open_and_migrate)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open the ledger at {path!r}: {exc}") from exc
    settings = settings or LedgerSettings()
    log.debug("ledger %s open (group_commit=%s)", path, settings.group_commit)
    return SqliteLedger(path, settings, conn)
