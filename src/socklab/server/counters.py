"""Per-service counters the runtime bumps on its hot path, read by ``/metrics`` and the
dashboard.

How this works: the runtime only adds to plain ints (a request, an error by code, a
latency in one of fixed buckets); nothing here locks, allocates per message or formats.
Exporters read the counters when they are asked (a Prometheus scrape, a dashboard tick)
and turn them into rates, percentiles and text there. Connections open per dialect are
not counted at all: they are read from the listener's set of live connections.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds of the latency histogram's buckets; a last bucket takes the rest (+Inf)."""


class ServiceCounters:
    """What one listener has answered since it started."""

    __slots__ = ("errors", "latency_counts", "latency_sum_s", "requests")

    def __init__(self) -> None:
        self.requests = 0
        """Messages handed to a session (json requests, lines, lab frames)."""
        self.errors: dict[str, int] = {}
        """Error replies by wire code (``insufficient_funds``, ``bad_request``, ...)."""
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        """Replies per latency bucket (not cumulative); the last is over the largest bound."""
        self.latency_sum_s = 0.0

    def observe(self, seconds: float) -> None:
        """One reply took ``seconds`` from the message's dispatch to its encoding."""
        self.latency_sum_s += seconds
        self.latency_counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1

    def count_error(self, code: str) -> None:
        """One error reply with wire code ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1


def quantile_s(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the latencies in ``counts`` (per bucket, as in
    ``ServiceCounters.latency_counts``), as the upper bound of its bucket; ``None`` when
    nothing was counted. Past the largest bound it is that bound (the histogram cannot
    tell more)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank and count:
            return LATENCY_BUCKETS_S[min(index, len(LATENCY_BUCKETS_S) - 1)]
    return LATENCY_BUCKETS_S[-1]
