"""The idempotency experiment: the lesson of the bank lab, measured.

A bank that loses replies (``fail_mode="lose-reply"``: it applies a request, then drops
the connection before answering) serves the same batch of ATM operations twice, each time
on a fresh ledger: once to a naive client that retries with a new idempotency key (as if
it had none), once to a client that retries with the same key. Each run reports what it
intended, what the ledger holds and how many operations were applied more than once.

    results = idempotency_experiment(make_batch(40, seed=7), fail_rate=0.3, seed=7)

``socklab demo idempotency`` prints the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from socklab.client.bank_client import BankClient, RetryNotice
from socklab.ledger.base import DEMO_BALANCE_CENTS, DEMO_PIN
from socklab.protocol.bank import MoneyOp
from socklab.server.runtime import Limits, Listener, new_event_loop
from socklab.services.bank import BankService

ACCOUNT = 1
START_TIMEOUT_S = 30.0


class DemoError(Exception):
    """The experiment could not run (its bank did not start)."""


@dataclass(frozen=True, slots=True)
class Operation:
    op: MoneyOp  # "deposit" or "withdraw"
    amount_cents: int

    @property
    def signed_cents(self) -> int:
        return self.amount_cents if self.op == "deposit" else -self.amount_cents


@dataclass(frozen=True, slots=True)
class RunResult:
    label: str
    operations: int
    lost_replies: int
    intended_cents: int
    actual_cents: int
    applied_twice: int
    """Operations applied more than once (counted once each)."""
    extra_applications: int


def make_batch(count: int, seed: int) -> list[Operation]:
    """``count`` deposits and withdrawals of 1.00 to 50.00 that never overdraw the demo
    balance."""
    rng = random.Random(seed)
    ops: tuple[MoneyOp, MoneyOp] = ("deposit", "withdraw")
    return [Operation(rng.choice(ops), rng.randint(1, 50) * 100) for _ in range(count)]


@contextlib.contextmanager
def bank_in_thread(service: BankService) -> Iterator[int]:
    """Serve ``service`` on 127.0.0.1, a free port, on a loop in a thread; yield the port.

    Raises ``DemoError`` if it does not start.
    """
    loop = new_event_loop()
    listener = Listener(service, "127.0.0.1", 0, Limits())
    started = threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        try:
            await listener.start()
        except BaseException as exc:
            failure.append(exc)
            raise
        finally:
            started.set()
        await listener.stopped.wait()

    def main() -> None:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=main, name="demo-bank", daemon=True)
    thread.start()
    if not started.wait(START_TIMEOUT_S):  # the thread is a daemon: it cannot block exit
        raise DemoError(f"the demo bank did not start within {START_TIMEOUT_S:g} s")
    if failure:
        thread.join(START_TIMEOUT_S)
        loop.close()
        raise DemoError(f"the demo bank did not start: {failure[0]}")
    try:
        yield listener.port
    finally:
        asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(START_TIMEOUT_S)
        thread.join(START_TIMEOUT_S)
        loop.close()


def run_batch(
    label: str, batch: list[Operation], *, naive: bool, fail_rate: float, seed: int, workdir: Path
) -> RunResult:
    """One run of ``batch`` against a fresh bank that loses ``fail_rate`` of the replies.

    Raises ``DemoError``, and what ``BankClient`` raises (``LinkError``, a refusal).
    """
    url = f"sqlite:///{workdir / ('naive.db' if naive else 'keyed.db')}"
    service = BankService(url, fail_rate=fail_rate, fail_mode="lose-reply", rng=seed)
    lost = 0

    def on_retry(notice: RetryNotice) -> None:
        nonlocal lost
        lost += 1

    keys_by_op: list[tuple[str, ...]] = []
    with (
        bank_in_thread(service) as port,
        BankClient(
            "127.0.0.1",
            port,
            timeout_s=5.0,
            attempts=50,
            backoff_s=0.0,
            new_key_each_attempt=naive,
            key_prefix="naive" if naive else "keyed",
            on_retry=on_retry,
        ) as client,
    ):
        client.login(ACCOUNT, DEMO_PIN)
        for operation in batch:
            keys_by_op.append(client.move(operation.op, operation.amount_cents).keys_sent)
        # The whole journal, page by page: what the bank applied, key by key.
        applied_keys: set[str] = set()
        actual: int | None = None
        for page in client.statement_pages():
            actual = page.balance_cents if actual is None else actual
            applied_keys.update(line.key for line in page.lines if line.key is not None)
    assert actual is not None  # statement_pages yields at least one page
    applications = [sum(key in applied_keys for key in keys) for keys in keys_by_op]
    return RunResult(
        label=label,
        operations=len(batch),
        lost_replies=lost,
        intended_cents=DEMO_BALANCE_CENTS + sum(op.signed_cents for op in batch),
        actual_cents=actual,
        applied_twice=sum(1 for n in applications if n > 1),
        extra_applications=sum(n - 1 for n in applications if n > 1),
    )


def idempotency_experiment(
    batch: list[Operation], *, fail_rate: float, seed: int
) -> tuple[RunResult, RunResult]:
    """(naive retries, keyed retries) of the same ``batch`` under the same lost replies.

    Raises ``DemoError``, ``LinkError`` and the bank's refusals.
    """
    with tempfile.TemporaryDirectory(prefix="socklab-demo-") as tmp:
        naive = run_batch(
            "naive retries (new key)",
            batch,
            naive=True,
            fail_rate=fail_rate,
            seed=seed,
            workdir=Path(tmp),
        )
        keyed = run_batch(
            "keyed retries (same key)",
            batch,
            naive=False,
            fail_rate=fail_rate,
            seed=seed,
            workdir=Path(tmp),
        )
    return naive, keyed
