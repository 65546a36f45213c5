"""Pooled checks whose client has gone, the per-connection bound, dead workers, stop.

The workers run ``numbers_checks.check_or_hang``: a number written with a leading 777
never finishes, any other is checked at once, so nothing here depends on the CPU's speed.
Every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import struct
from collections.abc import Awaitable
from typing import Any

import pytest
from numbers_checks import ANSWERED, HANGING, check_or_hang

from helpers import (
    RunningServer,
    async_wait_until,
    captured_records,
    recv_until,
    running_server,
    wait_until,
)
from socklab.errors import ServerBusy
from socklab.services.base import ConnectionInfo
from socklab.services.numbers import STOP_TIMEOUT_S, NumbersService, NumbersSession
from socklab.services.procpool import PoolClosed, ProcessPool, TaskFailed

DEADLINE_S = 20.0
ANSWER = b"[Prime] True [Palindrome] False\n"


def hanging_service(**options: Any) -> NumbersService:
    return NumbersService(offload_digits=100, check=check_or_hang, **options)


def pool_state(server: RunningServer, service: NumbersService) -> tuple[int, int, list[int]]:
    """(running, pending, worker pids) of the service's pool."""

    def read() -> tuple[int, int, list[int]]:
        pool = service.pool
        assert pool is not None
        return pool.running, pool.pending, pool.pids()

    result: tuple[int, int, list[int]] = server.query(read)
    return result


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited *and* been reaped (a zombie still answers ``kill 0``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def hang_up(sock: socket.socket) -> None:
    """Close ``sock`` with a reset, as a client that is killed or loses its network does
    (a plain close only half-closes: the server still owes the replies, see below)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def request_bytes(dialect: str, number: int) -> bytes:
    if dialect == "json":
        return json.dumps({"id": 1, "op": "check", "number": str(number)}).encode() + b"\n"
    return f"{number}\n".encode()


def run(coro: Awaitable[Any], timeout_s: float = 60.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


def open_session(service: NumbersService, peer: str = "('127.0.0.1', 48528)") -> NumbersSession:
    session = service.open_session(ConnectionInfo(peer=peer))
    assert isinstance(session, NumbersSession)
    return session


# -- over real sockets -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["line", "json"])
def test_checks_of_clients_that_left_free_the_worker_for_the_next_client(dialect: str) -> None:
    # One worker, three abandoned checks: one running, two queued, which fill the pool's
    # queue. Without cancelling, the newcomer is refused (server_busy) or waits forever.
    service = hanging_service(workers=1, max_pending=3)
    with running_server(service) as server:
        leavers = [server.connect(timeout_s=DEADLINE_S) for _ in range(3)]
        for sock in leavers:
            sock.sendall(request_bytes(dialect, HANGING))
        wait_until(lambda: pool_state(server, service)[:2] == (1, 3), "one runs, two wait")
        (busy_pid,) = pool_state(server, service)[2]

        for sock in leavers:
            hang_up(sock)
        with server.connect(timeout_s=DEADLINE_S) as newcomer:
            newcomer.sendall(request_bytes(dialect, ANSWERED))
            reply = recv_until(newcomer)
        if dialect == "json":
            assert json.loads(reply) == {"id": 1, "ok": True, "prime": True, "palindrome": False}
        else:
            assert reply == ANSWER

        # The worker that ran the abandoned check was killed and reaped: no zombie.
        wait_until(lambda: process_gone(busy_pid), f"worker {busy_pid} is reaped")
        wait_until(lambda: pool_state(server, service)[1] == 0, "nothing is pending")
        assert busy_pid not in pool_state(server, service)[2]


def test_a_worker_killed_from_outside_is_replaced() -> None:
    service = hanging_service(workers=1)
    with running_server(service) as server, server.connect(timeout_s=DEADLINE_S) as sock:
        sock.sendall(request_bytes("line", HANGING))
        wait_until(lambda: pool_state(server, service)[0] == 1, "the check runs")
        (pid,) = pool_state(server, service)[2]
        os.kill(pid, signal.SIGKILL)
        interrupted = b"ERROR server_busy: the prime check was interrupted; try again\n"
        assert recv_until(sock) == interrupted

        sock.sendall(request_bytes("line", ANSWERED))
        assert recv_until(sock) == ANSWER
        (new_pid,) = pool_state(server, service)[2]
        assert new_pid != pid
        wait_until(lambda: process_gone(pid), f"worker {pid} is reaped")


def test_a_connection_lost_while_its_check_runs_is_logged_and_starts_nothing_more() -> None:
    service = hanging_service(workers=1)
    with (
        captured_records("socklab.services.numbers") as records,
        running_server(service) as server,
    ):
        sock = server.connect(timeout_s=DEADLINE_S)
        sock.sendall(request_bytes("line", HANGING) + request_bytes("line", ANSWERED))
        wait_until(lambda: pool_state(server, service)[0] == 1, "the check runs")
        (pid,) = pool_state(server, service)[2]
        hang_up(sock)
        listener = server.listener
        server.wait_until(lambda: not listener.connections, "it is closed")
        wait_until(lambda: process_gone(pid), f"worker {pid} is reaped")
        # The request pipelined behind the abandoned one never reached the pool: nothing is
        # pending, and no worker was started for it.
        assert pool_state(server, service) == (0, 0, [])
    gone = [r.getMessage() for r in records if "gone" in r.getMessage()]
    assert len(gone) == 1
    assert gone[0].endswith(" gone: cancelling its prime checks (1)")


# -- the session and the pool, called directly --------------------------------------------


def test_one_connection_may_have_only_so_many_checks_pending() -> None:
    async def scenario() -> None:
        service = hanging_service(workers=1, max_pending=10, max_pending_per_connection=2)
        await service.start()
        try:
            greedy, other = open_session(service), open_session(service, "('10.0.0.2', 1)")
            mine = [asyncio.ensure_future(greedy.handle_line(str(HANGING))) for _ in range(3)]
            await async_wait_until(lambda: service.pending == 2, "two checks are pending")
            with pytest.raises(ServerBusy) as refused:
                await mine[2]
            assert refused.value.code == "server_busy"
            assert "this connection has 2 big numbers being checked already" in str(refused.value)

            # Another connection is not refused: its check waits for the worker.
            theirs = asyncio.ensure_future(other.handle_json({"number": str(ANSWERED)}))
            await async_wait_until(lambda: service.pending == 3, "the other check is queued")

            # The greedy connection leaves: its checks are cancelled and the other is answered.
            greedy.close()
            for task in mine[:2]:
                with pytest.raises(ServerBusy, match="the connection closed"):
                    await task
            assert await theirs == {"prime": True, "palindrome": False}
            assert service.pending == 0
            # A closed session starts nothing more.
            with pytest.raises(ServerBusy, match="the connection has closed"):
                await greedy.handle_line(str(ANSWERED))
        finally:
            await service.stop()

    run(scenario())


def test_a_cancelled_caller_cancels_its_check_and_frees_the_worker() -> None:
    async def scenario() -> None:
        service = hanging_service(workers=1)
        await service.start()
        try:
            pool = service.pool
            assert pool is not None
            session = open_session(service)
            caller = asyncio.ensure_future(session.handle_line(str(HANGING)))
            await async_wait_until(lambda: pool.running == 1, "the check runs")
            (pid,) = pool.pids()
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            await async_wait_until(lambda: process_gone(pid), f"worker {pid} is reaped")
            assert service.pending == 0
            assert await session.handle_line(str(ANSWERED)) == ANSWER.decode().rstrip("\n")
        finally:
            await service.stop()

    run(scenario())


def test_stop_kills_hung_workers_within_its_bound() -> None:
    async def scenario() -> None:
        service = hanging_service(workers=2)
        await service.start()
        pool = service.pool
        assert pool is not None
        sessions = [open_session(service, f"('10.0.0.{i}', 1)") for i in range(3)]
        checks = [asyncio.ensure_future(s.handle_line(str(HANGING))) for s in sessions]
        await async_wait_until(lambda: pool.running == 2, "both workers run a check")
        pids = pool.pids()
        async with asyncio.timeout(STOP_TIMEOUT_S + 5):
            await service.stop()
        for check in checks:
            with pytest.raises(ServerBusy, match="shutting down"):
                await check
        assert all(process_gone(pid) for pid in pids)  # stop() reaped them
        assert service.pending == 0 and service.pool is None

    run(scenario())


def test_the_pool_replaces_a_worker_that_dies_while_idle_and_survives_a_raising_task() -> None:
    async def scenario() -> None:
        pool = ProcessPool(1, math.sqrt)
        try:
            assert await pool.submit(4.0).future == 2.0
            (pid,) = pool.pids()
            os.kill(pid, signal.SIGKILL)
            await async_wait_until(lambda: not pool.pids(), "the dead worker is noticed")
            await async_wait_until(lambda: process_gone(pid), f"worker {pid} is reaped")

            with pytest.raises(TaskFailed, match="ValueError: math domain error"):
                await pool.submit(-1.0).future
            (new_pid,) = pool.pids()
            assert new_pid != pid
            assert await pool.submit(9.0).future == 3.0  # the same worker goes on
            assert pool.pids() == [new_pid] and pool.pending == 0
        finally:
            await pool.close()
        assert process_gone(new_pid)
        with pytest.raises(PoolClosed):
            pool.submit(1.0)

    run(scenario())
