"""``socklab check`` against the handouts' own servers: the documented result tables.

These tables are in docs/check.md; if one changes, change it there too.
"""

from __future__ import annotations

import json

import pytest
from handout_servers import handout_server

from socklab.cli.main import main

TIMEOUT = "2"
"""Cases these servers fail by never answering wait this long; the others answer at once."""


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    status = main(["check", *args, "--json", "--timeout", TIMEOUT])
    report = json.loads(capsys.readouterr().out)
    return status, {case["id"]: case["result"] for case in report["cases"]}


TEXT = {
    "lab/framing/1": "pass",
    "lab/framing/2": "fail",  # recv(HEADER) takes a partial header as the whole length
    "lab/framing/3": "fail",
    "lab/framing/4": "pass",
    "lab/framing/5": "pass",
    "lab/framing/6": "pass",
    "lab/session/1": "pass",
    "lab/session/2": "pass",
    "lab/session/3": "pass",
    "lab/concurrency/1": "pass",
    "lab/concurrency/2": "pass",
    "lab/robustness/1": "pass",
    "lab/robustness/3": "pass",
    "lab/semantics/1": "pass",
    "lab/semantics/2": "pass",
}

NUMBERS = {
    "lab/framing/1": "pass",
    "lab/framing/2": "fail",
    "lab/framing/3": "fail",
    "lab/framing/4": "fail",  # conn.close() inside the loop: one message per connection
    "lab/framing/5": "pass",
    "lab/framing/6": "pass",
    "lab/session/1": "fail",
    "lab/session/2": "fail",  # int("!DISCONNECT") kills the thread; the socket stays open
    "lab/session/3": "fail",
    "lab/concurrency/1": "pass",
    "lab/concurrency/2": "pass",
    "lab/robustness/1": "pass",
    "lab/robustness/2": "pass",
    "lab/robustness/3": "pass",
    "lab/semantics/1": "pass",
    "lab/semantics/2": "pass",
    "lab/semantics/3": "pass",
    "lab/semantics/4": "fail",  # isPrime(0) is True
    "lab/semantics/5": "pass",
    "lab/semantics/6": "pass",
    "lab/semantics/7": "fail",  # isPrime(-7) is True
    "lab/semantics/8": "pass",
    "lab/semantics/10": "warning",  # [Palidrome]
    "lab/semantics/9": "fail",  # trial division up to n: 2**61-1 never finishes
}

BANK = {
    "lab/bank/1": "pass",
    "lab/bank/2": "pass",
    "lab/bank/3": "fail",  # getBalance(int(msg[0])) misses the PIN: TypeError, no reply
    "lab/bank/4": "fail",
    "lab/bank/5": "fail",
    "lab/bank/6": "fail",
    "lab/bank/7": "fail",
    "lab/bank/8": "warning",
    "lab/robustness/1": "pass",
}

EXCHANGE = {
    "original/exchange/1": "pass",
    "original/exchange/2": "pass",
    "original/concurrency/1": "pass",
    "original/robustness/1": "fail",  # json.loads raises: the one-client-at-a-time server dies
    "original/exchange/3": "skipped",
}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("service", "script", "expected"),
    [
        ("text", "text_server.py", TEXT),
        ("numbers", "number_server.py", NUMBERS),
        ("bank", "bank_server.py", BANK),
        ("exchange", "exchange_server.py", EXCHANGE),
    ],
    ids=["text", "numbers", "bank", "exchange"],
)
def test_the_handouts_servers_get_the_documented_results(
    capsys: pytest.CaptureFixture[str], service: str, script: str, expected: dict[str, str]
) -> None:
    with handout_server(script) as port:
        status, results = run_check(capsys, service, str(port))
    assert results == expected
    assert list(results) == list(expected)  # the order the cases ran in
    assert status == 1


@pytest.mark.e2e
def test_an_out_of_range_number_terminates_the_handout_exchange_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with handout_server("exchange_server.py") as port:
        status, results = run_check(
            capsys,
            "exchange",
            f"127.0.0.1:{port}",
            "--case",
            "original/exchange/3",
            "--allow-terminate",
        )
    assert results == {"original/exchange/3": "pass"}
    assert status == 0
