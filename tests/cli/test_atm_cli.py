"""`socklab atm`: scripted and interactive, against a real bank in a thread."""

from __future__ import annotations

import io
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import HOST, RunningServer, running_server
from socklab.cli.main import main
from socklab.services.bank import BankService


class LoseFirstReplies(random.Random):
    """Fault draws: the first ``n`` money requests are hit, then none."""

    def __init__(self, n: int) -> None:
        super().__init__(0)
        self.n = n

    def random(self) -> float:
        self.n -= 1
        return 0.0 if self.n >= 0 else 0.99


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(BankService(f"sqlite:///{tmp_path / 'bank.db'}")) as running:
        yield running


@pytest.fixture(autouse=True)
def pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "1234")


def atm(server: RunningServer, *args: str) -> int:
    return main(["atm", "--port", str(server.port), *args])


def balance_of(server: RunningServer, account: int) -> int:
    service = server.listener.service
    assert isinstance(service, BankService)
    return server.call(lambda: service.ledger.get_account(account)).balance_cents


# -- scripted -------------------------------------------------------------------------------


def test_scripted_balance(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert atm(server, "--account", "1", "balance") == 0
    assert capsys.readouterr().out == (
        "Your balance is 10000.00\nSuccessful transactions: 0\nTotal transactions: 0\n"
        "Success rate: 0.00\nError rate: 0.00\n"
    )


@pytest.mark.parametrize(
    ("args", "first_lines", "cents_of_1"),
    [
        (["deposit", "12.50"], ["Deposited 12.50", "Your balance is 10012.50"], 10_012_50),
        (["withdraw", "5"], ["Withdrew 5.00", "Your balance is 9995.00"], 9_995_00),
        (["transfer", "2", "1.00"], ["Transferred 1.00 to account 2", "Your balance is 9999.00"],
         9_999_00),
    ],
    ids=["deposit", "withdraw", "transfer"],
)  # fmt: skip
def test_scripted_money(
    server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    first_lines: list[str],
    cents_of_1: int,
) -> None:
    assert atm(server, "--account", "1", *args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == first_lines
    assert lines[2:] == [
        "Successful transactions: 1",
        "Total transactions: 1",
        "Success rate: 1.00",
        "Error rate: 0.00",
    ]
    assert balance_of(server, 1) == cents_of_1


def test_scripted_statement(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert atm(server, "--account", "1", "transfer", "3", "2.25") == 0
    capsys.readouterr()
    assert atm(server, "--account", "1", "statement", "--limit", "5") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Mini statement of account 1 (newest first):"
    assert "transfer" in lines[1] and "-2.25" in lines[1] and "to 3" in lines[1]
    assert "deposit" in lines[2] and "+10000.00" in lines[2]
    assert lines[-1] == "Your balance is 9997.75"


@pytest.mark.parametrize(
    ("args", "status", "error"),
    [
        (["--account", "1", "withdraw", "20000"], 1, "insufficient funds (insufficient_funds)"),
        (["--account", "1", "transfer", "1", "5"], 1, "(same_account)"),
        (["--account", "1", "transfer", "77", "5"], 1, "(unknown_account)"),
        (["--account", "1", "deposit", "2000000"], 1, "(invalid_amount)"),
        (["--account", "9", "balance"], 3, "(auth_failed)"),
        (["--account", "1", "deposit", "12.345"], 2, "at most 2 decimals"),
        (["--account", "1", "deposit", "0"], 2, "more than 0"),
        (["balance"], 2, "needs --account"),
    ],
    ids=["overdraft", "same-account", "unknown-account", "over-max", "unknown-login",
         "bad-amount", "zero", "no-account"],
)  # fmt: skip
def test_scripted_errors_give_one_error_line_and_a_status(
    server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    status: int,
    error: str,
) -> None:
    assert atm(server, *args) == status
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 1 and error in errors[0], captured.err
    assert "Traceback" not in captured.err
    assert balance_of(server, 1) == 10_000_00


def test_a_wrong_pin_from_the_environment(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "4321")
    assert atm(server, "--account", "1", "balance") == 3
    err = capsys.readouterr().err
    assert "[ERROR] [main]: wrong account number or PIN" in err or "(auth_failed)" in err
    assert "4321" not in err


def test_the_pin_is_asked_without_the_environment(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCKLAB_PIN")
    monkeypatch.setattr("sys.stdin", io.StringIO("1234\n"))
    assert atm(server, "--account", "2", "balance") == 0
    out = capsys.readouterr().out
    assert out.startswith("Enter PIN: \nYour balance is 10000.00\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert atm(server, "--account", "2", "balance") == 2


def test_an_unreachable_bank(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    assert main(["atm", "--port", str(port), "--retries", "1", "--account", "1", "balance"]) == 4
    err = capsys.readouterr().err
    assert "Connection refused; reconnecting and retrying login (attempt 2 of 2)" in err
    assert "[ERROR] [main]: cannot reach the bank:" in err and "gave up after 2 attempts" in err


def test_a_dropped_connection_is_retried_with_the_same_key_and_applied_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = BankService(
        f"sqlite:///{tmp_path / 'bank.db'}",
        fail_rate=0.5,
        fail_mode="lose-reply",
        rng=LoseFirstReplies(2),
    )
    with running_server(service) as server:
        assert atm(server, "--account", "1", "deposit", "5") == 0
        assert balance_of(server, 1) == 10_005_00
        postings = server.call(lambda: service.ledger.statement(1, 10))
    captured = capsys.readouterr()
    assert captured.out.startswith("Deposited 5.00\nYour balance is 10005.00\n")
    assert captured.err.count("retrying deposit with the same idempotency key") == 2
    assert "Applied exactly once" in captured.err
    assert [p.op for p in postings] == ["deposit", "deposit"]  # this one and the opening one


# -- interactive ------------------------------------------------------------------------------


def interactive(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, typed: str, *args: str
) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    return atm(server, *args)


def test_an_interactive_session(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    typed = "1\n1234\n1\n2\n12.50\n3\n2.50\n4\n2\n5\n5\n6\n"
    assert interactive(server, monkeypatch, typed) == 0
    out = capsys.readouterr().out
    assert "Welcome Dibbyo Roy!\n1. Check balance\n2. Deposit\n3. Withdraw\n4. Transfer\n" in out
    assert "5. Mini statement\n6. Exit\n" in out
    assert "Your balance is 10000.00\nSuccessful transactions: 0\n" in out
    assert "Deposited 12.50\nYour balance is 10012.50\nSuccessful transactions: 1\n" in out
    assert "Withdrew 2.50\nYour balance is 10010.00\n" in out
    assert "Transferred 5.00 to account 2\nYour balance is 10005.00\n" in out
    assert "Mini statement of account 1 (newest first):" in out
    assert out.endswith("Goodbye.\n")
    assert balance_of(server, 2) == 10_005_00


def test_bad_input_asks_again(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    typed = "x\n0\n1\n1234\n9\nabc\n2\n1.234\n-3\n0\n7.25\n3\n\n6\n"
    assert interactive(server, monkeypatch, typed) == 0
    out = capsys.readouterr().out
    assert out.count("Please enter an account number, like 1.") == 2
    assert out.count("Please choose 1 to 6.") == 2
    assert out.count("Please enter an amount more than 0, like 12.50") == 3
    assert "Deposited 7.25" in out
    assert "Cancelled." in out
    assert balance_of(server, 1) == 10_007_25


def test_a_refused_transaction_shows_the_balance_and_statistics(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert interactive(server, monkeypatch, "1234\n3\n20000\n6\n", "--account", "1") == 0
    out = capsys.readouterr().out
    assert (
        "Transaction failed: insufficient funds (insufficient_funds)\n"
        "Your balance is 10000.00\nTotal transactions: 1\nSuccess rate: 0.00\nError rate: 1.00\n"
    ) in out


def test_wrong_pins_are_asked_again_then_refused(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert interactive(server, monkeypatch, "1\n0000\n1\n1111\n1\n2222\n") == 3
    captured = capsys.readouterr()
    assert captured.out.count("Invalid account number or PIN.") == 2
    assert "[ERROR] [main]: invalid account number or PIN; goodbye" in captured.err
    for pin in ("0000", "1111", "2222"):
        assert pin not in captured.out + captured.err


@pytest.mark.parametrize("typed", ["", "1\n", "1\n1234\n", "1\n1234\n2\n"])
def test_end_of_input_says_goodbye(
    server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    typed: str,
) -> None:
    assert interactive(server, monkeypatch, typed) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("Goodbye.\n")
    assert "Traceback" not in captured.err


def test_ctrl_c_says_goodbye(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(prompt: str = "") -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupted)
    assert atm(server) == 130
    captured = capsys.readouterr()
    assert captured.out.endswith("Goodbye.\n")
    assert "Traceback" not in captured.err
