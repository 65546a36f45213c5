"""The ledger against a plain in-memory model: random sequences of every operation.

Retries with the same key, the same key with other parameters, transient failures,
rejections, new accounts and restarts are all mixed in. After every step the balances and
statistics must match the model's and ``verify()`` must pass.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from socklab.errors import (
    InsufficientFunds,
    InvalidAmount,
    KeyReused,
    RequestRejected,
    SameAccount,
    UnknownAccount,
)
from socklab.ledger import Ledger, LedgerSettings, Receipt, Stats, open_ledger

DEMO = 10_000_00
MAX = 5_000_00
OPS = ("deposit", "withdraw", "transfer")

accounts = st.integers(min_value=-1, max_value=7)
amounts = st.one_of(
    st.sampled_from([0, -1, 1, MAX, MAX + 1, DEMO, 3 * DEMO]),
    st.integers(min_value=1, max_value=MAX),
)


@dataclass(frozen=True)
class Request:
    op: str
    account: int
    counterparty: int | None
    amount: int


@dataclass(frozen=True)
class Outcome:
    receipt: Receipt | None
    error: type[RequestRejected] | None


def request(op: str, account: int, counterparty: int, amount: int) -> Request:
    return Request(op, account, counterparty if op == "transfer" else None, amount)


class LedgerMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="socklab-model-")
        self.url = f"sqlite:///{self.tmp}/bank.db"
        self.runner = asyncio.Runner()
        self.ledger = self.open()
        assert self.run(self.ledger.ensure_demo_accounts())
        self.balances = {1: DEMO, 2: DEMO, 3: DEMO}
        self.outcomes: dict[str, tuple[Request, Outcome]] = {}
        self.successful = self.failed = 0
        self.serial = 0

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.runner.run(coro)

    def open(self) -> Ledger:
        ledger: Ledger = self.run(open_ledger(self.url, LedgerSettings(max_amount_cents=MAX)))
        return ledger

    def call(self, key: str, req: Request) -> Receipt:
        if req.op == "deposit":
            result: Receipt = self.run(self.ledger.deposit(req.account, req.amount, key=key))
        elif req.op == "withdraw":
            result = self.run(self.ledger.withdraw(req.account, req.amount, key=key))
        else:
            assert req.counterparty is not None
            result = self.run(
                self.ledger.transfer(req.account, req.counterparty, req.amount, key=key)
            )
        return result

    def expected_error(self, req: Request) -> type[RequestRejected] | None:
        if not 0 < req.amount <= MAX:
            return InvalidAmount
        if req.op == "transfer" and req.counterparty == req.account:
            return SameAccount
        if req.account not in self.balances:
            return UnknownAccount
        if req.op == "transfer" and req.counterparty not in self.balances:
            return UnknownAccount
        if req.op != "deposit" and self.balances[req.account] < req.amount:
            return InsufficientFunds
        return None

    # --- rules --------------------------------------------------------------------

    @rule(
        target=keys,
        op=st.sampled_from(OPS),
        account=accounts,
        counterparty=accounts,
        amount=amounts,
    )
    def new_request(self, op: str, account: int, counterparty: int, amount: int) -> str:
        self.serial += 1
        key = f"key-{self.serial}"
        req = request(op, account, counterparty, amount)
        error = self.expected_error(req)
        if error is not None:
            with pytest.raises(error):
                self.call(key, req)
            self.failed += 1
            self.outcomes[key] = (req, Outcome(None, error))
            return key
        receipt = self.call(key, req)
        if req.op == "deposit":
            self.balances[req.account] += req.amount
        else:
            self.balances[req.account] -= req.amount
        if req.counterparty is not None:
            self.balances[req.counterparty] += req.amount
        assert not receipt.replayed
        assert receipt.balance_cents == self.balances[req.account]
        assert (receipt.op, receipt.account, receipt.counterparty, receipt.amount_cents) == (
            req.op,
            req.account,
            req.counterparty,
            req.amount,
        )
        self.successful += 1
        self.outcomes[key] = (req, Outcome(receipt, None))
        return key

    @rule(key=keys)
    def retry(self, key: str) -> None:
        req, outcome = self.outcomes[key]
        if outcome.error is not None:
            with pytest.raises(outcome.error):
                self.call(key, req)
        else:
            assert outcome.receipt is not None
            replay = self.call(key, req)
            assert replay == Receipt(
                key, outcome.receipt.op, outcome.receipt.account, outcome.receipt.counterparty,
                outcome.receipt.amount_cents, outcome.receipt.balance_cents,
                outcome.receipt.posting_id, replayed=True,
            )  # fmt: skip

    @rule(
        key=keys,
        op=st.sampled_from(OPS),
        account=accounts,
        counterparty=accounts,
        amount=amounts,
    )
    def reuse_key_for_another_request(
        self, key: str, op: str, account: int, counterparty: int, amount: int
    ) -> None:
        # Keys are per account (the contract tests cover other accounts): a key is
        # reused by a different request on the account that used it.
        other = request(op, self.outcomes[key][0].account, counterparty, amount)
        assume(other != self.outcomes[key][0])
        with pytest.raises(KeyReused):
            self.call(key, other)
        self.failed += 1

    @rule()
    def transient_failure(self) -> None:
        self.run(self.ledger.record_failure())
        self.failed += 1

    @rule(deposit=st.sampled_from([0, 1, 250_00]))
    def open_account(self, deposit: int) -> None:
        assume(len(self.balances) < 6)
        account = self.run(self.ledger.open_account(f"Customer {self.serial}", "2468", deposit))
        assert account.id == max(self.balances) + 1
        self.balances[account.id] = deposit

    @rule()
    def restart(self) -> None:
        self.run(self.ledger.close())
        self.ledger = self.open()

    @rule(account=st.sampled_from([1, 2, 3]))
    def statement_ends_at_the_balance(self, account: int) -> None:
        (latest,) = self.run(self.ledger.statement(account, limit=1))
        assert latest.balance_after_cents == self.balances[account]

    @rule(page=st.integers(min_value=1, max_value=9))
    def the_journal_replays_to_the_balances(self, page: int) -> None:
        derived: dict[int, int] = {}
        after = 0
        while entries := self.run(self.ledger.journal(after, page)):
            for e in entries:
                assert e.posting_id > after
                after = e.posting_id
                sign = 1 if e.op == "deposit" else -1
                derived[e.account] = derived.get(e.account, 0) + sign * e.amount_cents
                assert derived[e.account] == e.balance_after_cents
                if e.counterparty is not None:
                    derived[e.counterparty] = derived.get(e.counterparty, 0) + e.amount_cents
        assert derived == {a: cents for a, cents in self.balances.items() if cents or a in derived}

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        actual = {a.id: a.balance_cents for a in self.run(self.ledger.accounts())}
        assert actual == self.balances

    @invariant()
    def stats_match_the_model(self) -> None:
        expected = Stats(self.successful + self.failed, self.successful, self.failed)
        assert self.run(self.ledger.stats()) == expected

    @invariant()
    def the_ledger_verifies(self) -> None:
        report = self.run(self.ledger.verify())
        assert report.ok, report.problems
        assert report.total_cents == sum(self.balances.values())

    def teardown(self) -> None:
        try:
            self.run(self.ledger.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ledger_matches_its_model = LedgerMachine.TestCase
