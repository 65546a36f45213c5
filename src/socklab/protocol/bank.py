"""The bank's vocabulary: every request and reply of the json dialect, spelled once.

Each request and reply is a frozen dataclass with ``to_json()`` (the fields of its json
object, without the envelope) and ``from_json(fields)``. The server parses requests with
``parse_request``; clients, the load generator and the checker build requests and read
replies with the same classes, so a field name appears in this module and nowhere else.

Money is ``int`` cents inside; on the wire an amount is a decimal string (``"12.50"``).
Parsing a request raises the ``RequestRejected`` the server should answer with
(``invalid_request``, ``invalid_amount``, ``unknown_op``); parsing a reply raises
``PeerProtocolError`` (``bad_reply``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

from socklab.errors import (
    InvalidAmount,
    InvalidRequest,
    PeerProtocolError,
    UnknownOperation,
)
from socklab.money import format_cents, parse_amount

MoneyOp = Literal["deposit", "withdraw", "transfer"]
MONEY_OPS: tuple[MoneyOp, ...] = ("deposit", "withdraw", "transfer")

DEFAULT_STATEMENT_LIMIT = 10
MAX_STATEMENT_LIMIT = 1000
"""The most postings one ``statement`` reply holds; page with ``before`` for more."""
MAX_ACCOUNT_ID = 2**63 - 1
MAX_KEY_CHARS = 128

Fields: TypeAlias = dict[str, Any]

# -- reading fields --------------------------------------------------------------------


def account_field(value: object, name: str = "account") -> int:
    """An account number: an integer from 1. Raises ``InvalidRequest``."""
    if type(value) is not int or not 1 <= value <= MAX_ACCOUNT_ID:
        raise InvalidRequest(f"{name} must be an account number (an integer from 1)")
    return value


def amount_field(value: object) -> int:
    """Cents from a wire amount, a decimal string. Raises ``InvalidAmount``."""
    if not isinstance(value, str):
        raise InvalidAmount('an amount must be a decimal string like "12.50", not a number')
    return parse_amount(value)


def key_field(value: object) -> str:
    """An idempotency key: 1 to 128 printable characters. Raises ``InvalidRequest``."""
    if value is None:
        raise InvalidRequest(
            "deposit, withdraw and transfer need an idempotency 'key' "
            "(the same key on every retry of the same request)"
        )
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_CHARS or not value.isprintable():
        raise InvalidRequest(
            f"an idempotency key must be 1 to {MAX_KEY_CHARS} printable characters"
        )
    return value


def pin_field(value: object, name: str = "pin") -> str:
    """A PIN as sent (its format is the ledger's rule). Raises ``InvalidRequest``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string of digits")
    return value


def limit_field(value: object) -> int:
    """A statement length. Raises ``InvalidRequest``."""
    if value is None:
        return DEFAULT_STATEMENT_LIMIT
    if type(value) is not int or not 1 <= value <= MAX_STATEMENT_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_STATEMENT_LIMIT}")
    return value


def cursor_field(value: object) -> int | None:
    """A statement cursor: the posting id to page back from. Raises ``InvalidRequest``."""
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_ACCOUNT_ID:
        raise InvalidRequest("before must be a posting number (an integer from 1)")
    return value


# -- requests --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    op: ClassVar[str] = "login"
    account: int
    pin: str

    def to_json(self) -> Fields:
        return {"account": self.account, "pin": self.pin}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> Login:
        return cls(account_field(f.get("account")), pin_field(f.get("pin")))


@dataclass(frozen=True, slots=True)
class Logout:
    op: ClassVar[str] = "logout"

    def to_json(self) -> Fields:
        return {}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> Logout:
        return cls()


@dataclass(frozen=True, slots=True)
class Balance:
    op: ClassVar[str] = "balance"

    def to_json(self) -> Fields:
        return {}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> Balance:
        return cls()


@dataclass(frozen=True, slots=True)
class Move:
    """A deposit, withdrawal or transfer: moves money, so it carries an idempotency key."""

    op: MoneyOp
    amount_cents: int
    key: str
    to: int | None = None
    """The destination of a transfer; ``None`` for a deposit or withdrawal."""

    def __post_init__(self) -> None:
        if (self.op == "transfer") != (self.to is not None):
            raise InvalidRequest("a transfer needs 'to', the destination account")

    def to_json(self) -> Fields:
        fields: Fields = {"amount": format_cents(self.amount_cents), "key": self.key}
        if self.to is not None:
            fields["to"] = self.to
        return fields

    @classmethod
    def parser(cls, op: MoneyOp) -> Callable[[Mapping[str, Any]], Move]:
        def from_json(f: Mapping[str, Any]) -> Move:
            key = key_field(f.get("key"))
            to = account_field(f.get("to"), "to") if op == "transfer" else None
            return cls(op, amount_field(f.get("amount")), key, to)

        return from_json


@dataclass(frozen=True, slots=True)
class Statement:
    op: ClassVar[str] = "statement"
    limit: int = DEFAULT_STATEMENT_LIMIT
    before: int | None = None
    """Only postings older than this posting id (the cursor of the previous page)."""

    def to_json(self) -> Fields:
        fields: Fields = {"limit": self.limit}
        if self.before is not None:
            fields["before"] = self.before
        return fields

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> Statement:
        return cls(limit_field(f.get("limit")), cursor_field(f.get("before")))


@dataclass(frozen=True, slots=True)
class GetStats:
    op: ClassVar[str] = "stats"

    def to_json(self) -> Fields:
        return {}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> GetStats:
        return cls()


@dataclass(frozen=True, slots=True)
class ChangePin:
    op: ClassVar[str] = "change_pin"
    old_pin: str
    new_pin: str

    def to_json(self) -> Fields:
        return {"old_pin": self.old_pin, "new_pin": self.new_pin}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> ChangePin:
        return cls(pin_field(f.get("old_pin"), "old_pin"), pin_field(f.get("new_pin"), "new_pin"))


@dataclass(frozen=True, slots=True)
class Help:
    op: ClassVar[str] = "help"

    def to_json(self) -> Fields:
        return {}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> Help:
        return cls()


BankRequest: TypeAlias = Login | Logout | Balance | Move | Statement | GetStats | ChangePin | Help

REQUEST_PARSERS: dict[str, Callable[[Mapping[str, Any]], BankRequest]] = {
    # In the order the bank lists its ops (``help``, ``unknown_op``): first those a
    # client may send before logging in.
    "login": Login.from_json,
    "stats": GetStats.from_json,
    "help": Help.from_json,
    "logout": Logout.from_json,
    "balance": Balance.from_json,
    "deposit": Move.parser("deposit"),
    "withdraw": Move.parser("withdraw"),
    "transfer": Move.parser("transfer"),
    "statement": Statement.from_json,
    "change_pin": ChangePin.from_json,
}
OPS: tuple[str, ...] = tuple(REQUEST_PARSERS)


def parse_op(value: object) -> str:
    """A known op name. Raises ``InvalidRequest`` (none) or ``UnknownOperation``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"a request needs an op, one of: {', '.join(OPS)}")
    if value not in REQUEST_PARSERS:
        raise UnknownOperation(f"unknown op {value[:30]!r}; the bank knows: {', '.join(OPS)}")
    return value


def parse_request(fields: Mapping[str, Any]) -> BankRequest:
    """The request a json object stands for (its ``op`` and fields; ``id`` is ignored).

    Raises ``InvalidRequest``, ``InvalidAmount``, ``UnknownOperation``.
    """
    return REQUEST_PARSERS[parse_op(fields.get("op"))](fields)


# -- replies ---------------------------------------------------------------------------

T = TypeVar("T")


def read_reply(build: Callable[[Mapping[str, Any]], T], fields: Mapping[str, Any]) -> T:
    """``build(fields)``, with any shape error as ``PeerProtocolError`` (``bad_reply``)."""
    try:
        return build(fields)
    except (KeyError, TypeError, ValueError, AttributeError, InvalidAmount) as exc:
        raise PeerProtocolError("bad_reply", f"the bank sent an odd reply: {exc!r}") from None


def _signed_cents(text: str) -> int:
    if not isinstance(text, str):
        raise TypeError(f"an amount must be a string, not {text!r}")
    return -parse_amount(text[1:]) if text.startswith("-") else parse_amount(text)


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BankStats:
    """The seed's statistics: total, successful and failed transactions, and their rates."""

    total: int
    successful: int
    failed: int

    @property
    def success_rate(self) -> float:
        return self.successful / self.total if self.total else 0.0

    @property
    def error_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def to_json(self) -> Fields:
        return {
            "total": self.total,
            "successful": self.successful,
            "failed": self.failed,
            "success_rate": round(self.success_rate, 4),
            "error_rate": round(self.error_rate, 4),
        }

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> BankStats:
        return cls(_int(f["total"]), _int(f["successful"]), _int(f["failed"]))

    def lab_lines(self, *, with_successful: bool) -> str:
        """The seed's statistics lines, as the lab's ATM client prints them."""
        first = f"Successful transactions: {self.successful}\n" if with_successful else ""
        return (
            f"{first}Total transactions: {self.total}\n"
            f"Success rate: {self.success_rate:.2f}\n"
            f"Error rate: {self.error_rate:.2f}\n"
        )

    def one_line(self) -> str:
        """The same statistics on one line (the line dialect and the ATM command)."""
        return (
            f"Successful transactions: {self.successful} | Total transactions: {self.total} | "
            f"Success rate: {self.success_rate:.2f} | Error rate: {self.error_rate:.2f}"
        )


@dataclass(frozen=True, slots=True)
class LoggedIn:
    account: int
    name: str
    balance_cents: int

    def to_json(self) -> Fields:
        return {
            "account": self.account,
            "name": self.name,
            "balance": format_cents(self.balance_cents),
        }

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> LoggedIn:
        return cls(_int(f["account"]), str(f["name"]), parse_amount(f["balance"]))


@dataclass(frozen=True, slots=True)
class LoggedOut:
    account: int

    def to_json(self) -> Fields:
        return {"account": self.account}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> LoggedOut:
        return cls(_int(f["account"]))


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    account: int
    name: str
    balance_cents: int
    stats: BankStats

    def to_json(self) -> Fields:
        return {
            "account": self.account,
            "name": self.name,
            "balance": format_cents(self.balance_cents),
            "stats": self.stats.to_json(),
        }

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> BalanceInfo:
        return cls(
            _int(f["account"]),
            str(f["name"]),
            parse_amount(f["balance"]),
            BankStats.from_json(f["stats"]),
        )


@dataclass(frozen=True, slots=True)
class Moved:
    """A deposit, withdrawal or transfer the bank applied (or had applied: ``replayed``)."""

    op: MoneyOp
    account: int
    amount_cents: int
    balance_cents: int
    """The balance of ``account`` right after this posting."""
    key: str
    posting_id: int
    replayed: bool
    """The bank had already applied this key: an earlier attempt's reply was lost."""
    stats: BankStats
    to: int | None = None

    def to_json(self) -> Fields:
        fields: Fields = {
            "op": self.op,
            "account": self.account,
            "amount": format_cents(self.amount_cents),
            "balance": format_cents(self.balance_cents),
            "key": self.key,
            "posting": self.posting_id,
            "replayed": self.replayed,
            "stats": self.stats.to_json(),
        }
        if self.to is not None:
            fields["to"] = self.to
        return fields

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> Moved:
        op = f["op"]
        if op not in MONEY_OPS:
            raise ValueError(f"not a money op: {op!r}")
        replayed = f["replayed"]
        if not isinstance(replayed, bool):
            raise TypeError("replayed must be true or false")
        to = f.get("to")
        return cls(
            op,
            _int(f["account"]),
            parse_amount(f["amount"]),
            parse_amount(f["balance"]),
            str(f["key"]),
            _int(f["posting"]),
            replayed,
            BankStats.from_json(f["stats"]),
            None if to is None else _int(to),
        )


@dataclass(frozen=True, slots=True)
class StatementLine:
    posting_id: int
    op: MoneyOp
    amount_cents: int
    """Signed, for this account: + money in, - money out."""
    balance_after_cents: int
    counterparty: int | None
    """The other account of a transfer."""
    key: str | None
    """The idempotency key; ``None`` for an opening deposit."""
    time: float
    """Unix seconds."""

    def to_json(self) -> Fields:
        return {
            "posting": self.posting_id,
            "op": self.op,
            "amount": format_cents(self.amount_cents),
            "balance_after": format_cents(self.balance_after_cents),
            "counterparty": self.counterparty,
            "key": self.key,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> StatementLine:
        counterparty, key, time = f["counterparty"], f["key"], f["time"]
        if isinstance(time, bool) or not isinstance(time, int | float):
            raise TypeError("time must be a number")
        return cls(
            _int(f["posting"]),
            f["op"],
            _signed_cents(f["amount"]),
            _signed_cents(f["balance_after"]),
            None if counterparty is None else _int(counterparty),
            None if key is None else str(key),
            float(time),
        )


@dataclass(frozen=True, slots=True)
class StatementPage:
    account: int
    balance_cents: int
    lines: tuple[StatementLine, ...]
    """Newest first."""
    next_before: int | None = None
    """The cursor of the next (older) page; ``None`` when this page is the last."""

    def to_json(self) -> Fields:
        return {
            "account": self.account,
            "balance": format_cents(self.balance_cents),
            "postings": [line.to_json() for line in self.lines],
            "next_before": self.next_before,
        }

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> StatementPage:
        cursor = f.get("next_before")
        return cls(
            _int(f["account"]),
            parse_amount(f["balance"]),
            tuple(StatementLine.from_json(p) for p in f["postings"]),
            None if cursor is None else _int(cursor),
        )


@dataclass(frozen=True, slots=True)
class StatsInfo:
    stats: BankStats

    def to_json(self) -> Fields:
        return {"stats": self.stats.to_json()}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> StatsInfo:
        return cls(BankStats.from_json(f["stats"]))


@dataclass(frozen=True, slots=True)
class PinChanged:
    account: int

    def to_json(self) -> Fields:
        return {"account": self.account}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> PinChanged:
        return cls(_int(f["account"]))


@dataclass(frozen=True, slots=True)
class HelpInfo:
    ops: tuple[str, ...]
    now_allowed: tuple[str, ...]

    def to_json(self) -> Fields:
        return {"ops": list(self.ops), "now_allowed": list(self.now_allowed)}

    @classmethod
    def from_json(cls, f: Mapping[str, Any]) -> HelpInfo:
        return cls(tuple(map(str, f["ops"])), tuple(map(str, f["now_allowed"])))


BankReply: TypeAlias = (
    LoggedIn | LoggedOut | BalanceInfo | Moved | StatementPage | StatsInfo | PinChanged | HelpInfo
)

REPLY_PARSERS: dict[str, Callable[[Mapping[str, Any]], BankReply]] = {
    "login": LoggedIn.from_json,
    "logout": LoggedOut.from_json,
    "balance": BalanceInfo.from_json,
    "deposit": Moved.from_json,
    "withdraw": Moved.from_json,
    "transfer": Moved.from_json,
    "statement": StatementPage.from_json,
    "stats": StatsInfo.from_json,
    "change_pin": PinChanged.from_json,
    "help": HelpInfo.from_json,
}
"""How to read the reply to each op."""


def parse_reply(op: str, fields: Mapping[str, Any]) -> BankReply:
    """The typed reply to ``op``. Raises ``PeerProtocolError`` (``bad_reply``)."""
    return read_reply(REPLY_PARSERS[op], fields)
