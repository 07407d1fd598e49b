"""companion.gradients: per-example and batch gradients agree, in each framework and across them."""

import functools

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Case, Expect, arrays_valid_and_invalid,
                      assert_rejected, at_most_one_broken, bad_data_cases, classify, objects_valid_and_invalid)
from hypothesis import given
from hypothesis import strategies as st

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import companion  # noqa: E402
from companion import gradients, models  # noqa: E402
from companion.data import load_diabetes  # noqa: E402

X, Y = load_diabetes()
X, Y = X[:26], Y[:26]  # the size of the diabetes data's short last batch at batch size 32
MSE_TORCH = torch.nn.MSELoss(reduction="none")
MSE_KERAS = keras.losses.mean_squared_error


@pytest.fixture(autouse=True)
def _seed():
    companion.seed_everything(0)


@pytest.fixture
def twins():
    keras_model = models.keras_mlp(X.shape[1], hidden=(8,), seed=2)
    torch_model = models.torch_mlp(X.shape[1], hidden=(8,))
    models.copy_keras_weights_to_torch(keras_model, torch_model)
    return keras_model, torch_model


def test_tf_mean_of_per_example_gradients_is_the_gradient_of_the_mean(twins):
    keras_model, _ = twins
    per_example = gradients.tf_per_example_gradients(keras_model, X, Y, loss_fn=MSE_KERAS)
    assert [g.shape for g in per_example] == [(26, 10, 8), (26, 8), (26, 8, 1), (26, 1)]
    mean = gradients.tf_batch_gradients(keras_model, X, Y, loss_fn=MSE_KERAS, reduction="mean")
    total = gradients.tf_batch_gradients(keras_model, X, Y, loss_fn=MSE_KERAS, reduction="sum")
    assert gradients.gradient_difference(mean, [g.mean(axis=0) for g in per_example]) < 1e-6
    assert gradients.gradient_difference(total, [26 * g for g in mean]) < 1e-6
    # Example 3's own gradient is the batch gradient of a batch holding only example 3.
    alone = gradients.tf_batch_gradients(keras_model, X[3:4], Y[3:4], loss_fn=MSE_KERAS)
    assert gradients.gradient_difference(alone, [g[3] for g in per_example]) < 1e-6
    # The examples really differ: the identity is not 0 == 0 or a copy of one example.
    assert gradients.gradient_difference([g[0] for g in per_example], [g[1] for g in per_example]) > 0.1


def test_torch_mean_of_per_example_gradients_is_the_gradient_of_the_mean(twins):
    _, torch_model = twins
    per_example = gradients.torch_per_example_gradients(torch_model, X, Y, loss_fn=MSE_TORCH)
    assert [g.shape for g in per_example] == [(26, 8, 10), (26, 8), (26, 1, 8), (26, 1)]
    mean = gradients.torch_batch_gradients(torch_model, X, Y, loss_fn=MSE_TORCH)
    total = gradients.torch_batch_gradients(torch_model, X, Y, loss_fn=MSE_TORCH, reduction="sum")
    assert gradients.gradient_difference(mean, [g.mean(axis=0) for g in per_example]) < 1e-6
    assert gradients.gradient_difference(total, [26 * g for g in mean]) < 1e-6
    alone = gradients.torch_batch_gradients(torch_model, X[3:4], Y[3:4], loss_fn=MSE_TORCH)
    assert gradients.gradient_difference(alone, [g[3] for g in per_example]) < 1e-6
    assert all(p.grad is None for p in torch_model.parameters()), ".grad must be left untouched"


def test_the_two_frameworks_agree_from_the_same_weights(twins):
    keras_model, torch_model = twins
    tf_grads = gradients.tf_per_example_gradients(keras_model, X, Y, loss_fn=MSE_KERAS)
    torch_grads = gradients.torch_per_example_gradients(torch_model, X, Y, loss_fn=MSE_TORCH, layout="keras")
    assert [g.shape for g in tf_grads] == [g.shape for g in torch_grads]
    assert gradients.gradient_difference(tf_grads, torch_grads) < 1e-5
    tf_mean = gradients.tf_batch_gradients(keras_model, X, Y, loss_fn=MSE_KERAS)
    torch_mean = gradients.torch_batch_gradients(torch_model, X, Y, loss_fn=MSE_TORCH, layout="keras")
    assert gradients.gradient_difference(tf_mean, torch_mean) < 1e-5


def test_classification_with_integer_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=12)
    keras.utils.set_random_seed(0)
    keras_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    torch_model = torch.nn.Sequential(torch.nn.Linear(5, 3))
    models.copy_keras_weights_to_torch(keras_model, torch_model)

    def keras_ce(y_true, logits):
        return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)

    torch_ce = torch.nn.CrossEntropyLoss(reduction="none")
    tf_grads = gradients.tf_per_example_gradients(keras_model, x, labels, loss_fn=keras_ce)
    torch_grads = gradients.torch_per_example_gradients(torch_model, x, labels, loss_fn=torch_ce, layout="keras")
    assert gradients.gradient_difference(tf_grads, torch_grads) < 1e-5
    mean = gradients.torch_batch_gradients(torch_model, x, labels, loss_fn=torch_ce, layout="keras")
    assert gradients.gradient_difference(mean, [g.mean(axis=0) for g in torch_grads]) < 1e-6


def test_a_keras_loss_object_with_reduction_none_is_per_example(twins):
    keras_model, _ = twins
    by_function = gradients.tf_per_example_gradients(keras_model, X, Y, loss_fn=MSE_KERAS)
    by_object = gradients.tf_per_example_gradients(
        keras_model, X, Y, loss_fn=keras.losses.MeanSquaredError(reduction=None))
    assert gradients.gradient_difference(by_function, by_object) < 1e-7


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_a_loss_that_already_reduced_the_batch_is_refused(twins, framework):
    keras_model, torch_model = twins
    with pytest.raises(ValueError, match="one loss per example.*scalar"):
        if framework == "tf":
            gradients.tf_per_example_gradients(keras_model, X, Y, loss_fn=keras.losses.MeanSquaredError())
        else:
            gradients.torch_batch_gradients(torch_model, X, Y, loss_fn=torch.nn.MSELoss())


def test_a_loss_with_the_wrong_number_of_values_is_refused(twins):
    _, torch_model = twins
    with pytest.raises(ValueError, match=r"one loss per example \(26\), got shape \(1,\)"):
        gradients.torch_batch_gradients(torch_model, X, Y, loss_fn=lambda p, t: ((p - t) ** 2).mean().reshape(1))


@pytest.mark.parametrize(
    "function, change, error, match",
    [
        ("tf_per_example_gradients", dict(model="net"), TypeError, "model must be a keras.Model"),
        ("tf_batch_gradients", dict(loss_fn="mse"), TypeError, "loss_fn must be a callable"),
        ("tf_batch_gradients", dict(reduction="avg"), ValueError, "reduction must be one of"),
        ("tf_batch_gradients", dict(y=Y[:5]), ValueError, "y must have one row per sample"),
        ("torch_per_example_gradients", dict(model="net"), TypeError, "model must be a torch.nn.Module"),
        ("torch_per_example_gradients", dict(layout="jax"), ValueError, "layout must be one of"),
        ("torch_batch_gradients", dict(reduction=None), ValueError, "reduction must be one of"),
        ("torch_batch_gradients", dict(x=np.full_like(X, np.nan)), ValueError, "x must be finite"),
        ("torch_batch_gradients", dict(loss_fn=3), TypeError, "loss_fn must be a callable"),
    ],
)
def test_bad_input_is_rejected_by_name(twins, function, change, error, match):
    keras_model, torch_model = twins
    is_tf = function.startswith("tf")
    arguments = dict(model=keras_model if is_tf else torch_model, x=X, y=Y, loss_fn=MSE_KERAS if is_tf else MSE_TORCH)
    arguments.update(change)
    with pytest.raises(error, match=match):
        getattr(gradients, function)(arguments.pop("model"), arguments.pop("x"), arguments.pop("y"), **arguments)


def test_flatten_and_gradient_difference():
    a = [np.array([[1.0, -4.0]]), np.array([2.0])]
    assert gradients.flatten(a).tolist() == [1.0, -4.0, 2.0]
    b = [np.array([[1.0, -4.0]]), np.array([2.4])]
    assert gradients.gradient_difference(a, b) == pytest.approx(0.1)  # 0.4 / max|a| = 0.4 / 4
    assert gradients.gradient_difference(a, a) == 0.0


@pytest.mark.parametrize(
    "a, b, error, match",
    [
        (np.ones(3), [np.ones(3)], TypeError, "a must be a list of arrays"),
        ([], [np.ones(3)], ValueError, "at least one array"),
        ([np.array(["x"])], [np.ones(1)], TypeError, r"a\[0\] must be a numeric array"),
        ([np.ones(3)], [np.ones(4)], ValueError, "same number of entries"),
        ([np.zeros(3)], [np.ones(3)], ValueError, "must not be all zeros"),
    ],
)
def test_comparison_helpers_reject_bad_input(a, b, error, match):
    with pytest.raises(error, match=match):
        gradients.gradient_difference(a, b)


# ---------------------------------------------------------------- bad input, drawn by Hypothesis


@BAD_INPUT_SETTINGS
@given(a=st.one_of(st.just([]), st.just([np.ones(3), np.ones(2)]), st.just("gradients"), st.just(None)))
def test_gradient_helpers_reject_bad_inputs(a):
    with pytest.raises((ValueError, TypeError)):
        gradients.gradient_difference(a, [np.ones(3)])


@BAD_INPUT_SETTINGS
@given(case=bad_data_cases(X, Y), framework=st.sampled_from(["tf", "torch"]),
       function=st.sampled_from(["per_example_gradients", "batch_gradients"]))
def test_gradient_functions_reject_bad_data(twins, case, framework, function):
    keras_model, torch_model = twins
    model, loss_fn = (keras_model, MSE_KERAS) if framework == "tf" else (torch_model, MSE_TORCH)
    arguments = {"x": X, "y": Y}
    name, value = case
    arguments[name] = value  # every case is refused before any gradient is computed
    call = getattr(gradients, f"{framework}_{function}")
    assert_rejected(lambda: call(model, arguments["x"], arguments["y"], loss_fn=loss_fn), name)


@BAD_INPUT_SETTINGS
@given(name=st.sampled_from(["reduction", "layout"]), value=st.one_of(st.text(max_size=5), st.none(), st.integers()))
def test_gradient_functions_reject_bad_keywords(twins, name, value):
    keras_model, torch_model = twins
    if value in ("mean", "sum", "torch", "keras"):
        return
    assert_rejected(lambda: gradients.torch_batch_gradients(torch_model, X[:8], Y[:8], loss_fn=MSE_TORCH,
                                                            **{name: value}), name)
    if name == "reduction":
        assert_rejected(lambda: gradients.tf_batch_gradients(keras_model, X[:8], Y[:8], loss_fn=MSE_KERAS,
                                                             reduction=value), name)


# ---------------------------------------------------------------- every input, valid or not (issue 15)
#
# The models are linear, y = x w + b, so the float64 reference is a formula: the loss of example i
# is mean_j (p_i - y_ij)**2 over its targets, whose gradient is 2 r_i x_i for w and 2 r_i for b,
# with r_i = mean_j (p_i - y_ij).

DATA_X = np.random.default_rng(1).uniform(-2, 2, size=(4, 3))
DATA_Y = np.random.default_rng(2).uniform(-2, 2, size=(4, 1))


@functools.cache
def _linear_models():
    """Linear models of 3 inputs with the same weights, by framework and name."""
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    kernel, bias = (np.asarray(v) for v in keras_model.get_weights())
    torch_models = {"linear": torch.nn.Linear(3, 1), "dropout, in train mode": torch.nn.Sequential(
        torch.nn.Linear(3, 1), torch.nn.Dropout(0.5)), "float64": torch.nn.Linear(3, 1).double()}
    for model in torch_models.values():
        linear = model if isinstance(model, torch.nn.Linear) else model[0]
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias.copy()))
    frozen = torch.nn.Linear(3, 1).requires_grad_(False)
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    return {
        "tf": objects_valid_and_invalid(valid={"linear": keras_model},
                                        invalid={"unbuilt": unbuilt, "None": None, "a torch model": torch_models["linear"]}),
        "torch": objects_valid_and_invalid(valid=torch_models, invalid={"frozen": frozen, "None": None,
                                                                        "a keras model": keras_model}),
    }, kernel.astype(np.float64), bias.astype(np.float64)


def _reference_gradients(e, x, y, framework, dtype=np.float32):
    """Per-example gradients (kernel (N, 3, 1), bias (N, 1)) of the linear model computing in
    ``dtype``, or Invalid."""
    _, kernel, bias = _linear_models()
    xs, ys = e.array("x", x, ndim=(2,)), e.array("y", y, ndim=range(1, 9))
    e.done()
    e.need(xs.shape[1] == 3, "x")
    e.need(len(ys) == len(xs), "y")
    if framework == "torch":  # data as floats, targets shaped like the (N, 1) prediction of MSELoss
        e.need(x.dtype.kind == "f", "x")
        e.need(ys.shape[1:] == (1,), "y")
    e.need(np.abs(xs).max() <= np.finfo(dtype).max, "x")  # the data must fit the model's float type
    e.need(np.abs(ys).max() <= np.finfo(dtype).max, "y")
    e.done()
    xs, ys = xs.astype(dtype).astype(np.float64), ys.astype(dtype).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # huge data: the gradients overflow to inf
        residual = (xs @ kernel + bias - ys.reshape(len(ys), -1)).mean(axis=1)
        return [2 * residual[:, None, None] * xs[:, :, None], 2 * residual[:, None]]


def _gradients_close(result, want):
    """Lists of arrays of equal shapes, equal to float32 rounding (inf or NaN where the reference
    overflows: which one depends on the order of the sums)."""
    def one(r, w):
        finite = np.isfinite(w)
        scale = np.max(np.abs(w[finite]), initial=0)
        return r.shape == w.shape and not np.isfinite(r[~finite]).any() and (
            np.max(np.abs(r[finite] - w[finite]), initial=0) <= 1e-4 * scale + 1e-5)

    return len(result) == len(want) and all(one(r, w) for r, w in zip(result, want))


def _data_cases(tensorflow=False):
    return {"x": arrays_valid_and_invalid(DATA_X, tensorflow=tensorflow),
            "y": arrays_valid_and_invalid(DATA_Y, tensorflow=tensorflow)}


TF_LOSSES = objects_valid_and_invalid(
    valid={"mean_squared_error": MSE_KERAS, "MeanSquaredError(reduction=None)": keras.losses.MeanSquaredError(reduction=None)},
    invalid={"reduces the batch": keras.losses.MeanSquaredError(), "None": None, "a str": "mse"})
TORCH_LOSSES = objects_valid_and_invalid(valid={"MSELoss(reduction='none')": MSE_TORCH},
                                         invalid={"reduces the batch": torch.nn.MSELoss(), "None": None, "a str": "mse"})
REDUCTIONS = objects_valid_and_invalid(valid={"mean": "mean", "sum": "sum"}, invalid={"Mean": "Mean", "None": None})
LAYOUTS = objects_valid_and_invalid(valid={"torch": "torch", "keras": "keras"}, invalid={"tf": "tf", "1": 1})


def _per_example_in(layout, gradients_):
    """Reference gradients (Keras layout) in the layout asked for."""
    kernel, bias = gradients_
    return [kernel if layout == "keras" else np.swapaxes(kernel, 1, 2), bias]


@INPUT_SETTINGS
@given(data=st.data(), batch=st.booleans())
def test_inputs_tf_gradients(data, batch):
    cases = data.draw(at_most_one_broken(model=_linear_models()[0]["tf"], loss_fn=TF_LOSSES,
                                         reduction=REDUCTIONS, **_data_cases(tensorflow=True)))
    model, loss_fn, reduction, x, y = (cases[k] for k in ("model", "loss_fn", "reduction", "x", "y"))

    def expected():
        e = Expect()
        e.object("model", model), e.object("loss_fn", loss_fn)
        if batch:
            e.object("reduction", reduction)
        e.done()
        kernel, bias = _reference_gradients(e, x, y, "tf")
        reduce = np.mean if not batch or reduction.value == "mean" else np.sum
        with np.errstate(invalid="ignore"):  # inf - inf, where huge data overflowed
            return [kernel, bias] if not batch else [reduce(kernel, axis=0), reduce(bias, axis=0)]

    if batch:
        call = lambda: gradients.tf_batch_gradients(model.value, x.value, y.value, loss_fn=loss_fn.value,  # noqa: E731
                                                    reduction=reduction.value)
    else:
        call = lambda: gradients.tf_per_example_gradients(model.value, x.value, y.value, loss_fn=loss_fn.value)  # noqa: E731
    classify(f"gradients.tf_{'batch' if batch else 'per_example'}_gradients", call, expected, agree=_gradients_close)


@INPUT_SETTINGS
@given(data=st.data(), batch=st.booleans())
def test_inputs_torch_gradients(data, batch):
    cases = data.draw(at_most_one_broken(model=_linear_models()[0]["torch"], loss_fn=TORCH_LOSSES,
                                         reduction=REDUCTIONS, layout=LAYOUTS, **_data_cases()))
    model, loss_fn, reduction, layout, x, y = (cases[k] for k in ("model", "loss_fn", "reduction", "layout", "x", "y"))
    was_training = getattr(model.value, "training", None)

    def expected():
        e = Expect()
        e.object("model", model), e.object("loss_fn", loss_fn), e.object("layout", layout)
        if batch:
            e.object("reduction", reduction)
        e.done()
        dtype = np.float64 if model.kind == "valid: float64" else np.float32
        kernel, bias = _per_example_in(layout.value, _reference_gradients(e, x, y, "torch", dtype))
        reduce = np.mean if not batch or reduction.value == "mean" else np.sum
        with np.errstate(invalid="ignore"):  # inf - inf, where huge data overflowed
            return [kernel, bias] if not batch else [reduce(kernel, axis=0), reduce(bias, axis=0)]

    if batch:
        call = lambda: gradients.torch_batch_gradients(model.value, x.value, y.value, loss_fn=loss_fn.value,  # noqa: E731
                                                       reduction=reduction.value, layout=layout.value)
    else:
        call = lambda: gradients.torch_per_example_gradients(model.value, x.value, y.value,  # noqa: E731
                                                             loss_fn=loss_fn.value, layout=layout.value)
    classify(f"gradients.torch_{'batch' if batch else 'per_example'}_gradients", call, expected,
             agree=_gradients_close)
    assert getattr(model.value, "training", None) == was_training, "the model's mode was not restored"


@st.composite
def gradient_lists(draw):
    """A Case of a list of gradient arrays (one array of the list drawn valid or not), or not a list."""
    shape = draw(st.sampled_from(["list", "list", "list", "tuple", "array", "empty", "None"]))
    first, second = draw(arrays_valid_and_invalid(DATA_X)), draw(arrays_valid_and_invalid(DATA_Y[:, 0]))
    value = {"list": [first.value, second.value], "tuple": (first.value, second.value), "array": DATA_X, "empty": [],
             "None": None}[shape]
    good = shape in ("list", "tuple") and first.reference is not None and second.reference is not None
    return Case(value, f"{shape} of {first.kind}, {second.kind}" if shape in ("list", "tuple") else shape,
                np.concatenate([first.reference.ravel(), second.reference.ravel()]).astype(np.float64) if good else None)


@INPUT_SETTINGS
@given(case=gradient_lists())
def test_inputs_flatten(case):
    def expected():  # NaN and inf are kept: a diverged gradient is still a gradient
        e = Expect()
        e.need(case.reference is not None, "gradients")
        e.done()
        return case.reference

    classify("gradients.flatten", lambda: gradients.flatten(case.value), expected,
             agree=lambda result, want: result.dtype == np.float64 and np.array_equal(result, want, equal_nan=True))


@INPUT_SETTINGS
@given(a=gradient_lists(), b=gradient_lists())
def test_inputs_gradient_difference(a, b):
    def expected():
        e = Expect()
        for name, case in (("a", a), ("b", b)):
            e.need(case.reference is not None and np.isfinite(case.reference).all(), name)
        e.done()
        e.need(a.reference.size, "a"), e.need(b.reference.size, "b")
        e.done()
        e.need(a.reference.shape == b.reference.shape, "a", "b")
        e.need(np.abs(a.reference).max() > 0, "a")
        e.done()
        with np.errstate(over="ignore"):
            return np.max(np.abs(a.reference - b.reference)) / np.max(np.abs(a.reference))

    classify("gradients.gradient_difference", lambda: gradients.gradient_difference(a.value, b.value), expected,
             agree=lambda result, want: type(result) is float and np.isclose(result, want, rtol=1e-12))


def test_dropout_runs_in_eval_mode_and_the_mode_is_restored():
    # vmap refuses the random draw of a dropout mask; eval mode draws none, as training=False in TF.
    model = torch.nn.Sequential(torch.nn.Linear(10, 1), torch.nn.Dropout(0.5))
    per_example = gradients.torch_per_example_gradients(model, X[:8], Y[:8], loss_fn=MSE_TORCH)
    batch = gradients.torch_batch_gradients(model, X[:8], Y[:8], loss_fn=MSE_TORCH)
    assert gradients.gradient_difference(batch, [g.mean(axis=0) for g in per_example]) < 1e-6
    assert model.training


def test_integer_x_for_a_float_model_is_refused_by_name():
    with pytest.raises(TypeError, match=r"x has dtype torch.int64 and shape \(4, 10\), which the model cannot take"):
        gradients.torch_per_example_gradients(torch.nn.Linear(10, 1), X[:4].astype(np.int64), Y[:4],
                                              loss_fn=MSE_TORCH)
