"""The ledger's behaviour written once, over a small storage interface per backend.

``LedgerCore`` implements the account, PIN, lockout, statement and journal methods of
``base.Ledger`` (and, through ``KeyedPostings``, deposit, withdraw and transfer as
``KeyedRequest``s): validation, PIN hashing in threads (``pins.PinHasher``), the clock,
the refusals and their messages. A backend (``sqlite.SqliteLedger``,
``postgres.PostgresLedger``) subclasses it and provides only what differs between
databases: the ``_store_*`` methods below (its SQL, run its way: a writer thread, a
pooled connection), ``_post`` (the money path, with its group commit), ``accounts``,
``stats``, ``verify``, ``record_failure`` and ``close``.

The store methods receive validated arguments (account ids that fit in 64 bits, clamped
page sizes) and return ``None`` for "no such customer"; the core turns that into the
refusal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from socklab.errors import RequestRejected
from socklab.ledger import pins
from socklab.ledger.base import (
    DEMO_NAMES,
    DEMO_PIN,
    INT64_MAX,
    MAX_JOURNAL_PAGE,
    MAX_STATEMENT,
    Account,
    AccountId,
    JournalEntry,
    KeyedPostings,
    LedgerSettings,
    LoginState,
    Posting,
    check_opening_deposit,
    fits_int64,
    locked_error,
    page_size,
    posting_cursor,
    unknown_account,
    validate_name,
    wrong_pin,
)
from socklab.logs import fn

log = logging.getLogger(__name__)


class LedgerCore(KeyedPostings):
    """The shared part of every ``Ledger``; see the module's docstring."""

    def __init__(self, settings: LedgerSettings) -> None:
        self._settings = settings
        self._hasher = pins.PinHasher(settings.pin_hash_concurrency)

    # --- the storage interface (each raises ``StorageError``) -----------------------

    async def _store_create_account(
        self, name: str, pin_hash: str, deposit_cents: int, now: float
    ) -> Account:
        """Insert a customer with the next id, and its opening deposit if > 0."""
        raise NotImplementedError

    async def _store_has_customers(self) -> bool:
        raise NotImplementedError

    async def _store_create_demo_accounts(self, pin_hashes: Sequence[str], now: float) -> bool:
        """Create ``DEMO_NAMES`` as accounts 1, 2, ... with ``DEMO_BALANCE_CENTS`` each,
        atomically and only if there is no customer yet. Returns whether it did."""
        raise NotImplementedError

    async def _store_login_state(
        self, account: int, client: str
    ) -> tuple[str | None, LoginState] | None:
        """(PIN hash, lockout counters of ``account`` from ``client``), or None."""
        raise NotImplementedError

    async def _store_settle_login(
        self, account: int, client: str, checked_hash: str, is_match: bool, now: float
    ) -> Account | RequestRejected:
        """Apply ``base.settle_login`` to what is stored, under the account's write lock
        (so that concurrent attempts, from any process, are settled one at a time), and
        store the new counters."""
        raise NotImplementedError

    async def _store_set_pin_hash(self, account: int, pin_hash: str) -> None:
        raise NotImplementedError

    async def _store_unlock(self, account: int, now: float) -> bool | None:
        """Lift every lockout of ``account``; None if it is not a customer. Returns
        whether it was locked (for everyone or for some address)."""
        raise NotImplementedError

    async def _store_get_account(self, account: int) -> Account | None:
        raise NotImplementedError

    async def _store_statement(self, account: int, limit: int, before: int) -> list[Posting] | None:
        """The newest ``limit`` postings of a customer with an id below ``before``,
        newest first, read in one snapshot; None if it is not a customer."""
        raise NotImplementedError

    async def _store_journal(self, after: int, limit: int) -> list[JournalEntry]:
        """The first ``limit`` applied postings with an id above ``after``, by id."""
        raise NotImplementedError

    # --- accounts and PINs ------------------------------------------------------------

    async def open_account(self, name: str, pin: str, deposit_cents: int = 0) -> Account:
        name = validate_name(name)
        pins.check_pin_format(pin)
        check_opening_deposit(deposit_cents, self._settings.max_amount_cents)
        pin_hash = await self._hasher.hash(pin)
        return await self._store_create_account(
            name, pin_hash, deposit_cents, self._settings.clock()
        )

    async def ensure_demo_accounts(self) -> bool:
        if await self._store_has_customers():
            return False
        hashes = await asyncio.gather(*(self._hasher.hash(DEMO_PIN) for _ in DEMO_NAMES))
        is_created = await self._store_create_demo_accounts(hashes, self._settings.clock())
        if is_created:
            log.debug(
                "created the demo accounts 1 to %d",
                len(DEMO_NAMES),
                extra=fn("ensure_demo_accounts"),
            )
        return is_created

    async def authenticate(self, account: AccountId, pin: str, *, client: str = "") -> Account:
        found = None
        if fits_int64(account):
            found = await self._store_login_state(account, client)
        pin_hash, state = found if found is not None else (None, None)
        if pin_hash is None or state is None:
            await self._hasher.verify(pin, None)  # as slow as a real check
            raise wrong_pin()
        locked = locked_error(state, self._settings.clock())
        if locked is not None:  # refused before hashing: a locked account costs no CPU
            raise locked
        is_match = await self._hasher.verify(pin, pin_hash)
        outcome = await self._store_settle_login(
            account, client, pin_hash, is_match, self._settings.clock()
        )
        if isinstance(outcome, RequestRejected):
            raise outcome
        return outcome

    async def change_pin(
        self, account: AccountId, old_pin: str, new_pin: str, *, client: str = ""
    ) -> None:
        pins.check_pin_format(new_pin)
        await self.authenticate(account, old_pin, client=client)
        new_hash = await self._hasher.hash(new_pin)
        await self._store_set_pin_hash(account, new_hash)

    async def unlock(self, account: AccountId) -> bool:
        was_locked = None
        if fits_int64(account):
            was_locked = await self._store_unlock(account, self._settings.clock())
        if was_locked is None:
            raise unknown_account(account)
        log.info("account %s unlocked (was locked: %s)", account, was_locked, extra=fn("unlock"))
        return was_locked

    # --- reads ------------------------------------------------------------------------

    async def get_account(self, account: AccountId) -> Account:
        found = None
        if fits_int64(account):
            found = await self._store_get_account(account)
        if found is None:
            raise unknown_account(account)
        return found

    async def statement(
        self, account: AccountId, limit: int = 10, *, before: int | None = None
    ) -> list[Posting]:
        limit = page_size(limit, MAX_STATEMENT)
        below = posting_cursor(before, "before", INT64_MAX)
        postings = None
        if fits_int64(account):
            postings = await self._store_statement(account, limit, below)
        if postings is None:
            raise unknown_account(account)
        return postings

    async def journal(
        self, after_posting: int = 0, limit: int = MAX_JOURNAL_PAGE
    ) -> list[JournalEntry]:
        limit = page_size(limit, MAX_JOURNAL_PAGE)
        after = posting_cursor(after_posting, "after_posting", 0)
        if limit == 0:
            return []
        return await self._store_journal(after, limit)
