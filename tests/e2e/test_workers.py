"""`socklab serve --workers N`: processes sharing a port under a supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

from helpers import HOST, port_is_free, start_server_process
from socklab.server.workers import STARTUP_S


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def exchange(port: int, number: int = 5) -> dict[str, object]:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(json.dumps({"client_name": "w", "client_number": number}).encode() + b"\n")
        reply: dict[str, object] = json.loads(sock.makefile("rb").readline())
        return reply


def wait_for(predicate, timeout_s: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_workers_share_the_port_and_a_killed_worker_is_replaced() -> None:
    server = start_server_process("exchange", "--port", "0", "--workers", "2", listeners=2)
    try:
        assert len(set(server.ports)) == 1  # both workers listen on the same port
        assert wait_for(lambda: len(children(server.proc.pid)) == 2)
        before = children(server.proc.pid)
        for _ in range(20):
            assert exchange(server.port)["ok"] is True
        time.sleep(STARTUP_S)  # a worker dying sooner counts as broken, not as a crash
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: len(children(server.proc.pid) - before) == 1)
        assert wait_for(
            lambda: "started and listening" in server.text().rsplit("restarting it", 1)[-1]
        )
        for _ in range(20):
            assert exchange(server.port)["ok"] is True
    finally:
        assert server.stop() == 0
    log = server.text()
    assert f"died with status -{signal.SIGKILL}; restarting it" in log
    assert "Received SIGTERM, stopping 2 workers" in log
    assert port_is_free(server.port)


def test_a_worker_that_cannot_start_stops_the_supervisor() -> None:
    with socket.create_server((HOST, 0)) as taken:  # no SO_REUSEPORT: the workers cannot bind
        port = taken.getsockname()[1]
        server = start_server_process(
            "exchange", "--port", str(port), "--workers", "2", listeners=0
        )
        assert server.wait(20) != 0


def test_terminating_exchange_ends_all_workers_with_status_0() -> None:
    server = start_server_process("exchange", "--port", "0", "--workers", "2", listeners=2)
    # One out-of-range number ends the server, whichever worker receives it.
    assert exchange(server.port, 0)["ok"] is False
    assert server.wait(20) == 0
    log = server.text()
    assert log.count("Terminating the server.") == 1
    assert "finished; stopping the others" in log


def test_workers_do_not_outlive_a_killed_supervisor() -> None:
    server = start_server_process("exchange", "--port", "0", "--workers", "2", listeners=2)
    workers = children(server.proc.pid)
    assert len(workers) == 2
    server.proc.kill()
    server.wait()
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
    assert wait_for(lambda: port_is_free(server.port))
