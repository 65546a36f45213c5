"""``socklab serve``: services from the registry, --port-base, the bank's options, on real
processes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from helpers import HOST, port_is_free, recv_until, start_server_process
from socklab.cli.common import EXIT_USAGE
from socklab.cli.main import main

LISTEN_ATTEMPTS = 5


def free_base(start: int) -> int:
    """A port N with N..N+4 free now (another process may still take one: callers retry)."""
    for base in range(start, 60000, 7):
        if all(port_is_free(base + n) for n in range(5)):
            return base
    raise AssertionError("no five free ports in a row")


def test_port_base_shifts_every_service(tmp_path: Path) -> None:
    base = 20000 + (hash(str(tmp_path)) % 20000)
    for _ in range(LISTEN_ATTEMPTS):
        base = free_base(base)
        try:
            server = start_server_process(
                "--port-base", str(base), "--db", f"sqlite:///{tmp_path / 'bank.db'}", listeners=5
            )
            break
        except AssertionError as exc:  # a port was taken in between: another base
            if "cannot listen" not in str(exc):
                raise
            base += 5
    else:
        pytest.fail("no base with five free ports")
    try:
        assert sorted(server.ports) == [base, base + 1, base + 2, base + 3, base + 4]
        for port, line, answer in [
            (base + 1, b"Hi\n", b"[Lower Case] hi [Upper Case] HI\n"),
            (base + 2, b"121\n", b"[Prime] False [Palindrome] True\n"),
        ]:
            with socket.create_connection((HOST, port), timeout=10) as sock:
                sock.sendall(line)
                assert recv_until(sock) == answer
        with socket.create_connection((HOST, base + 3), timeout=10) as sock:
            sock.sendall(b'{"op": "stats", "id": 1}\n')
            assert json.loads(recv_until(sock))["ok"] is True
    finally:
        assert server.stop() == 0
    text = server.text()
    assert f"Socklab Server started and listening on 127.0.0.1:{base}\n" in text
    assert f"Bank Server started and listening on 127.0.0.1:{base + 3}\n" in text


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["text", "--port", "6000", "--port-base", "7000"], "exclude each other"),
        (["--port-base", "65533"], "--port-base 65533 puts bank on port 65536, past 65535"),
        (["text", "bank", "--port", "6000"], "--port needs exactly one service"),
        (["numbers", "--port-base", "0"], "--port-base"),
    ],
    ids=["port-and-base", "past-65535", "port-with-two", "zero"],
)
def test_port_refusals(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *args]) == EXIT_USAGE
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "error"),
    [("", "must not be empty"), ("x" * 500, "must be at most"), ("a\tb", "must be printable")],
    ids=["empty", "long", "control"],
)
def test_a_bad_exchange_name_is_a_usage_error(
    name: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "exchange", "--port", "0", "--name", name]) == EXIT_USAGE
    assert f"the exchange server's name {error}" in capsys.readouterr().err


def test_the_port_base_comes_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCKLAB_PORT_BASE", "7000")
    assert main(["serve", "text", "numbers", "--port", "6000"]) == EXIT_USAGE
    assert "--port and --port-base exclude each other" in capsys.readouterr().err


def call(sock: socket.socket, request: dict[str, object]) -> dict[str, object]:
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply: dict[str, object] = json.loads(recv_until(sock))
    return reply


def error_code(reply: dict[str, object]) -> str:
    error = reply.get("error")
    return str(error["code"]) if isinstance(error, dict) else "ok"


def test_the_banks_login_limits_and_backstop_are_options(tmp_path: Path) -> None:
    server = start_server_process(
        "bank",
        "--port",
        "0",
        "--db",
        f"sqlite:///{tmp_path / 'bank.db'}",
        "--max-account-failed-logins",
        "2",
        "--login-burst",
        "3",
        "--login-rate",
        "0.001",
    )
    try:
        with socket.create_connection((HOST, server.port), timeout=20) as sock:
            codes = [
                error_code(call(sock, {"op": "login", "account": 1, "pin": pin}))
                for pin in ("0000", "0001", "1234", "1234")
            ]
    finally:
        assert server.stop() == 0
    # Two wrong PINs lock the account for everyone (the backstop at 2, under the 5 per
    # address); the right PIN then meets the lock; the fourth login is past the burst of 3,
    # and the next token is 1000 s away: refused at once.
    assert codes == ["auth_failed", "auth_failed", "account_locked", "too_many_logins"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--login-rate", "0"), ("--login-burst", "0"), ("--max-account-failed-logins", "0")],
)
def test_bad_bank_limits_are_usage_errors(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "bank", "--db", "sqlite://", option, value]) == EXIT_USAGE
    assert f"Invalid value for '{option}': 0" in capsys.readouterr().err


def test_workers_on_sqlite_are_refused_before_anything_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bank.db"
    assert main(["serve", "bank", "--db", f"sqlite:///{db}", "--workers", "2"]) == EXIT_USAGE
    assert "the bank on SQLite runs in one process" in capsys.readouterr().err
    assert not db.exists()
