"""companion.batching: an epoch is cut into consecutive batches, the short last one kept."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Expect, assert_rejected, classify, not_a_positive_int,
                      numbers_valid_and_invalid)
from hypothesis import given
from hypothesis import strategies as st

from companion import batching


def test_batches_keep_the_short_last_batch():
    assert batching.batches(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert len(batching.batches(442, 32)) == 14  # 13 full batches and one of 26
    assert batching.batches(3, 8) == [slice(0, 3)]  # a batch larger than the data: one short batch
    shuffled = np.array([3, 1, 2, 0])
    assert [shuffled[b].tolist() for b in batching.batches(4, 3)] == [[3, 1, 2], [0]]
    with pytest.raises(ValueError, match="batch_size"):
        batching.batches(4, 0)
    with pytest.raises(TypeError, match="num_samples"):
        batching.batches(4.0, 2)


@BAD_INPUT_SETTINGS
@given(num_samples=st.one_of(not_a_positive_int, st.integers(1, 50)),
       batch_size=st.one_of(not_a_positive_int, st.integers(1, 50)))
def test_batches_reject_bad_sizes_and_cover_every_sample_once(num_samples, batch_size):
    valid = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (num_samples, batch_size))
    if not valid:
        name = "num_samples" if not (isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples >= 1) else "batch_size"
        assert_rejected(lambda: batching.batches(num_samples, batch_size), name)
        return
    batches = [list(range(num_samples))[b] for b in batching.batches(num_samples, batch_size)]
    assert [i for batch in batches for i in batch] == list(range(num_samples))
    assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size


# --- every input, valid or not (issue 15) -----------------------------------------------------------


@INPUT_SETTINGS
@given(num_samples=numbers_valid_and_invalid(10, huge=10**5), batch_size=numbers_valid_and_invalid(4, huge=2**40))
def test_inputs_batches(num_samples, batch_size):
    def expected():
        e = Expect()
        n, b = e.count("num_samples", num_samples), e.count("batch_size", batch_size)
        e.done()
        return [(start, min(start + b, n)) for start in range(0, n, b)]

    classify("batching.batches", lambda: batching.batches(num_samples.value, batch_size.value), expected,
             agree=lambda result, want: [(s.start, s.stop) for s in result] == want
             and all(type(s.start) is int and type(s.stop) is int for s in result))
