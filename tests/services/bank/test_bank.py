"""The bank service by direct session calls: every op, error and state, json and line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bank_harness import BankHarness, bank_harness

from helpers import ScriptedRandom
from socklab.errors import (
    AccountLocked,
    AuthFailed,
    DropConnection,
    InsufficientFunds,
    InvalidAmount,
    InvalidRequest,
    KeyReused,
    NotLoggedIn,
    RequestRejected,
    SameAccount,
    TooManyLogins,
    TransientFailure,
    UnknownAccount,
    UnknownOperation,
)
from socklab.ledger import LedgerSettings
from socklab.protocol.bank import OPS
from socklab.services.bank import ANONYMOUS, AUTHENTICATED, FLOW, MONEY_OPS, BankService

CORE_LOG = "socklab.services.bank.core"


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankHarness]:
    yield from bank_harness(tmp_path)


@pytest.fixture
def logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """caplog, also after a CLI test configured socklab's logger not to propagate."""
    monkeypatch.setattr(logging.getLogger("socklab"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="socklab")
    return caplog


# -- the order table -------------------------------------------------------------------


def test_the_table_lets_only_login_stats_and_help_in_before_login() -> None:
    assert set(FLOW[ANONYMOUS]) == {"login", "stats", "help"}
    assert set(FLOW[AUTHENTICATED]) >= MONEY_OPS
    assert FLOW[AUTHENTICATED]["logout"] == ANONYMOUS
    assert set(OPS) == set(FLOW[ANONYMOUS]) | set(FLOW[AUTHENTICATED])


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("balance", {}),
        ("deposit", {"amount": "1.00", "key": "k"}),
        ("withdraw", {"amount": "1.00", "key": "k"}),
        ("transfer", {"to": 2, "amount": "1.00", "key": "k"}),
        ("statement", {}),
        ("change_pin", {"old_pin": "1234", "new_pin": "4321"}),
        ("logout", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_money_and_account_ops_need_a_login(
    bank: BankHarness, op: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(NotLoggedIn):
        bank.json(bank.session(), op, **fields)
    assert bank.balance_cents(1) == 10_000_00
    assert bank.await_(bank.service.ledger.stats()).total == 0


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "rob"}, UnknownOperation),
        ({}, InvalidRequest),
        ({"op": 7}, InvalidRequest),
    ],
    ids=["unknown-op", "no-op", "op-not-text"],
)
def test_requests_without_a_known_op(
    bank: BankHarness, request_: dict[str, Any], error: type[RequestRejected]
) -> None:
    with pytest.raises(error):
        bank.run(bank.logged_in().handle_json(request_))


def test_stats_and_help_work_before_login(bank: BankHarness) -> None:
    session = bank.session()
    assert bank.json(session, "stats")["stats"] == {
        "total": 0,
        "successful": 0,
        "failed": 0,
        "success_rate": 0.0,
        "error_rate": 0.0,
    }
    assert bank.json(session, "help")["now_allowed"] == ["login", "stats", "help"]


# -- login, logout, PINs ---------------------------------------------------------------


def test_login_welcomes_the_holder(bank: BankHarness) -> None:
    session = bank.session()
    reply = bank.json(session, "login", account=1, pin="1234")
    assert reply == {"account": 1, "name": "Dibbyo Roy", "balance": "10000.00"}
    assert session.state == AUTHENTICATED
    assert bank.json(session, "balance")["balance"] == "10000.00"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"account": 1, "pin": "9999"}, AuthFailed),
        ({"account": 99, "pin": "1234"}, AuthFailed),
        ({"account": 1, "pin": 1234}, InvalidRequest),
        ({"account": "1", "pin": "1234"}, InvalidRequest),
        ({"account": True, "pin": "1234"}, InvalidRequest),
        ({"account": 0, "pin": "1234"}, InvalidRequest),
        ({"pin": "1234"}, InvalidRequest),
    ],
    ids=["wrong-pin", "unknown-account", "pin-number", "account-text", "account-bool",
         "account-0", "no-account"],
)  # fmt: skip
def test_bad_logins(bank: BankHarness, fields: dict[str, Any], error: type[Exception]) -> None:
    session = bank.session()
    with pytest.raises(error) as info:
        bank.json(session, "login", **fields)
    assert session.state == ANONYMOUS
    assert "1234" not in str(info.value) and "9999" not in str(info.value)


def test_a_failed_login_drops_the_previous_identity(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    with pytest.raises(AuthFailed):
        bank.json(session, "login", account=2, pin="0000")
    with pytest.raises(NotLoggedIn):
        bank.json(session, "balance")


def test_login_again_switches_account(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    bank.json(session, "login", account=2, pin="1234")
    assert bank.json(session, "balance")["name"] == "Abdullah Ashik"


def test_logout_ends_the_login(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    assert bank.json(session, "logout") == {"account": 1}
    assert session.state == ANONYMOUS
    with pytest.raises(NotLoggedIn):
        bank.json(session, "balance")


def test_repeated_wrong_pins_lock_the_account(tmp_path: Path) -> None:
    settings = LedgerSettings(max_failed_logins=2, lockout_s=60)
    for bank in bank_harness(tmp_path, settings=settings):
        for _ in range(2):
            with pytest.raises(AuthFailed):
                bank.json(bank.session(), "login", account=1, pin="0000")
        with pytest.raises(AccountLocked):
            bank.json(bank.session(), "login", account=1, pin="1234")


def test_change_pin(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    reply = bank.json(session, "change_pin", old_pin="1234", new_pin="8642")
    assert reply == {"account": 1}
    assert "8642" not in json.dumps(reply)
    with pytest.raises(AuthFailed):
        bank.json(bank.session(), "login", account=1, pin="1234")
    bank.json(bank.session(), "login", account=1, pin="8642")


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [("0000", "8642", AuthFailed), ("1234", "12", InvalidRequest), ("1234", 8642, InvalidRequest)],
    ids=["wrong-old", "new-too-short", "new-not-text"],
)
def test_change_pin_refusals(bank: BankHarness, old: str, new: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        bank.json(bank.logged_in(1), "change_pin", old_pin=old, new_pin=new)
    assert "8642" not in str(info.value)


# -- money -----------------------------------------------------------------------------


def test_deposit_reply_carries_balance_receipt_and_stats(bank: BankHarness) -> None:
    reply = bank.json(bank.logged_in(1), "deposit", amount="12.50", key="k1")
    posting = reply.pop("posting")
    assert isinstance(posting, int)
    assert reply == {
        "op": "deposit",
        "account": 1,
        "amount": "12.50",
        "balance": "10012.50",
        "key": "k1",
        "replayed": False,
        "stats": {
            "total": 1,
            "successful": 1,
            "failed": 0,
            "success_rate": 1.0,
            "error_rate": 0.0,
        },
    }


def test_withdraw_and_transfer(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    assert bank.json(session, "withdraw", amount="5", key="w")["balance"] == "9995.00"
    reply = bank.json(session, "transfer", to=2, amount="0.05", key="t")
    assert (reply["op"], reply["to"], reply["balance"]) == ("transfer", 2, "9994.95")
    assert bank.balance_cents(2) == 10_000_05


def test_a_retry_with_the_same_key_is_answered_from_the_record(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    first = bank.json(session, "deposit", amount="12.50", key="k1")
    again = bank.json(bank.logged_in(1), "deposit", amount="12.50", key="k1")
    assert again["replayed"] is True
    assert again["posting"] == first["posting"]
    assert again["balance"] == first["balance"] == "10012.50"
    assert bank.balance_cents(1) == 10_012_50
    assert again["stats"]["total"] == 1


@pytest.mark.parametrize(
    ("op", "fields", "error"),
    [
        ("deposit", {"amount": "1.00"}, InvalidRequest),
        ("withdraw", {"amount": "1.00"}, InvalidRequest),
        ("transfer", {"to": 2, "amount": "1.00"}, InvalidRequest),
        ("deposit", {"amount": "1.00", "key": ""}, InvalidRequest),
        ("deposit", {"amount": "1.00", "key": 5}, InvalidRequest),
        ("deposit", {"amount": 1.5, "key": "k"}, InvalidAmount),
        ("deposit", {"amount": 2, "key": "k"}, InvalidAmount),
        ("deposit", {"amount": "12.345", "key": "k"}, InvalidAmount),
        ("deposit", {"amount": "-5", "key": "k"}, InvalidAmount),
        ("deposit", {"amount": "1e3", "key": "k"}, InvalidAmount),
        ("deposit", {"key": "k"}, InvalidAmount),
        ("deposit", {"amount": "0", "key": "k"}, InvalidAmount),
        ("deposit", {"amount": "1000000.01", "key": "k"}, InvalidAmount),
        ("withdraw", {"amount": "10000.01", "key": "k"}, InsufficientFunds),
        ("transfer", {"to": 1, "amount": "1.00", "key": "k"}, SameAccount),
        ("transfer", {"to": 99, "amount": "1.00", "key": "k"}, UnknownAccount),
        ("transfer", {"amount": "1.00", "key": "k"}, InvalidRequest),
        ("transfer", {"to": "2", "amount": "1.00", "key": "k"}, InvalidRequest),
    ],
    ids=[
        "deposit-no-key", "withdraw-no-key", "transfer-no-key", "empty-key", "key-number",
        "amount-float", "amount-int", "three-decimals", "negative", "exponent", "no-amount",
        "zero", "over-max", "overdraft", "same-account", "unknown-to", "no-to", "to-text",
    ],
)  # fmt: skip
def test_money_refusals_apply_nothing(
    bank: BankHarness, op: str, fields: dict[str, Any], error: type[RequestRejected]
) -> None:
    session = bank.logged_in(1)
    with pytest.raises(error) as info:
        bank.json(session, op, **fields)
    assert info.value.message
    assert bank.balance_cents(1) == 10_000_00
    assert bank.balance_cents(2) == 10_000_00
    assert session.state == AUTHENTICATED


def test_a_refusal_is_stored_under_its_key(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    with pytest.raises(InsufficientFunds):
        bank.json(session, "withdraw", amount="20000", key="big")
    bank.json(session, "deposit", amount="20000", key="top-up")
    with pytest.raises(InsufficientFunds):  # the stored outcome, not a new decision
        bank.json(session, "withdraw", amount="20000", key="big")
    assert bank.balance_cents(1) == 30_000_00


def test_the_same_key_for_another_request_is_refused(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    bank.json(session, "deposit", amount="1.00", key="k")
    with pytest.raises(KeyReused):
        bank.json(session, "deposit", amount="2.00", key="k")
    with pytest.raises(KeyReused):
        bank.json(session, "withdraw", amount="1.00", key="k")
    assert bank.balance_cents(1) == 10_001_00


def test_statement_lists_the_newest_postings_with_their_keys(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    bank.json(session, "deposit", amount="1.00", key="a")
    bank.json(session, "transfer", to=3, amount="2.00", key="b")
    reply = bank.json(session, "statement", limit=2)
    assert reply["account"] == 1 and reply["balance"] == "9999.00"
    rows = [
        (p["op"], p["amount"], p["balance_after"], p["counterparty"], p["key"])
        for p in reply["postings"]
    ]
    assert rows == [
        ("transfer", "-2.00", "9999.00", 3, "b"),
        ("deposit", "1.00", "10001.00", None, "a"),
    ]
    assert len(bank.json(session, "statement")["postings"]) == 3  # with the opening deposit


@pytest.mark.parametrize("limit", [0, -1, 1001, "5", 2.5, True])
def test_statement_limit_must_be_sane(bank: BankHarness, limit: Any) -> None:
    with pytest.raises(InvalidRequest):
        bank.json(bank.logged_in(1), "statement", limit=limit)


def test_stats_count_money_requests(bank: BankHarness) -> None:
    session = bank.logged_in(1)
    bank.json(session, "deposit", amount="1.00", key="a")
    bank.json(session, "deposit", amount="1.00", key="a")  # a replay counts once
    with pytest.raises(InsufficientFunds):
        bank.json(session, "withdraw", amount="99999", key="b")
    assert bank.json(session, "stats")["stats"] == {
        "total": 2,
        "successful": 1,
        "failed": 1,
        "success_rate": 0.5,
        "error_rate": 0.5,
    }


# -- fault injection ---------------------------------------------------------------------


def test_reject_applies_nothing_counts_a_failure_and_a_retry_succeeds(tmp_path: Path) -> None:
    for bank in bank_harness(tmp_path, fail_rate=0.5, rng=ScriptedRandom([0.1])):
        session = bank.logged_in(1)
        with pytest.raises(TransientFailure) as info:
            bank.json(session, "deposit", amount="5.00", key="k")
        assert "try again" in info.value.message
        assert bank.balance_cents(1) == 10_000_00
        assert bank.json(session, "stats")["stats"]["failed"] == 1
        reply = bank.json(session, "deposit", amount="5.00", key="k")
        assert reply["replayed"] is False and reply["balance"] == "10005.00"


def test_lose_reply_applies_then_drops_and_the_keyed_retry_replays(tmp_path: Path) -> None:
    rng = ScriptedRandom([0.1])
    for bank in bank_harness(tmp_path, fail_rate=0.5, fail_mode="lose-reply", rng=rng):
        with pytest.raises(DropConnection):
            bank.json(bank.logged_in(1), "withdraw", amount="5.00", key="k")
        assert bank.balance_cents(1) == 9_995_00
        reply = bank.json(bank.logged_in(1), "withdraw", amount="5.00", key="k")
        assert reply["replayed"] is True and reply["balance"] == "9995.00"
        assert bank.balance_cents(1) == 9_995_00


def test_lose_reply_also_drops_a_refusal_after_storing_it(tmp_path: Path) -> None:
    rng = ScriptedRandom([0.1])
    for bank in bank_harness(tmp_path, fail_rate=0.5, fail_mode="lose-reply", rng=rng):
        with pytest.raises(DropConnection):
            bank.json(bank.logged_in(1), "withdraw", amount="99999", key="k")
        with pytest.raises(InsufficientFunds):
            bank.json(bank.logged_in(1), "withdraw", amount="99999", key="k")
        assert bank.json(bank.session(), "stats")["stats"]["failed"] == 1


def test_only_money_requests_are_hit(tmp_path: Path) -> None:
    for bank in bank_harness(tmp_path, fail_rate=1.0, fail_mode="lose-reply"):
        session = bank.logged_in(1)
        for op in ("balance", "statement", "stats", "help"):
            bank.json(session, op)
        with pytest.raises(DropConnection):
            bank.json(session, "deposit", amount="1.00", key="k")


def test_no_faults_by_default(bank: BankHarness) -> None:
    assert bank.service.fail_rate == 0.0
    session = bank.logged_in(1)
    for n in range(30):
        bank.json(session, "deposit", amount="0.01", key=f"k{n}")
    assert bank.balance_cents(1) == 10_000_30


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [({"fail_rate": 1.5}, "fail_rate"), ({"fail_mode": "explode"}, "fail_mode")],
    ids=["rate", "mode"],
)
def test_fault_settings_are_checked(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        BankService("sqlite://", **kwargs)


# -- logging and the first run -------------------------------------------------------------


def test_one_info_line_per_transaction_and_never_a_pin(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    caplog = logs
    for bank in bank_harness(tmp_path):
        session = bank.logged_in(1)
        bank.json(session, "change_pin", old_pin="1234", new_pin="8642")
        with pytest.raises(AuthFailed):
            bank.json(bank.session(), "login", account=1, pin="9753")
        session = bank.logged_in(1, "8642")
        bank.json(session, "deposit", amount="12.50", key="k1")
        with pytest.raises(InsufficientFunds):
            bank.json(session, "withdraw", amount="99999", key="k2")
        bank.line(session, "transfer 2 1.00")
    for record in caplog.records:
        text = record.getMessage()
        assert "8642" not in text and "9753" not in text
    lines = [
        r.getMessage() for r in caplog.records if r.name == CORE_LOG and r.levelno == logging.INFO
    ]
    assert "Account 1 deposit 12.50: ok" in lines
    assert "Account 1 withdraw 99999.00: insufficient_funds" in lines
    assert "Account 1 transfer 1.00 to 2: ok" in lines
    assert sum(" deposit " in t or " withdraw " in t or " transfer " in t for t in lines) == 3


def test_the_first_run_creates_the_demo_accounts_and_says_so_once(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    caplog = logs
    for bank in bank_harness(tmp_path):
        assert [a.id for a in bank.await_(bank.service.ledger.accounts())] == [1, 2, 3]
    said = [r for r in caplog.records if r.name == CORE_LOG and "demo" in r.msg]
    assert len(said) == 1
    assert "PIN 1234" in said[0].getMessage() and "10000.00" in said[0].getMessage()
    caplog.clear()
    for _ in bank_harness(tmp_path):  # the same database: nothing new, nothing said
        pass
    assert not [r for r in caplog.records if r.name == CORE_LOG and "demo" in r.msg]


def test_a_ledger_given_open_is_left_open(tmp_path: Path) -> None:
    import asyncio

    from socklab.ledger import open_ledger

    async def scenario() -> None:
        ledger = await open_ledger(f"sqlite:///{tmp_path / 'b.db'}")
        service = BankService(ledger)
        await service.start()
        await service.stop()
        assert len(await ledger.accounts()) == 3  # still usable
        await ledger.close()

    asyncio.run(scenario())


# -- the line dialect --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "last_reply"),
    [
        (["login 1 1234"], "Welcome Dibbyo Roy! Account 1, balance 10000.00."),
        (["login 1 1234", "balance"], "Your balance is 10000.00 | Successful transactions: 0"),
        (["login 1 1234", "deposit 12.50"], "Deposited 12.50. Your balance is 10012.50 | "
         "Successful transactions: 1 | Total transactions: 1 | Success rate: 1.00 | "
         "Error rate: 0.00"),
        (["login 1 1234", "withdraw 5"], "Withdrew 5.00. Your balance is 9995.00"),
        (["login 1 1234", "transfer 2 1.00"], "Transferred 1.00 to account 2. Your balance "
         "is 9999.00"),
        (["login 1 1234", "deposit 1", "statement 1"], "Account 1, balance 10001.00: #4 "
         "deposit 1.00 -> 10001.00"),
        (["login 1 1234", "transfer 3 2", "statement 1"], "Account 1, balance 9998.00: #4 "
         "transfer -2.00 to 3 -> 9998.00"),
        (["stats"], "Successful transactions: 0 | Total transactions: 0"),
        (["login 1 1234", "logout"], "Goodbye. Account 1 logged out."),
        (["login 1 1234", "change_pin 1234 5678"], "PIN changed for account 1."),
        (["help"], "commands: login ACCOUNT PIN"),
        ([""], "commands: login ACCOUNT PIN"),
        (["  LOGIN 1 1234  "], "Welcome Dibbyo Roy!"),
    ],
    ids=["login", "balance", "deposit", "withdraw", "transfer", "statement",
         "statement-transfer", "stats", "logout", "change-pin", "help", "empty", "spaces-case"],
)  # fmt: skip
def test_line_commands(bank: BankHarness, lines: list[str], last_reply: str) -> None:
    session = bank.session()
    replies = [bank.line(session, line) for line in lines]
    assert replies[-1].startswith(last_reply)
    assert "\n" not in replies[-1]


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["balance"], NotLoggedIn),
        (["deposit 5"], NotLoggedIn),
        (["login 1"], InvalidRequest),
        (["login one 1234"], InvalidRequest),
        (["login 1 9999"], AuthFailed),
        (["login 1 1234", "deposit"], InvalidRequest),
        (["login 1 1234", "deposit 1,000"], InvalidAmount),
        (["login 1 1234", "withdraw 1e9"], InvalidAmount),
        (["login 1 1234", "withdraw 20000"], InsufficientFunds),
        (["login 1 1234", "transfer 1 5"], SameAccount),
        (["login 1 1234", "transfer x 5"], InvalidRequest),
        (["login 1 1234", "statement many"], InvalidRequest),
        (["rob the bank"], UnknownOperation),
    ],
    ids=["balance-anon", "deposit-anon", "login-short", "login-bad-id", "login-wrong-pin",
         "deposit-no-amount", "amount-comma", "amount-exp", "overdraft", "same-account",
         "transfer-bad-to", "statement-bad-n", "unknown"],
)  # fmt: skip
def test_line_errors(bank: BankHarness, lines: list[str], error: type[Exception]) -> None:
    session = bank.session()
    for line in lines[:-1]:
        bank.line(session, line)
    with pytest.raises(error):
        bank.line(session, lines[-1])


def test_line_money_commands_get_a_fresh_key_each(bank: BankHarness) -> None:
    session = bank.session()
    bank.line(session, "login 1 1234")
    bank.line(session, "deposit 1")
    bank.line(session, "deposit 1")  # the same text twice is two deposits
    assert bank.balance_cents(1) == 10_002_00
    keys = [p["key"] for p in bank.json(session, "statement", limit=2)["postings"]]
    assert len(set(keys)) == 2 and all(k.startswith("line-") for k in keys)


# -- logins per address ---------------------------------------------------------------------


class FakeTime:
    """A monotonic clock that moves when told, and a sleep that only records its naps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)


def test_logins_over_the_rate_wait_their_turn_then_are_refused(tmp_path: Path) -> None:
    fake = FakeTime()
    options = {"login_burst": 2, "login_rate_per_s": 1.0, "login_max_wait_s": 2.0}
    for bank in bank_harness(tmp_path, clock=fake.clock, sleep=fake.sleep, **options):
        attacker, owner = "203.0.113.9", "198.51.100.7"
        for _ in range(2):  # the burst: at once
            with pytest.raises(AuthFailed):
                bank.json(bank.session(host=attacker), "login", account=999, pin="0000")
        assert fake.naps == []
        # Over the rate: a wait that grows (the clock does not move between the two)...
        waiting = [bank.session(host=attacker).handle_json(
            {"op": "login", "account": 999, "pin": "0000"}
        ) for _ in range(2)]  # fmt: skip
        for pending in waiting:
            with pytest.raises(AuthFailed):
                bank.run(pending)
        assert fake.naps == [1.0, 2.0]
        # ... and past max_wait_s a refusal before any PIN check, for any account.
        with pytest.raises(TooManyLogins, match="try again in 3 s"):
            bank.json(bank.session(host=attacker), "login", account=1, pin="1234")
        # Other addresses have their own bucket.
        assert bank.json(bank.session(host=owner), "login", account=1, pin="1234")["account"] == 1
        fake.now += 10
        assert bank.json(bank.session(host=attacker), "login", account=1, pin="1234")["name"]


def test_pin_changes_count_as_logins(tmp_path: Path) -> None:
    fake = FakeTime()
    options = {"login_burst": 2, "login_rate_per_s": 0.01, "login_max_wait_s": 0.0}
    for bank in bank_harness(tmp_path, clock=fake.clock, sleep=fake.sleep, **options):
        session = bank.session(host="203.0.113.9")
        bank.json(session, "login", account=1, pin="1234")
        with pytest.raises(AuthFailed):
            bank.json(session, "change_pin", old_pin="0000", new_pin="5678")
        with pytest.raises(TooManyLogins):
            bank.json(session, "change_pin", old_pin="1234", new_pin="5678")


def test_wrong_pins_lock_the_account_for_that_address_only(tmp_path: Path) -> None:
    settings = LedgerSettings(max_failed_logins=2, lockout_s=60)
    for bank in bank_harness(tmp_path, settings=settings):
        for _ in range(2):
            with pytest.raises(AuthFailed):
                bank.json(bank.session(host="203.0.113.9"), "login", account=1, pin="0000")
        with pytest.raises(AccountLocked, match="from your address"):
            bank.json(bank.session(host="203.0.113.9"), "login", account=1, pin="1234")
        owner = bank.session(host="198.51.100.7")
        assert bank.json(owner, "login", account=1, pin="1234")["account"] == 1
        assert bank.line(bank.session(host="198.51.100.8"), "login 1 1234").startswith("Welcome")


def test_the_login_buckets_refill_and_forget_the_least_recent_addresses() -> None:
    from socklab.services.bank.limits import LoginRateLimiter

    fake = FakeTime()
    limiter = LoginRateLimiter(2.0, 2, max_wait_s=0.0, clock=fake.clock, max_clients=3)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, None]
    assert limiter.retry_after("a") == 0.5
    fake.now += 0.5
    assert [limiter.acquire("a"), limiter.acquire("a")] == [0.0, None]
    fake.now += 10  # a full bucket, never more than the burst
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, None]
    for client in ("b", "c", "d"):
        limiter.acquire(client)
    assert len(limiter) == 3  # "a", the least recently seen, is forgotten
    with pytest.raises(ValueError):
        LoginRateLimiter(0.0, 1)
