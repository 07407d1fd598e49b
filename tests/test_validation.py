"""companion._validation: the one array conversion and the argument checks every public function uses.

Each public function's own test file checks that it refuses bad input by name; this file checks
the shared pieces directly, where their edge cases are easiest to see.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import (INPUT_SETTINGS, Case, Expect, arrays_valid_and_invalid, assert_rejected, classify, close,
                      numbers_valid_and_invalid)
from hypothesis import given
from hypothesis import strategies as st

from companion import _validation

# --- the shared array conversion: every public function's arrays go through it --------------------


@pytest.mark.parametrize("value", [np.array([1 + 2j, 3.0]), np.array(["a", "b"]), np.array([object(), 1], dtype=object)])
def test_complex_strings_and_objects_are_refused_by_name(value):
    assert_rejected(lambda: _validation.data_array("x", value), "x")


def test_tensors_of_every_float_width_convert_exactly():
    torch = pytest.importorskip("torch")

    values = [0.5, -1.25, 3.0]
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        array = _validation.data_array("x", torch.tensor(values, dtype=dtype, requires_grad=True) * 1)
        assert array.tolist() == values, dtype


def test_tensorflow_bfloat16_converts_exactly():
    tf = pytest.importorskip("tensorflow")

    array = _validation.data_array("x", tf.constant([0.5, -1.25, 3.0], dtype=tf.bfloat16))
    assert array.dtype == np.float32 and array.tolist() == [0.5, -1.25, 3.0]


def test_an_object_that_fails_to_convert_is_refused_by_name():
    class Broken:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot convert")

    assert_rejected(lambda: _validation.data_array("y_pred", Broken()), "y_pred")


def test_data_array_needs_a_sample_axis_and_the_given_length():
    np.testing.assert_array_equal(_validation.data_array("x", [[1, 2], [3, 4]], length=2), [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"x must have a sample axis, got a scalar"):
        _validation.data_array("x", 3.0)
    with pytest.raises(ValueError, match=r"y must have one row per sample of x \(3\), got shape \(2,\)"):
        _validation.data_array("y", [1.0, 2.0], length=3)


# --- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "check, value, expected",
    [
        (_validation.positive_int, np.int64(3), 3),
        (_validation.non_negative_int, 0, 0),
        (_validation.optional_seed, None, None),
        (_validation.boolean, np.bool_(True), True),
        (_validation.finite_number, np.float32(0.5), 0.5),
        (_validation.positive_number, 2, 2.0),
        (_validation.fraction, 1, 1.0),
    ],
)
def test_number_checks_return_plain_python_values(check, value, expected):
    result = check("n", value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "check, value, error",
    [
        (_validation.positive_int, True, TypeError),  # a bool is not a count
        (_validation.positive_int, 2.0, TypeError),
        (_validation.positive_int, 0, ValueError),
        (_validation.non_negative_int, -1, ValueError),
        (_validation.boolean, 1, TypeError),
        pytest.param(_validation.finite_number, 10**400, ValueError, id="finite_number-10**400"),  # beyond float
        (_validation.finite_number, float("nan"), ValueError),
        (_validation.finite_number, "1", TypeError),
        (_validation.positive_number, 0.0, ValueError),
        (_validation.fraction, 1.5, ValueError),
    ],
)
def test_number_checks_refuse_by_name(check, value, error):
    with pytest.raises(error, match="^n must be"):
        check("n", value)


def test_fraction_ends_are_allowed_only_when_asked():
    assert _validation.fraction("p", 0.0) == 0.0
    with pytest.raises(ValueError, match=r"p must be a number in \(0, 1\), got 0"):
        _validation.fraction("p", 0, zero=False, one=False)
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\), got 1"):
        _validation.fraction("p", 1, one=False)


# --- labels, shapes and sample weights ---------------------------------------------------------------


def test_same_shape_squeezes_a_trailing_axis_of_one_and_broadcasts_nothing():
    y_true, y_pred = _validation.same_shape(np.zeros(3), np.zeros((3, 1)))
    assert y_true.shape == y_pred.shape == (3,)
    y_true, y_pred = _validation.same_shape(np.zeros((3, 1)), np.zeros(3))
    assert y_true.shape == y_pred.shape == (3,)
    with pytest.raises(ValueError, match=r"Nothing is broadcast"):
        _validation.same_shape(np.zeros(3), np.zeros((3, 3)))


def test_class_indices_accept_whole_numbers_of_any_dtype_and_refuse_the_rest():
    labels = _validation.class_indices(np.array([[0.0], [2.0], [1.0]]))
    assert labels.dtype == np.int64 and labels.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match=r"got 2\.5 among 1 invalid"):
        _validation.class_indices(np.array([0.0, 2.5]))
    with pytest.raises(ValueError, match="invalid"):
        _validation.class_indices(np.array([0.0, 2.0**53]))  # no longer an exact integer in float64
    with pytest.raises(ValueError, match="one-hot labels"):
        _validation.class_indices(np.eye(3))


def test_sample_weights_are_one_per_sample_and_not_negative():
    assert _validation.sample_weights("w", None, length=3) is None
    weights = _validation.sample_weights("w", [[1], [2], [0]], length=3)
    assert weights.dtype == np.float64 and weights.tolist() == [1.0, 2.0, 0.0]
    with pytest.raises(ValueError, match=r"pass np\.full\(3, w\)"):
        _validation.sample_weights("w", 2.0, length=3)
    with pytest.raises(ValueError, match="w must be >= 0"):
        _validation.sample_weights("w", [1.0, -1.0, 1.0], length=3)


# --- other argument kinds ----------------------------------------------------------------------------


def test_sequence_function_and_choice():
    assert _validation.sequence("metrics", ("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="metrics must be a sequence, got str"):
        _validation.sequence("metrics", "mse")
    assert _validation.function("loss_fn", len, "f(x)") is len
    with pytest.raises(TypeError, match=r"loss_fn must be a callable f\(x\), got int"):
        _validation.function("loss_fn", 3, "f(x)")
    assert _validation.choice("layout", "keras", ("torch", "keras")) == "keras"
    with pytest.raises(ValueError, match=r"layout must be one of \('torch', 'keras'\), got 'jax'"):
        _validation.choice("layout", "jax", ("torch", "keras"))


def test_instance_names_the_class_as_a_reader_imports_it(torch):
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str: 'net'"):
        _validation.instance("model", "net", torch.nn.Module)
    _validation.instance("model", torch.nn.Linear(1, 1), torch.nn.Module)


def test_torch_tensor_uses_the_default_float_and_int64_labels(torch):
    x = _validation.torch_tensor("x", np.ones((2, 3), dtype=np.float64), device="cpu")
    assert x.dtype == torch.float32 and tuple(x.shape) == (2, 3)  # as Keras uses its floatx
    labels = _validation.torch_tensor("y", np.array([1, 0], dtype=np.int32), device="cpu", length=2)
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 0]
    mask = _validation.torch_tensor("mask", torch.tensor([True, False]), device="cpu")
    assert mask.dtype == torch.bool
    with pytest.raises(ValueError, match=r"y must have one row per sample of x \(3\), got shape \(2,\)"):
        _validation.torch_tensor("y", [1, 0], device="cpu", length=3)


def test_an_unbuilt_keras_model_is_refused(keras):
    with pytest.raises(ValueError, match=r"model must be built \(its weights exist only then\), got an "
                                         r"unbuilt Sequential: give it a keras.Input"):
        _validation.keras_model("model", keras.Sequential([keras.layers.Dense(1)]))
    _validation.keras_model("model", keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_file_path_to_read_and_to_write(tmp_path):
    existing = tmp_path / "a.txt"
    existing.write_text("x")
    assert _validation.file_path("path", str(existing), for_writing=False) == existing
    assert _validation.file_path("path", tmp_path / "new.txt", for_writing=True) == tmp_path / "new.txt"
    with pytest.raises(FileNotFoundError, match="path must be an existing file"):
        _validation.file_path("path", tmp_path / "missing.txt", for_writing=False)
    with pytest.raises(FileNotFoundError, match="path must be in an existing folder"):
        _validation.file_path("path", tmp_path / "no" / "new.txt", for_writing=True)
    with pytest.raises(ValueError, match="path must name a file"):
        _validation.file_path("path", tmp_path, for_writing=True)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        _validation.file_path("path", 3, for_writing=True)


# --- every input, valid or not (issue 15): the shared checks, on the strategy every test uses ------

BASES = [np.array([0.5, -2.0, 3.0]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.array([2, 0, 1])]


def _real(case):
    e = Expect()
    values = e.array("x", case)
    e.done()
    return values


@INPUT_SETTINGS
@given(case=st.sampled_from(BASES).flatmap(arrays_valid_and_invalid))
def test_inputs_real_array(case):
    classify("_validation.real_array", lambda: _validation.real_array("x", case.value), lambda: _real(case),
             agree=lambda result, want: isinstance(result, np.ndarray) and close(result, want, rtol=0))


@INPUT_SETTINGS
@given(case=st.sampled_from(BASES).flatmap(arrays_valid_and_invalid))
def test_inputs_data_array(case):
    def expected():
        e = Expect()
        values = e.array("x", case, ndim=range(1, 9), length=3)
        e.done()
        return values

    classify("_validation.data_array", lambda: _validation.data_array("x", case.value, length=3), expected,
             agree=lambda result, want: close(result, want, rtol=0))


@INPUT_SETTINGS
@given(case=st.one_of(st.just(Case(None, "None")), arrays_valid_and_invalid(np.array([0.5, 0.0, 2.0]))))
def test_inputs_sample_weights(case):
    def expected():
        e = Expect()
        weights = e.array("w", case, optional=True)
        e.need(weights is None or (weights.shape in ((3,), (3, 1)) and (weights >= 0).all()), "w")
        e.done()
        return None if weights is None else weights.reshape(3)

    classify("_validation.sample_weights", lambda: _validation.sample_weights("w", case.value, length=3), expected,
             agree=lambda result, want: (result is None) == (want is None) and (want is None or (
                 result.dtype == np.float64 and close(result, want, rtol=0))))


@INPUT_SETTINGS
@given(case=arrays_valid_and_invalid(np.array([2, 0, 1])))
def test_inputs_class_indices(case):
    def expected():
        e = Expect()
        labels = e.labels("y_true", case)
        e.done()
        return labels

    classify("_validation.class_indices",
             lambda: _validation.class_indices(_validation.real_array("y_true", case.value)), expected,
             agree=lambda result, want: result.dtype == np.int64 and np.array_equal(result, want))


@INPUT_SETTINGS
@given(case=st.sampled_from(BASES).flatmap(arrays_valid_and_invalid))
def test_inputs_torch_tensor(case):
    torch = pytest.importorskip("torch")

    def expected():
        e = Expect()
        values = e.array("x", case, ndim=range(1, 9), length=3)
        e.done()
        if case.dtype.kind == "f":  # floats become float32, which must hold them
            with np.errstate(over="ignore"):
                values = values.astype(np.float32)
            e.need(np.isfinite(values).all(), "x")
            e.done()
        return values

    def agree(result, want):
        dtype = {"f": torch.float32, "b": torch.bool}.get(case.dtype.kind, torch.int64)
        return result.dtype == dtype and close(result.numpy(), want, rtol=0)

    classify("_validation.torch_tensor", lambda: _validation.torch_tensor("x", case.value, device="cpu", length=3),
             expected, agree=agree)


NUMBER_CHECKS = {
    # check: (a valid value, the reference: Expect method and its keywords)
    "positive_int": (3, "count", {}),
    "non_negative_int": (0, "count", {"minimum": 0}),
    "finite_number": (-2.5, "number", {}),
    "non_negative_number": (2.5, "number", {"low": 0}),
    "fraction": (0.25, "number", {"low": 0, "high": 1}),
    "boolean": (True, "flag", {}),
}


@pytest.mark.parametrize("check", NUMBER_CHECKS)
@INPUT_SETTINGS
@given(data=st.data())
def test_inputs_number_checks(check, data):
    valid, method, keywords = NUMBER_CHECKS[check]
    case = data.draw(numbers_valid_and_invalid(valid))

    def expected():
        e = Expect()
        number = getattr(e, method)("n", case, **keywords)
        e.done()
        return number

    classify(f"_validation.{check}", lambda: getattr(_validation, check)("n", case.value), expected,
             agree=lambda result, want: type(result) is type(want) and result == want)


# --- what issue 15 found, one case each ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meta", "sparse", "quantized"])
def test_tensors_without_plain_data_are_refused_by_name_and_kind(kind):
    torch = pytest.importorskip("torch")

    tensor = {"meta": lambda: torch.ones(3, device="meta"), "sparse": lambda: torch.ones(3).to_sparse(),
              "quantized": lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)}[kind]
    with warnings.catch_warnings():  # PyTorch deprecates making quantized tensors, not having them
        warnings.simplefilter("ignore", UserWarning)
        value = tensor()
    with pytest.raises(TypeError, match=rf"y_pred must be a dense tensor of numbers, got a {kind} tensor"):
        _validation.to_numpy("y_pred", value)


def test_torch_tensor_refuses_values_beyond_the_models_float_type():
    torch = pytest.importorskip("torch")

    with pytest.raises(ValueError, match=r"x must fit the model's float type torch.float32 .* up to 1e\+300"):
        _validation.torch_tensor("x", np.array([[1.0, 1e300]]), device="cpu")
    assert _validation.torch_tensor("x", np.array([1e300]), device="cpu", float_dtype=torch.float64).item() == 1e300


@pytest.mark.parametrize("loss", ["MSELoss", "CrossEntropyLoss"])
def test_torch_prediction_shape_names_integer_x_and_a_target_that_would_broadcast(loss):
    torch = pytest.importorskip("torch")

    model, loss_fn = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Dropout(0.5)), getattr(torch.nn, loss)()
    x, y = torch.ones(4, 3), torch.ones(4, 1)
    with pytest.raises(TypeError, match=r"x has dtype torch.int64 and shape \(\d+, 3\), which the model cannot take"):
        _validation.torch_prediction_shape(model, loss_fn, x.long(), y)
    if loss == "MSELoss":  # elementwise: (N, 1) predictions against (N,) targets would broadcast
        with pytest.raises(ValueError, match=r"y must have the prediction's shape per sample, \(1,\), got \(\)"):
            _validation.torch_prediction_shape(model, loss_fn, x, y[:, 0])
    with pytest.raises(ValueError, match=r"x has dtype torch.float32 and shape \(4, 2\), which the model cannot take"):
        _validation.torch_prediction_shape(model, loss_fn, x[:, :2], y)
    _validation.torch_prediction_shape(model, loss_fn, x, y)
    assert model.training, "the model's mode is restored"
    embedding = torch.nn.Embedding(5, 2)  # integer x is what an embedding takes
    _validation.torch_prediction_shape(embedding, torch.nn.MSELoss(), torch.tensor([[1], [4]]), torch.ones(2, 1, 2))


def test_keras_input_and_seed():
    keras = pytest.importorskip("keras")

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    _validation.keras_input("x", model, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\) for the model's input \(None, 3\), got shape \(2, 3, 2\)"):
        _validation.keras_input("x", model, np.ones((2, 3, 2)))
    assert _validation.seed("seed", np.int64(2**32 - 1)) == 2**32 - 1
    with pytest.raises(ValueError, match="seed must be below 2\\*\\*32"):
        _validation.seed("seed", 2**32)


# --- hostile input (issue 24) ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32])
def test_unsigned_labels_beyond_int64_are_refused_not_wrapped(dtype):
    labels = np.array([0, 1], dtype=dtype)
    assert _validation.class_indices(labels).tolist() == [0, 1]
    if dtype is np.uint64:  # 2**63 would become -2**63 as an int64: a negative class
        with pytest.raises(ValueError, match=r"y_true must hold class indices \(integers >= 0\), "
                                             r"got 9223372036854775808"):
            _validation.class_indices(np.array([2**63, 1], dtype=dtype))
    from companion import calibration, metrics

    huge = np.array([2**63 + 5, 1], dtype=np.uint64)
    for call in (lambda: metrics.Accuracy().update(huge, np.array([1, 1])),
                 lambda: calibration.margins(huge, [[0.1, 0.9], [0.5, 0.5]])):
        assert_rejected(call, "y_true")


def masked(values):
    array = np.ma.masked_array(np.asarray(values, dtype=np.float64))
    array[0] = np.ma.masked
    return array


def test_masked_arrays_are_refused_where_a_mask_would_be_ignored():
    # np.asarray drops a mask and keeps the hidden values: every function would use them.
    from companion import calibration, diagnose, metrics

    labels, scores = [0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    calls = {
        "values": lambda: metrics.Mean().update(masked([1.0, 2.0, 3.0])),
        "y_pred": lambda: metrics.MeanSquaredError().update([1.0, 2.0, 3.0], masked([1.0, 2.0, 9.0])),
        "y_true": lambda: metrics.Accuracy().update(masked(labels), scores),
        "scores": lambda: calibration.margins(labels, masked(scores)),
        "logits": lambda: calibration.cross_entropy(labels, masked(scores)),
        "probabilities": lambda: calibration.reliability_diagram(labels, masked(scores)),
        "y_true ": lambda: diagnose.diagnose(masked([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0]),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"{name.strip()} must be a plain array, got a numpy\.ma\."
                                            rf"MaskedArray with \d of its \d+ values masked"):
            call()
    # With nothing masked, a masked array is its data.
    assert _validation.data_array("x", np.ma.masked_array([1.0, 2.0])).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("value, message", [
    (None, r"x must be an array of numbers \(a NumPy array, a list or a tensor\), got NoneType"),
    ("abc", r"x must be an array of numbers .*got str: 'abc'"),
    ({"a": [1.0]}, r"x must be an array of numbers .*got dict"),
    ([np.ones(3), np.ones(3)], r"x must be one array, got a list of 2 arrays of shapes \[\(3,\), \(3,\)\]"),
    ((np.ones((2, 2)),), r"x must be one array, got a tuple of 1 arrays"),
])
def test_what_is_not_one_array_of_numbers_is_named(value, message):
    with pytest.raises(TypeError, match=message):
        _validation.data_array("x", value)
    # A list of numbers, of lists, or of 0-d arrays is one array.
    assert _validation.data_array("x", [np.float32(1.0), np.float64(2.0)]).tolist() == [1.0, 2.0]


def test_a_keras_model_of_two_inputs_and_targets_that_would_broadcast(keras):
    from companion import tf_loop

    inputs = [keras.Input((3,)), keras.Input((3,))]
    two = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(inputs)))
    x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
    # Before issue 24: "y must have one row per sample of x (2)", x being read as 2 samples.
    with pytest.raises(ValueError, match=r"model must take one input, got a model with 2 inputs"):
        tf_loop.train(two, [x, x], y, loss=keras.losses.MeanSquaredError(),
                      optimizer=keras.optimizers.SGD(0.1), batch_size=4, epochs=1)
    one = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"y must hold, per sample, the model's output shape \(1,\) "
                                         r"\(or one class index\), got \(1, 1, 1\)"):
        _validation.keras_data(one, x, y[:, :, None, None])
    for target in (y, y[:, 0], np.zeros(8, np.int64)):  # (N, 1), (N,), class indices: all fine
        _validation.keras_data(one, x, target)


def test_reading_minutes_refuses_negative_and_fractional_counts():
    from companion.glue import reading_minutes

    assert reading_minutes(2000, 250) == 55  # at a learner's pace, rounded up (test_glue)
    for words, lines, name in ((-1, 10, "words"), (10, -1, "lines"), (1.5, 10, "words")):
        assert_rejected(lambda: reading_minutes(words, lines), name)


def test_every_public_function_refuses_hostile_input_clearly(tmp_path, monkeypatch):
    """The adversarial sweep (tests/sweep.py): every public function, each argument given
    hostile values. Every outcome must be a clear error (naming the argument, what it got and
    what it expected) or a correct result: none silent, none unclear."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    import sweep

    monkeypatch.chdir(tmp_path)  # a relative path argument writes here
    cases = sweep.sweep(tmp_path)
    table = sweep.table(cases)
    failed = [f"[{case.outcome}] {case.function}({case.argument}: {case.kind}): {case.detail[:300]}"
              for case in cases if case.outcome in ("silent", "unclear")]
    assert not failed, f"{table}\n" + "\n".join(failed)
    assert table["tried"] >= 1000 and table["clear"] >= 900 and table["correct"] >= 150, table
