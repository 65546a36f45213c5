"""Several worker processes sharing each port (SO_REUSEPORT), under one supervisor.

How this works: the supervisor reserves every port first (a bound, non-listening socket
with SO_REUSEPORT, so ``--port 0`` resolves to one port for all workers), then forks N
workers. Each worker runs the ordinary single-process server with ``reuse_port=True``;
the kernel spreads new connections over the workers' listening sockets. The supervisor
restarts a worker that dies unexpectedly, forwards SIGINT/SIGTERM to all workers (each
then shuts down gracefully), and exits 0 once they are all gone. A worker that exits 0
by itself (the exchange service terminating) ends the whole server: the others are
stopped gracefully, as one process would have stopped.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

from socklab.logs import fn

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
RESTART_DELAY_S = 0.5
"""Pause before restarting a crashed worker."""
STARTUP_S = 2.0
"""A worker that dies this soon after starting is broken, not unlucky: give up."""


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) ``host:port`` with SO_REUSEPORT; the caller keeps it open."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_main(target: Callable[[], None]) -> None:
    _die_with_parent()
    target()


def _die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM if the supervisor dies (even by ``kill -9``),
    so no orphaned worker keeps serving a port. Elsewhere nothing happens."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return


class Supervisor:
    """Keeps ``count`` processes running ``target`` until told to stop."""

    def __init__(self, count: int, target: Callable[[], None], *, grace_s: float) -> None:
        self.count = count
        self.target = target
        self.grace_s = grace_s
        self._context = multiprocessing.get_context("fork")
        self._workers: dict[int, BaseProcess] = {}
        self._started_at: dict[int, float] = {}
        self._stopping = False
        self._status = 0

    def _spawn(self, slot: int) -> None:
        process = self._context.Process(
            target=_worker_main, args=(self.target,), name=f"socklab-worker-{slot}"
        )
        process.start()
        self._workers[slot] = process
        self._started_at[slot] = time.monotonic()
        log.info("Worker %d started (pid %s)", slot, process.pid, extra=fn("supervise"))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info(
                "Received %s, stopping %d workers",
                signal.Signals(signum).name,
                len(self._workers),
                extra=fn("supervise"),
            )
        self._stopping = True

    def run(self) -> int:
        """Supervise until every worker is gone; the exit status for the process."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for slot in range(self.count):
                self._spawn(slot)
            self._watch()
            self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._status

    def _watch(self) -> None:
        while self._workers and not self._stopping:
            for slot, process in list(self._workers.items()):
                process.join(timeout=0)  # reaps it if it has exited
                if process.exitcode is None:
                    continue
                del self._workers[slot]
                if process.exitcode == 0:
                    # Its services stopped by themselves (the exchange terminating): the
                    # server as a whole terminates, as a single process would.
                    log.info("Worker %d finished; stopping the others", slot, extra=fn("supervise"))
                    self._stopping = True
                    break
                if time.monotonic() - self._started_at[slot] < STARTUP_S:
                    log.error(
                        "Worker %d failed at start (status %s); stopping",
                        slot,
                        process.exitcode,
                        extra=fn("supervise"),
                    )
                    self._status = 1
                    self._stopping = True
                    break
                log.warning(
                    "Worker %d (pid %s) died with status %s; restarting it",
                    slot,
                    process.pid,
                    process.exitcode,
                    extra=fn("supervise"),
                )
                time.sleep(RESTART_DELAY_S)
                if not self._stopping:
                    self._spawn(slot)
            time.sleep(0.05)

    def _stop_all(self) -> None:
        for process in self._workers.values():
            if process.exitcode is None and process.pid is not None:
                process.terminate()  # SIGTERM: each worker shuts down gracefully
        deadline = time.monotonic() + self.grace_s + 5
        for process in self._workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning(
                    "Worker pid %s did not stop; killing it", process.pid, extra=fn("supervise")
                )
                process.kill()
                process.join()
        self._workers.clear()
