"""``socklab bench``: a load generator for the socklab services (and anything speaking them)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from socklab.bench.load import BenchError, Progress
from socklab.bench.runner import BenchResult, BenchSettings, run_bench
from socklab.bench.scenarios import SCENARIOS, ScenarioError, ScenarioOptions
from socklab.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Failed, logging_options
from socklab.cli.tls import tls_client_options
from socklab.client.tls import TlsOptions
from socklab.wire.framing import Dialect


@click.command()
@click.argument("service", type=click.Choice(sorted(SCENARIOS)))
@click.option("-c", "--connections", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "-d",
    "--duration",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="Seconds measured, after the warm-up.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds of load before measuring starts (not counted).",
)
@click.option(
    "--pipeline",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Requests in flight per connection.",
)
@click.option(
    "--batch",
    is_flag=True,
    help="Send --pipeline requests, wait for all their replies, repeat (like redis-benchmark "
    "-P). Default: a new request as soon as any reply arrives.",
)
@click.option(
    "--dialect",
    type=click.Choice([d.value for d in Dialect]),
    default=Dialect.JSON.value,
    show_default=True,
    help="lab only for text and numbers: its replies have no framing.",
)
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SOCKLAB_HOST")
@click.option("--port", type=click.IntRange(1, 65535), help="Default: the service's default port.")
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Load-generator processes; the connections are split between them.",
)
@click.option("--digits", type=click.IntRange(1), help="numbers: send numbers of N digits.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.01),
    default=10.0,
    show_default=True,
    help="Seconds a reply may take before it counts as an error.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the payloads.")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Scenario setting, e.g. bank: account=1, pin=1234.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@logging_options
@tls_client_options
def bench(
    service: str,
    connections: int,
    duration: float,
    warmup: float,
    pipeline: int,
    batch: bool,
    dialect: str,
    host: str,
    port: int | None,
    processes: int,
    digits: int | None,
    timeout: float,
    seed: int,
    params: tuple[str, ...],
    as_json: bool,
    tls: TlsOptions | None,
) -> int:
    """Load SERVICE with C connections for S seconds; report requests/s, latency, errors.

    Every reply is checked: a wrong reply, an error reply, a timeout or a dropped
    connection counts as an error. Exit status 1 if there was any error.

    \b
    socklab bench text --dialect lab -c 50 -d 5
    socklab bench text --dialect json -c 50 --pipeline 16 -p 2 --json
    socklab bench numbers --digits 10000 -c 1
    socklab bench bank --tls --cafile ca.pem -c 16
    """
    if processes > connections:
        raise Failed("--processes cannot exceed --connections", EXIT_USAGE)
    extra: dict[str, str] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if not sep or not key:
            raise Failed(f"--param takes KEY=VALUE, not {param!r}", EXIT_USAGE)
        extra[key] = value
    settings = BenchSettings(
        service=service,
        host=host,
        port=port,
        dialect=Dialect(dialect),
        connections=connections,
        pipeline=pipeline,
        batch=batch,
        duration_s=duration,
        warmup_s=warmup,
        processes=processes,
        timeout_s=timeout,
        options=ScenarioOptions(digits=digits, seed=seed, extra=extra),
        tls=tls,
    )
    show_bar = not as_json and sys.stderr.isatty()
    try:
        with _progress_bar(settings, show_bar) as on_progress:
            result = run_bench(settings, on_progress)
    except ScenarioError as exc:
        raise Failed(str(exc), EXIT_USAGE) from None
    except BenchError as exc:
        raise Failed(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(format_result(result))
    return EXIT_FAILURE if result.error_count else EXIT_OK


def format_result(result: BenchResult) -> str:
    """The human summary of a run."""
    s = result.settings
    digits = f", {s.options.digits}-digit numbers" if s.options.digits else ""
    lines = [
        f"{s.service} over {s.dialect.value}{' with TLS' if s.tls else ''} at "
        f"{s.host}:{result.port}: "
        f"{s.connections} connections, pipeline {s.pipeline}{' (batches)' if s.batch else ''}, "
        f"{s.processes} process{'es' if s.processes > 1 else ''}{digits}",
        f"  measured   {result.window_s:.2f} s after a {s.warmup_s:g} s warm-up",
        f"  requests   {result.requests:,}  ({result.requests_per_s:,.0f} req/s)",
        "  latency    "
        + "  ".join(
            f"{name} {_ms(value)}"
            for name, value in (
                ("p50", result.latency_ms(0.5)),
                ("p90", result.latency_ms(0.9)),
                ("p99", result.latency_ms(0.99)),
                ("max", result.histogram.max_ns / 1e6),
            )
        ),
    ]
    if result.errors:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(result.errors.items()))
        lines.append(f"  errors     {result.error_count:,}  ({kinds})")
    else:
        lines.append("  errors     0")
    if result.busiest_cpu > 0.9:
        lines.append(
            f"  note       a load-generator process used {result.busiest_cpu:.0%} of a core: "
            "it may be the bottleneck (try --processes)"
        )
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


@contextmanager
def _progress_bar(
    settings: BenchSettings, enabled: bool
) -> Iterator[Callable[[Progress], None] | None]:
    """A rich progress bar over the run's time, on a terminal only."""
    if not enabled:
        yield None
        return
    import time

    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    total = settings.warmup_s + settings.duration_s
    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=True,
    )
    state: dict[str, Any] = {"began": None, "mark": None, "rate": 0.0}

    def on_progress(progress: Progress) -> None:
        now = time.monotonic()
        if state["began"] is None:
            state["began"] = now
        mark = state["mark"]
        if mark is None or progress.requests < mark[1]:  # start, or the warm-up was dropped
            state["mark"] = (now, progress.requests)
        elif now - mark[0] >= 0.5:  # a rate over half a second, not between two messages
            state["rate"] = (progress.requests - mark[1]) / (now - mark[0])
            state["mark"] = (now, progress.requests)
        bar.update(
            task,
            completed=min(total, now - state["began"]),
            description="warming up" if progress.phase == "warmup" else "measuring",
            status=f"{state['rate']:,.0f} req/s  {progress.errors} errors",
        )

    with bar:
        task = bar.add_task("connecting", total=total, status="")
        yield on_progress
