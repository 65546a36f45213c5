"""What is particular to the SQLite backend: its file, schema, writer and URLs."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from socklab.errors import InsufficientFunds, StorageError
from socklab.ledger import Ledger, LedgerSettings, open_ledger, split_ledger_url
from socklab.ledger import sqlite as sqlite_ledger
from socklab.ledger import sqlite_store as store
from socklab.ledger.sqlite import SqliteLedger, open_sqlite_ledger, sqlite_path_from_url

DEMO = 10_000_00
SCHEMA_2 = "0002_keys_per_account_and_lockout_per_address.sql"


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "bank.db"


def opened(runner: asyncio.Runner, path: Path | str, **settings: object) -> SqliteLedger:
    ledger = runner.run(open_sqlite_ledger(str(path), LedgerSettings(**settings)))  # type: ignore[arg-type]
    runner.run(ledger.ensure_demo_accounts())
    return ledger


def tamper(path: Path, *statements: str) -> None:
    """Change the database behind the ledger's back (CHECK constraints off)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    for sql in statements:
        conn.execute(sql)
    conn.close()


# --- verify ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["UPDATE accounts SET balance_cents = balance_cents + 1 WHERE id = 2"],
         "account 2: balance 1000001, but its journal sums to 1000000"),
        (["UPDATE accounts SET balance_cents = -5 WHERE id = 3"], "account 3: negative balance -5"),
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
    runner: asyncio.Runner, db: Path, statements: list[str], expected: str
) -> None:
    ledger = opened(runner, db)
    assert runner.run(ledger.verify()).ok
    tamper(db, *statements)
    report = runner.run(ledger.verify())
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems
    runner.run(ledger.close())


def test_verify_reports_a_few_examples_of_each_problem(runner: asyncio.Runner, db: Path) -> None:
    ledger = opened(runner, db)
    for i in range(30):
        runner.run(ledger.deposit(1, 1, key=f"k{i}"))
    tamper(db, "UPDATE entries SET balance_after_cents = -1 WHERE account_id = 1")
    problems = runner.run(ledger.verify()).problems
    assert len(problems) == 11 and problems[-1].startswith("... and more")
    runner.run(ledger.close())


def test_the_customer_balance_check_constraint_backs_up_the_code(db: Path) -> None:
    with asyncio.Runner() as runner:
        runner.run(opened(runner, db).close())
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE accounts SET balance_cents = -1 WHERE id = 1")
    conn.close()


# --- the file and the schema ----------------------------------------------------------


def test_the_database_is_wal_private_and_versioned(runner: asyncio.Runner, db: Path) -> None:
    ledger = opened(runner, db)
    runner.run(ledger.deposit(1, 1, key="k"))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    versions = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert versions == [(1, "0001_initial.sql"), (2, SCHEMA_2)]
    conn.close()
    runner.run(ledger.close())
    runner.run(opened(runner, db).close())  # reopening applies nothing twice
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (2,)
    conn.close()


def test_the_write_connection_is_durable(runner: asyncio.Runner, db: Path) -> None:
    conn = store.connect(str(db))
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_a_database_from_a_newer_version_is_refused(runner: asyncio.Runner, db: Path) -> None:
    runner.run(opened(runner, db).close())
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 0)")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        runner.run(open_sqlite_ledger(str(db)))


def test_a_failed_migration_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, runner: asyncio.Runner, db: Path
) -> None:
    broken = [(1, "0001_broken.sql", "CREATE TABLE half (x);\nTHIS IS NOT SQL;\n")]
    monkeypatch.setattr(store, "migrations", lambda: broken)
    with pytest.raises(StorageError):
        runner.run(open_sqlite_ledger(str(db)))
    conn = sqlite3.connect(db)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "half" not in tables


def test_split_statements() -> None:
    script = "-- a comment\nCREATE TABLE a (x);\nINSERT INTO a VALUES (';');\n-- trailing\n"
    assert store.split_statements(script) == [
        "-- a comment\nCREATE TABLE a (x);",
        "INSERT INTO a VALUES (';');",
    ]
    with pytest.raises(StorageError):
        store.split_statements("CREATE TABLE b (x)")


def test_an_unopenable_path_is_a_storage_error(runner: asyncio.Runner, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        runner.run(open_sqlite_ledger(str(tmp_path / "no" / "such" / "dir.db")))


# --- the writer -----------------------------------------------------------------------


def spy_on_batches(ledger: SqliteLedger) -> list[int]:
    """The sizes of the writer's batches (transactions) from now on."""
    sizes: list[int] = []
    writer = ledger._writer
    original = writer._run_batch

    def spy(conn: sqlite3.Connection, batch: list[sqlite_ledger._Job]) -> list[object]:
        sizes.append(len(batch))
        return original(conn, batch)

    writer._run_batch = spy
    return sizes


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "single"])
def test_group_commit_shares_transactions(
    runner: asyncio.Runner, db: Path, group_commit: bool
) -> None:
    ledger = opened(runner, db, group_commit=group_commit)
    sizes = spy_on_batches(ledger)

    async def storm() -> None:
        await asyncio.gather(*(ledger.deposit(1, 1, key=f"k{i}") for i in range(200)))

    runner.run(storm())
    assert sum(sizes) == 200
    if group_commit:
        assert max(sizes) > 1 and len(sizes) < 100
    else:
        assert set(sizes) == {1}
    runner.run(ledger.close())


def test_a_failing_job_is_rolled_back_alone(runner: asyncio.Runner, db: Path) -> None:
    ledger = opened(runner, db)
    sizes = spy_on_batches(ledger)

    def half_then_crash(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE accounts SET name = 'mangled' WHERE id = 1")
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    async def mixed() -> list[object]:
        calls = [ledger.deposit(1, 10, key=f"a{i}") for i in range(5)]
        calls.append(ledger._write(half_then_crash))
        calls += [ledger.deposit(2, 10, key=f"b{i}") for i in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = runner.run(mixed())
    assert sizes == [11]  # all in one transaction
    assert isinstance(results[5], StorageError)
    assert isinstance(results[5].__cause__, sqlite3.OperationalError)
    accounts = {a.id: a for a in runner.run(ledger.accounts())}
    assert accounts[1].name == "Dibbyo Roy"
    assert (accounts[1].balance_cents, accounts[2].balance_cents) == (DEMO + 50, DEMO + 50)
    assert runner.run(ledger.stats()).successful == 10
    runner.run(ledger.close())


def test_a_failed_transaction_fails_every_job_in_the_batch(
    runner: asyncio.Runner, db: Path
) -> None:
    ledger = opened(runner, db)
    other = sqlite3.connect(db, isolation_level=None)
    runner.run(ledger._write(lambda conn: conn.execute("PRAGMA busy_timeout = 0")))
    other.execute("BEGIN IMMEDIATE")  # hold the write lock: the writer's BEGIN fails

    async def two() -> list[object]:
        calls = [ledger.deposit(1, 10, key="a"), ledger.deposit(1, 10, key="b")]
        return await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, StorageError) for r in runner.run(two()))
    other.execute("ROLLBACK")
    other.close()
    # Nothing was stored under those keys: the retries apply.
    assert not runner.run(ledger.deposit(1, 10, key="a")).replayed
    assert runner.run(ledger.get_account(1)).balance_cents == DEMO + 10
    runner.run(ledger.close())


def test_a_cancelled_caller_does_not_break_the_writer(runner: asyncio.Runner, db: Path) -> None:
    ledger = opened(runner, db)

    async def cancel_one() -> None:
        task = asyncio.ensure_future(ledger.deposit(1, 10, key="c"))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    runner.run(cancel_one())
    # The job ran anyway; its outcome is keyed, so the retry learns it.
    assert runner.run(ledger.deposit(1, 10, key="c")).balance_cents == DEMO + 10
    runner.run(ledger.close())


# --- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///bank.db", "bank.db"),
        ("sqlite:///data/bank.db", "data/bank.db"),
        ("sqlite:////var/lib/socklab/bank.db", "/var/lib/socklab/bank.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
        ("SQLite:///bank.db?group_commit=0", "bank.db"),
    ],
)
def test_sqlite_paths(url: str, path: str) -> None:
    assert sqlite_path_from_url(url) == path


def test_a_sqlite_url_with_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="no host"):
        sqlite_path_from_url("sqlite://host/bank.db")


def test_url_options_become_settings() -> None:
    base = LedgerSettings(max_failed_logins=9)
    url = "sqlite:////tmp/b.db?group_commit=off&lockout_s=1.5&max_amount_cents=500"
    scheme, stripped, settings = split_ledger_url(url, base)
    assert (scheme, stripped) == ("sqlite", "sqlite:////tmp/b.db")
    assert settings == LedgerSettings(
        max_amount_cents=500, max_failed_logins=9, lockout_s=1.5, group_commit=False
    )


def test_postgres_urls_keep_their_own_options() -> None:
    scheme, stripped, settings = split_ledger_url(
        "postgresql://u@db:5432/bank?sslmode=require&group_commit=false"
    )
    assert (scheme, stripped) == ("postgresql", "postgresql://u@db:5432/bank?sslmode=require")
    assert settings.group_commit is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x/y", "unsupported ledger URL scheme"),
        ("bank.db", "unsupported ledger URL scheme"),
        ("sqlite:///b.db?colour=red", "unknown ledger URL option 'colour'"),
        ("sqlite:///b.db?group_commit=maybe", "bad value for ledger URL option 'group_commit'"),
        ("sqlite:///b.db?max_failed_logins=0", "max_failed_logins"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_ledger_url(url)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_ledger_works(runner: asyncio.Runner, url: str) -> None:
    ledger: Ledger = runner.run(open_ledger(url))
    assert runner.run(ledger.ensure_demo_accounts())

    async def work() -> None:
        await asyncio.gather(*(ledger.transfer(1, 2, 5, key=f"k{i}") for i in range(20)))

    runner.run(work())
    assert runner.run(ledger.get_account(2)).balance_cents == DEMO + 100
    assert runner.run(ledger.verify()).ok
    assert len(runner.run(ledger.statement(1, limit=100))) == 21
    runner.run(ledger.close())


def test_open_ledger_reads_a_relative_path(
    monkeypatch: pytest.MonkeyPatch, runner: asyncio.Runner, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger: Ledger = runner.run(open_ledger("sqlite:///rel.db?group_commit=0"))
    runner.run(ledger.close())
    assert (tmp_path / "rel.db").exists()


def test_stats_after_a_posting_come_from_its_commit_not_a_read(
    runner: asyncio.Runner, db: Path
) -> None:
    ledger = opened(runner, db)
    assert runner.run(ledger.stats()).total == 0  # nothing written yet: read from the file
    runner.run(ledger.deposit(1, 100, key="a"))
    with pytest.raises(InsufficientFunds):
        runner.run(ledger.withdraw(2, 10**8, key="b"))

    async def no_reads(job: object) -> object:
        raise AssertionError("stats() went to the reader thread")

    ledger._read = no_reads  # type: ignore[method-assign]
    stats = runner.run(ledger.stats())
    assert (stats.total, stats.successful, stats.failed) == (2, 1, 1)
    runner.run(ledger.close())
