"""What is particular to the PostgreSQL backend: several server processes on one database
(each ledger here has its own pool and writers, as a process would), migrations, batches,
connections, URLs. Each test gets its own schema (``postgres_url``, in conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from helpers import bounded_runner, wait_until
from socklab.errors import InsufficientFunds, KeyReused, StorageError
from socklab.ledger import LedgerSettings, Receipt, Stats, open_ledger, postgres_store
from socklab.ledger.postgres import PostgresLedger, open_postgres_ledger
from socklab.ledger.postgres_store import describe_dsn

pytestmark = pytest.mark.postgres

DEMO = 10_000_00
SCHEMA_2 = "0002_keys_per_account_and_lockout_per_address.sql"


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """A runner whose teardown is bounded (``helpers.bounded_runner``): after a database
    failure a test may leave a ledger's writer and pool tasks behind."""
    with bounded_runner() as runner:
        yield runner


def opened(runner: asyncio.Runner, url: str, **settings: Any) -> PostgresLedger:
    ledger = runner.run(open_postgres_ledger(url, LedgerSettings(**settings)))
    runner.run(ledger.ensure_demo_accounts())
    return ledger


def query(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the test's schema behind the ledger's back."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


def balances(runner: asyncio.Runner, ledger: PostgresLedger) -> dict[int, int]:
    return {a.id: a.balance_cents for a in runner.run(ledger.accounts())}


def spy_on_batches(ledger: PostgresLedger, refused: list[int] | None = None) -> list[int]:
    """The sizes of the ledger's committed batches (transactions) from now on, and those
    of the refused ones in ``refused``."""
    sizes: list[int] = []
    original = ledger._post_batch

    async def spy(batch: list[Any]) -> list[Any]:
        try:
            results = await original(batch)
        except psycopg.Error:
            if refused is not None:
                refused.append(len(batch))
            raise
        sizes.append(len(batch))
        return results

    ledger._post_batch = spy  # type: ignore[method-assign]
    return sizes


# --- several processes on one database ------------------------------------------------


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "single"])
def test_two_processes_racing_with_one_key_apply_it_once(
    runner: asyncio.Runner, postgres_url: str, group_commit: bool
) -> None:
    one = opened(runner, postgres_url, group_commit=group_commit)
    two = opened(runner, postgres_url, group_commit=group_commit)

    async def storm() -> list[Receipt]:
        calls = [ledger.transfer(1, 2, 700, key="same") for ledger in (one, two) * 20]
        return await asyncio.gather(*calls)

    receipts = runner.run(storm())
    assert sum(not r.replayed for r in receipts) == 1
    assert len({(r.posting_id, r.balance_cents) for r in receipts}) == 1
    assert balances(runner, two) == {1: DEMO - 700, 2: DEMO + 700, 3: DEMO}
    assert runner.run(one.stats()) == Stats(1, 1, 0)
    assert runner.run(two.verify()).ok
    runner.run(one.close())
    runner.run(two.close())


def test_two_processes_racing_with_one_key_for_different_requests(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    one = opened(runner, postgres_url)
    two = opened(runner, postgres_url)

    async def storm() -> list[object]:
        calls = []
        for _ in range(15):
            calls.append(one.transfer(1, 2, 700, key="k"))
            calls.append(two.deposit(1, 500, key="k"))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = runner.run(storm())
    applied = [r for r in results if isinstance(r, Receipt) and not r.replayed]
    assert len(applied) == 1
    winner = applied[0].op
    for result in results:  # the winner's twins replay it, the others are refused
        if isinstance(result, Receipt):
            assert result.op == winner and result.posting_id == applied[0].posting_id
        else:
            assert isinstance(result, KeyReused)
    refused = sum(isinstance(r, KeyReused) for r in results)
    assert runner.run(two.stats()) == Stats(1 + refused, 1, refused)
    assert runner.run(one.verify()).ok
    runner.run(one.close())
    runner.run(two.close())


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "single"])
def test_crossing_transfers_from_two_processes_never_deadlock(
    runner: asyncio.Runner,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
    group_commit: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="socklab.ledger.postgres")
    one = opened(runner, postgres_url, group_commit=group_commit)
    two = opened(runner, postgres_url, group_commit=group_commit)
    pairs = [(1, 2), (2, 3), (3, 1)]

    async def storm() -> list[object]:
        calls = []
        for i in range(120):
            src, dst = pairs[i % 3]
            amount = 1 + i * 7919 % (DEMO // 4)
            calls.append(one.transfer(src, dst, amount, key=f"a{i}"))
            calls.append(two.transfer(dst, src, amount, key=f"b{i}"))  # the other way round
            calls.append(two.deposit(src, 1 + i, key=f"d{i}"))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = runner.run(storm())
    assert all(isinstance(r, Receipt | InsufficientFunds) for r in results), results
    # No deadlock was detected and retried, either.
    assert not [r for r in caplog.records if "retried" in r.getMessage()]
    report = runner.run(one.verify())
    assert report.ok, report.problems
    assert report.total_cents == 3 * DEMO + sum(1 + i for i in range(120))
    assert sum(balances(runner, two).values()) == report.total_cents
    assert runner.run(one.stats()).total == 360
    runner.run(one.close())
    runner.run(two.close())


# --- migrations -----------------------------------------------------------------------


def test_migrations_are_recorded_and_applied_once(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    runner.run(opened(runner, postgres_url).close())
    runner.run(opened(runner, postgres_url).close())
    rows = query(postgres_url, "SELECT version, name FROM schema_migrations")
    assert rows == [(1, "0001_initial.sql"), (2, SCHEMA_2)]


def test_processes_starting_at_once_migrate_once(runner: asyncio.Runner, postgres_url: str) -> None:
    async def start_many() -> list[PostgresLedger]:
        return await asyncio.gather(*(open_postgres_ledger(postgres_url) for _ in range(6)))

    ledgers = runner.run(start_many())
    assert query(postgres_url, "SELECT COUNT(*) FROM schema_migrations") == [(2,)]
    assert runner.run(ledgers[0].ensure_demo_accounts())
    assert not any(runner.run(ledger.ensure_demo_accounts()) for ledger in ledgers)
    assert runner.run(ledgers[-1].deposit(1, 5, key="k")).balance_cents == DEMO + 5
    for ledger in ledgers:
        runner.run(ledger.close())


def test_a_database_from_a_newer_version_is_refused(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    runner.run(opened(runner, postgres_url).close())
    query(postgres_url, "INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 0)")
    with pytest.raises(StorageError, match="newer"):
        runner.run(open_postgres_ledger(postgres_url))


def test_a_failed_migration_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, runner: asyncio.Runner, postgres_url: str
) -> None:
    broken = [(1, "0001_broken.sql", "CREATE TABLE half (x int);\nTHIS IS NOT SQL;\n")]
    monkeypatch.setattr(postgres_store, "migrations", lambda: broken)
    with pytest.raises(StorageError):
        runner.run(open_postgres_ledger(postgres_url))
    tables = query(postgres_url, "SELECT table_name FROM information_schema.tables"
                   " WHERE table_schema = current_schema()")  # fmt: skip
    assert tables == []


def test_a_search_path_without_a_schema_is_refused(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    url = postgres_url.replace("search_path%3Dsocklab_test_", "search_path%3Dno_such_schema_")
    assert url != postgres_url
    with pytest.raises(StorageError, match="search_path"):
        runner.run(open_postgres_ledger(url))


# --- batches --------------------------------------------------------------------------


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "single"])
def test_group_commit_shares_transactions(
    runner: asyncio.Runner, postgres_url: str, group_commit: bool
) -> None:
    ledger = opened(runner, postgres_url, group_commit=group_commit)
    sizes = spy_on_batches(ledger)

    async def storm() -> None:
        await asyncio.gather(*(ledger.deposit(1 + i % 3, 1, key=f"k{i}") for i in range(200)))

    runner.run(storm())
    assert sum(sizes) == 200
    if group_commit:
        assert max(sizes) > 1 and len(sizes) < 100
    else:
        assert set(sizes) == {1}
    assert runner.run(ledger.verify()).ok
    runner.run(ledger.close())


def test_a_refused_batch_is_posted_again_one_by_one(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    ledger = opened(runner, postgres_url)
    # A constraint the posting code knows nothing about: a stand-in for a bug.
    query(postgres_url, "ALTER TABLE requests ADD CONSTRAINT no_4242"
          " CHECK (amount_cents IS DISTINCT FROM 4242)")  # fmt: skip
    refused: list[int] = []
    sizes = spy_on_batches(ledger, refused)

    async def mixed() -> list[object]:
        calls = [ledger.deposit(1, 10, key=f"a{i}") for i in range(5)]
        calls.append(ledger.deposit(3, 4242, key="bad"))
        calls += [ledger.deposit(2, 10, key=f"b{i}") for i in range(5)]
        calls.append(ledger.record_failure())
        return await asyncio.gather(*calls, return_exceptions=True)

    results = runner.run(mixed())
    # The batch with the bad request, then that batch again one request at a time (the
    # bad one alone is refused again); the other batches were fine.
    assert len(refused) == 2 and refused[0] > 1 and refused[1] == 1
    assert sizes.count(1) >= refused[0] - 1 and sum(sizes) == 11
    assert isinstance(results[5], StorageError)
    assert isinstance(results[5].__cause__, psycopg.errors.CheckViolation)
    assert all(isinstance(r, Receipt) and not r.replayed for r in results[:5] + results[6:11])
    assert balances(runner, ledger) == {1: DEMO + 50, 2: DEMO + 50, 3: DEMO}
    assert runner.run(ledger.stats()) == Stats(11, 10, 1)
    # Nothing was stored under the refused key: once the cause is gone, the retry applies.
    query(postgres_url, "ALTER TABLE requests DROP CONSTRAINT no_4242")
    assert not runner.run(ledger.deposit(3, 4242, key="bad")).replayed
    assert runner.run(ledger.verify()).ok
    runner.run(ledger.close())


def test_keys_that_look_like_syntax_are_just_keys(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    ledger = opened(runner, postgres_url)
    keys = ['a"b', "back\\slash", "{1,2}", "NULL", "null", "'; DROP TABLE requests; --", "k" * 128]

    async def deposits() -> list[Receipt]:
        return await asyncio.gather(*(ledger.deposit(1, 1, key=key) for key in keys))

    assert [r.key for r in runner.run(deposits())] == keys
    assert all(r.replayed for r in runner.run(deposits()))
    assert runner.run(ledger.get_account(1)).balance_cents == DEMO + len(keys)
    runner.run(ledger.close())


def test_a_cancelled_caller_does_not_break_the_writer(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    ledger = opened(runner, postgres_url)

    async def cancel_one() -> None:
        task = asyncio.ensure_future(ledger.deposit(1, 10, key="c"))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    runner.run(cancel_one())
    # The request was posted anyway; its outcome is keyed, so the retry learns it.
    assert runner.run(ledger.deposit(1, 10, key="c")).balance_cents == DEMO + 10
    runner.run(ledger.close())


def test_concurrent_stats_reads_share_queries_and_see_their_own_writes(
    monkeypatch: pytest.MonkeyPatch, runner: asyncio.Runner, postgres_url: str
) -> None:
    ledger = opened(runner, postgres_url)
    queries = 0
    original = postgres_store.read_stats

    async def counted(conn: Any) -> Stats:
        nonlocal queries
        queries += 1
        return await original(conn)

    monkeypatch.setattr(postgres_store, "read_stats", counted)

    async def deposit_then_stats(i: int) -> Stats:
        await ledger.deposit(1 + i % 3, 1, key=f"k{i}")
        return await ledger.stats()

    async def storm() -> list[Stats]:
        return await asyncio.gather(*(deposit_then_stats(i) for i in range(60)))

    seen = runner.run(storm())
    assert queries < 30
    assert all(s.successful >= 1 for s in seen)  # each saw at least its own deposit
    assert runner.run(ledger.stats()) == Stats(60, 60, 0)
    runner.run(ledger.close())


# --- connections ----------------------------------------------------------------------


def test_connections_are_durable_whatever_the_url_says(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    url = postgres_url.replace("-csearch_path", "-csynchronous_commit%3Doff%20-csearch_path")
    assert "synchronous_commit" in url
    ledger = opened(runner, url)

    async def setting() -> object:
        async with ledger._pool.connection() as conn:
            cur = await conn.execute("SELECT current_setting('synchronous_commit')")
            return await cur.fetchone()

    assert runner.run(setting()) == ("on",)
    runner.run(ledger.close())


def test_a_database_restart_costs_no_request(runner: asyncio.Runner, postgres_url: str) -> None:
    name = f"socklab_test_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_url}&application_name={name}"
    ledger = opened(runner, url)
    assert runner.run(ledger.deposit(1, 1, key="before")).balance_cents == DEMO + 1
    killed = query(
        url,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    assert killed and all(ok for (_, ok) in killed)
    # pg_terminate_backend only signals: the restart is over once those backends are gone.
    pids = [pid for (pid, _) in killed]
    wait_until(
        lambda: not query(url, "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)),
        "the terminated backends exited",
    )
    assert runner.run(ledger.deposit(1, 1, key="after")).balance_cents == DEMO + 2
    assert runner.run(ledger.get_account(1)).balance_cents == DEMO + 2
    runner.run(ledger.close())


def test_an_unreachable_database_is_a_storage_error_without_the_password(
    runner: asyncio.Runner,
) -> None:
    with pytest.raises(StorageError) as info:
        runner.run(open_postgres_ledger("postgresql://ada:s3cret@127.0.0.1:1/bank"))
    assert "s3cret" not in str(info.value)
    assert "postgresql://ada@127.0.0.1:1/bank" in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "described"),
    [
        ("postgresql://ada:s3cret@db.example:6543/bank?sslmode=require",
         "postgresql://ada@db.example:6543/bank"),
        ("host=db.example dbname=bank password=s3cret", "postgresql://db.example/bank"),
        ("postgresql:///bank", "postgresql://local socket/bank"),
        ("not a dsn", "postgresql (unparsable connection string)"),
    ],
    ids=["url", "key-value", "socket", "garbage"],
)  # fmt: skip
def test_describe_dsn_never_shows_the_password(dsn: str, described: str) -> None:
    assert describe_dsn(dsn) == described


def test_open_ledger_dispatches_postgres_urls(runner: asyncio.Runner, postgres_url: str) -> None:
    url = postgres_url.replace("postgresql://", "postgres://") + "&group_commit=0"
    ledger = runner.run(open_ledger(url + "&connect_timeout=5"))
    assert isinstance(ledger, PostgresLedger)
    assert "group_commit=False" in repr(ledger)
    runner.run(ledger.close())
    assert "closed" in repr(ledger)


# --- verify ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["UPDATE accounts SET balance_cents = balance_cents + 1 WHERE id = 2"],
         "account 2: balance 1000001, but its journal sums to 1000000"),
        (["ALTER TABLE accounts DROP CONSTRAINT accounts_check",
          "UPDATE accounts SET balance_cents = -5 WHERE id = 3"],
         "account 3: negative balance -5"),
        (["UPDATE entries SET amount_cents = amount_cents + 7"
          " WHERE account_id = 0 AND request_id = 1"],
         "money is not conserved: the journal sums to 7"),
        (["UPDATE entries SET balance_after_cents = 1 WHERE account_id = 1"],
         "balance after 1, journal says"),
        (["DELETE FROM entries WHERE account_id = 0 AND request_id = 1"],
         "posting 1: 1 journal entries"),
        (["UPDATE requests SET amount_cents = 1 WHERE id = 1"],
         "moving 1000000 for an amount of 1"),
        (["UPDATE entries SET account_id = 77 WHERE account_id = 3"],
         "journal entry for a missing account 77"),
        (["DELETE FROM requests WHERE id = 2"], "journal entries for a missing posting 2"),
        (["UPDATE requests SET error_code = 'insufficient_funds' WHERE id = 1"],
         "(rejected: insufficient_funds)"),
        (["UPDATE stats SET successful = successful + 1"], "stats: 1 successful, but 0 postings"),
        (["DELETE FROM accounts WHERE id = 0"], "the vault (account 0) is missing"),
    ],
    ids=["balance", "negative", "journal", "running-balance", "one-sided", "amount",
         "orphan-entry", "orphan-posting", "rejected-with-entries", "stats", "vault"],
)  # fmt: skip
def test_verify_detects_tampering(
    runner: asyncio.Runner, postgres_url: str, statements: list[str], expected: str
) -> None:
    ledger = opened(runner, postgres_url)
    assert runner.run(ledger.verify()).ok
    for statement in statements:
        query(postgres_url, statement)
    report = runner.run(ledger.verify())
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems
    runner.run(ledger.close())


def test_verify_reports_a_few_examples_of_each_problem(
    runner: asyncio.Runner, postgres_url: str
) -> None:
    ledger = opened(runner, postgres_url)
    for i in range(30):
        runner.run(ledger.deposit(1, 1, key=f"k{i}"))
    query(postgres_url, "UPDATE entries SET balance_after_cents = -1 WHERE account_id = 1")
    problems = runner.run(ledger.verify()).problems
    assert len(problems) == 11 and problems[-1].startswith("... and more")
    runner.run(ledger.close())


def test_the_schema_backs_up_the_code(runner: asyncio.Runner, postgres_url: str) -> None:
    runner.run(opened(runner, postgres_url).close())
    with pytest.raises(psycopg.errors.CheckViolation):
        query(postgres_url, "UPDATE accounts SET balance_cents = -1 WHERE id = 1")
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(postgres_url, "INSERT INTO requests (key, key_scope, op, created_at)"
              " SELECT 'k', '1', 'deposit', 0 FROM generate_series(1, 2)")  # fmt: skip
    with pytest.raises(psycopg.errors.CheckViolation):  # a key has a scope
        query(postgres_url, "INSERT INTO requests (key, op, created_at) VALUES ('k', 'deposit', 0)")
    rows = query(postgres_url, sql.SQL("SELECT COUNT(*) FROM {}").format(sql.Identifier("stats"))
                 .as_string())  # fmt: skip
    assert rows == [(1,)]
