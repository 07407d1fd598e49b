"""Fixtures, helpers and Hypothesis strategies shared by the test modules.

A test module imports the plain helpers and strategies with ``from conftest import ...`` (pytest
puts ``tests/`` on ``sys.path``); the fixtures need no import.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import traceback
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
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


# --- tests that need a newer framework than the declared minimum ----------------------------------
#
# `make test-minimum` runs every test file on the oldest versions the companion declares. A test
# that checks something those versions do not have says so with
#     @pytest.mark.needs_version("keras", "3.9", reason="what 3.9 added that the test checks")
# and is skipped, with that reason, wherever the installed version is older (or absent).


def _pinned_environment() -> bool:
    """Whether NumPy, Keras and PyTorch are installed at the versions constraints.txt pins."""
    from companion import versions

    pins = dict(line.split("==", 1) for line in (ROOT / "requirements" / "constraints.txt")
                .read_text().splitlines() if "==" in line and not line.startswith("#"))
    for package in ("numpy", "keras", "torch"):
        found = versions._installed_version(package)
        if found is not None and found.split("+")[0] != pins.get(package):
            return False
    return True


def pytest_collection_modifyitems(config, items):
    from companion import versions

    pinned = None
    for item in items:
        for mark in item.iter_markers("pinned_environment"):
            if not mark.kwargs.get("reason"):
                raise pytest.UsageError(f"{item.nodeid}: pinned_environment takes reason=...")
            pinned = _pinned_environment() if pinned is None else pinned
            if not pinned:
                item.add_marker(pytest.mark.skip(
                    reason=f"not the pinned environment: {mark.kwargs['reason']}"))
        for mark in item.iter_markers("needs_version"):
            if len(mark.args) != 2 or not mark.kwargs.get("reason"):
                raise pytest.UsageError(f"{item.nodeid}: needs_version takes (package, version, "
                                        f"reason=...), got {mark.args} {mark.kwargs}")
            package, version = mark.args
            try:
                new_enough = versions.at_least(package, version)
            except ImportError:
                new_enough = False
            if not new_enough:
                found = versions._installed_version(package) or "not installed"
                item.add_marker(pytest.mark.skip(
                    reason=f"needs {package}>={version} ({found} here): {mark.kwargs['reason']}"))


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


# --- every input, valid or not: one strategy, one classifier (issue 15) ---------------------------
#
# Each public function has a property-based test, `test_inputs_<function>` in its module's test
# file, that draws its arguments from `arrays_valid_and_invalid` and `numbers_valid_and_invalid`
# (a valid base value passed as is, converted, or broken in one of many ways), works out from a
# float64 NumPy reference (or an invariant) what the call must do, and hands the call to
# `classify`, which sorts the outcome into one of three classes:
#
#   "clear error"  a TypeError, ValueError, KeyError or FileNotFoundError raised by companion code,
#                  for input the reference finds bad, whose message names a bad argument;
#   "correct"      a result, for input the reference finds valid, that agrees with the reference;
#   a failure      anything else: an error from inside NumPy, TensorFlow, PyTorch or Matplotlib,
#                  valid input refused, bad input accepted, or a wrong result. The test fails.
#
# With COMPANION_OUTCOMES=path.json in the environment, failures are counted instead of raised,
# and the count of each class per function is written to that file when the session ends.

OUTCOMES_FILE = os.environ.get("COMPANION_OUTCOMES")
OUTCOMES: dict[str, Counter] = defaultdict(Counter)
FAILURES: dict[str, list[str]] = defaultdict(list)
INPUT_SETTINGS = settings(max_examples=int(os.environ.get("COMPANION_EXAMPLES", 40)), deadline=None,
                          derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
SLOW_INPUT_SETTINGS = settings(INPUT_SETTINGS, max_examples=max(INPUT_SETTINGS.max_examples // 3, 1))


@dataclass(frozen=True)
class Case:
    """One drawn argument: ``value`` is what the function gets, ``kind`` how it was made.

    ``reference`` is what a correct function sees: the numbers as a float64 array (int64 for
    integers and bools; a Python number for a scalar argument), or None where ``value`` holds
    no real numbers at all.
    ``dtype`` is the array's dtype as the function sees it; ``eps`` the precision of the dtype
    passed (float16's 2**-10 for a float16 array, 0 for integers).
    """

    value: object
    kind: str
    reference: object = None
    dtype: object = None
    eps: float = 0.0

    def __repr__(self) -> str:
        text = repr(self.value).replace("\n", " ")
        return f"<{self.kind}: {text[:70] + '...' if len(text) > 70 else text}>"


def _case(kind, value, reference=None, eps=None):
    """A Case whose reference is ``value`` itself as NumPy sees it, unless given."""
    seen = np.asarray(value if reference is None else reference)
    if seen.dtype.kind not in "biuf":
        return Case(value, kind)
    if eps is None:
        eps = float(np.finfo(seen.dtype).eps) if seen.dtype.kind == "f" else 0.0
    with np.errstate(over="ignore"):  # integers stay exact: a label of 2**62 is a label
        return Case(value, kind, seen.astype(np.float64 if seen.dtype.kind == "f" else np.int64), seen.dtype, eps)


def _poke(base, draw, bad):
    array = base.astype(np.float64)
    array.reshape(-1)[draw(st.integers(0, array.size - 1))] = bad
    return _case("nan" if np.isnan(bad) else "inf", array)


def _torch_variant(kind, base):
    return _torch_variant_of(kind, base.dtype.str, base.shape, base.tobytes())


@functools.lru_cache(maxsize=512)
def _torch_variant_of(kind, dtype, shape, data):
    """Made once per base and kind (a quantized tensor takes milliseconds), then shared."""
    import torch

    base = np.frombuffer(data, dtype=dtype).reshape(shape)
    floats = torch.tensor(base.astype(np.float32))
    if kind == "torch":
        return _case(kind, torch.tensor(base), base)
    if kind == "torch requires_grad":  # the output of a computation on a leaf that requires grad
        if base.dtype.kind != "f":
            return _case(kind, torch.tensor(base), base)
        return _case(kind, floats.clone().requires_grad_(True) * 1, base.astype(np.float32))
    if kind == "torch bfloat16":
        tensor = torch.tensor(base.astype(np.float32)).to(torch.bfloat16)
        return _case(kind, tensor, tensor.float().numpy(), eps=2.0**-7)
    if kind == "torch meta":
        return Case(torch.empty(base.shape, device="meta"), kind)
    if kind == "torch sparse":  # a 0-d tensor has no sparse form: plain float32 instead
        return Case(floats.to_sparse(), kind) if base.ndim else _case("torch", floats, base.astype(np.float32))
    with warnings.catch_warnings():  # PyTorch deprecates making them, not having them
        warnings.simplefilter("ignore", UserWarning)
        return Case(torch.quantize_per_tensor(floats, 0.1, 0, torch.quint8), kind)  # "torch quantized"


# Kinds that keep a valid base valid for any function: the same numbers in another container.
SAFE_KINDS = ("as is", "list", "float32", "torch", "torch requires_grad", "numpy", "numpy 32")
_ONLY_SAFE = [False]  # set by at_most_one_broken while it draws an argument that must stay valid


def _kinds(kinds):
    return [kind for kind in kinds if kind in SAFE_KINDS] if _ONLY_SAFE[0] else list(kinds)


_ARRAY_KINDS = (
    # valid containers and dtypes: the same numbers (rounded to the dtype) in another form
    "as is", "list", "float32", "float16", "integers", "bool", "torch", "torch requires_grad",
    "torch bfloat16",
    # broken: each is refused by a careful function, unless its reference says otherwise
    "nan", "inf", "empty", "shorter", "longer", "extra axis", "scalar", "column", "flat", "huge",
    "negative", "complex", "strings", "object", "ragged", "None", "string", "torch meta",
    "torch sparse", "torch quantized",
)


@st.composite
def arrays_valid_and_invalid(draw, base, *, kinds=_ARRAY_KINDS, tensorflow=False):
    """A :class:`Case` made from ``base`` (a valid array): passed as is, converted, or broken
    (``tensorflow=True`` adds a TensorFlow tensor, for tests that import it anyway)."""
    base = np.asarray(base)
    kind = draw(st.sampled_from(_kinds([*kinds, *(["tensorflow"] if tensorflow else [])])))
    if kind == "as is":
        return _case(kind, base)
    if kind == "list":
        return _case(kind, base.tolist())
    if kind in ("float32", "float16"):
        with np.errstate(over="ignore"):
            return _case(kind, base.astype(kind))
    if kind == "integers":
        return _case(kind, np.round(base).astype(np.int64) if base.dtype.kind == "f" else base.astype(np.int32))
    if kind == "bool":
        return _case(kind, base != 0)
    if kind == "tensorflow":
        import tensorflow as tf

        return _case(kind, tf.constant(base), base)
    if kind.startswith("torch"):
        return _torch_variant(kind, base)
    if kind in ("nan", "inf"):
        return _poke(base, draw, np.nan if kind == "nan" else draw(st.sampled_from([np.inf, -np.inf]))) \
            if base.size else _case("empty", base)
    if kind == "empty":
        return _case(kind, base[:0] if base.ndim else np.empty(0, base.dtype))
    if kind == "shorter" and base.ndim and len(base) > 1:
        return _case(kind, base[: draw(st.integers(1, len(base) - 1))])
    if kind == "longer" and base.ndim:
        return _case(kind, np.concatenate([base, base[:1]]))
    if kind == "extra axis":
        return _case(kind, np.stack([base, base], axis=-1))
    if kind == "scalar" and base.size:
        return _case(kind, base.reshape(-1)[0])
    if kind == "column":
        return _case(kind, base[..., None])
    if kind == "flat":
        return _case(kind, base.reshape(-1))
    if kind == "huge":
        if base.dtype.kind in "iu":
            return _case(kind, base.astype(np.int64) + 2**62)
        return _case(kind, base.astype(np.float64) * 1e300 + 1e300)
    if kind == "negative":
        return _case(kind, -base.astype(np.float64) - 1)
    if kind == "complex":
        return Case(base + 1j, kind)
    if kind in ("strings", "object"):
        return Case(base.astype(str if kind == "strings" else object), kind)
    if kind == "ragged":
        return Case([[1.0, 2.0], [3.0]], kind)
    if kind == "string":
        return Case("abc", kind)
    return Case(None, "None" if kind == "None" else f"None (for {kind})")


_NUMBER_KINDS = ("as is", "numpy", "numpy 32", "float", "int", "bool", "negative", "zero", "nan", "inf",
                 "huge", "string", "None", "0-d array", "in a list", "torch scalar")


@st.composite
def numbers_valid_and_invalid(draw, base, *, huge=None, kinds=_NUMBER_KINDS):
    """A :class:`Case` made from ``base`` (a valid int, float or bool): as is, converted, or broken.

    ``reference`` is the Python number a function should see (None for what is not a number);
    ``huge`` replaces the default huge value (10**30 or 1e300).
    """
    kind = draw(st.sampled_from(_kinds(kinds)))
    scalar = {bool: (np.bool_, np.bool_), int: (np.int64, np.int32), float: (np.float64, np.float32)}
    numpy64, numpy32 = scalar[type(base)]
    value = {
        "as is": base, "numpy": numpy64(base), "numpy 32": numpy32(base), "float": float(base),
        "int": int(base), "bool": bool(base), "negative": -base - 1, "zero": type(base)(0),
        "nan": float("nan"), "inf": float("inf"), "string": str(base), "None": None,
        "0-d array": np.array(base), "in a list": [base],
        "huge": huge if huge is not None else (10**30 if isinstance(base, int) else 1e300),
    }.get(kind)
    if kind == "torch scalar":
        import torch

        value = torch.tensor(base)
    number = value.item() if isinstance(value, np.generic) else value
    real = isinstance(number, (bool, int, float)) and not isinstance(value, np.ndarray)
    return Case(value, kind, number if real else None)


@st.composite
def objects_valid_and_invalid(draw, valid: dict, invalid: dict):
    """A :class:`Case` for an argument that is no array or number: one of the named ``valid``
    values (kind "valid: name") or ``invalid`` ones (kind "bad: name")."""
    cases = [Case(value, f"valid: {name}", value) for name, value in valid.items()]
    if not _ONLY_SAFE[0]:
        cases += [Case(value, f"bad: {name}") for name, value in invalid.items()]
    return draw(st.sampled_from(cases))


@st.composite
def at_most_one_broken(draw, all_safe=1, **strategies):
    """Cases by argument name: each drawn from the safe kinds of its strategy, except one (chosen
    at random) drawn from all its kinds, or none (with odds ``all_safe`` to the number of
    arguments). A call with many arguments is then valid often enough, and an error must name
    the one argument that can be wrong."""
    broken = draw(st.sampled_from([*[None] * all_safe, *strategies]))
    cases = {}
    for name, strategy in strategies.items():
        _ONLY_SAFE[0] = name != broken  # read by the strategies below while this draw runs
        try:
            cases[name] = draw(strategy)
        finally:
            _ONLY_SAFE[0] = False
    return cases


class Invalid(Exception):
    """Raised by a reference: the call must be refused by an error naming one of ``names``."""

    def __init__(self, *names: str):
        super().__init__(", ".join(names))
        self.names = names


class Expect:
    """A reference's checklist: it notes every bad argument, so that an error naming any one of
    them is clear, whichever the function happens to check first."""

    def __init__(self):
        self.bad: list[str] = []

    def need(self, ok, *names: str) -> bool:
        if not ok:
            self.bad.extend(names)
        return bool(ok)

    def done(self) -> None:
        if self.bad:
            raise Invalid(*self.bad)

    def array(self, name, case, *, ndim=None, length=None, optional=False, finite=True):
        """The reference numbers of a real, non-empty (finite) array, or None (and ``name`` noted)."""
        if optional and case.value is None:
            return None
        values = case.reference
        ok = (values is not None and values.size > 0 and (not finite or np.isfinite(values).all())
              and (ndim is None or values.ndim in ndim) and (length is None or len(values) == length))
        return values if self.need(ok, name) else None

    def labels(self, name, case, *, length=None):
        """Class indices (N,) of shape (N,) or (N, 1) integers >= 0 (exact floats too), or None."""
        values = self.array(name, case, ndim=(1, 2), length=length)
        if values is None:
            return None
        exact = values.dtype.kind != "f" or ((values == np.round(values)) & (values < 2**53)).all()
        ok = (values.ndim == 1 or values.shape[1] == 1) and (values >= 0).all() and exact
        return values.reshape(-1).astype(np.int64) if self.need(ok, name) else None

    def count(self, name, case, *, minimum=1, optional=False):
        if optional and case.value is None:
            return None
        number = case.reference
        return number if self.need(type(number) is int and number >= minimum, name) else None

    def number(self, name, case, *, low=-math.inf, high=math.inf):
        """A finite int or float (not a bool) in [low, high], or None."""
        number = case.reference
        ok = type(number) in (int, float) and math.isfinite(number) and low <= number <= high
        return float(number) if self.need(ok, name) else None

    def object(self, name, case):
        """The reference of a case of :func:`objects_valid_and_invalid`, or None if it is a bad one."""
        return case.reference if self.need(case.kind.startswith("valid"), name) else None

    def flag(self, name, case):
        return case.reference if self.need(type(case.reference) is bool, name) else None


def close(result, expected, *, rtol=1e-9, atol=0.0) -> bool:
    """``result`` equals ``expected`` to ``rtol`` (NaN equal to NaN), through tuples, lists and dicts."""
    if isinstance(expected, dict):
        return isinstance(result, dict) and result.keys() == expected.keys() and all(
            close(result[k], expected[k], rtol=rtol, atol=atol) for k in expected)
    if isinstance(expected, (tuple, list)):
        return len(result) == len(expected) and all(close(r, e, rtol=rtol, atol=atol) for r, e in zip(result, expected))
    result, expected = np.asarray(result, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return result.shape == expected.shape and bool(np.allclose(result, expected, rtol=rtol, atol=atol, equal_nan=True))


def log_agrees(log, want, *, rtol=1e-5) -> bool:
    """A training loop's log matches ``want`` = (keys, batch sizes of an epoch, epochs): each epoch
    cut into those batches, and every running value the size-weighted mean of the epoch's batch
    values so far (per-sample means, as Keras logs them), the history its last one."""
    keys, sizes, epochs = want
    if list(log.history) != list(keys) or any(len(values) != epochs for values in log.history.values()):
        return False
    for epoch in range(epochs):
        if log.sizes(epoch=epoch).tolist() != sizes:
            return False
        for key in keys:
            batch, running = log.series(key, epoch=epoch), log.series(key, kind="running", epoch=epoch)
            mean = np.cumsum(batch * sizes) / np.cumsum(sizes)
            if not (close(running, mean, rtol=rtol, atol=1e-6) and close(log.history[key][epoch], running[-1])):
                return False
    return True


def _names_one_of(message: str, names) -> bool:
    for name in names:
        # A short name ("x", "a") must be the subject of the message, not a word in it.
        after = r"(?=\s+(must|has|holds|and|is|of|were|was)\b|\[|:|\s*\()" if len(name) <= 2 else r"(?!\w)"
        if re.search(rf"(?<![\w.]){re.escape(name)}{after}", message):
            return True
    return False


def _raised_by_companion(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "companion" in Path(frames[-1].filename).parts


def classify(function: str, call, expected, *, agree=close, known: str | None = None) -> str:
    """Run ``call()`` and sort its outcome into "clear error", "correct" or a failure (see above).

    ``expected()`` is the reference: what ``call()`` must return (compared by ``agree(result,
    expected)``), or it raises :class:`Invalid` naming the bad arguments. ``known`` explains a
    failure that is known and needs a fix outside the modules under test: it is counted as
    "known failure" and does not fail the test.
    """
    try:
        want, bad = expected(), None
    except Invalid as invalid:
        want, bad = None, invalid.names
    try:
        result = call()
    except (TypeError, ValueError, KeyError, FileNotFoundError) as error:
        message = f"{type(error).__name__}: {error}"
        if bad is None:
            return _failure(function, f"valid input refused: {message}", known)
        if not _raised_by_companion(error):
            return _failure(function, f"error from outside companion: {message}", known)
        if not _names_one_of(str(error), bad):
            return _failure(function, f"error names none of {bad}: {message}", known)
        return _record(function, "clear error")
    except Exception as error:  # noqa: BLE001 - every other error is a failure, by definition
        return _failure(function, f"{type(error).__name__} (not a clear error): {error}", known)
    if bad is not None:
        return _failure(function, f"bad input accepted (bad: {', '.join(bad)}): returned {result!r:.200}", known)
    try:
        right = agree(result, want)
    except Exception as error:  # noqa: BLE001 - a result that cannot even be compared is wrong
        right, result = False, f"{result!r:.200} ({type(error).__name__} comparing it: {error})"
    if not right:
        return _failure(function, f"wrong result: {result!s:.300} instead of {want!r:.300}", known)
    return _record(function, "correct")


def _record(function: str, outcome: str) -> str:
    OUTCOMES[function][outcome] += 1
    return outcome


def _failure(function: str, message: str, known: str | None) -> str:
    outcome = "known failure" if known else "failure"
    FAILURES[function].append(message if not known else f"{message} [known: {known}]")
    _record(function, outcome)
    if not OUTCOMES_FILE and not known:
        pytest.fail(f"{function}: {message}", pytrace=False)
    return outcome


def pytest_sessionfinish(session):
    if OUTCOMES_FILE and OUTCOMES:
        Path(OUTCOMES_FILE).write_text(json.dumps(
            {"outcomes": {f: dict(c) for f, c in sorted(OUTCOMES.items())},
             "failures": {f: sorted(set(m[:300] for m in ms)) for f, ms in sorted(FAILURES.items())}}, indent=1))


# --- copies of tensor data to the host (issue 24) ---------------------------------------------------


class HostReads:
    """Counts every way a tensor's values reach the host, on a CPU-only machine too, where no
    copy is needed: the methods that copy (item, tolist, numpy, cpu, float(), int(), bool(),
    np.asarray) and the operations that must read a value on the device before they can go on
    (``_local_scalar_dense`` behind item() and bool(), nonzero, boolean masks, unique)."""

    METHODS = ("item", "tolist", "numpy", "cpu", "__array__", "__float__", "__int__", "__bool__",
               "__index__", "__format__")
    OPERATIONS = ("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim",
                  "unique_consecutive", "repeat_interleave", "equal", "is_nonzero")

    def __init__(self):
        self.calls = Counter()

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        reads = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func._schema.name.split("::")[-1]
                boolean_index = name == "index" and any(
                    getattr(i, "dtype", None) in (torch.bool, torch.uint8) for i in args[1] or ())
                if reads._inside == 0 and (name in HostReads.OPERATIONS or boolean_index):
                    reads.calls[name] += 1
                return func(*args, **(kwargs or {}))

        self._saved = {name: getattr(torch.Tensor, name) for name in self.METHODS}
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, self._counting(name, method))
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def _counting(self, name, method):
        def counted(tensor, *args, **kwargs):
            if not self._inside:
                self.calls[name] += 1
            self._inside += 1
            try:
                return method(tensor, *args, **kwargs)
            finally:
                self._inside -= 1
        return counted

    _inside = 0

    def __exit__(self, *exc):
        import torch

        self._mode.__exit__(*exc)
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        return False

    @property
    def total(self) -> int:
        return sum(self.calls.values())
