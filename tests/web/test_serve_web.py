"""``socklab serve web``: the web service in a real process, and its unit parts."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest

from helpers import start_server_process
from socklab.cli.common import EXIT_USAGE
from socklab.cli.main import main
from socklab.server.counters import LATENCY_BUCKETS_S, ServiceCounters, quantile_s
from socklab.web.sessions import SessionStore


@pytest.mark.e2e
def test_serve_web_alone_answers_health_and_metrics() -> None:
    server = start_server_process("web", "--web-port", "0")
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/healthz", timeout=10) as reply:
            assert json.load(reply) == {"ok": True}
        with urllib.request.urlopen(base + "/readyz", timeout=10) as reply:
            assert json.load(reply) == {"ok": True, "ledger": False}  # no bank here
        with urllib.request.urlopen(base + "/metrics", timeout=10) as reply:
            text = reply.read().decode()
        assert 'socklab_requests_total{service="web"}' in text
        with urllib.request.urlopen(base + "/", timeout=10) as reply:
            assert "HttpOnly" in reply.headers["Set-Cookie"]
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert "Web server started and listening" in server.text()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_when_idle_and_the_oldest_goes_past_the_cap() -> None:
    clock = FakeClock()
    store = SessionStore(idle_s=10, max_sessions=2, clock=clock)
    first = store.create("10.0.0.1")
    clock.now = 5
    assert store.get(first.token) is first  # used: its idle clock restarts
    second = store.create("10.0.0.2")
    clock.now = 8
    third = store.create("10.0.0.3")  # over the cap: the least recently used goes
    assert store.get(first.token) is None and len(store) == 2
    clock.now = 16
    assert store.get(second.token) is None  # idle for 11 s
    assert len(store) == 1
    assert store.get(third.token) is third
    assert store.get(None) is None and store.get("nope") is None


def test_rotate_changes_both_tokens() -> None:
    store = SessionStore()
    session = store.create("10.0.0.1")
    token, csrf = session.token, session.csrf
    store.rotate(session)
    assert session.token != token and session.csrf != csrf
    assert store.get(token) is None and store.get(session.token) is session
    assert session.is_csrf_valid(session.csrf) and not session.is_csrf_valid(csrf)
    assert not session.is_csrf_valid(None)


def test_counters_and_quantiles() -> None:
    counters = ServiceCounters()
    assert quantile_s(counters.latency_counts, 0.5) is None
    for _ in range(98):
        counters.observe(0.00005)
    counters.observe(0.003)
    counters.observe(60.0)
    counters.count_error("bad_request")
    counters.count_error("bad_request")
    assert counters.errors == {"bad_request": 2}
    assert quantile_s(counters.latency_counts, 0.5) == LATENCY_BUCKETS_S[0]
    assert quantile_s(counters.latency_counts, 0.99) == 0.005
    assert quantile_s(counters.latency_counts, 1.0) == LATENCY_BUCKETS_S[-1]
    assert counters.latency_counts[-1] == 1


def test_web_under_several_workers_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Browser sessions live in one process; workers share the port connection by connection.
    assert main(["serve", "web", "--workers", "2", "--web-port", "0"]) == EXIT_USAGE
    assert "--workers 1" in capsys.readouterr().err
