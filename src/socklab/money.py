"""Money at the edges: decimal text <-> integer cents. Inside socklab money is ``int`` cents.

``parse_amount`` is strict on purpose (ASCII digits without leading zeros, an optional
dot and one or two decimals; no whitespace, sign, exponent, separators or other digits):
a bank should refuse what it cannot read unambiguously rather than guess.
"""

from __future__ import annotations

import re

from socklab.errors import InvalidAmount

MAX_PARSED_CENTS = 10**15 - 1
"""Far above any sane ledger maximum; bounds the work done on hostile input."""

_AMOUNT_RE = re.compile(r"(0|[1-9][0-9]{0,15})(?:\.([0-9]{1,2}))?")


def parse_amount(text: str) -> int:
    """``"12.50"`` -> ``1250``, ``"0.07"`` -> ``7``, ``"5"`` -> ``500``. ``"0"`` parses
    to 0 (whether 0 is allowed is the ledger's rule).

    Raises ``InvalidAmount`` for anything else (a negative amount with a message of its
    own): empty, whitespace anywhere, leading zeros
    (``"05.00"``), signs, a dot without decimals, more than two decimals, exponents,
    separators, non-ASCII digits, values above ``MAX_PARSED_CENTS``.
    """
    if not isinstance(text, str):
        raise InvalidAmount("an amount must be text like 12.50")
    match = _AMOUNT_RE.fullmatch(text)
    if match is None:
        if text[:1] == "-" and _AMOUNT_RE.fullmatch(text[1:]):
            raise InvalidAmount(
                "an amount must not be negative: give it without a sign, like 12.50"
            )
        raise InvalidAmount(
            "an amount must look like 12 or 12.50 (digits without leading zeros or spaces,"
            " at most 2 decimals)"
        )
    units, decimals = match.group(1), match.group(2) or ""
    cents = int(units) * 100 + int(decimals.ljust(2, "0"))
    if cents > MAX_PARSED_CENTS:
        raise InvalidAmount("the amount is too large")
    return cents


def format_cents(cents: int) -> str:
    """``1250`` -> ``"12.50"``, ``-5`` -> ``"-0.05"``."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{units}.{rest:02d}"
