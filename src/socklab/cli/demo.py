"""``socklab demo idempotency``: the lesson of the lab, measured.

A bank that loses replies (``fail_mode="lose-reply"``: it applies a request, then drops
the connection before answering) serves the same batch of ATM operations twice, each time
on a fresh ledger: once to a naive client that retries with a new idempotency key (as if
it had none), once to a client that retries with the same key. The table shows what each
run intended, what the ledger holds and how many operations were applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from socklab.cli.bank import is_terminal
from socklab.cli.common import EXIT_FAILURE, EXIT_OK, Failed, logging_options
from socklab.client.bank_client import BankClient, RetryNotice
from socklab.errors import LinkError, RequestRejected
from socklab.ledger import open_ledger
from socklab.ledger.base import DEMO_BALANCE_CENTS, DEMO_PIN
from socklab.money import format_cents
from socklab.server.runtime import Limits, Listener, new_event_loop, run
from socklab.services.bank import BankService

ACCOUNT = 1


@dataclass(frozen=True, slots=True)
class Operation:
    op: str  # "deposit" or "withdraw"
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
    """``count`` deposits and withdrawals of 1.00 to 50.00 that never overdraw."""
    rng = random.Random(seed)
    return [
        Operation(rng.choice(("deposit", "withdraw")), rng.randint(1, 50) * 100)
        for _ in range(count)
    ]


@contextlib.contextmanager
def bank_in_thread(service: BankService) -> Iterator[int]:
    """Serve ``service`` on 127.0.0.1, a free port, on a loop in a thread; yield the port."""
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

    thread = threading.Thread(
        target=lambda: loop.run_until_complete(serve()), name="demo-bank", daemon=True
    )
    thread.start()
    started.wait(30)
    if failure:
        thread.join(5)
        loop.close()
        raise Failed(f"the demo bank did not start: {failure[0]}")
    try:
        yield listener.port
    finally:
        asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(30)
        thread.join(30)
        loop.close()


def run_batch(
    label: str, batch: list[Operation], *, naive: bool, fail_rate: float, seed: int, workdir: Path
) -> RunResult:
    url = f"sqlite:///{workdir / (label.split()[0] + '.db')}"
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
            if operation.op == "deposit":
                receipt = client.deposit(operation.amount_cents)
            else:
                receipt = client.withdraw(operation.amount_cents)
            keys_by_op.append(receipt.keys_sent)

    async def inspect() -> tuple[int, set[str]]:
        ledger = await open_ledger(url)
        try:
            balance = (await ledger.get_account(ACCOUNT)).balance_cents
            postings = await ledger.statement(ACCOUNT, 1000)
        finally:
            await ledger.close()
        return balance, {p.key for p in postings if p.key is not None}

    actual, applied_keys = run(inspect)
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


def show(results: list[RunResult]) -> None:
    rows = [
        ("operations", *(str(r.operations) for r in results)),
        ("replies lost (retries)", *(str(r.lost_replies) for r in results)),
        ("intended balance", *(format_cents(r.intended_cents) for r in results)),
        ("actual balance", *(format_cents(r.actual_cents) for r in results)),
        ("difference", *(format_cents(r.actual_cents - r.intended_cents) for r in results)),
        ("operations applied more than once", *(str(r.applied_twice) for r in results)),
        ("extra applications", *(str(r.extra_applications) for r in results)),
    ]
    headers = ("", *(r.label for r in results))
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title="The same batch, the same lost replies")
        table.add_column("")
        for r in results:
            table.add_column(r.label, justify="right")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(row[n]) for row in [headers, *rows]) for n in range(len(headers))]
    for row in [headers, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


@click.group()
def demo() -> None:
    """Demonstrations of what the labs teach."""


@demo.command()
@click.option(
    "--fail-rate",
    type=click.FloatRange(0.01, 0.9),
    default=0.3,
    show_default=True,
    help="Share of money requests whose reply is lost (after being applied).",
)
@click.option("--operations", type=click.IntRange(1, 1000), default=40, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True, help="Seeds the batch and faults.")
@logging_options
def idempotency(fail_rate: float, operations: int, seed: int) -> int:
    """Naive retries (a new key each time) against keyed retries (the same key).

    Both runs get the same batch of deposits and withdrawals on account 1 and a bank that
    loses the reply of about FAIL_RATE of them after applying them. Keyed retries must
    show zero operations applied twice.
    """
    if logging.getLogger("socklab").getEffectiveLevel() > logging.DEBUG:
        # The two banks' per-transaction lines would bury the table; -v shows them.
        for name in ("socklab.services", "socklab.server", "socklab.ledger"):
            logging.getLogger(name).setLevel(logging.WARNING)
    batch = make_batch(operations, seed)
    intro = (
        f"A bank that applies a request and then loses its reply ({fail_rate:.0%} of the "
        f"time) serves the same {operations} deposits and withdrawals on account {ACCOUNT} "
        "twice: to a client that retries with a new key, then to one that retries with the "
        "same key."
    )
    click.echo(textwrap.fill(intro, width=88))
    click.echo("")
    try:
        with tempfile.TemporaryDirectory(prefix="socklab-demo-") as tmp:
            results = [
                run_batch(
                    "naive retries (new key)",
                    batch,
                    naive=True,
                    fail_rate=fail_rate,
                    seed=seed,
                    workdir=Path(tmp),
                ),
                run_batch(
                    "keyed retries (same key)",
                    batch,
                    naive=False,
                    fail_rate=fail_rate,
                    seed=seed,
                    workdir=Path(tmp),
                ),
            ]
    except (LinkError, RequestRejected) as exc:
        raise Failed(f"the demo failed: {exc}") from None
    show(results)
    click.echo("")
    naive, keyed = results
    lesson = (
        "A lost reply leaves the ATM unsure whether the bank acted. The naive client asked "
        f"again as a new request: {naive.applied_twice} operations were applied more than "
        "once and the balance is off by "
        f"{format_cents(naive.actual_cents - naive.intended_cents)}. The keyed client asked "
        "again with the same key: the bank recognised it, answered from its record and "
        "applied nothing twice."
    )
    click.echo(textwrap.fill(lesson, width=88))
    if keyed.applied_twice or keyed.actual_cents != keyed.intended_cents:
        click.echo("UNEXPECTED: keyed retries applied something twice.", err=True)
        return EXIT_FAILURE
    return EXIT_OK
