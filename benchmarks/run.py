"""Run the standard benchmarks and write docs/benchmarks.md.

    python benchmarks/run.py                       # 5 runs x 5 s after a 1 s warm-up
    python benchmarks/run.py --runs 3 --duration 2 --output /tmp/bench.md

Starts real servers as subprocesses — ``socklab serve text`` and ``socklab serve numbers``
(one process, ``-q``) and the thread-per-connection baseline
(``benchmarks/baselines/thread_server.py``) — and drives them with ``socklab bench --json``
subprocesses. Runs are interleaved (baseline, socklab, baseline, ...) so a noisy minute
hurts both sides alike; the table shows medians over the runs and ratios against the
baseline measured in the same invocation.

Scenarios:

- text-lab: text over lab, 50 connections, no pipelining: socklab vs the baseline.
- text-json: text over json, 50 connections, pipeline depth 16, vs the baseline's
  unpipelined lab figure (the baseline speaks only lab and cannot pipeline); once with a
  new request as soon as a reply arrives, once in batches of 16 (``--batch``).
- numbers: one connection sends 10,000-digit numbers over lab while 49 others send small
  ones; reports the big requests' latency and the small ones' p99 during it, next to the
  small ones' p99 with no big requests.
- tls: text over lab and the bank's keyed deposits, each on a plain server and on the same
  server with ``--tls-cert`` (a throwaway certificate from trustme), in the same runs.
- fairness: one connection floods ``socklab serve text`` at pipeline depth 1,000 in each
  dialect (json, line, lab) while a second connection measures its p99 over json, one
  request at a time; also 200-digit hard numbers flooding ``socklab serve numbers``.
  Reports the victim's p99 alone and during the flood (and their ratio), and the
  flooder's requests/s. Only this one::

      python benchmarks/run.py --skip text --skip numbers --skip bank --skip tls
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "baselines" / "thread_server.py"
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"
HOST = "127.0.0.1"
BIG_DIGITS = 10_000

# -- machine -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU, cores, Python, uvloop, load: what a reader needs to compare figures."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        loop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio (uvloop not installed)"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    load = "unknown"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "event loop": loop,
        "os": f"{platform.system()} {platform.release()}",
        "load average before": load,
        "socklab": _git_revision(),
    }


def _git_revision() -> str:
    """The commit measured, and the source files that differ from it."""
    git = ["git", "-C", str(ROOT)]
    revision = command_output([*git, "rev-parse", "--short", "HEAD"])
    if revision == "unknown":
        return revision
    changed = command_output([*git, "diff", "--name-only", "HEAD", "--", "src"]).split()
    if changed:
        return f"git {revision} with uncommitted changes in {', '.join(changed)}"
    return f"git {revision}"


def command_output(cmd: list[str]) -> str:
    """What ``cmd`` prints, or ``unknown``."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


# -- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    output: bytearray = field(default_factory=bytearray)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.output.decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_connectable(server: Server, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with socket.create_connection((HOST, server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{server.name} is not accepting connections on port {server.port}")


def drain(stream: Any, sink: bytearray) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in iter(stream.readline, b""):
            sink += line


@contextlib.contextmanager
def socklab_server(service: str, extra: Sequence[str] = ()) -> Iterator[Server]:
    """``socklab serve SERVICE --port P -q`` as a subprocess (-q: no per-request log lines)."""
    port = free_port()
    cmd = [sys.executable, "-m", "socklab", "serve", service, "--port", str(port), "-q", *extra]
    with _process(f"socklab serve {service}", cmd, port) as server:
        yield server


@contextlib.contextmanager
def baseline_server(service: str) -> Iterator[Server]:
    cmd = [sys.executable, str(BASELINE), "--port", "0", "--service", service]
    with _process(f"thread baseline ({service})", cmd, None) as server:
        yield server


@contextlib.contextmanager
def _process(name: str, cmd: list[str], port: int | None) -> Iterator[Server]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    assert proc.stdout is not None
    output = bytearray()
    try:
        if port is None:  # the baseline says where it listens
            line = proc.stdout.readline()
            output += line
            match = re.search(rb"listening on \S+:(\d+)", line)
            if match is None:
                raise RuntimeError(f"{name} did not start: {line!r}")
            port = int(match.group(1))
        reader = threading.Thread(target=drain, args=(proc.stdout, output), daemon=True)
        reader.start()
        server = Server(name, proc, port, output)
        _wait_connectable(server)
        yield server
        server.check_alive()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# -- CPU accounting ----------------------------------------------------------------------


class CpuSampler:
    """Samples, ten times a second, the CPU seconds of some processes and of the machine.

    ``share(pid, start, end)`` is the share of one core a process used between two
    ``time.monotonic()`` instants (a server near 100 % is saturated); ``machine(start, end)``
    the busy share of all cores (what else ran shows up here).
    """

    INTERVAL_S = 0.1

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.samples: list[tuple[float, dict[int, float], float, float]] = []
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        cpu = {}
        for pid in list(self.pids):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[pid] = (int(fields[11]) + int(fields[12])) / self._tick
        busy = total = 0.0
        with contextlib.suppress(OSError, ValueError):
            numbers = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            total = float(sum(numbers[:8]))
            busy = total - numbers[3] - numbers[4]
        self.samples.append((time.monotonic(), cpu, busy, total))

    def _around(self, start: float, end: float) -> tuple[Any, Any] | None:
        before = [s for s in self.samples if s[0] <= start]
        after = [s for s in self.samples if s[0] >= end]
        if not before or not after:
            return None
        return before[-1], after[0]

    def share(self, pid: int, start: float, end: float) -> float | None:
        found = self._around(start, end)
        if found is None or pid not in found[0][1] or pid not in found[1][1]:
            return None
        first, last = found
        return float((last[1][pid] - first[1][pid]) / (last[0] - first[0]))

    def machine(self, start: float, end: float) -> float | None:
        found = self._around(start, end)
        if found is None or found[1][3] <= found[0][3]:
            return None
        first, last = found
        return float((last[2] - first[2]) / (last[3] - first[3]))


# -- load --------------------------------------------------------------------------------


def bench_command(service: str, port: int, args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "socklab",
        "bench",
        service,
        "--host",
        HOST,
        "--port",
        str(port),
        "--json",
        *args,
    ]


def shown(args: Sequence[str]) -> str:
    """A bench command as a reader would type it."""
    return "socklab bench " + shlex.join(args)


def run_bench(service: str, port: int, args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    done = subprocess.run(
        bench_command(service, port, args), capture_output=True, text=True, timeout=timeout_s
    )
    if not done.stdout.strip():
        raise RuntimeError(f"socklab bench failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_together(
    jobs: Sequence[tuple[str, int, Sequence[str]]], timeout_s: float
) -> list[dict[str, Any]]:
    """Several bench commands at once (one load, two kinds of request)."""
    procs = [
        subprocess.Popen(
            bench_command(service, port, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for service, port, args in jobs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout_s)
        if not out.strip():
            raise RuntimeError(f"socklab bench failed ({proc.returncode}): {err[-2000:]}")
        results.append(json.loads(out))
    return results


# -- summaries ---------------------------------------------------------------------------


@dataclass
class Series:
    """One scenario on one server, over several runs."""

    label: str
    command: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [_get(run, key) for run in self.runs]
        return statistics.median(values) if values else 0.0

    @property
    def errors(self) -> int:
        return sum(int(run["errors"]) for run in self.runs)

    @property
    def error_text(self) -> str:
        """The error count over all runs, with its kinds: ``3 (timeout 2, wrong_reply 1)``."""
        kinds: dict[str, int] = {}
        for run in self.runs:
            for kind, n in run.get("error_kinds", {}).items():
                kinds[kind] = kinds.get(kind, 0) + int(n)
        if not kinds:
            return str(self.errors)
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        return f"{self.errors} ({detail})"

    def median_of(self, key: str) -> float | None:
        values = [run[key] for run in self.runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    @property
    def client_cpu(self) -> float:
        """The busiest load-generator process's median share of a core."""
        return statistics.median(max(run["client_cpu"]) for run in self.runs) if self.runs else 0.0


def _get(run: dict[str, Any], key: str) -> float:
    value: Any = run
    for part in key.split("."):
        value = value[part]
    return float(value)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# -- the scenarios -----------------------------------------------------------------------


@dataclass
class Options:
    runs: int
    duration_s: float
    warmup_s: float
    connections: int
    pipeline: int
    processes: int
    big_digits: int
    big_connections: int
    big_duration_s: float
    skip: frozenset[str]
    flood_pipeline: int = 1000
    flood_digits: int = 200

    def load_args(self) -> list[str]:
        return [
            "--connections",
            str(self.connections),
            "--duration",
            f"{self.duration_s:g}",
            "--warmup",
            f"{self.warmup_s:g}",
            "--processes",
            str(self.processes),
        ]

    @property
    def timeout_s(self) -> float:
        return self.warmup_s + self.duration_s + 120


def measure(
    sampler: CpuSampler, server: Server, service: str, args: Sequence[str], timeout_s: float
) -> dict[str, Any]:
    """One bench run, with the server's CPU share and the machine's load in its window."""
    server.check_alive()
    result = run_bench(service, server.port, args, timeout_s)
    annotate(sampler, server, result)
    return result


def annotate(sampler: CpuSampler, server: Server, result: dict[str, Any]) -> None:
    time.sleep(2 * CpuSampler.INTERVAL_S)  # a sample after the window closed
    start = float(result["window_began_monotonic"])
    end = start + float(result["window_s"])
    result["server_cpu"] = sampler.share(server.proc.pid, start, end)
    result["machine_busy"] = sampler.machine(start, end)


def text_scenarios(opts: Options, log: Any) -> dict[str, Series]:
    lab_args = [*opts.load_args(), "--dialect", "lab"]
    json_args = [*opts.load_args(), "--dialect", "json", "--pipeline", str(opts.pipeline)]
    batch_args = [*json_args, "--batch"]
    series = {
        "baseline-lab": Series("thread baseline, lab", shown(["text", *lab_args])),
        "socklab-lab": Series("socklab, lab", shown(["text", *lab_args])),
        "socklab-json": Series(
            f"socklab, json, pipeline {opts.pipeline}", shown(["text", *json_args])
        ),
        "socklab-json-batch": Series(
            f"socklab, json, pipeline {opts.pipeline} in batches", shown(["text", *batch_args])
        ),
    }
    with (
        CpuSampler() as sampler,
        baseline_server("text") as baseline,
        socklab_server("text") as ours,
    ):
        sampler.pids.update({baseline.proc.pid, ours.proc.pid})
        for i in range(opts.runs):
            steps: list[tuple[str, Server, list[str]]] = [
                ("baseline-lab", baseline, lab_args),
                ("socklab-lab", ours, lab_args),
            ]
            if "text-json" not in opts.skip:
                steps.append(("socklab-json", ours, json_args))
                steps.append(("socklab-json-batch", ours, batch_args))
            # A different order each run, so no server always goes first.
            turn = i % len(steps)
            for key, server, args in steps[turn:] + steps[:turn]:
                result = measure(sampler, server, "text", args, opts.timeout_s)
                series[key].runs.append(result)
                log(
                    f"run {i + 1}/{opts.runs} {series[key].label}: "
                    f"{result['requests_per_s']:,.0f} req/s, p99 {result['latency_ms']['p99']} ms, "
                    f"errors {result['errors']}, load-gen cpu {result['client_cpu']}, "
                    f"server cpu {_pct(result['server_cpu'])}, "
                    f"machine busy {_pct(result['machine_busy'])}"
                )
    return series


BANK_CONNECTIONS = 16


def bank_scenarios(opts: Options, log: Any) -> dict[str, Series]:
    """Keyed durable deposits, 16 ATM connections one request at a time, on SQLite:
    the same server with group commit (the default) and with one commit per posting."""
    args = [
        "--connections",
        str(BANK_CONNECTIONS),
        "--duration",
        f"{opts.duration_s:g}",
        "--warmup",
        f"{opts.warmup_s:g}",
        "--processes",
        str(opts.processes),
        "--dialect",
        "json",
    ]
    series = {
        "bank-group": Series("socklab bank, group commit", shown(["bank", *args])),
        "bank-single": Series("socklab bank, one commit per posting", shown(["bank", *args])),
    }
    with (
        tempfile.TemporaryDirectory() as scratch,
        CpuSampler() as sampler,
        socklab_server("bank", ["--db", f"sqlite:///{scratch}/group.db"]) as group,
        socklab_server(
            "bank", ["--db", f"sqlite:///{scratch}/single.db", "--no-group-commit"]
        ) as single,
    ):
        sampler.pids.update({group.proc.pid, single.proc.pid})
        steps = [("bank-group", group), ("bank-single", single)]
        for i in range(opts.runs):
            turn = i % len(steps)
            for key, server in steps[turn:] + steps[:turn]:
                result = measure(sampler, server, "bank", args, opts.timeout_s)
                series[key].runs.append(result)
                log(
                    f"run {i + 1}/{opts.runs} {series[key].label}: "
                    f"{result['requests_per_s']:,.0f} req/s, p99 {result['latency_ms']['p99']} ms, "
                    f"errors {result['errors']}, server cpu {_pct(result['server_cpu'])}"
                )
    return series


def render_bank(bank: dict[str, Series]) -> list[str]:
    group, single = bank["bank-group"], bank["bank-single"]
    rate, single_rate = group.median("requests_per_s"), single.median("requests_per_s")
    p99 = group.median("latency_ms.p99")
    ratio = rate / single_rate if single_rate else 0.0
    out = [
        "## Bank: keyed durable deposits",
        "",
        f"{BANK_CONNECTIONS} ATM connections over json, each logged in once and then sending "
        "deposits of 1.00 one at a time, each with a fresh idempotency key; SQLite in WAL mode "
        "with synchronous=FULL, so every acknowledged deposit is on disk. The same server "
        "without group commit (`--no-group-commit`: one transaction per posting) is measured "
        "in the same run.",
        "",
        "| server | tx/s | vs one commit per posting | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | server CPU | machine busy | tx/s of each run |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in (group, single):
        each = ", ".join(_fmt_rate(r["requests_per_s"]) for r in s.runs)
        out.append(
            f"| {s.label} | {_fmt_rate(s.median('requests_per_s'))} | "
            f"{s.median('requests_per_s') / single_rate if single_rate else 0:.2f}x | "
            f"{_fmt_ms(s.median('latency_ms.p50'))} | {_fmt_ms(s.median('latency_ms.p90'))} | "
            f"{_fmt_ms(s.median('latency_ms.p99'))} | {_fmt_ms(s.median('latency_ms.max'))} | "
            f"{s.error_text} | {_pct(s.median_of('server_cpu'))} | "
            f"{_pct(s.median_of('machine_busy'))} | {each} |"
        )

    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    out += [
        "",
        "Targets:",
        "",
        f"- at least 8,000 transactions/s: **{_fmt_rate(rate)}** -> **{met(rate >= 8000)}**",
        f"- p99 under 20 ms: **{_fmt_ms(p99)} ms** -> **{met(p99 < 20)}**",
        f"- at least 2x the same server with one commit per posting: **{ratio:.2f}x** -> "
        f"**{met(ratio >= 2)}**",
        "",
        "Command (each server on its own fresh database; the port filled in):",
        "",
        f"- `{group.command}`",
        "",
    ]
    return out


def numbers_scenarios(opts: Options, log: Any) -> dict[str, Series]:
    """Small requests alone; then small ones while big ones go on; big easy ones alone."""
    small_n = max(1, opts.connections - opts.big_connections)
    lab = ["--dialect", "lab"]
    short = ["--duration", f"{opts.duration_s:g}", "--warmup", f"{opts.warmup_s:g}"]
    # Big checks take seconds: a long window, no warm-up, and both loads start together.
    long = ["--duration", f"{opts.big_duration_s:g}", "--warmup", "0"]
    big = ["--digits", str(opts.big_digits), "--timeout", "600"]
    # A small request stuck behind a big check is slow, not lost: time it, up to a minute.
    patient = ["--timeout", "60"]
    quiet_args = ["--connections", str(small_n), *lab, *patient, *short]
    during_args = ["--connections", str(small_n), *lab, *patient, *long]
    hard_args = [
        "--connections",
        str(opts.big_connections),
        *lab,
        *big,
        "--param",
        "kind=hard",
        *long,
    ]
    easy_args = ["--connections", "1", *lab, *big, "--param", "kind=easy", *short]
    series: dict[str, Series] = {}
    servers: list[tuple[str, Callable[[str], contextlib.AbstractContextManager[Server]]]] = [
        ("socklab", socklab_server)
    ]
    if "numbers-baseline" not in opts.skip:
        servers.append(("baseline", baseline_server))
    for name, start in servers:
        made = {
            "quiet": Series(f"{name}: small requests alone", shown(["numbers", *quiet_args])),
            "during": Series(
                f"{name}: small requests, during hard big ones", shown(["numbers", *during_args])
            ),
            "hard": Series(f"{name}: hard big requests", shown(["numbers", *hard_args])),
            "easy": Series(f"{name}: easy big requests", shown(["numbers", *easy_args])),
        }
        with CpuSampler() as sampler, start("numbers") as server:
            sampler.pids.add(server.proc.pid)
            for i in range(opts.runs):
                made["quiet"].runs.append(
                    measure(sampler, server, "numbers", quiet_args, opts.timeout_s)
                )
                made["easy"].runs.append(
                    measure(sampler, server, "numbers", easy_args, opts.timeout_s)
                )
                during, hard = run_together(
                    [("numbers", server.port, during_args), ("numbers", server.port, hard_args)],
                    opts.big_duration_s + 900,
                )
                annotate(sampler, server, during)
                made["during"].runs.append(during)
                made["hard"].runs.append(hard)
                log(
                    f"run {i + 1}/{opts.runs} numbers on {name}: hard big p50 "
                    f"{hard['latency_ms']['p50']} ms ({hard['requests']} done), easy big p50 "
                    f"{made['easy'].runs[-1]['latency_ms']['p50']} ms, small p99 "
                    f"{during['latency_ms']['p99']} ms during, "
                    f"{made['quiet'].runs[-1]['latency_ms']['p99']} ms alone, "
                    f"errors {hard['errors'] + during['errors']}"
                )
        for key, value in made.items():
            series[f"{name}-{key}"] = value
    return series


FAIRNESS_FLOODS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (label, service, the flooder's arguments besides its pipeline)
    ("text, json flood", "text", ("--dialect", "json")),
    ("text, line flood", "text", ("--dialect", "line")),
    ("text, lab flood", "text", ("--dialect", "lab")),
    ("numbers, 200-digit json flood", "numbers", ("--dialect", "json", "--param", "kind=hard")),
)


def fairness_scenarios(opts: Options, log: Any) -> dict[str, Series]:
    """One connection floods a service at pipeline depth ``flood_pipeline``; meanwhile a
    second connection sends one request at a time over json and measures its latency.
    The victim is also measured alone, on the same server, just before."""
    # The victim starts measuring a second after the flood began, and the flood goes on
    # a second after the victim's window closes.
    victim_warmup = opts.warmup_s + 1
    victim = [
        "--connections",
        "1",
        "--dialect",
        "json",
        "--duration",
        f"{opts.duration_s:g}",
        "--warmup",
        f"{victim_warmup:g}",
    ]
    flood_s = victim_warmup + opts.duration_s + 1
    series: dict[str, Series] = {}
    for service in dict.fromkeys(s for _, s, _ in FAIRNESS_FLOODS):
        alone_key = f"{service}-alone"
        series[alone_key] = Series(f"{service}: victim alone", shown([service, *victim]))
        floods: dict[str, list[str]] = {}
        for label, _, args in (flood for flood in FAIRNESS_FLOODS if flood[1] == service):
            flooder = [
                "--connections",
                "1",
                *args,
                "--pipeline",
                str(opts.flood_pipeline),
                "--timeout",
                "60",
                "--duration",
                f"{flood_s:g}",
                "--warmup",
                "0",
            ]
            if service == "numbers":
                flooder += ["--digits", str(opts.flood_digits)]
            floods[label] = flooder
            series[f"{label}-victim"] = Series(f"{label}: victim", shown([service, *victim]))
            series[f"{label}-flooder"] = Series(f"{label}: flooder", shown([service, *flooder]))
        with CpuSampler() as sampler, socklab_server(service) as server:
            sampler.pids.add(server.proc.pid)
            for i in range(opts.runs):
                alone = measure(sampler, server, service, victim, opts.timeout_s)
                series[alone_key].runs.append(alone)
                for label, flood_args in floods.items():
                    during, flood = run_together(
                        [(service, server.port, victim), (service, server.port, flood_args)],
                        flood_s + 120,
                    )
                    annotate(sampler, server, during)
                    series[f"{label}-victim"].runs.append(during)
                    series[f"{label}-flooder"].runs.append(flood)
                    log(
                        f"run {i + 1}/{opts.runs} fairness {label}: victim p99 "
                        f"{during['latency_ms']['p99']} ms (alone "
                        f"{alone['latency_ms']['p99']} ms), flooder "
                        f"{flood['requests_per_s']:,.0f} req/s, errors "
                        f"{during['errors'] + flood['errors']}"
                    )
    return series


def render_fairness(opts: Options, fairness: dict[str, Series]) -> list[str]:
    out = [
        "## Fairness: one flooding client next to another",
        "",
        f"One connection floods the service at pipeline depth {opts.flood_pipeline:,} (a new "
        "request as soon as a reply arrives) in each dialect; meanwhile a second connection "
        "sends one request at a time over json and measures its latency. The same victim is "
        "measured alone on the same server just before. On numbers the flood is of "
        f"{opts.flood_digits}-digit products of primes above 2^16 (each needs a probable-prime "
        "test) and the victim sends small numbers.",
        "",
        "| flood | victim p99 ms alone | victim p99 ms during | ratio | victim max ms |"
        " flooder req/s | errors | target |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for label, service, _ in FAIRNESS_FLOODS:
        victim = fairness.get(f"{label}-victim")
        if victim is None or not victim.runs:
            continue
        flood = fairness[f"{label}-flooder"]
        alone = fairness[f"{service}-alone"].median("latency_ms.p99")
        during = victim.median("latency_ms.p99")
        ratio = during / alone if alone else 0.0
        ok = during < 10 and ratio <= 3
        errors = victim.errors + flood.errors
        out.append(
            f"| {label} | {_fmt_ms(alone)} | {_fmt_ms(during)} | {ratio:.2f}x | "
            f"{_fmt_ms(victim.median('latency_ms.max'))} | "
            f"{_fmt_rate(flood.median('requests_per_s'))} | {errors} | "
            f"{'met' if ok else 'not met'} |"
        )
    out += [
        "",
        "Target: the victim's p99 during the flood under 10 ms and within 3x its p99 alone.",
        "",
        "Commands (the server's port filled in):",
        "",
    ]
    out += [f"- {s.label}: `{s.command}`" for s in fairness.values()]
    out.append("")
    return out


# -- the report --------------------------------------------------------------------------


def tls_certificate(folder: Path) -> tuple[list[str], list[str]]:
    """A throwaway CA and server certificate in ``folder``: (serve options, bench options)."""
    import trustme  # a dev dependency, like the benchmarks themselves

    ca = trustme.CA()
    issued = ca.issue_cert(HOST, "localhost")
    ca_file, cert_file, key_file = (folder / name for name in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    issued.private_key_pem.write_to_path(str(key_file))
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(cert_file), append=i > 0)
    serve = ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    return serve, ["--tls", "--cafile", str(ca_file)]


TLS_SHOWN = ["--tls", "--cafile", "ca.pem"]


def tls_scenarios(opts: Options, log: Any) -> dict[str, Series]:
    """Text over lab and keyed bank deposits, plain and over TLS, interleaved run by run."""
    text_args = [*opts.load_args(), "--dialect", "lab"]
    bank_args = [
        "--connections",
        str(BANK_CONNECTIONS),
        "--duration",
        f"{opts.duration_s:g}",
        "--warmup",
        f"{opts.warmup_s:g}",
        "--processes",
        str(opts.processes),
    ]
    series = {
        "text-plain": Series("text over lab, plain", shown(["text", *text_args])),
        "text-tls": Series("text over lab, TLS", shown(["text", *text_args, *TLS_SHOWN])),
        "bank-plain": Series("bank deposits, plain", shown(["bank", *bank_args])),
        "bank-tls": Series("bank deposits, TLS", shown(["bank", *bank_args, *TLS_SHOWN])),
    }
    with tempfile.TemporaryDirectory() as scratch:
        serve_tls, bench_tls = tls_certificate(Path(scratch))
        with (
            CpuSampler() as sampler,
            socklab_server("text") as text_plain,
            socklab_server("text", serve_tls) as text_tls,
            socklab_server("bank", ["--db", f"sqlite:///{scratch}/plain.db"]) as bank_plain,
            socklab_server("bank", ["--db", f"sqlite:///{scratch}/tls.db", *serve_tls]) as bank_tls,
        ):
            steps = [
                ("text-plain", text_plain, "text", text_args),
                ("text-tls", text_tls, "text", [*text_args, *bench_tls]),
                ("bank-plain", bank_plain, "bank", bank_args),
                ("bank-tls", bank_tls, "bank", [*bank_args, *bench_tls]),
            ]
            sampler.pids.update(server.proc.pid for _, server, _, _ in steps)
            for i in range(opts.runs):
                turn = i % len(steps)
                for key, server, service, args in steps[turn:] + steps[:turn]:
                    result = measure(sampler, server, service, args, opts.timeout_s)
                    series[key].runs.append(result)
                    log(
                        f"run {i + 1}/{opts.runs} {series[key].label}: "
                        f"{result['requests_per_s']:,.0f} req/s, "
                        f"p99 {result['latency_ms']['p99']} ms, errors {result['errors']}, "
                        f"server cpu {_pct(result['server_cpu'])}"
                    )
    return series


def render_tls(tls: dict[str, Series]) -> list[str]:
    out = [
        "## TLS",
        "",
        "The same servers with and without `--tls-cert` (TLS 1.3, a throwaway certificate), "
        "measured in the same runs: text over lab as in the text table, and the bank's keyed "
        f"durable deposits ({BANK_CONNECTIONS} ATM connections) as in the bank table. "
        "Connections are opened (and the handshakes done) before the window opens, so the "
        "figures are the cost of encrypting the traffic, not of handshakes.",
        "",
        "| scenario | req/s | TLS vs plain | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU | machine busy | req/s of each run |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for name in ("text", "bank"):
        plain_rate = tls[f"{name}-plain"].median("requests_per_s")
        for kind in ("plain", "tls"):
            s = tls[f"{name}-{kind}"]
            rate = s.median("requests_per_s")
            ratio = f"{rate / plain_rate:.2f}x" if plain_rate else "-"
            each = ", ".join(_fmt_rate(r["requests_per_s"]) for r in s.runs)
            out.append(
                f"| {s.label} | {_fmt_rate(rate)} | {ratio} | "
                f"{_fmt_ms(s.median('latency_ms.p50'))} | {_fmt_ms(s.median('latency_ms.p90'))} | "
                f"{_fmt_ms(s.median('latency_ms.p99'))} | {_fmt_ms(s.median('latency_ms.max'))} | "
                f"{s.error_text} | {_pct(s.median_of('server_cpu'))} | "
                f"{_pct(s.median_of('machine_busy'))} | {each} |"
            )
    out += ["", "Commands (the port filled in; `ca.pem` is the run's throwaway CA):", ""]
    out += [f"- {s.label}: `{s.command}`" for s in tls.values()]
    out.append("")
    return out


def render(
    info: dict[str, str],
    argv: Sequence[str],
    opts: Options,
    text: dict[str, Series],
    numbers: dict[str, Series],
    bank: dict[str, Series],
    fairness: dict[str, Series] | None = None,
    tls: dict[str, Series] | None = None,
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        "Measured figures, written by `benchmarks/run.py`; never edited by hand. Rerun to",
        "refresh them. How the load generator works and how to read the figures: see the",
        "end of this page. Where the server's time goes, and proposed patches:",
        "[benchmarks/README.md](../benchmarks/README.md). The bank on SQLite and PostgreSQL,",
        "with 1 and 2 workers, against pgbench: [scaling.md](scaling.md).",
        "",
        f"## Last run ({now})",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        "Command:",
        "",
        "```",
        "python benchmarks/run.py" + ("" if not argv else " " + shlex.join(argv)),
        "```",
        "",
        f"{opts.runs} runs of each scenario, {opts.duration_s:g} s each after a "
        f"{opts.warmup_s:g} s warm-up, load generator with {opts.processes} "
        f"process{'es' if opts.processes > 1 else ''}; medians over the runs. Servers and "
        "load generator share the machine and nothing is pinned to a core: on a 2-core "
        "machine with other work running, pinning the server to one core and the load "
        "generator to the other made every figure worse and noisier (the other work then "
        "competes for exactly those cores), for both servers.",
        "",
    ]
    if text:
        base = text["baseline-lab"]
        base_rps = base.median("requests_per_s")
        out += [
            "## Text service",
            "",
            "| scenario | req/s | vs baseline | p50 ms | p90 ms | p99 ms | max ms | errors |"
            " server CPU | load-gen CPU | machine busy | req/s of each run |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for key in ("baseline-lab", "socklab-lab", "socklab-json", "socklab-json-batch"):
            s = text[key]
            if not s.runs:
                continue
            rps = s.median("requests_per_s")
            ratio = f"{rps / base_rps:.2f}x" if base_rps else "-"
            each = ", ".join(_fmt_rate(r["requests_per_s"]) for r in s.runs)
            out.append(
                f"| {s.label} | {_fmt_rate(rps)} | {ratio} | "
                f"{_fmt_ms(s.median('latency_ms.p50'))} | {_fmt_ms(s.median('latency_ms.p90'))} | "
                f"{_fmt_ms(s.median('latency_ms.p99'))} | {_fmt_ms(s.median('latency_ms.max'))} | "
                f"{s.error_text} | {_pct(s.median_of('server_cpu'))} | {s.client_cpu:.0%} | "
                f"{_pct(s.median_of('machine_busy'))} | {each} |"
            )
        lab = text["socklab-lab"]
        out += ["", "Commands (the server's port filled in):", ""]
        out += [f"- {text[k].label}: `{text[k].command}`" for k in text if text[k].runs]
        out += ["", "Targets:", ""]
        lab_ratio = lab.median("requests_per_s") / base_rps if base_rps else 0.0
        lower_p99 = lab.median("latency_ms.p99") < base.median("latency_ms.p99")
        out.append(
            f"- text over lab >= 3x the baseline's requests/s with a lower p99: "
            f"**{lab_ratio:.2f}x**, p99 {_fmt_ms(lab.median('latency_ms.p99'))} ms vs "
            f"{_fmt_ms(base.median('latency_ms.p99'))} ms -> "
            f"**{'met' if lab_ratio >= 3 and lower_p99 else 'not met'}**"
        )
        if text["socklab-json"].runs:
            pipe_ratio = text["socklab-json"].median("requests_per_s") / base_rps if base_rps else 0
            batch_rps = text["socklab-json-batch"].median("requests_per_s")
            verdict = "met" if pipe_ratio >= 8 else "not met"
            out.append(
                f"- text over json, pipeline {opts.pipeline}, >= 8x the baseline's unpipelined "
                f"requests/s: **{pipe_ratio:.2f}x** -> **{verdict}** (in batches: "
                f"{batch_rps / base_rps if base_rps else 0:.2f}x)"
            )
        out.append("")
    if numbers:
        small_n = max(1, opts.connections - opts.big_connections)
        out += [
            "## Numbers service: big requests next to small ones",
            "",
            f"*Hard* big requests: {opts.big_connections} connection(s) send "
            f"{opts.big_digits:,}-digit products of primes above 2^16, one at a time, for "
            f"{opts.big_duration_s:g} s; trial division settles nothing, so the server must "
            "run a probable-prime test (one modular exponentiation) to answer. Meanwhile "
            f"{small_n} other connections send small numbers; they are also measured alone. "
            f"*Easy* big requests: {opts.big_digits:,}-digit numbers with a factor below 256 "
            "(one connection, alone). All over lab. Primes are not sent: the load generator "
            "would have to test them itself to check the answer.",
            "",
            "| server | hard: done | hard p50 ms | hard max ms | easy p50 ms |"
            " small p99 ms alone | small p99 ms during | small req/s alone |"
            " small req/s during | errors |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name in ("socklab", "baseline"):
            if f"{name}-hard" not in numbers:
                continue
            hard, during, quiet, easy = (
                numbers[f"{name}-{k}"] for k in ("hard", "during", "quiet", "easy")
            )
            done = sum(int(r["requests"]) for r in hard.runs)
            errors = "; ".join(
                f"{label} {s.error_text}"
                for label, s in (
                    ("hard", hard),
                    ("during", during),
                    ("alone", quiet),
                    ("easy", easy),
                )
                if s.errors
            )
            out.append(
                f"| {name} | {done} | {_fmt_ms(hard.median('latency_ms.p50'))} | "
                f"{_fmt_ms(hard.median('latency_ms.max'))} | "
                f"{_fmt_ms(easy.median('latency_ms.p50'))} | "
                f"{_fmt_ms(quiet.median('latency_ms.p99'))} | "
                f"{_fmt_ms(during.median('latency_ms.p99'))} | "
                f"{_fmt_rate(quiet.median('requests_per_s'))} | "
                f"{_fmt_rate(during.median('requests_per_s'))} | {errors or 0} |"
            )
        if "socklab-hard" in numbers:
            hard, easy = numbers["socklab-hard"], numbers["socklab-easy"]
            done = sum(int(r["requests"]) for r in hard.runs)
            p50 = hard.median("latency_ms.p50")

            def met(ok: bool) -> str:
                return "met" if ok else "not met"

            out += [
                "",
                f"Target: a {opts.big_digits:,}-digit request answered within 1 s (median): "
                f"hard **{_fmt_ms(p50)} ms** -> **{met(bool(done) and p50 <= 1000)}**"
                + ("" if done else " (no hard request finished inside a window)")
                + f"; easy **{_fmt_ms(easy.median('latency_ms.p50'))} ms** -> "
                f"**{met(easy.median('latency_ms.p50') <= 1000)}**.",
            ]
        out += ["", "Commands:", ""]
        out += [f"- {s.label}: `{s.command}`" for s in numbers.values()]
        out.append("")
    if bank:
        out += render_bank(bank)
    if fairness:
        out += render_fairness(opts, fairness)
    if tls:
        out += render_tls(tls)
    out += [METHOD]
    return "\n".join(out)


METHOD = """## How this is measured

- **Load generator**: `socklab bench`, asyncio with uvloop when installed, one
  `asyncio.Protocol` per connection (no streams), several processes with `--processes`,
  their latency histograms merged bucket by bucket (exact counts; percentiles within
  0.4 %), never averaged. Each connection keeps `--pipeline` requests in flight and sends
  the next request as soon as a reply arrives (a closed loop), so requests/s is the rate
  the server sustains at that concurrency. With `--batch` a connection sends `--pipeline`
  requests in one write and waits for all their replies before the next batch (as
  redis-benchmark's `-P` does), so the server gets whole batches to read and answer in one
  write; without it, replies and refills soon spread out to one or two per read.
- **Order and noise**: each run visits the servers in a different order; the medians and
  the "machine busy" column show how much other work shared the machine.
- **CPU columns** (medians over runs, sampled from `/proc` during each measurement window):
  "server CPU" is the server process's share of one core (all its threads); near 100 %
  means the server was the limit. "load-gen CPU" is the busiest load-generator process's
  share of one core: near 100 % would mean the load generator was the limit. "machine busy"
  is the share of all cores busy with anything, including programs outside the benchmark.
- **Every reply is checked**: text replies must be exactly
  `[Lower Case] x [Upper Case] X`, numbers replies `[Prime] .. [Palindrome] ..` with the
  right answers (computed before the run); a wrong reply, an error reply, a timeout or a
  dropped connection counts as an error.
- **Lab replies have no framing.** The load generator knows each expected reply's bytes
  exactly (text and numbers only), so it knows where each reply ends, and any byte that
  differs is an error; that connection is then reopened, as its stream is out of step.
  Exchange replies hold a random number, so exchange is benchmarked over json or line.
- **Baseline**: `benchmarks/baselines/thread_server.py`, the lab's design (one thread per
  client, blocking `recv` of the 64-byte header then of the payload, one `sendall` per
  reply) with partial reads handled and `TCP_NODELAY` set, answering with socklab's exact
  bytes. It speaks only lab, so the pipelined json figure is compared with its unpipelined
  lab figure.
- **Percentiles** are per run; the table shows the median over runs of each.
"""


def _without_output(argv: Sequence[str]) -> list[str]:
    """The arguments as the report shows them: where the report went is not interesting."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--output":
            skip = True
        elif not arg.startswith("--output="):
            shown.append(arg)
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the socklab benchmarks.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument(
        "--processes", type=int, default=1, help="load-generator processes per bench"
    )
    parser.add_argument("--big-digits", type=int, default=BIG_DIGITS)
    parser.add_argument("--big-connections", type=int, default=1)
    parser.add_argument(
        "--big-duration",
        type=float,
        default=20.0,
        help="seconds of each run with big requests (each takes seconds)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["text", "text-json", "numbers", "numbers-baseline", "bank", "fairness", "tls"],
        help="leave out a scenario (repeatable)",
    )
    parser.add_argument(
        "--flood-pipeline", type=int, default=1000, help="fairness: the flooder's pipeline depth"
    )
    parser.add_argument(
        "--flood-digits", type=int, default=200, help="fairness: digits of the numbers flood"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    opts = Options(
        runs=args.runs,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        pipeline=args.pipeline,
        processes=args.processes,
        big_digits=args.big_digits,
        big_connections=args.big_connections,
        big_duration_s=args.big_duration,
        skip=frozenset(args.skip),
        flood_pipeline=args.flood_pipeline,
        flood_digits=args.flood_digits,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    info = machine()
    log(" | ".join(f"{k}: {v}" for k, v in info.items()))
    text = {} if "text" in opts.skip else text_scenarios(opts, log)
    numbers = {} if "numbers" in opts.skip else numbers_scenarios(opts, log)
    bank = {} if "bank" in opts.skip else bank_scenarios(opts, log)
    fairness = {} if "fairness" in opts.skip else fairness_scenarios(opts, log)
    tls = {} if "tls" in opts.skip else tls_scenarios(opts, log)
    report = render(
        info,
        _without_output(sys.argv[1:] if argv is None else argv),
        opts,
        text,
        numbers,
        bank,
        fairness,
        tls,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + "\n", encoding="utf-8")
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
