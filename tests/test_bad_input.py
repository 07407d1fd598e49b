"""Property-based checks: public functions reject bad input with an error that names the argument.

Hypothesis draws the bad values (non-finite entries at random places, wrong lengths, empty arrays,
wrong types and out-of-range keyword values); each must raise ValueError or TypeError whose
message names the offending argument, before any training starts.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import companion
from companion import batching, compare
from companion.data import load_diabetes

X, Y = load_diabetes()
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

not_a_positive_int = st.one_of(
    st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def poisoned(draw, array):
    """A copy of ``array`` with one NaN or infinity at a random place."""
    bad = array.copy()
    index = tuple(draw(st.integers(0, n - 1)) for n in bad.shape)
    bad[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return bad


def bad_data_cases():
    """(argument name, replacement) pairs for x and y."""
    return st.one_of(
        st.tuples(st.just("x"), poisoned(X)),
        st.tuples(st.just("y"), poisoned(Y)),
        st.tuples(st.just("y"), st.integers(1, len(Y) - 1).map(lambda n: Y[:n])),
        st.tuples(st.just("x"), st.just(X[:0])),
        st.tuples(st.just("x"), st.just(np.float32(1.0))),
        st.tuples(st.just("y"), st.just(np.array(["a"] * len(Y)))),
    )


def assert_rejected(call, name):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert name in str(error.value), f"the error does not name {name!r}: {error.value}"


@pytest.fixture(scope="module")
def keras_setup():
    keras = pytest.importorskip("keras")
    from companion import models, tf_loop

    return keras, tf_loop, models.keras_mlp(X.shape[1], hidden=(4,))


@pytest.fixture(scope="module")
def torch_setup():
    torch = pytest.importorskip("torch")
    from companion import models, torch_loop

    model = models.torch_mlp(X.shape[1], hidden=(4,))
    return torch, torch_loop, model, torch.optim.SGD(model.parameters(), lr=0.1)


@FAST
@given(case=bad_data_cases())
def test_tf_loop_rejects_bad_data(keras_setup, case):
    keras, tf_loop, model = keras_setup
    name, value = case
    arguments = dict(x=X, y=Y)
    arguments[name] = value
    assert_rejected(lambda: tf_loop.train(model, arguments["x"], arguments["y"], loss=keras.losses.MeanSquaredError(),
                                          optimizer=keras.optimizers.SGD(0.1), batch_size=32, epochs=1), name)


@FAST
@given(case=bad_data_cases())
def test_torch_loop_rejects_bad_data(torch_setup, case):
    torch, torch_loop, model, optimizer = torch_setup
    name, value = case
    arguments = dict(x=X, y=Y)
    arguments[name] = value
    assert_rejected(lambda: torch_loop.train(model, arguments["x"], arguments["y"], loss_fn=torch.nn.MSELoss(),
                                             optimizer=optimizer, batch_size=32, epochs=1), name)


@FAST
@given(name=st.sampled_from(["batch_size", "epochs"]), value=not_a_positive_int)
def test_loops_reject_bad_sizes(keras_setup, torch_setup, name, value):
    if name == "epochs" and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return  # zero epochs is allowed: an empty log
    keras, tf_loop, keras_model = keras_setup
    torch, torch_loop, torch_model, optimizer = torch_setup
    common = dict(batch_size=32, epochs=1)
    common[name] = value
    assert_rejected(lambda: tf_loop.train(keras_model, X, Y, loss=keras.losses.MeanSquaredError(),
                                          optimizer=keras.optimizers.SGD(0.1), **common), name)
    assert_rejected(lambda: torch_loop.train(torch_model, X, Y, loss_fn=torch.nn.MSELoss(),
                                             optimizer=optimizer, **common), name)


@FAST
@given(num_samples=st.one_of(not_a_positive_int, st.integers(1, 50)), batch_size=st.one_of(not_a_positive_int, st.integers(1, 50)))
def test_batches_reject_bad_sizes_and_cover_every_sample_once(num_samples, batch_size):
    valid = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (num_samples, batch_size))
    if not valid:
        name = "num_samples" if not (isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples >= 1) else "batch_size"
        assert_rejected(lambda: batching.batches(num_samples, batch_size), name)
        return
    batches = [list(range(num_samples))[b] for b in batching.batches(num_samples, batch_size)]
    assert [i for batch in batches for i in batch] == list(range(num_samples))
    assert all(len(b) == batch_size for b in batches[:-1]) and 1 <= len(batches[-1]) <= batch_size


@FAST
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


@FAST
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), st.floats(), st.text(max_size=2), st.booleans()))
def test_seed_everything_rejects_bad_seeds(seed):
    assert_rejected(lambda: companion.seed_everything(seed), "seed")


# --- the array functions of the later chapters ---------------------------------------------------

LABELS = np.array([0, 1, 2, 1, 0, 2, 1, 0])
SCORES = np.random.default_rng(0).normal(size=(8, 3))
PROBABILITIES = np.exp(SCORES) / np.exp(SCORES).sum(axis=1, keepdims=True)


def array_cases(reference: np.ndarray, name: str):
    """Bad versions of ``reference`` passed as argument ``name``."""
    cases = [st.tuples(st.just(name), st.integers(1, len(reference) - 1).map(lambda n: reference[:n])),
             st.tuples(st.just(name), st.just(reference[:0]))]
    if np.issubdtype(reference.dtype, np.floating):
        cases.append(st.tuples(st.just(name), poisoned(reference)))
    return st.one_of(*cases)


@FAST
@given(case=st.one_of(array_cases(LABELS, "y_true"), array_cases(SCORES, "scores"), array_cases(SCORES, "logits")))
def test_calibration_rejects_bad_arrays(case):
    from companion import calibration

    name, value = case
    if name == "y_true":
        calls = [lambda: calibration.margins(value, SCORES), lambda: calibration.cross_entropy(value, SCORES),
                 lambda: calibration.expected_calibration_error(value, PROBABILITIES)]
    elif name == "scores":
        calls = [lambda: calibration.margins(LABELS, value)]
    else:
        calls = [lambda: calibration.cross_entropy(LABELS, value)]
    for call in calls:
        with pytest.raises((ValueError, TypeError)) as error:
            call()
        message = str(error.value)
        expected = (name, "y_true") if name != "y_true" else ("y_true", "scores", "logits", "probabilities")
        assert any(n in message for n in expected), f"the error does not name the argument: {message}"


@FAST
@given(num_bins=not_a_positive_int)
def test_calibration_rejects_bad_bin_counts(num_bins):
    from companion import calibration

    assert_rejected(lambda: calibration.reliability_diagram(LABELS, PROBABILITIES, num_bins=num_bins), "num_bins")


@FAST
@given(case=st.one_of(array_cases(Y[:, 0].astype(np.float64), "y_true"), array_cases(Y[:, 0].astype(np.float64), "y_pred")))
def test_diagnose_rejects_bad_arrays(case):
    from companion.diagnose import diagnose

    name, value = case
    y = Y[:, 0].astype(np.float64)
    arguments = {"y_true": y, "y_pred": y + 0.1}
    arguments[name] = value
    with pytest.raises((ValueError, TypeError)) as error:
        diagnose(arguments["y_true"], arguments["y_pred"])
    assert "y_true" in str(error.value) or "y_pred" in str(error.value), str(error.value)


@FAST
@given(a=st.one_of(st.just([]), st.just([np.ones(3), np.ones(2)]), st.just("gradients"), st.just(None)))
def test_gradient_helpers_reject_bad_inputs(a):
    from companion import gradients

    with pytest.raises((ValueError, TypeError)):
        gradients.gradient_difference(a, [np.ones(3)])


# --- models, data sets, calibration, checkpoints, distributed: keyword values ---------------------

not_a_fraction = st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 < v < 1),
                           st.text(max_size=2), st.none(), st.booleans())


@FAST
@given(name=st.sampled_from(["num_inputs", "hidden", "activation", "l2", "dropout"]),
       value=st.one_of(not_a_positive_int, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)))
def test_model_builders_reject_bad_arguments(name, value):
    pytest.importorskip("torch")
    from companion import models

    arguments = {"num_inputs": 3, "hidden": (4,), "activation": "tanh", "dropout": 0.0}
    if name == "hidden":
        value = (value,)  # a sequence holding a bad width
    if name == "dropout" and isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1:
        return  # a valid rate
    if name == "l2":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf"):
            return
        assert_rejected(lambda: models.torch_l2_penalty(value), "l2")
        return
    if name == "activation" and value in ("linear", "tanh", "relu"):
        return
    arguments[name] = value
    assert_rejected(lambda: models.torch_mlp(**arguments), name)


@FAST
@given(name=st.sampled_from(["validation_fraction", "seed"]),
       value=st.one_of(not_a_fraction, st.integers(max_value=-1)))
def test_digits_split_rejects_bad_arguments(name, value):
    from companion.data import load_digits_split

    if name == "seed" and isinstance(value, float) and value.is_integer() and value >= 0:
        return
    assert_rejected(lambda: load_digits_split(**{name: value}), name)


@FAST
@given(accuracy=not_a_fraction.filter(lambda v: v not in (0, 1)), batch_size=st.integers(1, 64))
def test_batch_accuracy_distribution_rejects_bad_accuracy(accuracy, batch_size):
    from companion.calibration import batch_accuracy_distribution

    assert_rejected(lambda: batch_accuracy_distribution(accuracy, batch_size), "accuracy")


@FAST
@given(path=st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=2), max_size=2)))
def test_checkpoint_functions_reject_bad_paths(torch_setup, path):
    from companion import checkpoints

    _, _, model, optimizer = torch_setup
    assert_rejected(lambda: checkpoints.save_training_state(path, model=model, optimizer=optimizer), "path")
    assert_rejected(lambda: checkpoints.load_training_state(path, model=model, optimizer=optimizer), "path")


@FAST
@given(timeout=st.one_of(st.floats(max_value=0), st.just(float("nan")), st.text(max_size=2), st.none()))
def test_distributed_demos_reject_bad_timeouts(timeout):
    from companion import distributed

    assert_rejected(lambda: distributed.start_demos(timeout=timeout), "timeout")


# --- the plotting functions: bad arrays and keyword values ---------------------------------------

CURVE = np.array([0.5, 0.4, 0.45, 0.42])


@pytest.fixture(autouse=True)
def _close_figures():
    # A call that wrongly accepts its input draws a figure; close it so the failure is the report.
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@FAST
@given(case=st.one_of(array_cases(CURVE, "loss"), array_cases(CURVE, "accuracy"),
                      st.tuples(st.just("mark_epoch"), st.one_of(st.integers(max_value=-1), st.integers(min_value=4),
                                                                 st.floats(), st.text(max_size=2)))))
def test_plot_loss_and_accuracy_rejects_bad_input(case):
    from companion.plotting import plot_loss_and_accuracy

    arguments = {"loss": CURVE, "accuracy": CURVE + 0.3, "mark_epoch": None}
    name, value = case
    arguments[name] = value
    assert_rejected(lambda: plot_loss_and_accuracy(**arguments), name)


@FAST
@given(case=st.one_of(array_cases(CURVE, "margins"), array_cases(CURVE, "losses"),
                      st.tuples(st.just("num_classes"), not_a_positive_int)))
def test_plot_loss_vs_margin_rejects_bad_input(case):
    from companion.plotting import plot_loss_vs_margin

    arguments = {"margins": CURVE, "losses": CURVE, "num_classes": 10}
    name, value = case
    arguments[name] = value
    # A length mismatch is reported against the first array: either name may appear.
    with pytest.raises((ValueError, TypeError)) as error:
        plot_loss_vs_margin(arguments.pop("margins"), arguments.pop("losses"), **arguments)
    names = ("margins", "losses") if name in ("margins", "losses") else (name,)
    assert any(n in str(error.value) for n in names), str(error.value)


def lone_array_cases(reference: np.ndarray, name: str):
    """Bad versions of an array that has no partner to match in length: empty or non-finite."""
    return st.one_of(st.tuples(st.just(name), st.just(reference[:0])), st.tuples(st.just(name), poisoned(reference)))


@FAST
@given(case=st.one_of(lone_array_cases(np.array([0.75, 1.0, 0.75, 0.5]), "batch_accuracies"),
                      st.tuples(st.just("batch_size"), not_a_positive_int),
                      st.tuples(st.just("accuracy"), not_a_fraction.filter(lambda v: v not in (0, 1)))))
def test_plot_batch_accuracy_histogram_rejects_bad_input(case):
    from companion.plotting import plot_batch_accuracy_histogram

    arguments = {"batch_accuracies": np.array([0.75, 1.0, 0.75, 0.5]), "batch_size": 4, "accuracy": 0.8}
    name, value = case
    arguments[name] = value
    assert_rejected(lambda: plot_batch_accuracy_histogram(arguments.pop("batch_accuracies"), **arguments), name)


@FAST
@given(key=st.text(max_size=4).filter(lambda k: k != "loss"),
       evaluations=st.one_of(st.none(), st.sampled_from([0, 1, 3]).map(lambda n: [0.5] * n), st.just([np.nan, 0.5]),
                             st.just([[0.5], [0.5]]), st.just(["a", "b"])))
def test_plot_epoch_numbers_rejects_bad_keys_and_evaluations(key, evaluations):
    from companion.plotting import plot_epoch_numbers
    from companion.training_log import TrainingLog

    log = TrainingLog(keys=("loss",))
    for epoch in range(2):
        log.add_batch(epoch=epoch, step=0, size=4, batch={"loss": 1.0}, running={"loss": 1.0})
        log.add_batch(epoch=epoch, step=1, size=1, batch={"loss": 2.0}, running={"loss": 1.2})
        log.end_epoch({"loss": 1.2})
    with pytest.raises(KeyError, match="key must be one of"):
        plot_epoch_numbers(log, key)
    if evaluations is not None:  # not one finite number per epoch
        assert_rejected(lambda: plot_epoch_numbers(log, "loss", evaluations=evaluations), "evaluations")
    assert_rejected(lambda: plot_epoch_numbers(log.history, "loss"), "log")


# --- the framework gradient functions -------------------------------------------------------------


@pytest.fixture(scope="module")
def gradient_models():
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    from companion import models

    return {"tf": (models.keras_mlp(X.shape[1], hidden=(4,)), keras.losses.MeanSquaredError()),
            "torch": (models.torch_mlp(X.shape[1], hidden=(4,)), torch.nn.MSELoss())}


@FAST
@given(case=bad_data_cases(), framework=st.sampled_from(["tf", "torch"]),
       function=st.sampled_from(["per_example_gradients", "batch_gradients"]))
def test_gradient_functions_reject_bad_data(gradient_models, case, framework, function):
    from companion import gradients

    model, loss_fn = gradient_models[framework]
    arguments = {"x": X, "y": Y}
    name, value = case
    arguments[name] = value  # every case is refused before any gradient is computed
    call = getattr(gradients, f"{framework}_{function}")
    assert_rejected(lambda: call(model, arguments["x"], arguments["y"], loss_fn=loss_fn), name)


@FAST
@given(name=st.sampled_from(["reduction", "layout"]), value=st.one_of(st.text(max_size=5), st.none(), st.integers()))
def test_gradient_functions_reject_bad_keywords(gradient_models, name, value):
    from companion import gradients

    model, loss_fn = gradient_models["torch"]
    if value in ("mean", "sum", "torch", "keras"):
        return
    assert_rejected(lambda: gradients.torch_batch_gradients(model, X[:8], Y[:8], loss_fn=loss_fn, **{name: value}), name)
    if name == "reduction":
        keras_model, keras_loss = gradient_models["tf"]
        assert_rejected(lambda: gradients.tf_batch_gradients(keras_model, X[:8], Y[:8], loss_fn=keras_loss,
                                                             reduction=value), name)


# --- the streaming metrics ---------------------------------------------------------------------------


@FAST
@given(case=st.one_of(array_cases(Y[:8, 0].astype(np.float64), "y_true"), array_cases(Y[:8, 0].astype(np.float64), "y_pred")))
def test_metric_updates_reject_bad_arrays(case):
    from companion.metrics import MeanSquaredError

    name, value = case
    arguments = {"y_true": Y[:8, 0].astype(np.float64), "y_pred": Y[:8, 0] + 0.1}
    arguments[name] = value
    metric = MeanSquaredError()
    with pytest.raises((ValueError, TypeError)) as error:
        metric.update(arguments["y_true"], arguments["y_pred"])
    assert "y_true" in str(error.value) or "y_pred" in str(error.value), str(error.value)
    assert metric.count == 0, "a refused update adds nothing"


# --- the shared array conversion: every public function's arrays go through it --------------------


@pytest.mark.parametrize("value", [np.array([1 + 2j, 3.0]), np.array(["a", "b"]), np.array([object(), 1], dtype=object)])
def test_complex_strings_and_objects_are_refused_by_name(value):
    from companion import _validation

    assert_rejected(lambda: _validation.data_array("x", value), "x")


def test_tensors_of_every_float_width_convert_exactly():
    torch = pytest.importorskip("torch")
    from companion import _validation

    values = [0.5, -1.25, 3.0]
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        array = _validation.data_array("x", torch.tensor(values, dtype=dtype, requires_grad=True) * 1)
        assert array.tolist() == values, dtype


def test_tensorflow_bfloat16_converts_exactly():
    tf = pytest.importorskip("tensorflow")
    from companion import _validation

    array = _validation.data_array("x", tf.constant([0.5, -1.25, 3.0], dtype=tf.bfloat16))
    assert array.dtype == np.float32 and array.tolist() == [0.5, -1.25, 3.0]


def test_an_object_that_fails_to_convert_is_refused_by_name():
    from companion import _validation

    class Broken:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot convert")

    assert_rejected(lambda: _validation.data_array("y_pred", Broken()), "y_pred")
