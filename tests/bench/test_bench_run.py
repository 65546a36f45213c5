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
