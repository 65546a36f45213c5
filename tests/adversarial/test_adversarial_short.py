"""A short run of ``benchmarks/adversarial.py``: the same code as the long run, small sizes.

Real ``socklab serve`` processes on free ports, raw sockets, fixed seeds. Each test asserts
the promise of docs/reliability.md it covers: no crash, no error in the log, no connection
slot held after its client has gone, the server answering others, and for the bank under
kill -9: nothing acknowledged lost, nothing applied twice.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import pytest

from postgres_db import require_postgres

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "adversarial.py"
SEED = 20261201


def load_script() -> ModuleType:
    # The script imports its sibling ``harness`` as it does when run as a script.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("adversarial", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["adversarial"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


adv = load_script()
pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _quiet_client_resets() -> Iterator[None]:
    """Our own clients reset connections on purpose; asyncio would log each one."""
    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    adv.raise_fd_limit()
    yield
    logger.setLevel(level)


@pytest.mark.timeout(300)  # a server that holds connections costs a timeout per batch
def test_fuzz_every_service_and_dialect() -> None:
    result = adv.run_fuzz(
        SEED, 24_000, frames_per_conn=30, conns_per_pair=6, timeout_s=10, log=lambda _: None
    )
    report = json.dumps(asdict(result))
    assert result.frames >= 24_000
    assert all(count > 1_000 for count in result.by_pair.values()), report
    assert len(result.by_pair) == len(adv.SERVICES) * len(adv.DIALECTS)
    assert result.crashes == 0, report
    assert result.failed_probes == 0, report
    assert result.missing_replies == 0, report
    assert result.error_lines == 0, report
    assert result.unclosed == 0, report
    assert result.leaked_slots == 0, report


def test_the_fuzzer_is_reproducible() -> None:
    def frames(seed: int) -> list[bytes]:
        mutator = adv.Mutator(adv.random.Random(seed), 65536)
        return [mutator.frame(s, d) for s in adv.SERVICES for d in adv.DIALECTS for _ in range(50)]

    assert frames(SEED) == frames(SEED)
    assert frames(SEED) != frames(SEED + 1)


def test_slowloris_connections_are_closed_and_others_answered() -> None:
    result = adv.run_slowloris(
        45,
        interval_s=0.5,
        partial_timeout_s=1.5,
        idle_timeout_s=2.0,
        half_bytes=20_000,
        log=lambda _: None,
    )
    report = json.dumps(asdict(result))
    assert result.closed_by_server + result.refused == 45, report
    assert result.held_at_deadline == 0, report
    assert result.victim_requests > 0 and result.victim_failures == 0, report
    assert result.server_alive and result.leaked_slots == 0, report


def test_a_flood_past_max_connections_is_refused_at_once() -> None:
    result = adv.run_flood(16, 24)
    report = json.dumps(asdict(result))
    assert result.hung == 0, report
    assert 1 <= result.served <= 16, report
    assert result.refused >= 24, report
    assert result.held <= 16, report
    assert result.leaked_slots == 0 and result.answers_after, report


@pytest.mark.parametrize("dialect", ["json", "line"])
def test_a_never_reading_client_is_paused_and_others_answered(dialect: str) -> None:
    result = adv.run_never_readers(1, dialect=dialect, stall_s=1.0, cap_mb=128)
    report = json.dumps(asdict(result))
    assert result.stalled == 1, report  # the server stopped reading it before 128 MB
    assert result.victim_requests > 0 and result.victim_failures == 0, report
    assert result.rss_peak_mb - result.rss_before_mb <= result.rss_limit_mb, report
    assert result.leaked_slots == 0 and result.answers_after, report


def check_chaos(result: object) -> None:
    report = asdict(result)  # type: ignore[call-overload]
    shown = json.dumps(report)
    assert report["server_kills"] + report["worker_kills"] >= 3, shown
    assert report["acknowledged"] > 0, shown
    assert report["lost"] == 0, shown
    assert report["doubled"] == 0, shown
    assert report["changed_outcomes"] == 0, shown
    assert report["balance_mismatches"] == 0, shown
    assert report["verify_ok"], shown
    assert report["unplanned_exits"] == 0, shown
    assert report["unexpected_errors"] == 0, shown


def test_chaos_on_sqlite_loses_and_doubles_nothing() -> None:
    result = adv.run_chaos(
        "sqlite",
        seed=SEED,
        seconds=2,
        clients=4,
        accounts=3,
        min_kills=3,
        kill_every_s=(0.3, 1.0),
        log=lambda _: None,
    )
    check_chaos(result)


@pytest.mark.postgres
def test_chaos_on_postgres_with_two_workers_loses_and_doubles_nothing() -> None:
    url = require_postgres()
    result = adv.run_chaos(
        "postgres",
        seed=SEED,
        seconds=2,
        clients=4,
        accounts=3,
        workers=2,
        min_kills=4,
        kill_every_s=(0.3, 1.0),
        postgres_url=url,
        log=lambda _: None,
    )
    check_chaos(result)
