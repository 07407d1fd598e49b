"""companion.models builds twin networks and copies weights across frameworks."""

import functools

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, SLOW_INPUT_SETTINGS, Expect, assert_rejected, at_most_one_broken,
                      classify, close, not_a_positive_int, numbers_valid_and_invalid, objects_valid_and_invalid)
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
    with pytest.raises(ValueError, match=r"keras_model's Dense layer 0, whose kernel has shape \(3, 4\), but "
                                         r"its weight has shape \(5, 3\) \(expected \(4, 3\)\)"):
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


# --- every input, valid or not (issue 15) -----------------------------------------------------------

HIDDEN = objects_valid_and_invalid(
    valid={"one": (4,), "two": [3, 2], "none": (), "array": np.array([4]), "int64": (np.int64(2),)},
    invalid={"an int": 4, "a str": "4", "zero": (0,), "float": (2.0,), "None": None, "bool": (True,)})
ACTIVATIONS = objects_valid_and_invalid(valid={a: a for a in ("linear", "tanh", "relu")},
                                        invalid={"sigmoid": "sigmoid", "None": None, "capitalized": "Tanh"})


def _architecture(e, num_inputs, hidden, activation, dropout):
    return (e.count("num_inputs", num_inputs), e.object("hidden", hidden), e.object("activation", activation),
            e.number("dropout", dropout, low=0, high=1))


@SLOW_INPUT_SETTINGS
@given(cases=at_most_one_broken(all_safe=6,
    num_inputs=numbers_valid_and_invalid(3, huge=600), hidden=HIDDEN, activation=ACTIVATIONS,
    l2=numbers_valid_and_invalid(0.01), dropout=numbers_valid_and_invalid(0.25),
    seed=numbers_valid_and_invalid(1, huge=2**32)))
def test_inputs_keras_mlp(cases):
    num_inputs, hidden, activation, l2, dropout, seed = cases.values()

    def expected():
        e = Expect()
        n, widths, act, rate = _architecture(e, num_inputs, hidden, activation, dropout)
        penalty, _ = e.number("l2", l2, low=0), e.count("seed", seed, minimum=0)
        e.need(rate != 1, "dropout")
        e.need(seed.reference is None or seed.reference < 2**32, "seed")
        e.done()
        return n, [*map(int, widths), 1], act, [rate] * len(widths) if rate else [], penalty

    def describe(model):
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
        l2s = {float(layer.kernel_regularizer.l2) if layer.kernel_regularizer else 0.0 for layer in dense[:-1]}
        return model.input_shape[1], [layer.units for layer in dense], dense[0].activation.__name__ if dense[:-1] else \
            None, rates, l2s

    def agree(result, want):
        n, units, act, rates, l2s = result
        return (n, units, rates) == want[:2] + want[3:4] and (act in (None, want[2])) and (
            not l2s or close(l2s.pop(), want[4], rtol=1e-6))

    classify("models.keras_mlp", lambda: describe(models.keras_mlp(
        num_inputs.value, hidden=hidden.value, activation=activation.value, l2=l2.value, dropout=dropout.value,
        seed=seed.value)), expected, agree=agree)


@INPUT_SETTINGS
@given(cases=at_most_one_broken(num_inputs=numbers_valid_and_invalid(3, huge=600), hidden=HIDDEN,
                                activation=ACTIVATIONS, dropout=numbers_valid_and_invalid(0.25)))
def test_inputs_torch_mlp(cases):
    num_inputs, hidden, activation, dropout = cases.values()

    def expected():
        e = Expect()
        n, widths, act, rate = _architecture(e, num_inputs, hidden, activation, dropout)
        e.need(rate != 1, "dropout")
        e.done()
        sizes = [n, *map(int, widths), 1]
        return list(zip(sizes[:-1], sizes[1:])), act, [rate] * len(widths) if rate else []

    def describe(model):
        linear = [(m.in_features, m.out_features) for m in model if isinstance(m, torch.nn.Linear)]
        kinds = {type(m).__name__ for m in model} - {"Linear", "Dropout"}
        act = {"Tanh": "tanh", "ReLU": "relu"}.get(kinds.pop(), "?") if kinds else None
        return linear, act, [m.p for m in model if isinstance(m, torch.nn.Dropout)]

    classify("models.torch_mlp", lambda: describe(models.torch_mlp(
        num_inputs.value, hidden=hidden.value, activation=activation.value, dropout=dropout.value)), expected,
        agree=lambda result, want: result[0] == want[0] and result[2] == want[2] and result[1] in (
            want[1] if len(want[0]) > 1 and want[1] != "linear" else None,))


@functools.cache
def _model_pairs():
    """Keras and PyTorch models by name; only "built 3-4-1" and "3-4-1" match one to one."""
    keras_models = {"built 3-4-1": models.keras_mlp(3, hidden=(4,)), "unbuilt": keras.Sequential([keras.layers.Dense(1)]),
                    "None": None, "a torch model": models.torch_mlp(3, hidden=(4,))}
    no_bias = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    torch_models = {"3-4-1": models.torch_mlp(3, hidden=(4,)), "3-5-1": models.torch_mlp(3, hidden=(5,)),
                    "3-4-1 without a bias": no_bias, "3-1": torch.nn.Linear(3, 1), "None": None,
                    "a keras model": models.keras_mlp(3, hidden=(4,))}
    return keras_models, torch_models


@INPUT_SETTINGS
@given(keras_name=st.sampled_from(["built 3-4-1", "unbuilt", "None", "a torch model"]),
       torch_name=st.sampled_from(["3-4-1", "3-5-1", "3-4-1 without a bias", "3-1", "None", "a keras model"]))
def test_inputs_copy_keras_weights_to_torch(keras_name, torch_name):
    keras_models, torch_models = _model_pairs()
    keras_model, torch_model = keras_models[keras_name], torch_models[torch_name]
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)

    def expected():
        e = Expect()
        e.need(keras_name == "built 3-4-1", "keras_model")
        e.need(torch_name == "3-4-1", "torch_model")
        e.done()
        return keras_model(x).numpy()

    def call():
        models.copy_keras_weights_to_torch(keras_model, torch_model)
        with torch.no_grad():
            return torch_model(torch.from_numpy(x)).numpy()

    classify("models.copy_keras_weights_to_torch", call, expected,
             agree=lambda result, want: close(result, want, rtol=1e-5, atol=1e-6))


@INPUT_SETTINGS
@given(l2=numbers_valid_and_invalid(0.01), hidden_only=st.one_of(numbers_valid_and_invalid(True),
                                                                  numbers_valid_and_invalid(False)))
def test_inputs_torch_l2_penalty(l2, hidden_only):
    model = models.torch_mlp(3, hidden=(4, 2))
    linear = [m for m in model if isinstance(m, torch.nn.Linear)]

    def expected():
        e = Expect()
        penalty, hidden = e.number("l2", l2, low=0), e.flag("hidden_only", hidden_only)
        e.done()
        squares = sum(float((m.weight.detach().double() ** 2).sum()) for m in (linear[:-1] if hidden else linear))
        with np.errstate(over="ignore"):  # a float32 model's penalty is a float32 tensor: maybe inf
            return float(np.float32(penalty * squares))

    classify("models.torch_l2_penalty", lambda: float(models.torch_l2_penalty(l2.value, hidden_only=hidden_only.value)(
        model).detach()), expected, agree=lambda result, want: close(result, want, rtol=1e-5))


def test_numpy_scalars_are_numbers():
    # np.float32 rates, np.int64 counts and np.bool_ flags, as NumPy code produces them.
    model = models.keras_mlp(np.int64(3), hidden=(np.int64(4),), l2=np.float32(0.01), dropout=np.float32(0.1),
                             seed=np.int64(1))
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [4, 1]
    torch_model = models.torch_mlp(np.int64(3), hidden=np.array([4]), dropout=np.float32(0.1))
    assert float(models.torch_l2_penalty(np.float32(0.5), hidden_only=np.bool_(False))(torch_model).detach()) > 0
