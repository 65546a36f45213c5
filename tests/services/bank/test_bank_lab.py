"""The lab dialect: the seed's ATM conversation, kept in step whatever the client sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bank_harness import BankHarness, bank_harness

from helpers import ScriptedRandom
from socklab.errors import DropConnection
from socklab.ledger import LedgerSettings
from socklab.services.bank.lab import (
    AWAIT_AMOUNT,
    AWAIT_CHOICE,
    AWAIT_LOGIN,
    LAB_FLOW,
    MENU,
    split_login,
)

WELCOME = "Welcome Dibbyo Roy!\n1. Check Balance\n2. Deposit\n3. Withdraw\n4. Exit\n"
INVALID = "Invalid ID or Password\n"
NOT_IN = "Invalid ID or Password\nPlease log in again\n"


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankHarness]:
    yield from bank_harness(tmp_path)


def converse(bank: BankHarness, messages: list[str]) -> list[str]:
    session = bank.session()
    return [bank.lab(session, m) for m in messages]


def test_the_flow_table() -> None:
    assert LAB_FLOW[AWAIT_LOGIN] == {"login": AWAIT_CHOICE}
    assert LAB_FLOW[AWAIT_CHOICE]["2"] == LAB_FLOW[AWAIT_CHOICE]["3"] == AWAIT_AMOUNT
    assert LAB_FLOW[AWAIT_CHOICE]["1"] == LAB_FLOW[AWAIT_CHOICE]["4"] == AWAIT_LOGIN
    assert LAB_FLOW[AWAIT_AMOUNT]["amount"] == AWAIT_LOGIN
    assert MENU == "1. Check Balance\n2. Deposit\n3. Withdraw\n4. Exit\n"


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        ("11234", (1, "1234")),
        ("121234", (12, "1234")),
        ("1234567890", (123456, "7890")),
        ("1234", None),
        ("", None),
        ("a1234", None),
        ("01234", None),
        ("1 1234", None),
        ("١١٢٣٤", None),
    ],
    ids=["one-digit", "two-digits", "long", "pin-only", "empty", "letter", "zero-id",
         "space", "arabic-digits"],
)  # fmt: skip
def test_split_login(payload: str, parsed: tuple[int, str] | None) -> None:
    assert split_login(payload) == parsed


def test_check_balance(bank: BankHarness) -> None:
    assert converse(bank, ["11234", "112341"]) == [
        WELCOME,
        "Your balance is 10000.00\nTotal transactions: 0\nSuccess rate: 0.00\nError rate: 0.00\n",
    ]


def test_deposit_then_withdraw_as_the_seed_client_sends_them(bank: BankHarness) -> None:
    replies = converse(bank, ["11234", "112342", "112342", "11234", "112343", "1123412.50"])
    assert replies[:3] == [
        WELCOME,
        "Enter amount to deposit: ",
        "Your balance is 10002.00\nSuccessful transactions: 1\nTotal transactions: 1\n"
        "Success rate: 1.00\nError rate: 0.00\n",
    ]
    assert replies[3:] == [
        WELCOME,
        "Enter amount to withdraw: ",
        "Your balance is 9989.50\nSuccessful transactions: 2\nTotal transactions: 2\n"
        "Success rate: 1.00\nError rate: 0.00\n",
    ]
    assert bank.balance_cents(1) == 9_989_50


def test_withdrawing_more_than_the_balance_says_so(bank: BankHarness) -> None:
    replies = converse(bank, ["11234", "112343", "1123420000"])
    assert replies[2] == (
        "Transaction failed: insufficient funds (withdraw 20000.00)\n"
        "Your balance is 10000.00\nTotal transactions: 1\nSuccess rate: 0.00\nError rate: 1.00\n"
    )
    assert bank.balance_cents(1) == 10_000_00


@pytest.mark.parametrize("amount", ["abc", "", "1.234", "-5"])
def test_a_bad_amount_fails_the_transaction_clearly(bank: BankHarness, amount: str) -> None:
    reply = converse(bank, ["11234", "112342", "11234" + amount])[2]
    assert reply.startswith("Transaction failed: an amount must")
    assert "Your balance is 10000.00\n" in reply


def test_a_wrong_pin_keeps_the_conversation_in_step(bank: BankHarness) -> None:
    # What the seed client sends after "Invalid ID or Password": the choice anyway, and
    # for 2/3 an amount after reading a reply. Each gets exactly one reply, then a
    # correct login works as if nothing happened.
    replies = converse(
        bank,
        ["19999", "199991", "19999", "199992", "199995", "19999", "199993", "19999",
         "19999", "199994", "11234", "112341"],
    )  # fmt: skip
    assert replies == [
        INVALID, NOT_IN,          # choice 1
        INVALID, NOT_IN, NOT_IN,  # choice 2, then the amount
        INVALID, NOT_IN, NOT_IN,  # choice 3, then the amount (= the prefix: empty amount)
        INVALID, "",              # choice 4: the client reads nothing
        WELCOME,
        "Your balance is 10000.00\nTotal transactions: 0\nSuccess rate: 0.00\nError rate: 0.00\n",
    ]  # fmt: skip
    assert bank.balance_cents(1) == 10_000_00


@pytest.mark.parametrize("choice", ["4", "", "7", "x"], ids=["exit", "empty", "seven", "x"])
def test_choices_the_client_reads_nothing_for_get_nothing(bank: BankHarness, choice: str) -> None:
    session = bank.session()
    assert bank.lab(session, "11234") == WELCOME
    assert bank.lab(session, "11234" + choice) == ""
    assert bank.lab(session, "11234") == WELCOME  # back to awaiting a login


def test_ids_with_several_digits(tmp_path: Path) -> None:
    for bank in bank_harness(tmp_path):
        ledger = bank.service.ledger
        for n in range(4, 13):
            bank.await_(ledger.open_account(f"Holder {n}", "2468", 100_00))
        replies = converse(bank, ["122468", "1224682", "122468250", "122468", "1224681"])
        assert replies[0].startswith("Welcome Holder 12!\n")
        assert replies[2].startswith("Your balance is 350.00\n")
        assert replies[4].startswith("Your balance is 350.00\n")
        assert bank.balance_cents(1) == 10_000_00


def test_a_message_from_another_round_is_taken_as_a_login(bank: BankHarness) -> None:
    session = bank.session()
    assert bank.lab(session, "11234") == WELCOME
    assert bank.lab(session, "21234").startswith("Welcome Abdullah Ashik!")
    assert bank.lab(session, "212341").startswith("Your balance is 10000.00")


def test_every_lab_deposit_is_a_new_request(bank: BankHarness) -> None:
    converse(bank, ["11234", "112342", "112345", "11234", "112342", "112345"])
    assert bank.balance_cents(1) == 10_010_00
    postings = bank.await_(bank.service.ledger.statement(1, 2))
    keys = {p.key for p in postings}
    assert len(keys) == 2 and all(k and k.startswith("lab-") for k in keys)


def test_an_injected_reject_is_the_seeds_transaction_failed(tmp_path: Path) -> None:
    for bank in bank_harness(tmp_path, fail_rate=0.45, rng=ScriptedRandom([0.1])):
        replies = converse(bank, ["11234", "112342", "112342"])
        assert replies[2] == (
            "Transaction failed\nYour balance is 10000.00\nPlease try again\n"
            "Total transactions: 1\nSuccess rate: 0.00\nError rate: 1.00\n"
        )
        assert bank.balance_cents(1) == 10_000_00


def test_an_injected_lost_reply_drops_the_connection_after_applying(tmp_path: Path) -> None:
    rng = ScriptedRandom([0.1])
    for bank in bank_harness(tmp_path, fail_rate=0.5, fail_mode="lose-reply", rng=rng):
        session = bank.session()
        bank.lab(session, "11234")
        bank.lab(session, "112342")
        with pytest.raises(DropConnection):
            bank.lab(session, "112342")
        assert bank.balance_cents(1) == 10_002_00


def test_a_locked_account_is_told_so(tmp_path: Path) -> None:
    settings = LedgerSettings(max_failed_logins=2, lockout_s=60)
    for bank in bank_harness(tmp_path, settings=settings):
        replies = converse(bank, ["10000", "100004", "10001", "100014", "11234", "112341"])
        assert replies[:4] == [INVALID, "", INVALID, ""]
        assert replies[4].startswith("too many wrong PINs for this account from your address")
        assert "try again in" in replies[4]
        assert replies[5] == NOT_IN


def test_the_farewell(bank: BankHarness) -> None:
    assert bank.session().farewell() == "[DISCONNECTED]"
