"""companion.reconcile_keras splits the loss fit logged into parts that add up.

``residual_table()`` runs every configuration of both frameworks and returns the residuals as a
printable table (``print(residual_table())`` from a shell in tests/).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_rejected

import companion  # noqa: F401  (quiets TensorFlow's start-up logging before it is imported)
from companion import reconcile, reconcile_keras

N, FEATURES = 200, 5  # 200 = 6 * 32 + 8: a short last batch at the default batch size
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, FEATURES)).astype(np.float32)
Y = (X @ RNG.normal(size=(FEATURES, 1)) + 0.3 * RNG.normal(size=(N, 1))).astype(np.float32)
LABELS = np.argmax(X[:, :3] + 0.5 * RNG.normal(size=(N, 3)), axis=1)  # 3 classes
WEIGHTS = RNG.uniform(0.2, 3.0, size=N)


def within_tolerance(result) -> bool:
    return abs(result.residual) < 1e-6 * max(1.0, abs(result.logged))


# --- Keras: the configurations ------------------------------------------------------------------


def keras_model(*, dropout=0.0, regularizer=None, activity=None, batch_norm=False, noise=0.0,
                classes=0, seed=1):
    import keras

    keras.utils.set_random_seed(seed)  # the same initial weights and seed states every time
    layers = [keras.Input((FEATURES,))]
    if noise:
        layers.append(keras.layers.GaussianNoise(noise))
    layers.append(keras.layers.Dense(16, activation="relu", kernel_regularizer=regularizer,
                                     activity_regularizer=activity))
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes or 1))
    return keras.Sequential(layers)


def keras_configurations():
    """(name, model, compile arguments, explain_fit arguments); fit shuffles unless told not to."""
    import keras

    mse = dict(loss="mse", metrics=["mae"], weighted_metrics=["mse"])
    return [
        ("Adam, dropout", keras_model(dropout=0.3),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse), dict(epochs=2)),
        ("L1/L2 and activity regularization", keras_model(
            regularizer=keras.regularizers.L1L2(0.01, 0.01), activity=keras.regularizers.L2(0.01)),
         dict(optimizer=keras.optimizers.SGD(0.05), **mse), dict(epochs=2, shuffle=False)),
        ("class weights, accuracy", keras_model(dropout=0.2, classes=3),
         dict(optimizer=keras.optimizers.Adam(0.01),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["sparse_categorical_accuracy"],
              weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="w_acc")]),
         dict(epochs=2, class_weight={0: 1.0, 1: 2.5, 2: 0.5}, y=LABELS)),
        ("sample weights, short last batch", keras_model(dropout=0.2),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse),
         dict(epochs=2, batch_size=24, sample_weight=WEIGHTS)),
        ("4 epochs, shuffle=True, explain epoch 1", keras_model(dropout=0.2),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse), dict(epochs=4, epoch=1)),
        ("batch normalization, dropout", keras_model(batch_norm=True, dropout=0.2),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse), dict(epochs=2)),
        ("Gaussian noise, validation_split", keras_model(noise=0.3),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse),
         dict(epochs=2, validation_split=0.25)),
    ]


def keras_results() -> dict:
    results = {}
    for name, model, compile_arguments, arguments in keras_configurations():
        model.compile(**compile_arguments)
        arguments = {"y": Y, **arguments}
        results[name] = reconcile.explain_fit(model, X, arguments.pop("y"), verbose=0, **arguments)
    return results


def residual_table() -> str:
    """Every configuration's logged loss and residual, both frameworks, as a printable table."""
    rows = [f"{'framework':<10}{'configuration':<42}{'logged':>10}{'residual':>12}"
            f"{'worst metric':>14}"]
    for framework, results in (("Keras", keras_results()),):
        for name, r in results.items():
            worst = max((abs(m.residual) for m in r.metrics.values()), default=None)
            rows.append(f"{framework:<10}{name:<42}{r.logged:>10.4f}{r.residual:>12.2e}"
                        + ("             -" if worst is None else f"{worst:>14.2e}"))
    return "\n".join(rows)


@pytest.fixture(scope="module")
def keras_runs(keras):
    return keras_results()


@pytest.fixture(scope="module")
def test_keras_residuals_are_rounding(keras_runs):
    assert len(keras_runs) >= 6
    for name, r in keras_runs.items():
        print(f"Keras   {name:<42} logged {r.logged:.6f} residual {r.residual:+.2e}")
        assert list(r.parts) == list(reconcile.CORE_PARTS), name
        assert r.residual == r.logged - r.evaluated - sum(r.parts.values()), name
        assert within_tolerance(r), f"{name}: residual {r.residual}"
        for metric in r.metrics.values():
            assert within_tolerance(metric), f"{name}, {metric.name}: residual {metric.residual}"


def test_logged_is_the_history_of_the_explained_epoch(keras_runs):
    for name, r in keras_runs.items():
        assert r.logged == r.history.history["loss"][r.epoch], name
        for metric_name, metric in r.metrics.items():
            assert metric.logged == r.history.history[metric_name][r.epoch], (name, metric_name)
            assert "penalty" not in metric.parts
    assert keras_runs["4 epochs, shuffle=True, explain epoch 1"].epoch == 1
    assert keras_runs["Adam, dropout"].epoch == 1  # -1 of 2 epochs
    assert set(keras_runs["class weights, accuracy"].metrics) == {"sparse_categorical_accuracy",
                                                                  "w_acc"}


def test_keras_replay_reproduces_each_step_of_fit(keras_runs):
    # The running loss fit passed to on_train_batch_end, rebuilt from the replayed step losses
    # (each at its own w_t and dropout/noise draws): a wrong mask would be off by about 1e-2.
    for name, r in keras_runs.items():
        sizes = np.array([s.size for s in r.steps], dtype=np.float64)
        rebuilt = np.cumsum(sizes * [s.replayed for s in r.steps]) / np.cumsum(sizes)
        np.testing.assert_allclose(rebuilt, [s.running for s in r.steps], rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    assert [s.size for s in keras_runs["sample weights, short last batch"].steps] == [24] * 8 + [8]
    assert sum(s.size for s in keras_runs["Gaussian noise, validation_split"].steps) == 150


def test_keras_training_mode_part_is_real(keras_runs):
    # Not vacuous: with dropout the replayed training-mode loss differs from inference mode.
    assert abs(keras_runs["Adam, dropout"].parts["training-mode layers"]) > 1e-3
    assert keras_runs["L1/L2 and activity regularization"].parts["penalty"] > 1e-3
    assert keras_runs["L1/L2 and activity regularization"].parts["training-mode layers"] == 0
    assert abs(keras_runs["class weights, accuracy"].parts["sample weighting"]) > 1e-3


def test_the_table_names_every_part_and_its_number(keras_runs):
    for r in (keras_runs["sample weights, short last batch"],):
        text = str(r)
        assert f"logged {r.logged:.4f}" in text and f"evaluated {r.evaluated:.4f}" in text
        positions = []
        for part, value in r.parts.items():
            line = f"{part:<32}{value:+.4f}"
            assert line in text, f"{line!r} not in\n{text}"
            positions.append((text.index(line), -abs(value)))
        assert [p for _, p in sorted(positions)] == sorted(p for _, p in positions)  # largest first
        assert "residual" in text
        assert max(len(line) for line in text.splitlines()) <= 88
    keras_text = str(keras_runs["sample weights, short last batch"])
    assert "mae of epoch 1" in keras_text and "mse of epoch 1" in keras_text


# --- with learning rate 0 every part has a closed form ------------------------------------------


def test_keras_parts_at_learning_rate_zero(keras):
    model = keras_model(regularizer=keras.regularizers.L2(0.05))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    penalty = sum(float(np.sum(loss)) for loss in model.losses)  # of the initial weights
    per_sample = np.mean((model.predict(X, verbose=0) - Y) ** 2, axis=1, dtype=np.float64)
    r = reconcile.explain_fit(model, X, Y, sample_weight=WEIGHTS, epochs=2, verbose=0)
    scale = 1e-6 * max(1.0, abs(r.logged))
    np.testing.assert_allclose(r.parts["penalty"], penalty, rtol=1e-6)
    np.testing.assert_allclose(r.parts["sample weighting"],
                               np.mean(WEIGHTS * per_sample) - np.mean(per_sample), atol=scale)
    assert r.parts["training-mode layers"] == 0  # no dropout: both modes compute the same
    assert r.parts["weights moved during the epoch"] == 0
    np.testing.assert_allclose(r.evaluated, np.mean(per_sample), atol=scale)


def assert_only_dropout_gap(r, inference):
    """With frozen weights and no penalty or weights, the whole gap between the logged
    (training-mode) loss and the inference-mode loss is dropout's."""
    assert r.parts["training-mode layers"] > 1e-2
    np.testing.assert_allclose(r.parts["training-mode layers"], r.logged - inference,
                               atol=1e-6 * max(1.0, abs(r.logged)))
    assert r.parts["penalty"] == r.parts["sample weighting"] == 0
    assert r.parts["weights moved during the epoch"] == 0


def test_keras_dropout_gap_at_learning_rate_zero(keras):
    model = keras_model(dropout=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    inference = np.mean((model.predict(X, verbose=0) - Y) ** 2, dtype=np.float64)
    r = reconcile.explain_fit(model, X, Y, epochs=1, verbose=0)
    # fit's logged loss is the training-mode loss of the unchanged weights: the whole gap to the
    # inference-mode loss is dropout's.
    assert_only_dropout_gap(r, inference)


def test_explain_fit_trains_exactly_as_fit(keras):
    def run(explain):
        model = keras_model(batch_norm=True, dropout=0.3)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        keras.utils.set_random_seed(7)  # fit's shuffling draws from it
        arguments = dict(batch_size=32, epochs=3, sample_weight=WEIGHTS, verbose=0)  # shuffles
        if explain:
            history = reconcile.explain_fit(model, X, Y, epoch=1, **arguments).history
        else:
            history = model.fit(X, Y, **arguments)
        state = [v.numpy() for v in [*model.variables, *model.optimizer.variables]]
        return history, state, model

    fit_history, fit_state, _ = run(explain=False)
    history, state, model = run(explain=True)
    assert isinstance(history, keras.callbacks.History)
    assert history.history == fit_history.history
    assert len(state) == len(fit_state)
    for ours, theirs in zip(state, fit_state):  # weights, seed states and optimizer, bit for bit
        np.testing.assert_array_equal(ours, theirs)
    # and the model trains on afterwards as a plain model does (the step wrapper is gone)
    assert "train_step" not in vars(model) and model.train_function is None


def test_user_callbacks_still_run(keras):
    seen = []
    model = keras_model()
    model.compile(optimizer="sgd", loss="mse")
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    reconcile.explain_fit(model, X, Y, callbacks=[callback], verbose=0)
    assert seen == list(range(7))


# --- what it cannot explain is refused, by name -------------------------------------------------


@pytest.fixture
def compiled(keras):
    model = keras_model()
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_refuses_models_it_cannot_replay(keras):
    uncompiled = keras_model()
    assert_rejected(lambda: reconcile.explain_fit(uncompiled, X, Y), "compile")
    assert_rejected(lambda: reconcile.explain_fit("model", X, Y), "model")
    summed = keras_model()
    summed.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError(reduction="sum"))
    assert_rejected(lambda: reconcile.explain_fit(summed, X, Y), "reduction")
    xla = keras_model()
    with warnings.catch_warnings():  # "Model doesn't support jit_compile=True" where it cannot
        warnings.simplefilter("ignore", UserWarning)
        xla.compile(optimizer="sgd", loss="mse", jit_compile=True)
    if xla.jit_compile:  # Keras turns XLA off by itself where it cannot use it; then fit may run
        assert_rejected(lambda: reconcile.explain_fit(xla, X, Y), "jit_compile")
    grouped = keras_model()
    grouped.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    assert_rejected(lambda: reconcile.explain_fit(grouped, X, Y), "steps_per_execution")
    inputs = keras.Input((FEATURES,))
    two = keras.Model(inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)])
    two.compile(optimizer="sgd", loss=["mse", "mse"])
    assert_rejected(lambda: reconcile.explain_fit(two, X, [Y, Y]), "output")


def test_refuses_data_and_arguments_it_cannot_replay(keras, compiled):
    import tensorflow as tf

    before = [w.copy() for w in compiled.get_weights()]
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
    assert_rejected(lambda: reconcile.explain_fit(compiled, dataset, None), "x")
    assert_rejected(lambda: reconcile.explain_fit(compiled, (row for row in X), Y), "x")
    assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y[:10]), "y")
    assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y, steps_per_epoch=3),
                    "steps_per_epoch")
    assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y, batchsize=3), "batchsize")
    assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y, batch_size=0), "batch_size")
    assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y, sample_weight=WEIGHTS[:5]),
                    "sample_weight")
    for epoch in (2, -3, 0.5, True):
        assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y, epochs=2, epoch=epoch),
                        "epoch")
    assert_rejected(lambda: reconcile.explain_fit(compiled, X, Y, epochs=2, initial_epoch=2),
                    "epochs")
    for now, then in zip(compiled.get_weights(), before):  # refused before any training
        np.testing.assert_array_equal(now, then)


def test_refuses_a_layer_whose_draws_cannot_be_replayed(keras):
    import tensorflow as tf

    class StatefulNoise(keras.layers.Layer):  # TensorFlow's global RNG, not a SeedGenerator
        def call(self, inputs, training=False):
            return inputs + tf.random.normal(tf.shape(inputs)) if training else inputs

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(4),
                              StatefulNoise(name="my_noise"), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="'my_noise'"):
        reconcile.explain_fit(model, X, Y, verbose=0)
    assert "train_step" not in vars(model)


def test_a_residual_over_the_tolerance_is_an_error(keras, compiled, monkeypatch):
    monkeypatch.setattr(reconcile, "TOLERANCE", -1.0)  # every residual, even 0, is too large
    with pytest.raises(reconcile.ReconciliationError, match="could not reconcile") as error:
        reconcile.explain_fit(compiled, X, Y, verbose=0)
    assert error.value.result.logged == error.value.result.history.history["loss"][-1]


