"""The latency histogram: bucket bounds, percentiles within 0.4 %, exact merges."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socklab.bench.histogram import SUB_BITS, LatencyHistogram, bucket_bounds, bucket_index

RELATIVE_ERROR = 1 / (1 << (SUB_BITS - 1))


def exact_percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@pytest.mark.parametrize("value", [0, 1, 255, 256, 511, 512, 513, 1000, 10**6, 10**10, 2**40 + 7])
def test_a_value_lies_within_its_bucket(value: int) -> None:
    low, high = bucket_bounds(bucket_index(value))
    assert low <= value <= high
    assert high - low <= max(0, value * RELATIVE_ERROR)


def test_bucket_indexes_are_monotonic_and_contiguous() -> None:
    previous = -1
    for value in range(0, 200_000, 7):
        index = bucket_index(value)
        assert index >= previous
        previous = index
    for index in range(0, 5000):
        low, high = bucket_bounds(index)
        assert bucket_index(low) == index
        assert bucket_index(high) == index
        assert bucket_index(high + 1) == index + 1


def test_empty_histogram() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert hist.percentile(0.99) == 0
    assert hist.mean_ns == 0.0


def test_percentiles_are_close_to_the_exact_ones() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(13, 1.2)) for _ in range(20_000)]
    hist = LatencyHistogram()
    hist.record_many(values)
    for q in (0.0, 0.5, 0.9, 0.99, 0.999):
        exact = exact_percentile(values, q)
        assert abs(hist.percentile(q) - exact) <= exact * RELATIVE_ERROR + 1
    assert hist.percentile(1.0) == max(values)
    assert hist.min_ns == min(values)
    assert hist.max_ns == max(values)
    assert hist.sum_ns == sum(values)


def test_quantile_out_of_range() -> None:
    with pytest.raises(ValueError, match="quantile"):
        LatencyHistogram().percentile(1.5)


def test_negative_values_count_as_zero() -> None:
    hist = LatencyHistogram()
    hist.record(-5)
    assert (hist.count, hist.min_ns, hist.max_ns) == (1, 0, 0)


@given(
    st.lists(st.integers(0, 10**11), max_size=300),
    st.lists(st.integers(0, 10**11), max_size=300),
)
def test_merging_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    one, two, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    one.record_many(a)
    two.record_many(b)
    both.record_many(a + b)
    one.merge(two)
    assert one.counts == both.counts
    assert (one.count, one.sum_ns, one.min_ns, one.max_ns) == (
        both.count,
        both.sum_ns,
        both.min_ns,
        both.max_ns,
    )
    for q in (0.5, 0.9, 0.99):
        assert one.percentile(q) == both.percentile(q)


def test_merging_an_empty_histogram_changes_nothing() -> None:
    hist = LatencyHistogram()
    hist.record_many([5, 500])
    hist.merge(LatencyHistogram())
    assert (hist.count, hist.min_ns) == (2, 5)
    empty = LatencyHistogram()
    empty.merge(hist)
    assert (empty.count, empty.min_ns, empty.max_ns) == (2, 5, 500)


def test_dict_round_trip() -> None:
    hist = LatencyHistogram()
    hist.record_many([1, 10, 10_000, 10**9])
    again = LatencyHistogram.from_dict(hist.to_dict())
    assert again.counts == hist.counts
    assert again.percentile(0.5) == hist.percentile(0.5)
