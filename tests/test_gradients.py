"""companion.gradients: per-example and batch gradients agree, in each framework and across them."""

import numpy as np
import pytest
from conftest import BAD_INPUT_SETTINGS, assert_rejected, bad_data_cases
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
        (np.ones(3), [np.ones(3)], TypeError, "gradients must be a list of arrays"),
        ([], [np.ones(3)], ValueError, "at least one array"),
        ([np.array(["x"])], [np.ones(1)], TypeError, r"gradients\[0\] must be a numeric array"),
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
