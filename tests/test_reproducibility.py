"""companion.reproducibility: one call seeds Python, NumPy, TensorFlow and PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Expect, assert_rejected, classify, numbers_valid_and_invalid,
                      run_python)
from hypothesis import given
from hypothesis import strategies as st

import companion

SEED_PROBE = """
    import json
    import companion
    import numpy as np
    import tensorflow as tf
    import torch

    def draws(seed):
        companion.seed_everything(seed)
        return {
            "numpy": np.random.rand(3).tolist(),
            "torch": torch.rand(3).tolist(),
            "tf": tf.random.uniform([3]).numpy().tolist(),
        }

    print(json.dumps([draws(7), draws(7), draws(8)]))
"""


def test_seed_everything_repeats_draws_in_every_framework():
    # A subprocess, because seeding switches on process-wide deterministic modes.
    first, again, other = json.loads(run_python(SEED_PROBE))
    for framework in ("numpy", "torch", "tf"):
        assert first[framework] == again[framework], f"{framework}: same seed, different draws"
        assert first[framework] != other[framework], f"{framework}: the seed has no effect"


@pytest.mark.parametrize(
    ("bad_seed", "error"),
    [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), ("0", TypeError), (True, TypeError), (None, TypeError)],
)
def test_seed_everything_rejects_bad_seeds(bad_seed, error):
    with pytest.raises(error, match="seed"):
        companion.seed_everything(bad_seed)


@BAD_INPUT_SETTINGS
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), st.floats(), st.text(max_size=2),
                      st.booleans()))
def test_seed_everything_names_the_seed_whatever_is_wrong_with_it(seed):
    assert_rejected(lambda: companion.seed_everything(seed), "seed")


def test_deterministic_must_be_a_bool_and_is_checked_before_anything_is_seeded():
    np.random.seed(1)
    expected = np.random.rand(3)
    np.random.seed(1)
    with pytest.raises(TypeError, match="deterministic must be True or False, got str"):
        companion.seed_everything(0, deterministic="yes")
    np.testing.assert_array_equal(np.random.rand(3), expected)  # NumPy was not reseeded with 0


# --- every input, valid or not (issue 15) -----------------------------------------------------------


@INPUT_SETTINGS
@given(seed=numbers_valid_and_invalid(7, huge=2**32), deterministic=numbers_valid_and_invalid(False))
def test_inputs_seed_everything(seed, deterministic):
    # deterministic is False in every valid case: the process-wide deterministic modes stay as they are.
    import random

    def expected():
        e = Expect()
        s, _ = e.count("seed", seed, minimum=0), e.flag("deterministic", deterministic)
        e.need(s is None or s < 2**32, "seed")
        e.done()
        return np.random.RandomState(s).random_sample(), random.Random(s).random()

    classify("reproducibility.seed_everything",
             lambda: (companion.seed_everything(seed.value, deterministic=deterministic.value),
                      (np.random.random_sample(), random.random()))[1], expected)
