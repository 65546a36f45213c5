"""Small helpers shared by the tests: a real server on a real port, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from socklab.server.runtime import Limits, Listener, new_event_loop
from socklab.services.base import Service

HOST = "127.0.0.1"


class ScriptedRandom(random.Random):
    """``random()`` returns the scripted values in order, then 0.99 (no fault)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.99


WAIT_S = 30.0
"""The bound on waiting for a condition that should hold within milliseconds: generous,
because the machine may be busy, and only ever reached when something is broken."""


def poll(predicate: Callable[[], Any], timeout_s: float = WAIT_S, every_s: float = 0.01) -> bool:
    """Whether ``predicate`` came to hold within ``timeout_s`` (for conditions with no event
    to wait on: a process reaped, a port freed, a log line written by another process)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True


def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``predicate`` until it holds; ``AssertionError`` naming ``what`` after ``timeout_s``."""
    if not poll(predicate, timeout_s):
        raise AssertionError(f"not within {timeout_s:g} s: {what}")


async def async_wait_until(
    predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S
) -> None:
    """``wait_until`` inside a running loop (the loop keeps running while it polls)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 (a state with no event to wait on)
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:g} s: {what}") from None


CLOSE_TIMEOUT_S = 15.0


@contextlib.contextmanager
def bounded_runner(timeout_s: float = CLOSE_TIMEOUT_S) -> Iterator[asyncio.Runner]:
    """An ``asyncio.Runner`` whose closing takes at most about ``timeout_s``.

    ``asyncio.Runner.close()`` cancels the tasks left on its loop and then waits for them
    without a limit: one task that never finishes (a database pool's worker stuck on a
    server that went away) hangs the suite in teardown, and a timeout signal raised while
    the loop runs a task only ends that task. Here the leftover tasks get ``timeout_s`` to
    finish after their cancellation; if some do not, the loop is closed under them and the
    test fails, naming them.
    """
    runner = asyncio.Runner()
    try:
        yield runner
    finally:
        close_runner(runner, timeout_s)


def close_runner(runner: asyncio.Runner, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Cancel ``runner``'s leftover tasks, wait up to ``timeout_s`` for them, close it.

    Raises ``AssertionError`` (after closing the loop anyway) if some task outlived that.
    """
    loop = runner.get_loop()

    async def cancel_leftovers() -> set[asyncio.Task[object]]:
        me = asyncio.current_task()
        tasks = {t for t in asyncio.all_tasks() if t is not me}
        for task in tasks:
            task.cancel()
        if not tasks:
            return set()
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return pending

    stuck = runner.run(cancel_leftovers())
    if not stuck:
        runner.close()  # nothing left for it to wait for
        return
    asyncio.set_event_loop(None)
    loop.close()
    raise AssertionError(f"{len(stuck)} task(s) ignored cancellation for {timeout_s:g} s: {stuck}")


@dataclass
class RunningServer:
    listener: Listener
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.listener.port

    def connect(self, timeout_s: float = 5.0) -> socket.socket:
        return socket.create_connection((HOST, self.port), timeout=timeout_s)

    def call(self, coro_factory, timeout_s: float = 10.0):  # type: ignore[no-untyped-def]
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(timeout_s)

    def query(self, read: Callable[[], Any]) -> Any:
        """``read()`` evaluated on the server's loop (its state is the loop's to touch)."""

        async def run() -> Any:
            return read()

        return self.call(run)

    def wait_until(self, condition: Callable[[], Any], what: str = "the condition") -> None:
        """Wait (bounded) until ``condition``, evaluated on the server's loop, holds."""
        wait_until(lambda: self.query(condition), what)


@contextlib.contextmanager
def running_server(service: Service, limits: Limits | None = None) -> Iterator[RunningServer]:
    """A ``Listener`` for ``service`` on 127.0.0.1, port 0, in a thread with its own loop."""
    loop = new_event_loop()
    ready = threading.Event()
    holder: dict[str, Listener] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            listener = Listener(service, HOST, 0, limits or Limits())
            holder["listener"] = listener
            await listener.start()
            ready.set()
            await listener.stopped.wait()

        loop.run_until_complete(start())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    server = RunningServer(holder["listener"], loop)
    try:
        yield server
    finally:
        if not server.listener.stopped.is_set():
            asyncio.run_coroutine_threadsafe(server.listener.stop(), loop).result(20)
        thread.join(10)
        loop.close()


def recv_until(sock: socket.socket, terminator: bytes = b"\n", limit: int = 1 << 20) -> bytes:
    """Read until ``terminator`` (included) or EOF."""
    data = b""
    while terminator not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_records(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """Every record of ``logger_name``, on its own handler (the CLI may stop propagation)."""
    logger = logging.getLogger(logger_name)
    handler = ListHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- real processes ----------------------------------------------------------------------

LISTENING = re.compile(rb"started and listening on [^\s]+:(\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    ports: list[int]
    output: bytearray
    reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 20) -> int:
        rc = self.proc.wait(timeout_s)
        if self.reader is not None:
            self.reader.join(timeout_s)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return rc

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


STARTED: list[ServerProcess] = []
"""Every server process a test started; conftest kills the ones a failed test left behind."""


def kill_leftovers() -> None:
    while STARTED:
        server = STARTED.pop()
        if server.proc.poll() is None:
            server.proc.kill()
            server.wait()


def socklab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "socklab", *args]


def start_server_process(
    *args: str, listeners: int = 1, env: dict[str, str] | None = None, timeout_s: float = 20
) -> ServerProcess:
    """Start ``socklab serve ARGS`` and wait until ``listeners`` ports are listening."""
    proc = subprocess.Popen(
        socklab_command("serve", *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(proc, [], bytearray())
    STARTED.append(server)
    server.reader = threading.Thread(target=_pump_stderr, args=(server,), daemon=True)
    server.reader.start()
    deadline = time.monotonic() + timeout_s
    while len(server.ports) < listeners:
        server.ports = [int(port) for port in LISTENING.findall(bytes(server.output))]
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            server.wait()
            raise AssertionError(f"server did not start: {server.text()}")
        time.sleep(0.02)
    return server


def _pump_stderr(server: ServerProcess) -> None:
    stream = server.proc.stderr
    assert stream is not None
    with contextlib.suppress(ValueError, OSError):
        for line in iter(stream.readline, b""):
            server.output += line


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True
