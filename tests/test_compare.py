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
    assert compare.describe_difference(0.0, exact=True) == "bit-identical"
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
    assert compare.describe_difference(np.int64(0), exact=True) == "bit-identical"


@pytest.mark.parametrize(("difference", "printed"), [
    (0.0, "below 1e-05 (float32 rounding)"),  # a 0 by chance: another machine rounds
    (1e-300, "below 1e-05 (float32 rounding)"),
    (1.7e-7, "below 1e-05 (float32 rounding)"),
    (9.99e-6, "below 1e-05 (float32 rounding)"),
    (1e-5, "below 1e-03"),  # above float32 rounding, below a real gap: still a bound
    (9.9e-4, "below 1e-03"),
    (1e-3, "0.001"),
    (0.02883, "0.029"),
    (0.505, "0.51"),
    (1.0, "1"),
    (12.3, "12"),
])
def test_describe_difference_prints_fixed_bands(difference, printed):
    assert compare.describe_difference(difference) == printed


def test_rounding_prints_the_same_whatever_its_size():
    """What a notebook prints for float rounding does not change when the rounding does: the
    sizes seen for one difference on two machines (0 or 1e-7 here, 1e-6 there) print alike."""
    sizes = [0.0, *np.geomspace(1e-12, 9.9e-6, 200)]
    assert {compare.describe_difference(s) for s in sizes} == {"below 1e-05 (float32 rounding)"}
    float64 = {compare.describe_difference(s, tolerance=1e-12, reason="float64 rounding")
               for s in np.geomspace(1e-18, 9.9e-13, 200)}
    assert float64 == {"below 1e-12 (float64 rounding)"}
    step = {compare.describe_difference(s, tolerance=1e-3, reason="float32 rounding of a step")
            for s in np.geomspace(1e-9, 9.9e-4, 200)}
    assert step == {"below 1e-03 (float32 rounding of a step)"}


@pytest.mark.parametrize(("tolerance", "error"), [
    (0.0, ValueError), (-1e-5, ValueError), (1e-2, ValueError), (1.5e-5, ValueError),
    (float("nan"), ValueError), ("1e-5", TypeError),
])
def test_describe_difference_rejects_a_bad_tolerance(tolerance, error):
    with pytest.raises(error, match="tolerance"):
        compare.describe_difference(1e-7, tolerance=tolerance)


@pytest.mark.parametrize("reason", ["", "  ", None, 3])
def test_describe_difference_rejects_a_bad_reason(reason):
    with pytest.raises(TypeError, match="reason"):
        compare.describe_difference(1e-7, reason=reason)


def test_exact_zero_is_bit_identical_only_when_the_caller_says_so():
    assert compare.describe_difference(0.0, exact=True) == "bit-identical"
    assert compare.describe_difference(1e-9, exact=True) == "below 1e-05 (float32 rounding)"
    assert compare.describe_difference(0.5, exact=True) == "0.5"
    with pytest.raises(TypeError, match="exact must be True or False"):
        compare.describe_difference(0.0, exact=1)


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
        if d < 1e-5:
            return "below 1e-05 (float32 rounding)"
        return "below 1e-03" if d < 1e-3 else f"{d:.2g}"

    classify("compare.describe_difference", lambda: compare.describe_difference(difference.value), expected,
             agree=lambda result, want: result == want)
