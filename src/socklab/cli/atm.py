"""``socklab atm``: the ATM of seed 003, interactive or scripted, that survives the network.

Interactive (no COMMAND): asks the account and the PIN (hidden), welcomes the holder and
shows a menu until Exit, Ctrl-C or end of input. Scripted: ``socklab atm --account 1
deposit 12.50`` with the PIN from ``SOCKLAB_PIN`` (or a prompt); the exit status says how
it went. Either way, a lost connection or a timeout is retried with the same idempotency
key (``socklab.client.bank_client``), and the user is told.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import click

from socklab.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Failed, logging_options
from socklab.cli.tls import tls_client_options
from socklab.client.bank_client import BankClient, RetryNotice, TxReceipt
from socklab.client.tls import TlsOptions
from socklab.errors import (
    AccountLocked,
    AuthFailed,
    InvalidAmount,
    LinkError,
    PeerProtocolError,
    RequestRejected,
)
from socklab.money import format_cents, parse_amount
from socklab.protocol import DEFAULT_PORTS
from socklab.protocol.bank import (
    DEFAULT_STATEMENT_LIMIT,
    MAX_STATEMENT_LIMIT,
    BankStats,
    MoneyOp,
    StatementPage,
)

log = logging.getLogger("socklab.cli")
ATM = {"function": "atm"}

EXIT_REFUSED = EXIT_FAILURE
"""The bank refused the request (insufficient funds, invalid amount, ...)."""
EXIT_AUTH = 3
"""Wrong account or PIN, or the account is locked."""
EXIT_NETWORK = 4
"""The bank could not be reached, even after the retries."""

MAX_LOGIN_TRIES = 3
MENU = ("Check balance", "Deposit", "Withdraw", "Transfer", "Mini statement", "Exit")
MENU_OPS: dict[str, MoneyOp] = {
    "Deposit": "deposit",
    "Withdraw": "withdraw",
    "Transfer": "transfer",
}
PIN_ENV = "SOCKLAB_PIN"


@dataclass(frozen=True, slots=True)
class AtmSettings:
    host: str
    port: int
    account: int | None
    timeout_s: float
    attempts: int
    tls: TlsOptions | None = None


# -- what the ATM shows -----------------------------------------------------------------


def stats_lines(stats: BankStats, *, with_successful: bool = True) -> list[str]:
    """The seed's statistics lines."""
    return stats.lab_lines(with_successful=with_successful).splitlines()


def receipt_lines(receipt: TxReceipt) -> list[str]:
    verb = {"deposit": "Deposited", "withdraw": "Withdrew", "transfer": "Transferred"}
    to = f" to account {receipt.to}" if receipt.to is not None else ""
    return [
        f"{verb.get(receipt.op, receipt.op)} {format_cents(receipt.amount_cents)}{to}",
        f"Your balance is {format_cents(receipt.balance_cents)}",
        *stats_lines(receipt.stats),
    ]


def statement_lines(statement: StatementPage) -> list[str]:
    lines = [f"Mini statement of account {statement.account} (newest first):"]
    for line in statement.lines:
        amount = format_cents(line.amount_cents)
        sign = "" if amount.startswith("-") else "+"
        other = ""
        if line.counterparty is not None:
            other = f"{'to' if line.amount_cents < 0 else 'from'} {line.counterparty}"
        lines.append(
            f"  #{line.posting_id:<6} {line.op:<9} {sign + amount:>12}  {other:<10} "
            f"balance {format_cents(line.balance_after_cents)}"
        )
    if not statement.lines:
        lines.append("  (no postings)")
    lines.append(f"Your balance is {format_cents(statement.balance_cents)}")
    return lines


def echo_lines(lines: list[str]) -> None:
    click.echo("\n".join(lines))


def warn_retry(notice: RetryNotice) -> None:
    log.warning("%s", notice.describe(), extra=ATM)


def report_retries(receipt: TxReceipt) -> None:
    """Tell the user what the retries came to."""
    if receipt.attempts == 1:
        return
    if receipt.replayed:
        log.info(
            "An earlier attempt had reached the bank and only its reply was lost: the bank "
            "answered the retry from its record. Applied exactly once.",
            extra=ATM,
        )
    else:
        log.info(
            "Done on attempt %d; the earlier attempts had not been applied. Applied once.",
            receipt.attempts,
            extra=ATM,
        )


# -- input ------------------------------------------------------------------------------


def ask(prompt: str) -> str:
    """One line of input; ``EOFError`` at the end of input."""
    return input(prompt).strip()


def ask_pin(prompt: str = "Enter PIN: ") -> str:
    """The PIN, hidden on a terminal. Piped input is read as is (no terminal to echo on)."""
    if sys.stdin.isatty():
        pin: str = click.prompt(prompt, hide_input=True, prompt_suffix="", err=True)
        return pin.strip()
    click.echo(prompt, nl=False)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    click.echo()
    return line.strip()


def ask_account(prompt: str) -> int:
    while True:
        text = ask(prompt)
        if text.isascii() and text.isdigit() and 0 < len(text) <= 18 and int(text) > 0:
            return int(text)
        click.echo("Please enter an account number, like 1.")


def ask_choice() -> int:
    while True:
        text = ask("Enter choice: ")
        if text.isascii() and text.isdigit() and 1 <= int(text) <= len(MENU):
            return int(text)
        click.echo(f"Please choose 1 to {len(MENU)}.")


def ask_amount(prompt: str) -> int | None:
    """Cents, or ``None`` if the user gave up (an empty line)."""
    while True:
        text = ask(prompt)
        if not text:
            click.echo("Cancelled.")
            return None
        try:
            cents = parse_amount(text)
        except InvalidAmount:
            cents = 0
        if cents > 0:
            return cents
        click.echo("Please enter an amount more than 0, like 12.50 (empty line: cancel).")


def parse_amount_arg(text: str) -> int:
    try:
        cents = parse_amount(text)
    except InvalidAmount as exc:
        raise Failed(f"{text[:30]!r}: {exc.message}", EXIT_USAGE) from None
    if cents <= 0:
        raise Failed("the amount must be more than 0", EXIT_USAGE)
    return cents


# -- the command ------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SOCKLAB_HOST")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_PORTS["bank"], show_default=True
)
@click.option("--account", type=click.IntRange(1), help="Account number (asked if not given).")
@click.option(
    "--timeout",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the bank before retrying.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=4,
    show_default=True,
    help="Retries (same idempotency key) after a lost connection, a timeout or a "
    "transient failure.",
)
@logging_options
@tls_client_options
@click.pass_context
def atm(
    ctx: click.Context,
    host: str,
    port: int,
    account: int | None,
    timeout: float,
    retries: int,
    tls: TlsOptions | None,
) -> int:
    """Use the bank like an ATM: a menu without COMMAND, one operation with one.

    \b
    socklab atm                               interactive: account, PIN, menu
    socklab atm --account 1 balance           the PIN from SOCKLAB_PIN or a prompt
    socklab atm --account 1 deposit 12.50
    socklab atm --account 1 withdraw 5
    socklab atm --account 1 transfer 2 1.00
    socklab atm --account 1 statement

    Exit status: 0 done, 1 refused by the bank, 2 bad usage, 3 wrong account/PIN or
    locked, 4 bank unreachable.
    """
    settings = AtmSettings(host, port, account, timeout, retries + 1, tls)
    ctx.obj = settings
    if ctx.invoked_subcommand is None:
        return run_interactive(settings)
    return EXIT_OK


def connect(settings: AtmSettings) -> BankClient:
    return BankClient(
        settings.host,
        settings.port,
        timeout_s=settings.timeout_s,
        attempts=settings.attempts,
        on_retry=warn_retry,
        tls=settings.tls,
    )


@contextmanager
def failures_explained() -> Iterator[None]:
    """Turn what the bank and the network say into one ERROR line and an exit status."""
    try:
        yield
    except (AuthFailed, AccountLocked) as exc:
        raise Failed(f"{exc.message} ({exc.code})", EXIT_AUTH) from None
    except RequestRejected as exc:
        raise Failed(f"{exc.message} ({exc.code})", EXIT_REFUSED) from None
    except LinkError as exc:
        raise Failed(f"cannot reach the bank: {exc}", EXIT_NETWORK) from None
    except PeerProtocolError as exc:
        raise Failed(exc.message, EXIT_NETWORK) from None


def run_scripted(settings: AtmSettings, action: Callable[[BankClient], list[str]]) -> int:
    if settings.account is None:
        raise Failed(
            "a command needs --account N (e.g. socklab atm --account 1 balance)", EXIT_USAGE
        )
    try:
        pin = os.environ.get(PIN_ENV) or ask_pin()
    except (EOFError, click.exceptions.Abort):
        raise Failed(f"no PIN given (set {PIN_ENV} or type it)", EXIT_USAGE) from None
    with failures_explained(), connect(settings) as bank:
        bank.login(settings.account, pin)
        echo_lines(action(bank))
    return EXIT_OK


@atm.command()
@click.pass_obj
def balance(settings: AtmSettings) -> int:
    """Show the balance and the bank's statistics."""

    def action(bank: BankClient) -> list[str]:
        info = bank.balance()
        return [f"Your balance is {format_cents(info.balance_cents)}", *stats_lines(info.stats)]

    return run_scripted(settings, action)


def run_move(settings: AtmSettings, op: MoneyOp, amount: str, to: int | None = None) -> int:
    cents = parse_amount_arg(amount)

    def action(bank: BankClient) -> list[str]:
        receipt = bank.move(op, cents, to=to)
        report_retries(receipt)
        return receipt_lines(receipt)

    return run_scripted(settings, action)


@atm.command()
@click.argument("amount")
@click.pass_obj
def deposit(settings: AtmSettings, amount: str) -> int:
    """Deposit AMOUNT (like 12.50)."""
    return run_move(settings, "deposit", amount)


@atm.command()
@click.argument("amount")
@click.pass_obj
def withdraw(settings: AtmSettings, amount: str) -> int:
    """Withdraw AMOUNT (like 12.50)."""
    return run_move(settings, "withdraw", amount)


@atm.command()
@click.argument("to", type=click.IntRange(1))
@click.argument("amount")
@click.pass_obj
def transfer(settings: AtmSettings, to: int, amount: str) -> int:
    """Transfer AMOUNT to account TO."""
    return run_move(settings, "transfer", amount, to)


@atm.command()
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_STATEMENT_LIMIT),
    default=DEFAULT_STATEMENT_LIMIT,
    show_default=True,
)
@click.pass_obj
def statement(settings: AtmSettings, limit: int) -> int:
    """Show the newest postings of the account."""
    return run_scripted(settings, lambda bank: statement_lines(bank.statement(limit)))


# -- interactive --------------------------------------------------------------------------


def run_interactive(settings: AtmSettings) -> int:
    """The menu loop; Ctrl-C and end of input say goodbye instead of a traceback."""
    try:
        with failures_explained(), connect(settings) as bank:
            return _interactive(bank, settings)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("\nGoodbye.")
        return 130
    except EOFError:
        click.echo("\nGoodbye.")
        return EXIT_OK


def _log_in(bank: BankClient, settings: AtmSettings) -> str:
    """The holder's name, after at most ``MAX_LOGIN_TRIES`` tries."""
    for tries_left in range(MAX_LOGIN_TRIES - 1, -1, -1):
        account = settings.account or ask_account("Enter account number: ")
        pin = ask_pin()
        try:
            return bank.login(account, pin).name
        except AuthFailed:
            if not tries_left:
                break
            click.echo(f"Invalid account number or PIN. {tries_left} more tries.")
    raise Failed("invalid account number or PIN; goodbye", EXIT_AUTH)


def _interactive(bank: BankClient, settings: AtmSettings) -> int:
    name = _log_in(bank, settings)
    click.echo(f"Welcome {name}!")
    while True:
        echo_lines([f"{n}. {item}" for n, item in enumerate(MENU, 1)])
        choice = ask_choice()
        if MENU[choice - 1] == "Exit":
            bank.logout()
            click.echo("Goodbye.")
            return EXIT_OK
        try:
            lines = _perform(bank, MENU[choice - 1])
        except (AuthFailed, AccountLocked):
            raise
        except RequestRejected as exc:
            lines = [f"Transaction failed: {exc.message} ({exc.code})"]
            info = bank.balance()
            lines += [
                f"Your balance is {format_cents(info.balance_cents)}",
                *stats_lines(info.stats, with_successful=False),
            ]
        if lines:
            click.echo()
            echo_lines(lines)
            click.echo()


def _perform(bank: BankClient, item: str) -> list[str]:
    """Run one menu item; the lines to show ([] if the user cancelled)."""
    if item == "Check balance":
        info = bank.balance()
        return [f"Your balance is {format_cents(info.balance_cents)}", *stats_lines(info.stats)]
    if item == "Mini statement":
        return statement_lines(bank.statement(DEFAULT_STATEMENT_LIMIT))
    to = None
    if item == "Transfer":
        to = ask_account("Enter the account to transfer to: ")
    amount = ask_amount(f"Enter amount to {item.lower()}: ")
    if amount is None:
        return []
    receipt = bank.move(MENU_OPS[item], amount, to=to)
    report_retries(receipt)
    return receipt_lines(receipt)
