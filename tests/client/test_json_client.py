"""``JsonClient`` reads replies through the protocol's envelope, over a real socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from helpers import HOST
from socklab.client.json_client import JsonClient
from socklab.errors import InsufficientFunds, PeerProtocolError, TransientFailure


@contextmanager
def replying(*replies: dict[str, Any]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A server on a free port that reads one request line per reply and sends the reply
    with the request's id; yields the port and the requests it got."""
    listener = socket.create_server((HOST, 0))
    got: list[dict[str, Any]] = []

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as lines:
                for reply in replies:
                    request = json.loads(lines.readline())
                    got.append(request)
                    conn.sendall(json.dumps({"id": request.get("id"), **reply}).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], got
    finally:
        thread.join(10)


def test_a_successful_reply_is_its_fields_without_the_envelope() -> None:
    with (
        replying({"ok": True, "lower": "a"}) as (port, got),
        JsonClient.connect(HOST, port) as client,
    ):
        assert client.request("convert", text="A") == {"lower": "a"}
    assert got == [{"op": "convert", "id": 1, "text": "A"}]


def test_a_replayed_refusal_says_so() -> None:
    error = {"code": "insufficient_funds", "message": "not enough", "replayed": True}
    fresh = {"code": "insufficient_funds", "message": "not enough"}
    with (
        replying({"ok": False, "error": error}, {"ok": False, "error": fresh}) as (port, _),
        JsonClient.connect(HOST, port) as client,
    ):
        with pytest.raises(InsufficientFunds) as first:
            client.request("withdraw", amount="1.00", key="k")
        with pytest.raises(InsufficientFunds) as second:
            client.request("withdraw", amount="1.00", key="k")
    assert first.value.replayed is True and first.value.message == "not enough"
    assert second.value.replayed is False


def test_a_transient_failure_is_its_class() -> None:
    error = {"code": "transient_failure", "message": "try again"}
    with (
        replying({"ok": False, "error": error}) as (port, _),
        JsonClient.connect(HOST, port) as client,
        pytest.raises(TransientFailure),
    ):
        client.request("deposit", amount="1.00", key="k")


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": False, "error": {}},
        {"ok": False, "error": {"code": 7, "message": "x"}},
        {"ok": False},
        {"ok": "yes"},
        {},
    ],
    ids=["empty-error", "numeric-code", "no-error", "ok-not-bool", "no-ok"],
)
def test_a_reply_that_is_not_an_envelope_is_a_protocol_error(reply: dict[str, Any]) -> None:
    with (
        replying(reply) as (port, _),
        JsonClient.connect(HOST, port) as client,
        pytest.raises(PeerProtocolError) as caught,
    ):
        client.request("stats")
    assert caught.value.code == "bad_reply"
