"""companion.data: the diabetes regression and the fixed digits split, read offline from scikit-learn."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, SLOW_INPUT_SETTINGS, Expect, assert_rejected, classify, not_a_fraction,
                      numbers_valid_and_invalid)
from hypothesis import given
from hypothesis import strategies as st

from companion import data
from companion.data import NUM_CLASSES, NUM_PIXELS, DigitsSplit, load_digits_split

# ---------------------------------------------------------------- the diabetes data


def test_diabetes_is_offline_and_shaped():
    x, y = data.load_diabetes()
    assert x.shape == (442, 10) and y.shape == (442, 1) and x.dtype == y.dtype == np.float32
    assert abs(float(y.mean())) < 1e-6 and float(y.std()) == pytest.approx(1.0, rel=1e-5)
    raw_x, raw = data.load_diabetes(standardize=False)
    assert float(raw.min()) == 25.0
    np.testing.assert_array_equal(raw_x, x)  # only the target is standardized
    with pytest.raises(TypeError, match="standardize"):
        data.load_diabetes(standardize="yes")


# ---------------------------------------------------------------- the digits


def test_digits_split_shapes_dtypes_and_range():
    split = load_digits_split()
    assert isinstance(split, DigitsSplit)
    x_train, y_train, x_val, y_val = split
    assert x_train.shape == (1348, NUM_PIXELS) and x_val.shape == (449, NUM_PIXELS)
    assert x_train.dtype == x_val.dtype == np.float32 and y_train.dtype == y_val.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0 and x_val.max() <= 1.0
    assert set(np.unique(y_train)) == set(np.unique(y_val)) == set(range(NUM_CLASSES))


def test_digits_split_is_a_fixed_partition_of_all_images():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    split = load_digits_split(validation_fraction=0.3, seed=5)
    together = np.concatenate([split.x_train, split.x_val]) * 16
    assert len(together) == len(images)
    # Every image appears exactly once (rows compared as bytes, with their labels).
    ours = sorted(row.tobytes() + bytes([int(y)]) for row, y in
                  zip(together.astype(np.int64), np.concatenate([split.y_train, split.y_val])))
    theirs = sorted(row.tobytes() + bytes([int(y)]) for row, y in zip(images.astype(np.int64), labels))
    assert ours == theirs
    again = load_digits_split(validation_fraction=0.3, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(split, again))
    other = load_digits_split(validation_fraction=0.3, seed=6)
    assert not np.array_equal(split.y_val, other.y_val)


@pytest.mark.parametrize("fraction, expected_val", [(0.25, 449), (0.5, 898), (1e-9, 1), (1 - 1e-9, 1796)])
def test_validation_fraction_sets_the_size(fraction, expected_val):
    split = load_digits_split(validation_fraction=fraction)
    assert len(split.x_val) == expected_val and len(split.x_train) == 1797 - expected_val


@pytest.mark.parametrize("kwargs, error, words", [
    ({"validation_fraction": 0}, ValueError, "validation_fraction"),
    ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
    ({"validation_fraction": "0.2"}, TypeError, "validation_fraction"),
    ({"validation_fraction": True}, TypeError, "validation_fraction"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
])
def test_digits_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        load_digits_split(**kwargs)


@BAD_INPUT_SETTINGS
@given(name=st.sampled_from(["validation_fraction", "seed"]),
       value=st.one_of(not_a_fraction, st.integers(max_value=-1)))
def test_digits_split_rejects_bad_arguments(name, value):
    if name == "seed" and isinstance(value, float) and value.is_integer() and value >= 0:
        return
    assert_rejected(lambda: load_digits_split(**{name: value}), name)


# --- every input, valid or not (issue 15) -----------------------------------------------------------


@SLOW_INPUT_SETTINGS
@given(standardize=st.one_of(numbers_valid_and_invalid(True), numbers_valid_and_invalid(False)))
def test_inputs_load_diabetes(standardize):
    def expected():
        e = Expect()
        flag = e.flag("standardize", standardize)
        e.done()
        return flag

    def agree(result, flag):
        x, y = result
        shaped = x.shape == (442, 10) and y.shape == (442, 1) and x.dtype == y.dtype == np.float32
        return shaped and (abs(float(y.mean())) < 1e-6 and abs(float(y.std()) - 1) < 1e-5) == flag

    classify("data.load_diabetes", lambda: data.load_diabetes(standardize=standardize.value), expected, agree=agree)


@functools.cache
def _unique_digits():
    split = load_digits_split()
    return np.unique(np.concatenate([split.x_train, split.x_val]), axis=0)


@SLOW_INPUT_SETTINGS
@given(fraction=numbers_valid_and_invalid(0.25), seed=numbers_valid_and_invalid(3))
def test_inputs_load_digits_split(fraction, seed):
    def expected():
        e = Expect()
        f, s = e.number("validation_fraction", fraction, low=0, high=1), e.count("seed", seed, minimum=0)
        e.need(f not in (0.0, 1.0), "validation_fraction")
        e.done()
        return min(max(round(f * 1797), 1), 1796)

    def agree(split, num_val):  # num_val images for validation, the others for training: all of them
        everything = np.concatenate([split.x_train, split.x_val])
        return (len(split.x_val) == len(split.y_val) == num_val and len(everything) == 1797
                and split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
                and np.array_equal(np.unique(everything, axis=0), _unique_digits()))

    classify("data.load_digits_split",
             lambda: load_digits_split(validation_fraction=fraction.value, seed=seed.value), expected, agree=agree)
