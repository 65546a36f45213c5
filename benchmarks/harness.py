"""What every benchmark script shares: machine facts, server processes on free ports (their
output drained), ``socklab bench`` runs, and the CPU sampler.

The scripts beside this file (``run.py``, ``bank_scaling.py``, ``adversarial.py``) are run as
``python benchmarks/NAME.py``, which puts this folder first on ``sys.path``, so they import it
as ``import harness``.

How the CPU sampler works: a thread reads, ten times a second, the user+sys CPU time
(``/proc/PID/stat``) of each watched process tree (a server and its workers or pool) and,
when given a database name, of the PostgreSQL backends connected to it, plus the whole
machine's busy and total time (``/proc/stat``). A measured window ``[start, end]`` of
``time.monotonic()`` is then read between the last sample at or before ``start`` and the
first at or after ``end``: CPU seconds used / seconds elapsed = cores kept busy. The
parsing and the arithmetic are plain functions of the ``/proc`` text, so a fake ``/proc``
folder tests them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "baselines" / "thread_server.py"
HOST = "127.0.0.1"
PROC = Path("/proc")

# -- machine -----------------------------------------------------------------------------


def machine(proc: Path = PROC) -> dict[str, str]:
    """CPU, cores, Python, event loop, OS, load, commit: what a reader needs to compare
    figures. Facts that cannot be read are ``unknown``; raises nothing."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in (proc / "cpuinfo").read_text().splitlines():
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
        load = " ".join((proc / "loadavg").read_text().split()[:3])
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "event loop": loop,
        "os": f"{platform.system()} {platform.release()}",
        "load average before": load,
        "socklab": git_revision(),
    }


def git_revision() -> str:
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
    """What ``cmd`` prints, or ``unknown`` if it cannot run or fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


# -- ports and waiting -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on ``HOST`` that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def connectable(port: int) -> bool:
    """Whether a TCP connection to ``HOST:port`` opens within a second."""
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Polls ``predicate`` until it holds (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


def listening_sockets(port: int, proc: Path = PROC) -> int:
    """How many sockets listen on ``port`` (one per worker with SO_REUSEPORT)."""
    count = 0
    for table in ("net/tcp", "net/tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


# -- processes ---------------------------------------------------------------------------


def stat_fields(pid: int, proc: Path = PROC) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or ``None``
    if the process is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields or None


def cpu_seconds(fields: Sequence[str], tick: int) -> float:
    """User+sys CPU seconds from ``stat_fields``' list (``utime`` and ``stime``, in ticks).

    Raises ``IndexError``/``ValueError`` on a line that is not a stat line."""
    return (int(fields[11]) + int(fields[12])) / tick


def children(pid: int, proc: Path = PROC) -> list[int]:
    """The direct children of ``pid`` (none if it is gone)."""
    try:
        return [
            int(p) for p in (proc / str(pid) / "task" / str(pid) / "children").read_text().split()
        ]
    except OSError:
        return []


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for child in children(pid, proc):
        found += process_tree(child, proc)
    return found


def drain(stream: IO[bytes], sink: bytearray) -> None:
    """Appends every line of ``stream`` to ``sink`` until it ends (run in a thread, so a
    chatty server never blocks on a full pipe)."""
    with contextlib.suppress(ValueError, OSError):
        for line in iter(stream.readline, b""):
            sink += line


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it has not ended after ``timeout_s``. With ``group`` (a
    process started with ``start_new_session``), the SIGKILL goes to its whole process
    group, and so do a last one for workers left behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_process(proc, group=group)
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def kill_process(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGKILL (to the process group with ``group``) and reap it."""
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait(30)


@dataclass
class Server:
    """A server process started by ``server_process``, its output collected as it comes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    output: bytearray = field(default_factory=bytearray)

    def check_alive(self) -> None:
        """Raises ``RuntimeError`` with the end of its output if the process has ended."""
        if self.proc.poll() is not None:
            tail = self.output.decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


@contextlib.contextmanager
def server_process(
    name: str,
    cmd: list[str],
    port: int | None,
    *,
    ready: Callable[[Server], bool] | None = None,
    ready_timeout_s: float = 20.0,
    stop_timeout_s: float = 15.0,
) -> Iterator[Server]:
    """Runs ``cmd`` until the block ends, then stops it (SIGTERM, SIGKILL after
    ``stop_timeout_s``). ``port=None``: the server's first line says ``listening on
    HOST:PORT``. Yields once ``ready`` holds (default: the port takes connections).

    Raises ``RuntimeError`` if the server exits or is not ready in ``ready_timeout_s``,
    and if it has exited by the end of the block."""
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
        threading.Thread(target=drain, args=(proc.stdout, output), daemon=True).start()
        server = Server(name, proc, port, output)
        is_ready = ready or (lambda s: connectable(s.port))

        def alive_and_ready() -> bool:
            server.check_alive()
            return is_ready(server)

        if not wait_until(alive_and_ready, ready_timeout_s):
            raise RuntimeError(f"{name} is not accepting connections on port {port}")
        yield server
        server.check_alive()
    finally:
        stop_process(proc, stop_timeout_s)


def socklab_command(service: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """``socklab serve SERVICE --port P -q ...`` (-q: no per-request log lines)."""
    serve = ["-m", "socklab", "serve", service, "--port", str(port), "-q"]
    return [sys.executable, *serve, *extra]


@contextlib.contextmanager
def socklab_server(
    service: str, extra: Sequence[str] = (), *, name: str | None = None, workers: int | None = None
) -> Iterator[Server]:
    """``socklab serve SERVICE`` on a free port, ready once it takes connections; with
    ``workers`` (``extra`` holding ``--workers N``), once ``workers`` sockets listen, with
    more time to start and to stop (a database to open, workers to end)."""
    port = free_port()
    with server_process(
        name or f"socklab serve {service}",
        socklab_command(service, port, extra),
        port,
        ready=None if workers is None else (lambda s: listening_sockets(s.port) >= workers),
        ready_timeout_s=20.0 if workers is None else 60.0,
        stop_timeout_s=15.0 if workers is None else 30.0,
    ) as server:
        yield server


@contextlib.contextmanager
def baseline_server(service: str) -> Iterator[Server]:
    """The thread-per-connection baseline (``baselines/thread_server.py``) on a free port."""
    cmd = [sys.executable, str(BASELINE), "--port", "0", "--service", service]
    with server_process(f"thread baseline ({service})", cmd, None) as server:
        yield server


# -- load: socklab bench ---------------------------------------------------------------


def bench_command(service: str, port: int, args: Sequence[str]) -> list[str]:
    """``socklab bench SERVICE --host HOST --port P --json ARGS``."""
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
    """One ``socklab bench`` run: its ``--json`` report.

    Raises ``RuntimeError`` if it printed no report, ``subprocess.TimeoutExpired`` after
    ``timeout_s``."""
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


# -- CPU accounting ----------------------------------------------------------------------


def machine_jiffies(stat_text: str) -> tuple[float, float]:
    """(busy, total) jiffies of all cores from ``/proc/stat``'s first line; idle and
    iowait are not busy. Raises ``ValueError``/``IndexError`` on other text."""
    numbers = [int(x) for x in stat_text.split("\n", 1)[0].split()[1:]]
    total = float(sum(numbers[:8]))
    return total - numbers[3] - numbers[4], total


@dataclass
class Sample:
    at: float
    cpu: dict[str, dict[int, float]]
    """group -> pid -> CPU seconds so far."""
    busy: float
    total: float
    """Machine-wide jiffies: busy and all."""


class CpuSampler:
    """Ten times a second (as a context manager): the CPU seconds of each watched group of
    processes and the machine's busy time. See the module's docstring.

    ``watch(group, pid)`` adds ``pid``'s process tree as ``group``; with ``database``, the
    group ``postgres`` holds the PostgreSQL backends connected to that database.
    ``cores(group, start, end)``: how many cores the group kept busy between two
    ``time.monotonic()`` instants (a single-threaded server near 1.0 is saturated).
    ``machine_busy(start, end)``: the busy share of all cores.
    """

    INTERVAL_S = 0.1

    def __init__(
        self, database: str | None = None, *, proc: Path = PROC, tick: int | None = None
    ) -> None:
        self.roots: dict[str, int] = {}
        self.samples: list[Sample] = []
        self._proc = proc
        self._needle = None if database is None else f" {database} "
        self._pg_pids: set[int] = set()
        self._classified: set[int] = set()
        self._tick = tick or os.sysconf("SC_CLK_TCK")
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

    def watch(self, group: str, pid: int) -> None:
        self.roots[group] = pid

    def forget(self, group: str) -> None:
        self.roots.pop(group, None)

    def _cpu_s(self, pid: int) -> float | None:
        fields = stat_fields(pid, self._proc)
        if fields is None:
            return None
        try:
            return cpu_seconds(fields, self._tick)
        except (IndexError, ValueError):
            return None

    def _scan_postgres(self, needle: str) -> None:
        """Find new backends of the database (``postgres: user DB host ...``)."""
        entries: list[str] = []
        with contextlib.suppress(OSError):
            entries = os.listdir(self._proc)
        for entry in entries:
            if not entry.isdigit() or int(entry) in self._classified:
                continue
            pid = int(entry)
            self._classified.add(pid)
            with contextlib.suppress(OSError, UnicodeDecodeError):
                title = (self._proc / entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if title.startswith("postgres: ") and needle in title:
                    self._pg_pids.add(pid)

    def sample(self, at: float | None = None) -> None:
        """Takes one sample now (``at``: the instant to record, default ``time.monotonic()``)."""
        cpu: dict[str, dict[int, float]] = {}
        for group, root in list(self.roots.items()):
            cpu[group] = {
                pid: value
                for pid in process_tree(root, self._proc)
                if (value := self._cpu_s(pid)) is not None
            }
        if self._needle is not None:
            self._scan_postgres(self._needle)
            cpu["postgres"] = {}
            for pid in list(self._pg_pids):
                value = self._cpu_s(pid)
                if value is None:
                    self._pg_pids.discard(pid)
                else:
                    cpu["postgres"][pid] = value
        busy = total = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            busy, total = machine_jiffies((self._proc / "stat").read_text())
        self.samples.append(Sample(time.monotonic() if at is None else at, cpu, busy, total))

    def window(self, start: float, end: float) -> list[Sample] | None:
        """The samples from the last at or before ``start`` to the first at or after
        ``end``; ``None`` if there is none on either side."""
        samples = list(self.samples)
        first = max((i for i, s in enumerate(samples) if s.at <= start), default=None)
        last = min((i for i, s in enumerate(samples) if s.at >= end), default=None)
        if first is None or last is None or samples[last].at <= samples[first].at:
            return None
        return samples[first : last + 1]

    def cores(self, group: str, start: float, end: float) -> float | None:
        """Cores the group kept busy in the window; ``None`` without samples around it or of
        the group. A process born in the window counts from 0; one that ended, up to its
        last sample."""
        window = self.window(start, end)
        if window is None or not any(group in s.cpu for s in window):
            return None
        began: dict[int, float] = dict(window[0].cpu.get(group, {}))
        latest: dict[int, float] = dict(began)
        for sample in window[1:]:
            for pid, value in sample.cpu.get(group, {}).items():
                began.setdefault(pid, 0.0)  # born in the window
                latest[pid] = value
        used = sum(latest[pid] - began[pid] for pid in latest)
        return used / (window[-1].at - window[0].at)

    def machine_busy(self, start: float, end: float) -> float | None:
        """The busy share of all cores in the window; ``None`` without samples around it."""
        window = self.window(start, end)
        if window is None or window[-1].total <= window[0].total:
            return None
        return (window[-1].busy - window[0].busy) / (window[-1].total - window[0].total)
