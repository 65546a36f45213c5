"""Awaited replies over real sockets: their tasks survive a garbage collection, the
requests pipelined behind one are not taken for an incomplete message, and at shutdown
the service stops only after the requests in flight on aborted connections have finished
or been cancelled."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import socket
import threading
import time
import weakref
from typing import Any

from helpers import RunningServer, captured_records, recv_until, running_server
from socklab.server.runtime import Limits
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session

WAIT_S = 10.0


class HeldSession(Session):
    def __init__(self, service: HeldService) -> None:
        self.service = service

    def handle_json(self, request: dict[str, Any]) -> Any:
        if request.get("op") == "weak":
            return self._wait_on_weak_future()
        if request.get("op") == "echo":
            return {"value": request.get("value")}
        return self._hold()

    async def _wait_on_weak_future(self) -> JsonReply:
        # Only this coroutine holds the future: nothing but the task keeps them alive.
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.service.weak_future = weakref.ref(future)
        self.service.holding.set()
        return {"value": await future}

    async def _hold(self) -> JsonReply:
        service = self.service
        service.in_flight += 1
        service.holding.set()
        try:
            await service.release.wait()
            if service.stopped:  # what the bank says once its ledger is closed
                raise RuntimeError("the held service is not started")
            service.committed += 1
        finally:
            service.in_flight -= 1
        return {"value": "held"}


class HeldService(Service):
    """Holds a reply on ``release``; records what is in flight when it is stopped."""

    name = "held"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = threading.Event()
        self.in_flight = 0
        self.committed = 0
        self.stopped = False
        self.in_flight_at_stop: int | None = None
        self.weak_future: weakref.ref[asyncio.Future[str]] | None = None

    def open_session(self, conn: ConnectionInfo) -> Session:
        return HeldSession(self)

    async def stop(self) -> None:
        self.in_flight_at_stop = self.in_flight
        self.stopped = True


def send_json(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def wait_for_abort(sock: socket.socket) -> None:
    """Return once the server has cut ``sock`` (a reset, or EOF with nothing sent)."""
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(100) == b""


def begin_stop(server: RunningServer) -> concurrent.futures.Future[None]:
    return asyncio.run_coroutine_threadsafe(server.listener.stop(), server.loop)


def test_an_awaited_reply_survives_a_garbage_collection() -> None:
    service = HeldService()
    with running_server(service) as server, server.connect(timeout_s=WAIT_S) as sock:
        send_json(sock, {"op": "weak", "id": 1})
        assert service.holding.wait(WAIT_S)

        async def collect_then_answer() -> bool:
            gc.collect()
            assert service.weak_future is not None
            future = service.weak_future()
            if future is None:  # collected with the reply's task
                return False
            future.set_result("kept")
            return True

        assert server.call(collect_then_answer), "the reply task was garbage-collected"
        assert json.loads(recv_until(sock)) == {"id": 1, "ok": True, "value": "kept"}
        assert server.call(_reply_tasks_of(server)) == 0


def _reply_tasks_of(server: RunningServer) -> Any:
    async def count() -> int:
        await asyncio.sleep(0)  # the done callbacks of the finished task run first
        return len(server.listener.reply_tasks)

    return count


def test_requests_waiting_behind_an_awaited_reply_are_not_an_incomplete_message() -> None:
    service = HeldService()
    limits = Limits(partial_timeout_s=0.2)
    with running_server(service, limits) as server, server.connect(timeout_s=WAIT_S) as sock:
        sock.sendall(b'{"op": "hold", "id": 1}\n{"op": "echo", "value": 2, "id": 2}\n')
        assert service.holding.wait(WAIT_S)

        async def now() -> float:
            return server.loop.time()

        # The watchdog looks every 0.05 s: let it look many times past the timeout.
        held_since = server.call(now)
        while server.call(now) < held_since + 5 * limits.partial_timeout_s:
            assert service.in_flight == 1
            time.sleep(0.05)
        assert len(server.listener.connections) == 1
        server.loop.call_soon_threadsafe(service.release.set)
        replies = recv_until(sock)
        while replies.count(b"\n") < 2:
            replies += recv_until(sock)
    assert [json.loads(line) for line in replies.splitlines()] == [
        {"id": 1, "ok": True, "value": "held"},
        {"id": 2, "ok": True, "value": 2},
    ]


def test_after_the_grace_period_the_service_stops_after_the_request_in_flight() -> None:
    service = HeldService()
    limits = Limits(shutdown_grace_s=0.01, settle_timeout_s=WAIT_S)
    with (
        captured_records("socklab") as records,
        running_server(service, limits) as server,
        server.connect(timeout_s=WAIT_S) as sock,
    ):
        send_json(sock, {"op": "hold", "id": 1})
        assert service.holding.wait(WAIT_S)
        stopping = begin_stop(server)
        wait_for_abort(sock)  # the grace period is over: the connection is aborted
        assert not service.stopped  # the request in flight still needs the service
        server.loop.call_soon_threadsafe(service.release.set)
        stopping.result(WAIT_S)
    assert service.committed == 1
    assert service.stopped and service.in_flight_at_stop == 0
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert errors == []  # a request that went through is not an internal error


def test_a_request_still_in_flight_after_the_settle_timeout_is_cancelled_first() -> None:
    service = HeldService()
    limits = Limits(shutdown_grace_s=0.01, settle_timeout_s=0.05)
    with (
        captured_records("socklab") as records,
        running_server(service, limits) as server,
        server.connect(timeout_s=WAIT_S) as sock,
    ):
        send_json(sock, {"op": "hold", "id": 1})
        assert service.holding.wait(WAIT_S)
        begin_stop(server).result(WAIT_S)  # never released: bounded all the same
        wait_for_abort(sock)
    assert service.committed == 0
    assert service.stopped and service.in_flight_at_stop == 0
    logged = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert "Cancelling replies still in flight at shutdown: 1" in logged
