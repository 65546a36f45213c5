"""Several worker processes sharing each port (SO_REUSEPORT), under one supervisor.

How this works: the supervisor reserves every port first (a bound, non-listening socket
with SO_REUSEPORT, so ``--port 0`` resolves to one port for all workers), then forks N
workers. Each worker runs the ordinary single-process server with ``reuse_port=True``;
the kernel spreads new connections over the workers' listening sockets. The supervisor
forwards SIGINT/SIGTERM to all workers (each then shuts down gracefully), and exits 0 once
they are all gone. A worker that exits 0 by itself (the exchange service terminating) ends
the whole server: the others are stopped gracefully, as one process would have stopped.

A worker that dies otherwise is restarted, after a delay chosen by ``RestartPolicy``:
exponential backoff per worker, capped. A death by a signal (``kill -9``, the OOM killer)
is a crash, however soon after the start. Only a worker that exits with an error status
soon after its start counts as a failure at start (a configuration error, say an
unreachable database); after ``max_start_failures`` of those within ``window_s`` the
supervisor gives up, stops the others and exits 1.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import multiprocessing
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from socklab.errors import SocklabError
from socklab.logs import fn

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
STARTUP_S = 5.0
"""A worker that exits with an error status this soon after starting failed at start."""
BASE_DELAY_S = 0.5
"""Pause before the first restart of a worker; each quick death in a row doubles it."""
MAX_DELAY_S = 10.0
"""The longest pause before a restart."""
STABLE_S = 10.0
"""A worker that ran this long before dying starts its backoff again from ``BASE_DELAY_S``."""
MAX_START_FAILURES = 5
"""Failures at start (of any worker) within ``WINDOW_S`` that make the supervisor give up."""
WINDOW_S = 60.0
POLL_S = 0.05
"""How often the supervisor looks for dead workers and due restarts."""


class Verdict(enum.Enum):
    """What the supervisor does after a worker's exit."""

    FINISH = "finish"
    """The worker's services stopped by themselves: stop the whole server, status 0."""
    RESTART = "restart"
    """Start the worker again after ``Decision.delay_s``."""
    GIVE_UP = "give up"
    """Too many failures at start: stop the whole server, status 1."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one worker's exit, and the facts it rests on (for the log)."""

    verdict: Verdict
    cause: str
    """``"exited with status 1"`` or ``"killed by SIGKILL"``."""
    lifetime_s: float
    is_start_failure: bool
    start_failures: int
    """Failures at start within the window, this one included."""
    delay_s: float = 0.0


def describe_exit(exitcode: int) -> str:
    """``exitcode`` as ``multiprocessing`` reports it (``-N``: killed by signal N), in words."""
    if exitcode >= 0:
        return f"exited with status {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"killed by signal {-exitcode}"


class RestartPolicy:
    """Decides, from exit statuses and the clock ``now``, whether and when to restart.

    No processes and no sleeping here: the supervisor reports starts and exits, and acts
    on the ``Decision``. Exit status 0 finishes the server. A death by a signal, or an
    error status after ``startup_s``, is a crash: restart. An error status within
    ``startup_s`` of the start is a failure at start: restart too, unless it is the
    ``max_start_failures``-th within ``window_s`` (counted over all workers), then give up.
    Restarts of one worker wait ``base_delay_s``, doubled for each death in a row, at
    most ``max_delay_s``; a worker that ran ``stable_s`` or longer starts again from
    ``base_delay_s``.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        startup_s: float = STARTUP_S,
        base_delay_s: float = BASE_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        stable_s: float = STABLE_S,
        max_start_failures: int = MAX_START_FAILURES,
        window_s: float = WINDOW_S,
    ) -> None:
        if max_start_failures < 1:
            raise ValueError("max_start_failures must be at least 1")
        self.now = now
        self.startup_s = startup_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.stable_s = stable_s
        self.max_start_failures = max_start_failures
        self.window_s = window_s
        self._started_at: dict[int, float] = {}
        self._deaths_in_a_row: dict[int, int] = {}
        self._start_failures: deque[float] = deque()

    def started(self, slot: int) -> None:
        """Worker ``slot`` has just been started."""
        self._started_at[slot] = self.now()

    def exited(self, slot: int, exitcode: int) -> Decision:
        """Worker ``slot`` has exited with ``exitcode`` (``-N``: killed by signal N).

        Raises:
            KeyError: ``slot`` was never reported as started.
        """
        now = self.now()
        lifetime_s = now - self._started_at.pop(slot)
        cause = describe_exit(exitcode)
        while self._start_failures and self._start_failures[0] <= now - self.window_s:
            self._start_failures.popleft()
        if exitcode == 0:
            return Decision(Verdict.FINISH, cause, lifetime_s, False, len(self._start_failures))
        is_start_failure = exitcode > 0 and lifetime_s < self.startup_s
        if is_start_failure:
            self._start_failures.append(now)
            if len(self._start_failures) >= self.max_start_failures:
                return Decision(Verdict.GIVE_UP, cause, lifetime_s, True, len(self._start_failures))
        deaths = 1 if lifetime_s >= self.stable_s else self._deaths_in_a_row.get(slot, 0) + 1
        self._deaths_in_a_row[slot] = deaths
        delay_s = min(self.max_delay_s, self.base_delay_s * 2 ** (deaths - 1))
        return Decision(
            Verdict.RESTART,
            cause,
            lifetime_s,
            is_start_failure,
            len(self._start_failures),
            delay_s,
        )


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) ``host:port`` with SO_REUSEPORT; the caller keeps it open.

    Raises:
        OSError: the address cannot be bound (in use without SO_REUSEPORT, not local).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_main(target: Callable[[], None], slot: int) -> None:
    _die_with_parent()
    try:
        target()
    except (OSError, ValueError, SocklabError) as exc:
        # A configuration error (a port, a database): one line, the supervisor decides.
        log.error("Worker %d cannot serve: %s", slot, exc, extra=fn("worker"))
        raise SystemExit(1) from None
    except Exception:
        log.exception("Worker %d stopped by an unexpected error", slot, extra=fn("worker"))
        raise SystemExit(1) from None


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

    def __init__(
        self,
        count: int,
        target: Callable[[], None],
        *,
        grace_s: float,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.count = count
        self.target = target
        self.grace_s = grace_s
        self.policy = policy if policy is not None else RestartPolicy()
        self._context = multiprocessing.get_context("fork")
        self._workers: dict[int, BaseProcess] = {}
        self._restart_due: dict[int, float] = {}
        """Dead workers waiting for their restart: slot -> the policy clock's due time."""
        self._stopping = False
        self._status = 0

    def _spawn(self, slot: int) -> None:
        process = self._context.Process(
            target=_worker_main, args=(self.target, slot), name=f"socklab-worker-{slot}"
        )
        process.start()
        self._workers[slot] = process
        self.policy.started(slot)
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
        while (self._workers or self._restart_due) and not self._stopping:
            for slot, process in list(self._workers.items()):
                process.join(timeout=0)  # reaps it if it has exited
                if process.exitcode is None:
                    continue
                del self._workers[slot]
                self._on_exit(slot, process, process.exitcode)
                if self._stopping:
                    return
            now = self.policy.now()
            for slot, due in list(self._restart_due.items()):
                if due <= now and not self._stopping:
                    del self._restart_due[slot]
                    self._spawn(slot)
            time.sleep(POLL_S)

    def _on_exit(self, slot: int, process: BaseProcess, exitcode: int) -> None:
        decision = self.policy.exited(slot, exitcode)
        if decision.verdict is Verdict.FINISH:
            # Its services stopped by themselves (the exchange terminating): the
            # server as a whole terminates, as a single process would.
            log.info("Worker %d finished; stopping the others", slot, extra=fn("supervise"))
            self._stopping = True
        elif decision.verdict is Verdict.GIVE_UP:
            log.error(
                "Worker %d %s %.1f s after its start: %d failures at start within %g s; "
                "giving up and stopping",
                slot,
                decision.cause,
                decision.lifetime_s,
                decision.start_failures,
                self.policy.window_s,
                extra=fn("supervise"),
            )
            self._status = 1
            self._stopping = True
        else:
            log.warning(
                "Worker %d (pid %s) %s after %.1f s%s; restarting it in %.1f s",
                slot,
                process.pid,
                decision.cause,
                decision.lifetime_s,
                (
                    f" (failure at start {decision.start_failures}; giving up at "
                    f"{self.policy.max_start_failures} within {self.policy.window_s:g} s)"
                    if decision.is_start_failure
                    else ""
                ),
                decision.delay_s,
                extra=fn("supervise"),
            )
            self._restart_due[slot] = self.policy.now() + decision.delay_s

    def _stop_all(self) -> None:
        if self._restart_due:
            log.info(
                "Not restarting %d waiting workers", len(self._restart_due), extra=fn("supervise")
            )
            self._restart_due.clear()
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
