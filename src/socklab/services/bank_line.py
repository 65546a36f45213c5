"""The bank in the line dialect (for ``nc``): one command per line, one line back.

A line stands for a json request (``line_request``) and its json reply is put into words
(``line_text``), so the line dialect follows exactly the json rules: the same order
table, the same checks, the same errors (``ERROR code: message``). Money commands get a
fresh idempotency key each: typing ``deposit 5`` twice deposits twice.
"""

from __future__ import annotations

from typing import Any

from socklab.errors import InvalidRequest

LINE_HELP = (
    "commands: login ACCOUNT PIN | balance | deposit AMOUNT | withdraw AMOUNT | "
    "transfer TO AMOUNT | statement [N] | stats | change_pin OLD NEW | logout | help "
    "(amounts like 12.50)"
)

LINE_ARGS: dict[str, tuple[int, int, str]] = {
    "login": (2, 2, "login ACCOUNT PIN"),
    "deposit": (1, 1, "deposit AMOUNT"),
    "withdraw": (1, 1, "withdraw AMOUNT"),
    "transfer": (2, 2, "transfer TO AMOUNT"),
    "change_pin": (2, 2, "change_pin OLD NEW"),
    "statement": (0, 1, "statement [N]"),
}
"""Commands with arguments: (fewest, most, usage). The others take none."""

VERBS = {"deposit": "Deposited", "withdraw": "Withdrew", "transfer": "Transferred"}


def _number(text: str, what: str, usage: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidRequest(f"{what} must be a number; usage: {usage}")
    return int(text)


def line_request(command: str, args: list[str], *, key: str) -> dict[str, Any]:
    """The json request fields ``command ARGS`` stands for (``key`` for money commands).

    Raises ``InvalidRequest`` for the wrong number or form of arguments.
    """
    low, high, usage = LINE_ARGS.get(command, (0, 0, command))
    if not low <= len(args) <= high:
        raise InvalidRequest(f"usage: {usage}")
    if command == "login":
        return {"account": _number(args[0], "ACCOUNT", usage), "pin": args[1]}
    if command in ("deposit", "withdraw"):
        return {"amount": args[0], "key": key}
    if command == "transfer":
        return {"to": _number(args[0], "TO", usage), "amount": args[1], "key": key}
    if command == "change_pin":
        return {"old_pin": args[0], "new_pin": args[1]}
    if command == "statement" and args:
        return {"limit": _number(args[0], "N", usage)}
    return {}


def line_text(command: str, reply: dict[str, Any]) -> str:
    """The one line of text that answers ``command``, from its json ``reply``."""
    stats = reply.get("stats")
    stats_line = ""
    if isinstance(stats, dict):
        stats_line = (
            f"Successful transactions: {stats['successful']} | "
            f"Total transactions: {stats['total']} | "
            f"Success rate: {stats['success_rate']:.2f} | Error rate: {stats['error_rate']:.2f}"
        )
    if command == "login":
        return (
            f"Welcome {reply['name']}! Account {reply['account']}, "
            f"balance {reply['balance']}. Type 'help' for the commands."
        )
    if command == "logout":
        return f"Goodbye. Account {reply['account']} logged out."
    if command == "balance":
        return f"Your balance is {reply['balance']} | {stats_line}"
    if command in VERBS:
        to = f" to account {reply['to']}" if "to" in reply else ""
        again = " (replayed: already done)" if reply["replayed"] else ""
        return (
            f"{VERBS[command]} {reply['amount']}{to}{again}. "
            f"Your balance is {reply['balance']} | {stats_line}"
        )
    if command == "statement":
        items = [
            f"#{p['posting']} {p['op']} {p['amount']}"
            + _counterparty(p["amount"], p["counterparty"])
            + f" -> {p['balance_after']}"
            for p in reply["postings"]
        ]
        shown = "; ".join(items) if items else "no postings"
        return f"Account {reply['account']}, balance {reply['balance']}: {shown}"
    if command == "stats":
        return stats_line
    if command == "change_pin":
        return f"PIN changed for account {reply['account']}."
    return LINE_HELP


def _counterparty(amount: str, counterparty: int | None) -> str:
    if counterparty is None:
        return ""
    return f" {'to' if amount.startswith('-') else 'from'} {counterparty}"
