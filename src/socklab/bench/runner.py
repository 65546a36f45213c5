"""One benchmark run over one or several processes, and its merged result.

How this works: with one process the load generator runs right here. With ``processes=P``
the connections are split over P worker processes (started with ``spawn``: no forked
event loops or threads), each running its own ``LoadGenerator`` on its own loop. Over a
pipe each worker says ``ready`` once its connections are open, receives the common start
time (``time.monotonic()`` is one clock for all processes), streams progress, and finally
sends its result. Results merge exactly: request and error counts add up, latency
histograms add bucket by bucket, so a percentile of the merged run is the percentile of
every request, not an average of per-process percentiles.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from socklab.bench.histogram import LatencyHistogram
from socklab.bench.load import BenchError, LoadPlan, LoadResult, Progress, Reporter, run_load
from socklab.bench.scenarios import ScenarioOptions, make_scenario
from socklab.client.tls import TlsOptions
from socklab.wire.framing import Dialect

START_DELAY_S = 0.1
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """Everything ``socklab bench`` was told."""

    service: str
    host: str = "127.0.0.1"
    port: int | None = None
    dialect: Dialect = Dialect.JSON
    connections: int = 50
    pipeline: int = 1
    batch: bool = False
    duration_s: float = 5.0
    warmup_s: float = 1.0
    processes: int = 1
    timeout_s: float = 10.0
    options: ScenarioOptions = field(default_factory=ScenarioOptions)
    tls: TlsOptions | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("at least one connection")
        if self.pipeline < 1:
            raise ValueError("a pipeline depth of at least 1")
        if not 1 <= self.processes <= self.connections:
            raise ValueError("between 1 process and one process per connection")
        if self.duration_s <= 0 or self.warmup_s < 0 or self.timeout_s <= 0:
            raise ValueError("a positive duration and timeout, and a warm-up of 0 or more")


@dataclass(frozen=True, slots=True)
class BenchResult:
    """A finished run: settings, throughput, latency percentiles and errors."""

    settings: BenchSettings
    port: int
    requests: int
    errors: dict[str, int]
    histogram: LatencyHistogram
    window_s: float
    cpu_s: tuple[float, ...]
    """CPU seconds each load-generator process used in the window."""
    began_at: float = 0.0
    """``time.monotonic()`` when the (earliest) measurement window opened."""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return self.histogram.percentile(q) / 1e6

    @property
    def busiest_cpu(self) -> float:
        """The busiest load-generator process's share of one core (1.0 = saturated)."""
        return max(self.cpu_s, default=0.0) / self.window_s if self.window_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``--json``: units in the keys, milliseconds for latency."""
        s = self.settings
        hist = self.histogram
        return {
            "service": s.service,
            "dialect": s.dialect.value,
            "tls": s.tls is not None,
            "host": s.host,
            "port": self.port,
            "connections": s.connections,
            "pipeline": s.pipeline,
            "batch": s.batch,
            "processes": s.processes,
            "digits": s.options.digits,
            "warmup_s": s.warmup_s,
            "duration_s": s.duration_s,
            "window_s": round(self.window_s, 4),
            "window_began_monotonic": round(self.began_at, 4),
            "requests": self.requests,
            "requests_per_s": round(self.requests_per_s, 1),
            "errors": self.error_count,
            "error_kinds": dict(sorted(self.errors.items())),
            "latency_ms": {
                "p50": round(self.latency_ms(0.50), 4),
                "p90": round(self.latency_ms(0.90), 4),
                "p99": round(self.latency_ms(0.99), 4),
                "max": round(hist.max_ns / 1e6, 4),
                "mean": round(hist.mean_ns / 1e6, 4),
            },
            "client_cpu": [
                round(c / self.window_s, 3) if self.window_s else 0.0 for c in self.cpu_s
            ],
        }


def merge_results(settings: BenchSettings, port: int, parts: list[LoadResult]) -> BenchResult:
    """Add up the processes' results exactly."""
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    for part in parts:
        histogram.merge(part.histogram)
        for kind, n in part.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    windows = [p.window_s for p in parts]
    return BenchResult(
        settings=settings,
        port=port,
        requests=sum(p.requests for p in parts),
        errors=errors,
        histogram=histogram,
        window_s=sum(windows) / len(windows) if windows else 0.0,
        cpu_s=tuple(p.cpu_s for p in parts),
        began_at=min((p.began_at for p in parts), default=0.0),
    )


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal shares: split(50, 3) == [17, 17, 16]."""
    share, rest = divmod(total, parts)
    return [share + (1 if i < rest else 0) for i in range(parts)]


ProgressCallback = Callable[[Progress], None]


class _Inline(Reporter):
    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress

    def progress(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)


def run_bench(settings: BenchSettings, on_progress: ProgressCallback | None = None) -> BenchResult:
    """Run the benchmark ``settings`` describe. Raises ``BenchError`` if it cannot run and
    ``ScenarioError`` for a scenario that cannot run as asked."""
    scenario = make_scenario(settings.service, settings.options)
    scenario.check_dialect(settings.dialect)
    port = scenario.default_port if settings.port is None else settings.port
    plans = _plans(settings, port)
    if len(plans) == 1:
        return merge_results(settings, port, [run_load(scenario, plans[0], _Inline(on_progress))])
    return merge_results(settings, port, _run_processes(settings, plans, on_progress))


def _plans(settings: BenchSettings, port: int) -> list[LoadPlan]:
    plans = []
    first = 0
    for count in split(settings.connections, settings.processes):
        plans.append(
            LoadPlan(
                host=settings.host,
                port=port,
                dialect=settings.dialect,
                connections=count,
                pipeline=settings.pipeline,
                batch=settings.batch,
                warmup_s=settings.warmup_s,
                duration_s=settings.duration_s,
                timeout_s=settings.timeout_s,
                first_index=first,
                tls=settings.tls,
            )
        )
        first += count
    return plans


# -- several processes -------------------------------------------------------------------


class _PipeReporter(Reporter):
    """A worker's side of the pipe to the parent."""

    def __init__(self, pipe: multiprocessing.connection.Connection) -> None:
        self.pipe = pipe

    def ready(self) -> None:
        self.pipe.send(("ready", None))

    async def wait_start(self) -> float:
        import asyncio

        loop = asyncio.get_running_loop()
        got: asyncio.Future[float] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(self.pipe.fileno())
            try:
                kind, value = self.pipe.recv()
            except EOFError:
                got.set_exception(BenchError("the parent process went away"))
                return
            got.set_result(float(value) if kind == "start" else -1.0)

        loop.add_reader(self.pipe.fileno(), readable)
        start_at = await got
        if start_at < 0:
            raise BenchError("cancelled by the parent process")
        return start_at

    def progress(self, progress: Progress) -> None:
        self.pipe.send(("progress", (progress.phase, progress.requests, progress.errors)))


def _worker_main(
    pipe: multiprocessing.connection.Connection,
    service: str,
    options: ScenarioOptions,
    plan: LoadPlan,
) -> None:
    """A worker process: build the scenario, run the plan, send the result (or the error)."""
    try:
        scenario = make_scenario(service, options)
        result = run_load(scenario, plan, _PipeReporter(pipe))
        pipe.send(("result", result.to_wire()))
    except BenchError as exc:
        pipe.send(("error", str(exc)))
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        pipe.close()


def _run_processes(
    settings: BenchSettings, plans: list[LoadPlan], on_progress: ProgressCallback | None
) -> list[LoadResult]:
    ctx = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        for plan in plans:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(child, settings.service, settings.options, plan),
                name=f"socklab-bench-{len(procs)}",
                daemon=True,
            )
            proc.start()
            child.close()
            pipes.append(parent)
            procs.append(proc)
        # 1. Every worker opens its connections.
        _wait_all(pipes, "ready", READY_TIMEOUT_S)
        # 2. One start time for all.
        start_at = time.monotonic() + START_DELAY_S
        for pipe in pipes:
            pipe.send(("start", start_at))
        # 3. Progress until every result is in.
        deadline = start_at + settings.warmup_s + settings.duration_s + settings.timeout_s + 30
        latest: dict[int, Progress] = {}
        results: dict[int, LoadResult] = {}
        while len(results) < len(pipes):
            waiting = [p for i, p in enumerate(pipes) if i not in results]
            ready = multiprocessing.connection.wait(
                waiting, timeout=max(0.0, deadline - time.monotonic())
            )
            if not ready:
                raise BenchError("a load-generator process stopped answering")
            for readable in ready:
                assert isinstance(readable, multiprocessing.connection.Connection)
                i = pipes.index(readable)
                kind, value = _receive(readable)
                if kind == "result":
                    results[i] = LoadResult.from_wire(value)
                elif kind == "progress":
                    latest[i] = Progress(*value)
                    if on_progress is not None and len(latest) == len(pipes):
                        on_progress(_sum_progress(latest.values()))
        return [results[i] for i in range(len(pipes))]
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("cancel", None))
        for worker in procs:
            worker.join(5)
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
        for pipe in pipes:
            pipe.close()


def _receive(pipe: multiprocessing.connection.Connection) -> tuple[str, Any]:
    try:
        kind, value = pipe.recv()
    except EOFError:
        raise BenchError("a load-generator process died") from None
    if kind == "error":
        raise BenchError(str(value))
    return str(kind), value


def _wait_all(
    pipes: list[multiprocessing.connection.Connection], kind: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(range(len(pipes)))
    while pending:
        ready = multiprocessing.connection.wait(
            [pipes[i] for i in pending], timeout=max(0.0, deadline - time.monotonic())
        )
        if not ready:
            raise BenchError(f"load-generator processes not {kind} within {timeout_s:g} s")
        for readable in ready:
            assert isinstance(readable, multiprocessing.connection.Connection)
            got, _ = _receive(readable)
            if got == kind:
                pending.discard(pipes.index(readable))


def _sum_progress(parts: Any) -> Progress:
    items = list(parts)
    phases = {p.phase for p in items}
    phase = "warmup" if "warmup" in phases else "measure" if "measure" in phases else "done"
    return Progress(phase, sum(p.requests for p in items), sum(p.errors for p in items))
