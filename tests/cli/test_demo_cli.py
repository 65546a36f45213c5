"""`socklab demo idempotency`: two real banks that lose replies, two kinds of retries."""

from __future__ import annotations

from typing import Any

import pytest

import socklab.bench.demo as demo_module
from socklab.cli.main import main
from socklab.client.bank_client import BankClient
from socklab.money import parse_amount

ARGS = ["demo", "idempotency", "--operations", "12", "--fail-rate", "0.5", "--seed", "3"]


def table(out: str) -> dict[str, tuple[str, str]]:
    """The table's rows: label -> (naive column, keyed column)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        label, _, cells = line.rpartition("  ")
        label, _, naive = label.rstrip().rpartition("  ")
        if label.strip() and naive.strip() and cells.strip():
            rows[label.strip()] = (naive.strip(), cells.strip())
    return rows


def cents(text: str) -> int:
    return parse_amount(text.lstrip("-")) * (-1 if text.startswith("-") else 1)


def test_naive_retries_apply_twice_and_keyed_ones_never(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert rows["operations"] == ("12", "12")
    naive_lost, keyed_lost = (int(n) for n in rows["replies lost (retries)"])
    assert naive_lost == keyed_lost > 0  # the same seed: the same replies lost
    intended, also_intended = (cents(c) for c in rows["intended balance"])
    assert intended == also_intended
    naive_actual, keyed_actual = (cents(c) for c in rows["actual balance"])
    # Naive: every lost reply was a request applied, then applied again under a new key.
    assert int(rows["extra applications"][0]) == naive_lost
    assert int(rows["operations applied more than once"][0]) >= 1
    assert naive_actual != intended
    assert cents(rows["difference"][0]) == naive_actual - intended
    # Keyed: the retries were answered from the record.
    assert keyed_actual == intended
    assert rows["difference"][1] == "0.00"
    assert (rows["operations applied more than once"][1], rows["extra applications"][1]) == (
        "0",
        "0",
    )
    applied_twice = rows["operations applied more than once"][0]
    assert f"{applied_twice} operations were applied more than once" in " ".join(out.split())


class ForgetfulClient(BankClient):
    """A client that claims to keep its key on a retry, and does not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "new_key_each_attempt": True})


def test_keyed_retries_that_double_post_fail_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo_module, "BankClient", ForgetfulClient)
    assert main(ARGS) == 1
    captured = capsys.readouterr()
    assert "UNEXPECTED: keyed retries applied something twice." in captured.err
    rows = table(captured.out)
    assert rows["difference"][1] != "0.00"


def test_options_out_of_range_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "idempotency", "--fail-rate", "0.95"]) == 2
    assert "--fail-rate" in capsys.readouterr().err
