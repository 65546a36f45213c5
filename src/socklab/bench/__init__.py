"""The load generator behind ``socklab bench``: scenarios, connections, processes, results.

``run_bench(BenchSettings(service="text", dialect=Dialect.LAB, connections=50))`` returns a
``BenchResult`` with ``requests_per_s``, ``latency_ms(0.99)`` and ``error_count``.
"""

from socklab.bench.histogram import LatencyHistogram
from socklab.bench.load import BenchError, LoadPlan, LoadResult, Progress
from socklab.bench.runner import BenchResult, BenchSettings, run_bench
from socklab.bench.scenarios import SCENARIOS, Probe, Scenario, ScenarioOptions, make_scenario

__all__ = [
    "SCENARIOS",
    "BenchError",
    "BenchResult",
    "BenchSettings",
    "LatencyHistogram",
    "LoadPlan",
    "LoadResult",
    "Probe",
    "Progress",
    "Scenario",
    "ScenarioOptions",
    "make_scenario",
    "run_bench",
]
