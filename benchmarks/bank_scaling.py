"""The bank past one process: SQLite, PostgreSQL with 1 and 2 workers, and pgbench TPC-B
on the same PostgreSQL in the same run; writes docs/scaling.md.

    python benchmarks/bank_scaling.py                      # 5 runs x 5 s, 16 connections
    python benchmarks/bank_scaling.py --runs 5 --duration 10 --output /tmp/scaling.md

What it does, all as real processes:

1. Creates a scratch database on the PostgreSQL server of ``--pg-url`` (``CREATE DATABASE
   socklab_bench_<random>``; dropped at the end, also after a failure), loads pgbench's
   TPC-B tables into it (``pgbench -i -s SCALE``), and gives socklab's ledger its own
   schema in it. The SQLite ledger is a file in a temporary directory.
2. Starts ``socklab serve bank -q`` on SQLite, on PostgreSQL, and on PostgreSQL with
   ``--workers 2``; all stay up, idle unless measured.
3. Each run measures each of the four, in an order that rotates from run to run:
   ``socklab bench bank -c C -d S`` (keyed durable deposits, each answered with the
   statistics) against each server, and ``pgbench -c C -j 2 -T S`` against the database.
4. Meanwhile a sampler reads, ten times a second, the user+sys CPU time (``/proc/PID/stat``)
   of each server's process tree (the supervisor and its workers), of the PostgreSQL
   backends connected to the scratch database, and of the whole machine (``/proc/stat``).
   Requests per CPU-second = the requests in ``socklab bench``'s measured window divided by
   the CPU seconds the server's processes used in it: what one core of socklab costs,
   which, unlike a rate, a 2-core machine shared with the load generator and the database
   can still show for 1 and 2 workers.

The report gives medians over the runs and every run's figures; nothing in it is typed by
hand.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import harness  # the sibling benchmarks/harness.py: machine facts, servers, CPU sampler
from harness import CpuSampler, Server
from report import fmt_rate, shown_argv

DEFAULT_OUTPUT = harness.ROOT / "docs" / "scaling.md"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WITHIN = 0.10
"""The 1- and 2-worker costs must stay within 10% of each other."""


# -- machine -----------------------------------------------------------------------------


def machine(pg_url: str) -> dict[str, str]:
    """What a reader needs to compare figures: ``run.py``'s, plus the database's."""
    info = harness.machine()
    tail = {key: info.pop(key) for key in ("load average before", "socklab")}
    info["postgresql"] = _pg_version(pg_url)
    info["pgbench"] = harness.command_output(["pgbench", "--version"])
    return {**info, **tail}


def _pg_version(pg_url: str) -> str:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
        sync = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
        fsync = conn.execute("SELECT current_setting('fsync')").fetchone()
    assert row is not None and sync is not None and fsync is not None
    return f"{row[0]} (fsync={fsync[0]}, synchronous_commit={sync[0]}; same machine)"


# -- the scratch database ----------------------------------------------------------------


def with_database(url: str, name: str, schema: str | None = None) -> str:
    """``url`` pointing at database ``name`` (and tables in ``schema``, if given)."""
    parts = urlsplit(url)
    query = parts.query
    if schema is not None:
        option = urlencode({"options": f"-csearch_path={schema}"})
        query = f"{query}&{option}" if query else option
    return urlunsplit(parts._replace(path="/" + name, query=query))


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``; its name. Dropped on exit."""
    import psycopg
    from psycopg import sql

    name = f"socklab_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def pgbench_args(url: str) -> tuple[list[str], dict[str, str]]:
    """libpq options of ``url`` as pgbench arguments (and its password as PGPASSWORD)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    args = []
    for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
        if params.get(key):
            args += [flag, str(params[key])]
    env = {"PGPASSWORD": str(params["password"])} if params.get("password") else {}
    return [*args, str(params.get("dbname") or "postgres")], env


# -- servers and load --------------------------------------------------------------------


def bank_server(key: str, db_url: str, workers: int) -> contextlib.AbstractContextManager[Server]:
    """``socklab serve bank -q`` on ``db_url``, ready once every worker listens."""
    extra = ["--db", db_url, "--workers", str(workers)]
    return harness.socklab_server("bank", extra, name=key, workers=workers)


@dataclass(frozen=True)
class Config:
    """One line of the report: what is measured, on which server, with how many clients."""

    key: str
    label: str
    server: str | None
    """The key of the socklab server it loads; ``None`` for pgbench."""
    connections: int


@dataclass(frozen=True)
class Options:
    runs: int
    duration_s: float
    warmup_s: float
    connections: int
    scale: int

    def bench_args(self, connections: int) -> list[str]:
        return [
            "--connections",
            str(connections),
            "--duration",
            f"{self.duration_s:g}",
            "--warmup",
            f"{self.warmup_s:g}",
        ]

    def pgbench_args(self) -> list[str]:
        return ["-c", str(self.connections), "-j", "2", "-T", f"{self.duration_s:g}"]


def _cores(sampler: CpuSampler, group: str, start: float, end: float) -> float:
    cores = sampler.cores(group, start, end)
    if cores is None:
        raise RuntimeError(f"the CPU sampler has no samples of {group} around the window")
    return cores


def _window_figures(sampler: CpuSampler, start: float, end: float) -> dict[str, float]:
    return {
        "pg_cores": _cores(sampler, "postgres", start, end),
        "machine_cores": (sampler.machine_busy(start, end) or 0.0) * (os.cpu_count() or 1),
    }


def run_bench(
    sampler: CpuSampler, server: Server, opts: Options, connections: int
) -> dict[str, Any]:
    """One ``socklab bench bank`` run, with the server's and the database's CPU in its window."""
    server.check_alive()
    timeout_s = opts.warmup_s + opts.duration_s + 120
    result = harness.run_bench("bank", server.port, opts.bench_args(connections), timeout_s)
    time.sleep(2 * CpuSampler.INTERVAL_S)  # a sample after the window closed
    start = float(result["window_began_monotonic"])
    end = start + float(result["window_s"])
    result["rate"] = float(result["requests_per_s"])
    result["server_cores"] = _cores(sampler, server.name, start, end)
    result["per_cpu_s"] = result["rate"] / result["server_cores"]
    result["client_cores"] = sum(result["client_cpu"])
    result.update(_window_figures(sampler, start, end))
    return result


def run_pgbench(
    sampler: CpuSampler, target: tuple[list[str], dict[str, str]], opts: Options
) -> dict[str, Any]:
    """One ``pgbench`` TPC-B run: its tps, mean latency, and the CPU in its window."""
    args, env = target
    proc = subprocess.Popen(
        ["pgbench", *opts.pgbench_args(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    sampler.watch("pgbench", proc.pid)
    out, err = proc.communicate(timeout=opts.duration_s + 120)
    end = time.monotonic()
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {err[-2000:]}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if tps is None or latency is None:
        raise RuntimeError(f"no tps in pgbench's output:\n{out}")
    time.sleep(2 * CpuSampler.INTERVAL_S)
    start = end - opts.duration_s  # -T S: the transactions ran in the last S seconds
    result = {
        "rate": float(tps.group(1)),
        "latency_mean_ms": float(latency.group(1)),
        "errors": int(failed.group(1)) if failed else 0,
        "client_cores": _cores(sampler, "pgbench", start, end),
        **_window_figures(sampler, start, end),
    }
    sampler.forget("pgbench")
    return result


# -- the report --------------------------------------------------------------------------


@dataclass
class Series:
    config: Config
    command: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(float(r[name]) for r in self.runs)

    def latency(self) -> str:
        if self.config.server is None:
            return f"{self.median('latency_mean_ms'):.2f} (mean)"
        p50 = statistics.median(float(r["latency_ms"]["p50"]) for r in self.runs)
        p99 = statistics.median(float(r["latency_ms"]["p99"]) for r in self.runs)
        return f"{p50:.2f} / {p99:.2f}"

    @property
    def errors(self) -> int:
        return sum(int(r["errors"]) for r in self.runs)


def _others(run: dict[str, Any]) -> float:
    """Cores busy with anything but this benchmark's server, database backends and load."""
    ours = sum(float(run.get(k, 0.0)) for k in ("server_cores", "pg_cores", "client_cores"))
    return max(0.0, float(run["machine_cores"]) - ours)


def _gap(a: float, b: float) -> float:
    return abs(a - b) / max(a, b)


def render(info: dict[str, str], command: str, opts: Options, series: dict[str, Series]) -> str:
    sqlite, pg1, pg2, half, pgb = (
        series[k] for k in ("sqlite", "pg-1", "pg-2", "pg-1-half", "pgbench")
    )
    cores = os.cpu_count() or 1
    tps = pgb.median("rate")
    cost1, cost2, cost_half = (s.median("per_cpu_s") for s in (pg1, pg2, half))
    out: list[str] = []
    add = out.append
    add("# Bank scaling: SQLite, PostgreSQL, workers, and pgbench\n")
    add(
        "Written by `benchmarks/bank_scaling.py` (its docstring says how it measures); every "
        "figure below comes from the run described here. To measure again:\n"
    )
    add(f"```\n{command}\n```\n")
    add(
        f"{opts.runs} runs; in each, every configuration gets {opts.warmup_s:g} s of warm-up "
        f"and {opts.duration_s:g} s measured, in an order that rotates from run to run. "
        "Tables show medians over the runs, then every run.\n"
    )
    add("## Machine\n")
    add("| | |\n|---|---|")
    for key, value in info.items():
        add(f"| {key} | {value} |")
    add(
        "\nThe load generator, the socklab servers and PostgreSQL share these cores, so the "
        "rates are what this one machine does with all of them on it; the CPU costs are the "
        "figures to size other machines with. *Other CPU* is what the machine was busy with "
        "besides this benchmark's own processes (from `/proc/stat`, in cores): a noisy "
        "neighbour shows up there.\n"
    )
    add("## Throughput and cost\n")
    add(
        "`socklab bench bank`: each connection logs in once, then sends keyed deposits of "
        "1.00 one after another (a fresh idempotency key each, over the demo accounts 1 to "
        "3); every reply is checked. A deposit is acknowledged only once its transaction is "
        "durable (SQLite: WAL, synchronous=FULL; PostgreSQL: synchronous_commit=on), and its "
        "reply carries the statistics. pgbench runs its built-in TPC-B script (five "
        f"statements in one transaction) with {opts.connections} clients at scale "
        f"{opts.scale}, on the same PostgreSQL server.\n"
    )
    add(
        "| configuration | connections | requests/s | latency ms (p50 / p99) | errors "
        "| server CPU (cores) | requests per server CPU-second | PostgreSQL CPU (cores) "
        "| load generator CPU (cores) | other CPU (cores) |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in series.values():
        bank = s.config.server is not None
        add(
            f"| {s.config.label} | {s.config.connections} | {fmt_rate(s.median('rate'))} "
            f"| {s.latency()} | {s.errors} "
            + (
                f"| {s.median('server_cores'):.2f} | {fmt_rate(s.median('per_cpu_s'))} "
                if bank
                else "| – | – "
            )
            + (f"| {s.median('pg_cores'):.2f} " if s is not sqlite else "| – ")
            + f"| {s.median('client_cores'):.2f} "
            + f"| {statistics.median(_others(r) for r in s.runs):.2f} |"
        )
    add("\nCommands (ports and the scratch database differ from run to run):\n")
    add("```")
    for s in series.values():
        add(s.command)
    add("```\n")

    add("## Against pgbench\n")
    ratio1, ratio2 = pg1.median("rate") / tps, pg2.median("rate") / tps
    verdict = "matches or beats" if ratio1 >= 1 else "does NOT match"
    spread = sorted(float(r["rate"]) for r in pgb.runs)
    add(
        f"On the same PostgreSQL server in the same run, socklab's bank served "
        f"{fmt_rate(pg1.median('rate'))} deposits/s with 1 worker and "
        f"{fmt_rate(pg2.median('rate'))} "
        f"with 2, against pgbench's {fmt_rate(tps)} TPC-B transactions/s: {ratio1:.2f}× and "
        f"{ratio2:.2f}×, so with 1 worker it {verdict} pgbench. For scale, pgbench's own "
        f"runs ranged from {fmt_rate(spread[0])} to {fmt_rate(spread[-1])} tps.\n"
    )
    add(
        "PostgreSQL CPU per request (the backends of the benchmark's database; the WAL "
        "writer and other background processes are in *other CPU*): "
        + ", ".join(
            f"{s.config.label} {1e6 * s.median('pg_cores') / s.median('rate'):.0f} µs"
            for s in (pg1, pg2, half, pgb)
        )
        + ". A TPC-B transaction is five statements and one commit for one client; "
        "socklab's group commit posts every deposit pending in a process as one statement "
        "and one commit, so the database does less per deposit, but a process has only one "
        "batch in flight: its rate is bounded by the batch's round trip, not by the "
        "database's CPU.\n"
    )

    add("## Workers: cost, not speed-up\n")
    add(
        f"On {cores} cores that the load generator and PostgreSQL also use, a second worker "
        "cannot add throughput; what matters is whether it makes each request dearer. "
        "Requests per CPU-second of the server processes (the supervisor and all its "
        "workers; user+sys from `/proc/PID/stat` over the measured window):\n"
    )
    add(
        f"- {pg1.config.label}, {pg1.config.connections} connections: {fmt_rate(cost1)}\n"
        f"- {pg2.config.label}, {pg2.config.connections} connections: {fmt_rate(cost2)} — "
        f"{_gap(cost1, cost2):.0%} from 1 worker "
        f"({'within' if _gap(cost1, cost2) <= WITHIN else 'NOT within'} {WITHIN:.0%})\n"
        f"- {half.config.label} (each of 2 workers' share of the connections): "
        f"{fmt_rate(cost_half)} — {_gap(cost_half, cost2):.0%} from 2 workers "
        f"({'within' if _gap(cost_half, cost2) <= WITHIN else 'NOT within'} {WITHIN:.0%})\n"
    )
    add(
        "The cost of a request depends on how many requests a process has at once: a "
        "process's group commit posts all its pending deposits as one batch, and a batch "
        "has a fixed cost (its round trips to the database, the shared statistics query), "
        "spread over fewer deposits when there are fewer connections. The third line "
        "separates the two effects: one worker carrying what each of two workers carries.\n"
    )
    per_core = min(cost1, cost2)
    pg_s = pg2.median("pg_cores") / pg2.median("rate")
    add(
        f"So one core of socklab serves about {fmt_rate(per_core)} of these deposits per second "
        "(the lower of the 1- and 2-worker costs: a busy process has bigger batches and "
        "does better). Workers and hosts share nothing but the database, so N cores of "
        "socklab processes serve about N times that while PostgreSQL keeps up; at the "
        f"database cost measured with 2 workers ({1e6 * pg_s:.0f} µs of PostgreSQL CPU per "
        "deposit) that needs:\n"
    )
    add("| socklab cores | deposits/s | PostgreSQL cores for that rate |")
    add("|---:|---:|---:|")
    for n in (1, 2, 4, 8, 16, 32):
        add(f"| {n} | {fmt_rate(n * per_core)} | {n * per_core * pg_s:.1f} |")
    add(
        "\nA projection, not a measurement: it is linear in costs measured on one small "
        "machine, and it ignores the database's limits other than CPU: every posting to an "
        "account takes that account's row lock until it commits, so a few hot accounts "
        "(this benchmark uses three) cap the rate whatever the number of socklab "
        "processes; deposits spread over many accounts do not meet.\n"
    )

    add("## Every run\n")
    add(
        "| run | configuration | requests/s | server CPU | requests per server CPU-second "
        "| PostgreSQL CPU | load generator CPU | other CPU |"
    )
    add("|---:|---|---:|---:|---:|---:|---:|---:|")
    for i in range(opts.runs):
        for s in series.values():
            r = s.runs[i]
            bank = s.config.server is not None
            add(
                f"| {i + 1} | {s.config.label} | {fmt_rate(r['rate'])} "
                + (
                    f"| {r['server_cores']:.2f} | {fmt_rate(r['per_cpu_s'])} "
                    if bank
                    else "| – | – "
                )
                + (f"| {r['pg_cores']:.2f} " if s is not sqlite else "| – ")
                + f"| {r['client_cores']:.2f} | {_others(r):.2f} |"
            )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    add(f"\nMeasured {when}.")
    return "\n".join(out) + "\n"


# -- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="socklab bench's warm-up")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("SOCKLAB_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="a database of the PostgreSQL server to use: the benchmark creates and drops "
        f"its own database there [default: {DEFAULT_PG_URL}; env SOCKLAB_BENCH_POSTGRES_URL]",
    )
    parser.add_argument("--scale", type=int, help="pgbench -i -s (default: --connections)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--json", type=Path, help="also write every run's raw figures here")
    given = list(sys.argv[1:] if argv is None else argv)
    ns = parser.parse_args(given)
    c = ns.connections
    opts = Options(ns.runs, ns.duration, ns.warmup, c, ns.scale or c)
    if shutil.which("pgbench") is None:
        parser.error("pgbench is not on PATH (it comes with PostgreSQL's client programs)")
    configs = [
        Config("sqlite", "socklab, SQLite, 1 process", "sqlite", c),
        Config("pg-1", "socklab, PostgreSQL, 1 worker", "pg", c),
        Config("pg-2", "socklab, PostgreSQL, --workers 2", "pg-workers", c),
        Config("pg-1-half", "socklab, PostgreSQL, 1 worker, half the connections", "pg", c // 2),
        Config("pgbench", "pgbench TPC-B", None, c),
    ]
    serve = {
        "sqlite": "socklab serve bank -q --db sqlite:///bank.db",
        "pg": "socklab serve bank -q --db postgresql://…",
        "pg-workers": "socklab serve bank -q --db postgresql://… --workers 2",
    }
    series = {
        cfg.key: Series(
            cfg,
            f"pgbench -i -s {opts.scale} DB; pgbench {shlex.join(opts.pgbench_args())} DB"
            if cfg.server is None
            else f"{serve[cfg.server]}; "
            f"socklab bench bank {shlex.join(opts.bench_args(cfg.connections))}",
        )
        for cfg in configs
    }

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    info = machine(ns.pg_url)
    with (
        scratch_database(ns.pg_url) as database,
        tempfile.TemporaryDirectory(prefix="socklab-scaling-") as tmp,
    ):
        pg_target = pgbench_args(with_database(ns.pg_url, database))
        log(f"pgbench -i -s {opts.scale} into the scratch database {database}")
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(opts.scale), *pg_target[0]],
            check=True,
            capture_output=True,
            env={**os.environ, **pg_target[1]},
        )
        import psycopg

        with psycopg.connect(with_database(ns.pg_url, database), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA socklab")  # the ledger's tables, apart from pgbench's
        pg_ledger = with_database(ns.pg_url, database, schema="socklab")
        with (
            CpuSampler(database) as sampler,
            bank_server("sqlite", f"sqlite:///{Path(tmp) / 'bank.db'}", 1) as sqlite_server,
            bank_server("pg", pg_ledger, 1) as pg_server,
            bank_server("pg-workers", pg_ledger, 2) as workers_server,
        ):
            servers = {s.name: s for s in (sqlite_server, pg_server, workers_server)}
            for key, server in servers.items():
                sampler.watch(key, server.proc.pid)
            for i in range(opts.runs):
                turn = i % len(configs)  # a different configuration goes first each run
                for cfg in configs[turn:] + configs[:turn]:
                    if cfg.server is None:
                        result = run_pgbench(sampler, pg_target, opts)
                    else:
                        result = run_bench(sampler, servers[cfg.server], opts, cfg.connections)
                    series[cfg.key].runs.append(result)
                    cost = (
                        f", server {result['server_cores']:.2f} cores, "
                        f"{result['per_cpu_s']:,.0f} per CPU-s"
                        if cfg.server
                        else ""
                    )
                    log(
                        f"run {i + 1}/{opts.runs} {cfg.label}: {result['rate']:,.0f}/s{cost}, "
                        f"postgres {result['pg_cores']:.2f} cores, other "
                        f"{_others(result):.2f} cores, errors {result['errors']}"
                    )
    shown = shown_argv(given, ("--output", "--json"))
    command = shlex.join(["python", "benchmarks/bank_scaling.py", *shown])
    ns.output.write_text(render(info, command, opts, series))
    log(f"wrote {ns.output}")
    if ns.json:
        ns.json.write_text(json.dumps({k: s.runs for k, s in series.items()}, indent=1))
    return 0 if all(s.errors == 0 for s in series.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
