"""``socklab bench``: JSON for scripts, a summary for people, clear usage errors."""

from __future__ import annotations

import json
import socket

import pytest

from helpers import HOST, running_server
from socklab.cli.main import main
from socklab.services.text import TextService

QUICK = ["--connections", "2", "--duration", "0.3", "--warmup", "0.05"]


def test_json_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(TextService()) as server:
        status = main(["bench", "text", "--port", str(server.port), *QUICK, "--json"])
    out = capsys.readouterr().out
    assert status == 0
    result = json.loads(out)
    assert result["service"] == "text"
    assert result["dialect"] == "json"
    assert result["errors"] == 0
    assert result["requests"] > 0
    assert result["requests_per_s"] > 0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


def test_human_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(TextService()) as server:
        status = main(
            ["bench", "text", "--port", str(server.port), *QUICK, "--dialect", "lab", "-q"]
        )
    out = capsys.readouterr().out
    assert status == 0
    assert "text over lab" in out
    assert "req/s" in out
    assert "p99" in out
    assert "errors     0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exchange", "--dialect", "lab"], "runs over json, line, not lab"),
        (["text", "--connections", "2", "--processes", "3"], "cannot exceed"),
        (["bank", "--param", "account"], "KEY=VALUE"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *args, "--port", "9", "--duration", "0.1"]) == 2
    assert message in capsys.readouterr().err


def test_nothing_to_connect_to(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        assert main(["bench", "text", "--port", str(port), *QUICK]) == 1
    assert "cannot connect" in capsys.readouterr().err
