"""companion.compare: the largest relative gap between two runs, and a run-stable way to print it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import BAD_INPUT_SETTINGS, assert_rejected, poisoned
from hypothesis import given
from hypothesis import strategies as st

from companion import compare


def test_max_relative_difference_and_its_description():
    assert compare.max_relative_difference([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert compare.max_relative_difference([2.0], [2.5]) == pytest.approx(0.25)
    assert compare.max_relative_difference([0.0], [1e-3]) == pytest.approx(1e-3)  # absolute at 0
    assert compare.max_relative_difference({"a": [1.0], "b": [4.0]}, {"a": [1.0], "b": [5.0]}) == 0.25
    assert compare.describe_difference(0.0) == "zero (bit-identical)"
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
    with pytest.raises(TypeError, match="difference must be a number"):
        compare.describe_difference("1e-7")


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
