"""The numbers service, called directly: parsing, rules, every dialect's replies and errors,
the digit limit, and big checks in the worker pool (driven with ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest

from helpers import captured_records, running_server
from socklab.errors import InvalidRequest, RequestRejected, ServerBusy, TooLarge, UnknownOperation
from socklab.server.runtime import Listener
from socklab.services.base import ConnectionInfo
from socklab.services.numbers import (
    DEFAULT_MAX_DIGITS,
    LINE_HELP,
    Checked,
    Number,
    NumbersService,
    NumbersSession,
    number_from_json,
    parse_number,
)

PEER = "('127.0.0.1', 48528)"
M521 = 2**521 - 1  # prime, 157 digits
M3217 = 2**3217 - 1  # prime, 969 digits: ~0.1 s to check
M523 = 2**523 - 1  # composite without small factors, a strong pseudoprime to base 2
BIG_PRIME = "1" + "0" * 9_994 + "33603"  # 10**9999 + 33603, the least 10,000-digit prime


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The service's log records."""
    with captured_records("socklab.services.numbers") as captured:
        yield captured


def open_session(service: NumbersService | None = None) -> NumbersSession:
    session = (service or NumbersService()).open_session(ConnectionInfo(peer=PEER))
    assert isinstance(session, NumbersSession)
    return session


@pytest.fixture
def session() -> NumbersSession:
    return open_session()


# -- parsing -----------------------------------------------------------------------------

PARSED = [
    ("121", "121", False),
    (" 97 ", "97", False),
    ("\t5\r\n", "5", False),
    ("+7", "7", False),
    ("-12", "12", True),
    ("0", "0", False),
    ("-0", "0", False),
    ("+0", "0", False),
    ("000", "0", False),
    ("0110", "110", False),
    ("-007", "7", True),
    ("1" + "0" * 40, "1" + "0" * 40, False),
]


@pytest.mark.parametrize(("text", "digits", "negative"), PARSED, ids=[repr(p[0]) for p in PARSED])
def test_parse_number(text: str, digits: str, negative: bool) -> None:
    assert parse_number(text) == Number(digits, negative)


NOT_INTEGERS = ["", "   ", "12.5", "1e3", "0x1f", "1_000", "1,000", "١٢٣", "²", "½", "12a",
                "+", "-", "--1", "+-1", "1 2", "inf", "NaN", "٣"]  # fmt: skip


@pytest.mark.parametrize("text", NOT_INTEGERS, ids=repr)
def test_parse_number_refuses_what_is_not_an_integer(text: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_number(text)
    assert type(raised.value) is InvalidRequest
    assert "not an integer" in raised.value.message or "empty" in raised.value.message


def test_the_error_message_quotes_a_long_input_briefly() -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_number("x" * 10_000)
    assert len(raised.value.message) < 80


@pytest.mark.parametrize(
    ("text", "max_digits"),
    [
        ("9" * 10_001, DEFAULT_MAX_DIGITS),
        ("-" + "9" * 10_001, DEFAULT_MAX_DIGITS),
        ("100000", 5),
        ("1" * 5_000, 4_300),
    ],
    ids=["10001-digits", "negative-10001-digits", "6-digits-limit-5", "past-int-str-limit"],
)
def test_parse_number_refuses_too_many_digits(text: str, max_digits: int) -> None:
    with pytest.raises(TooLarge) as raised:
        parse_number(text, max_digits)
    assert f"the limit is {max_digits}" in raised.value.message
    assert raised.value.code == "too_large"


def test_leading_zeros_do_not_count_toward_the_limit() -> None:
    assert parse_number("0" * 50_000 + "12345", 5) == Number("12345")


def test_numbers_longer_than_pythons_int_string_limit_are_parsed() -> None:
    number = parse_number("7" * 10_000)
    assert number.value % 10**6 == 777_777  # gmpy2 parses it; int("7" * 10_000) would raise
    assert len(number.digits) == 10_000


@pytest.mark.parametrize(
    ("digits", "negative"),
    [("", False), ("12a", False), ("012", False), ("0", True), ("١", False)],
    ids=["empty", "letters", "leading-zero", "negative-zero", "non-ascii"],
)
def test_a_number_cannot_be_built_invalid(digits: str, negative: bool) -> None:
    with pytest.raises(ValueError):
        Number(digits, negative)


JSON_NUMBERS: list[tuple[Any, Number]] = [
    (121, Number("121")),
    (-121, Number("121", negative=True)),
    (0, Number("0")),
    ("0110", Number("110")),
    (" -5 ", Number("5", negative=True)),
    (2**521 - 1, Number(str(M521))),
    (10**4000, Number("1" + "0" * 4000)),
]


@pytest.mark.parametrize(
    ("value", "number"),
    JSON_NUMBERS,
    ids=["int", "negative", "zero", "string", "padded-string", "M521", "4001-digit-int"],
)
def test_number_from_json(value: Any, number: Number) -> None:
    assert number_from_json(value) == number


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "not a boolean"),
        (False, "not a boolean"),
        (1.0, "not a number"),
        (12.5, "not a number"),
        (None, "not null"),
        ([1], "not an array"),
        ({"n": 1}, "not an object"),
        ("12.5", "not an integer"),
        ("", "empty"),
    ],
    ids=["true", "false", "float-1.0", "float", "null", "array", "object", "decimal", "empty"],
)
def test_number_from_json_refuses_other_types(value: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        number_from_json(value)
    assert message in raised.value.message


@pytest.mark.parametrize(
    "value",
    [10**10_000, -(10**10_000), 10**100_000, "1" + "0" * 10_000],
    ids=["10001-digit-int", "negative", "100001-digit-int", "10001-digit-string"],
)
def test_number_from_json_refuses_too_many_digits(value: Any) -> None:
    with pytest.raises(TooLarge):
        number_from_json(value)


def test_a_json_int_just_under_the_limit_is_accepted() -> None:
    assert len(number_from_json(10**9_999).digits) == 10_000
    assert len(number_from_json(10**10_000 - 1).digits) == 10_000


# -- the palindrome rule -----------------------------------------------------------------

PALINDROMES = [
    ("121", True),
    ("12321", True),
    ("1221", True),
    ("11", True),
    ("7", True),
    ("0", True),
    ("-0", True),
    ("10", False),
    ("12", False),
    ("0110", False),
    ("010", False),
    ("-121", False),
    ("-7", False),
    ("9" * 10_000, True),
    ("1" + "0" * 9_998 + "2", False),
]


@pytest.mark.parametrize(
    ("text", "palindrome"),
    PALINDROMES,
    ids=[p[0][:12] + ("..." * (len(p[0]) > 12)) for p in PALINDROMES],
)
def test_palindrome_rule(session: NumbersSession, text: str, palindrome: bool) -> None:
    assert parse_number(text).is_palindrome is palindrome
    assert session.handle_line(f"palindrome {text}") == f"[Palindrome] {palindrome}"


# -- replies, line and lab ---------------------------------------------------------------

LINE_REPLIES = [
    # The seed's figure: the numbers its lab client sent.
    ("121", "[Prime] False [Palindrome] True"),
    ("10", "[Prime] False [Palindrome] False"),
    ("22", "[Prime] False [Palindrome] True"),
    ("30", "[Prime] False [Palindrome] False"),
    ("99", "[Prime] False [Palindrome] True"),
    ("23", "[Prime] True [Palindrome] False"),
    ("12", "[Prime] False [Palindrome] False"),
    ("11", "[Prime] True [Palindrome] True"),
    # Edges.
    ("0", "[Prime] False [Palindrome] True"),
    ("1", "[Prime] False [Palindrome] True"),
    ("2", "[Prime] True [Palindrome] True"),
    ("-7", "[Prime] False [Palindrome] False"),
    ("0131", "[Prime] True [Palindrome] True"),
    ("2147483647", "[Prime] True [Palindrome] False"),
    ("3317044064679887385961981", "[Prime] False [Palindrome] False"),
    (str(M521), "[Prime] True [Palindrome] False"),
    ("  97  ", "[Prime] True [Palindrome] False"),
    # One question.
    ("prime 97", "[Prime] True"),
    ("prime 1", "[Prime] False"),
    ("PRIME 97", "[Prime] True"),
    ("  prime \t 2 ", "[Prime] True"),
    ("palindrome 121", "[Palindrome] True"),
    ("Palindrome 120", "[Palindrome] False"),
    ("check 11", "[Prime] True [Palindrome] True"),
    # Help.
    ("help", LINE_HELP),
    ("?", LINE_HELP),
    ("HELP", LINE_HELP),
]


@pytest.mark.parametrize(
    ("line", "reply"), LINE_REPLIES, ids=[repr(r[0][:20]) for r in LINE_REPLIES]
)
def test_line_replies(session: NumbersSession, line: str, reply: str) -> None:
    assert session.handle_line(line) == reply


@pytest.mark.parametrize(
    ("line", "reply"), LINE_REPLIES, ids=[repr(r[0][:20]) for r in LINE_REPLIES]
)
def test_lab_replies_are_the_line_replies(session: NumbersSession, line: str, reply: str) -> None:
    assert session.handle_lab(line) == reply


def test_the_lab_disconnect_gets_the_default_farewell(session: NumbersSession) -> None:
    assert session.farewell() == "[DISCONNECTED]"


LINE_ERRORS = [
    ("", InvalidRequest, "empty"),
    ("   ", InvalidRequest, "empty"),
    ("hello", InvalidRequest, "'hello' is not an integer"),
    ("12.5", InvalidRequest, "'12.5' is not an integer"),
    ("prime", InvalidRequest, "'prime' is not an integer"),
    ("prime x", InvalidRequest, "'x' is not an integer"),
    ("prime 9 9", InvalidRequest, "usage"),
    ("cube 8", UnknownOperation, "unknown op 'cube'"),
    ("12 34", UnknownOperation, "unknown op '12'"),
    ("9" * 10_001, TooLarge, "10001 digits; the limit is 10000"),
    ("prime " + "9" * 10_001, TooLarge, "the limit is 10000"),
]


@pytest.mark.parametrize(
    ("line", "error", "message"), LINE_ERRORS, ids=[repr(e[0][:12]) for e in LINE_ERRORS]
)
def test_line_and_lab_errors(
    session: NumbersSession, line: str, error: type[RequestRejected], message: str
) -> None:
    for handle in (session.handle_line, session.handle_lab):
        with pytest.raises(error) as raised:
            handle(line)
        assert type(raised.value) is error
        assert message in raised.value.message


# -- replies, json -----------------------------------------------------------------------

JSON_REPLIES: list[tuple[dict[str, Any], dict[str, bool]]] = [
    ({"number": 121}, {"prime": False, "palindrome": True}),
    ({"op": "check", "number": 97}, {"prime": True, "palindrome": False}),
    ({"op": "prime", "number": 97}, {"prime": True}),
    ({"op": "palindrome", "number": 97}, {"palindrome": False}),
    ({"op": "palindrome", "number": "0110"}, {"palindrome": False}),
    ({"number": "-121"}, {"prime": False, "palindrome": False}),
    ({"number": -121}, {"prime": False, "palindrome": False}),
    ({"number": 0}, {"prime": False, "palindrome": True}),
    ({"number": "11", "id": 3}, {"prime": True, "palindrome": True}),
    ({"op": "prime", "number": str(M521)}, {"prime": True}),
    ({"op": "prime", "number": M521}, {"prime": True}),
    ({"number": "1" + "0" * 9_998 + "1"}, {"prime": False, "palindrome": True}),
]
JSON_REPLY_IDS = ["op-optional", "check", "prime", "palindrome", "string", "negative-string",
                  "negative-int", "zero", "id-left-to-the-server", "M521-string", "M521-int",
                  "10000-digits"]  # fmt: skip


@pytest.mark.parametrize(("request_", "reply"), JSON_REPLIES, ids=JSON_REPLY_IDS)
def test_json_replies(session: NumbersSession, request_: dict[str, Any], reply: Any) -> None:
    assert session.handle_json(request_) == reply


JSON_ERRORS = [
    pytest.param({}, InvalidRequest, "needs a 'number'", id="empty"),
    pytest.param({"op": "prime"}, InvalidRequest, "needs a 'number'", id="no-number"),
    pytest.param({"number": True}, InvalidRequest, "not a boolean", id="bool"),
    pytest.param({"number": 7.0}, InvalidRequest, "not a number", id="float"),
    pytest.param({"number": None}, InvalidRequest, "not null", id="null"),
    pytest.param({"number": [7]}, InvalidRequest, "not an array", id="array"),
    pytest.param({"number": "7.5"}, InvalidRequest, "not an integer", id="decimal-string"),
    pytest.param({"number": "seven"}, InvalidRequest, "not an integer", id="word"),
    pytest.param({"op": "cube", "number": 7}, UnknownOperation, "unknown op 'cube'", id="op"),
    pytest.param({"op": 7, "number": 7}, UnknownOperation, "unknown op '7'", id="int-op"),
    pytest.param({"op": "PRIME", "number": 7}, UnknownOperation, "knows check", id="op-case"),
    pytest.param({"number": 10**10_000}, TooLarge, "the limit is 10000", id="10001-digit-int"),
    pytest.param({"number": "9" * 10_001}, TooLarge, "the limit is 10000", id="10001-digit-str"),
]


@pytest.mark.parametrize(("request_", "error", "message"), JSON_ERRORS)
def test_json_errors(
    session: NumbersSession, request_: dict[str, Any], error: type[RequestRejected], message: str
) -> None:
    with pytest.raises(error) as raised:
        session.handle_json(request_)
    assert type(raised.value) is error
    assert message in raised.value.message


def test_checked_renders_only_the_questions_asked() -> None:
    assert Checked(prime=True, palindrome=False).as_text() == "[Prime] True [Palindrome] False"
    assert Checked(prime=True).as_text() == "[Prime] True"
    assert Checked(palindrome=True).as_json() == {"palindrome": True}


# -- the digit limit ---------------------------------------------------------------------


def test_a_ten_thousand_digit_number_is_accepted_and_a_longer_one_refused() -> None:
    session = open_session()
    accepted = "1" + "0" * 9_998 + "1"  # 10**9999 + 1, divisible by 11
    assert session.handle_line(accepted) == "[Prime] False [Palindrome] True"
    with pytest.raises(TooLarge, match="10001 digits; the limit is 10000"):
        session.handle_line("1" + "0" * 9_999 + "1")


def test_the_digit_limit_is_configurable() -> None:
    session = open_session(NumbersService(max_digits=5))
    assert session.handle_line("prime 99991") == "[Prime] True"
    assert session.handle_line("-99999") == "[Prime] False [Palindrome] False"
    with pytest.raises(TooLarge, match="6 digits; the limit is 5"):
        session.handle_line("100000")
    with pytest.raises(TooLarge):
        session.handle_json({"number": 100_000})


@pytest.mark.parametrize(
    "kwargs",
    [{"max_digits": 0}, {"workers": 0}, {"max_pending": -1}],
    ids=["max_digits", "workers", "max_pending"],
)
def test_the_constructor_refuses_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        NumbersService(**kwargs)


def test_a_listener_without_a_port_takes_the_seeds() -> None:
    listener = Listener(NumbersService(), "127.0.0.1", None)
    assert (listener.service.name, listener.port) == ("numbers", 5051)


# -- logging -----------------------------------------------------------------------------


def test_logs_each_message_like_the_lab(
    session: NumbersSession, records: list[logging.LogRecord]
) -> None:
    session.handle_lab("121")
    session.handle_line("prime 97")
    session.handle_json({"number": 11})
    session.handle_json({"number": "0110"})
    with pytest.raises(InvalidRequest):
        session.handle_line("hello")
    with pytest.raises(InvalidRequest):
        session.handle_json({"number": True})
    session.handle_json({"number": 10**5000})
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "Message received: 121"),
        (logging.INFO, "Message received: prime 97"),
        (logging.INFO, "Message received: 11"),
        (logging.INFO, "Message received: 0110"),
        (logging.INFO, "Message received: hello"),
        (logging.INFO, "Message received: true"),
        (logging.INFO, "Message received: 1" + "0" * 99 + "... (5001 characters)"),
    ]
    assert {getattr(r, "function", None) for r in records} == {"handle_client"}


def test_a_long_number_is_shortened_in_the_log(
    session: NumbersSession, records: list[logging.LogRecord]
) -> None:
    session.handle_line("9" * 10_000)
    assert records[0].getMessage().endswith("... (10000 characters)")
    assert len(records[0].getMessage()) < 160


# -- big numbers in the worker pool ------------------------------------------------------


def run(coro: Awaitable[Any], timeout_s: float = 60.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


async def started(service: NumbersService) -> NumbersService:
    await service.start()
    return service


def test_big_numbers_are_checked_in_the_pool_without_blocking_the_loop() -> None:
    async def scenario() -> None:
        service = await started(NumbersService(offload_digits=100, workers=1))
        try:
            session = open_session(service)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0)  # one turn of the loop per tick: no clock
                    ticks += 1

            ticking = asyncio.create_task(ticker())
            pending = session.handle_line(str(M3217))
            assert inspect.isawaitable(pending)
            # Checked in this task (blocking the loop), the answer would come before the
            # ticker's first turn; from the pool, only after a few turns at the least.
            assert await pending == "[Prime] True [Palindrome] False"
            assert ticks > 0  # the loop kept running while the worker checked
            ticking.cancel()

            reply = session.handle_json({"op": "prime", "number": str(M3217)})
            assert inspect.isawaitable(reply)
            assert await reply == {"prime": True}
            lab = session.handle_lab(f"prime {M523}")
            assert inspect.isawaitable(lab)
            assert await lab == "[Prime] False"
            assert service.pending == 0
        finally:
            await service.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("97", "[Prime] True [Palindrome] False"),
        (str(M521), "[Prime] True [Palindrome] False"),
        ("2" + "0" * 300, "[Prime] False [Palindrome] False"),
        ("1" + "0" * 299 + "1", "[Prime] False [Palindrome] True"),
        ("-" + str(M3217), "[Prime] False [Palindrome] False"),
        (f"palindrome {M3217}", "[Palindrome] False"),
    ],
    ids=["small", "at-the-threshold", "even", "small-factor", "negative", "palindrome-only"],
)
def test_what_is_cheap_is_answered_at_once_even_with_a_pool(line: str, reply: str) -> None:
    async def scenario() -> None:
        service = await started(NumbersService(offload_digits=157, workers=1))
        try:
            assert open_session(service).handle_line(line) == reply
        finally:
            await service.stop()

    run(scenario())


def test_a_service_that_was_not_started_checks_inline() -> None:
    session = open_session(NumbersService(offload_digits=10))
    assert session.handle_line(str(M3217)) == "[Prime] True [Palindrome] False"
    assert session.handle_json({"number": str(M3217)}) == {"prime": True, "palindrome": False}


def test_a_full_queue_answers_server_busy() -> None:
    async def scenario() -> None:
        service = await started(NumbersService(offload_digits=100, workers=1, max_pending=1))
        try:
            session = open_session(service)
            first = session.handle_line(str(M3217))
            second = session.handle_json({"number": str(M3217)})
            assert inspect.isawaitable(first) and inspect.isawaitable(second)
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert results[0] == "[Prime] True [Palindrome] False"
            assert isinstance(results[1], ServerBusy)
            assert results[1].code == "server_busy"
            # The queue drains: the next one goes through.
            again = session.handle_line(str(M3217))
            assert inspect.isawaitable(again)
            assert await again == "[Prime] True [Palindrome] False"
        finally:
            await service.stop()

    run(scenario())


def test_stop_and_start_are_idempotent_and_a_stopped_service_checks_inline() -> None:
    async def scenario() -> None:
        service = NumbersService(offload_digits=100, workers=1)
        await service.stop()  # never started
        await service.start()
        await service.start()
        await service.stop()
        await service.stop()
        assert open_session(service).handle_line(f"prime {M3217}") == "[Prime] True"

    run(scenario())


# -- over a real socket: pooled replies keep their order ---------------------------------


def test_pipelined_json_replies_keep_their_order_when_some_are_pooled() -> None:
    requests = [
        {"id": 1, "op": "prime", "number": str(M3217)},
        {"id": 2, "number": 121},
        {"id": 3, "op": "prime", "number": str(M523)},
        {"id": 4, "op": "palindrome", "number": "12321"},
        {"id": 5, "number": "9" * 10_001},
    ]
    payload = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    service = NumbersService(offload_digits=100, workers=1)
    with running_server(service) as server, server.connect(timeout_s=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        replies = [json.loads(line) for line in recv_lines(sock)]
    assert replies == [
        {"id": 1, "ok": True, "prime": True},
        {"id": 2, "ok": True, "prime": False, "palindrome": True},
        {"id": 3, "ok": True, "prime": False},
        {"id": 4, "ok": True, "palindrome": True},
        {
            "id": 5,
            "ok": False,
            "error": {
                "code": "too_large",
                "message": "the number has 10001 digits; the limit is 10000",
            },
        },
    ]


def recv_lines(sock: socket.socket) -> list[bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data.splitlines()
