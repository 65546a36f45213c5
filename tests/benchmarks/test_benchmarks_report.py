"""``benchmarks/report.py``: the page's tables and verdicts from fixed figures."""

from __future__ import annotations

import datetime
from typing import Any

import report
from report import Options, Series


def result(rate: float, p99: float, errors: int = 0, **kinds: int) -> dict[str, Any]:
    return {
        "requests_per_s": rate,
        "latency_ms": {"p50": p99 / 4, "p90": p99 / 2, "p99": p99, "max": p99 * 2},
        "errors": errors,
        "error_kinds": kinds,
        "client_cpu": [0.25, 0.5],
        "server_cpu": 0.8,
        "machine_busy": None,
    }


def options(runs: int) -> Options:
    return Options(
        runs=runs,
        duration_s=5,
        warmup_s=1,
        connections=50,
        pipeline=16,
        processes=1,
        big_digits=10_000,
        big_connections=1,
        big_duration_s=20,
        skip=frozenset(),
    )


def test_the_bank_table_gives_medians_ratios_and_verdicts() -> None:
    bank = {
        "bank-group": Series("group", "socklab bench bank -c 16", []),
        "bank-single": Series("single", "socklab bench bank -c 16", []),
    }
    bank["bank-group"].runs += [result(9000, 5), result(8500, 30, 2, timeout=2), result(7000, 4)]
    bank["bank-single"].runs += [result(4000, 9), result(4250, 9), result(5000, 9)]
    lines = report.render_bank(bank)
    assert (
        "| group | 8,500 | 2.00x | 1.25 | 2.5 | 5 | 10 | 2 (timeout 2) | 80% | ? "
        "| 9,000, 8,500, 7,000 |" in lines
    )
    assert "- at least 8,000 transactions/s: **8,500** -> **met**" in lines
    assert "- p99 under 20 ms: **5 ms** -> **met**" in lines
    assert (
        "- at least 2x the same server with one commit per posting: **2.00x** -> **met**" in lines
    )


def test_the_text_targets_are_judged_against_the_baseline() -> None:
    text = {
        "baseline-lab": Series("baseline", "b", [result(10_000, 10)]),
        "socklab-lab": Series("socklab", "s", [result(29_999, 5)]),
        "socklab-json": Series("json", "j", [result(80_000, 20)]),
        "socklab-json-batch": Series("batch", "j", [result(90_000, 20)]),
    }
    lines = report.render_text(options(1), text)
    # 2.9999x prints as 3.00x but is under 3x
    assert lines[-3].endswith("**3.00x**, p99 5 ms vs 10 ms -> **not met**")
    assert lines[-2].endswith("**8.00x** -> **met** (in batches: 9.00x)")


def test_a_page_without_skipped_scenarios_and_with_its_command() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC)
    argv = report.shown_argv(["--runs", "1", "--output", "x.md", "--skip=text", "--output=y"])
    page = report.render({"cpu": "Test"}, argv, options(1), {}, {}, {}, None, None, when=when)
    assert "## Last run (2026-01-02 03:04 UTC)" in page
    assert "python benchmarks/run.py --runs 1 --skip=text\n" in page
    assert "## Text service" not in page and "## Bank" not in page
    assert page.endswith(report.METHOD)
