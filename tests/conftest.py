"""Fixtures, helpers and Hypothesis strategies shared by the test modules.

A test module imports the plain helpers and strategies with ``from conftest import ...`` (pytest
puts ``tests/`` on ``sys.path``); the fixtures need no import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def keras():
    """Keras, or a skip where it is not installed (the companion's core needs no framework)."""
    import companion  # noqa: F401  (quiets TensorFlow's start-up logging before it is imported)

    return pytest.importorskip("keras")


@pytest.fixture(scope="session")
def torch():
    """PyTorch, or a skip where it is not installed."""
    return pytest.importorskip("torch")


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- a small training log ------------------------------------------------------------------------


@pytest.fixture
def two_epoch_log():
    """A TrainingLog of two epochs of two steps each (sizes 4 and 1), keys "loss" and "mse"."""
    from companion.training_log import TrainingLog

    log = TrainingLog(keys=("loss", "mse"))
    for epoch in range(2):
        for step, (size, value) in enumerate([(4, 2.0), (1, 5.0)]):
            log.add_batch(epoch=epoch, step=step, size=size, batch={"loss": value, "mse": value / 2},
                          running={"loss": value + epoch, "mse": value})
        log.end_epoch(log.batches[-1].running)
    return log


# --- bad input: public functions reject it with an error that names the argument -----------------
#
# Hypothesis draws the bad values (non-finite entries at random places, wrong lengths, empty
# arrays, wrong types and out-of-range keyword values); each must raise ValueError or TypeError
# whose message names the offending argument, before any work starts.

# Module-scoped fixtures (a model, an optimizer) are built once per test, not once per example.
BAD_INPUT_SETTINGS = settings(max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture])

not_a_positive_int = st.one_of(
    st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=2),
)

not_a_fraction = st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 < v < 1),
                           st.text(max_size=2), st.none(), st.booleans())


def assert_rejected(call, name):
    """``call()`` raises ValueError or TypeError, and its message names ``name``."""
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert name in str(error.value), f"the error does not name {name!r}: {error.value}"


@st.composite
def poisoned(draw, array):
    """A copy of ``array`` with one NaN or infinity at a random place."""
    bad = array.copy()
    index = tuple(draw(st.integers(0, n - 1)) for n in bad.shape)
    bad[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return bad


def bad_data_cases(x, y):
    """(argument name, replacement) pairs for the training data ``x`` and ``y``."""
    return st.one_of(
        st.tuples(st.just("x"), poisoned(x)),
        st.tuples(st.just("y"), poisoned(y)),
        st.tuples(st.just("y"), st.integers(1, len(y) - 1).map(lambda n: y[:n])),
        st.tuples(st.just("x"), st.just(x[:0])),
        st.tuples(st.just("x"), st.just(np.float32(1.0))),
        st.tuples(st.just("y"), st.just(np.array(["a"] * len(y)))),
    )


def array_cases(reference: np.ndarray, name: str):
    """Bad versions of ``reference`` passed as argument ``name``: too short, empty, non-finite."""
    cases = [st.tuples(st.just(name), st.integers(1, len(reference) - 1).map(lambda n: reference[:n])),
             st.tuples(st.just(name), st.just(reference[:0]))]
    if np.issubdtype(reference.dtype, np.floating):
        cases.append(st.tuples(st.just(name), poisoned(reference)))
    return st.one_of(*cases)
