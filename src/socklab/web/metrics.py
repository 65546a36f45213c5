"""``/metrics`` (Prometheus' text format) and the dashboard's snapshots, both read from the
runtime's plain counters (``socklab.server.counters``) when asked, never on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from socklab.server.counters import LATENCY_BUCKETS_S, ServiceCounters, quantile_s
from socklab.server.runtime import Listener

DIALECTS = ("json", "lab", "line")


@dataclass(frozen=True, slots=True)
class Source:
    """One service as the exporters see it: its name, counters and open connections."""

    name: str
    counters: ServiceCounters
    connections: Callable[[], dict[str, int]]
    """Open connections by dialect (``detecting`` before the first message)."""


def listener_source(listener: Listener) -> Source:
    """The exporters' view of a TCP service."""

    def connections() -> dict[str, int]:
        counts = dict.fromkeys((*DIALECTS, "detecting"), 0)
        for conn in listener.connections:
            key = conn.dialect.value if conn.dialect is not None else "detecting"
            counts[key] += 1
        return counts

    return Source(listener.service.name, listener.counters, connections)


def cumulative(counts: Sequence[int]) -> list[int]:
    """Per-bucket counts -> the running totals Prometheus' buckets hold."""
    total, out = 0, []
    for count in counts:
        total += count
        out.append(total)
    return out


class SocklabCollector(Collector):
    """Reads every source (and the bank's last statistics) at each scrape."""

    def __init__(
        self, sources: Callable[[], list[Source]], bank_stats: Callable[[], dict[str, Any] | None]
    ) -> None:
        self._sources = sources
        self._bank_stats = bank_stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "socklab_requests", "Messages answered, by service.", labels=["service"]
        )
        errors = CounterMetricFamily(
            "socklab_errors", "Error replies, by service and wire code.", labels=["service", "code"]
        )
        latency = HistogramMetricFamily(
            "socklab_request_duration_seconds",
            "From a message's dispatch to its encoded reply.",
            labels=["service"],
        )
        open_conns = GaugeMetricFamily(
            "socklab_connections_open",
            "Connections open, by service and dialect.",
            labels=["service", "dialect"],
        )
        for source in self._sources():
            c = source.counters
            requests.add_metric([source.name], c.requests)
            for code, count in sorted(c.errors.items()):
                errors.add_metric([source.name, code], count)
            running = cumulative(c.latency_counts)
            buckets = [(repr(bound), running[i]) for i, bound in enumerate(LATENCY_BUCKETS_S)] + [
                ("+Inf", running[-1])
            ]
            latency.add_metric([source.name], buckets, c.latency_sum_s)
            for dialect, count in source.connections().items():
                open_conns.add_metric([source.name, dialect], count)
        yield from (requests, errors, latency, open_conns)
        stats = self._bank_stats()
        if stats is not None:
            tx = CounterMetricFamily(
                "socklab_bank_transactions",
                "The bank's money transactions (the seed's statistics), by outcome.",
                labels=["outcome"],
            )
            tx.add_metric(["successful"], stats["successful"])
            tx.add_metric(["failed"], stats["failed"])
            yield tx
            yield GaugeMetricFamily(
                "socklab_bank_success_rate",
                "Successful transactions / all transactions.",
                value=stats["success_rate"],
            )


class Rates:
    """The dashboard's per-second view: differences between two readings of the counters."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int, list[int], dict[str, int]]] = {}

    def snapshot(self, sources: list[Source], now: float) -> list[dict[str, Any]]:
        """One entry per service: open connections by dialect, requests/s since the last
        call, errors by code (total), latency percentiles of the last interval (seconds,
        ``None`` without replies)."""
        out = []
        for source in sources:
            c = source.counters
            counts = list(c.latency_counts)
            then, requests, old_counts, _ = self._last.get(
                source.name, (now, c.requests, [0] * len(counts), {})
            )
            elapsed = now - then
            recent = [new - old for new, old in zip(counts, old_counts, strict=True)]
            out.append(
                {
                    "service": source.name,
                    "connections": source.connections(),
                    "requests": c.requests,
                    "requests_per_s": (c.requests - requests) / elapsed if elapsed > 0 else 0.0,
                    "errors": dict(sorted(c.errors.items())),
                    "p50_s": quantile_s(recent, 0.5),
                    "p90_s": quantile_s(recent, 0.9),
                    "p99_s": quantile_s(recent, 0.99),
                }
            )
            self._last[source.name] = (now, c.requests, counts, dict(c.errors))
        return out
