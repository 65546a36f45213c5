"""What every command accepts and how every command fails: options anywhere (also after a
subcommand), negative numbers as arguments, and one error format."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from helpers import HOST, RunningServer, running_server
from socklab.cli.common import EXIT_USAGE, options_anywhere
from socklab.cli.main import cli, main
from socklab.logs import configure_logging
from socklab.services.bank import BankService
from socklab.services.numbers import NumbersService

ERROR_LINE = re.compile(r"\[ERROR\] \[main\]: \S.*")
LOG_LINE = re.compile(r"\[(DEBUG|INFO|WARNING|ERROR)\] \[\w+\]: .*")


@pytest.fixture(autouse=True)
def _quiet_servers() -> None:
    """The servers of these tests start before a command configures logging: until then
    their lines go nowhere (not to the stream of an earlier test)."""
    configure_logging(stream=io.StringIO())


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(BankService(f"sqlite:///{tmp_path / 'bank.db'}")) as running:
        yield running


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on (bound, not listening: a connection is refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def balance_of(server: RunningServer, account: int) -> int:
    service = server.listener.service
    assert isinstance(service, BankService)
    return server.call(lambda: service.ledger.get_account(account)).balance_cents


def only_error(err: str) -> str:
    """The one ERROR line of stderr, where every line is in the project's log format."""
    lines = err.splitlines()
    assert all(LOG_LINE.fullmatch(line) for line in lines), err
    errors = [line for line in lines if line.startswith("[ERROR]")]
    assert len(errors) == 1 and ERROR_LINE.fullmatch(errors[0]), err
    return errors[0]


# -- options anywhere ---------------------------------------------------------------------


def test_group_options_after_the_subcommand_are_the_groups(
    bank: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "1234")
    port = str(bank.port)
    assert main(["atm", "--account", "1", "balance", "--port", port]) == 0
    assert capsys.readouterr().out.startswith("Your balance is 10000.00\n")
    assert main(["atm", "balance", "--port", port, "--account=1", "-q", "--timeout", "5"]) == 0
    assert capsys.readouterr().out.startswith("Your balance is 10000.00\n")
    # The subcommand's own options stay its own, before or after the group's.
    assert main(["atm", "statement", "--limit", "1", "--port", port, "--account", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Mini statement of account 1") and out.count("#") == 1


def test_bank_options_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["bank", "init", "--demo", "--db", db]) == 0
    assert main(["bank", "accounts", "--db", db, "--json"]) == 0
    assert capsys.readouterr().out.endswith('"balance": "10000.00"}]\n')


def test_how_arguments_are_reordered() -> None:
    ctx = click.Context(cli, info_name="socklab")
    atm = cli.commands["atm"]
    assert options_anywhere(atm, ["--account", "1", "balance", "--port", "5052", "-v"], ctx) == [
        "--account", "1", "--port", "5052", "-v", "balance",
    ]  # fmt: skip
    assert options_anywhere(atm, ["deposit", "-5", "--account", "1"], ctx) == [
        "--account", "1", "deposit", "--", "-5",
    ]  # fmt: skip
    # A value that looks like an option stays the value of its option.
    assert options_anywhere(atm, ["balance", "--host", "-x"], ctx) == ["--host", "-x", "balance"]
    # `--` ends the options; help stays the subcommand's; unknown commands are click's.
    assert options_anywhere(atm, ["balance", "--", "--port"], ctx) == ["balance", "--", "--port"]
    assert options_anywhere(atm, ["balance", "-h"], ctx) == ["balance", "-h"]
    assert options_anywhere(atm, ["nope", "--port", "1"], ctx) == ["nope", "--port", "1"]
    numbers = cli.commands["numbers"]
    assert options_anywhere(numbers, ["7", "-11", "--port", "1"], ctx) == [
        "--port", "1", "--", "7", "-11",
    ]  # fmt: skip
    assert options_anywhere(numbers, ["7", "--port", "1"], ctx) == ["7", "--port", "1"]


def test_a_subcommand_keeps_an_option_of_the_same_name() -> None:
    @click.group()
    @click.option("--limit", type=int)
    def group(limit: int | None) -> None: ...

    @group.command()
    @click.option("--limit", type=int)
    @click.option("--port", type=int)
    def sub(limit: int | None, port: int | None) -> None: ...

    ctx = click.Context(group)
    assert options_anywhere(group, ["sub", "--limit", "3"], ctx) == ["sub", "--limit", "3"]


# -- negative numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("op", ["deposit", "withdraw"])
def test_a_negative_amount_is_refused_clearly_and_changes_nothing(
    bank: RunningServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    op: str,
) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "1234")
    assert main(["atm", "--account", "1", op, "-5", "--port", str(bank.port)]) == EXIT_USAGE
    line = only_error(capsys.readouterr().err)
    assert line == (
        "[ERROR] [main]: '-5': an amount must not be negative: give it without a sign, like 12.50"
    )
    assert balance_of(bank, 1) == 10_000_00


def test_a_negative_transfer_amount_is_refused(
    bank: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "1234")
    args = ["atm", "--port", str(bank.port), "--account", "1", "transfer", "2", "-1.50"]
    assert main(args) == EXIT_USAGE
    assert "'-1.50': an amount must not be negative" in only_error(capsys.readouterr().err)
    assert (balance_of(bank, 1), balance_of(bank, 2)) == (10_000_00, 10_000_00)


def test_negative_numbers_reach_the_numbers_server(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(NumbersService()) as server:
        assert main(["numbers", "-7", "--port", str(server.port), "--json"]) == 0
    assert '"prime": false' in capsys.readouterr().out


# -- one error format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["exchange", "5", "--timeout", "5"],
        ["text", "hello"],
        ["numbers", "7"],
        ["atm", "--account", "1", "--retries", "0", "balance"],
        ["bench", "text", "--duration", "0.1", "-c", "1"],
    ],
    ids=["exchange", "text", "numbers", "atm", "bench"],
)
def test_every_client_reports_an_unreachable_server_in_one_format(
    args: list[str],
    closed_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "1234")
    assert main([*args, "--port", str(closed_port)]) != 0
    line = only_error(capsys.readouterr().err)
    assert str(closed_port) in line or "refused" in line.lower(), line


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["exchange"],
        ["text"],
        ["numbers"],
        ["atm"],
        ["atm", "balance"],
        ["bank"],
        ["bank", "stats"],
        ["bench"],
        ["demo"],
    ],
    ids=lambda c: "-".join(c),
)
def test_every_usage_error_is_one_error_line(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--no-such-option"]) == EXIT_USAGE
    line = only_error(capsys.readouterr().err)
    path = " ".join(["socklab", *command])
    assert line == (f"[ERROR] [main]: No such option '--no-such-option' (see '{path} --help')"), (
        line
    )


def test_refusals_read_message_then_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bank: RunningServer
) -> None:
    with running_server(NumbersService()) as server:
        assert main(["numbers", "1.5", "--port", str(server.port)]) == 1
    assert only_error(capsys.readouterr().err) == (
        "[ERROR] [main]: '1.5' is not an integer (invalid_request)"
    )
    monkeypatch.setenv("SOCKLAB_PIN", "1234")
    assert main(["atm", "--port", str(bank.port), "--account", "1", "withdraw", "999999"]) == 1
    assert only_error(capsys.readouterr().err) == (
        "[ERROR] [main]: insufficient funds (insufficient_funds)"
    )


def test_errors_follow_log_json(capsys: pytest.CaptureFixture[str], closed_port: int) -> None:
    assert main(["text", "hi", "--log-json", "--port", str(closed_port)]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "ERROR" in x]
    assert line.startswith("{") and '"level": "ERROR"' in line and '"function": "main"' in line
