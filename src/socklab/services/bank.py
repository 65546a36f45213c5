"""The bank of seed 003 Problem B, on a durable exactly-once ledger.

How this works: ``BankService`` owns the ledger and the fault injector; every connection
gets a ``BankSession``. The json and line dialects share one order table (``FLOW``: which
operation is allowed in which state and the state it leads to); the lab dialect speaks
the seed's ATM conversation (``socklab.services.bank_lab``), with its own table.

Money operations (deposit, withdraw, transfer) carry an idempotency key: in json the
client chooses it (no key, no money); the line and lab dialects generate a fresh one per
command, because their clients cannot send one. The service adds nothing to the ledger's
exactly-once rules; it only decides, before the ledger is called, whether an injected
fault hits the request:

- ``reject``: nothing is applied, the failure is counted, the client hears
  ``transient_failure`` (retrying with the same key is safe);
- ``lose-reply``: the request is applied, then the connection is cut before the reply
  (``DropConnection``): only a retry with the same key is safe.

Logins (and PIN changes) are limited per client address (``LoginRateLimiter``: a token
bucket, checked before any PIN is hashed, also for accounts that do not exist); the
ledger bounds the PIN hashes running at once and keeps the lockout counters per
(account, address). PINs never appear in a reply, an error or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from socklab.errors import (
    DropConnection,
    InvalidAmount,
    InvalidRequest,
    NotLoggedIn,
    RequestRejected,
    TooManyLogins,
    TransientFailure,
    UnknownOperation,
)
from socklab.ledger import Account, AccountId, Ledger, LedgerSettings, Receipt, Stats, open_ledger
from socklab.ledger.base import DEMO_BALANCE_CENTS, DEMO_NAMES, DEMO_PIN, Op, validate_key
from socklab.logs import fn
from socklab.money import format_cents, parse_amount
from socklab.services.bank_limits import LoginRateLimiter, whole_seconds
from socklab.services.bank_line import LINE_HELP, line_request, line_text
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session

if TYPE_CHECKING:
    from socklab.services.bank_lab import LabConversation

log = logging.getLogger(__name__)

FailMode = Literal["reject", "lose-reply"]
FAIL_MODES: tuple[FailMode, ...] = ("reject", "lose-reply")
DEFAULT_STATEMENT_LIMIT = 10
MAX_STATEMENT_LIMIT = 1000
MAX_ACCOUNT_ID = 2**63 - 1
DEFAULT_LOGIN_RATE_PER_S = 20.0
DEFAULT_LOGIN_BURST = 200
DEFAULT_LOGIN_MAX_WAIT_S = 2.0
"""Logins per client address: 200 at once (a benchmark's connections, a class behind one
NAT, clients reconnecting after lost replies), then 20 a second; a login over the limit
waits up to 2 s for its turn, and is refused beyond. The PIN hashes themselves run one
at a time per process (``LedgerSettings.pin_hash_concurrency``), so however many
addresses log in, hashing takes at most one core from the other clients."""

# -- the order of operations: one table for json and line ------------------------------

ANONYMOUS = "anonymous"
AUTHENTICATED = "authenticated"

FLOW: dict[str, dict[str, str]] = {
    ANONYMOUS: {
        "login": AUTHENTICATED,
        "stats": ANONYMOUS,
        "help": ANONYMOUS,
    },
    AUTHENTICATED: {
        "login": AUTHENTICATED,
        "logout": ANONYMOUS,
        "balance": AUTHENTICATED,
        "deposit": AUTHENTICATED,
        "withdraw": AUTHENTICATED,
        "transfer": AUTHENTICATED,
        "statement": AUTHENTICATED,
        "stats": AUTHENTICATED,
        "change_pin": AUTHENTICATED,
        "help": AUTHENTICATED,
    },
}
"""``{state: {op: state after the op succeeds}}``. An op missing from the current state's
row is refused with ``not_logged_in`` (or ``unknown_op`` if no state knows it)."""

OPS: tuple[str, ...] = tuple(dict.fromkeys(op for row in FLOW.values() for op in row))
MONEY_OPS: frozenset[str] = frozenset({"deposit", "withdraw", "transfer"})

# -- values ----------------------------------------------------------------------------


def new_key(prefix: str = "srv") -> str:
    """A fresh idempotency key, for clients that cannot choose one."""
    return f"{prefix}-{uuid.uuid4().hex}"


def stats_json(stats: Stats) -> dict[str, Any]:
    return {
        "total": stats.total,
        "successful": stats.successful,
        "failed": stats.failed,
        "success_rate": round(stats.success_rate, 4),
        "error_rate": round(stats.error_rate, 4),
    }


@dataclass(frozen=True, slots=True)
class Transaction:
    """A money request that reached the ledger and succeeded (or was replayed)."""

    receipt: Receipt
    stats: Stats

    def as_json(self) -> JsonReply:
        r = self.receipt
        reply: JsonReply = {
            "op": r.op,
            "account": r.account,
            "amount": format_cents(r.amount_cents),
            "balance": format_cents(r.balance_cents),
            "key": r.key,
            "posting": r.posting_id,
            "replayed": r.replayed,
            "stats": stats_json(self.stats),
        }
        if r.counterparty is not None:
            reply["to"] = r.counterparty
        return reply


# -- parsing request fields ------------------------------------------------------------


def parse_account(value: Any, field: str = "account") -> AccountId:
    """An account number from json (an integer >= 1). Raises ``InvalidRequest``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ACCOUNT_ID:
        raise InvalidRequest(f"{field} must be an account number (an integer from 1)")
    return value


def parse_wire_amount(value: Any) -> int:
    """Cents from a json amount, which must be a decimal string. Raises ``InvalidAmount``."""
    if not isinstance(value, str):
        raise InvalidAmount('an amount must be a decimal string like "12.50", not a number')
    return parse_amount(value)


def parse_pin_field(value: Any, field: str = "pin") -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string of digits")
    return value


def parse_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_STATEMENT_LIMIT
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_STATEMENT_LIMIT}")
    if not 1 <= value <= MAX_STATEMENT_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_STATEMENT_LIMIT}")
    return value


# -- the service -----------------------------------------------------------------------


class BankService(Service):
    """The bank: a ledger (opened here from a URL, or given open), and fault injection.

    A ledger given as a URL is opened in ``start()`` and closed in ``stop()``; a ledger
    given open belongs to the caller, who closes it.
    """

    name = "bank"
    default_port = 5052
    display_name = "Bank Server"

    def __init__(
        self,
        ledger: Ledger | str,
        *,
        settings: LedgerSettings | None = None,
        fail_rate: float = 0.0,
        fail_mode: FailMode = "reject",
        rng: random.Random | int | None = None,
        create_demo_accounts: bool = True,
        login_rate_per_s: float = DEFAULT_LOGIN_RATE_PER_S,
        login_burst: int = DEFAULT_LOGIN_BURST,
        login_max_wait_s: float = DEFAULT_LOGIN_MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Raises ``ValueError`` for a bad ``fail_rate``, ``fail_mode`` or login limit."""
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {', '.join(FAIL_MODES)}")
        self._url = ledger if isinstance(ledger, str) else None
        self._ledger: Ledger | None = None if isinstance(ledger, str) else ledger
        self._settings = settings
        self.fail_rate = fail_rate
        self.fail_mode: FailMode = fail_mode
        self._rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.create_demo_accounts = create_demo_accounts
        self.login_limiter = LoginRateLimiter(
            login_rate_per_s, login_burst, max_wait_s=login_max_wait_s, clock=clock
        )
        self._sleep = sleep

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the bank service is not started")
        return self._ledger

    async def start(self) -> None:
        """Open the ledger (if given a URL) and, on an empty one, create the demo accounts.

        Raises ``ValueError`` (bad URL) and ``StorageError``.
        """
        if self._ledger is None:
            assert self._url is not None
            self._ledger = await open_ledger(self._url, self._settings)
        if self.create_demo_accounts and await self._ledger.ensure_demo_accounts():
            log.info(
                "Empty ledger: created the demo accounts 1 to %d (%s; PIN %s, balance %s each)",
                len(DEMO_NAMES),
                ", ".join(DEMO_NAMES),
                DEMO_PIN,
                format_cents(DEMO_BALANCE_CENTS),
                extra=fn("start_server"),
            )
        if self.fail_rate:
            log.info(
                "Fault injection: %s of money requests fail (%s)",
                f"{self.fail_rate:.0%}",
                self.fail_mode,
                extra=fn("start_server"),
            )

    async def stop(self) -> None:
        if self._url is not None and self._ledger is not None:
            ledger, self._ledger = self._ledger, None
            await ledger.close()

    def open_session(self, conn: ConnectionInfo) -> Session:
        return BankSession(self, conn)

    # -- operations shared by every dialect ---------------------------------------------

    async def check_login_rate(self, conn: ConnectionInfo, account: AccountId) -> None:
        """Take a login token for the connection's address, waiting for it if need be.
        Raises ``TooManyLogins``."""
        wait_s = self.login_limiter.acquire(conn.client)
        if wait_s is None:
            retry_s = whole_seconds(self.login_limiter.retry_after(conn.client))
            log.warning(
                "Login to account %s from %s refused: too many logins from that address",
                account,
                conn.peer,
                extra=fn("handle_client"),
            )
            raise TooManyLogins(f"too many logins from your address; try again in {retry_s} s")
        if wait_s > 0:
            await self._sleep(wait_s)

    async def login(self, conn: ConnectionInfo, account: AccountId, pin: str) -> Account:
        """Raises ``TooManyLogins``, ``AuthFailed``, ``AccountLocked``."""
        await self.check_login_rate(conn, account)
        try:
            found = await self.ledger.authenticate(account, pin, client=conn.client)
        except RequestRejected as exc:
            log.warning(
                "Login refused for account %s from %s: %s",
                account,
                conn.peer,
                exc.code,
                extra=fn("handle_client"),
            )
            raise
        log.info("Account %s logged in from %s", account, conn.peer, extra=fn("handle_client"))
        return found

    async def move(
        self,
        conn: ConnectionInfo,
        op: Op,
        account: AccountId,
        amount_cents: int,
        *,
        key: str,
        to: AccountId | None = None,
    ) -> Transaction:
        """Deposit, withdraw or transfer through the ledger, with fault injection.

        Raises ``InvalidRequest`` (bad key), ``TransientFailure`` (injected ``reject``),
        ``DropConnection`` (injected ``lose-reply``, after applying), and the ledger's
        rejections.
        """
        validate_key(key)
        is_hit = self.fail_rate > 0 and self._rng.random() < self.fail_rate
        shown = format_cents(amount_cents)
        target = f" to {to}" if to is not None else ""
        if is_hit and self.fail_mode == "reject":
            await self.ledger.record_failure()
            self._log_transaction(account, op, shown, target, "transient_failure (injected)")
            raise TransientFailure(
                "Transaction failed: nothing was applied. Please try again (with the same key)"
            )
        try:
            receipt = await self._apply(op, account, amount_cents, key, to)
        except RequestRejected as exc:
            outcome = exc.code
            if is_hit:
                self._log_transaction(account, op, shown, target, f"{outcome}, reply dropped")
                raise DropConnection from None
            self._log_transaction(account, op, shown, target, outcome)
            raise
        outcome = "replayed" if receipt.replayed else "ok"
        if is_hit:
            self._log_transaction(account, op, shown, target, f"{outcome}, reply dropped")
            raise DropConnection
        self._log_transaction(account, op, shown, target, outcome)
        return Transaction(receipt, await self.ledger.stats())

    def _apply(
        self, op: Op, account: AccountId, amount_cents: int, key: str, to: AccountId | None
    ) -> Awaitable[Receipt]:
        if op == "deposit":
            return self.ledger.deposit(account, amount_cents, key=key)
        if op == "withdraw":
            return self.ledger.withdraw(account, amount_cents, key=key)
        if to is None:
            raise InvalidRequest("a transfer needs 'to', the destination account")
        return self.ledger.transfer(account, to, amount_cents, key=key)

    @staticmethod
    def _log_transaction(account: int, op: str, amount: str, target: str, outcome: str) -> None:
        log.info(
            "Account %s %s %s%s: %s",
            account,
            op,
            amount,
            target,
            outcome,
            extra=fn("handle_client"),
        )


# -- the session: json and line, and the lab conversation -------------------------------

Handler = Callable[[dict[str, Any]], Awaitable[JsonReply]]


class BankSession(Session):
    """One connection: its state in ``FLOW`` and the account logged in."""

    def __init__(self, service: BankService, conn: ConnectionInfo) -> None:
        self.service = service
        self.conn = conn
        self.state = ANONYMOUS
        self.account: Account | None = None
        self._lab: LabConversation | None = None
        self._handlers: dict[str, Handler] = {
            "login": self._login,
            "logout": self._logout,
            "balance": self._balance,
            "deposit": self._deposit,
            "withdraw": self._withdraw,
            "transfer": self._transfer,
            "statement": self._statement,
            "stats": self._stats,
            "change_pin": self._change_pin,
            "help": self._help,
        }

    # -- json ----------------------------------------------------------------------------

    def handle_json(self, request: dict[str, Any]) -> Awaitable[JsonReply]:
        op = request.get("op")
        if not isinstance(op, str):
            raise InvalidRequest(f"a request needs an op, one of: {', '.join(OPS)}")
        next_state = self._check_order(op)
        return self._run(op, request, next_state)

    async def _run(self, op: str, request: dict[str, Any], next_state: str) -> JsonReply:
        reply = await self._handlers[op](request)
        self.state = next_state
        return reply

    def _check_order(self, op: str) -> str:
        """The state ``op`` leads to; raises if it is not allowed now."""
        allowed = FLOW[self.state]
        if op in allowed:
            return allowed[op]
        if op in OPS:
            raise NotLoggedIn(f"log in first: {op} needs a logged-in account")
        raise UnknownOperation(f"unknown op {op[:30]!r}; the bank knows: {', '.join(OPS)}")

    @property
    def _account_id(self) -> AccountId:
        assert self.account is not None  # FLOW only lets logged-in sessions get here
        return self.account.id

    async def _login(self, request: dict[str, Any]) -> JsonReply:
        account = parse_account(request.get("account"))
        pin = parse_pin_field(request.get("pin"))
        # A login replaces the session's identity: a failed one leaves none.
        self.account, self.state = None, ANONYMOUS
        found = await self.service.login(self.conn, account, pin)
        self.account = found
        return {
            "account": found.id,
            "name": found.name,
            "balance": format_cents(found.balance_cents),
        }

    async def _logout(self, request: dict[str, Any]) -> JsonReply:
        account = self._account_id
        self.account = None
        log.info("Account %s logged out", account, extra=fn("handle_client"))
        return {"account": account}

    async def _balance(self, request: dict[str, Any]) -> JsonReply:
        ledger = self.service.ledger
        found = await ledger.get_account(self._account_id)
        stats = await ledger.stats()
        return {
            "account": found.id,
            "name": found.name,
            "balance": format_cents(found.balance_cents),
            "stats": stats_json(stats),
        }

    def _money_key(self, request: dict[str, Any]) -> str:
        if "key" not in request:
            raise InvalidRequest(
                "deposit, withdraw and transfer need an idempotency 'key' "
                "(the same key on every retry of the same request)"
            )
        return validate_key(request["key"])

    async def _deposit(self, request: dict[str, Any]) -> JsonReply:
        key = self._money_key(request)
        amount = parse_wire_amount(request.get("amount"))
        tx = await self.service.move(self.conn, "deposit", self._account_id, amount, key=key)
        return tx.as_json()

    async def _withdraw(self, request: dict[str, Any]) -> JsonReply:
        key = self._money_key(request)
        amount = parse_wire_amount(request.get("amount"))
        tx = await self.service.move(self.conn, "withdraw", self._account_id, amount, key=key)
        return tx.as_json()

    async def _transfer(self, request: dict[str, Any]) -> JsonReply:
        key = self._money_key(request)
        to = parse_account(request.get("to"), "to")
        amount = parse_wire_amount(request.get("amount"))
        tx = await self.service.move(
            self.conn, "transfer", self._account_id, amount, key=key, to=to
        )
        return tx.as_json()

    async def _statement(self, request: dict[str, Any]) -> JsonReply:
        limit = parse_limit(request.get("limit"))
        ledger = self.service.ledger
        postings = await ledger.statement(self._account_id, limit)
        found = await ledger.get_account(self._account_id)
        return {
            "account": found.id,
            "balance": format_cents(found.balance_cents),
            "postings": [
                {
                    "posting": p.posting_id,
                    "op": p.op,
                    "amount": format_cents(p.amount_cents),
                    "balance_after": format_cents(p.balance_after_cents),
                    "counterparty": p.counterparty,
                    "key": p.key,
                    "time": p.created_at,
                }
                for p in postings
            ],
        }

    async def _stats(self, request: dict[str, Any]) -> JsonReply:
        return {"stats": stats_json(await self.service.ledger.stats())}

    async def _change_pin(self, request: dict[str, Any]) -> JsonReply:
        old_pin = parse_pin_field(request.get("old_pin"), "old_pin")
        new_pin = parse_pin_field(request.get("new_pin"), "new_pin")
        await self.service.check_login_rate(self.conn, self._account_id)  # a PIN check too
        await self.service.ledger.change_pin(
            self._account_id, old_pin, new_pin, client=self.conn.client
        )
        log.info("Account %s changed its PIN", self._account_id, extra=fn("handle_client"))
        return {"account": self._account_id}

    async def _help(self, request: dict[str, Any]) -> JsonReply:
        return {"ops": list(OPS), "now_allowed": list(FLOW[self.state])}

    # -- line ----------------------------------------------------------------------------

    def handle_line(self, line: str) -> str | Awaitable[str]:
        words = line.split()
        command = words[0].lower() if words else "help"
        if command in ("help", "?"):
            return LINE_HELP
        if command not in OPS:
            raise UnknownOperation(f"unknown command {command[:30]!r}; {LINE_HELP}")
        request = line_request(command, words[1:], key=new_key("line"))
        next_state = self._check_order(command)
        return self._run_line(command, request, next_state)

    async def _run_line(self, command: str, request: dict[str, Any], next_state: str) -> str:
        reply = await self._run(command, request, next_state)
        return line_text(command, reply)

    # -- lab -----------------------------------------------------------------------------

    def handle_lab(self, payload: str) -> str | Awaitable[str]:
        if self._lab is None:
            # Imported here: bank_lab builds on this module.
            from socklab.services.bank_lab import LabConversation

            self._lab = LabConversation(self.service, self.conn)
        return self._lab.handle(payload)

    def farewell(self) -> str:
        return "[DISCONNECTED]"
