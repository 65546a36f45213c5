"""The load generator's engine: many connections on one event loop, in one process.

How this works: every connection is an ``asyncio.Protocol`` (callbacks, no task per
connection and no stream objects: the load generator must cost less than the server it
measures). A connection keeps ``pipeline`` requests in flight; each reply is checked
against the probe that asked for it (see ``scenarios``), timed, and immediately replaced
by the next request, all requests of one ``data_received`` going out in one write.
Latencies (ns) are appended to one array per process; a timer drains it into a
``LatencyHistogram`` a few times a second, checks for overdue replies and reports
progress.

A wrong reply, an error reply, a reply that never comes (``timeout_s``) or a connection the
server drops with requests in flight are errors. A lab or unparseable stream cannot be
resynchronised after a wrong reply, so that connection is closed and opened again; a
line-based stream just goes on. Errors are counted by kind.

The phases: connect every connection (and send its setup probes) -> report ready -> wait
for the start time -> warm up (nothing counted) -> measure for ``duration_s`` -> stop
sending and close. Requests still in flight at the end are neither counted nor errors.

With ``tls`` every connection is TLS (asyncio's own TLS transport). A plain load against a
TLS port gets the server's one-line refusal (``ERROR tls_...``): that ends the run at once
with a ``BenchError`` saying so, instead of counting errors for the whole window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from socklab.bench.histogram import LatencyHistogram
from socklab.bench.scenarios import Probe, ProbeSource, Scenario, reply_fields
from socklab.client.tls import TlsConfigError, TlsOptions, client_context, explain_tls_failure
from socklab.errors import PeerProtocolError, RequestRejected
from socklab.protocol.envelope import ERROR_MARK, id_prefix, unwrap
from socklab.wire.framing import Dialect

TICK_S = 0.2
_clock_ns = time.perf_counter_ns
RECONNECT_DELAY_S = 0.1
TLS_REFUSED = "tls_refused"
CLOSE_TIMEOUT_S = 2.0


class BenchError(Exception):
    """The benchmark could not run (nothing to connect to, a worker died)."""


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What one process does: which connections, how hard, for how long."""

    host: str
    port: int
    dialect: Dialect
    connections: int
    pipeline: int
    warmup_s: float
    duration_s: float
    timeout_s: float = 10.0
    batch: bool = False
    """Send ``pipeline`` requests, wait for every reply, repeat (redis-benchmark's ``-P``);
    by default a new request goes out as soon as any reply comes back."""
    first_index: int = 0
    """Index of this process's first connection (so processes send different payloads)."""
    tls: TlsOptions | None = None
    """Connect over TLS, checking the server's certificate as these options say."""


@dataclass(slots=True)
class LoadResult:
    """What one process measured in the measurement window."""

    requests: int
    errors: dict[str, int]
    histogram: LatencyHistogram
    window_s: float
    cpu_s: float
    connections: int
    began_at: float = 0.0
    """``time.monotonic()`` when the measurement window opened (one clock for all processes)."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "histogram": self.histogram.to_dict(),
            "window_s": self.window_s,
            "cpu_s": self.cpu_s,
            "connections": self.connections,
            "began_at": self.began_at,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LoadResult:
        return cls(
            requests=int(data["requests"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            histogram=LatencyHistogram.from_dict(data["histogram"]),
            window_s=float(data["window_s"]),
            cpu_s=float(data["cpu_s"]),
            connections=int(data["connections"]),
            began_at=float(data["began_at"]),
        )


@dataclass(slots=True)
class Progress:
    """A snapshot for a progress bar: the phase and the counts so far in it."""

    phase: str  # "warmup" | "measure" | "done"
    requests: int
    errors: int


class Reporter:
    """How a ``LoadGenerator`` talks to whoever started it (in-process: nothing to do)."""

    def ready(self) -> None:
        """Every connection is open and set up."""

    async def wait_start(self) -> float:
        """The ``time.monotonic()`` at which to start sending."""
        return time.monotonic()

    def progress(self, progress: Progress) -> None:
        """Called every ``TICK_S`` while the load runs."""


@dataclass(slots=True)
class _Stats:
    samples: array[int] = field(default_factory=lambda: array("q"))
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, n: int = 1) -> None:
        if n > 0:
            self.errors[kind] = self.errors.get(kind, 0) + n

    def drain(self) -> None:
        if self.samples:
            self.histogram.record_many(self.samples)
            del self.samples[:]

    def reset(self) -> None:
        del self.samples[:]
        self.histogram = LatencyHistogram()
        self.errors.clear()

    @property
    def requests(self) -> int:
        return self.histogram.count + len(self.samples)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


# In flight: (sent at, expected reply bytes or None, probe, request id).
_InFlight = tuple[int, bytes | None, Probe, int]


class BenchConnection(asyncio.Protocol):
    """One connection of the load generator; subclasses parse one dialect's replies."""

    def __init__(self, gen: LoadGenerator, index: int, source: ProbeSource) -> None:
        self.gen = gen
        self.index = index
        self.source = source
        self.transport: asyncio.Transport | None = None
        self.inflight: deque[_InFlight] = deque()
        self.buffer = b""
        self.setup: deque[Probe] = deque(source.setup)
        self.is_setting_up = bool(self.setup)
        self.is_failed = False
        self.set_up: asyncio.Future[None] = gen.loop.create_future()
        self.lost: asyncio.Future[None] = gen.loop.create_future()
        self.pipeline = gen.plan.pipeline
        # Top up when this many or fewer are in flight: at once (window), or once the
        # whole batch is answered (batch).
        self.refill_at = 0 if gen.plan.batch else self.pipeline - 1
        self._record = gen.stats.samples.append
        self._ids = 0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.setup:
            self._send_setup()
        else:
            self.set_up.set_result(None)
            if self.gen.is_running:
                self.start()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.is_failed and self.gen.is_running:
            self.gen.stats.error("disconnected", max(1, len(self.inflight)))
        self.inflight.clear()
        self._setup_failed("the server closed the connection during setup")
        self.gen.connection_lost(self)

    def _setup_failed(self, message: str) -> None:
        if not self.set_up.done():
            self.set_up.set_exception(BenchError(message))
            self.set_up.exception()  # retrieved: nobody may be waiting any more

    # -- sending --------------------------------------------------------------------------

    def start(self) -> None:
        """Fill the pipeline."""
        if not self.is_setting_up and not self.is_failed:
            self.send(self.pipeline - len(self.inflight), _clock_ns())

    def send(self, n: int, now: int) -> None:
        if n <= 0 or self.transport is None:
            return
        next_probe = self.source.next
        encode = self.encode
        inflight = self.inflight
        if n == 1:
            probe = next_probe()
            data, expected = encode(probe)
            inflight.append((now, expected, probe, self._ids))
            self.transport.write(data)
            return
        parts = []
        for _ in range(n):
            probe = next_probe()
            chunk, expected = encode(probe)
            parts.append(chunk)
            inflight.append((now, expected, probe, self._ids))
        self.transport.write(b"".join(parts))

    def encode(self, probe: Probe) -> tuple[bytes, bytes | None]:
        """The bytes to send for ``probe`` and the exact reply expected (``None``: unknown)."""
        return probe.request, probe.reply

    def _send_setup(self) -> None:
        probe = self.setup.popleft()
        data, expected = self.encode(probe)
        self.inflight.append((time.perf_counter_ns(), expected, probe, self._ids))
        assert self.transport is not None
        self.transport.write(data)

    # -- receiving ------------------------------------------------------------------------

    def completed(self, now: int) -> None:
        """Replies came (right or wrong): go on with the setup, or refill the pipeline."""
        if self.is_setting_up:
            if self.setup:
                self._send_setup()
            else:
                self.is_setting_up = False
                if not self.set_up.done():
                    self.set_up.set_result(None)
                if self.gen.is_running:
                    self.start()
            return
        if self.gen.is_running and len(self.inflight) <= self.refill_at:
            self.send(self.pipeline - len(self.inflight), now)

    def judge(self, reply: bytes, entry: _InFlight) -> bool:
        """Whether ``reply`` (a full reply, line terminator included) is right for ``entry``."""
        raise NotImplementedError

    def fail(self, kind: str) -> None:
        """Count every request in flight as an error of ``kind`` and reconnect."""
        if self.is_failed:
            return
        self.is_failed = True
        self.gen.stats.error(kind, max(1, len(self.inflight)))
        self.inflight.clear()
        if self.is_setting_up:
            refusal = self.gen.fatal
            self._setup_failed(str(refusal) if refusal else f"setup failed: {kind}")
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.is_failed = True  # nothing in flight now is an error: the run is over
        if self.transport is not None:
            self.transport.close()


class LineConnection(BenchConnection):
    """``line`` and ``json``: replies end with ``\\n``; a wrong one does not desync the stream."""

    def data_received(self, data: bytes) -> None:
        now = _clock_ns()
        inflight = self.inflight
        if not self.buffer and inflight and data == inflight[0][1]:
            # The common case: exactly the one reply expected.
            if self.is_setting_up:
                inflight.popleft()
                self.completed(now)
                return
            self._record(now - inflight.popleft()[0])
            if self.gen.is_running and len(inflight) <= self.refill_at:
                self.send(self.pipeline - len(inflight), now)
            return
        buffer = self.buffer + data if self.buffer else data
        start = 0
        done = 0
        record = self._record
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start : end + 1]
            start = end + 1
            if not inflight:
                self.fail("unexpected_reply")
                return
            entry = inflight.popleft()
            done += 1
            if line == entry[1] or self.judge(line, entry):
                if not self.is_setting_up:
                    record(now - entry[0])
            else:
                self.wrong(self.error_kind(line))
                if self.is_failed:
                    return
        self.buffer = buffer[start:] if start < len(buffer) else b""
        if done:
            self.completed(now)

    def error_kind(self, line: bytes) -> str:
        if line.startswith(b"ERROR "):
            return self.gen.check_refusal(line) or "error_reply"
        return "wrong_reply"

    def wrong(self, kind: str) -> None:
        if self.is_setting_up:
            self.fail("setup_" + kind)
        else:
            self.gen.stats.error(kind)

    def judge(self, reply: bytes, entry: _InFlight) -> bool:
        accept = entry[2].accept
        if accept is None:
            return False
        try:
            return bool(accept(reply[:-1].rstrip(b"\r").decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            return False


class JsonConnection(LineConnection):
    """The json dialect: numbered requests, replies in order, judged by meaning if need be."""

    def encode(self, probe: Probe) -> tuple[bytes, bytes | None]:
        self._ids += 1
        rid = self._ids
        prefix = id_prefix(rid)
        request = prefix + probe.request
        if probe.reply is None:
            return request, None
        return request, prefix + probe.reply

    def error_kind(self, line: bytes) -> str:
        if line.startswith(b"ERROR "):
            return self.gen.check_refusal(line) or "wrong_reply"
        return "error_reply" if ERROR_MARK in line else "wrong_reply"

    def judge(self, reply: bytes, entry: _InFlight) -> bool:
        try:
            value = json.loads(reply)
        except ValueError:
            return False
        if not isinstance(value, dict):
            return False
        try:
            fields = unwrap(value, entry[3], "the server")
        except (RequestRejected, PeerProtocolError):
            return False
        probe = entry[2]
        for key, expected in reply_fields(probe).items():
            if fields.get(key) != expected:
                return False
        return probe.accept is None or bool(probe.accept(fields))


class LabConnection(BenchConnection):
    """The lab dialect: raw replies, delimited only by knowing each one's bytes."""

    def data_received(self, data: bytes) -> None:
        now = _clock_ns()
        inflight = self.inflight
        if not self.buffer and inflight and data == inflight[0][1]:
            # The common case: exactly the one reply expected.
            self._record(now - inflight.popleft()[0])
            if self.gen.is_running and len(inflight) <= self.refill_at:
                self.send(self.pipeline - len(inflight), now)
            return
        buffer = self.buffer + data if self.buffer else data
        done = 0
        record = self._record
        while inflight:
            expected = inflight[0][1]
            assert expected is not None  # lab probes always know their reply
            size = len(expected)
            if len(buffer) < size:
                break
            if buffer[:size] != expected:
                self.fail(self.error_kind(buffer))
                return
            record(now - inflight.popleft()[0])
            buffer = buffer[size:]
            done += 1
        if buffer and not (inflight and (inflight[0][1] or b"").startswith(buffer)):
            # Bytes no request explains: the stream is out of step; start again.
            self.fail(self.error_kind(buffer) if inflight else "unexpected_reply")
            return
        self.buffer = buffer
        if done:
            self.completed(now)

    def error_kind(self, data: bytes) -> str:
        if data.startswith(b"ERROR "):
            return self.gen.check_refusal(data) or "error_reply"
        return "wrong_reply"


_CONNECTIONS: dict[Dialect, type[BenchConnection]] = {
    Dialect.JSON: JsonConnection,
    Dialect.LINE: LineConnection,
    Dialect.LAB: LabConnection,
}


class LoadGenerator:
    """Runs a ``LoadPlan`` of one ``Scenario`` on the running loop."""

    def __init__(
        self, scenario: Scenario, plan: LoadPlan, reporter: Reporter | None = None
    ) -> None:
        scenario.check_dialect(plan.dialect)
        self.scenario = scenario
        self.plan = plan
        self.reporter = reporter or Reporter()
        self.loop = asyncio.get_running_loop()
        self.stats = _Stats()
        self.is_running = False
        self.connections: dict[int, BenchConnection] = {}
        self._phase = "warmup"
        self._tasks: set[asyncio.Task[None]] = set()
        self._timeout_ns = int(plan.timeout_s * 1e9)
        self.fatal: BenchError | None = None
        self._stop_early = asyncio.Event()
        try:
            self._ssl = None if plan.tls is None else client_context(plan.tls)
        except TlsConfigError as exc:
            raise BenchError(str(exc)) from None

    def check_refusal(self, data: bytes) -> str | None:
        """If ``data`` is the server's refusal of a plain client on a TLS port, end the run
        (``run`` raises it) and return its error kind."""
        if not data.startswith(b"ERROR tls_"):
            return None
        if self.fatal is None:
            line = data.split(b"\n", 1)[0].decode("utf-8", "replace")[:300]
            where = f"{self.plan.host}:{self.plan.port}"
            self.fatal = BenchError(f"the server at {where} refused: {line}")
            self._stop_early.set()
        return TLS_REFUSED

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``time.monotonic()`` reaches ``deadline``; raise ``fatal`` at once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_early.wait(), max(0.0, deadline - time.monotonic()))
        if self.fatal is not None:
            raise self.fatal

    async def run(self) -> LoadResult:
        """Connect, wait for the start, warm up, measure, close. Raises ``BenchError`` if the
        first connections cannot be opened or set up."""
        plan = self.plan
        await self._connect_all()
        self.reporter.ready()
        start_at = await self.reporter.wait_start()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        ticker = self.loop.create_task(self._tick_forever())
        try:
            self.is_running = True
            for conn in list(self.connections.values()):
                conn.start()
            await self._sleep_until(start_at + plan.warmup_s)
            # The warm-up is over: forget it.
            self.stats.reset()
            self._phase = "measure"
            began = time.monotonic()
            cpu_began = time.process_time()
            await self._sleep_until(start_at + plan.warmup_s + plan.duration_s)
            self.is_running = False
            ended = time.monotonic()
            cpu_ended = time.process_time()
            self.stats.drain()
            self._phase = "done"
        finally:
            self.is_running = False
            ticker.cancel()
            await self._close_all()
        self.reporter.progress(Progress("done", self.stats.histogram.count, self.stats.error_count))
        return LoadResult(
            requests=self.stats.histogram.count,
            errors=dict(self.stats.errors),
            histogram=self.stats.histogram,
            window_s=ended - began,
            cpu_s=cpu_ended - cpu_began,
            began_at=began,
            connections=plan.connections,
        )

    # -- connections ----------------------------------------------------------------------

    async def _connect_all(self) -> None:
        results = await asyncio.gather(
            *(self._open(index) for index in range(self.plan.connections)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                await self._close_all()
                if isinstance(result, BenchError):
                    raise result
                where = f"{self.plan.host}:{self.plan.port}"
                if self._ssl is not None and isinstance(result, ssl.SSLError):
                    raise BenchError(explain_tls_failure(result, where)) from result
                reason = getattr(result, "strerror", None) or str(result) or type(result).__name__
                raise BenchError(f"cannot connect to {where}: {reason}") from result

    async def _open(self, index: int) -> None:
        """Open connection ``index`` and run its setup; it counts as open only after that."""
        plan = self.plan
        source = self.scenario.source(plan.dialect, plan.first_index + index)
        cls = _CONNECTIONS[plan.dialect]
        tls = self._ssl
        _, conn = await self.loop.create_connection(
            lambda: cls(self, index, source),
            plan.host,
            plan.port,
            ssl=tls,
            server_hostname=plan.host if tls is not None else None,
            ssl_handshake_timeout=plan.timeout_s if tls is not None else None,
        )
        try:
            await asyncio.wait_for(conn.set_up, plan.timeout_s)
        except BaseException:
            conn.is_failed = True
            if conn.transport is not None:
                conn.transport.abort()
            raise
        self.connections[index] = conn

    def connection_lost(self, conn: BenchConnection) -> None:
        if self.is_running and self.connections.get(conn.index) is conn:
            del self.connections[conn.index]
            self._spawn(self._reopen(conn.index))

    async def _reopen(self, index: int) -> None:
        await asyncio.sleep(RECONNECT_DELAY_S)
        while self.is_running:
            try:
                await self._open(index)
            except (OSError, BenchError, TimeoutError):
                self.stats.error("connect")
                await asyncio.sleep(RECONNECT_DELAY_S)
            else:
                return

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_all(self) -> None:
        # Reconnections still running first: each either aborts what it opened or has
        # put its connection in ``connections`` before the list below is taken.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        conns = list(self.connections.values())
        for conn in conns:
            conn.close()
        # Let the transports send their FIN (with TLS, a close_notify first, answered by the
        # server's) and finish, before the loop closes under them.
        closing = [conn.lost for conn in conns if not conn.lost.done()]
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_TIMEOUT_S)
        for conn in conns:
            if not conn.lost.done() and conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)

    # -- the timer ------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._tick()

    def _tick(self) -> None:
        stats = self.stats
        stats.drain()
        now = time.perf_counter_ns()
        for conn in list(self.connections.values()):
            if conn.inflight and now - conn.inflight[0][0] > self._timeout_ns:
                conn.fail("timeout")
        self.reporter.progress(Progress(self._phase, stats.histogram.count, stats.error_count))


def run_load(
    scenario: Scenario,
    plan: LoadPlan,
    reporter: Reporter | None = None,
    *,
    runner: Callable[[Callable[[], Awaitable[LoadResult]]], LoadResult] | None = None,
) -> LoadResult:
    """Run ``plan`` on a fresh event loop (uvloop when installed) and return what it measured."""
    from socklab.server.runtime import run

    async def main() -> LoadResult:
        return await LoadGenerator(scenario, plan, reporter).run()

    result: LoadResult = (runner or run)(main)
    return result
