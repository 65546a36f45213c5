"""``socklab bank``: administer the ledger directly (no server needed).

``--db URL`` (or ``SOCKLAB_DB``) names the ledger; the default, shared with ``socklab
serve``, is a SQLite file in the user's data directory. Tables are drawn with rich on a
terminal and as plain aligned text (or CSV) in a pipe.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click

from socklab.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Failed,
    db_option,
    is_terminal,
    ledger_url,
    logging_options,
)
from socklab.errors import RequestRejected, StorageError
from socklab.ledger import Ledger, open_ledger
from socklab.ledger.base import (
    DEMO_BALANCE_CENTS,
    DEMO_NAMES,
    DEMO_PIN,
    MAX_JOURNAL_PAGE,
    JournalEntry,
)
from socklab.money import format_cents, parse_amount
from socklab.protocol.bank import LoggedIn
from socklab.server.runtime import run

T = TypeVar("T")

__all__ = ["bank", "is_terminal"]


# -- the ledger ------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def with_ledger(url: str, work: Callable[[Ledger], Awaitable[T]]) -> T:
    """Open the ledger at ``url``, run ``work`` on it, close it; failures become ``Failed``."""

    async def main() -> T:
        ledger = await open_ledger(url)
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    try:
        result: T = run(main)
    except ValueError as exc:
        raise Failed(str(exc), EXIT_USAGE) from None
    except StorageError as exc:
        raise Failed(str(exc)) from None
    except RequestRejected as exc:
        raise Failed(f"{exc.message} ({exc.code})") from None
    return result


# -- output ---------------------------------------------------------------------------------


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()
) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for n, header in enumerate(headers):
            table.add_column(header, justify="right" if n in right else "left")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if n in right else c.ljust(w)
            for n, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    click.echo(line(headers))
    for row in rows:
        click.echo(line(row))


def iso_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ask_new_pin() -> str:
    """A new PIN: asked twice, hidden, on a terminal; read as one line from a pipe."""
    if sys.stdin.isatty():
        pin: str = click.prompt("PIN", hide_input=True, confirmation_prompt=True, err=True)
        return pin.strip()
    click.echo("PIN: ", nl=False, err=True)
    line = sys.stdin.readline()
    if not line:
        raise Failed("no PIN given", EXIT_USAGE)
    click.echo(err=True)
    return line.strip()


# -- the commands -----------------------------------------------------------------------------


@click.group()
@db_option
@logging_options
@click.pass_context
def bank(ctx: click.Context, db: str | None) -> None:
    """Administer the bank's ledger: accounts, statements, statistics, verification."""
    ctx.obj = db


def _url(ctx: click.Context) -> str:
    """The ledger URL given to the group (resolved only now: ``--help`` creates nothing)."""
    return ledger_url(ctx.obj if isinstance(ctx.obj, str) else None)


def hint_empty_ledger(ctx: click.Context) -> None:
    """On stderr (stdout stays a table, CSV or JSON): how to fill an empty ledger."""
    group = ctx.find_root().command_path + " bank"
    db = ctx.parent.params.get("db") if ctx.parent is not None else None
    source = ctx.parent.get_parameter_source("db") if ctx.parent is not None else None
    if db and source is click.core.ParameterSource.COMMANDLINE:
        group += f" --db {redact_url(db)}"
    click.echo(
        f"The ledger has no accounts yet: `{group} init --demo` creates the seed's accounts "
        f"1 to {len(DEMO_NAMES)}, `{group} open --name NAME` opens one.",
        err=True,
    )


@bank.command()
@click.option("--demo", is_flag=True, help="Also create the seed's accounts 1, 2, 3.")
@click.pass_context
def init(ctx: click.Context, demo: bool) -> int:
    """Create the ledger (or bring its schema up to date)."""
    url = _url(ctx)

    async def work(ledger: Ledger) -> tuple[bool, int]:
        created = await ledger.ensure_demo_accounts() if demo else False
        return created, len(await ledger.accounts())

    created, count = with_ledger(url, work)
    click.echo(f"Ledger ready at {redact_url(url)} ({count} accounts).")
    if not count:
        hint_empty_ledger(ctx)
    if created:
        click.echo(
            f"Created the demo accounts 1 to {len(DEMO_NAMES)} "
            f"(PIN {DEMO_PIN}, balance {format_cents(DEMO_BALANCE_CENTS)} each)."
        )
    elif demo:
        click.echo("The ledger already has accounts: no demo accounts added.")
    return EXIT_OK


@bank.command("open")
@click.option("--name", required=True, help="The holder's name.")
@click.option("--pin", help="4 to 12 digits (asked, hidden, if not given).")
@click.option("--deposit", "deposit", default="0", show_default=True, help="Opening deposit.")
@click.pass_context
def open_account(ctx: click.Context, name: str, pin: str | None, deposit: str) -> int:
    """Open an account."""
    try:
        cents = parse_amount(deposit)
    except RequestRejected as exc:
        raise Failed(f"--deposit: {exc.message}", EXIT_USAGE) from None
    if pin is None:
        pin = ask_new_pin()
    url = _url(ctx)
    account = with_ledger(url, lambda ledger: ledger.open_account(name, pin, cents))
    click.echo(
        f"Opened account {account.id} for {account.name}, "
        f"balance {format_cents(account.balance_cents)}."
    )
    return EXIT_OK


@bank.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout (for scripts).")
@click.pass_context
def accounts(ctx: click.Context, as_json: bool) -> int:
    """List the accounts and their balances."""
    found = with_ledger(_url(ctx), lambda ledger: ledger.accounts())
    if as_json:
        # Each account as the protocol spells one (the login reply's fields).
        infos = [LoggedIn(a.id, a.name, a.balance_cents).to_json() for a in found]
        click.echo(json.dumps(infos, ensure_ascii=False))
    else:
        rows = [(str(a.id), a.name, format_cents(a.balance_cents)) for a in found]
        print_table(("account", "name", "balance"), rows, right=(0, 2))
        total = sum(a.balance_cents for a in found)
        click.echo(f"{len(found)} accounts, {format_cents(total)} in all.")
    if not found:
        hint_empty_ledger(ctx)
    return EXIT_OK


@bank.command()
@click.argument("account", type=click.IntRange(1))
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (for spreadsheets).")
@click.pass_context
def statement(ctx: click.Context, account: int, limit: int, as_csv: bool) -> int:
    """The newest postings of ACCOUNT, newest first."""

    async def work(ledger: Ledger) -> tuple[Any, Any]:
        return await ledger.get_account(account), await ledger.statement(account, limit)

    holder, postings = with_ledger(_url(ctx), work)
    headers = ("posting", "time", "op", "amount", "balance_after", "counterparty", "key")
    rows = [
        (
            str(p.posting_id),
            iso_time(p.created_at),
            p.op,
            format_cents(p.amount_cents),
            format_cents(p.balance_after_cents),
            "" if p.counterparty is None else str(p.counterparty),
            p.key or "",
        )
        for p in postings
    ]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return EXIT_OK
    click.echo(f"Account {holder.id} ({holder.name}), balance {format_cents(holder.balance_cents)}")
    print_table(headers, rows, right=(0, 3, 4))
    return EXIT_OK


EXPORT_COLUMNS = (
    "posting", "time", "op", "account", "counterparty", "amount", "balance_after", "key",
)  # fmt: skip
EXPORT_PAGE = MAX_JOURNAL_PAGE
"""Postings read per query: the export holds one page in memory, whatever the size."""


def export_row(entry: JournalEntry) -> tuple[int, str, str, int, int | None, str, str, str | None]:
    """One posting of the export, in the order of ``EXPORT_COLUMNS``."""
    return (
        entry.posting_id, iso_time(entry.created_at), entry.op, entry.account,
        entry.counterparty, format_cents(entry.amount_cents),
        format_cents(entry.balance_after_cents), entry.key,
    )  # fmt: skip


@bank.command()
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True,
    help="CSV with a header line, or one json object per line.",
)  # fmt: skip
@click.option(
    "--output", "-o", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (replaced only once the export is complete) [default: stdout].",
)  # fmt: skip
@click.pass_context
def export(ctx: click.Context, fmt: str, output: Path | None) -> int:
    """Write the whole journal: every posting, oldest first (read page by page)."""
    target = output.with_name(f".{output.name}.partial") if output is not None else None

    async def work(ledger: Ledger) -> int:
        with contextlib.ExitStack() as stack:
            if target is None:
                out: TextIO = sys.stdout
            else:
                out = stack.enter_context(target.open("w", encoding="utf-8", newline=""))
            writer = csv.writer(out, lineterminator="\n")
            if fmt == "csv":
                writer.writerow(EXPORT_COLUMNS)
            count = after = 0
            while page := await ledger.journal(after, EXPORT_PAGE):
                for entry in page:
                    row = export_row(entry)
                    if fmt == "csv":
                        writer.writerow(row)
                    else:
                        out.write(json.dumps(dict(zip(EXPORT_COLUMNS, row, strict=True))) + "\n")
                count += len(page)
                after = page[-1].posting_id
            out.flush()
        return count

    try:
        count = with_ledger(_url(ctx), work)
        if output is not None and target is not None:
            target.replace(output)
    except OSError as exc:
        raise Failed(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
    click.echo(f"Exported {count} postings" + (f" to {output}." if output else "."), err=True)
    return EXIT_OK


@bank.command()
@click.argument("account", type=click.IntRange(1))
@click.pass_context
def unlock(ctx: click.Context, account: int) -> int:
    """Lift every lockout of ACCOUNT (for everyone and for each address) and forget its
    failed logins. Works while servers run: they read the lockouts from the ledger."""
    was_locked = with_ledger(_url(ctx), lambda ledger: ledger.unlock(account))
    if was_locked:
        click.echo(f"Account {account} unlocked.")
    else:
        click.echo(f"Account {account} was not locked; its failed logins are forgotten.")
    return EXIT_OK


@bank.command()
@click.pass_context
def stats(ctx: click.Context) -> int:
    """The bank's transaction statistics (the seed's, persisted)."""
    found = with_ledger(_url(ctx), lambda ledger: ledger.stats())
    click.echo(f"Total transactions: {found.total}")
    click.echo(f"Successful transactions: {found.successful}")
    click.echo(f"Failed transactions: {found.failed}")
    click.echo(f"Success rate: {found.success_rate:.2f}")
    click.echo(f"Error rate: {found.error_rate:.2f}")
    return EXIT_OK


@bank.command()
@click.pass_context
def verify(ctx: click.Context) -> int:
    """Re-derive every balance from the journal and check the books; 0 only if all holds."""
    url = _url(ctx)
    report = with_ledger(url, lambda ledger: ledger.verify())
    click.echo(f"Checked the ledger at {redact_url(url)}:")
    click.echo(
        f"  {report.accounts} customer accounts, {report.postings} postings, "
        f"{format_cents(report.total_cents)} held by customers"
    )
    for check in (
        "every balance equals the sum of its journal entries",
        "every posting's entries sum to zero and move the requested amount",
        "every running balance in the journal is right",
        "money is conserved: the whole journal and all balances sum to zero",
        "no customer balance is negative",
        "the statistics agree with the stored requests",
    ):
        click.echo(f"  - {check}")
    if report.ok:
        click.echo("OK: the books balance.")
        if not report.accounts:
            hint_empty_ledger(ctx)
        return EXIT_OK
    click.echo(f"FAILED: {len(report.problems)} problem(s):")
    for problem in report.problems:
        click.echo(f"  ! {problem}")
    return EXIT_FAILURE
