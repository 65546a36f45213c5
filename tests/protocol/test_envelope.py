"""The json envelope: ids, success and error replies, and reading them back."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from socklab.errors import InsufficientFunds, PeerProtocolError, RequestRejected
from socklab.protocol import envelope


@pytest.mark.parametrize("value", [None, 0, -5, 2**70, "", "x" * 128, "a-b"])
def test_ids_that_can_be_echoed(value: object) -> None:
    assert envelope.check_request_id(value) == value


@pytest.mark.parametrize(
    "value", [True, 1.5, math.nan, math.inf, "x" * 129, [1], {"a": 1}], ids=repr
)
def test_ids_that_cannot(value: object) -> None:
    with pytest.raises(PeerProtocolError) as info:
        envelope.check_request_id(value)
    assert info.value.code == "bad_request"


def test_requests_and_replies() -> None:
    assert envelope.request("convert", 3, {"text": "hi"}) == {
        "op": "convert",
        "id": 3,
        "text": "hi",
    }
    assert envelope.request("stats", None, {}) == {"op": "stats"}
    assert envelope.ok_reply(3, {"upper": "HI"}) == {"id": 3, "ok": True, "upper": "HI"}
    assert envelope.ok_reply(None, {}) == {"ok": True}
    assert envelope.error_reply("a", "bad_request", "no") == {
        "id": "a",
        "ok": False,
        "error": {"code": "bad_request", "message": "no"},
    }
    refusal = InsufficientFunds("not enough", replayed=True)
    assert envelope.rejection_reply(None, refusal) == {
        "ok": False,
        "error": {"code": "insufficient_funds", "message": "not enough", "replayed": True},
    }


def test_unwrap_returns_the_fields_of_a_success() -> None:
    assert envelope.unwrap({"id": 1, "ok": True, "x": 2}, 1, "h:1") == {"x": 2}


def test_unwrap_raises_the_named_refusal_and_keeps_replayed() -> None:
    reply = envelope.error_reply(4, "insufficient_funds", "short", replayed=True)
    with pytest.raises(InsufficientFunds, match="short") as info:
        envelope.unwrap(reply, 4, "h:1")
    assert info.value.replayed is True
    with pytest.raises(RequestRejected) as other:
        envelope.unwrap(envelope.error_reply(4, "brand_new", "?"), 4, "h:1")
    assert (other.value.code, other.value.replayed) == ("brand_new", False)


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ({"id": 2, "ok": True}, "answered request 2, not 1"),
        ({"ok": True}, "answered request None, not 1"),
        ({"id": 1}, "not a json envelope"),
        ({"id": 1, "ok": False}, "not a json envelope"),
        ({"id": 1, "ok": False, "error": {"code": 5, "message": "m"}}, "not a json envelope"),
        ({"id": 1, "ok": "yes"}, "not a json envelope"),
    ],
)
def test_unwrap_refuses_what_is_not_an_answer(reply: dict[str, Any], words: str) -> None:
    with pytest.raises(PeerProtocolError, match=words) as info:
        envelope.unwrap(reply, 1, "h:1")
    assert info.value.code == "bad_reply"


def test_the_load_generator_prefix_makes_a_valid_request() -> None:
    body = b'"op":"convert","text":"hi"}'
    assert json.loads(envelope.id_prefix(12) + body) == {"id": 12, "op": "convert", "text": "hi"}


def test_the_error_mark_is_how_an_encoded_error_reply_reads() -> None:
    from socklab.wire.framing import encode_json

    assert envelope.ERROR_MARK in encode_json(envelope.error_reply(3, "busy", "later"))
    assert envelope.ERROR_MARK not in encode_json(envelope.ok_reply(3, {"ok_false": "ok"}))
