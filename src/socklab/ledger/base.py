"""The bank ledger's interface: what every backend (SQLite, PostgreSQL) promises.

Money is ``int`` cents. Deposits, withdrawals and transfers carry a client-chosen
idempotency key; the key, a fingerprint of the request (op, account, counterparty, amount)
and the outcome are stored in the same transaction as the balance change:

- same key, same request: the stored outcome again, nothing applied (``replayed=True``
  for a success; the same exception for a stored business rejection);
- same key, other request: ``KeyReused``, nothing applied;
- business rejections (``InvalidAmount``, ``SameAccount``, ``UnknownAccount``,
  ``InsufficientFunds``) are stored under their key and replayed like successes;
- ``record_failure()`` (a transient failure) stores no key, so a retry may still succeed.

Checks run in this order, and the first that fails is the outcome: amount
(``0 < amount <= max_amount_cents``), same account (transfers), unknown account (the
account, then the counterparty), funds.

Statistics count money-moving requests (keyed deposit/withdraw/transfer): a replay does
not count again; a success counts as successful; a business rejection, a ``KeyReused``
and a ``record_failure()`` count as failed. Opening deposits are not requests and do not
count. ``total == successful + failed`` always.

The rules every backend shares are written here once, so that they agree to the
letter: the limits, the vault's id, the helpers at the bottom (``validate_key``,
``fingerprint``, ``precheck``, ...), the error messages and the lockout policy
(``decide_login``, ``settle_login``). ``socklab.ledger.core`` builds the account, PIN,
statement and journal methods on them; a backend supplies only its storage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol

from socklab.errors import (
    AccountLocked,
    AuthFailed,
    InvalidAmount,
    InvalidRequest,
    KeyReused,
    RequestRejected,
    SameAccount,
    StorageError,
    UnknownAccount,
)
from socklab.logs import fn
from socklab.money import format_cents
from socklab.protocol.bank import MAX_KEY_CHARS, MAX_STATEMENT_LIMIT, BankStats

Stats = BankStats
"""The seed's statistics, as the protocol spells them (one class for ledger and wire)."""

log = logging.getLogger(__name__)

AccountId = int
Op = Literal["deposit", "withdraw", "transfer"]
OPS: tuple[Op, ...] = ("deposit", "withdraw", "transfer")

VAULT_ID = 0
"""The system account on the other side of every deposit and withdrawal."""
MAX_STATEMENT = MAX_STATEMENT_LIMIT
"""Postings one ``statement`` call returns at most."""
MAX_JOURNAL_PAGE = 1000
"""Postings one ``journal`` call returns at most."""
MAX_NAME_CHARS = 64
INT64_MAX = 2**63 - 1
DEMO_PIN = "1234"
DEMO_BALANCE_CENTS = 10_000_00
DEMO_NAMES: tuple[str, ...] = ("Dibbyo Roy", "Abdullah Ashik", "Abir Hasan")
"""The seed's three accounts: ids 1, 2, 3, PIN 1234, 10000.00 each."""

STORED_REJECTIONS: tuple[type[RequestRejected], ...] = (
    InvalidAmount,
    SameAccount,
    UnknownAccount,
)
"""Rejections decided before touching balances (``InsufficientFunds`` is decided later)."""


@dataclass(frozen=True, slots=True)
class Account:
    id: AccountId
    name: str
    balance_cents: int


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of a deposit, withdrawal or transfer."""

    key: str
    op: Op
    account: AccountId
    """The account the request was made on (the source of a transfer)."""
    counterparty: AccountId | None
    """The destination of a transfer; ``None`` for deposits and withdrawals."""
    amount_cents: int
    """The amount as requested, always > 0."""
    balance_cents: int
    """The balance of ``account`` right after this posting (also when replayed)."""
    posting_id: int
    replayed: bool
    """True when this is the stored outcome of an earlier request with the same key."""


@dataclass(frozen=True, slots=True)
class Posting:
    """One line of an account statement."""

    posting_id: int
    op: Op
    amount_cents: int
    """Signed, for this account: + for money in, - for money out."""
    balance_after_cents: int
    counterparty: AccountId | None
    """The other customer account of a transfer; ``None`` for deposits and withdrawals."""
    key: str | None
    """The idempotency key; ``None`` for an opening deposit."""
    created_at: float
    """Unix seconds."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One posting of the whole journal, as the request that made it."""

    posting_id: int
    created_at: float
    """Unix seconds."""
    op: Op
    account: AccountId
    """The account the request was made on (the source of a transfer)."""
    counterparty: AccountId | None
    """The destination of a transfer; ``None`` for deposits and withdrawals."""
    amount_cents: int
    """The amount as requested, always > 0."""
    balance_after_cents: int
    """The balance of ``account`` right after this posting."""
    key: str | None
    """The idempotency key; ``None`` for an opening deposit."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    problems: tuple[str, ...]
    accounts: int
    """Customer accounts."""
    postings: int
    """Applied postings (opening deposits included)."""
    total_cents: int
    """Money held by customers, which equals what went through the vault."""


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    max_amount_cents: int = 1_000_000_00
    max_failed_logins: int = 5
    """Wrong PINs for one account from one client address (within ``lockout_s`` of each
    other) that lock that account for that address only."""
    max_account_failed_logins: int = 100
    """Wrong PINs for one account from all addresses together (since its last successful
    login or unlock) that lock the account for everyone: the backstop against guessing
    from many addresses."""
    lockout_s: float = 900.0
    group_commit: bool = True
    """One transaction for all pending postings (True) or one per posting (False)."""
    pin_hash_concurrency: int = 1
    """PIN hashes (about 30 ms of CPU each) computed at once per process; more wait."""
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)
    """Unix seconds: lockouts and timestamps (injected by tests)."""

    def __post_init__(self) -> None:
        if not 0 < self.max_amount_cents <= INT64_MAX // 1024:
            raise ValueError("max_amount_cents must be positive and sane")
        if self.max_failed_logins < 1:
            raise ValueError("max_failed_logins must be at least 1")
        if self.max_account_failed_logins < 1:
            raise ValueError("max_account_failed_logins must be at least 1")
        if self.lockout_s < 0:
            raise ValueError("lockout_s must not be negative")
        if self.pin_hash_concurrency < 1:
            raise ValueError("pin_hash_concurrency must be at least 1")


PROBLEM_EXAMPLES = 10
"""Rows ``verify`` describes per kind of problem; more are summed up in one line."""

VERIFY_CHECKS: dict[str, Callable[[Sequence[Any]], str]] = {
    "balance": lambda r: f"account {r[0]}: balance {r[1]}, but its journal sums to {r[2]}",
    "negative": lambda r: f"account {r[0]}: negative balance {r[1]}",
    "running": lambda r: (
        f"account {r[0]}, posting {r[1]}: balance after {r[2]}, journal says {r[3]}"
    ),
    "entry_account": lambda r: f"posting {r[1]}: journal entry for a missing account {r[0]}",
    "posting": lambda r: (
        f"posting {r[0]}: {r[2]} journal entries summing to {r[3]} and moving"
        f" {r[4]} for an amount of {r[5]}" + (f" (rejected: {r[1]})" if r[1] else "")
    ),
    "entry_posting": lambda r: f"journal entries for a missing posting {r[0]}",
}
"""The row checks of ``verify``: name -> description of a row the backend's query found.
Each backend's query for a name returns the columns its description reads."""


class VerifyFindings:
    """The problems ``verify`` finds, described alike by every backend."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def rows(self, check: str, rows: Sequence[Sequence[Any]]) -> None:
        """Describe up to ``PROBLEM_EXAMPLES`` rows of the check ``check`` (its query
        should fetch one more, to tell that there are more)."""
        describe = VERIFY_CHECKS[check]
        self.problems.extend(describe(row) for row in rows[:PROBLEM_EXAMPLES])
        if len(rows) > PROBLEM_EXAMPLES:
            self.problems.append("... and more like the one above")

    def totals(
        self, *, has_vault: bool, journal_total: int, stats: Stats, keyed_ok: int, rejected: int
    ) -> None:
        """The checks of the whole ledger: the vault, conservation, the statistics."""
        if not has_vault:
            self.problems.insert(0, f"the vault (account {VAULT_ID}) is missing")
        if journal_total != 0:
            self.problems.append(f"money is not conserved: the journal sums to {journal_total}")
        if stats.successful != keyed_ok:
            self.problems.append(f"stats: {stats.successful} successful, but {keyed_ok} postings")
        if stats.failed < rejected:
            self.problems.append(f"stats: {stats.failed} failed, but {rejected} stored rejections")

    def report(self, *, accounts: int, postings: int, total_cents: int) -> VerifyReport:
        return VerifyReport(
            ok=not self.problems,
            problems=tuple(self.problems),
            accounts=int(accounts),
            postings=int(postings),
            total_cents=int(total_cents),
        )


class Ledger(Protocol):
    """A durable, exactly-once bank ledger. Every method may raise ``StorageError``."""

    async def open_account(self, name: str, pin: str, deposit_cents: int = 0) -> Account:
        """Create a customer account, with an opening deposit if ``deposit_cents > 0``.

        Raises ``InvalidRequest`` (bad name or PIN format), ``InvalidAmount``.
        """
        ...

    async def ensure_demo_accounts(self) -> bool:
        """On a ledger with no customers, create the seed's accounts 1, 2, 3 (PIN 1234,
        10000.00 each). Returns True if it created them."""
        ...

    async def authenticate(self, account: AccountId, pin: str, *, client: str = "") -> Account:
        """Check a PIN tried from the address ``client``. Raises ``AuthFailed`` (also for
        an unknown account, with the same message and cost, so that existence is not
        revealed), ``AccountLocked`` (also for the right PIN while locked).

        The lockout policy (``decide_login``, persisted, shared by every process on the
        database): the ``max_failed_logins``-th wrong PIN from one ``client`` locks the
        account for that client only, for ``lockout_s``; the
        ``max_account_failed_logins``-th from all clients together locks it for everyone.
        A success resets the account's count and that client's. Concurrent attempts are
        settled one at a time, so that parallel guessing gets no more tries than serial
        guessing."""
        ...

    async def change_pin(
        self, account: AccountId, old_pin: str, new_pin: str, *, client: str = ""
    ) -> None:
        """Raises ``InvalidRequest`` (bad new PIN format), and what ``authenticate`` raises."""
        ...

    async def unlock(self, account: AccountId) -> bool:
        """Lift every lockout of ``account`` and forget its failed logins (from every
        address). Returns whether anything was locked. Raises ``UnknownAccount``."""
        ...

    async def get_account(self, account: AccountId) -> Account:
        """Raises ``UnknownAccount``."""
        ...

    async def accounts(self) -> list[Account]:
        """Customer accounts by id."""
        ...

    async def deposit(self, account: AccountId, amount_cents: int, *, key: str) -> Receipt:
        """Raises ``InvalidRequest`` (bad key, nothing stored), ``KeyReused``, and the
        stored rejections ``InvalidAmount``, ``UnknownAccount``."""
        ...

    async def withdraw(self, account: AccountId, amount_cents: int, *, key: str) -> Receipt:
        """As ``deposit``, plus the stored rejection ``InsufficientFunds``."""
        ...

    async def transfer(
        self, src: AccountId, dst: AccountId, amount_cents: int, *, key: str
    ) -> Receipt:
        """As ``withdraw``, plus the stored rejection ``SameAccount``."""
        ...

    async def statement(
        self, account: AccountId, limit: int = 10, *, before: int | None = None
    ) -> list[Posting]:
        """The newest ``limit`` (at most ``MAX_STATEMENT``) postings of ``account``, newest
        first; with ``before``, only postings older than the posting id ``before`` (pass
        the last posting id of a page to get the next). Raises ``UnknownAccount``,
        ``InvalidRequest`` (``before`` not an integer)."""
        ...

    async def journal(
        self, after_posting: int = 0, limit: int = MAX_JOURNAL_PAGE
    ) -> list[JournalEntry]:
        """The applied postings (opening deposits included, rejections not) with a posting
        id above ``after_posting``, oldest first, at most ``limit`` (at most
        ``MAX_JOURNAL_PAGE``): pass the last posting id of a page to get the next.
        Raises ``InvalidRequest`` (``after_posting`` not an integer)."""
        ...

    async def record_failure(self) -> None:
        """Count a transient (injected) failure as a failed request; stores no key."""
        ...

    async def stats(self) -> Stats: ...

    async def verify(self) -> VerifyReport:
        """Re-derive every balance from the journal; check that every posting balances,
        money is conserved and no customer balance is negative."""
        ...

    async def close(self) -> None:
        """Finish queued work and release the database. Idempotent."""
        ...


# --- helpers shared by the backends -------------------------------------------------


def validate_key(key: object) -> str:
    """Return ``key`` if it is a usable idempotency key. Raises ``InvalidRequest``."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise InvalidRequest(
            f"an idempotency key must be 1 to {MAX_KEY_CHARS} printable characters"
        )
    return key


def validate_name(name: object) -> str:
    """Return the stripped account name. Raises ``InvalidRequest``."""
    if isinstance(name, str):
        name = name.strip()
        if 0 < len(name) <= MAX_NAME_CHARS and name.isprintable():
            return name
    raise InvalidRequest(f"an account name must be 1 to {MAX_NAME_CHARS} printable characters")


def fingerprint(op: Op, account: int, counterparty: int | None, amount_cents: int) -> str:
    """What must match for a key to be a retry of the same request."""
    return f"{op}:{account}:{'' if counterparty is None else counterparty}:{amount_cents}"


def fits_int64(value: object) -> bool:
    return type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX


def int64_or_none(value: object) -> int | None:
    """``value`` if it fits in a 64-bit column, else ``None`` (stored as NULL: a
    prechecked request's fingerprint keeps what it was)."""
    return value if type(value) is int and fits_int64(value) else None


def migration_files(folder: str) -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every ``NNNN_name.sql`` in the package folder
    ``folder`` (a backend's schema), in order. Raises ``StorageError`` for a gap."""
    found = []
    for item in resources.files("socklab.ledger").joinpath(folder).iterdir():
        if item.name.endswith(".sql"):
            version = int(item.name.partition("_")[0])
            found.append((version, item.name, item.read_text(encoding="utf-8")))
    found.sort()
    if [version for version, _, _ in found] != list(range(1, len(found) + 1)):
        raise StorageError("schema migrations must be numbered 0001, 0002, ... without gaps")
    return found


def check_amount(amount_cents: object, max_amount_cents: int) -> None:
    """Raises ``InvalidAmount`` unless ``0 < amount_cents <= max_amount_cents``."""
    if type(amount_cents) is not int or not 0 < amount_cents <= max_amount_cents:
        raise InvalidAmount(
            f"the amount must be more than 0 and at most {format_cents(max_amount_cents)}"
        )


def check_opening_deposit(deposit_cents: object, max_amount_cents: int) -> None:
    """Raises ``InvalidAmount`` unless ``0 <= deposit_cents <= max_amount_cents``."""
    if type(deposit_cents) is not int or not 0 <= deposit_cents <= max_amount_cents:
        raise InvalidAmount(f"an opening deposit must be 0.00 to {format_cents(max_amount_cents)}")


def key_scope(account: object) -> str:
    """The namespace of an idempotency key: the account the request is made on (as text,
    so that ids which cannot be accounts still have one). Keys of different accounts
    never meet: one customer's key tells nothing about another's."""
    return str(account)


def precheck(
    account: int, counterparty: int | None, amount_cents: int, max_amount_cents: int
) -> RequestRejected | None:
    """The rejection a request gets before any account is looked up, or ``None``.

    Ids that cannot be account ids (not an int64, or < 1) are unknown accounts.
    """
    try:
        check_amount(amount_cents, max_amount_cents)
    except InvalidAmount as exc:
        return exc
    if counterparty is not None and counterparty == account:
        return SameAccount("cannot transfer to the same account")
    for acct in (account, counterparty):
        if acct is not None and (not fits_int64(acct) or acct < 1):
            return unknown_account(acct)
    return None


def unknown_account(account: object) -> UnknownAccount:
    return UnknownAccount(f"no account {account}")


KEY_REUSED = "this idempotency key was used for a different request"


def key_reused() -> KeyReused:
    return KeyReused(KEY_REUSED)


def page_size(limit: object, most: int) -> int:
    """``limit`` clamped to ``0..most``. Raises ``InvalidRequest`` if not an integer."""
    if type(limit) is not int:
        raise InvalidRequest("a page size must be an integer")
    return max(0, min(limit, most))


def posting_cursor(value: object, name: str, default: int) -> int:
    """A posting id to page from (``default`` for ``None``). Raises ``InvalidRequest``."""
    if value is None:
        return default
    if not fits_int64(value):
        raise InvalidRequest(f"{name} must be a posting id (an integer)")
    assert isinstance(value, int)
    return value


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A validated money request, as a backend's writer sees it."""

    op: Op
    account: int
    counterparty: int | None
    amount_cents: int
    key: str
    fingerprint: str = field(init=False)
    scope: str = field(init=False)
    """``key_scope(account)``: keys are unique per account."""

    def __post_init__(self) -> None:
        fp = fingerprint(self.op, self.account, self.counterparty, self.amount_cents)
        object.__setattr__(self, "fingerprint", fp)
        object.__setattr__(self, "scope", key_scope(self.account))


class KeyedPostings:
    """deposit, withdraw and transfer of a backend, as ``KeyedRequest``s for its ``_post``."""

    async def _post(self, req: KeyedRequest) -> Receipt:
        raise NotImplementedError

    async def deposit(self, account: AccountId, amount_cents: int, *, key: str) -> Receipt:
        return await self._post(KeyedRequest("deposit", account, None, amount_cents, key))

    async def withdraw(self, account: AccountId, amount_cents: int, *, key: str) -> Receipt:
        return await self._post(KeyedRequest("withdraw", account, None, amount_cents, key))

    async def transfer(
        self, src: AccountId, dst: AccountId, amount_cents: int, *, key: str
    ) -> Receipt:
        return await self._post(KeyedRequest("transfer", src, dst, amount_cents, key))


# --- the lockout policy, shared by the backends ----------------------------------------

WRONG_PIN = "wrong account number or PIN"


def wrong_pin() -> AuthFailed:
    """The refusal of a wrong PIN, and of an unknown account (the same, on purpose)."""
    return AuthFailed(WRONG_PIN)


@dataclass(frozen=True, slots=True)
class LoginState:
    """The lockout counters of one account and one client address, as stored."""

    account_failures: int = 0
    account_locked_until: float = 0.0
    client_failures: int = 0
    client_locked_until: float = 0.0
    client_last_failure: float = 0.0


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    """What to store after a PIN check (``state``), and the error to raise, if any."""

    state: LoginState
    error: RequestRejected | None
    locked: Literal["account", "client"] | None = None
    """What this attempt has just locked, for the log."""


def locked_error(state: LoginState, now: float) -> AccountLocked | None:
    """The refusal for a locked account or client, or ``None``: checked before hashing."""
    if state.account_locked_until > now:
        wait_s = max(1, math.ceil(state.account_locked_until - now))
        return AccountLocked(f"account locked after too many wrong PINs; try again in {wait_s} s")
    if state.client_locked_until > now:
        wait_s = max(1, math.ceil(state.client_locked_until - now))
        return AccountLocked(
            f"too many wrong PINs for this account from your address; try again in {wait_s} s"
        )
    return None


def decide_login(
    state: LoginState, is_match: bool, settings: LedgerSettings, now: float
) -> LoginVerdict:
    """The lockout policy (docs/bank.md, "Lockout"): the new counters after an attempt.

    - Locked (the account, or the account for this client): refused, nothing counted.
    - Right PIN: the account's count and this client's are reset.
    - Wrong PIN: both counts grow. The client's count starts again when its last failure
      is older than ``lockout_s``. At ``max_account_failed_logins`` the account is locked
      for everyone; else at ``max_failed_logins`` for this client. A lock resets the
      count that caused it.
    """
    error = locked_error(state, now)
    if error is not None:
        return LoginVerdict(state, error)
    if is_match:
        return LoginVerdict(LoginState(), None)
    client_failures = state.client_failures
    if state.client_last_failure + settings.lockout_s <= now:
        client_failures = 0  # a quiet period forgives this client's old mistakes
    client_failures += 1
    account_failures = state.account_failures + 1
    locked: Literal["account", "client"] | None = None
    account_locked_until = client_locked_until = 0.0
    if account_failures >= settings.max_account_failed_logins:
        account_failures, client_failures = 0, 0
        account_locked_until = now + settings.lockout_s
        locked = "account"
    elif client_failures >= settings.max_failed_logins:
        client_failures = 0
        client_locked_until = now + settings.lockout_s
        locked = "client"
    new = LoginState(
        account_failures, account_locked_until, client_failures, client_locked_until, now
    )
    return LoginVerdict(new, AuthFailed(WRONG_PIN), locked)


def settle_login(
    account: Account,
    client: str,
    state: LoginState,
    stored_hash: str | None,
    checked_hash: str,
    is_match: bool,
    settings: LedgerSettings,
    now: float,
) -> tuple[LoginState | None, Account | RequestRejected]:
    """Settle a PIN check made against ``checked_hash``, given what the store holds now
    (``state``, ``stored_hash``; the backend reads them under its write lock, so that
    concurrent attempts are settled one after the other).

    Returns (the counters to store, or ``None`` to leave them; the account, or the
    refusal to raise). A PIN changed while the attempt was checked is a wrong PIN that
    counts nothing. Logs a new lock.
    """
    if stored_hash != checked_hash:
        return None, locked_error(state, now) or wrong_pin()
    verdict = decide_login(state, is_match, settings, now)
    if verdict.locked == "account":
        log.warning(
            "account %s locked for everyone for %.0f s after %d failed logins",
            account.id, settings.lockout_s, settings.max_account_failed_logins,
            extra=fn("authenticate"),
        )  # fmt: skip
    elif verdict.locked == "client":
        log.warning(
            "account %s locked for %s for %.0f s after %d failed logins from there",
            account.id, client or "local clients", settings.lockout_s,
            settings.max_failed_logins, extra=fn("authenticate"),
        )  # fmt: skip
    changed = None if verdict.state == state else verdict.state
    return changed, verdict.error or account
