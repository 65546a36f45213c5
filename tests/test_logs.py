"""The seeds' log format, colour only on a terminal, JSON lines, and the CLI's switches."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from socklab.cli.main import main
from socklab.logs import configure_logging, fn, host_port

log = logging.getLogger("socklab.test")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger("socklab")
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = propagate


def handle_client() -> None:
    log.info("Client Number: %d | Server Number: %d | Sum: %d", 25, 10, 35)


def test_the_seed_format_names_the_calling_function() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, stream=stream)
    handle_client()
    log.warning(
        "Client int out of range: %s. Terminating the server.", 0, extra=fn("handle client")
    )
    log.debug("not shown at INFO")
    assert stream.getvalue().splitlines() == [
        "[INFO] [handle_client]: Client Number: 25 | Server Number: 10 | Sum: 35",
        "[WARNING] [handle client]: Client int out of range: 0. Terminating the server.",
    ]


def test_colour_only_on_a_terminal() -> None:
    terminal = Terminal()
    configure_logging(logging.INFO, stream=terminal)
    log.info("hello")
    assert terminal.getvalue() == "\x1b[32m[INFO]\x1b[0m [test_colour_only_on_a_terminal]: hello\n"
    pipe = io.StringIO()
    configure_logging(logging.INFO, stream=pipe)
    log.info("hello")
    assert "\x1b" not in pipe.getvalue()


def test_json_lines() -> None:
    stream = io.StringIO()
    configure_logging(logging.DEBUG, json_lines=True, stream=stream)
    log.debug("Connection accepted from %s", ("127.0.0.1", 5), extra=fn("start_server"))
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "DEBUG" and entry["function"] == "start_server"
    assert entry["message"] == "Connection accepted from ('127.0.0.1', 5)"
    assert entry["logger"] == "socklab.test" and isinstance(entry["time"], float)


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        pytest.param([], logging.INFO, id="default"),
        pytest.param(["-v"], logging.DEBUG, id="verbose"),
        pytest.param(["-q"], logging.WARNING, id="quiet"),
    ],
)
def test_cli_switches(flags: list[str], level: int, capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 refuses connections, so the client logs one ERROR line whatever the level.
    assert main(["exchange", "5", "--port", "1", *flags]) == 1
    assert logging.getLogger("socklab").level == level
    assert capsys.readouterr().err.startswith("[ERROR] [main]: cannot connect to 127.0.0.1:1")


def test_cli_log_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["exchange", "5", "--port", "1", "--log-json"])
    entry = json.loads(capsys.readouterr().err)
    assert entry["level"] == "ERROR" and "cannot connect" in entry["message"]


@pytest.mark.parametrize(
    ("host", "port", "shown"),
    [("127.0.0.1", 5050, "127.0.0.1:5050"), ("::1", 23060, "[::1]:23060"), ("lab", "1", "lab:1")],
)
def test_host_port_puts_an_ipv6_address_in_brackets(host: str, port: int, shown: str) -> None:
    assert host_port(host, port) == shown
