"""The bank's vocabulary: one table of (value, json) pairs used both ways, and the refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socklab.errors import InvalidAmount, InvalidRequest, PeerProtocolError, UnknownOperation
from socklab.protocol import bank

STATS = bank.BankStats(total=3, successful=2, failed=1)
STATS_JSON = {
    "total": 3,
    "successful": 2,
    "failed": 1,
    "success_rate": 0.6667,
    "error_rate": 0.3333,
}

REQUESTS: list[tuple[str, bank.BankRequest, dict[str, Any]]] = [
    ("login", bank.Login(1, "1234"), {"account": 1, "pin": "1234"}),
    ("logout", bank.Logout(), {}),
    ("balance", bank.Balance(), {}),
    ("deposit", bank.Move("deposit", 1250, "k1"), {"amount": "12.50", "key": "k1"}),
    ("withdraw", bank.Move("withdraw", 5, "k2"), {"amount": "0.05", "key": "k2"}),
    ("transfer", bank.Move("transfer", 100, "k3", to=2), {"amount": "1.00", "key": "k3", "to": 2}),
    ("statement", bank.Statement(), {"limit": 10}),
    ("statement", bank.Statement(50, before=99), {"limit": 50, "before": 99}),
    ("stats", bank.GetStats(), {}),
    ("change_pin", bank.ChangePin("1234", "4321"), {"old_pin": "1234", "new_pin": "4321"}),
    ("help", bank.Help(), {}),
]

REPLIES: list[tuple[str, bank.BankReply, dict[str, Any]]] = [
    (
        "login",
        bank.LoggedIn(1, "Dibbyo Roy", 10000_00),
        {"account": 1, "name": "Dibbyo Roy", "balance": "10000.00"},
    ),
    ("logout", bank.LoggedOut(1), {"account": 1}),
    (
        "balance",
        bank.BalanceInfo(2, "Abdullah Ashik", 7, STATS),
        {"account": 2, "name": "Abdullah Ashik", "balance": "0.07", "stats": STATS_JSON},
    ),
    (
        "deposit",
        bank.Moved("deposit", 1, 1250, 11250, "k1", 4, False, STATS),
        {
            "op": "deposit",
            "account": 1,
            "amount": "12.50",
            "balance": "112.50",
            "key": "k1",
            "posting": 4,
            "replayed": False,
            "stats": STATS_JSON,
        },
    ),
    (
        "transfer",
        bank.Moved("transfer", 1, 100, 0, "k3", 5, True, STATS, to=3),
        {
            "op": "transfer",
            "account": 1,
            "amount": "1.00",
            "balance": "0.00",
            "key": "k3",
            "posting": 5,
            "replayed": True,
            "stats": STATS_JSON,
            "to": 3,
        },
    ),
    (
        "statement",
        bank.StatementPage(
            1,
            900,
            (
                bank.StatementLine(5, "transfer", -100, 900, 3, "k3", 1700000000.5),
                bank.StatementLine(1, "deposit", 1000, 1000, None, None, 1700000000.0),
            ),
            next_before=1,
        ),
        {
            "account": 1,
            "balance": "9.00",
            "next_before": 1,
            "postings": [
                {
                    "posting": 5,
                    "op": "transfer",
                    "amount": "-1.00",
                    "balance_after": "9.00",
                    "counterparty": 3,
                    "key": "k3",
                    "time": 1700000000.5,
                },
                {
                    "posting": 1,
                    "op": "deposit",
                    "amount": "10.00",
                    "balance_after": "10.00",
                    "counterparty": None,
                    "key": None,
                    "time": 1700000000.0,
                },
            ],
        },
    ),
    ("stats", bank.StatsInfo(STATS), {"stats": STATS_JSON}),
    ("change_pin", bank.PinChanged(3), {"account": 3}),
    (
        "help",
        bank.HelpInfo(("login", "help"), ("login",)),
        {"ops": ["login", "help"], "now_allowed": ["login"]},
    ),
]


@pytest.mark.parametrize(("op", "value", "fields"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_requests_both_ways(op: str, value: bank.BankRequest, fields: dict[str, Any]) -> None:
    assert value.op == op
    assert value.to_json() == fields
    assert bank.parse_request({"op": op, "id": 7, **fields}) == value


@pytest.mark.parametrize(("op", "value", "fields"), REPLIES, ids=[r[0] for r in REPLIES])
def test_replies_both_ways(op: str, value: bank.BankReply, fields: dict[str, Any]) -> None:
    assert value.to_json() == fields
    assert bank.parse_reply(op, fields) == value


BAD_REQUESTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({}, InvalidRequest, "needs an op"),
    ({"op": 5}, InvalidRequest, "needs an op"),
    ({"op": "rob"}, UnknownOperation, "unknown op 'rob'"),
    ({"op": "login", "account": "1", "pin": "1234"}, InvalidRequest, "account must be"),
    ({"op": "login", "account": True, "pin": "1234"}, InvalidRequest, "account must be"),
    ({"op": "login", "account": 0, "pin": "1234"}, InvalidRequest, "account must be"),
    ({"op": "login", "account": 2**63, "pin": "1234"}, InvalidRequest, "account must be"),
    ({"op": "login", "account": 1, "pin": 1234}, InvalidRequest, "pin must be"),
    ({"op": "deposit", "amount": "1.00"}, InvalidRequest, "need an idempotency 'key'"),
    ({"op": "deposit", "amount": "1.00", "key": ""}, InvalidRequest, "1 to 128"),
    ({"op": "deposit", "amount": "1.00", "key": "x" * 129}, InvalidRequest, "1 to 128"),
    ({"op": "deposit", "amount": "1.00", "key": "a\nb"}, InvalidRequest, "printable"),
    ({"op": "deposit", "amount": 1, "key": "k"}, InvalidAmount, "decimal string"),
    ({"op": "deposit", "amount": "1.001", "key": "k"}, InvalidAmount, "at most 2 decimals"),
    ({"op": "transfer", "amount": "1.00", "key": "k"}, InvalidRequest, "to must be"),
    ({"op": "statement", "limit": 0}, InvalidRequest, "limit must be"),
    ({"op": "statement", "limit": 1001}, InvalidRequest, "from 1 to 1000"),
    ({"op": "statement", "before": -1}, InvalidRequest, "before must be"),
    ({"op": "change_pin", "old_pin": "1234"}, InvalidRequest, "new_pin must be"),
]


@pytest.mark.parametrize(
    ("fields", "error", "words"), BAD_REQUESTS, ids=[str(b[0]) for b in BAD_REQUESTS]
)
def test_bad_requests_are_refused_clearly(
    fields: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        bank.parse_request(fields)


def test_a_transfer_cannot_be_built_without_a_destination() -> None:
    with pytest.raises(InvalidRequest, match="needs 'to'"):
        bank.Move("transfer", 100, "k")
    with pytest.raises(InvalidRequest):
        bank.Move("deposit", 100, "k", to=2)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"account": "1", "name": "x", "balance": "1.00"},
        {"account": 1, "name": "x", "balance": 100},
        {"account": 1, "name": "x", "balance": "-1.00"},
    ],
)
def test_odd_replies_are_bad_replies(fields: dict[str, Any]) -> None:
    with pytest.raises(PeerProtocolError) as info:
        bank.parse_reply("login", fields)
    assert info.value.code == "bad_reply"


def test_a_moved_reply_must_name_a_money_op_and_a_boolean_replayed() -> None:
    fields = dict(REPLIES[3][2])
    with pytest.raises(PeerProtocolError):
        bank.parse_reply("deposit", {**fields, "op": "login"})
    with pytest.raises(PeerProtocolError):
        bank.parse_reply("deposit", {**fields, "replayed": "no"})


def test_the_seed_statistics_lines() -> None:
    assert STATS.lab_lines(with_successful=True) == (
        "Successful transactions: 2\nTotal transactions: 3\nSuccess rate: 0.67\nError rate: 0.33\n"
    )
    assert STATS.lab_lines(with_successful=False).startswith("Total transactions: 3\n")
    assert STATS.one_line() == (
        "Successful transactions: 2 | Total transactions: 3 | Success rate: 0.67 | Error rate: 0.33"
    )
    empty = bank.BankStats(0, 0, 0)
    assert (empty.success_rate, empty.error_rate) == (0.0, 0.0)


def test_every_op_has_a_request_parser_and_a_reply_parser() -> None:
    assert set(bank.REQUEST_PARSERS) == set(bank.REPLY_PARSERS) == set(bank.OPS)


cents = st.integers(min_value=1, max_value=10**15 - 1)
keys = st.text(st.characters(codec="utf-8", categories=("L", "N", "P")), min_size=1, max_size=128)
accounts = st.integers(min_value=1, max_value=bank.MAX_ACCOUNT_ID)
moves = st.one_of(
    st.builds(bank.Move, st.sampled_from(["deposit", "withdraw"]), cents, keys),
    st.builds(lambda a, k, to: bank.Move("transfer", a, k, to), cents, keys, accounts),
)


@given(moves)
def test_money_requests_round_trip(move: bank.Move) -> None:
    assert bank.parse_request({"op": move.op, **move.to_json()}) == move


@given(
    st.builds(
        bank.Moved,
        st.sampled_from(bank.MONEY_OPS),
        accounts,
        cents,
        st.integers(min_value=0, max_value=10**15 - 1),
        keys,
        st.integers(min_value=1, max_value=2**63 - 1),
        st.booleans(),
        st.builds(
            bank.BankStats, st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9)
        ),
        st.none() | accounts,
    )
)
def test_money_replies_round_trip(moved: bank.Moved) -> None:
    assert bank.parse_reply(moved.op, moved.to_json()) == moved
