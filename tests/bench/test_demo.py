"""The idempotency experiment against a real bank that loses replies, and its command."""

from __future__ import annotations

import pytest

from socklab.bench.demo import idempotency_experiment, make_batch
from socklab.cli.main import main
from socklab.ledger.base import DEMO_BALANCE_CENTS


def test_make_batch_is_seeded_and_never_overdraws() -> None:
    batch = make_batch(200, seed=5)
    assert batch == make_batch(200, seed=5) != make_batch(200, seed=6)
    assert {op.op for op in batch} == {"deposit", "withdraw"}
    balance = DEMO_BALANCE_CENTS
    for op in batch:
        assert 1_00 <= op.amount_cents <= 50_00 and op.amount_cents % 100 == 0
        balance += op.signed_cents
        assert balance >= 0


def test_naive_retries_apply_twice_and_keyed_retries_do_not() -> None:
    batch = make_batch(16, seed=7)
    naive, keyed = idempotency_experiment(batch, fail_rate=0.4, seed=7)
    intended = DEMO_BALANCE_CENTS + sum(op.signed_cents for op in batch)
    for run in (naive, keyed):
        assert run.operations == 16 and run.intended_cents == intended
        assert run.lost_replies > 0  # the seeded faults hit both runs
    # Every lost reply had been applied, and the naive retry applied it again.
    assert naive.extra_applications == naive.lost_replies
    assert 0 < naive.applied_twice <= naive.extra_applications
    assert naive.actual_cents != naive.intended_cents
    assert (keyed.applied_twice, keyed.extra_applications) == (0, 0)
    assert keyed.actual_cents == keyed.intended_cents


def test_the_command_prints_the_table_and_the_lesson(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "idempotency", "--operations", "6", "--fail-rate", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "naive retries (new key)" in out and "keyed retries (same key)" in out
    assert "operations applied more than once" in out
    assert "applied nothing twice" in out
