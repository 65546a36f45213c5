"""Fairness over real sockets: one connection's pipelined flood cannot hold up another.

The order of events is what is checked, never a latency: the server's loop is held still
while the flood and the victim's request reach the server's socket buffers, then let go;
the service records the order in which it answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import RunningServer, recv_until, running_server
from socklab.server.runtime import Connection, Limits
from socklab.services.base import ConnectionInfo, Service, Session
from socklab.wire.framing import encode_lab_frame

FLOOD = 1000
PER_TURN = 8


class OrderService(Service):
    """Echoes every message and records, in order, what it answered for whom."""

    name = "order"

    def __init__(self) -> None:
        self.answered: list[str] = []
        self.listener_conns: Any = None
        self.paused_while_answering: list[bool] = []
        self.held_while_answering: list[int] = []

    def open_session(self, conn: ConnectionInfo) -> Session:
        return OrderSession(self)


class OrderSession(Session):
    def __init__(self, service: OrderService) -> None:
        self.service = service

    def _note(self, value: str) -> None:
        self.service.answered.append(value)
        conns = self.service.listener_conns
        if conns is not None and value.startswith("f"):
            flooder = next(iter(conns))  # the only connection
            self.service.paused_while_answering.append(flooder._read_paused)
            self.service.held_while_answering.append(flooder.decoder.buffered_bytes)

    def handle_json(self, request: dict[str, Any]) -> Any:
        self._note(str(request["value"]))
        return {"value": request["value"]}

    def handle_line(self, line: str) -> str:
        self._note(line)
        return line

    def handle_lab(self, payload: str) -> str:
        self._note(payload)
        return payload + "\n"


def flood_bytes(dialect: str) -> bytes:
    values = [f"f{i}" for i in range(FLOOD)]
    if dialect == "json":
        return b"".join(json.dumps({"value": v}).encode() + b"\n" for v in values)
    if dialect == "line":
        return b"".join(v.encode() + b"\n" for v in values)
    return b"".join(encode_lab_frame(v.encode()) for v in values)


def queued_bytes(sock: Any) -> int:
    """Bytes the kernel holds for ``sock`` that the server has not read yet."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


def server_side(server: RunningServer, client: socket.socket) -> Connection:
    """The server's ``Connection`` for ``client``."""
    want = client.getsockname()
    for conn in list(server.listener.connections):
        assert conn.transport is not None
        if conn.transport.get_extra_info("peername")[:2] == want[:2]:
            return conn
    raise AssertionError(f"no server connection for {want}")


@contextlib.contextmanager
def loop_held(server: RunningServer) -> Iterator[None]:
    """Hold the server's event loop still (a callback that waits) until the block ends."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(20)

    server.loop.call_soon_threadsafe(hold)
    assert entered.wait(10), "the server's loop did not run the hold"
    try:
        yield
    finally:
        release.set()


def wait_queued(server: RunningServer, client: socket.socket, at_least: int) -> None:
    """Wait (bounded) until the server's socket for ``client`` has ``at_least`` bytes unread."""
    sock = server_side(server, client).transport.get_extra_info("socket")  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while queued_bytes(sock) < at_least:
        assert time.monotonic() < deadline, "the bytes sent never reached the server"
        time.sleep(0.005)


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "the server closed the connection"
        data += chunk
    return data.splitlines()


@pytest.mark.parametrize("dialect", ["json", "line", "lab"])
def test_a_request_is_answered_between_slices_of_a_pipelined_flood(dialect: str) -> None:
    limits = Limits(messages_per_turn=PER_TURN, turn_budget_s=60.0)  # the count decides
    service = OrderService()
    flood = flood_bytes(dialect)
    with running_server(service, limits) as server:
        flooder, victim = server.connect(), server.connect()
        with flooder, victim:
            # Both connections are set up (dialect detected) before the loop is held.
            first = {"json": b'{"value": "hello"}\n', "line": b"hello\n"}
            flooder.sendall(first.get(dialect, encode_lab_frame(b"hello")))
            victim.sendall(b'{"value": "hello"}\n')
            read_lines(flooder, 1), read_lines(victim, 1)
            with loop_held(server):
                flooder.sendall(flood)
                wait_queued(server, flooder, len(flood))
                victim.sendall(b'{"value": "victim"}\n')
                wait_queued(server, victim, 1)
            assert json.loads(recv_until(victim))["value"] == "victim"
            replies = read_lines(flooder, FLOOD)
        values = [json.loads(r)["value"] if dialect == "json" else r.decode() for r in replies]
        assert values == [f"f{i}" for i in range(FLOOD)]
    order = service.answered
    assert order.index("victim") < order.index(f"f{FLOOD - 1}")
    # At most one slice of the flood went before the victim.
    assert order.index("victim") - order.index("f0") <= PER_TURN


def test_reading_from_a_flooder_pauses_past_the_bound_and_resumes() -> None:
    limits = Limits(max_message_bytes=256, messages_per_turn=PER_TURN, turn_budget_s=60.0)
    bound = limits.input_pause_bytes
    service = OrderService()
    flood = flood_bytes("line")
    assert len(flood) > 4 * bound
    with running_server(service, limits) as server, server.connect() as flooder:
        flooder.sendall(b"hello\n")
        read_lines(flooder, 1)
        service.listener_conns = server.listener.connections
        with loop_held(server):
            flooder.sendall(flood)
            wait_queued(server, flooder, len(flood))
        replies = read_lines(flooder, FLOOD)
        assert replies == [f"f{i}".encode() for i in range(FLOOD)]
        conn = server.call(lambda: _first_conn(server))
        assert not conn._read_paused  # resumed once drained
    paused = service.paused_while_answering
    assert len(paused) == FLOOD
    # Past the bound the server stopped reading, answered slices, then read again.
    assert paused[0] and not paused[-1]
    assert service.held_while_answering[0] > bound


async def _first_conn(server: RunningServer) -> Connection:
    return next(iter(server.listener.connections))
