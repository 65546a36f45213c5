"""The exchange client's check of the server's reply: a pure function."""

from __future__ import annotations

from typing import Any

import pytest

from socklab.client.exchange import ExchangeAnswer, check_server_reply


def test_a_good_reply() -> None:
    reply = {"server_name": "S", "server_number": 10, "client_number": 30, "sum": 40}
    assert check_server_reply(reply, 30) == ExchangeAnswer("S", 10, 40)


def test_the_sum_is_computed_when_the_server_sends_none() -> None:
    assert check_server_reply({"server_name": "S", "server_number": 100}, 1).total == 101


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ({"server_name": "S", "server_number": 10, "sum": 41}, "sum 41 is not 30 + 10 = 40"),
        ({"server_name": "S", "server_number": 10, "sum": True}, "sum True"),
        ({"server_name": "S", "server_number": 0}, "0 is not in 1..100"),
        ({"server_name": "S", "server_number": 101}, "101 is not in 1..100"),
        ({"server_name": "S", "server_number": 10.0}, "must be an integer"),
        ({"server_name": "S", "server_number": False}, "must be an integer"),
        ({"server_name": "S"}, "must be an integer, got None"),
        ({"server_name": "  ", "server_number": 10}, "non-empty string"),
        ({"server_name": 5, "server_number": 10}, "non-empty string"),
    ],
)
def test_what_is_wrong_is_said(reply: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_server_reply(reply, 30)
    assert problem in str(caught.value)
