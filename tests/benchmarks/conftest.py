"""The benchmark scripts' modules (``benchmarks/harness.py``, ``report.py``) import each other
by name, as they do when a script runs as ``python benchmarks/NAME.py``: put that folder on
``sys.path`` for the tests that import them."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
