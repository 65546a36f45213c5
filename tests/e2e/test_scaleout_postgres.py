"""End to end: the bank scaled out on PostgreSQL, as real processes on one database.

- Several ``socklab serve bank`` processes (different ports, one database), 50 clients
  spread over them, each losing some replies (``--fail-mode lose-reply``) and retrying
  with the same key on a *different* process, which must answer from the record.
- ``socklab serve bank --workers 2``: ``kill -9`` of one worker under load; the supervisor
  replaces it and the ATM client's keyed retries lose and double nothing.
- ``--workers 2`` on SQLite is refused.

Each test gets its own schema of the test database (``postgres_db.fresh_schema``); without
PostgreSQL these tests fail under ``CI=true`` and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import HOST, ServerProcess, poll, socklab_command, start_server_process
from postgres_db import fresh_schema, require_postgres
from socklab.client.bank_client import BankClient, TxReceipt, new_key
from socklab.client.json_client import JsonClient
from socklab.errors import InsufficientFunds, LinkError
from socklab.ledger import open_ledger
from socklab.money import format_cents

pytestmark = pytest.mark.e2e

ACCOUNTS = range(1, 11)
PIN = "1234"
OPENING_CENTS = 10_000_00
CLIENTS = 50
OPS_PER_CLIENT = 20
STATEMENT_LIMIT = 1000
"""The most postings one ledger statement returns."""
BATCH = 450
"""Operations per phase of the killed-worker test (before the kill, after the restart)."""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_schema(require_postgres()) as url:
        yield url


def open_accounts(url: str) -> dict[int, int]:
    """Accounts 1 to 10 (the demo's three and seven more), 10000.00 each; their balances."""

    async def work() -> dict[int, int]:
        ledger = await open_ledger(url)
        try:
            await ledger.ensure_demo_accounts()
            for n in ACCOUNTS[3:]:
                await ledger.open_account(f"Holder {n}", PIN, OPENING_CENTS)
            return {a.id: a.balance_cents for a in await ledger.accounts()}
        finally:
            await ledger.close()

    start = asyncio.run(work())
    assert start == dict.fromkeys(ACCOUNTS, OPENING_CENTS)
    return start


@dataclass(frozen=True)
class Op:
    kind: str
    account: int
    to: int | None
    amount_cents: int
    key: str


@dataclass(frozen=True)
class Acked:
    """An operation and the answer that settled it."""

    op: Op
    posting_id: int | None
    refused: str | None
    replayed: bool
    server: int
    """Index of the server process that answered."""
    attempts: int
    first_server: int
    """Index of the server process the first attempt went to."""


def random_op(rng: random.Random, account: int, prefix: str) -> Op:
    kind = rng.choice(("deposit", "withdraw", "withdraw", "transfer", "transfer"))
    # Now and then more than any balance, so that refusals are stored and replayed too.
    amount = rng.randint(1, 300_00) if rng.random() < 0.95 else rng.randint(15_000_00, 30_000_00)
    to = rng.choice([a for a in ACCOUNTS if a != account]) if kind == "transfer" else None
    return Op(kind, account, to, amount, new_key(prefix))


def effects(acked: list[Acked]) -> Counter[int]:
    delta: Counter[int] = Counter()
    for a in acked:
        if a.posting_id is None:
            continue
        op = a.op
        delta[op.account] += op.amount_cents if op.kind == "deposit" else -op.amount_cents
        if op.to is not None:
            delta[op.to] += op.amount_cents
    return delta


def journal_keys(url: str) -> tuple[Counter[tuple[int, str]], dict[int, int]]:
    """How often each (account, key) appears in the journal; every account's balance."""

    async def read() -> tuple[Counter[tuple[int, str]], dict[int, int]]:
        ledger = await open_ledger(url)
        try:
            seen: Counter[tuple[int, str]] = Counter()
            for account in ACCOUNTS:
                postings = await ledger.statement(account, STATEMENT_LIMIT)
                assert len(postings) < STATEMENT_LIMIT, "the statement must show the whole journal"
                seen.update((account, p.key) for p in postings if p.key is not None)
            return seen, {a.id: a.balance_cents for a in await ledger.accounts()}
        finally:
            await ledger.close()

    return asyncio.run(read())


def check_books(url: str, start: dict[int, int], acked: list[Acked]) -> None:
    """``socklab bank verify`` passes; no balance is negative; each balance is what the
    acknowledged operations imply; each applied operation is in the journal exactly once
    (on both accounts of a transfer) and nothing else is."""
    done = subprocess.run(
        socklab_command("bank", "--db", url, "verify"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: the books balance." in done.stdout
    seen, after = journal_keys(url)
    assert min(after.values()) >= 0
    delta = effects(acked)
    assert after == {a: start[a] + delta[a] for a in ACCOUNTS}
    expected: Counter[tuple[int, str]] = Counter()
    for a in acked:
        if a.posting_id is not None:
            expected[(a.op.account, a.op.key)] += 1
            if a.op.to is not None:
                expected[(a.op.to, a.op.key)] += 1
    assert seen == expected


# -- several processes, one database -----------------------------------------------------


@dataclass
class Teller:
    """One client: its account, a logged-in connection to each server it has used, and
    its own record of acknowledged operations."""

    ports: list[int]
    account: int
    home: int
    acked: list[Acked] = field(default_factory=list)
    unsettled: list[Op] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _conns: dict[int, JsonClient] = field(default_factory=dict)

    def _conn(self, server: int) -> JsonClient:
        if server not in self._conns:
            conn = JsonClient.connect(HOST, self.ports[server], timeout_s=10)
            try:
                conn.request("login", account=self.account, pin=PIN)
            except BaseException:
                conn.close()
                raise
            self._conns[server] = conn
        return self._conns[server]

    def _drop(self, server: int) -> None:
        conn = self._conns.pop(server, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for server in list(self._conns):
            self._drop(server)

    def send(self, op: Op, first_server: int, attempts: int = 6) -> Acked | None:
        """``op`` until a server answers, with the same key on every attempt; after a lost
        reply the retry goes to the next server. ``None`` if none answered."""
        server = first_server
        fields: dict[str, object] = {"amount": format_cents(op.amount_cents), "key": op.key}
        if op.to is not None:
            fields["to"] = op.to
        for attempt in range(1, attempts + 1):
            try:
                reply = self._conn(server).request(op.kind, **fields)
            except InsufficientFunds as exc:
                return Acked(op, None, exc.code, False, server, attempt, first_server)
            except LinkError:
                self._drop(server)
                server = (server + 1) % len(self.ports)
                continue
            assert (reply["key"], reply["account"]) == (op.key, op.account)
            return Acked(
                op, int(reply["posting"]), None, reply["replayed"], server, attempt, first_server
            )
        return None

    def run(self, seed: int, count: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(count):
                op = random_op(rng, self.account, f"pg{seed}")
                acked = self.send(op, self.home)
                if acked is None:
                    self.unsettled.append(op)
                    continue
                self.acked.append(acked)
                self.home = acked.server  # carry on where the last answer came from
        except BaseException as exc:
            self.errors.append(exc)

    def resend_elsewhere(self, acked: list[Acked]) -> None:
        """``acked`` (operations on this account) again, each to another server than the
        one that answered it; each must get the stored outcome."""
        try:
            for first in acked:
                again = self.send(first.op, (first.server + 1) % len(self.ports))
                assert again is not None, f"no server answered the retry of {first.op}"
                assert again.server != first.server or again.attempts >= len(self.ports)
                assert (again.posting_id, again.refused) == (first.posting_id, first.refused)
                assert again.replayed == (first.posting_id is not None)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.close()


def run_threads(targets: list[threading.Thread], timeout_s: float) -> None:
    for thread in targets:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in targets:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in targets), "clients did not finish in time"


def start_bank(url: str, *extra: str) -> ServerProcess:
    return start_server_process("bank", "--port", "0", "--db", url, *extra)


@pytest.mark.postgres
def test_processes_on_one_database_apply_each_operation_once(postgres_url: str) -> None:
    start = open_accounts(postgres_url)
    # Each process loses the reply of 5% of the money requests after applying them, so
    # clients retry, with the same key, on another process.
    with ThreadPoolExecutor(3) as pool:
        servers = list(
            pool.map(
                lambda n: start_bank(
                    postgres_url, "--fail-rate", "0.05", "--fail-mode", "lose-reply",
                    "--fail-seed", str(n),
                ),
                range(3),
            )
        )  # fmt: skip
    ports = [s.port for s in servers]
    assert len(set(ports)) == 3
    tellers = [Teller(ports, account=n % 10 + 1, home=n % 3) for n in range(CLIENTS)]
    try:
        run_threads(
            [
                threading.Thread(target=t.run, args=(n, OPS_PER_CLIENT))
                for n, t in enumerate(tellers)
            ],
            60,
        )
        assert [e for t in tellers for e in t.errors] == []
        assert [op for t in tellers for op in t.unsettled] == []
        acked = [a for t in tellers for a in t.acked]
        assert len(acked) == CLIENTS * OPS_PER_CLIENT
        assert {a.first_server for a in acked} == {0, 1, 2}
        assert any(a.refused for a in acked) and any(a.op.to for a in acked if a.posting_id)

        # A lost reply came after the request was applied: the retry, on another
        # process, got the stored outcome and applied nothing.
        retried = [a for a in acked if a.attempts > 1]
        assert len(retried) >= 10
        assert all(a.server != a.first_server for a in retried if a.attempts <= len(ports))
        assert all(a.replayed for a in retried if a.posting_id is not None)
        assert not any(a.replayed for a in acked if a.attempts == 1)

        # Every acknowledged operation, retried on another process: the stored outcome
        # (one client per account, to spare logins: each costs a slow PIN check).
        again = {n: Teller(ports, account=n, home=0) for n in ACCOUNTS}
        run_threads(
            [
                threading.Thread(
                    target=again[n].resend_elsewhere,
                    args=([a for a in acked if a.op.account == n],),
                )
                for n in ACCOUNTS
            ],
            60,
        )
        assert [e for t in again.values() for e in t.errors] == []
    finally:
        for teller in tellers:
            teller.close()
        statuses = [server.stop() for server in servers]
        for server in servers:
            print(server.text()[-3000:])  # shown if the test fails
    assert statuses == [0, 0, 0]
    log = "".join(s.text() for s in servers)
    assert ": ok, reply dropped" in log and ": replayed" in log
    check_books(postgres_url, start, acked)


# -- workers: kill -9 of one under load --------------------------------------------------


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@dataclass
class Atm:
    """A client on the ATM's retrying ``BankClient``: the same key on every retry."""

    port: int
    account: int
    acked: list[Acked] = field(default_factory=list)
    receipts: list[TxReceipt] = field(default_factory=list)
    unsettled: list[Op] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def run(self, seed: int, budget: threading.Semaphore, stop: threading.Event) -> None:
        """Operations, one per token taken from ``budget``, until ``stop``."""
        rng = random.Random(seed)
        bank = BankClient(HOST, self.port, timeout_s=10, attempts=8, backoff_s=0.05)
        try:
            bank.login(self.account, PIN)
            while not stop.is_set():
                if not budget.acquire(timeout=0.05):
                    continue
                op = random_op(rng, self.account, f"w{seed}")
                try:
                    receipt = bank.move(op.kind, op.amount_cents, to=op.to, key=op.key)
                except InsufficientFunds as exc:
                    self.acked.append(Acked(op, None, exc.code, False, 0, 1, 0))
                    continue
                except LinkError:
                    self.unsettled.append(op)
                    return
                assert receipt.keys_sent == (op.key,)
                self.receipts.append(receipt)
                self.acked.append(
                    Acked(op, receipt.posting_id, None, receipt.replayed, 0, receipt.attempts, 0)
                )
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            bank.close()


@pytest.mark.postgres
def test_a_killed_worker_is_replaced_and_nothing_is_lost_or_doubled(postgres_url: str) -> None:
    start = open_accounts(postgres_url)
    server = start_bank(postgres_url, "--workers", "2")
    # start_server_process waits for the first worker; the second one says so too.
    assert poll(lambda: server.text().count("started and listening") == 2)
    supervisor = server.proc.pid
    assert poll(lambda: len(children(supervisor)) == 2)
    before = children(supervisor)
    # The load is counted, not timed: at most 2 * BATCH operations in all, so that no
    # account's journal can outgrow what one statement shows.
    budget = threading.Semaphore(0)
    stop = threading.Event()
    atms = [Atm(server.port, account=n % 10 + 1) for n in range(CLIENTS)]
    threads = [
        threading.Thread(target=a.run, args=(n, budget, stop), daemon=True)
        for n, a in enumerate(atms)
    ]

    def acked() -> int:
        return sum(len(a.acked) for a in atms)

    try:
        for thread in threads:
            thread.start()
        # Kill a worker that has served for a while (one just started would do as well).
        budget.release(BATCH)
        assert poll(lambda: acked() >= 300)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)  # while the rest of the first batch is under way
        assert poll(lambda: len(children(supervisor) - before) == 1)
        assert poll(lambda: "started and listening" in server.text().rsplit("restarting it", 1)[-1])
        after_restart = acked()
        budget.release(BATCH)
        assert poll(lambda: acked() >= after_restart + 300)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        status = server.stop()
        print(server.text()[-5000:])  # shown if the test fails
    assert status == 0
    assert f"(pid {victim}) killed by SIGKILL after" in server.text()
    assert [e for a in atms for e in a.errors] == []
    assert [op for a in atms for op in a.unsettled] == []
    assert sum(len(a.acked) for a in atms) <= 2 * BATCH < STATEMENT_LIMIT
    # The clients of the killed worker lost their connections; the ATM client reconnected
    # (to a live worker) and sent the same request with the same key.
    assert any(r.attempts > 1 for a in atms for r in a.receipts)
    check_books(postgres_url, start, [x for a in atms for x in a.acked])


# -- SQLite: one process ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["bank", "--db", "sqlite:///{tmp}/bank.db"], id="sqlite-url"),
        pytest.param(["bank"], id="default-ledger"),
        pytest.param([], id="all-services"),
    ],
)
def test_workers_on_sqlite_are_refused(tmp_path: Path, args: list[str]) -> None:
    command = ["serve", *(a.format(tmp=tmp_path) for a in args), "--workers", "2"]
    done = subprocess.run(
        socklab_command(*command),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "the bank on SQLite runs in one process" in done.stderr
    assert "--db postgresql://... for several workers" in done.stderr
    assert "started and listening" not in done.stderr
    assert list(tmp_path.rglob("*.db")) == []  # refused before opening anything
