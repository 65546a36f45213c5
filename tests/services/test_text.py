"""The text service, called directly: every dialect's replies, its errors and its log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import captured_records
from socklab.errors import InvalidRequest, RequestRejected, UnknownOperation
from socklab.server.runtime import Listener
from socklab.services.base import ConnectionInfo
from socklab.services.text import (
    LINE_HELP,
    MAX_LOGGED_CHARS,
    TextService,
    TextSession,
    convert_case,
)

PEER = "('127.0.0.1', 48528)"


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The service's log records."""
    with captured_records("socklab.services.text") as captured:
        yield captured


@pytest.fixture
def session() -> TextSession:
    session = TextService().open_session(ConnectionInfo(peer=PEER))
    assert isinstance(session, TextSession)
    return session


# (text, lower, upper): what Python's full Unicode case mapping does.
CONVERSIONS = [
    ("hello world", "hello world", "HELLO WORLD"),
    ("", "", ""),
    ("MiXeD cAsE 42!", "mixed case 42!", "MIXED CASE 42!"),
    ("Straße", "straße", "STRASSE"),
    ("ΌΣΟΣ", "όσος", "ΌΣΟΣ"),
    ("ﬁne", "ﬁne", "FINE"),
    ("İstanbul", "i̇stanbul", "İSTANBUL"),
    ("ǅ", "ǆ", "Ǆ"),
    ("  two  spaces  ", "  two  spaces  ", "  TWO  SPACES  "),
    ("tab\there", "tab\there", "TAB\tHERE"),
    ("👍 ok", "👍 ok", "👍 OK"),
    ("日本語", "日本語", "日本語"),
    ("help", "help", "HELP"),
    ("upper abc", "upper abc", "UPPER ABC"),
]
CONVERSION_IDS = [repr(text) for text, _, _ in CONVERSIONS]


def lab_reply(lower: str, upper: str) -> str:
    return f"[Lower Case] {lower} [Upper Case] {upper}"


@pytest.mark.parametrize(("text", "lower", "upper"), CONVERSIONS, ids=CONVERSION_IDS)
def test_convert_case(text: str, lower: str, upper: str) -> None:
    result = convert_case(text)
    assert (result.lower, result.upper) == (lower, upper)
    assert result.as_text() == lab_reply(lower, upper)


@pytest.mark.parametrize(("text", "lower", "upper"), CONVERSIONS, ids=CONVERSION_IDS)
def test_lab_replies_like_the_lab_server_to_any_text(
    session: TextSession, text: str, lower: str, upper: str
) -> None:
    assert session.handle_lab(text) == lab_reply(lower, upper)


def test_the_lab_reply_is_exactly_the_seeds() -> None:
    session = TextService().open_session(ConnectionInfo(peer=PEER))
    assert session.handle_lab("hello world") == (
        "[Lower Case] hello world [Upper Case] HELLO WORLD"
    )


LINE_REPLIES = [
    ("hello world", lab_reply("hello world", "HELLO WORLD")),
    ("", lab_reply("", "")),
    ("help", LINE_HELP),
    ("?", LINE_HELP),
    ("HELP", LINE_HELP),
    ("  help ", LINE_HELP),
    ("upper straße", "STRASSE"),
    ("upper ", ""),
    ("lower ÀÉÎ Öz", "àéî öz"),
    ("convert help", lab_reply("help", "HELP")),
    ("convert upper x", lab_reply("upper x", "UPPER X")),
    ("upper", lab_reply("upper", "UPPER")),
    ("Upper case letters", lab_reply("upper case letters", "UPPER CASE LETTERS")),
    ("uppercase", lab_reply("uppercase", "UPPERCASE")),
    ("help me", lab_reply("help me", "HELP ME")),
]


@pytest.mark.parametrize(("line", "reply"), LINE_REPLIES, ids=[repr(c[0]) for c in LINE_REPLIES])
def test_line_replies(session: TextSession, line: str, reply: str) -> None:
    assert session.handle_line(line) == reply


JSON_REPLIES: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"text": "Hi"}, {"lower": "hi", "upper": "HI"}),
    ({"op": "convert", "text": "Straße"}, {"lower": "straße", "upper": "STRASSE"}),
    ({"op": "convert", "text": ""}, {"lower": "", "upper": ""}),
    ({"op": "upper", "text": "straße"}, {"upper": "STRASSE"}),
    ({"op": "lower", "text": "ÀÉ"}, {"lower": "àé"}),
    ({"op": "convert", "text": "x", "id": 7}, {"lower": "x", "upper": "X"}),
]


@pytest.mark.parametrize(
    ("request_", "reply"),
    JSON_REPLIES,
    ids=["op-optional", "convert", "empty", "upper", "lower", "id-left-to-the-server"],
)
def test_json_replies(
    session: TextSession, request_: dict[str, Any], reply: dict[str, str]
) -> None:
    assert session.handle_json(request_) == reply


JSON_ERRORS = [
    pytest.param({}, InvalidRequest, "needs a 'text' field", id="empty"),
    pytest.param({"op": "convert"}, InvalidRequest, "needs a 'text' field", id="no-text"),
    pytest.param({"text": 5}, InvalidRequest, "'text' must be a string, not a number", id="int"),
    pytest.param({"text": 1.5}, InvalidRequest, "not a number", id="float"),
    pytest.param({"text": None}, InvalidRequest, "not null", id="null"),
    pytest.param({"text": True}, InvalidRequest, "not a boolean", id="bool"),
    pytest.param({"text": ["a"]}, InvalidRequest, "not an array", id="array"),
    pytest.param({"text": {"a": 1}}, InvalidRequest, "not an object", id="object"),
    pytest.param({"op": "shout", "text": "x"}, UnknownOperation, "unknown op 'shout'", id="op"),
    pytest.param({"op": 3, "text": "x"}, UnknownOperation, "unknown op '3'", id="int-op"),
    pytest.param({"op": None, "text": "x"}, UnknownOperation, "unknown op 'None'", id="null-op"),
    pytest.param(
        {"op": "UPPER", "text": "x"}, UnknownOperation, "knows convert, upper, lower", id="op-case"
    ),
]


@pytest.mark.parametrize(("request_", "error", "message"), JSON_ERRORS)
def test_json_errors(
    session: TextSession, request_: dict[str, Any], error: type[RequestRejected], message: str
) -> None:
    with pytest.raises(error) as raised:
        session.handle_json(request_)
    assert type(raised.value) is error
    assert message in raised.value.message
    assert raised.value.code in ("invalid_request", "unknown_op")


def test_farewell_converts_the_disconnect_message_like_the_lab_server(session: TextSession) -> None:
    assert session.farewell() == "[Lower Case] !disconnect [Upper Case] !DISCONNECT"


def test_a_listener_without_a_port_takes_the_seeds() -> None:
    listener = Listener(TextService(), "127.0.0.1", None)
    assert (listener.service.name, listener.port) == ("text", 5050)


def test_logs_the_conversation_like_the_lab(
    session: TextSession, records: list[logging.LogRecord]
) -> None:
    session.handle_lab("hello world")
    session.handle_line("upper straße")
    session.handle_json({"text": "ok"})
    session.farewell()
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "Message received: hello world"),
        (logging.INFO, f"[{PEER}] HELLO WORLD"),
        (logging.INFO, "Message received: straße"),
        (logging.INFO, f"[{PEER}] STRASSE"),
        (logging.INFO, "Message received: ok"),
        (logging.INFO, f"[{PEER}] OK"),
        (logging.INFO, "Message received: !DISCONNECT"),
        (logging.INFO, f"[{PEER}] !DISCONNECT"),
    ]
    assert {getattr(r, "function", None) for r in records} == {"handle_client"}


def test_help_and_errors_log_no_conversation(
    session: TextSession, records: list[logging.LogRecord]
) -> None:
    session.handle_line("help")
    with pytest.raises(InvalidRequest):
        session.handle_json({"text": 1})
    assert records == []


def test_long_text_is_shortened_in_the_log_but_not_in_the_reply(
    session: TextSession, records: list[logging.LogRecord]
) -> None:
    text = "ab" * 10_000
    assert session.handle_lab(text) == lab_reply(text, text.upper())
    logged = records[0].getMessage()
    assert logged.startswith("Message received: abab")
    assert logged.endswith("... (20000 characters)")
    assert len(logged) < MAX_LOGGED_CHARS + 60
