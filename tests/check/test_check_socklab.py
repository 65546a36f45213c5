"""``socklab check`` against socklab's own servers: every required case passes, in every
dialect each service speaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import start_server_process
from socklab.cli.main import main


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    status = main(["check", *args, "--json"])
    report = json.loads(capsys.readouterr().out)
    return status, {case["id"]: case["result"] for case in report["cases"]}


@pytest.mark.e2e
@pytest.mark.parametrize("service", ["text", "numbers"])
def test_socklab_passes_every_case_in_every_dialect(
    capsys: pytest.CaptureFixture[str], service: str
) -> None:
    server = start_server_process(service, "--port", "0")
    try:
        for dialect in ("lab", "line", "json"):
            status, results = run_check(capsys, service, str(server.port), "--dialect", dialect)
            assert status == 0, results
            assert results, dialect
            assert set(results.values()) == {"pass"}, (dialect, results)
            assert all(case.startswith(f"{dialect}/") for case in results)
    finally:
        assert server.stop() == 0


@pytest.mark.e2e
def test_socklab_bank_passes_and_warns_only_that_the_lab_protocol_cannot_spot_a_retry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = start_server_process("bank", "--port", "0", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    try:
        status, results = run_check(capsys, "bank", str(server.port))
        strict_status, _ = run_check(capsys, "bank", str(server.port), "--strict")
    finally:
        assert server.stop() == 0
    assert status == 0
    assert results.pop("lab/bank/8") == "warning"
    assert set(results.values()) == {"pass"}
    assert strict_status == 1


@pytest.mark.e2e
def test_socklab_exchange_passes_every_case_and_terminates_when_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_server_process("exchange", "--port", "0")
    try:
        status, results = run_check(capsys, "exchange", str(server.port), "--allow-terminate")
        server.wait()  # the out-of-range number stopped it: this returns
    finally:
        server.stop()
    assert "Client int out of range: 0. Terminating the server." in server.text()
    assert status == 0
    assert set(results.values()) == {"pass"}
    assert list(results)[-1] == "original/exchange/3"
