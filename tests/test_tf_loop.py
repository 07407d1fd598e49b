"""companion.tf_loop.train reproduces model.fit's logged numbers."""

import functools
import warnings

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, SLOW_INPUT_SETTINGS, Case, Expect, arrays_valid_and_invalid, assert_rejected,
                      at_most_one_broken, bad_data_cases, classify, log_agrees, not_a_positive_int,
                      numbers_valid_and_invalid, objects_valid_and_invalid)
from hypothesis import given
from hypothesis import strategies as st

keras = pytest.importorskip("keras")

import companion  # noqa: E402
from companion import models, tf_loop  # noqa: E402
from companion.data import load_diabetes  # noqa: E402
from companion.metrics import Mean  # noqa: E402

X, Y = load_diabetes()
WEIGHTS = np.random.default_rng(0).uniform(0.2, 3.0, size=len(X)).astype(np.float32)
BATCH, EPOCHS = 32, 3  # 442 = 13 * 32 + 26: a short last batch


def build_model(l2=0.01, seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((X.shape[1],)),
            keras.layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(l2)),
            keras.layers.Dense(1),
        ]
    )


def twin(model):
    other = keras.models.clone_model(model)
    other.set_weights(model.get_weights())
    return other


def make_optimizer(name):
    return keras.optimizers.SGD(0.05) if name == "sgd" else keras.optimizers.Adam(0.01)


def metric_set():
    return dict(
        metrics=[keras.metrics.MeanSquaredError(name="mse"), keras.metrics.MeanAbsoluteError(name="mae")],
        weighted_metrics=[keras.metrics.MeanSquaredError(name="weighted_mse")],
    )


@pytest.fixture(autouse=True)
def _seed():
    companion.seed_everything(0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_history_equals_fit(optimizer, weighted):
    reference = build_model()
    ours = twin(reference)
    sample_weight = WEIGHTS if weighted else None
    reference.compile(optimizer=make_optimizer(optimizer), loss=keras.losses.MeanSquaredError(), **metric_set())
    fit_history = reference.fit(
        X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, sample_weight=sample_weight
    ).history
    log = tf_loop.train(
        ours, X, Y, loss=keras.losses.MeanSquaredError(), optimizer=make_optimizer(optimizer),
        batch_size=BATCH, epochs=EPOCHS, sample_weight=sample_weight, **metric_set(),
    )
    assert list(log.history) == ["loss", "mse", "mae", "weighted_mse"]
    assert set(log.history) == set(fit_history)
    for key, values in fit_history.items():
        np.testing.assert_allclose(log.history[key], values, rtol=1e-5, err_msg=key)
    for a, b in zip(reference.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The check must be able to fail: sample weights change the loss and weighted metric only.
    if weighted:
        assert abs(log.history["weighted_mse"][0] - log.history["mse"][0]) > 1e-4


def test_batch_records_are_pre_update_and_running_means():
    model = build_model()
    start = twin(model)
    log = tf_loop.train(
        model, X, Y, loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.1),
        batch_size=BATCH, epochs=2, metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    assert len(log.batches) == 2 * 14
    assert log.sizes(epoch=0).tolist() == [32] * 13 + [26]
    # Step 0 is measured on the initial weights: recompute it from the untouched twin.
    first = start(X[:BATCH], training=True).numpy()
    mse0 = float(np.mean((first - Y[:BATCH]) ** 2))
    penalty0 = float(sum(loss.numpy() for loss in start.losses))
    assert log.batches[0].batch["mse"] == pytest.approx(mse0, rel=1e-6)
    assert log.batches[0].batch["loss"] == pytest.approx(mse0 + penalty0, rel=1e-6)
    # The epoch value is the size-weighted mean of the batch values, and equals the last running value.
    for epoch in range(2):
        sizes = log.sizes(epoch=epoch)
        for key in ("loss", "mse"):
            batch = log.series(key, epoch=epoch)
            assert log.history[key][epoch] == pytest.approx(np.sum(batch * sizes) / sizes.sum(), rel=1e-6)
            assert log.series(key, kind="running", epoch=epoch)[-1] == log.history[key][epoch]
        # ...and not the plain mean of batch means, which overweights the short last batch.
        plain = log.series("loss", epoch=epoch).mean()
        assert abs(plain - log.history["loss"][epoch]) > 1e-7


def test_loss_minus_metric_is_the_penalty():
    model = build_model(l2=0.05)
    log = tf_loop.train(
        model, X, Y, loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.0),
        batch_size=BATCH, epochs=1, metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    penalty = float(sum(loss.numpy() for loss in model.losses))  # lr=0: weights never moved
    assert penalty > 0.01
    assert log.history["loss"][0] - log.history["mse"][0] == pytest.approx(penalty, rel=1e-4)


def test_shuffle_is_reproducible_from_seed():
    runs = []
    for seed in (3, 3, 4):
        model = build_model()
        runs.append(tf_loop.train(
            model, X, Y, loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.05),
            batch_size=BATCH, epochs=2, shuffle=True, seed=seed,
        ).history["loss"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_zero_epochs_gives_empty_history():
    log = tf_loop.train(build_model(), X, Y, loss=keras.losses.MeanSquaredError(),
                        optimizer=keras.optimizers.SGD(0.1), batch_size=BATCH, epochs=0)
    assert log.history == {"loss": []} and log.batches == []


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=2.5), TypeError, "batch_size"),
        (dict(epochs=-1), ValueError, "epochs"),
        (dict(y=Y[:-1]), ValueError, "y must have one row per sample"),
        (dict(x=np.full_like(X, np.nan)), ValueError, "x must be finite"),
        (dict(x=X[:0]), ValueError, "x must not be empty"),
        (dict(sample_weight=WEIGHTS[:10]), ValueError, "sample_weight"),
        (dict(sample_weight=-WEIGHTS), ValueError, "sample_weight must be >= 0"),
        (dict(loss="mse"), TypeError, "loss must be a keras"),
        (dict(optimizer="sgd"), TypeError, "optimizer must be a keras"),
        (dict(metrics=["mse"]), TypeError, "metrics must be a keras.Metric"),
        (dict(shuffle="yes"), TypeError, "shuffle"),
        (dict(model=object()), TypeError, "model must be a keras.Model"),
    ],
)
def test_bad_input_is_rejected_by_name(change, error, match):
    arguments = dict(model=build_model(), x=X, y=Y, loss=keras.losses.MeanSquaredError(),
                     optimizer=keras.optimizers.SGD(0.1), batch_size=BATCH, epochs=1)
    arguments.update(change)
    with pytest.raises(error, match=match):
        tf_loop.train(**arguments)


@pytest.fixture(scope="module")
def small_model():
    return models.keras_mlp(X.shape[1], hidden=(4,))


@BAD_INPUT_SETTINGS
@given(case=bad_data_cases(X, Y))
def test_bad_data_is_rejected_by_name(small_model, case):
    name, value = case
    arguments = dict(x=X, y=Y)
    arguments[name] = value
    assert_rejected(lambda: tf_loop.train(small_model, arguments["x"], arguments["y"],
                                          loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.1),
                                          batch_size=32, epochs=1), name)


@BAD_INPUT_SETTINGS
@given(name=st.sampled_from(["batch_size", "epochs"]), value=not_a_positive_int)
def test_bad_sizes_are_rejected_by_name(small_model, name, value):
    if name == "epochs" and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return  # zero epochs is allowed: an empty log
    common = dict(batch_size=32, epochs=1)
    common[name] = value
    assert_rejected(lambda: tf_loop.train(small_model, X, Y, loss=keras.losses.MeanSquaredError(),
                                          optimizer=keras.optimizers.SGD(0.1), **common), name)


@pytest.mark.parametrize("case", ["frozen", "diverging"])
def test_matches_fit_on_a_frozen_model_and_on_a_diverging_loss(case):
    # fit() runs a model with no trainable weights, and trains on through inf and NaN losses
    # (it stops only with a TerminateOnNaN callback); the reference loop does the same.
    x, y = X[:20], Y[:20] * (1e30 if case == "diverging" else 1.0)
    lr = 10.0 if case == "diverging" else 0.1

    def make():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((X.shape[1],)), keras.layers.Dense(1, trainable=case != "frozen")])

    loop_model, fit_model = make(), make()
    log = tf_loop.train(loop_model, x, y, loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(lr),
                        batch_size=8, epochs=3)
    fit_model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit() warns that the frozen model has no trainable weights
        history = fit_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_array_equal(log.history["loss"], history["loss"])
    assert np.isfinite(history["loss"]).all() == (case == "frozen")


# --- every input, valid or not (issue 15) -----------------------------------------------------------

DATA_X = np.random.default_rng(1).uniform(-2, 2, size=(4, 3))
DATA_Y = np.random.default_rng(2).uniform(-2, 2, size=(4, 1))
# What tf_loop does not refuse yet (companion/tf_loop.py is not changed here): its _check_arguments
# casts x and y to float32 without check.within_range, so values beyond float32 train as inf; and
# it does not call check.keras_input, so x of the wrong sample shape fails inside Keras' traced step.


@functools.cache
def _arguments():
    linear = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    mse = keras.metrics.MeanSquaredError(name="mse")
    return {
        "model": objects_valid_and_invalid(valid={"linear": linear}, invalid={
            "unbuilt": keras.Sequential([keras.layers.Dense(1)]), "None": None, "a str": "linear"}),
        "loss": objects_valid_and_invalid(valid={"MeanSquaredError()": keras.losses.MeanSquaredError()}, invalid={
            "a function": keras.losses.mean_squared_error, "a str": "mse", "None": None}),
        "optimizer": objects_valid_and_invalid(valid={"SGD": "SGD"}, invalid={"a str": "sgd", "None": None}),
        "metrics": objects_valid_and_invalid(valid={"none": (), "mse": [mse]}, invalid={
            "a str": "mse", "a companion metric": [Mean(name="m")], "named loss": [keras.metrics.Mean(name="loss")]}),
        "x": arrays_valid_and_invalid(DATA_X, tensorflow=True), "y": arrays_valid_and_invalid(DATA_Y, tensorflow=True),
        "sample_weight": st.one_of(st.just(Case(None, "valid: None")),
                                   arrays_valid_and_invalid(np.array([1.0, 0.5, 0.0, 2.0]))),
        "batch_size": numbers_valid_and_invalid(2, huge=2**40), "epochs": numbers_valid_and_invalid(2, huge=3),
        "shuffle": numbers_valid_and_invalid(False), "seed": st.one_of(st.just(Case(None, "valid: None")),
                                                                        numbers_valid_and_invalid(3, huge=2**70)),
    }


@SLOW_INPUT_SETTINGS  # each run traces a tf.function
@given(data=st.data())
def test_inputs_train(data):
    cases = data.draw(at_most_one_broken(all_safe=4, **_arguments()))
    c = {name: case for name, case in cases.items()}
    values = {name: case.value for name, case in cases.items()}
    if values["optimizer"] == "SGD":
        values["optimizer"] = keras.optimizers.SGD(0.01)

    def expected():
        e = Expect()
        for name in ("model", "loss", "optimizer", "metrics"):
            e.object(name, c[name])
        x = e.array("x", c["x"], ndim=(2,))
        y = e.array("y", c["y"], ndim=range(1, 9))
        w = e.array("sample_weight", c["sample_weight"], optional=True)
        b, epochs = e.count("batch_size", c["batch_size"]), e.count("epochs", c["epochs"], minimum=0)
        e.flag("shuffle", c["shuffle"]), e.count("seed", c["seed"], minimum=0, optional=True)
        e.done()
        e.need(x.shape[1] == 3, "x")
        e.need(np.abs(x).max() <= np.finfo(np.float32).max, "x")  # float32 inside the model
        e.need(np.abs(y).max() <= np.finfo(np.float32).max, "y")
        e.need(len(y) == len(x), "y")
        e.need(w is None or (w.shape in ((len(x),), (len(x), 1)) and (w >= 0).all()), "sample_weight")
        e.done()
        keys = ["loss", *(m.name for m in c["metrics"].value)]
        return keys, [min(b, len(x) - start) for start in range(0, len(x), b)], epochs

    classify("tf_loop.train", lambda: tf_loop.train(**values), expected, agree=log_agrees)


@pytest.mark.parametrize("case", ["beyond float32", "input shape"])
def test_x_beyond_float32_or_of_the_wrong_shape_is_refused_by_name(case):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    x, message = (DATA_X * 1e300, "x must fit the model's float type") if case == "beyond float32" else (
        DATA_X[:, :2], r"x must have shape \(N, 3\)")
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's "overflow encountered in cast"
        tf_loop.train(model, x, DATA_Y, loss=keras.losses.MeanSquaredError(),
                      optimizer=keras.optimizers.SGD(0.01), batch_size=2, epochs=1)
