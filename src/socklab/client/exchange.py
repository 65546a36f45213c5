"""Reading the exchange server's reply (seed 000): a pure function, no I/O.

The lab's client exists to check what the server says: its name, a number in 1..100 and,
when it sends one, the sum of both numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from socklab.services.exchange import MAX_NUMBER, MIN_NUMBER


@dataclass(frozen=True, slots=True)
class ExchangeAnswer:
    server_name: str
    server_number: int
    total: int
    """The client's number plus the server's."""


def check_server_reply(reply: Mapping[str, Any], client_number: int) -> ExchangeAnswer:
    """The server's name, number and sum, after checking each.

    Raises ``ValueError`` saying what is wrong: a missing or empty name, a number that is
    not an integer in ``MIN_NUMBER..MAX_NUMBER``, or a sum that does not add up.
    """
    server_name = reply.get("server_name")
    server_number = reply.get("server_number")
    if not isinstance(server_name, str) or not server_name.strip():
        raise ValueError(f"server_name must be a non-empty string, got {server_name!r}")
    if isinstance(server_number, bool) or not isinstance(server_number, int):
        raise ValueError(f"server_number must be an integer, got {server_number!r}")
    if not MIN_NUMBER <= server_number <= MAX_NUMBER:
        raise ValueError(f"server_number {server_number} is not in {MIN_NUMBER}..{MAX_NUMBER}")
    total = client_number + server_number
    server_sum = reply.get("sum", total)
    if isinstance(server_sum, bool) or server_sum != total:
        raise ValueError(
            f"the server's sum {server_sum!r} is not {client_number} + {server_number} = {total}"
        )
    return ExchangeAnswer(server_name, server_number, total)
