"""Fixed-bucket histograms: the reference's semantics, and the Cython twin equal to it.

The semantics tests run over both implementations (the native one skipped when it is
not built or RISKWIRE_PURE_PYTHON=1); hypothesis then checks random edges and values
(NaN, +-inf, values on edges, -0.0) give identical counts, count, nan_count and a
bit-identical sum.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.features.dispatch import Implementation
from gateway.telemetry.histogram import (
    FixedBucketHistogram,
    Histogram,
    latency_edges_seconds,
    make_histogram,
    score_edges,
)
from tests.native.strategies import EXAMPLES, needs_native

IMPLEMENTATIONS = ["python", pytest.param("native", marks=needs_native)]


@pytest.fixture(params=IMPLEMENTATIONS)
def mode(request: pytest.FixtureRequest) -> Implementation:
    implementation: Implementation = request.param
    return implementation


def make(edges: tuple[float, ...] | list[float], mode: Implementation) -> FixedBucketHistogram:
    histogram = make_histogram(edges, mode)
    assert histogram.implementation == mode
    return histogram


def counts_of(histogram: FixedBucketHistogram) -> list[int]:
    counts = histogram.counts()
    assert counts.dtype == np.uint64
    assert counts.shape == (len(histogram.edges) + 1,)
    return [int(c) for c in counts]


def bits(value: float) -> int:
    result: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return result


def test_python_mode_is_the_reference() -> None:
    assert isinstance(make_histogram([1.0], "python"), Histogram)


def test_le_buckets(mode: Implementation) -> None:
    h = make([1.0, 2.0, 5.0], mode)
    for value in (-math.inf, -3.0, 0.0, 1.0, 1.0000000000000002, 2.0, 4.9, 5.0, 5.1, math.inf):
        h.record(value)
    # <=1: -inf -3 0 1 | <=2: 1+ulp 2 | <=5: 4.9 5 | +Inf: 5.1 inf
    assert counts_of(h) == [4, 2, 2, 2]
    assert h.count == 10
    assert h.nan_count == 0
    assert h.edges == (1.0, 2.0, 5.0)


def test_nan_is_counted_apart(mode: Implementation) -> None:
    h = make([0.5], mode)
    h.record(math.nan)
    h.record(-math.nan)
    h.record(0.25)
    assert counts_of(h) == [1, 0]
    assert (h.count, h.nan_count, h.sum) == (1, 2, 0.25)


def test_zero_signs_on_an_edge(mode: Implementation) -> None:
    h = make([-1.0, 0.0, 1.0], mode)
    h.record(-0.0)
    h.record(0.0)
    h.record(-5e-324)
    h.record(5e-324)
    assert counts_of(h) == [0, 3, 1, 0]


def test_sum_in_record_order_with_infinities(mode: Implementation) -> None:
    h = make([1.0], mode)
    for value in (1e16, 1.0, -1e16, 1.0):
        h.record(value)
    assert h.sum == ((1e16 + 1.0) + -1e16) + 1.0 == 1.0  # not 2.0: order matters
    h.record(math.inf)
    assert h.sum == math.inf
    h.record(-math.inf)
    assert math.isnan(h.sum)
    assert h.count == 6


def test_ints_are_recorded_as_floats(mode: Implementation) -> None:
    h = make([1.0, 2.0], mode)
    h.record(2)
    assert counts_of(h) == [0, 1, 0]
    assert h.sum == 2.0 and isinstance(h.sum, float)


def test_reset(mode: Implementation) -> None:
    h = make([1.0, 2.0], mode)
    h.record_many(np.array([0.5, 1.5, 3.0, math.nan]))
    h.reset()
    assert counts_of(h) == [0, 0, 0]
    assert (h.count, h.nan_count, h.sum) == (0, 0, 0.0)
    h.record(1.5)
    assert counts_of(h) == [0, 1, 0]


def test_no_edges_is_one_inf_bucket(mode: Implementation) -> None:
    h = make([], mode)
    h.record(-1.0)
    h.record_many(np.array([1e300, math.nan]))
    assert counts_of(h) == [2]
    assert (h.count, h.nan_count) == (2, 1)


def test_counts_is_a_copy(mode: Implementation) -> None:
    h = make([1.0], mode)
    counts = h.counts()
    counts[0] = 7
    assert counts_of(h) == [0, 0]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([1.0, 1.0], "strictly increasing"),
        ([2.0, 1.0], "strictly increasing"),
        ([-0.0, 0.0], "strictly increasing"),
        ([0.0, math.nan], "finite"),
        ([math.inf], "finite"),
        ([-math.inf, 0.0], "finite"),
    ],
)
def test_bad_edges(mode: Implementation, edges: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(edges, mode)


def test_record_many_takes_1d_only(mode: Implementation) -> None:
    h = make([1.0], mode)
    with pytest.raises(ValueError, match="1-D"):
        h.record_many(np.zeros((2, 2)))
    h.record_many([0.5, 2.0])  # array-likes are converted
    h.record_many(np.arange(6, dtype=np.float32)[::2])  # a strided float32 view: 0, 2, 4
    assert counts_of(h) == [2, 3]


def test_standard_edges() -> None:
    latency = latency_edges_seconds()
    assert latency[0] == 50e-6 and latency[-1] == 1.0 and len(latency) == 14
    assert 1e-3 in latency and 2.5e-3 in latency
    assert list(latency) == sorted(set(latency))
    scores = score_edges()
    assert len(scores) == 20 and scores[-1] == 1.0
    assert scores[2] == 0.15  # the double nearest 0.15, not 3 * 0.05
    assert all(math.isclose(e, 0.05 * (i + 1)) for i, e in enumerate(scores))
    Histogram(latency)
    Histogram(scores)


def test_a_score_on_an_edge_lands_in_that_bucket(mode: Implementation) -> None:
    h = make(score_edges(), mode)
    h.record(0.15)
    assert counts_of(h)[2] == 1


finite = st.floats(allow_nan=False, allow_infinity=False)
edges_strategy = st.one_of(
    st.lists(finite, max_size=12).map(lambda e: sorted(set(e))),
    st.lists(st.integers(-50, 50).map(float), max_size=20).map(lambda e: sorted(set(e))),
    st.just(list(latency_edges_seconds())),
)


@st.composite
def edges_and_values(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    edges = draw(edges_strategy)
    special = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e308]
    value = st.one_of(
        st.floats(),
        st.floats(-60.0, 60.0),
        st.sampled_from(special),
        *([st.sampled_from(edges)] if edges else []),
    )
    return edges, draw(st.lists(value, max_size=40))


def state(h: FixedBucketHistogram) -> tuple[list[int], int, int, int]:
    return counts_of(h), h.count, h.nan_count, bits(h.sum)


def reference_state(edges: list[float], values: list[float]) -> tuple[list[int], int, int, int]:
    """Counted here from the definition, independent of both implementations."""
    counts = [0] * (len(edges) + 1)
    total = 0.0
    nans = 0
    for v in values:
        if math.isnan(v):
            nans += 1
            continue
        counts[next((i for i, e in enumerate(edges) if v <= e), len(edges))] += 1
        total += v
    return counts, len(values) - nans, nans, bits(total)


@EXAMPLES
@given(case=edges_and_values())
def test_reference_matches_definition(case: tuple[list[float], list[float]]) -> None:
    edges, values = case
    expected = reference_state(edges, values)
    one_by_one = Histogram(edges)
    for v in values:
        one_by_one.record(v)
    assert state(one_by_one) == expected
    at_once = Histogram(edges)
    at_once.record_many(np.array(values, dtype=np.float64))
    assert state(at_once) == expected


@needs_native
@EXAMPLES
@given(case=edges_and_values(), split=st.integers(0, 40))
def test_native_matches_reference(case: tuple[list[float], list[float]], split: int) -> None:
    edges, values = case
    native = make_histogram(edges, "native")
    python = make_histogram(edges, "python")
    assert native.edges == python.edges
    array: npt.NDArray[np.float64] = np.array(values, dtype=np.float64)
    for h in (native, python):
        # Mixed: one by one, then the rest at once; record_many accumulates in order too.
        for v in values[:split]:
            h.record(v)
        h.record_many(array[split:])
    assert state(native) == state(python) == reference_state(edges, values)
