"""companion.keras_internals: each private Keras name reconcile_keras relies on still means
what it is used for. Run at the pinned Keras, at the declared minimum (``make test-minimum``,
Keras 3.2.1) and at Colab's (requirements/colab.txt)."""

from __future__ import annotations

import numpy as np
import pytest

import companion  # noqa: F401  (quiets TensorFlow's start-up logging before it is imported)
from companion import keras_internals as internals

X = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)


@pytest.fixture
def model(keras):
    keras.utils.set_random_seed(0)
    # No global seed generator, as in a fresh process (Keras 3.2's set_random_seed keeps one an
    # earlier test made, which nothing here draws from: it would not move).
    from keras.src.backend.common import global_state
    global_state.set_global_attribute("global_seed_generator", None)
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.1)),
                              keras.layers.BatchNormalization(), keras.layers.Dropout(0.5),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", metrics=["mae"],
                  weighted_metrics=["mse"])
    return model


def test_the_backend_is_named(keras):
    assert internals.backend() == keras.config.backend() == "tensorflow"


def test_compiled_loss_is_the_compiled_loss_without_penalties(model):
    prediction = internals.call(model, X, training=False)
    weights = np.linspace(0.5, 2.0, len(X))
    per_sample = np.mean((np.asarray(prediction) - Y) ** 2, axis=1)
    loss = internals.compiled_loss(model)
    np.testing.assert_allclose(float(loss(Y, prediction)), per_sample.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(loss(Y, prediction, weights)),
                               np.mean(weights * per_sample), rtol=1e-6)


def test_penalty_is_what_evaluate_adds(model):
    prediction = internals.call(model, X, training=False)
    penalty = float(internals.penalty(model))
    kernel = model.layers[0].kernel.numpy()
    np.testing.assert_allclose(penalty, 0.1 * np.sum(kernel ** 2), rtol=1e-6)
    evaluated = model.evaluate(X, Y, batch_size=len(X), verbose=0, return_dict=True)["loss"]
    mse = float(internals.compiled_loss(model)(Y, prediction))
    np.testing.assert_allclose(evaluated, mse + penalty, rtol=1e-6)


def test_metric_state_updates_leave_the_metrics_alone(model):
    internals.build_metrics(model, Y[:2], internals.call(model, X[:2], training=False))
    metrics = internals.compiled_metrics(model)
    live = [v.numpy().copy() for v in metrics.variables]
    state = internals.fresh_metric_state(metrics)
    prediction = internals.call(model, X, training=False)
    weights = np.linspace(0.5, 2.0, len(X)).astype(np.float32)
    state = internals.metric_update(metrics, state, Y, prediction, weights)
    result = internals.metric_result(metrics, state)
    errors = np.asarray(prediction)[:, 0] - Y[:, 0]
    np.testing.assert_allclose(result["mae"], np.mean(np.abs(errors)), rtol=1e-6)
    np.testing.assert_allclose(result["mse"], np.sum(weights * errors ** 2) / weights.sum(),
                               rtol=1e-6)
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(metrics.variables, live))


def test_seed_and_statistics_variables(model, keras):
    seeds = internals.seed_variables(model)
    assert seeds and all("seed" in (getattr(v, "path", "") + v.name) for v in seeds)
    statistics = internals.statistics_variables(model)
    assert [v.name for v in statistics] == ["moving_mean", "moving_variance"]
    # A training step moves the statistics and a dropout draw moves its seed state.
    before = [v.numpy().copy() for v in statistics + seeds]
    model.fit(X, Y, batch_size=len(X), epochs=1, verbose=0)
    after = [v.numpy() for v in statistics + seeds]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def test_step_hooks_see_each_step_and_go_away(model):
    seen = {"before": 0, "train": 0, "test": 0}

    def before_train(x, y, sample_weight):
        seen["before"] += 1

    def on_loss(training, x, y, y_pred, sample_weight, total):
        assert y_pred.shape[0] == y.shape[0] and total.shape == ()
        seen["train" if training else "test"] += 1

    with internals.step_hooks(model, before_train=before_train, on_loss=on_loss):
        model.fit(X, Y, batch_size=8, epochs=1, verbose=0, validation_data=(X, Y))
    # The hooks ran while fit traced its steps (at least once each), and are gone afterwards.
    assert seen["before"] >= 1 and seen["train"] >= 1 and seen["test"] >= 1
    assert not {"train_step", "test_step", "compute_loss"} & set(vars(model))
    counted = dict(seen)
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    assert seen == counted
