"""A latency histogram that merges exactly across processes.

How this works: values (nanoseconds) fall into log-linear buckets, HdrHistogram's idea in a
few lines. Values below ``2**SUB_BITS`` get a bucket each; above that, every power of two is
cut into ``2**(SUB_BITS - 1)`` equal buckets, so a bucket is never wider than
``1 / 2**(SUB_BITS - 1)`` of the values in it (0.4 % with ``SUB_BITS = 9``). Merging two
histograms adds their bucket counts, so percentiles of a merged histogram are those of all
the samples together (within the bucket width), never an average of percentiles. Count,
sum, minimum and maximum are kept exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

SUB_BITS = 9
_HALF = 1 << (SUB_BITS - 1)


def bucket_index(value: int) -> int:
    """The bucket of a non-negative value."""
    shift = value.bit_length() - SUB_BITS
    if shift <= 0:
        return value
    return shift * _HALF + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The values ``[low, high]`` that fall into bucket ``index``."""
    if index < 2 * _HALF:
        return index, index
    shift = index // _HALF - 1
    top = index - shift * _HALF
    low = top << shift
    return low, low + (1 << shift) - 1


class LatencyHistogram:
    """Counts of latencies (ns) per bucket; ``merge`` is exact, ``percentile`` is within 0.4 %."""

    __slots__ = ("count", "counts", "max_ns", "min_ns", "sum_ns")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.sum_ns = 0
        self.min_ns = 0
        self.max_ns = 0

    def record_many(self, values_ns: Iterable[int]) -> None:
        """Add every value (negative ones count as 0)."""
        counts = self.counts
        count = self.count
        total = self.sum_ns
        low = self.min_ns if count else -1
        high = self.max_ns
        for value in values_ns:
            value = max(value, 0)
            shift = value.bit_length() - SUB_BITS
            index = value if shift <= 0 else shift * _HALF + (value >> shift)
            counts[index] = counts.get(index, 0) + 1
            total += value
            high = max(high, value)
            if low < 0 or value < low:
                low = value
            count += 1
        self.count = count
        self.sum_ns = total
        self.min_ns = max(low, 0)
        self.max_ns = high

    def record(self, value_ns: int) -> None:
        self.record_many((value_ns,))

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples to this histogram."""
        if not other.count:
            return
        counts = self.counts
        for index, n in other.counts.items():
            counts[index] = counts.get(index, 0) + n
        self.min_ns = other.min_ns if not self.count else min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)
        self.count += other.count
        self.sum_ns += other.sum_ns

    def percentile(self, q: float) -> int:
        """The value (ns) at quantile ``q`` in [0, 1]: the smallest one with ``q`` of the
        samples at or below it. 0 for an empty histogram. Raises ``ValueError`` for a ``q``
        outside [0, 1]."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is in [0, 1], not {q}")
        if not self.count:
            return 0
        if q >= 1.0:
            return self.max_ns
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index)
                # The middle of the bucket, but never outside what was really seen.
                return min(max((low + high) // 2, self.min_ns), self.max_ns)
        return self.max_ns  # pragma: no cover - the counts add up to count

    @property
    def mean_ns(self) -> float:
        return self.sum_ns / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A plain form for pickling or JSON (bucket keys as strings for JSON)."""
        return {
            "count": self.count,
            "sum_ns": self.sum_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "counts": {str(k): v for k, v in self.counts.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        hist = cls()
        hist.counts = {int(k): int(v) for k, v in data["counts"].items()}
        hist.count = int(data["count"])
        hist.sum_ns = int(data["sum_ns"])
        hist.min_ns = int(data["min_ns"])
        hist.max_ns = int(data["max_ns"])
        return hist
