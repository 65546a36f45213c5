"""The bank in the lab dialect: the conversation of seed 003's ATM client, kept in step.

How this works: the seed's client loops over rounds and sends, in each round,

1. ``id+PIN`` (a login) and prints one reply: the welcome menu or ``Invalid ID or Password``;
2. ``id+PIN+choice`` and, for choices 1, 2 and 3 only, prints one reply;
3. for choices 2 and 3, ``id+PIN+amount`` after the amount prompt, and prints one reply.

It sends step 2 and 3 even after a refused login, and reads nothing for choice 4 (or any
other choice). So every message gets exactly the replies the client will read: one for a
login, one for choices 1 to 3 (whatever the login's outcome), none for the others, one for
an amount. ``LAB_FLOW`` is the order table. The PIN is the last four digits of a login,
so ids may have several digits; later messages of the round start with the same
``id+PIN`` text (the round's prefix), and a message that does not is taken as a new login.
Money requests get a fresh idempotency key each: the lab client cannot send one.
"""

from __future__ import annotations

import logging

from socklab.errors import (
    AccountLocked,
    InvalidAmount,
    RequestRejected,
    TooManyLogins,
    TransientFailure,
)
from socklab.logs import fn
from socklab.money import format_cents, parse_amount
from socklab.protocol.bank import LoggedIn, Login, MoneyOp, Move
from socklab.services.bank.core import BankService, new_key
from socklab.services.base import ConnectionInfo

log = logging.getLogger(__name__)

LAB_PIN_DIGITS = 4

AWAIT_LOGIN = "await_login"
AWAIT_CHOICE = "await_choice"
AWAIT_AMOUNT = "await_amount"

LAB_FLOW: dict[str, dict[str, str]] = {
    AWAIT_LOGIN: {"login": AWAIT_CHOICE},
    AWAIT_CHOICE: {
        "1": AWAIT_LOGIN,
        "2": AWAIT_AMOUNT,
        "3": AWAIT_AMOUNT,
        "4": AWAIT_LOGIN,
        "other": AWAIT_LOGIN,
        "login": AWAIT_CHOICE,
    },
    AWAIT_AMOUNT: {"amount": AWAIT_LOGIN, "login": AWAIT_CHOICE},
}
"""``{state: {event: next state}}``; events are ``login``, the choices and ``amount``."""

MENU = "1. Check Balance\n2. Deposit\n3. Withdraw\n4. Exit\n"
INVALID_LOGIN = "Invalid ID or Password\n"
NOT_LOGGED_IN = "Invalid ID or Password\nPlease log in again\n"
PROMPTS: dict[str, tuple[MoneyOp, str]] = {
    "2": ("deposit", "Enter amount to deposit: "),
    "3": ("withdraw", "Enter amount to withdraw: "),
}


def split_login(payload: str) -> tuple[int, str] | None:
    """``"11234"`` -> ``(1, "1234")``; ``None`` if it is not digits with a 4-digit PIN."""
    if not (payload.isascii() and payload.isdigit()) or len(payload) <= LAB_PIN_DIGITS:
        return None
    account_text, pin = payload[:-LAB_PIN_DIGITS], payload[-LAB_PIN_DIGITS:]
    if len(account_text) > 18 or int(account_text) < 1:
        return None
    return int(account_text), pin


class LabConversation:
    """One lab connection's rounds: state in ``LAB_FLOW``, the round's prefix and login."""

    def __init__(self, service: BankService, conn: ConnectionInfo) -> None:
        self.service = service
        self.conn = conn
        self.state = AWAIT_LOGIN
        self.prefix = ""
        self.account: LoggedIn | None = None
        self.pending: MoneyOp | None = None

    def event(self, payload: str) -> tuple[str, str]:
        """The event ``payload`` is in the current state, and its argument."""
        if self.state == AWAIT_LOGIN or not payload.startswith(self.prefix):
            return "login", payload
        rest = payload[len(self.prefix) :]
        if self.state == AWAIT_AMOUNT:
            return "amount", rest
        return (rest if rest in ("1", "2", "3", "4") else "other"), rest

    async def handle(self, payload: str) -> str:
        """The raw reply to one lab message ("" sends nothing: the client reads nothing)."""
        event, arg = self.event(payload)
        self.state = LAB_FLOW[self.state][event]
        if event == "login":
            return await self._login(payload)
        if event == "amount":
            return await self._amount(arg)
        if event == "1":
            return await self._balance()
        if event in PROMPTS:
            op, prompt = PROMPTS[event]
            self.pending = op
            return prompt if self.account is not None else NOT_LOGGED_IN
        if event == "4":
            log.debug("Lab client chose Exit", extra=fn("handle_client"))
        else:
            log.warning(
                "Unknown ATM choice %r from %s", arg[:10], self.conn.peer, extra=fn("handle_client")
            )
        return ""

    async def _login(self, payload: str) -> str:
        self.prefix, self.account, self.pending = payload, None, None
        parsed = split_login(payload)
        if parsed is None:
            log.warning("Malformed lab login from %s", self.conn.peer, extra=fn("handle_client"))
            return INVALID_LOGIN
        try:
            self.account = await self.service.login(self.conn, Login(*parsed))
        except (AccountLocked, TooManyLogins) as exc:
            return f"{exc.message}\n"
        except RequestRejected:
            return INVALID_LOGIN
        return f"Welcome {self.account.name}!\n{MENU}"

    async def _balance(self) -> str:
        if self.account is None:
            return NOT_LOGGED_IN
        info = await self.service.balance(self.account.account)
        return f"Your balance is {format_cents(info.balance_cents)}\n" + info.stats.lab_lines(
            with_successful=False
        )

    async def _amount(self, text: str) -> str:
        op, self.pending = self.pending, None
        if self.account is None or op is None:
            return NOT_LOGGED_IN
        account = self.account.account
        try:
            amount_cents = parse_amount(text)
        except InvalidAmount as exc:
            return await self._failed(f"Transaction failed: {exc.message}\n", account)
        try:
            tx = await self.service.move(self.conn, account, Move(op, amount_cents, new_key("lab")))
        except TransientFailure:
            info = await self.service.balance(account)
            return (
                f"Transaction failed\nYour balance is {format_cents(info.balance_cents)}\n"
                "Please try again\n" + info.stats.lab_lines(with_successful=False)
            )
        except RequestRejected as exc:
            asked = f"{op} {format_cents(amount_cents)}"
            return await self._failed(f"Transaction failed: {exc.message} ({asked})\n", account)
        return f"Your balance is {format_cents(tx.balance_cents)}\n" + tx.stats.lab_lines(
            with_successful=True
        )

    async def _failed(self, first_line: str, account: int) -> str:
        info = await self.service.balance(account)
        return (
            first_line
            + f"Your balance is {format_cents(info.balance_cents)}\n"
            + info.stats.lab_lines(with_successful=False)
        )
