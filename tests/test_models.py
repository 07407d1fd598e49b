"""companion.models builds twin networks and copies weights across frameworks."""

import numpy as np
import pytest
from conftest import BAD_INPUT_SETTINGS, assert_rejected, not_a_positive_int
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from companion import models  # noqa: E402


def test_copied_networks_predict_the_same():
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    keras_model = models.keras_mlp(5, hidden=(7, 3), activation="relu", seed=2)
    torch_model = models.torch_mlp(5, hidden=(7, 3), activation="relu")
    with torch.no_grad():
        before = torch_model(torch.from_numpy(x)).numpy()
    models.copy_keras_weights_to_torch(keras_model, torch_model)
    with torch.no_grad():
        after = torch_model(torch.from_numpy(x)).numpy()
    expected = keras_model(x).numpy()
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(before - expected)) > 1e-3  # the copy did something


def test_l2_penalty_matches_keras():
    keras_model = models.keras_mlp(4, hidden=(6,), l2=0.03, seed=0)
    torch_model = models.torch_mlp(4, hidden=(6,))
    models.copy_keras_weights_to_torch(keras_model, torch_model)
    keras_penalty = float(sum(loss.numpy() for loss in keras_model.losses))
    assert keras_penalty > 0
    assert float(models.torch_l2_penalty(0.03)(torch_model).detach()) == pytest.approx(keras_penalty, rel=1e-6)


def test_mismatched_layers_are_refused():
    with pytest.raises(ValueError, match="Dense layers"):
        models.copy_keras_weights_to_torch(models.keras_mlp(3, hidden=(4,)), models.torch_mlp(3, hidden=(4, 4)))
    with pytest.raises(ValueError, match="kernel of shape"):
        models.copy_keras_weights_to_torch(models.keras_mlp(3, hidden=(4,)), models.torch_mlp(3, hidden=(5,)))


@pytest.mark.parametrize("keras_bias, torch_bias", [(True, False), (False, True)])
def test_a_bias_on_one_side_only_is_refused(keras_bias, torch_bias):
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=keras_bias)])
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=torch_bias))
    before = [p.detach().clone() for p in torch_model.parameters()]
    with pytest.raises(ValueError, match=rf"torch_model's Linear layer 0 has bias={torch_bias}.*use_bias={keras_bias}"):
        models.copy_keras_weights_to_torch(keras_model, torch_model)
    assert all(torch.equal(b, p) for b, p in zip(before, torch_model.parameters())), "nothing was copied"


def test_layers_without_bias_on_both_sides_are_copied():
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
    models.copy_keras_weights_to_torch(keras_model, torch_model)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(torch_model(torch.from_numpy(x)).numpy(), keras_model(x).numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: models.keras_mlp(0), "num_inputs"),
        (lambda: models.torch_mlp(3, hidden=8), "hidden"),
        (lambda: models.torch_mlp(3, activation="sigmoid"), "activation"),
        (lambda: models.keras_mlp(3, dropout=1.0), "dropout"),
        (lambda: models.keras_mlp(3, l2=-1), "l2"),
        (lambda: models.torch_l2_penalty(float("nan")), "l2"),
        (lambda: models.copy_keras_weights_to_torch("net", models.torch_mlp(3)), "keras_model must be a keras.Model"),
        (lambda: models.copy_keras_weights_to_torch(models.keras_mlp(3), "net"), "torch_model must be a torch.nn.Module"),
    ],
)
def test_bad_input_is_rejected_by_name(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@BAD_INPUT_SETTINGS
@given(name=st.sampled_from(["num_inputs", "hidden", "activation", "l2", "dropout"]),
       value=st.one_of(not_a_positive_int, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)))
def test_model_builders_reject_bad_arguments(name, value):
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
