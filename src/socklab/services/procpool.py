"""A small pool of worker processes whose tasks can be cancelled, even while they run.

Why not ``concurrent.futures.ProcessPoolExecutor``: a task it has started cannot be
cancelled, and killing one of its processes breaks the whole pool. Here each worker is
one process with one pipe, running one task at a time:

- ``submit(arg)`` queues ``function(arg)``; an idle worker takes it, and a new worker is
  started (up to ``size``) when the queue is not empty and none is idle. Workers start
  lazily, in a thread, so the event loop never waits for a process to start.
- ``cancel(task)`` (or cancelling the task's future) takes a queued task off the queue; a
  running one has its process killed (SIGKILL) and reaped, and a fresh worker starts
  when the next task needs one.
- A worker that dies by itself (a crash, an OOM kill, ``kill -9``) is noticed at once,
  through the end of file on its pipe: its task fails with ``WorkerDied`` and it is
  replaced the same way.
- ``close()`` fails every queued and running task with ``PoolClosed``, kills every
  worker and waits at most ``timeout_s`` for them to be reaped.

Workers are started by ``forkserver`` (``spawn`` where there is none), never by a bare
``fork`` of a process that may run threads; like every such start method this needs an
importable main module, and ``function`` must be a module-level function (it is pickled).
A worker ignores SIGINT: Ctrl-C reaches the whole process group, and the pool ends its
workers itself when the server stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from socklab.logs import fn

log = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
    """The worker process running the task ended before it answered."""


class PoolClosed(RuntimeError):
    """The pool was closed before the task finished."""


class TaskFailed(RuntimeError):
    """The function raised in the worker; the message names the exception."""


@dataclass(eq=False, slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    task: Task | None = None


@dataclass(eq=False, slots=True)
class Task:
    """One call of the pool's function: ``await task.future`` for its result."""

    arg: Any
    future: asyncio.Future[Any]
    worker: _Worker | None = field(default=None, repr=False)


def default_context() -> BaseContext:
    """``forkserver`` where there is one, else ``spawn``: never a bare ``fork``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class ProcessPool:
    """At most ``size`` processes running ``function(arg)`` for the tasks submitted.

    Create and use it inside one running event loop (else ``RuntimeError``); ``submit``
    and ``cancel`` never block it. Raises ``ValueError`` if ``size`` is below 1.
    """

    def __init__(
        self,
        size: int,
        function: Callable[[Any], Any],
        *,
        context: BaseContext | None = None,
        name: str = "socklab-worker",
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.function = function
        self.name = name
        self._context = context or default_context()
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[Task] = collections.deque()
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._starting = 0
        self._chores: set[asyncio.Task[None]] = set()  # worker starts and reaps in flight
        self._closed = False

    @property
    def pending(self) -> int:
        """Tasks queued or running."""
        return len(self._queue) + self.running

    @property
    def running(self) -> int:
        """Tasks a worker is running."""
        return sum(1 for worker in self._workers if worker.task is not None)

    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def running_pid(self, task: Task) -> int | None:
        """The process id of the worker running ``task``, if one is."""
        return task.worker.process.pid if task.worker is not None else None

    def submit(self, arg: Any) -> Task:
        """Queue ``function(arg)``; raises ``PoolClosed`` once the pool is closed."""
        if self._closed:
            raise PoolClosed("the pool is closed")
        task = Task(arg, self._loop.create_future())
        task.future.add_done_callback(lambda future: self._on_done(task, future))
        self._queue.append(task)
        self._dispatch()
        return task

    def cancel(self, task: Task) -> None:
        """Drop ``task``: off the queue, or its worker killed if it runs. Idempotent."""
        worker = task.worker
        if worker is not None:
            self._retire(worker, "its task was cancelled")
        else:
            with contextlib.suppress(ValueError):
                self._queue.remove(task)
        if not task.future.done():
            task.future.cancel()
        self._dispatch()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Fail every task with ``PoolClosed``, kill the workers, reap them.

        Waits at most about ``timeout_s``; a worker still unreaped then is logged and left
        to the start method's own clean-up. Safe to call more than once.
        """
        if not self._closed:
            self._closed = True
            while self._queue:
                _fail(self._queue.popleft(), PoolClosed("the pool was closed"))
            for worker in list(self._workers):
                self._retire(worker, "the pool is closing")
        chores = set(self._chores)
        if chores:
            _, late = await asyncio.wait(chores, timeout=timeout_s)
            if late:
                log.warning(
                    "%d worker processes not reaped after %g s",
                    len(late),
                    timeout_s,
                    extra=fn("stop_server"),
                )

    # -- internals ------------------------------------------------------------------------

    def _on_done(self, task: Task, future: asyncio.Future[Any]) -> None:
        if future.cancelled() and (task.worker is not None or task in self._queue):
            self.cancel(task)  # whoever awaited it was cancelled: so is the work

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            worker = self._idle.pop()
            task = self._queue.popleft()
            try:
                worker.conn.send(task.arg)
            except (OSError, ValueError):
                self._queue.appendleft(task)
                self._retire(worker, "its pipe is closed")
                continue
            worker.task, task.worker = task, worker
        if self._closed:
            return
        missing = min(len(self._queue), self.size - len(self._workers) - self._starting)
        for _ in range(max(0, missing)):
            self._starting += 1
            self._chore(self._start_worker())

    def _chore(self, coro: Any) -> None:
        chore = self._loop.create_task(coro)
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    async def _start_worker(self) -> None:
        began = time.perf_counter()
        try:
            process, conn = await asyncio.to_thread(
                _start_process, self._context, self.function, self.name
            )
        except Exception as exc:  # out of processes or file descriptors
            self._starting -= 1
            log.error("Could not start a worker process: %s", exc, extra=fn("start_server"))
            if not self._workers and not self._starting:
                while self._queue:
                    _fail(self._queue.popleft(), WorkerDied("no worker process could start"))
            return
        self._starting -= 1
        worker = _Worker(process, conn)
        if self._closed:
            await self._kill_and_reap(worker)
            return
        self._workers.add(worker)
        self._idle.append(worker)
        self._loop.add_reader(conn.fileno(), self._on_readable, worker)
        log.debug(
            "Worker process %s started in %.0f ms",
            process.pid,
            (time.perf_counter() - began) * 1000,
            extra=fn("start_server"),
        )
        self._dispatch()

    def _on_readable(self, worker: _Worker) -> None:
        try:
            ok, value = worker.conn.recv()
        except Exception:  # EOFError: the process is gone
            log.warning(
                "Worker process %s died %s; it will be replaced",
                worker.process.pid,
                "while running a task" if worker.task is not None else "while idle",
                extra=fn("handle_client"),
            )
            self._retire(worker, "it died", WorkerDied("the worker process died"))
            self._dispatch()
            return
        task, worker.task = worker.task, None
        if task is not None:
            task.worker = None
            if not task.future.done():
                if ok:
                    task.future.set_result(value)
                else:
                    task.future.set_exception(TaskFailed(value))
        self._idle.append(worker)
        self._dispatch()

    def _retire(self, worker: _Worker, why: str, error: BaseException | None = None) -> None:
        """Forget ``worker``, fail its task with ``error`` (None: cancel it), kill it, reap it."""
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(worker.conn.fileno())
        task, worker.task = worker.task, None
        if task is not None:
            task.worker = None
            _fail(task, PoolClosed("the pool was closed") if self._closed else error)
        pid = worker.process.pid
        log.debug("Ending worker process %s: %s", pid, why, extra=fn("handle_client"))
        self._chore(self._kill_and_reap(worker))

    async def _kill_and_reap(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        with contextlib.suppress(OSError, ValueError):
            worker.process.kill()
        # join() collects the exit status, so no zombie is left behind; a killed process
        # ends at once, and the bound only guards against the impossible.
        await asyncio.to_thread(worker.process.join, 10.0)
        if worker.process.exitcode is None:
            log.warning(
                "Worker process %s did not exit when killed",
                worker.process.pid,
                extra=fn("stop_server"),
            )


def _fail(task: Task, exc: BaseException | None) -> None:
    """End ``task``'s future: with ``exc``, or cancelled when ``exc`` is None."""
    if task.future.done():
        return
    if exc is None:
        task.future.cancel()
    else:
        task.future.set_exception(exc)


def _start_process(
    context: BaseContext, function: Callable[[Any], Any], name: str
) -> tuple[BaseProcess, Connection]:
    """Start one worker; runs in a thread (a start can take a while: forkserver's first)."""
    parent, child = context.Pipe()
    process = context.Process(  # type: ignore[attr-defined]
        target=_worker_main, args=(child, function), name=name, daemon=True
    )
    try:
        process.start()
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()  # the worker holds its own copy; ours would hide its end of file
    return process, parent


def _worker_main(conn: Connection, function: Callable[[Any], Any]) -> None:
    """A worker: answer one argument at a time until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            arg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[bool, Any] = (True, function(arg))
        except Exception as exc:
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:
            return
