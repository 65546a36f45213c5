"""The bank of seed 003 Problem B, on a durable exactly-once ledger: the core.

How this works: ``BankService`` owns the ledger, the fault injector and the login limit,
and answers typed requests with typed replies (``socklab.protocol.bank``): ``login``,
``move`` (deposit, withdraw, transfer), ``balance``, ``statement``, ``stats``,
``change_pin``. It knows no dialect. The adapters build on it: ``session`` (a
connection's state in ``FLOW``, json), ``line`` (text for ``nc``) and ``lab`` (the seed's
ATM conversation). The core imports none of them; the package wires its sessions in
(``BankService.session_factory``).

Money operations carry an idempotency key: in json the client chooses it (no key, no
money); the line and lab dialects generate a fresh one per command unless the line names
one. The service adds nothing to the ledger's exactly-once rules; it only decides, before
the ledger is called, whether an injected fault hits the request:

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
from typing import ClassVar, Literal

from socklab.errors import (
    DropConnection,
    RequestRejected,
    TooManyLogins,
    TransientFailure,
)
from socklab.ledger import AccountId, Ledger, LedgerSettings, Receipt, Stats, open_ledger
from socklab.ledger.base import DEMO_BALANCE_CENTS, DEMO_NAMES, DEMO_PIN
from socklab.logs import fn
from socklab.money import format_cents
from socklab.protocol import DEFAULT_PORTS
from socklab.protocol.bank import (
    OPS,
    BalanceInfo,
    BankStats,
    ChangePin,
    LoggedIn,
    Login,
    Move,
    Moved,
    PinChanged,
    Statement,
    StatementLine,
    StatementPage,
)
from socklab.services.bank.limits import LoginRateLimiter, whole_seconds
from socklab.services.base import ConnectionInfo, Service, Session

log = logging.getLogger(__name__)

FailMode = Literal["reject", "lose-reply"]
FAIL_MODES: tuple[FailMode, ...] = ("reject", "lose-reply")
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

assert set(OPS) == {op for row in FLOW.values() for op in row}, "FLOW names every op"
MONEY_OPS: frozenset[str] = frozenset({"deposit", "withdraw", "transfer"})

SessionFactory = Callable[["BankService", ConnectionInfo], Session]


def new_key(prefix: str = "srv") -> str:
    """A fresh idempotency key, for clients that cannot choose one."""
    return f"{prefix}-{uuid.uuid4().hex}"


def moved(receipt: Receipt, stats: Stats) -> Moved:
    """The reply for a posting the ledger applied (or replayed)."""
    return Moved(
        receipt.op,
        receipt.account,
        receipt.amount_cents,
        receipt.balance_cents,
        receipt.key,
        receipt.posting_id,
        receipt.replayed,
        stats,
        receipt.counterparty,
    )


class BankService(Service):
    """The bank: a ledger (opened here from a URL, or given open), and fault injection.

    A ledger given as a URL is opened in ``start()`` and closed in ``stop()``; a ledger
    given open belongs to the caller, who closes it.
    """

    name = "bank"
    default_port = DEFAULT_PORTS["bank"]
    display_name = "Bank Server"
    session_factory: ClassVar[SessionFactory | None] = None
    """What ``open_session`` builds: set by ``socklab.services.bank`` to its session
    class (the adapters build on the core, so the core does not import them)."""

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
        """A session for one connection. Raises ``RuntimeError`` if no adapter is wired in
        (import ``socklab.services.bank``, not only its core)."""
        factory = type(self).session_factory
        if factory is None:
            raise RuntimeError("no bank session adapter: import socklab.services.bank")
        return factory(self, conn)

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

    async def login(self, conn: ConnectionInfo, req: Login) -> LoggedIn:
        """Raises ``TooManyLogins``, ``AuthFailed``, ``AccountLocked``."""
        await self.check_login_rate(conn, req.account)
        try:
            found = await self.ledger.authenticate(req.account, req.pin, client=conn.client)
        except RequestRejected as exc:
            log.warning(
                "Login refused for account %s from %s: %s",
                req.account,
                conn.peer,
                exc.code,
                extra=fn("handle_client"),
            )
            raise
        log.info("Account %s logged in from %s", found.id, conn.peer, extra=fn("handle_client"))
        return LoggedIn(found.id, found.name, found.balance_cents)

    async def balance(self, account: AccountId) -> BalanceInfo:
        """Raises ``UnknownAccount``."""
        found = await self.ledger.get_account(account)
        stats = await self.ledger.stats()
        return BalanceInfo(found.id, found.name, found.balance_cents, stats)

    async def stats(self) -> BankStats:
        return await self.ledger.stats()

    async def move(self, conn: ConnectionInfo, account: AccountId, req: Move) -> Moved:
        """Deposit, withdraw or transfer through the ledger, with fault injection.

        Raises ``TransientFailure`` (injected ``reject``), ``DropConnection`` (injected
        ``lose-reply``, after applying), and the ledger's rejections (``replayed`` set
        when the ledger answers with a refusal it stored for the same key).
        """
        is_hit = self.fail_rate > 0 and self._rng.random() < self.fail_rate
        shown = format_cents(req.amount_cents)
        target = f" to {req.to}" if req.to is not None else ""
        if is_hit and self.fail_mode == "reject":
            await self.ledger.record_failure()
            self._log_transaction(account, req.op, shown, target, "transient_failure (injected)")
            raise TransientFailure(
                "Transaction failed: nothing was applied. Please try again (with the same key)"
            )
        try:
            receipt = await self._apply(account, req)
        except RequestRejected as exc:
            outcome = f"{exc.code} (replayed)" if exc.replayed else exc.code
            if is_hit:
                self._log_transaction(account, req.op, shown, target, f"{outcome}, reply dropped")
                raise DropConnection from None
            self._log_transaction(account, req.op, shown, target, outcome)
            raise
        outcome = "replayed" if receipt.replayed else "ok"
        if is_hit:
            self._log_transaction(account, req.op, shown, target, f"{outcome}, reply dropped")
            raise DropConnection
        self._log_transaction(account, req.op, shown, target, outcome)
        return moved(receipt, await self.ledger.stats())

    def _apply(self, account: AccountId, req: Move) -> Awaitable[Receipt]:
        if req.to is not None:  # a transfer (``Move`` checks that only a transfer has one)
            return self.ledger.transfer(account, req.to, req.amount_cents, key=req.key)
        if req.op == "deposit":
            return self.ledger.deposit(account, req.amount_cents, key=req.key)
        return self.ledger.withdraw(account, req.amount_cents, key=req.key)

    async def statement(self, account: AccountId, req: Statement) -> StatementPage:
        """A page of ``account``'s journal, newest first, older than ``req.before`` if
        given; ``next_before`` is the cursor of the next older page (``None``: the last).
        Raises ``UnknownAccount``."""
        ledger = self.ledger
        postings = await ledger.statement(account, req.limit, before=req.before)
        next_before = None
        if len(postings) == req.limit:  # a full page: is there anything older?
            oldest = postings[-1].posting_id
            if await ledger.statement(account, 1, before=oldest):
                next_before = oldest
        found = await ledger.get_account(account)
        lines = tuple(
            StatementLine(
                p.posting_id,
                p.op,
                p.amount_cents,
                p.balance_after_cents,
                p.counterparty,
                p.key,
                p.created_at,
            )
            for p in postings
        )
        return StatementPage(found.id, found.balance_cents, lines, next_before)

    async def change_pin(
        self, conn: ConnectionInfo, account: AccountId, req: ChangePin
    ) -> PinChanged:
        """Raises ``TooManyLogins``, ``AuthFailed``, ``AccountLocked``, ``InvalidRequest``."""
        await self.check_login_rate(conn, account)  # a PIN check too
        await self.ledger.change_pin(account, req.old_pin, req.new_pin, client=conn.client)
        log.info("Account %s changed its PIN", account, extra=fn("handle_client"))
        return PinChanged(account)

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
