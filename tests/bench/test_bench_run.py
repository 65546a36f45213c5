"""``benchmarks/run.py`` end to end, tiny: real servers, real load, a report with figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


@pytest.mark.e2e
def test_run_writes_a_report(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--runs",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--connections",
            "4",
            "--pipeline",
            "4",
            "--big-digits",
            "60",
            "--big-duration",
            "0.5",
            "--output",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "python benchmarks/run.py --runs 1" in text
    assert str(tmp_path) not in text  # where the report went is not part of the command
    for row in ("| thread baseline, lab |", "| socklab, lab |", "| socklab, json, pipeline 4 |"):
        assert row in text
    assert "| socklab | " in text and "| baseline | " in text
    # every target gets a verdict: text lab and json, numbers hard and easy, bank x3
    assert len(re.findall(r"-> \*\*(?:met|not met)\*\*", text)) == 7, text
    for header in ("## Text service", "## Numbers service", "## Bank", "## Fairness", "## TLS"):
        assert header in text
    fairness = [line for line in text.splitlines() if line.startswith("| text, json flood |")]
    assert len(fairness) == 1 and fairness[0].endswith(("| met |", "| not met |"))
    assert text.endswith("the table shows the median over runs of each.\n\n")
    check_verdicts(text)


def number(text: str) -> float:
    return float(text.replace(",", ""))


TEXT_TARGET = re.compile(
    r"with a lower p99: \*\*([\d.,]+)x\*\*, p99 ([\d.,]+) ms vs ([\d.,]+) ms"
    r" -> \*\*(met|not met)\*\*"
)
PIPELINE_TARGET = re.compile(r"unpipelined requests/s: \*\*([\d.,]+)x\*\* -> \*\*(met|not met)\*\*")
LATENCY_TARGET = re.compile(r"(hard|easy) \*\*([\d.,]+) ms\*\* -> \*\*(met|not met)\*\*")


def check_verdicts(text: str) -> None:
    """Each target's verdict follows from the figures printed beside it (a printed figure
    is rounded: one exactly at a threshold proves nothing either way and is skipped)."""
    found = TEXT_TARGET.search(text)
    assert found, "the text-over-lab target is missing"
    ratio, ours, theirs = (number(g) for g in found.groups()[:3])
    if ratio != 3 and ours != theirs:
        assert found[4] == ("met" if ratio > 3 and ours < theirs else "not met"), found[0]
    found = PIPELINE_TARGET.search(text)
    assert found, "the pipelined-json target is missing"
    if number(found[1]) != 8:
        assert found[2] == ("met" if number(found[1]) > 8 else "not met"), found[0]
    latencies = LATENCY_TARGET.findall(text)
    assert [kind for kind, _, _ in latencies] == ["hard", "easy"], latencies
    for kind, ms, verdict in latencies:
        if kind == "hard" and "no hard request finished" in text:
            assert verdict == "not met"
        elif number(ms) != 1000:
            assert verdict == ("met" if number(ms) < 1000 else "not met"), (kind, ms, verdict)
