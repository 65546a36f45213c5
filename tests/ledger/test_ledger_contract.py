"""The Ledger contract, through the ``harness`` fixture: every backend must pass these."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

import pytest
from ledger_harness import FAST, FakeClock, LedgerHarness, fast

from socklab.errors import (
    AccountLocked,
    AuthFailed,
    InsufficientFunds,
    InvalidAmount,
    InvalidRequest,
    KeyReused,
    RequestRejected,
    SameAccount,
    StorageError,
    UnknownAccount,
)
from socklab.ledger import Account, Ledger, LedgerSettings, Receipt, Stats
from socklab.ledger.base import MAX_JOURNAL_PAGE

DEMO = 10_000_00


def balances(h: LedgerHarness, ledger: Ledger) -> dict[int, int]:
    return {a.id: a.balance_cents for a in h.run(ledger.accounts())}


def rejection(h: LedgerHarness, coro: object) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        h.run(coro)  # type: ignore[arg-type]
    return info.value


# --- accounts -------------------------------------------------------------------------


def test_demo_accounts_are_the_seeds_and_created_once(harness: LedgerHarness) -> None:
    ledger = harness.open(demo=False)
    assert harness.run(ledger.ensure_demo_accounts()) is True
    assert harness.run(ledger.ensure_demo_accounts()) is False
    assert harness.run(ledger.accounts()) == [
        Account(1, "Dibbyo Roy", DEMO),
        Account(2, "Abdullah Ashik", DEMO),
        Account(3, "Abir Hasan", DEMO),
    ]
    assert harness.run(ledger.authenticate(2, "1234")) == Account(2, "Abdullah Ashik", DEMO)
    assert harness.run(ledger.verify()).ok


def test_open_account_with_an_opening_deposit(harness: LedgerHarness) -> None:
    ledger = harness.open()
    account = harness.run(ledger.open_account("  Ada Lovelace ", "4321", 2500))
    assert account == Account(4, "Ada Lovelace", 2500)
    assert harness.run(ledger.open_account("Bob", "43210")) == Account(5, "Bob", 0)
    assert harness.run(ledger.get_account(4)) == account
    (opening,) = harness.run(ledger.statement(4))
    assert (opening.op, opening.amount_cents, opening.balance_after_cents, opening.key) == (
        "deposit",
        2500,
        2500,
        None,
    )
    assert harness.run(ledger.statement(5)) == []
    # Opening deposits are not requests: they do not count.
    assert harness.run(ledger.stats()) == Stats(0, 0, 0)
    report = harness.run(ledger.verify())
    assert report.ok and report.accounts == 5 and report.total_cents == 3 * DEMO + 2500


@pytest.mark.parametrize(
    ("name", "pin", "deposit", "error"),
    [
        ("", "1234", 0, InvalidRequest),
        ("x" * 65, "1234", 0, InvalidRequest),
        ("Ada\x00Lovelace", "1234", 0, InvalidRequest),
        ("Ada", "123", 0, InvalidRequest),
        ("Ada", "12a4", 0, InvalidRequest),
        ("Ada", "1234567890123", 0, InvalidRequest),
        ("Ada", "1234", -1, InvalidAmount),
        ("Ada", "1234", 1_000_000_01, InvalidAmount),
    ],
    ids=["empty-name", "long-name", "control-char", "short-pin", "letter-pin", "long-pin",
         "negative-deposit", "deposit-over-max"],
)  # fmt: skip
def test_open_account_rejects(
    harness: LedgerHarness, name: str, pin: str, deposit: int, error: type[Exception]
) -> None:
    ledger = harness.open()
    with pytest.raises(error):
        harness.run(ledger.open_account(name, pin, deposit))
    assert len(harness.run(ledger.accounts())) == 3


def test_unknown_accounts_are_reported(harness: LedgerHarness) -> None:
    ledger = harness.open()
    for account in (0, 99, -1, 2**70):
        with pytest.raises(UnknownAccount):
            harness.run(ledger.get_account(account))
        with pytest.raises(UnknownAccount):
            harness.run(ledger.statement(account))


# --- money ----------------------------------------------------------------------------


def test_deposit_withdraw_transfer_and_statement(harness: LedgerHarness) -> None:
    ledger = harness.open()
    deposit = harness.run(ledger.deposit(1, 1250, key="d"))
    assert deposit == Receipt("d", "deposit", 1, None, 1250, DEMO + 1250, deposit.posting_id, False)
    withdraw = harness.run(ledger.withdraw(1, 250, key="w"))
    assert (withdraw.op, withdraw.balance_cents, withdraw.replayed) == (
        "withdraw",
        DEMO + 1000,
        False,
    )
    transfer = harness.run(ledger.transfer(1, 2, 1000, key="t"))
    assert transfer == Receipt("t", "transfer", 1, 2, 1000, DEMO, transfer.posting_id, False)
    assert deposit.posting_id < withdraw.posting_id < transfer.posting_id
    assert balances(harness, ledger) == {1: DEMO, 2: DEMO + 1000, 3: DEMO}

    mine = harness.run(ledger.statement(1))
    assert [(p.op, p.amount_cents, p.balance_after_cents, p.counterparty, p.key) for p in mine] == [
        ("transfer", -1000, DEMO, 2, "t"),
        ("withdraw", -250, DEMO + 1000, None, "w"),
        ("deposit", 1250, DEMO + 1250, None, "d"),
        ("deposit", DEMO, DEMO, None, None),
    ]
    assert [p.posting_id for p in mine[:3]] == [
        transfer.posting_id,
        withdraw.posting_id,
        deposit.posting_id,
    ]
    assert abs(mine[0].created_at - time.time()) < 60
    (incoming, _) = harness.run(ledger.statement(2))
    assert (incoming.op, incoming.amount_cents, incoming.counterparty) == ("transfer", 1000, 1)
    assert len(harness.run(ledger.statement(1, limit=2))) == 2
    assert harness.run(ledger.statement(1, limit=0)) == []
    assert harness.run(ledger.stats()) == Stats(3, 3, 0)
    assert harness.run(ledger.verify()).ok


def test_a_statement_pages_back_from_a_posting(harness: LedgerHarness) -> None:
    ledger = harness.open()
    ids = [harness.run(ledger.deposit(1, 100 + n, key=f"p{n}")).posting_id for n in range(5)]
    harness.run(ledger.deposit(2, 1, key="other"))  # another account's posting in between
    ids.append(harness.run(ledger.deposit(1, 200, key="last")).posting_id)
    newest = harness.run(ledger.statement(1, 3))
    assert [p.posting_id for p in newest] == ids[:-4:-1]
    older = harness.run(ledger.statement(1, 3, before=newest[-1].posting_id))
    assert [p.posting_id for p in older] == ids[2::-1]
    oldest = harness.run(ledger.statement(1, 3, before=older[-1].posting_id))
    assert [p.key for p in oldest] == [None]  # the opening deposit, and nothing past it
    assert harness.run(ledger.statement(1, 3, before=oldest[0].posting_id)) == []
    assert harness.run(ledger.statement(1, 10, before=None)) == harness.run(ledger.statement(1))
    everything = harness.run(ledger.statement(1, 10, before=2**63 - 1))  # past every posting
    assert len(everything) == 7
    with pytest.raises(UnknownAccount):
        harness.run(ledger.statement(99, 3, before=ids[0]))


def test_withdrawing_everything_is_allowed_and_one_cent_more_is_not(
    harness: LedgerHarness,
) -> None:
    ledger = harness.open()
    with pytest.raises(InsufficientFunds):
        harness.run(ledger.withdraw(1, DEMO + 1, key="a"))
    assert harness.run(ledger.withdraw(1, DEMO, key="b")).balance_cents == 0
    with pytest.raises(InsufficientFunds):
        harness.run(ledger.transfer(1, 2, 1, key="c"))
    assert balances(harness, ledger) == {1: 0, 2: DEMO, 3: DEMO}


@pytest.mark.parametrize(
    ("op", "args", "error"),
    [
        ("deposit", (1, 0), InvalidAmount),
        ("deposit", (1, -5), InvalidAmount),
        ("deposit", (1, 1_000_000_01), InvalidAmount),
        ("deposit", (1, 2**80), InvalidAmount),
        ("deposit", (99, 100), UnknownAccount),
        ("deposit", (0, 100), UnknownAccount),
        ("withdraw", (1, DEMO + 1), InsufficientFunds),
        ("withdraw", (99, 100), UnknownAccount),
        ("transfer", (1, 1, 100), SameAccount),
        ("transfer", (1, 99, 100), UnknownAccount),
        ("transfer", (99, 1, 100), UnknownAccount),
        ("transfer", (1, 0, 100), UnknownAccount),
        ("transfer", (1, 2, DEMO + 1), InsufficientFunds),
        # The order of the checks: amount, same account, unknown account, funds.
        ("transfer", (99, 99, 0), InvalidAmount),
        ("transfer", (99, 99, 100), SameAccount),
        ("transfer", (1, 99, DEMO + 1), UnknownAccount),
    ],
    ids=["zero", "negative", "over-max", "huge", "unknown", "vault", "overdraft",
         "withdraw-unknown", "same", "unknown-dst", "unknown-src", "to-vault",
         "transfer-overdraft", "amount-first", "same-before-unknown", "unknown-before-funds"],
)  # fmt: skip
def test_business_rejections_are_stored_and_replayed(
    harness: LedgerHarness, op: str, args: tuple[int, ...], error: type[RequestRejected]
) -> None:
    ledger = harness.open()
    call = getattr(ledger, op)
    first = rejection(harness, call(*args, key="k"))
    assert type(first) is error
    # The retry gets the same error, applies nothing, counts nothing...
    again = rejection(harness, call(*args, key="k"))
    assert (type(again), again.message) == (error, first.message)
    assert (first.replayed, again.replayed) == (False, True)  # marked like a replayed success
    assert balances(harness, ledger) == {1: DEMO, 2: DEMO, 3: DEMO}
    assert harness.run(ledger.stats()) == Stats(1, 0, 1)
    # ... and also after more money arrives: the stored outcome wins.
    harness.run(ledger.deposit(1, 1_000_000_00, key="top-up"))
    assert type(rejection(harness, call(*args, key="k"))) is error
    assert harness.run(ledger.verify()).ok


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("deposit", 1, 100), ("deposit", 1, 101)),
        (("deposit", 1, 100), ("withdraw", 1, 100)),
        (("transfer", 1, 2, 100), ("transfer", 1, 3, 100)),
        (("transfer", 1, 2, 100), ("withdraw", 1, 100)),
        (("withdraw", 1, DEMO + 1), ("withdraw", 1, 5)),
    ],
    ids=["amount", "op", "counterparty", "transfer-then-withdraw", "after-a-rejection"],
)
def test_a_key_with_other_parameters_is_key_reused(
    harness: LedgerHarness, first: tuple[object, ...], second: tuple[object, ...]
) -> None:
    ledger = harness.open()
    op, *args = first
    with contextlib.suppress(RequestRejected):
        harness.run(getattr(ledger, str(op))(*args, key="k"))
    before = balances(harness, ledger)
    op, *args = second
    with pytest.raises(KeyReused):
        harness.run(getattr(ledger, str(op))(*args, key="k"))
    assert balances(harness, ledger) == before
    assert harness.run(ledger.stats()).total == 2  # key_reused counts as a failed request


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("deposit", 1, 100), ("deposit", 2, 100)),
        (("deposit", 1, 100), ("deposit", 2, 777)),
        (("withdraw", 1, 100), ("deposit", 2, 100)),
        (("transfer", 1, 2, 100), ("transfer", 2, 1, 100)),
        (("withdraw", 1, DEMO + 1), ("transfer", 3, 1, 5)),
    ],
    ids=["same-request", "other-amount", "other-op", "opposite-transfer", "after-a-rejection"],
)
def test_keys_are_per_account(
    harness: LedgerHarness, first: tuple[object, ...], second: tuple[object, ...]
) -> None:
    # One customer's key is no business of another's: no key_reused (an oracle of what
    # other customers did), no replay of someone else's receipt; both apply, and each
    # key keeps replaying for its own account.
    ledger = harness.open()
    op1, *args1 = first
    op2, *args2 = second
    call1 = getattr(ledger, str(op1))
    call2 = getattr(ledger, str(op2))
    try:
        first_ok = not harness.run(call1(*args1, key="shared")).replayed
    except InsufficientFunds:
        first_ok = False
    receipt = harness.run(call2(*args2, key="shared"))
    assert (receipt.replayed, receipt.account) == (False, args2[0])
    assert harness.run(call2(*args2, key="shared")) == dataclasses.replace(receipt, replayed=True)
    if first_ok:
        assert harness.run(call1(*args1, key="shared")).replayed
    else:
        assert type(rejection(harness, call1(*args1, key="shared"))) is InsufficientFunds
    assert harness.run(ledger.stats()) == Stats(2, 1 + first_ok, 1 - first_ok)
    assert harness.run(ledger.verify()).ok


def test_a_successful_retry_is_replayed_with_the_original_receipt(harness: LedgerHarness) -> None:
    ledger = harness.open()
    first = harness.run(ledger.transfer(1, 2, 500, key="t"))
    harness.run(ledger.deposit(1, 100, key="later"))
    again = harness.run(ledger.transfer(1, 2, 500, key="t"))
    assert again.replayed and not first.replayed
    # The balance of that posting, not today's.
    assert again == Receipt("t", "transfer", 1, 2, 500, DEMO - 500, first.posting_id, True)
    assert balances(harness, ledger) == {1: DEMO - 400, 2: DEMO + 500, 3: DEMO}
    assert harness.run(ledger.stats()) == Stats(2, 2, 0)


@pytest.mark.parametrize("key", ["", "x" * 129, "tab\there", "new\nline"])
def test_an_unusable_key_is_an_invalid_request_and_stores_nothing(
    harness: LedgerHarness, key: str
) -> None:
    ledger = harness.open()
    with pytest.raises(InvalidRequest):
        harness.run(ledger.deposit(1, 100, key=key))
    assert harness.run(ledger.stats()) == Stats(0, 0, 0)
    assert balances(harness, ledger)[1] == DEMO


def test_keys_may_be_long_and_unicode(harness: LedgerHarness) -> None:
    ledger = harness.open()
    for key in ("x" * 128, "clé-€-🙂"):
        assert harness.run(ledger.deposit(1, 1, key=key)).key == key
        assert harness.run(ledger.deposit(1, 1, key=key)).replayed


# --- statements and the journal, page by page ------------------------------------------


def test_a_statement_pages_backwards_with_before(harness: LedgerHarness) -> None:
    ledger = harness.open()
    receipts = [harness.run(ledger.deposit(1, n, key=f"d{n}")) for n in range(1, 8)]
    everything = harness.run(ledger.statement(1, 100))
    assert len(everything) == 8  # 7 deposits and the opening deposit, newest first
    pages: list[list[int]] = []
    before = None
    while page := harness.run(ledger.statement(1, 3, before=before)):
        pages.append([p.posting_id for p in page])
        before = page[-1].posting_id
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [pid for page in pages for pid in page] == [p.posting_id for p in everything]
    # Older than a given posting id, newest first: the deposits before the 5th.
    older = harness.run(ledger.statement(1, 10, before=receipts[4].posting_id))
    assert [p.amount_cents for p in older] == [4, 3, 2, 1, DEMO]
    assert harness.run(ledger.statement(1, 10, before=everything[-1].posting_id)) == []
    assert harness.run(ledger.statement(1, 10, before=-5)) == []
    # Another account's postings never show, whatever the cursor.
    harness.run(ledger.transfer(2, 3, 5, key="t"))
    assert [p.op for p in harness.run(ledger.statement(1, 100, before=2**63 - 1))] == [
        p.op for p in everything
    ]
    with pytest.raises(InvalidRequest):
        harness.run(ledger.statement(1, 10, before="5"))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        harness.run(ledger.statement(1, 10, before=2**64))
    with pytest.raises(UnknownAccount):
        harness.run(ledger.statement(99, 10, before=5))


def test_the_journal_pages_through_every_applied_posting_in_order(
    harness: LedgerHarness,
) -> None:
    clock = FakeClock()
    ledger = harness.open(fast(clock))
    harness.run(ledger.open_account("Ada", "4321", 2500))
    deposit = harness.run(ledger.deposit(1, 1250, key="d"))
    clock.advance(1.5)
    withdraw = harness.run(ledger.withdraw(2, 250, key="w"))
    transfer = harness.run(ledger.transfer(3, 4, 1000, key="t"))
    assert harness.run(ledger.transfer(3, 4, 1000, key="t")).replayed  # not posted again
    rejection(harness, ledger.withdraw(4, 10**8, key="short"))  # stored, never posted
    rejection(harness, ledger.transfer(1, 1, 5, key="same"))

    journal = []
    after = 0
    while page := harness.run(ledger.journal(after, 2)):
        assert len(page) <= 2
        journal += page
        after = page[-1].posting_id
    assert [e.posting_id for e in journal] == sorted({e.posting_id for e in journal})
    assert harness.run(ledger.journal(0, 1000)) == journal
    openings = [(e.op, e.account, e.counterparty, e.amount_cents, e.key) for e in journal[:4]]
    assert openings == [
        ("deposit", 1, None, DEMO, None),
        ("deposit", 2, None, DEMO, None),
        ("deposit", 3, None, DEMO, None),
        ("deposit", 4, None, 2500, None),
    ]
    moves = journal[4:]
    assert [(e.posting_id, e.op, e.account, e.counterparty, e.amount_cents, e.key)
            for e in moves] == [
        (deposit.posting_id, "deposit", 1, None, 1250, "d"),
        (withdraw.posting_id, "withdraw", 2, None, 250, "w"),
        (transfer.posting_id, "transfer", 3, 4, 1000, "t"),
    ]  # fmt: skip
    assert [e.balance_after_cents for e in moves] == [DEMO + 1250, DEMO - 250, DEMO - 1000]
    assert [e.created_at for e in moves] == [clock.now - 1.5, clock.now, clock.now]

    # Replaying the journal gives every balance.
    derived: dict[int, int] = {}
    for e in journal:
        sign = 1 if e.op == "deposit" else -1
        derived[e.account] = derived.get(e.account, 0) + sign * e.amount_cents
        assert derived[e.account] == e.balance_after_cents
        if e.counterparty is not None:
            derived[e.counterparty] = derived.get(e.counterparty, 0) + e.amount_cents
    assert derived == balances(harness, ledger)

    assert harness.run(ledger.journal(journal[-1].posting_id)) == []
    assert harness.run(ledger.journal(0, 0)) == []
    assert harness.run(ledger.journal(-7, 3)) == journal[:3]
    with pytest.raises(InvalidRequest):
        harness.run(ledger.journal("0"))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        harness.run(ledger.journal(2**63))


def test_a_journal_page_holds_at_most_the_maximum(harness: LedgerHarness) -> None:
    ledger = harness.open()
    for n in range(1, 6):
        harness.run(ledger.deposit(1, n, key=f"k{n}"))
    assert len(harness.run(ledger.journal(0, MAX_JOURNAL_PAGE + 1))) == 8
    assert len(harness.run(ledger.journal(0, 10**12))) == 8  # clamped, not refused
    first = harness.run(ledger.journal(0, 1))
    assert len(first) == 1 and first[0].key is None


def test_postings_are_timestamped_by_the_ledgers_clock(harness: LedgerHarness) -> None:
    clock = FakeClock(1_234_567_890.25)
    ledger = harness.open(fast(clock))
    harness.run(ledger.deposit(1, 100, key="d"))
    clock.advance(60)
    harness.run(ledger.transfer(1, 2, 50, key="t"))
    times = [p.created_at for p in harness.run(ledger.statement(1, 3))]
    assert times == [1_234_567_950.25, 1_234_567_890.25, 1_234_567_890.25]


# --- exactly-once ---------------------------------------------------------------------


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "single"])
def test_concurrent_requests_with_one_key_apply_once(
    harness: LedgerHarness, group_commit: bool
) -> None:
    ledger = harness.open(LedgerSettings(group_commit=group_commit))

    async def storm() -> list[Receipt]:
        return await asyncio.gather(*(ledger.transfer(1, 2, 700, key="same") for _ in range(40)))

    receipts = harness.run(storm())
    assert sum(not r.replayed for r in receipts) == 1
    assert len({(r.posting_id, r.balance_cents) for r in receipts}) == 1
    assert balances(harness, ledger) == {1: DEMO - 700, 2: DEMO + 700, 3: DEMO}
    assert harness.run(ledger.stats()) == Stats(1, 1, 0)


def test_concurrent_rejections_with_one_key_are_stored_once(harness: LedgerHarness) -> None:
    ledger = harness.open()

    async def storm() -> list[object]:
        calls = (ledger.withdraw(3, DEMO + 1, key="same") for _ in range(20))
        return await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, InsufficientFunds) for r in harness.run(storm()))
    assert harness.run(ledger.stats()) == Stats(1, 0, 1)


def test_many_concurrent_requests_conserve_money(harness: LedgerHarness) -> None:
    ledger = harness.open()

    async def storm() -> list[object]:
        calls = []
        for i in range(150):
            src, dst = 1 + i % 3, 1 + (i + 1) % 3
            calls.append(ledger.transfer(src, dst, 1 + i * 997 % 400_000, key=f"t{i}"))
            calls.append(ledger.deposit(dst, 1 + i, key=f"d{i}"))
            calls.append(ledger.withdraw(src, 3 * DEMO // 150, key=f"w{i}"))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = harness.run(storm())
    assert all(isinstance(r, Receipt | InsufficientFunds) for r in results)
    deposited = sum(1 + i for i in range(150))
    withdrawn = sum(
        r.amount_cents for r in results if isinstance(r, Receipt) and r.op == "withdraw"
    )
    report = harness.run(ledger.verify())
    assert report.ok, report.problems
    assert report.total_cents == 3 * DEMO + deposited - withdrawn
    assert sum(balances(harness, ledger).values()) == report.total_cents
    stats = harness.run(ledger.stats())
    assert stats.total == 450
    assert stats.successful == sum(isinstance(r, Receipt) for r in results)


def test_a_transient_failure_stores_nothing_so_the_retry_applies(harness: LedgerHarness) -> None:
    ledger = harness.open()
    harness.run(ledger.record_failure())  # the service's injected reject for key "k"
    receipt = harness.run(ledger.deposit(1, 100, key="k"))
    assert not receipt.replayed and receipt.balance_cents == DEMO + 100
    stats = harness.run(ledger.stats())
    assert stats == Stats(2, 1, 1)
    assert (stats.success_rate, stats.error_rate) == (0.5, 0.5)


def test_replays_survive_a_restart(harness: LedgerHarness) -> None:
    ledger = harness.open()
    receipt = harness.run(ledger.transfer(1, 2, 300, key="t"))
    with pytest.raises(InsufficientFunds):
        harness.run(ledger.withdraw(3, DEMO + 1, key="w"))
    ledger = harness.reopen(ledger)
    assert harness.run(ledger.transfer(1, 2, 300, key="t")) == Receipt(
        "t", "transfer", 1, 2, 300, DEMO - 300, receipt.posting_id, replayed=True
    )
    with pytest.raises(InsufficientFunds):
        harness.run(ledger.withdraw(3, DEMO + 1, key="w"))
    with pytest.raises(KeyReused):
        harness.run(ledger.transfer(1, 2, 301, key="t"))
    assert balances(harness, ledger) == {1: DEMO - 300, 2: DEMO + 300, 3: DEMO}
    assert harness.run(ledger.stats()) == Stats(3, 1, 2)


def test_everything_is_still_there_after_reopening(harness: LedgerHarness) -> None:
    ledger = harness.open(FAST)
    harness.run(ledger.open_account("Ada", "5555", 100))
    harness.run(ledger.deposit(4, 50, key="a"))
    harness.run(ledger.transfer(4, 1, 25, key="b"))
    harness.run(ledger.record_failure())
    harness.run(ledger.change_pin(3, "1234", "4321"))
    before = (
        harness.run(ledger.accounts()),
        harness.run(ledger.statement(4)),
        harness.run(ledger.stats()),
    )
    ledger = harness.reopen(ledger)
    after = (
        harness.run(ledger.accounts()),
        harness.run(ledger.statement(4)),
        harness.run(ledger.stats()),
    )
    assert after == before
    assert harness.run(ledger.authenticate(3, "4321")).id == 3
    assert harness.run(ledger.ensure_demo_accounts()) is False
    assert harness.run(ledger.verify()).ok


SCHEMA_1_LEDGER = [
    # What the code of schema 1 wrote: accounts 1 and 2 (100.00 each), then account 1's
    # deposit "k1" of 1.00 and transfer "t" of 2.50 to account 2, and account 2's
    # refused withdrawal "k3". One namespace of keys: "k1" was then taken for everyone.
    "INSERT INTO accounts (id, kind, name, balance_cents, pin_hash, created_at) VALUES"
    " (1, 'customer', 'Ada', 9850, ?, 1), (2, 'customer', 'Bob', 10250, ?, 1)",
    "INSERT INTO requests (key, fingerprint, op, account_id, counterparty_id, amount_cents,"
    " error_code, error_message, created_at) VALUES"
    " (NULL, NULL, 'deposit', 1, NULL, 10000, NULL, NULL, 1),"
    " (NULL, NULL, 'deposit', 2, NULL, 10000, NULL, NULL, 1),"
    " ('k1', 'deposit:1::100', 'deposit', 1, NULL, 100, NULL, NULL, 2),"
    " ('t', 'transfer:1:2:250', 'transfer', 1, 2, 250, NULL, NULL, 3),"
    " ('k3', 'withdraw:2::99999', 'withdraw', 2, NULL, 99999, 'insufficient_funds',"
    " 'insufficient funds', 4)",
    "INSERT INTO entries (account_id, request_id, amount_cents, balance_after_cents) VALUES"
    " (1, 1, 10000, 10000), (0, 1, -10000, NULL), (2, 2, 10000, 10000), (0, 2, -10000, NULL),"
    " (1, 3, 100, 10100), (0, 3, -100, NULL), (1, 4, -250, 9850), (2, 4, 250, 10250)",
    "UPDATE stats SET successful = 2, failed = 2",
]


def write_schema_1_ledger(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database as the code of schema 1 left it (``SCHEMA_1_LEDGER``)."""
    from socklab.ledger import pins, postgres_store, sqlite, sqlite_store

    for store in (sqlite_store, postgres_store):
        monkeypatch.setattr(store, "migrations", lambda m=store.migrations: m()[:1])
    pin_hash = pins.hash_pin("1234")
    if url.startswith("sqlite"):
        conn = sqlite_store.connect(sqlite.sqlite_path_from_url(url))
        try:
            assert sqlite_store.migrate(conn) == 1
            conn.execute("BEGIN")
            for sql in SCHEMA_1_LEDGER:
                conn.execute(sql, (pin_hash, pin_hash) if "?" in sql else ())
            conn.execute("COMMIT")
        finally:
            conn.close()
    else:
        import psycopg

        async def write() -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                assert await postgres_store.migrate(conn) == 1
                async with conn.transaction():
                    for sql in SCHEMA_1_LEDGER:
                        params = (pin_hash, pin_hash) if "?" in sql else ()
                        await conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]

        asyncio.run(write())
    monkeypatch.undo()


def test_a_ledger_of_the_first_schema_migrates_and_keeps_its_keys(
    harness: LedgerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_schema_1_ledger(harness.url, monkeypatch)
    ledger = harness.open(demo=False)  # migrates to the current schema
    assert harness.run(ledger.verify()).ok
    before = harness.run(ledger.stats())
    assert before == Stats(4, 2, 2)
    # Exactly once still holds for every stored key, in the account that used it.
    assert harness.run(ledger.deposit(1, 100, key="k1")) == Receipt(
        "k1", "deposit", 1, None, 100, 10100, 3, replayed=True
    )
    assert harness.run(ledger.transfer(1, 2, 250, key="t")) == Receipt(
        "t", "transfer", 1, 2, 250, 9850, 4, replayed=True
    )
    assert type(rejection(harness, ledger.withdraw(2, 99999, key="k3"))) is InsufficientFunds
    assert type(rejection(harness, ledger.deposit(1, 101, key="k1"))) is KeyReused
    assert harness.run(ledger.stats()) == Stats(5, 2, 3)  # replays count once, as before
    # Other accounts now have keys of their own.
    fresh = harness.run(ledger.deposit(2, 100, key="k1"))
    assert (fresh.replayed, fresh.posting_id > 5, fresh.balance_cents) == (False, True, 10350)
    assert harness.run(ledger.deposit(2, 100, key="k1")).replayed
    assert harness.run(ledger.stats()) == Stats(6, 3, 3)
    assert [p.key for p in harness.run(ledger.statement(1))] == ["t", "k1", None]
    assert harness.run(ledger.authenticate(1, "1234", client="a")).name == "Ada"
    assert harness.run(ledger.verify()).ok


# --- PINs -----------------------------------------------------------------------------


def test_unknown_accounts_and_wrong_pins_fail_alike(harness: LedgerHarness) -> None:
    ledger = harness.open()
    wrong = rejection(harness, ledger.authenticate(1, "9999"))
    unknown = rejection(harness, ledger.authenticate(99, "1234"))
    vault = rejection(harness, ledger.authenticate(0, "1234"))
    huge = rejection(harness, ledger.authenticate(2**70, "1234"))
    assert {type(e) for e in (wrong, unknown, vault, huge)} == {AuthFailed}
    assert len({e.message for e in (wrong, unknown, vault, huge)}) == 1


def test_lockout_after_repeated_failures_then_it_expires(harness: LedgerHarness) -> None:
    clock = FakeClock()
    ledger = harness.open(fast(clock))  # 3 failures, 60 s
    for _ in range(3):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000"))
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234"))  # the right PIN, but locked
    assert harness.run(ledger.authenticate(2, "1234")).id == 2  # others are not locked
    clock.advance(59.5)
    with pytest.raises(AccountLocked, match="in 1 s"):
        harness.run(ledger.authenticate(1, "1234"))
    clock.advance(0.5)
    assert harness.run(ledger.authenticate(1, "1234")).id == 1


def test_wrong_pins_from_one_address_do_not_lock_the_others_out(
    harness: LedgerHarness,
) -> None:
    # Five requests from anywhere used to lock any account for everyone: a free denial
    # of service. Now an address locks the account for itself only.
    clock = FakeClock()
    ledger = harness.open(fast(clock))
    for _ in range(3):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client="203.0.113.9"))
    for _ in range(2):
        with pytest.raises(AccountLocked, match="from your address"):
            harness.run(ledger.authenticate(1, "1234", client="203.0.113.9"))
    assert harness.run(ledger.authenticate(1, "1234", client="198.51.100.7")).id == 1
    assert harness.run(ledger.authenticate(1, "1234")).id == 1
    # The attacker's lock outlives the owner's successes elsewhere, and then expires.
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234", client="203.0.113.9"))
    clock.advance(60)
    assert harness.run(ledger.authenticate(1, "1234", client="203.0.113.9")).id == 1


def test_an_address_is_forgiven_after_a_quiet_period(harness: LedgerHarness) -> None:
    clock = FakeClock()
    ledger = harness.open(fast(clock))
    for _ in range(2):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client="a"))
    clock.advance(60)  # lockout_s after the last failure: the count starts again
    for _ in range(2):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client="a"))
    with pytest.raises(AuthFailed):  # the third in a row within the window locks
        harness.run(ledger.authenticate(1, "0000", client="a"))
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234", client="a"))


def test_many_addresses_together_lock_the_account_for_everyone(
    harness: LedgerHarness,
) -> None:
    # The backstop: guessing from many addresses gets max_account_failed_logins tries,
    # counted by every process that shares the database (two ledgers here).
    clock = FakeClock()
    settings = fast(clock, max_account_failed_logins=5)
    first = harness.open(settings)
    second = harness.open(settings, demo=False)
    for n, ledger in enumerate([first, second, first, second, first]):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client=f"10.0.0.{n}"))
    for ledger in (first, second):
        with pytest.raises(AccountLocked, match="account locked"):
            harness.run(ledger.authenticate(1, "1234", client="192.0.2.1"))
    assert harness.run(second.authenticate(2, "1234", client="10.0.0.1")).id == 2
    clock.advance(60)
    assert harness.run(second.authenticate(1, "1234", client="192.0.2.1")).id == 1


def test_the_backstop_counts_since_the_last_success(harness: LedgerHarness) -> None:
    clock = FakeClock()
    ledger = harness.open(fast(clock, max_account_failed_logins=4))
    for n in range(3):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client=f"10.0.0.{n}"))
    assert harness.run(ledger.authenticate(1, "1234", client="192.0.2.1")).id == 1
    for n in range(3):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client=f"10.0.1.{n}"))
    assert harness.run(ledger.authenticate(1, "1234", client="192.0.2.1")).id == 1


def test_unlock_lifts_every_lock(harness: LedgerHarness) -> None:
    clock = FakeClock()
    ledger = harness.open(fast(clock, max_account_failed_logins=4))
    assert harness.run(ledger.unlock(1)) is False  # nothing to lift
    for _ in range(3):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client="a"))
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234", client="a"))
    with pytest.raises(AuthFailed):
        harness.run(ledger.authenticate(1, "0000", client="b"))  # the 4th: all locked
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234", client="c"))
    reopened = harness.open(harness.settings, demo=False)  # another process, say
    assert harness.run(reopened.unlock(1)) is True
    for client in ("a", "b", "c"):
        assert harness.run(ledger.authenticate(1, "1234", client=client)).id == 1
    # The counts are gone too: a fresh start of 3 per address.
    for _ in range(2):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000", client="a"))
    assert harness.run(ledger.authenticate(1, "1234", client="a")).id == 1
    for account in (0, 99, 2**70):
        with pytest.raises(UnknownAccount):
            harness.run(ledger.unlock(account))


def test_a_success_resets_the_failure_count(harness: LedgerHarness) -> None:
    ledger = harness.open(FAST)
    for _ in range(5):
        for _ in range(2):
            with pytest.raises(AuthFailed):
                harness.run(ledger.authenticate(1, "0000"))
        assert harness.run(ledger.authenticate(1, "1234")).id == 1


def test_the_lockout_survives_a_restart(harness: LedgerHarness) -> None:
    ledger = harness.open(LedgerSettings(max_failed_logins=2, lockout_s=60))
    for _ in range(2):
        with pytest.raises(AuthFailed):
            harness.run(ledger.authenticate(1, "0000"))
    ledger = harness.reopen(ledger)
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234"))


def test_concurrent_guesses_are_counted_before_any_success(harness: LedgerHarness) -> None:
    ledger = harness.open(LedgerSettings(max_failed_logins=3, lockout_s=60))

    async def guesses() -> list[object]:
        wrong = [ledger.authenticate(1, f"{n:04d}") for n in range(2000, 2012)]
        return await asyncio.gather(*wrong, return_exceptions=True)

    results = harness.run(guesses())
    assert sum(isinstance(r, AuthFailed) for r in results) <= 3
    with pytest.raises(AccountLocked):
        harness.run(ledger.authenticate(1, "1234"))


def test_change_pin(harness: LedgerHarness) -> None:
    ledger = harness.open(FAST)
    with pytest.raises(AuthFailed):
        harness.run(ledger.change_pin(1, "0000", "5678"))
    with pytest.raises(InvalidRequest):
        harness.run(ledger.change_pin(1, "1234", "12"))
    harness.run(ledger.change_pin(1, "1234", "5678"))
    with pytest.raises(AuthFailed):
        harness.run(ledger.authenticate(1, "1234"))
    assert harness.run(ledger.authenticate(1, "5678")).id == 1


def test_a_pin_never_shows(harness: LedgerHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret, other = "86420975", "13579024"
    clock = FakeClock()
    ledger = harness.open(fast(clock))
    account = harness.run(ledger.open_account("Ada", secret, 100))
    said = [repr(ledger), repr(account), str(account)]
    for attempt in (other, other, other, secret):
        with pytest.raises(RequestRejected) as info:
            harness.run(ledger.authenticate(account.id, attempt))
        said += [str(info.value), repr(info.value)]
    clock.advance(60)
    for bad_new in ("12", secret + "x"):
        with pytest.raises(InvalidRequest) as info:
            harness.run(ledger.change_pin(account.id, secret, bad_new))
        said.append(str(info.value))
    said += [record.getMessage() for record in caplog.records]
    assert any("locked" in line for line in said)
    assert not [line for line in said if secret in line or other in line]


# --- statistics and lifecycle ---------------------------------------------------------


def test_stats_rates(harness: LedgerHarness) -> None:
    ledger = harness.open()
    assert harness.run(ledger.stats()) == Stats(0, 0, 0)
    assert (Stats(0, 0, 0).success_rate, Stats(0, 0, 0).error_rate) == (0.0, 0.0)
    harness.run(ledger.deposit(1, 100, key="a"))
    harness.run(ledger.deposit(1, 100, key="a"))  # a replay: not counted again
    harness.run(ledger.deposit(1, 100, key="b"))
    harness.run(ledger.record_failure())
    with pytest.raises(SameAccount):
        harness.run(ledger.transfer(1, 1, 100, key="c"))
    stats = harness.run(ledger.stats())
    assert stats == Stats(4, 2, 2)
    assert (stats.success_rate, stats.error_rate) == (0.5, 0.5)


def test_close_is_idempotent_and_final(harness: LedgerHarness) -> None:
    ledger = harness.open()
    harness.run(ledger.close())
    harness.run(ledger.close())
    with pytest.raises(StorageError):
        harness.run(ledger.deposit(1, 100, key="late"))
    with pytest.raises(StorageError):
        harness.run(ledger.accounts())


def test_close_finishes_queued_work(harness: LedgerHarness) -> None:
    ledger = harness.open()

    async def deposit_then_close() -> list[Receipt]:
        pending = [asyncio.ensure_future(ledger.deposit(1, 1, key=f"k{i}")) for i in range(50)]
        await asyncio.sleep(0)  # every deposit is queued
        await ledger.close()
        return await asyncio.gather(*pending)

    assert len(harness.run(deposit_then_close())) == 50
    ledger = harness.open(demo=False)
    assert harness.run(ledger.get_account(1)).balance_cents == DEMO + 50
