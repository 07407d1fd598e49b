"""companion.compare: the largest relative gap between two runs, and a run-stable way to print it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Expect, arrays_valid_and_invalid, assert_rejected, classify,
                      close, numbers_valid_and_invalid, poisoned)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from companion import compare


def test_max_relative_difference_and_its_description():
    assert compare.max_relative_difference([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert compare.max_relative_difference([2.0], [2.5]) == pytest.approx(0.25)
    assert compare.max_relative_difference([0.0], [1e-3]) == pytest.approx(1e-3)  # absolute at 0
    assert compare.max_relative_difference({"a": [1.0], "b": [4.0]}, {"a": [1.0], "b": [5.0]}) == 0.25
    assert compare.describe_difference(0.0) == "bit-identical"
    assert compare.describe_difference(1.7e-7) == "at most 1e-06"
    assert compare.describe_difference(1e-7) == "at most 1e-07"
    assert compare.describe_difference(0.25) == "0.25"
    with pytest.raises(ValueError, match="same keys"):
        compare.max_relative_difference({"a": [1.0]}, {"b": [1.0]})
    with pytest.raises(TypeError, match="both be dicts"):
        compare.max_relative_difference({"a": [1.0]}, [1.0])
    with pytest.raises(ValueError, match="a must be finite"):
        compare.max_relative_difference([math.nan], [1.0])
    with pytest.raises(ValueError, match="difference"):
        compare.describe_difference(-1.0)
    with pytest.raises(TypeError, match="difference must be a finite number >= 0, got str"):
        compare.describe_difference("1e-7")
    assert compare.describe_difference(np.int64(0)) == "bit-identical"


@BAD_INPUT_SETTINGS
@given(case=st.one_of(
    st.tuples(st.just("a"), poisoned(np.ones(5))),
    st.tuples(st.just("b"), poisoned(np.ones(5))),
    st.tuples(st.just("same shape"), st.integers(1, 4).map(lambda n: np.ones(n))),
    st.tuples(st.just("a"), st.just(np.array([]))),
))
def test_max_relative_difference_rejects_bad_arrays(case):
    name, value = case
    a, b = (value, np.ones(5)) if name == "a" else (np.ones(5), value)
    assert_rejected(lambda: compare.max_relative_difference(a, b), name)


# --- every input, valid or not (issue 15) -----------------------------------------------------------


@st.composite
def two_runs(draw):
    a = draw(arrays(np.float64, draw(st.sampled_from([(3,), (2, 2)])), elements=st.floats(-4, 4)))
    b = a + draw(arrays(np.float64, a.shape, elements=st.floats(-1e-3, 1e-3)))
    return draw(arrays_valid_and_invalid(a)), draw(arrays_valid_and_invalid(b)), draw(st.booleans())


@INPUT_SETTINGS
@given(cases=two_runs())
def test_inputs_max_relative_difference(cases):
    a, b, as_histories = cases

    def expected():
        e = Expect()
        x, y = e.array("a", a, ndim=range(1, 9)), e.array("b", b, ndim=range(1, 9))
        e.done()
        e.need(x.shape == y.shape, "a", "b")
        e.done()
        with np.errstate(over="ignore"):
            return np.max(np.abs(x - y) / np.where(x == 0, 1.0, np.abs(x)))

    if as_histories:  # dicts of series are compared key by key, with the same checks
        call = lambda: compare.max_relative_difference({"loss": a.value}, {"loss": b.value})  # noqa: E731
    else:
        call = lambda: compare.max_relative_difference(a.value, b.value)  # noqa: E731
    classify("compare.max_relative_difference", call, expected,
             agree=lambda result, want: type(result) is float and close(result, want))


@INPUT_SETTINGS
@given(difference=st.one_of(numbers_valid_and_invalid(2.5e-7), numbers_valid_and_invalid(0.031)))
def test_inputs_describe_difference(difference):
    def expected():
        e = Expect()
        d = e.number("difference", difference, low=0)
        e.done()
        if d == 0:
            return "bit-identical"
        return f"{d:.3g}" if d >= 1e-3 else f"at most 1e-{-math.ceil(math.log10(d)):02d}"

    classify("compare.describe_difference", lambda: compare.describe_difference(difference.value), expected,
             agree=lambda result, want: result == want)
