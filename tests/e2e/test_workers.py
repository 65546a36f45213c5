"""`socklab serve --workers N`: processes sharing a port under a supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from helpers import HOST, poll, port_is_free, start_server_process


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def exchange(port: int, number: int = 5) -> dict[str, object]:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(json.dumps({"client_name": "w", "client_number": number}).encode() + b"\n")
        reply: dict[str, object] = json.loads(sock.makefile("rb").readline())
        return reply


def convert(port: int, text: str = "Hi") -> dict[str, object]:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(json.dumps({"op": "convert", "text": text, "id": 1}).encode() + b"\n")
        reply: dict[str, object] = json.loads(sock.makefile("rb").readline())
        return reply


def test_workers_share_the_port_and_a_killed_worker_is_replaced() -> None:
    server = start_server_process("exchange", "--port", "0", "--workers", "2", listeners=2)
    try:
        assert len(set(server.ports)) == 1  # both workers listen on the same port
        assert poll(lambda: len(children(server.proc.pid)) == 2)
        before = children(server.proc.pid)
        for _ in range(20):
            assert exchange(server.port)["ok"] is True
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        assert poll(lambda: len(children(server.proc.pid) - before) == 1)
        assert poll(lambda: "started and listening" in server.text().rsplit("restarting it", 1)[-1])
        for _ in range(20):
            assert exchange(server.port)["ok"] is True
    finally:
        assert server.stop() == 0
    log = server.text()
    assert "killed by SIGKILL after" in log
    assert "restarting it in 0.5 s" in log
    assert "Received SIGTERM, stopping 2 workers" in log
    assert port_is_free(server.port)


def test_a_port_taken_by_another_program_is_refused_before_any_worker_starts() -> None:
    with socket.create_server((HOST, 0)) as taken:  # no SO_REUSEPORT: nobody else can bind
        port = taken.getsockname()[1]
        server = start_server_process(
            "exchange", "--port", str(port), "--workers", "2", listeners=0
        )
        assert server.wait(20) == 1
    log = server.text()
    assert "cannot listen on 127.0.0.1: Address already in use" in log
    assert "Worker" not in log


def test_workers_killed_right_after_their_start_are_restarted_with_backoff() -> None:
    server = start_server_process("text", "--port", "0", "--workers", "2", listeners=2)
    supervisor = server.proc.pid
    try:
        assert poll(lambda: len(children(supervisor)) == 2)
        seen = children(supervisor)
        victim = min(seen)
        for kills in range(1, 4):
            os.kill(victim, signal.SIGKILL)
            assert poll(
                lambda: (
                    server.text().count("restarting it in") == kills  # noqa: B023
                    or server.proc.poll() is not None
                )
            )
            assert server.proc.poll() is None, server.text()  # one kill never ends the service
            # The victim is gone and its replacement not yet started: the other one answers.
            assert convert(server.port) == {"id": 1, "ok": True, "lower": "hi", "upper": "HI"}
            # Kill the replacement as soon as it exists, long before it has run 5 s.
            assert poll(lambda: children(supervisor) - seen, every_s=0.002)
            (victim,) = children(supervisor) - seen
            seen.add(victim)
        assert poll(lambda: "started and listening" in server.text().rsplit("restarting it", 1)[-1])
        assert len(children(supervisor)) == 2
        for _ in range(20):
            assert convert(server.port)["ok"] is True
        assert server.proc.poll() is None
    finally:
        assert server.stop() == 0
    log = server.text()
    restarts = [line for line in log.splitlines() if "restarting it in" in line]
    assert len(restarts) == 3
    assert all("killed by SIGKILL" in line for line in restarts)
    # One worker died three times in a row: its restart waits doubled.
    assert [line.rsplit(" in ", 1)[1] for line in restarts] == ["0.5 s", "1.0 s", "2.0 s"]
    assert "failure at start" not in log
    assert port_is_free(server.port)


def test_a_worker_broken_at_start_makes_the_supervisor_give_up_after_the_limit() -> None:
    with socket.socket() as closed:  # bound, never listening: connecting to it is refused
        closed.bind((HOST, 0))
        db = f"postgresql://postgres@{HOST}:{closed.getsockname()[1]}/test"
        server = start_server_process(
            "bank", "--port", "0", "--workers", "2", "--db", db, listeners=0
        )
        assert server.wait(30) == 1
    log = server.text()
    print(log)  # shown if the test fails
    # Five failed at start (more on a machine so loaded that a failure takes over 5 s).
    assert log.count("cannot open the ledger") >= 5
    assert log.count("(failure at start") == 4
    assert "(failure at start 4; giving up at 5 within 60 s)" in log
    assert "5 failures at start within 60 s; giving up and stopping" in log
    assert "Traceback" not in log


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
    assert poll(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
    assert poll(lambda: port_is_free(server.port))
