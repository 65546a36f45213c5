"""``JsonClient`` against a real socklab server: refusals, a closed link, silence, and a
raw socket that answers nonsense."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import HOST, running_server
from socklab.client.json_client import JsonClient
from socklab.errors import (
    DropConnection,
    InsufficientFunds,
    LinkBroken,
    LinkClosed,
    LinkTimeout,
    PeerProtocolError,
)
from socklab.server.runtime import Limits
from socklab.services.base import ConnectionInfo, Service, Session

# -- JsonClient against a real server ----------------------------------------------------


class TellerSession(Session):
    """json ops: echo, refuse (insufficient funds), drop (closes), hold (never answers)."""

    def handle_json(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "echo":
            return {"value": request.get("value")}
        if op == "refuse":
            raise InsufficientFunds("not today")
        if op == "drop":
            raise DropConnection
        if op == "hold":
            return asyncio.Event().wait()  # no reply, ever
        raise AssertionError(op)


class TellerService(Service):
    name = "teller"

    def open_session(self, conn: ConnectionInfo) -> Session:
        return TellerSession()


def test_requests_and_replies_match_by_id_and_a_refusal_keeps_the_connection() -> None:
    with (
        running_server(TellerService()) as server,
        JsonClient.connect(HOST, server.port, timeout_s=30) as client,
    ):
        assert client.request("echo", value="a") == {"value": "a"}
        with pytest.raises(InsufficientFunds, match="not today"):
            client.request("refuse")
        assert client.request("echo", value=[1, 2]) == {"value": [1, 2]}


def test_a_server_that_closes_is_a_broken_link_and_the_client_is_closed() -> None:
    with (
        running_server(TellerService()) as server,
        JsonClient.connect(HOST, server.port, timeout_s=30) as client,
    ):
        with pytest.raises(LinkBroken, match=f"the server at {HOST}:{server.port} closed"):
            client.request("drop")
        with pytest.raises(LinkClosed):
            client.request("echo", value=1)


def test_a_silent_server_is_a_timeout() -> None:
    # The held request never ends: the server's stop aborts it after a short grace.
    with (
        running_server(TellerService(), Limits(shutdown_grace_s=0.1)) as server,
        JsonClient.connect(HOST, server.port, timeout_s=0.2) as client,
    ):
        with pytest.raises(LinkTimeout, match=r"no reply from .* within 0.2 s"):
            client.request("hold")
        with pytest.raises(LinkClosed):  # the connection is out of step: closed
            client.request("echo", value=1)


def test_nothing_listening_is_a_broken_link() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        with pytest.raises(LinkBroken, match=f"cannot connect to {HOST}:{port}"):
            JsonClient.connect(HOST, port, timeout_s=5)


@contextlib.contextmanager
def raw_server(answer: bytes) -> Iterator[int]:
    """A server that answers any request with ``answer``, then waits for the client to go."""
    listener = socket.create_server((HOST, 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)
                conn.recv(65536)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (b"OK balance 10.00\n", "sent an invalid reply"),
        (b'{"id": 7, "ok": true}\n', "answered request 7, not 1"),
        (b'{"id": 1, "okay": true}\n', "not a json envelope"),
    ],
    ids=["not-json", "other-id", "no-ok"],
)
def test_a_reply_that_makes_no_sense_from_a_real_socket(answer: bytes, complaint: str) -> None:
    with (
        raw_server(answer) as port,
        JsonClient.connect(HOST, port, timeout_s=30) as client,
        pytest.raises(PeerProtocolError, match=complaint),
    ):
        client.request("echo", value=1)
