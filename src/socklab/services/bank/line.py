"""The bank in the line dialect (for ``nc``): one command per line, one line back.

A line stands for a typed request (``line_request``) and the typed reply is put into
words (``line_text``), so the line dialect follows exactly the json rules: the same order
table, the same checks, the same errors (``ERROR code: message``). Money commands get a
fresh idempotency key each unless the line ends with one: typing ``deposit 5`` twice
deposits twice, typing ``deposit 5 k1`` twice deposits once.
"""

from __future__ import annotations

from collections.abc import Callable

from socklab.errors import InvalidRequest, UnknownOperation
from socklab.money import format_cents
from socklab.protocol.bank import (
    OPS,
    BalanceInfo,
    BankReply,
    BankRequest,
    ChangePin,
    HelpInfo,
    LoggedIn,
    LoggedOut,
    Login,
    MoneyOp,
    Move,
    Moved,
    PinChanged,
    Statement,
    StatementLine,
    StatementPage,
    StatsInfo,
    account_field,
    amount_field,
    cursor_field,
    key_field,
    limit_field,
    parse_request,
)

LINE_HELP = (
    "commands: login ACCOUNT PIN | balance | deposit AMOUNT [KEY] | withdraw AMOUNT [KEY] | "
    "transfer TO AMOUNT [KEY] | statement [N] [BEFORE] | stats | change_pin OLD NEW | logout | "
    "help (amounts like 12.50; KEY: an idempotency key, so a retry applies once)"
)

LINE_ARGS: dict[str, tuple[int, int, str]] = {
    "login": (2, 2, "login ACCOUNT PIN"),
    "deposit": (1, 2, "deposit AMOUNT [KEY]"),
    "withdraw": (1, 2, "withdraw AMOUNT [KEY]"),
    "transfer": (2, 3, "transfer TO AMOUNT [KEY]"),
    "change_pin": (2, 2, "change_pin OLD NEW"),
    "statement": (0, 2, "statement [N] [BEFORE]"),
}
"""Commands with arguments: (fewest, most, usage). The others take none."""

VERBS = {"deposit": "Deposited", "withdraw": "Withdrew", "transfer": "Transferred"}


def parse_command(line: str) -> tuple[str | None, list[str]]:
    """The command of ``line`` (lower case) and its arguments; ``None`` asks for help.

    Raises ``UnknownOperation``.
    """
    words = line.split()
    command = words[0].lower() if words else "help"
    if command in ("help", "?"):
        return None, []
    if command not in OPS:
        raise UnknownOperation(f"unknown command {command[:30]!r}; {LINE_HELP}")
    return command, words[1:]


def _number(text: str, what: str, usage: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidRequest(f"{what} must be a number; usage: {usage}")
    return int(text)


def line_request(command: str, args: list[str], *, key: str) -> Callable[[], BankRequest]:
    """What ``command ARGS`` asks, built when called (the session first checks the order,
    then the fields, as for json). ``key`` is the idempotency key of a money command that
    names none.

    Raises ``InvalidRequest`` for the wrong number or form of arguments; the builder
    raises ``InvalidRequest`` and ``InvalidAmount`` for bad fields.
    """
    low, high, usage = LINE_ARGS.get(command, (0, 0, command))
    if not low <= len(args) <= high:
        raise InvalidRequest(f"usage: {usage}")
    if command == "login":
        account = _number(args[0], "ACCOUNT", usage)
        return lambda: Login(account_field(account), args[1])
    if command in ("deposit", "withdraw"):
        op: MoneyOp = "deposit" if command == "deposit" else "withdraw"
        return lambda: _move(op, args[0], args[1:], key)
    if command == "transfer":
        to = _number(args[0], "TO", usage)
        return lambda: _move("transfer", args[1], args[2:], key, account_field(to, "to"))
    if command == "change_pin":
        return lambda: ChangePin(args[0], args[1])
    if command == "statement":
        limit = _number(args[0], "N", usage) if args else None
        before = _number(args[1], "BEFORE", usage) if len(args) > 1 else None
        return lambda: Statement(limit_field(limit), cursor_field(before))
    return lambda: parse_request({"op": command})


def _move(op: MoneyOp, amount: str, named_key: list[str], key: str, to: int | None = None) -> Move:
    chosen = key_field(named_key[0]) if named_key else key
    return Move(op, amount_field(amount), chosen, to)


def line_text(reply: BankReply) -> str:
    """The one line of text that answers a request, from its typed ``reply``."""
    if isinstance(reply, LoggedIn):
        return (
            f"Welcome {reply.name}! Account {reply.account}, "
            f"balance {format_cents(reply.balance_cents)}. Type 'help' for the commands."
        )
    if isinstance(reply, LoggedOut):
        return f"Goodbye. Account {reply.account} logged out."
    if isinstance(reply, BalanceInfo):
        return f"Your balance is {format_cents(reply.balance_cents)} | {reply.stats.one_line()}"
    if isinstance(reply, Moved):
        to = f" to account {reply.to}" if reply.to is not None else ""
        again = " (replayed: already done)" if reply.replayed else ""
        return (
            f"{VERBS[reply.op]} {format_cents(reply.amount_cents)}{to}{again}. "
            f"Your balance is {format_cents(reply.balance_cents)} | {reply.stats.one_line()}"
        )
    if isinstance(reply, StatementPage):
        items = [_statement_item(line) for line in reply.lines]
        shown = "; ".join(items) if items else "no postings"
        more = ""
        if reply.next_before is not None:  # a full page: its length is the limit asked
            more = f" | older: statement {len(reply.lines)} {reply.next_before}"
        return (
            f"Account {reply.account}, balance {format_cents(reply.balance_cents)}: {shown}{more}"
        )
    if isinstance(reply, StatsInfo):
        return reply.stats.one_line()
    if isinstance(reply, PinChanged):
        return f"PIN changed for account {reply.account}."
    assert isinstance(reply, HelpInfo)
    return LINE_HELP


def _statement_item(line: StatementLine) -> str:
    counterparty = ""
    if line.counterparty is not None:
        counterparty = f" {'to' if line.amount_cents < 0 else 'from'} {line.counterparty}"
    return (
        f"#{line.posting_id} {line.op} {format_cents(line.amount_cents)}{counterparty}"
        f" -> {format_cents(line.balance_after_cents)}"
    )
