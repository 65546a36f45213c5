"""`socklab bank`: administration of the ledger, straight on the database."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from socklab.cli.bank import redact_url
from socklab.cli.main import main
from socklab.errors import RequestRejected
from socklab.ledger import LedgerSettings, open_ledger
from socklab.services.bank import BankService
from socklab.services.registry import default_ledger_path, resolve_ledger_url


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bank.db'}"


def bank(db: str, *args: str) -> int:
    return main(["bank", "--db", db, *args])


def out_of(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def test_init_demo_creates_the_seed_accounts_once(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bank(db, "init") == 0
    assert out_of(capsys).endswith("(0 accounts).\n")
    assert bank(db, "init", "--demo") == 0
    out = out_of(capsys)
    assert "(3 accounts)." in out
    assert "Created the demo accounts 1 to 3 (PIN 1234, balance 10000.00 each)." in out
    assert bank(db, "init", "--demo") == 0
    assert "no demo accounts added" in out_of(capsys)


def test_open_and_list_accounts(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    bank(db, "init", "--demo")
    out_of(capsys)
    assert bank(db, "open", "--name", "Ada Lovelace", "--pin", "8642", "--deposit", "12.50") == 0
    assert out_of(capsys) == "Opened account 4 for Ada Lovelace, balance 12.50.\n"
    assert bank(db, "accounts") == 0
    assert out_of(capsys) == (
        "account  name             balance\n"
        "      1  Dibbyo Roy      10000.00\n"
        "      2  Abdullah Ashik  10000.00\n"
        "      3  Abir Hasan      10000.00\n"
        "      4  Ada Lovelace       12.50\n"
        "4 accounts, 30012.50 in all.\n"
    )


def test_open_asks_the_pin_hidden_and_never_prints_it(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("97531\n"))
    assert bank(db, "open", "--name", "Bo") == 0
    captured = capsys.readouterr()
    assert "Opened account 1 for Bo, balance 0.00." in captured.out
    assert "97531" not in captured.out + captured.err


@pytest.mark.parametrize(
    ("args", "status", "error"),
    [
        (["open", "--name", "X", "--pin", "12"], 1, "a PIN must be 4 to 12 digits"),
        (["open", "--name", "", "--pin", "1234"], 1, "an account name must be"),
        (["open", "--name", "X", "--pin", "1234", "--deposit", "1.234"], 2, "--deposit"),
        (["statement", "42"], 1, "no account 42"),
        (["unlock", "42"], 1, "no account 42"),
    ],
    ids=["short-pin", "empty-name", "bad-deposit", "unknown-account", "unlock-unknown"],
)
def test_refusals(
    db: str, capsys: pytest.CaptureFixture[str], args: list[str], status: int, error: str
) -> None:
    assert bank(db, *args) == status
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[ERROR]")]
    assert len(errors) == 1 and error in errors[0], errors


def test_a_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bank("mysql://x/y", "stats") == 2
    assert "unsupported ledger URL scheme" in capsys.readouterr().err


def make_history(db: str) -> None:
    bank(db, "init", "--demo")
    service = BankService(db)

    async def history() -> None:
        await service.start()
        ledger = service.ledger
        await ledger.deposit(1, 12_50, key="dep,1")
        await ledger.transfer(1, 2, 2_00, key="tr-1")
        await service.stop()

    import asyncio

    asyncio.run(history())


def test_statement_plain_and_csv(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_history(db)
    out_of(capsys)
    assert bank(db, "statement", "1") == 0
    lines = out_of(capsys).splitlines()
    assert lines[0] == "Account 1 (Dibbyo Roy), balance 10010.50"
    assert lines[1].split() == [
        "posting", "time", "op", "amount", "balance_after", "counterparty", "key",
    ]  # fmt: skip
    assert lines[2].split()[2:] == ["transfer", "-2.00", "10010.50", "2", "tr-1"]
    assert lines[3].split()[2:] == ["deposit", "12.50", "10012.50", "dep,1"]
    assert lines[4].split()[2:] == ["deposit", "10000.00", "10000.00"]
    assert bank(db, "statement", "1", "--csv", "--limit", "2") == 0
    rows = list(csv.reader(io.StringIO(out_of(capsys))))
    assert rows[0] == ["posting", "time", "op", "amount", "balance_after", "counterparty", "key"]
    assert [r[2:] for r in rows[1:]] == [
        ["transfer", "-2.00", "10010.50", "2", "tr-1"],
        ["deposit", "12.50", "10012.50", "", "dep,1"],
    ]
    assert rows[1][1].endswith("Z")


def test_stats(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_history(db)
    out_of(capsys)
    assert bank(db, "stats") == 0
    assert out_of(capsys) == (
        "Total transactions: 2\nSuccessful transactions: 2\nFailed transactions: 0\n"
        "Success rate: 1.00\nError rate: 0.00\n"
    )


def test_verify_passes_on_sound_books(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_history(db)
    out_of(capsys)
    assert bank(db, "verify") == 0
    out = out_of(capsys)
    assert "3 customer accounts, 5 postings, 30012.50 held by customers" in out
    assert "every balance equals the sum of its journal entries" in out
    assert "money is conserved" in out and "no customer balance is negative" in out
    assert out.endswith("OK: the books balance.\n")


def test_verify_fails_on_tampered_books(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_history(db)
    with sqlite3.connect(tmp_path / "bank.db") as conn:
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + 100 WHERE id = 2")
    conn.close()
    out_of(capsys)
    assert bank(db, "verify") == 1
    out = out_of(capsys)
    assert "FAILED:" in out and "account 2" in out


def test_the_default_ledger_lives_in_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SOCKLAB_DB", raising=False)
    assert default_ledger_path() == tmp_path / "data" / "socklab" / "bank.db"
    assert main(["bank", "init", "--demo"]) == 0
    assert (tmp_path / "data" / "socklab" / "bank.db").exists()
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_ledger_url(None) == f"sqlite:///{tmp_path}/home/.local/share/socklab/bank.db"
    assert (tmp_path / "home" / ".local" / "share" / "socklab").is_dir()


def test_socklab_db_names_the_ledger(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCKLAB_DB", db)
    assert main(["bank", "init", "--demo"]) == 0
    assert f"Ledger ready at {db} (3 accounts)." in out_of(capsys)


def test_urls_are_printed_without_passwords() -> None:
    assert redact_url("postgresql://bank:s3cret@db.example:5432/bank") == (
        "postgresql://bank:***@db.example:5432/bank"
    )
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_unlock_lifts_the_lockouts_of_an_account(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from socklab.errors import AccountLocked

    bank(db, "init", "--demo")
    settings = LedgerSettings(max_failed_logins=2, max_account_failed_logins=3)

    async def attempt(client: str, pin: str) -> str:
        ledger = await open_ledger(db, settings)
        try:
            return (await ledger.authenticate(1, pin, client=client)).name
        except RequestRejected as exc:
            return exc.code
        finally:
            await ledger.close()

    wrong = [asyncio.run(attempt(c, "0000")) for c in ("a", "a", "b")]
    assert wrong == ["auth_failed"] * 3  # "a" locked, then the backstop: all locked
    assert asyncio.run(attempt("c", "1234")) == AccountLocked.code
    out_of(capsys)
    assert bank(db, "unlock", "1") == 0
    assert out_of(capsys) == "Account 1 unlocked.\n"
    assert [asyncio.run(attempt(c, "1234")) for c in "abc"] == ["Dibbyo Roy"] * 3
    assert bank(db, "unlock", "1") == 0
    assert "was not locked" in out_of(capsys)
