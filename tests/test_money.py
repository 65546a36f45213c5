"""Money at the edges: decimal text <-> integer cents, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socklab.errors import InvalidAmount
from socklab.money import MAX_PARSED_CENTS, format_cents, parse_amount


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("12.50", 1250),
        ("12.5", 1250),
        ("12", 1200),
        ("0.01", 1),
        ("0.1", 10),
        ("0", 0),
        ("0.00", 0),
        ("100", 10000),
        ("0.29", 29),  # 0.29 * 100 is 28.999999999999996 as a float
        ("1.10", 110),
        ("9999999999999.99", MAX_PARSED_CENTS),
    ],
)
def test_parse_amount(text: str, cents: int) -> None:
    assert parse_amount(text) == cents


@pytest.mark.parametrize(
    "text",
    ["", " ", "-1", "+1", "1.234", "1.", ".5", "1e3", "1E3", "1,000", "1_000", "1 000",
     "nan", "inf", "0x10", "١٢", "１２", "12.5.0", "$12", "12$", "10000000000000.00",
     "9" * 40, "1.2a"],
)  # fmt: skip
def test_parse_amount_rejects_what_is_not_an_amount(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text)


@pytest.mark.parametrize(
    "text",
    [" 5", "5 ", "\t5", "5\n", " 3.25\r\n", "05.00", "05", "007.00", "00", "00.50", "0012"],
)
def test_parse_amount_is_strict_about_spaces_and_leading_zeros(text: str) -> None:
    # What docs/bank.md allows: digits (no leading zeros), an optional dot, 1-2 decimals.
    with pytest.raises(InvalidAmount, match="leading zeros or spaces"):
        parse_amount(text)


@pytest.mark.parametrize("value", [None, 12, 12.5, b"12"])
def test_parse_amount_wants_text(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cents", "text"),
    [(1250, "12.50"), (0, "0.00"), (5, "0.05"), (100, "1.00"), (-5, "-0.05"), (-1250, "-12.50"),
     (123456789, "1234567.89")],
)  # fmt: skip
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text


@given(st.integers(min_value=0, max_value=MAX_PARSED_CENTS))
def test_format_then_parse_is_the_identity(cents: int) -> None:
    assert parse_amount(format_cents(cents)) == cents


@given(st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False))
def test_parse_agrees_with_decimal_arithmetic(amount: object) -> None:
    text = f"{amount:.2f}"
    assert format_cents(parse_amount(text)) == text


@pytest.mark.parametrize("text", ["-5", "-12.50", "-0.01"])
def test_a_negative_amount_is_named_as_such(text: str) -> None:
    with pytest.raises(InvalidAmount, match=r"^an amount must not be negative: give it without"):
        parse_amount(text)


@pytest.mark.parametrize("text", ["-", "--5", "-1.234", "-x"])
def test_other_signed_junk_gets_the_general_message(text: str) -> None:
    with pytest.raises(InvalidAmount, match=r"must look like 12 or 12\.50"):
        parse_amount(text)
