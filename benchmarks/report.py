"""The page ``benchmarks/run.py`` writes (docs/benchmarks.md): the run's settings, the
series of results it collected, and their rendering as markdown tables.

Pure functions of the figures: nothing here starts a process or reads the clock except
``render``'s "Last run" time. ``bank_scaling.py`` uses the formatting helpers and
``shown_argv`` for its own page.
"""

from __future__ import annotations

import datetime
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

BANK_CONNECTIONS = 16
"""The bank scenarios' ATM connections (16, one request at a time each)."""

FAIRNESS_FLOODS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (label, service, the flooder's arguments besides its pipeline)
    ("text, json flood", "text", ("--dialect", "json")),
    ("text, line flood", "text", ("--dialect", "line")),
    ("text, lab flood", "text", ("--dialect", "lab")),
    ("numbers, 200-digit json flood", "numbers", ("--dialect", "json", "--param", "kind=hard")),
)
"""The fairness floods, in the page's order; the services' victims are measured alone once."""


# -- results ---------------------------------------------------------------------------


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
    def latency_cells(self) -> str:
        """The medians of p50, p90, p99 and max in ms, as four table cells."""
        cells = (fmt_ms(self.median(f"latency_ms.{q}")) for q in ("p50", "p90", "p99", "max"))
        return " | ".join(cells)

    @property
    def each_rate(self) -> str:
        """Every run's requests/s."""
        return ", ".join(fmt_rate(run["requests_per_s"]) for run in self.runs)

    @property
    def client_cpu(self) -> float:
        """The busiest load-generator process's median share of a core."""
        return statistics.median(max(run["client_cpu"]) for run in self.runs) if self.runs else 0.0


def _get(run: dict[str, Any], key: str) -> float:
    value: Any = run
    for part in key.split("."):
        value = value[part]
    return float(value)


def pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# -- settings ---------------------------------------------------------------------------


@dataclass
class Options:
    """The run's settings, from ``run.py``'s arguments: what the scenarios run with and
    what the page says they ran with."""

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


# -- the page ---------------------------------------------------------------------------


def met(ok: bool) -> str:
    """A target's verdict as the pages print it."""
    return "met" if ok else "not met"


def render(
    info: dict[str, str],
    argv: Sequence[str],
    opts: Options,
    text: dict[str, Series],
    numbers: dict[str, Series],
    bank: dict[str, Series],
    fairness: dict[str, Series] | None = None,
    tls: dict[str, Series] | None = None,
    when: datetime.datetime | None = None,
) -> str:
    """docs/benchmarks.md for these results (``when``: the run's time, default now); the
    sections of skipped scenarios (empty or ``None``) are left out."""
    now = (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d %H:%M UTC")
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
        out += render_text(opts, text)
    if numbers:
        out += render_numbers(opts, numbers)
    if bank:
        out += render_bank(bank)
    if fairness:
        out += render_fairness(opts, fairness)
    if tls:
        out += render_tls(tls)
    out += [METHOD]
    return "\n".join(out)


def render_text(opts: Options, text: dict[str, Series]) -> list[str]:
    base = text["baseline-lab"]
    base_rps = base.median("requests_per_s")
    out = [
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
        out.append(
            f"| {s.label} | {fmt_rate(rps)} | {ratio} | "
            f"{s.latency_cells} | "
            f"{s.error_text} | {pct(s.median_of('server_cpu'))} | {s.client_cpu:.0%} | "
            f"{pct(s.median_of('machine_busy'))} | {s.each_rate} |"
        )
    lab = text["socklab-lab"]
    out += ["", "Commands (the server's port filled in):", ""]
    out += [f"- {text[k].label}: `{text[k].command}`" for k in text if text[k].runs]
    out += ["", "Targets:", ""]
    lab_ratio = lab.median("requests_per_s") / base_rps if base_rps else 0.0
    lower_p99 = lab.median("latency_ms.p99") < base.median("latency_ms.p99")
    out.append(
        f"- text over lab >= 3x the baseline's requests/s with a lower p99: "
        f"**{lab_ratio:.2f}x**, p99 {fmt_ms(lab.median('latency_ms.p99'))} ms vs "
        f"{fmt_ms(base.median('latency_ms.p99'))} ms -> "
        f"**{met(lab_ratio >= 3 and lower_p99)}**"
    )
    if text["socklab-json"].runs:
        pipe_ratio = text["socklab-json"].median("requests_per_s") / base_rps if base_rps else 0
        batch_rps = text["socklab-json-batch"].median("requests_per_s")
        out.append(
            f"- text over json, pipeline {opts.pipeline}, >= 8x the baseline's unpipelined "
            f"requests/s: **{pipe_ratio:.2f}x** -> **{met(pipe_ratio >= 8)}** (in batches: "
            f"{batch_rps / base_rps if base_rps else 0:.2f}x)"
        )
    out.append("")
    return out


def render_numbers(opts: Options, numbers: dict[str, Series]) -> list[str]:
    small_n = max(1, opts.connections - opts.big_connections)
    out = [
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
            f"| {name} | {done} | {fmt_ms(hard.median('latency_ms.p50'))} | "
            f"{fmt_ms(hard.median('latency_ms.max'))} | "
            f"{fmt_ms(easy.median('latency_ms.p50'))} | "
            f"{fmt_ms(quiet.median('latency_ms.p99'))} | "
            f"{fmt_ms(during.median('latency_ms.p99'))} | "
            f"{fmt_rate(quiet.median('requests_per_s'))} | "
            f"{fmt_rate(during.median('requests_per_s'))} | {errors or 0} |"
        )
    if "socklab-hard" in numbers:
        hard, easy = numbers["socklab-hard"], numbers["socklab-easy"]
        done = sum(int(r["requests"]) for r in hard.runs)
        p50 = hard.median("latency_ms.p50")
        out += [
            "",
            f"Target: a {opts.big_digits:,}-digit request answered within 1 s (median): "
            f"hard **{fmt_ms(p50)} ms** -> **{met(bool(done) and p50 <= 1000)}**"
            + ("" if done else " (no hard request finished inside a window)")
            + f"; easy **{fmt_ms(easy.median('latency_ms.p50'))} ms** -> "
            f"**{met(easy.median('latency_ms.p50') <= 1000)}**.",
        ]
    out += ["", "Commands:", ""]
    out += [f"- {s.label}: `{s.command}`" for s in numbers.values()]
    out.append("")
    return out


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
  "server CPU" is the server's share of one core (all its threads, and its child processes
  if any); near 100 % means the server was the limit. "load-gen CPU" is the busiest
  load-generator process's share of one core: near 100 % would mean the load generator was
  the limit. "machine busy" is the share of all cores busy with anything, including
  programs outside the benchmark.
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
        out.append(
            f"| {s.label} | {fmt_rate(s.median('requests_per_s'))} | "
            f"{s.median('requests_per_s') / single_rate if single_rate else 0:.2f}x | "
            f"{s.latency_cells} | "
            f"{s.error_text} | {pct(s.median_of('server_cpu'))} | "
            f"{pct(s.median_of('machine_busy'))} | {s.each_rate} |"
        )

    out += [
        "",
        "Targets:",
        "",
        f"- at least 8,000 transactions/s: **{fmt_rate(rate)}** -> **{met(rate >= 8000)}**",
        f"- p99 under 20 ms: **{fmt_ms(p99)} ms** -> **{met(p99 < 20)}**",
        f"- at least 2x the same server with one commit per posting: **{ratio:.2f}x** -> "
        f"**{met(ratio >= 2)}**",
        "",
        "Command (each server on its own fresh database; the port filled in):",
        "",
        f"- `{group.command}`",
        "",
    ]
    return out


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
            f"| {label} | {fmt_ms(alone)} | {fmt_ms(during)} | {ratio:.2f}x | "
            f"{fmt_ms(victim.median('latency_ms.max'))} | "
            f"{fmt_rate(flood.median('requests_per_s'))} | {errors} | "
            f"{met(ok)} |"
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
            out.append(
                f"| {s.label} | {fmt_rate(rate)} | {ratio} | "
                f"{s.latency_cells} | "
                f"{s.error_text} | {pct(s.median_of('server_cpu'))} | "
                f"{pct(s.median_of('machine_busy'))} | {s.each_rate} |"
            )
    out += ["", "Commands (the port filled in; `ca.pem` is the run's throwaway CA):", ""]
    out += [f"- {s.label}: `{s.command}`" for s in tls.values()]
    out.append("")
    return out


def shown_argv(argv: Sequence[str], file_options: Sequence[str] = ("--output",)) -> list[str]:
    """The arguments as a report shows them: without ``file_options`` and their values
    (where the report went is not part of what was measured)."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in file_options:
            skip = True
        elif not arg.startswith(tuple(f"{name}=" for name in file_options)):
            shown.append(arg)
    return shown
