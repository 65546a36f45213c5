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

The processes, the load and the CPU sampling are ``harness.py``'s; the page is ``report.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness  # the sibling benchmarks/harness.py: machine facts, servers, CPU sampler
import report  # the sibling benchmarks/report.py: the page
from harness import (
    HOST,
    CpuSampler,
    Server,
    baseline_server,
    run_bench,
    run_together,
    shown,
    socklab_server,
)
from report import BANK_CONNECTIONS, FAIRNESS_FLOODS, Options, Series, pct

DEFAULT_OUTPUT = harness.ROOT / "docs" / "benchmarks.md"
BIG_DIGITS = 10_000


# -- the scenarios -----------------------------------------------------------------------


def measure(
    sampler: CpuSampler, server: Server, service: str, args: Sequence[str], timeout_s: float
) -> dict[str, Any]:
    """One bench run, with the server's CPU share and the machine's load in its window."""
    server.check_alive()
    result = run_bench(service, server.port, args, timeout_s)
    annotate(sampler, server, result)
    return result


def watch(sampler: CpuSampler, *servers: Server) -> None:
    """Sample the servers' CPU (each server's process tree, under its pid)."""
    for server in servers:
        sampler.watch(str(server.proc.pid), server.proc.pid)


def annotate(sampler: CpuSampler, server: Server, result: dict[str, Any]) -> None:
    """Adds the server's CPU share and the machine's busy share in the run's window."""
    time.sleep(2 * CpuSampler.INTERVAL_S)  # a sample after the window closed
    start = float(result["window_began_monotonic"])
    end = start + float(result["window_s"])
    result["server_cpu"] = sampler.cores(str(server.proc.pid), start, end)
    result["machine_busy"] = sampler.machine_busy(start, end)


Step = tuple[str, Server, str, list[str]]
"""One measurement of a run: (series key, server, service, bench arguments)."""


def interleave(
    opts: Options,
    sampler: CpuSampler,
    series: dict[str, Series],
    steps: Sequence[Step],
    log: Callable[[str], None],
) -> None:
    """Every step once per run, in an order that rotates from run to run (so no server
    always goes first), each result added to its series."""
    watch(sampler, *(server for _, server, _, _ in steps))
    for i in range(opts.runs):
        turn = i % len(steps)
        for key, server, service, args in [*steps[turn:], *steps[:turn]]:
            result = measure(sampler, server, service, args, opts.timeout_s)
            series[key].runs.append(result)
            log(
                f"run {i + 1}/{opts.runs} {series[key].label}: "
                f"{result['requests_per_s']:,.0f} req/s, p99 {result['latency_ms']['p99']} ms, "
                f"errors {result['errors']}, load-gen cpu {result['client_cpu']}, "
                f"server cpu {pct(result['server_cpu'])}, "
                f"machine busy {pct(result['machine_busy'])}"
            )


def text_scenarios(opts: Options, log: Callable[[str], None]) -> dict[str, Series]:
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
        steps: list[Step] = [
            ("baseline-lab", baseline, "text", lab_args),
            ("socklab-lab", ours, "text", lab_args),
        ]
        if "text-json" not in opts.skip:
            steps.append(("socklab-json", ours, "text", json_args))
            steps.append(("socklab-json-batch", ours, "text", batch_args))
        interleave(opts, sampler, series, steps, log)
    return series


def bank_load_args(opts: Options) -> list[str]:
    """The bank scenarios' load: ``BANK_CONNECTIONS`` ATM connections."""
    return [
        "--connections",
        str(BANK_CONNECTIONS),
        "--duration",
        f"{opts.duration_s:g}",
        "--warmup",
        f"{opts.warmup_s:g}",
        "--processes",
        str(opts.processes),
    ]


def bank_scenarios(opts: Options, log: Callable[[str], None]) -> dict[str, Series]:
    """Keyed durable deposits, 16 ATM connections one request at a time, on SQLite:
    the same server with group commit (the default) and with one commit per posting."""
    args = [*bank_load_args(opts), "--dialect", "json"]
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
        steps: list[Step] = [
            ("bank-group", group, "bank", args),
            ("bank-single", single, "bank", args),
        ]
        interleave(opts, sampler, series, steps, log)
    return series


def numbers_scenarios(opts: Options, log: Callable[[str], None]) -> dict[str, Series]:
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
            watch(sampler, server)
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


def fairness_scenarios(opts: Options, log: Callable[[str], None]) -> dict[str, Series]:
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
            watch(sampler, server)
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


def tls_scenarios(opts: Options, log: Callable[[str], None]) -> dict[str, Series]:
    """Text over lab and keyed bank deposits, plain and over TLS, interleaved run by run."""
    text_args = [*opts.load_args(), "--dialect", "lab"]
    bank_args = bank_load_args(opts)
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
            steps: list[Step] = [
                ("text-plain", text_plain, "text", text_args),
                ("text-tls", text_tls, "text", [*text_args, *bench_tls]),
                ("bank-plain", bank_plain, "bank", bank_args),
                ("bank-tls", bank_tls, "bank", [*bank_args, *bench_tls]),
            ]
            interleave(opts, sampler, series, steps, log)
    return series


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

    info = harness.machine()
    log(" | ".join(f"{k}: {v}" for k, v in info.items()))
    text = {} if "text" in opts.skip else text_scenarios(opts, log)
    numbers = {} if "numbers" in opts.skip else numbers_scenarios(opts, log)
    bank = {} if "bank" in opts.skip else bank_scenarios(opts, log)
    fairness = {} if "fairness" in opts.skip else fairness_scenarios(opts, log)
    tls = {} if "tls" in opts.skip else tls_scenarios(opts, log)
    page = report.render(
        info,
        report.shown_argv(sys.argv[1:] if argv is None else argv),
        opts,
        text,
        numbers,
        bank,
        fairness,
        tls,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page + "\n", encoding="utf-8")
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
