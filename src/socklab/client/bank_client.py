"""The ATM side of the bank: a blocking json client that survives the network.

    with BankClient("127.0.0.1", 5052, on_retry=print) as bank:
        bank.login(1, pin)
        receipt = bank.deposit(1250)          # 12.50; a fresh idempotency key
        print(receipt.balance_cents, receipt.replayed)

How retries work: every deposit, withdrawal and transfer gets an idempotency key before its
first attempt. When the connection breaks or times out, the client reconnects, logs in
again with the credentials it keeps in memory, and sends the request again **with the
same key**, at most ``attempts`` times in all, waiting a little longer each time. The
bank applies a key once: if the first attempt had been applied and only its reply was
lost, the retry gets the stored outcome (``replayed=True``) and nothing is applied twice.
A ``transient_failure`` reply (nothing applied) is retried the same way. Reads (balance,
statement, stats) are retried too; they change nothing. Business refusals
(``insufficient_funds``, ``auth_failed``, ...) are never retried: the answer would not change.

``new_key_each_attempt=True`` makes the naive client of the lab (a new key per attempt,
so a lost reply leads to a second application); it exists to demonstrate the difference.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from socklab.client.json_client import JsonClient
from socklab.client.tls import TlsOptions
from socklab.errors import LinkError, PeerProtocolError, TransientFailure
from socklab.money import format_cents, parse_amount

log = logging.getLogger(__name__)

DEFAULT_PORT = 5052


def new_key(prefix: str = "atm") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{uuid.uuid4().hex}"


def parse_signed_amount(text: str) -> int:
    """``"-5.00"`` -> ``-500``. Raises ``InvalidAmount``."""
    if text.startswith("-"):
        return -parse_amount(text[1:])
    return parse_amount(text)


@dataclass(frozen=True, slots=True)
class BankStats:
    total: int
    successful: int
    failed: int
    success_rate: float
    error_rate: float

    @classmethod
    def from_json(cls, value: Any) -> BankStats:
        return cls(
            total=int(value["total"]),
            successful=int(value["successful"]),
            failed=int(value["failed"]),
            success_rate=float(value["success_rate"]),
            error_rate=float(value["error_rate"]),
        )


@dataclass(frozen=True, slots=True)
class LoggedIn:
    account: int
    name: str
    balance_cents: int


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    account: int
    name: str
    balance_cents: int
    stats: BankStats


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """A deposit, withdrawal or transfer the bank acknowledged."""

    op: str
    account: int
    to: int | None
    amount_cents: int
    balance_cents: int
    key: str
    posting_id: int
    replayed: bool
    """The bank had already applied this key: an earlier attempt's reply was lost."""
    stats: BankStats
    attempts: int
    keys_sent: tuple[str, ...]
    """Every key sent for this operation (more than one only with naive retries)."""


@dataclass(frozen=True, slots=True)
class StatementLine:
    posting_id: int
    op: str
    amount_cents: int
    """Signed: + money in, - money out."""
    balance_after_cents: int
    counterparty: int | None
    key: str | None
    time: float


@dataclass(frozen=True, slots=True)
class Statement:
    account: int
    balance_cents: int
    lines: tuple[StatementLine, ...]


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """What the client is about to do after a failed attempt (for the user)."""

    op: str
    attempt: int
    """The attempt about to be made (2 for the first retry)."""
    attempts: int
    reason: str
    key: str | None
    same_key: bool
    delay_s: float

    def describe(self) -> str:
        if self.key is None:
            how = f"retrying {self.op}"
        elif self.same_key:
            how = f"retrying {self.op} with the same idempotency key"
        else:
            how = f"retrying {self.op} with a NEW key (naive)"
        return (
            f"{self.reason}; reconnecting and {how} "
            f"(attempt {self.attempt} of {self.attempts}) in {self.delay_s:.1f} s"
        )


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
        tls: TlsOptions | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_transient = retry_transient
        self.new_key_each_attempt = new_key_each_attempt
        self.key_prefix = key_prefix
        self.on_retry = on_retry
        self.tls = tls
        self._sleep = sleep
        self._jitter = random.Random()
        self._conn: JsonClient | None = None
        self._credentials: tuple[int, str] | None = None  # kept to log in again; never shown
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
                account, pin = self._credentials
                conn.request("login", account=account, pin=pin)
                self.reconnects += 1
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _call(
        self, op: str, fields: dict[str, Any], *, key: str | None = None
    ) -> tuple[dict[str, Any], int, tuple[str, ...]]:
        """Send ``op`` until it gets an answer, retrying link errors and transient failures.

        Returns (reply, attempts made, keys sent). Raises the ``RequestRejected`` of a
        refusal, or the last ``LinkError``/``TransientFailure`` once attempts run out.
        """
        keys = [key] if key is not None else []
        attempt = 1
        while True:
            error: LinkError | TransientFailure
            try:
                conn = self._connection()
                payload = dict(fields)
                if key is not None:
                    payload["key"] = key
                return conn.request(op, **payload), attempt, tuple(keys)
            except LinkError as exc:
                self._disconnect()
                error, reason = exc, str(exc)
            except TransientFailure as exc:
                if not self.retry_transient:
                    raise
                error, reason = exc, f"the bank said: {exc.message}"
            if attempt >= self.attempts:
                if isinstance(error, LinkError):
                    raise type(error)(f"{error} (gave up after {attempt} attempts)") from None
                raise error
            attempt += 1
            if key is not None and self.new_key_each_attempt:
                key = new_key(self.key_prefix)
                keys.append(key)
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 2))
            delay *= self._jitter.uniform(0.5, 1.0)
            notice = RetryNotice(
                op, attempt, self.attempts, reason, key, not self.new_key_each_attempt, delay
            )
            log.debug("%s", notice.describe())
            if self.on_retry is not None:
                self.on_retry(notice)
            self._sleep(delay)

    def _parse(self, reply: dict[str, Any], build: Callable[[dict[str, Any]], Any]) -> Any:
        try:
            return build(reply)
        except (KeyError, TypeError, ValueError) as exc:
            raise PeerProtocolError(
                "bad_reply", f"the bank at {self.host}:{self.port} sent an odd reply: {exc!r}"
            ) from None

    # -- operations ------------------------------------------------------------------

    def login(self, account: int, pin: str) -> LoggedIn:
        """Raises ``AuthFailed``, ``AccountLocked``, ``LinkError``."""
        self._credentials = None
        reply, _, _ = self._call("login", {"account": account, "pin": pin})
        self._credentials = (account, pin)
        result: LoggedIn = self._parse(
            reply,
            lambda r: LoggedIn(int(r["account"]), str(r["name"]), parse_amount(r["balance"])),
        )
        return result

    def logout(self) -> None:
        if self._credentials is None:
            return
        try:
            self._call("logout", {})
        finally:
            self._credentials = None

    def balance(self) -> BalanceInfo:
        reply, _, _ = self._call("balance", {})
        result: BalanceInfo = self._parse(
            reply,
            lambda r: BalanceInfo(
                int(r["account"]),
                str(r["name"]),
                parse_amount(r["balance"]),
                BankStats.from_json(r["stats"]),
            ),
        )
        return result

    def stats(self) -> BankStats:
        reply, _, _ = self._call("stats", {})
        result: BankStats = self._parse(reply, lambda r: BankStats.from_json(r["stats"]))
        return result

    def statement(self, limit: int = 10) -> Statement:
        reply, _, _ = self._call("statement", {"limit": limit})

        def build(r: dict[str, Any]) -> Statement:
            lines = tuple(
                StatementLine(
                    int(p["posting"]),
                    str(p["op"]),
                    parse_signed_amount(p["amount"]),
                    parse_signed_amount(p["balance_after"]),
                    None if p["counterparty"] is None else int(p["counterparty"]),
                    None if p["key"] is None else str(p["key"]),
                    float(p["time"]),
                )
                for p in r["postings"]
            )
            return Statement(int(r["account"]), parse_amount(r["balance"]), lines)

        result: Statement = self._parse(reply, build)
        return result

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        self._call("change_pin", {"old_pin": old_pin, "new_pin": new_pin})
        if self._credentials is not None:
            self._credentials = (self._credentials[0], new_pin)

    def deposit(self, amount_cents: int, *, key: str | None = None) -> TxReceipt:
        """Raises the bank's refusals (``InvalidAmount``, ``KeyReused``, ...) and, once
        attempts run out, ``LinkError`` or ``TransientFailure``."""
        return self._move("deposit", {"amount": format_cents(amount_cents)}, key)

    def withdraw(self, amount_cents: int, *, key: str | None = None) -> TxReceipt:
        """As ``deposit``, plus ``InsufficientFunds``."""
        return self._move("withdraw", {"amount": format_cents(amount_cents)}, key)

    def transfer(self, to: int, amount_cents: int, *, key: str | None = None) -> TxReceipt:
        """As ``withdraw``, plus ``SameAccount`` and ``UnknownAccount``."""
        return self._move("transfer", {"to": to, "amount": format_cents(amount_cents)}, key)

    def _move(self, op: str, fields: dict[str, Any], key: str | None) -> TxReceipt:
        reply, attempts, keys = self._call(op, fields, key=key or new_key(self.key_prefix))

        def build(r: dict[str, Any]) -> TxReceipt:
            return TxReceipt(
                op=str(r["op"]),
                account=int(r["account"]),
                to=None if r.get("to") is None else int(r["to"]),
                amount_cents=parse_amount(r["amount"]),
                balance_cents=parse_amount(r["balance"]),
                key=str(r["key"]),
                posting_id=int(r["posting"]),
                replayed=bool(r["replayed"]),
                stats=BankStats.from_json(r["stats"]),
                attempts=attempts,
                keys_sent=keys,
            )

        result: TxReceipt = self._parse(reply, build)
        return result
