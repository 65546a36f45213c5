"""Clients that do not read their replies, over real sockets: their unsent replies stay
bounded, they are closed for what they do (not for an "incomplete message"), and a
closing connection whose replies never drain is aborted, so its slot comes back."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from helpers import RunningServer, captured_records, running_server
from socklab.server.runtime import Connection, Limits
from socklab.services.base import ConnectionInfo, Service, Session

WAIT_S = 10.0
REPLY_BYTES = 8000
PER_TURN = 4


class BigReplySession(Session):
    def handle_json(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"value": "r" * REPLY_BYTES}

    def handle_line(self, line: str) -> str:
        return "r" * REPLY_BYTES


class BigReplyService(Service):
    """Answers every request with about ``REPLY_BYTES`` bytes."""

    name = "big"

    def open_session(self, conn: ConnectionInfo) -> Session:
        return BigReplySession()


def only_connection(server: RunningServer) -> Connection:
    (conn,) = server.listener.connections
    return conn


def non_reader(server: RunningServer) -> socket.socket:
    """A client with a tiny receive window, so its replies back up after a few."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(0.05)
    sock.connect(("127.0.0.1", server.port))
    return sock


def send_until(
    server: RunningServer, sock: socket.socket, chunk: bytes, done: Callable[[], bool]
) -> None:
    """Send ``chunk`` again and again (blocked sends are fine) until ``done`` holds."""
    deadline = time.monotonic() + WAIT_S
    while not server.query(done):
        assert time.monotonic() < deadline, "the server never reached the state wanted"
        with contextlib.suppress(TimeoutError):  # the server reads no more for now
            sock.sendall(chunk)


def messages(records: list[logging.LogRecord]) -> Iterator[str]:
    return (record.getMessage() for record in records)


def test_a_client_that_does_not_read_its_replies_is_closed_for_that_and_frees_its_slot() -> None:
    limits = Limits(partial_timeout_s=1.0, messages_per_turn=PER_TURN)
    request = json.dumps({"op": "echo"}).encode() + b"\n"
    service = BigReplyService()
    with (
        captured_records("socklab") as records,
        running_server(service, limits) as server,
        non_reader(server) as hog,
    ):
        server.wait_until(lambda: len(server.listener.connections) == 1)
        conn = only_connection(server)
        stalled: list[tuple[bool, bool, int]] = []

        def has_stalled() -> bool:
            if conn._write_paused and not stalled and conn.transport is not None:
                has_input = conn.decoder is not None and conn.decoder.has_partial
                unsent = conn.transport.get_write_buffer_size()
                stalled.append((conn._read_paused, has_input, unsent))
            return bool(stalled) or conn._closed

        send_until(server, hog, request * 50, has_stalled)
        assert stalled, "closed before its writing paused"
        read_paused, has_input, unsent = stalled[0]
        assert read_paused  # no more requests taken in while its replies back up
        assert has_input  # requests still buffered: not an "incomplete message"
        assert unsent <= 64 * 1024 + PER_TURN * (REPLY_BYTES + 100)  # high-water mark + a turn
        server.wait_until(lambda: not server.listener.connections)  # the slot is back
        assert server.listener.per_address == {}
    logged = list(messages(records))
    assert any("has not read its replies for over 1 s" in line for line in logged), logged
    assert not any("incomplete message" in line for line in logged), logged


def test_a_closing_connection_whose_replies_never_drain_is_aborted() -> None:
    limits = Limits(partial_timeout_s=0.5)
    request = b"hello\n"
    service = BigReplyService()
    with (
        captured_records("socklab") as records,
        running_server(service, limits) as server,
        non_reader(server) as hog,
    ):
        hog.sendall(request)
        server.wait_until(lambda: len(server.listener.connections) == 1)
        conn = only_connection(server)
        assert conn.transport is not None
        # Writing never pauses here, so the replies pile up in the transport's buffer.
        server.query(lambda: conn.transport.set_write_buffer_limits(high=64 << 20))
        send_until(server, hog, request * 20, lambda: conn.transport.get_write_buffer_size() > 0)
        hog.sendall(b"half a line")  # and never the rest: the partial timeout closes it
        server.wait_until(lambda: not server.listener.connections)
    logged = list(messages(records))
    assert any("incomplete message for over 0.5 s" in line for line in logged), logged
    assert any("its last replies were not read within 0.5 s" in line for line in logged), logged
