"""The ATM side of the bank: a blocking json client that survives the network.

    with BankClient("127.0.0.1", DEFAULT_PORT, on_retry=print) as bank:
        bank.login(1, pin)
        receipt = bank.deposit(1250)          # 12.50; a fresh idempotency key
        receipt = bank.move("transfer", 500, to=2)
        print(receipt.balance_cents, receipt.replayed)
        for page in bank.statement_pages():   # the whole journal, newest first
            ...

How retries work: every deposit, withdrawal and transfer gets an idempotency key before its
first attempt. When the connection breaks or times out, the client reconnects, logs in
again with the credentials it keeps in memory, and sends the request again **with the
same key**, at most ``attempts`` times in all, waiting a little longer each time. The
bank applies a key once: if the first attempt had been applied and only its reply was
lost, the retry gets the stored outcome (``replayed=True``) and nothing is applied twice.
A ``transient_failure`` reply (nothing applied) is retried the same way. Reads (balance,
statement, stats) are retried too; they change nothing. Business refusals
(``insufficient_funds``, ``auth_failed``, ...) are never retried: the answer would not change.

The retry decisions are ``socklab.client.retry``'s pure functions and the requests and
replies are ``socklab.protocol.bank``'s types; this class only drives the socket.

``new_key_each_attempt=True`` makes the naive client of the lab (a new key per attempt,
so a lost reply leads to a second application); it exists to demonstrate the difference.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from socklab.client.json_client import JsonClient
from socklab.client.retry import GiveUp, RetryNotice, RetryPolicy, Uniform, decide, notice
from socklab.client.tls import TlsOptions
from socklab.errors import LinkError, PeerProtocolError
from socklab.protocol import DEFAULT_PORTS
from socklab.protocol.bank import (
    DEFAULT_STATEMENT_LIMIT,
    MAX_STATEMENT_LIMIT,
    Balance,
    BalanceInfo,
    BankRequest,
    BankStats,
    ChangePin,
    GetStats,
    LoggedIn,
    Login,
    Logout,
    MoneyOp,
    Move,
    Moved,
    Statement,
    StatementPage,
    StatsInfo,
    parse_reply,
)

__all__ = ["DEFAULT_PORT", "BankClient", "RetryNotice", "RetryPolicy", "TxReceipt", "new_key"]

log = logging.getLogger(__name__)

DEFAULT_PORT = DEFAULT_PORTS["bank"]

R = TypeVar("R")


def new_key(prefix: str = "atm") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """A deposit, withdrawal or transfer the bank acknowledged, and what it took."""

    moved: Moved
    """The bank's reply."""
    attempts: int
    keys_sent: tuple[str, ...]
    """Every key sent for this operation (more than one only with naive retries)."""

    @property
    def op(self) -> MoneyOp:
        return self.moved.op

    @property
    def account(self) -> int:
        return self.moved.account

    @property
    def to(self) -> int | None:
        return self.moved.to

    @property
    def amount_cents(self) -> int:
        return self.moved.amount_cents

    @property
    def balance_cents(self) -> int:
        return self.moved.balance_cents

    @property
    def key(self) -> str:
        return self.moved.key

    @property
    def posting_id(self) -> int:
        return self.moved.posting_id

    @property
    def replayed(self) -> bool:
        """The bank had already applied this key: an earlier attempt's reply was lost."""
        return self.moved.replayed

    @property
    def stats(self) -> BankStats:
        return self.moved.stats


def read_reply(request: BankRequest, fields: dict[str, Any], expected: type[R]) -> R:
    """The typed reply to ``request``. Raises ``PeerProtocolError`` (``bad_reply``)."""
    reply = parse_reply(request.op, fields)
    if not isinstance(reply, expected):  # pragma: no cover - the table maps op to type
        raise PeerProtocolError("bad_reply", f"expected {expected.__name__}, got {reply!r}")
    return reply


class BankClient:
    """A logged-in ATM session that reconnects and retries; one thread at a time."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 3.0,
        retry_transient: bool = True,
        new_key_each_attempt: bool = False,
        key_prefix: str = "atm",
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Uniform | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        """Raises ``ValueError`` for fewer than 1 attempt or a negative backoff."""
        self.policy = RetryPolicy(
            attempts, backoff_s, max_backoff_s, retry_transient, new_key_each_attempt
        )
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.key_prefix = key_prefix
        self.on_retry = on_retry
        self.tls = tls
        self._sleep = sleep
        self._uniform = uniform if uniform is not None else random.Random().uniform
        self._conn: JsonClient | None = None
        self._credentials: Login | None = None  # kept to log in again; never shown
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"<BankClient {self.host}:{self.port}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._disconnect()

    # -- plumbing --------------------------------------------------------------------

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _connection(self) -> JsonClient:
        """The open connection, after connecting and logging in again if needed."""
        if self._conn is not None:
            return self._conn
        conn = JsonClient.connect(self.host, self.port, timeout_s=self.timeout_s, tls=self.tls)
        try:
            if self._credentials is not None:
                conn.request(Login.op, **self._credentials.to_json())
                self.reconnects += 1
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _call(self, request: BankRequest) -> tuple[dict[str, Any], BankRequest, int, list[str]]:
        """Send ``request`` until it gets an answer, as ``retry.decide`` says.

        Returns (reply fields, the request last sent, attempts made, keys sent). Raises
        the ``RequestRejected`` of a refusal, ``PeerProtocolError``, or the last
        ``LinkError``/``TransientFailure`` once attempts run out.
        """
        keys = [request.key] if isinstance(request, Move) else []
        attempt = 1
        while True:
            try:
                fields = self._connection().request(request.op, **request.to_json())
            except Exception as exc:
                if isinstance(exc, LinkError):
                    self._disconnect()
                action = decide(
                    self.policy,
                    attempt,
                    exc,
                    keyed=isinstance(request, Move),
                    uniform=self._uniform,
                )
                if isinstance(action, GiveUp):
                    if action.error is exc:
                        raise
                    raise action.error from None
                if action.new_key and isinstance(request, Move):
                    request = dataclasses.replace(request, key=new_key(self.key_prefix))
                    keys.append(request.key)
                attempt = action.attempt
                key = request.key if isinstance(request, Move) else None
                retry_notice = notice(request.op, self.policy, action, key)
                log.debug("%s", retry_notice.describe())
                if self.on_retry is not None:
                    self.on_retry(retry_notice)
                self._sleep(action.delay_s)
                continue
            return fields, request, attempt, keys

    def _ask(self, request: BankRequest, expected: type[R]) -> R:
        fields, sent, _, _ = self._call(request)
        return read_reply(sent, fields, expected)

    # -- operations ------------------------------------------------------------------

    def login(self, account: int, pin: str) -> LoggedIn:
        """Raises ``AuthFailed``, ``AccountLocked``, ``LinkError``."""
        self._credentials = None
        request = Login(account, pin)
        result = self._ask(request, LoggedIn)
        self._credentials = request
        return result

    def logout(self) -> None:
        """Raises ``LinkError`` once attempts run out."""
        if self._credentials is None:
            return
        try:
            self._call(Logout())
        finally:
            self._credentials = None

    def balance(self) -> BalanceInfo:
        """Raises ``NotLoggedIn``, ``LinkError``, ``PeerProtocolError``."""
        return self._ask(Balance(), BalanceInfo)

    def stats(self) -> BankStats:
        """Raises ``LinkError``, ``PeerProtocolError``."""
        return self._ask(GetStats(), StatsInfo).stats

    def statement(
        self, limit: int = DEFAULT_STATEMENT_LIMIT, *, before: int | None = None
    ) -> StatementPage:
        """The newest ``limit`` postings (older than posting ``before``, if given); the
        page's ``next_before`` is the cursor of the next, older page.

        Raises ``ValueError`` for a limit outside 1..``MAX_STATEMENT_LIMIT``, and
        ``NotLoggedIn``, ``InvalidRequest``, ``LinkError``, ``PeerProtocolError``.
        """
        if not 1 <= limit <= MAX_STATEMENT_LIMIT:
            raise ValueError(f"limit must be from 1 to {MAX_STATEMENT_LIMIT}")
        return self._ask(Statement(limit, before), StatementPage)

    def statement_pages(self, page_size: int = MAX_STATEMENT_LIMIT) -> Iterator[StatementPage]:
        """Every posting of the account, newest first, one page per request.

        Raises what ``statement`` raises, and ``PeerProtocolError`` for a cursor that does
        not move back (the walk would never end).
        """
        before: int | None = None
        while True:
            page = self.statement(page_size, before=before)
            yield page
            cursor = page.next_before
            if cursor is None:
                return
            if before is not None and cursor >= before:
                raise PeerProtocolError(
                    "bad_reply",
                    f"the bank at {self.host}:{self.port} sent the statement cursor "
                    f"{cursor} after {before}: it must move back",
                )
            before = cursor

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        """Raises ``AuthFailed``, ``InvalidRequest``, ``LinkError``."""
        self._call(ChangePin(old_pin, new_pin))
        if self._credentials is not None:
            self._credentials = Login(self._credentials.account, new_pin)

    def move(
        self, op: MoneyOp, amount_cents: int, *, to: int | None = None, key: str | None = None
    ) -> TxReceipt:
        """A deposit, withdrawal or transfer (``to``: the destination) under idempotency
        ``key`` (a fresh one if not given), retried as the policy says.

        Raises ``InvalidRequest`` for a transfer without ``to`` (or another op with one),
        the bank's refusals (``InvalidAmount``, ``InsufficientFunds``, ``SameAccount``,
        ``UnknownAccount``, ``KeyReused``, ...) and, once attempts run out, ``LinkError``
        or ``TransientFailure``.
        """
        request = Move(op, amount_cents, key or new_key(self.key_prefix), to)
        fields, sent, attempts, keys = self._call(request)
        return TxReceipt(read_reply(sent, fields, Moved), attempts, tuple(keys))

    def deposit(self, amount_cents: int, *, key: str | None = None) -> TxReceipt:
        """``move("deposit", ...)``."""
        return self.move("deposit", amount_cents, key=key)

    def withdraw(self, amount_cents: int, *, key: str | None = None) -> TxReceipt:
        """``move("withdraw", ...)``."""
        return self.move("withdraw", amount_cents, key=key)

    def transfer(self, to: int, amount_cents: int, *, key: str | None = None) -> TxReceipt:
        """``move("transfer", ..., to=to)``."""
        return self.move("transfer", amount_cents, to=to, key=key)
