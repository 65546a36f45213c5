"""Graceful shutdown with a request in flight: stop accepting first, serve nothing that
arrives afterwards, and stop the service (close the ledger) only after the last reply."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import select
import socket
import threading
from typing import Any

import pytest

from helpers import RunningServer, captured_records, recv_all, recv_until, running_server
from socklab.server.runtime import Connection, Limits
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session

WAIT_S = 10.0


class HoldSession(Session):
    def __init__(self, service: HoldService) -> None:
        self.service = service

    def handle_json(self, request: dict[str, Any]) -> Any:
        if request.get("op") == "hold":
            return self._hold()
        if self.service.stopped:
            self.service.served_after_stop += 1
        return {"value": request.get("value")}

    async def _hold(self) -> JsonReply:
        service = self.service
        service.in_flight += 1
        service.holding.set()
        try:
            await service.release.wait()
        finally:
            service.in_flight -= 1
        return {"value": "held"}


class HoldService(Service):
    """Holds an ``op: hold`` reply until ``release`` is set; records the state at ``stop()``."""

    name = "hold"

    def __init__(self, watched: list[socket.socket]) -> None:
        self.watched = watched
        self.release = asyncio.Event()
        self.holding = threading.Event()
        self.in_flight = 0
        self.stopped = False
        self.served_after_stop = 0
        self.in_flight_at_stop: int | None = None
        self.reply_readable_at_stop: bool | None = None

    def open_session(self, conn: ConnectionInfo) -> Session:
        return HoldSession(self)

    async def stop(self) -> None:
        self.in_flight_at_stop = self.in_flight
        # The held reply has already been written: the client can read it right now.
        watched = [sock for sock in self.watched if sock.fileno() >= 0]
        readable, _, _ = select.select(watched, [], [], 0)
        self.reply_readable_at_stop = bool(watched) and readable == watched
        self.stopped = True


def send_json(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def begin_stop(server: RunningServer) -> concurrent.futures.Future[None]:
    """Start ``listener.stop()`` and return once its first step (up to its first wait) ran.

    A second coroutine handed to the loop after it starts after it: the loop keeps order.
    """
    stopping = asyncio.run_coroutine_threadsafe(server.listener.stop(), server.loop)
    server.call(_nothing)
    return stopping


async def _nothing() -> None:
    return None


def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()


def answer_to(sock: socket.socket, message: dict[str, Any]) -> bytes:
    """What the server answers before it closes; a reset counts as nothing."""
    try:
        send_json(sock, message)
        return recv_all(sock)
    except (BrokenPipeError, ConnectionResetError):
        return b""


def connect_late(server: RunningServer) -> socket.socket:
    """A connection the loop accepted just before ``stop()`` began: its ``connection_made``
    runs while the listener is stopping (what the listener's protocol factory builds)."""
    client, accepted = socket.socketpair()
    client.settimeout(WAIT_S)

    async def hand_over() -> None:
        await server.loop.connect_accepted_socket(lambda: Connection(server.listener), accepted)

    server.call(hand_over)
    return client


def test_stop_with_a_request_in_flight_serves_nothing_new_and_stops_the_service_last() -> None:
    watched: list[socket.socket] = []
    service = HoldService(watched)
    limits = Limits(shutdown_grace_s=WAIT_S)
    with captured_records("socklab") as records, running_server(service, limits) as server:
        with server.connect(timeout_s=WAIT_S) as busy:
            watched.append(busy)
            send_json(busy, {"op": "hold", "id": 1})
            assert service.holding.wait(WAIT_S)
            stopping = begin_stop(server)

            # 1. Accepting stops first, while the request is still in flight.
            assert_refused(server.port)
            # 2. A connection that arrives now is closed unserved.
            with connect_late(server) as late:
                assert answer_to(late, {"op": "echo", "value": "late", "id": 2}) == b""
            assert not service.stopped  # the held request still needs the service

            # 3. The request in flight is answered, then its connection is closed.
            server.loop.call_soon_threadsafe(service.release.set)
            stopping.result(WAIT_S)
            reply = recv_all(busy)
        assert json.loads(reply) == {"id": 1, "ok": True, "value": "held"}
    # 4. The service stopped after the last reply was written, with nothing in flight.
    assert service.stopped and service.in_flight_at_stop == 0
    assert service.reply_readable_at_stop is True
    assert service.served_after_stop == 0
    aborted = [r for r in records if r.levelno >= logging.WARNING and "Aborting" in r.getMessage()]
    assert aborted == []


def test_a_connection_arriving_during_stop_does_not_hold_the_stop_for_the_grace_period() -> None:
    service = HoldService([])
    limits = Limits(shutdown_grace_s=60.0)  # a stop that waits for it fails the bound below
    with running_server(service, limits) as server, server.connect(timeout_s=WAIT_S) as busy:
        send_json(busy, {"op": "hold", "id": 1})
        assert service.holding.wait(WAIT_S)
        stopping = begin_stop(server)
        assert_refused(server.port)
        with connect_late(server) as late:  # connected, and silent
            server.loop.call_soon_threadsafe(service.release.set)
            assert recv_until(busy).startswith(b'{"id":1,"ok":true')
            stopping.result(WAIT_S)  # bounded well below the grace period
            assert recv_all(late) == b""
    assert service.stopped
