"""``socklab demo idempotency``: the lesson of the lab, measured.

The experiment (``socklab.bench.demo``) runs the same batch of ATM operations against a
bank that loses replies, once with naive retries (a new idempotency key each time) and
once with keyed retries (the same key); this command prints what each run intended, what
the ledger holds and how many operations were applied twice.
"""

from __future__ import annotations

import logging
import textwrap

import click

from socklab.bench.demo import ACCOUNT, DemoError, RunResult, idempotency_experiment, make_batch
from socklab.cli.bank import is_terminal
from socklab.cli.common import EXIT_FAILURE, EXIT_OK, Failed, logging_options
from socklab.errors import LinkError, RequestRejected
from socklab.money import format_cents


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
        naive, keyed = idempotency_experiment(batch, fail_rate=fail_rate, seed=seed)
    except (DemoError, LinkError, RequestRejected) as exc:
        raise Failed(f"the demo failed: {exc}") from None
    results = [naive, keyed]
    show(results)
    click.echo("")
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
