"""companion.reconcile_keras: explain_fit splits every epoch's logged loss into parts that add
up, each part checked against a computation of its own (closed forms at learning rate 0,
``evaluate()``, weights copied by hand at each epoch's end).

``residual_table()`` runs every configuration and returns the residuals as a printable table
(``print(residual_table())`` from a shell in tests/).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import assert_rejected

import companion  # noqa: F401  (quiets TensorFlow's start-up logging before it is imported)
from companion import reconcile
from companion.reconcile_keras import explain_fit

N, FEATURES = 200, 5  # 200 = 6 * 32 + 8: a short last batch at the default batch size
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, FEATURES)).astype(np.float32)
Y = (X @ RNG.normal(size=(FEATURES, 1)) + 0.3 * RNG.normal(size=(N, 1))).astype(np.float32)
LABELS = np.argmax(X[:, :3] + 0.5 * RNG.normal(size=(N, 3)), axis=1)  # 3 classes
WEIGHTS = RNG.uniform(0.2, 3.0, size=N)


def within_tolerance(result) -> bool:
    return abs(result.residual) <= 1e-6 * max(1.0, abs(result.logged))


def close(a, b, scale=1.0):
    return abs(a - b) <= 1e-6 * max(1.0, abs(scale))


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
        ("L1/L2 and activity regularization", keras_model(
            regularizer=keras.regularizers.L1L2(0.01, 0.01), activity=keras.regularizers.L2(0.01)),
         dict(optimizer=keras.optimizers.SGD(0.05), **mse), dict(epochs=2, shuffle=False)),
        ("class weights, accuracy", keras_model(dropout=0.2, classes=3),
         dict(optimizer=keras.optimizers.Adam(0.01),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["sparse_categorical_accuracy"],
              weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="w_acc")]),
         dict(epochs=2, class_weight={0: 1.0, 1: 2.5, 2: 0.5}, y=LABELS)),
        ("sample weights, short last batch, 3 epochs", keras_model(dropout=0.2),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse),
         dict(epochs=3, batch_size=24, sample_weight=WEIGHTS, epoch=1)),
        ("batch normalization, dropout, validation_split", keras_model(batch_norm=True,
                                                                        dropout=0.2),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse),
         dict(epochs=2, validation_split=0.25)),
        ("Gaussian noise, validation_data", keras_model(noise=0.3),
         dict(optimizer=keras.optimizers.Adam(0.01), **mse),
         dict(epochs=2, validation_data=(X[:50] + 0.5, Y[:50]))),
    ]


def keras_results() -> dict:
    results = {}
    for name, model, compile_arguments, arguments in keras_configurations():
        model.compile(**compile_arguments)
        arguments = {"y": Y, **arguments}
        results[name] = explain_fit(model, X, arguments.pop("y"), verbose=0, **arguments)
    return results


def residual_table() -> str:
    """Every configuration's logged loss and whether its residual is float rounding."""
    rows = [f"{'configuration':<50}{'logged':>10}  residual"]
    for name, r in keras_results().items():
        rows.append(f"{name:<50}{r.logged:>10.4f}  "
                    f"{reconcile._residual_words(r.residual, r.logged)}")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def keras_runs(keras):
    return keras_results()


def by_hand(model, x=X, y=Y, loss=None):
    """The model's mean loss in inference mode, computed here from its predictions."""
    import keras

    prediction = model.predict(x, verbose=0, batch_size=len(x))
    loss = loss or keras.losses.MeanSquaredError()
    return float(loss(y, prediction))


# --- the parts add up, every epoch --------------------------------------------------------------


def test_every_epoch_adds_up(keras_runs):
    for name, r in keras_runs.items():
        assert len(r.epochs) == len(r.history.history["loss"]), name
        for epoch in r.epochs:
            assert within_tolerance(epoch), f"{name}: epoch {epoch.epoch}"
            assert epoch.logged == r.history.history["loss"][epoch.epoch], name
            assert [p for p in reconcile.PARTS if p in epoch.parts] == list(epoch.parts)
            assert set(reconcile.CORE_PARTS) <= set(epoch.parts), name
            for metric_name, metric in epoch.metrics.items():
                assert within_tolerance(metric), (name, metric_name)
                assert metric.logged == r.history.history[metric_name][epoch.epoch]
                assert "penalty" not in metric.parts
    assert keras_runs["sample weights, short last batch, 3 epochs"].epoch == 1
    assert set(keras_runs["class weights, accuracy"].metrics) == {
        "sparse_categorical_accuracy", "w_acc"}


def test_each_step_record_is_fits_own_step(keras_runs):
    # The running loss fit passed to on_train_batch_end, rebuilt from the recorded step
    # losses; the step sizes are fit's batches.
    for name, r in keras_runs.items():
        sizes = np.array([s.size for s in r.steps], dtype=np.float64)
        rebuilt = np.cumsum(sizes * [s.replayed for s in r.steps]) / np.cumsum(sizes)
        np.testing.assert_allclose(rebuilt, [s.running for s in r.steps], rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    assert [s.size for s in keras_runs["sample weights, short last batch, 3 epochs"].steps] \
        == [24] * 8 + [8]
    assert sum(s.size for s in
               keras_runs["batch normalization, dropout, validation_split"].steps) == 150


def test_parts_are_present_where_their_cause_is(keras_runs):
    regularized = keras_runs["L1/L2 and activity regularization"]
    assert regularized.parts["penalty"] > 1e-3
    assert regularized.parts["training-mode layers"] == 0
    assert abs(keras_runs["class weights, accuracy"].parts["sample weighting"]) > 1e-3
    normalized = keras_runs["batch normalization, dropout, validation_split"]
    assert "moving statistics" in normalized.parts
    assert abs(normalized.parts["moving statistics"]) > 1e-5
    assert "moving statistics" not in regularized.parts


def test_the_table_names_every_part_and_its_number(keras_runs):
    r = keras_runs["sample weights, short last batch, 3 epochs"]
    text = str(r)
    assert f"logged {r.logged:.4f}" in text and f"evaluated {r.evaluated:.4f}" in text
    positions = []
    for part, value in r.parts.items():
        line = f"{part:<32}{value:+.4f}"
        assert line in text, f"{line!r} not in\n{text}"
        positions.append((text.index(line), -abs(value)))
    assert [p for _, p in sorted(positions)] == sorted(p for _, p in positions)  # largest first
    assert "below 1e-06 x max(1, |logged|) (float rounding)" in text
    assert max(len(line) for line in text.splitlines()) <= 88
    assert "mae of epoch 1" in text and "mse of epoch 1" in text


# --- each part against its own computation ------------------------------------------------------


def test_parts_at_learning_rate_zero(keras):
    model = keras_model(regularizer=keras.regularizers.L2(0.05))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    penalty = sum(float(np.sum(loss)) for loss in model.losses)  # of the initial weights
    per_sample = np.mean((model.predict(X, verbose=0) - Y) ** 2, axis=1, dtype=np.float64)
    r = explain_fit(model, X, Y, sample_weight=WEIGHTS, epochs=2, verbose=0)
    assert close(r.parts["penalty"], penalty, r.logged)
    assert close(r.parts["sample weighting"], np.mean(WEIGHTS * per_sample) - np.mean(per_sample),
                 r.logged)
    assert r.parts["training-mode layers"] == 0  # no dropout: both modes compute the same
    assert close(r.parts["weights moved during the epoch"], 0.0)
    assert close(r.evaluated, np.mean(per_sample), r.logged)
    assert close(r.end_penalty, penalty, r.logged) and not r.evaluated_includes_penalty
    evaluated = model.evaluate(X, Y, verbose=0)  # evaluate() adds the penalty
    assert close(r.evaluated + r.end_penalty, evaluated, evaluated)


def test_dropout_gap_at_learning_rate_zero(keras):
    model = keras_model(dropout=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    inference = by_hand(model)
    r = explain_fit(model, X, Y, epochs=1, verbose=0)
    # fit's logged loss is the training-mode loss of the unchanged weights: the whole gap to the
    # inference-mode loss is dropout's.
    assert r.parts["training-mode layers"] > 1e-2
    assert close(r.parts["training-mode layers"], r.logged - inference, r.logged)
    assert r.parts["penalty"] == r.parts["sample weighting"] == 0
    assert close(r.parts["weights moved during the epoch"], 0.0)


def test_each_epoch_is_measured_at_its_own_end(keras):
    # Defect: epoch 0's "weights moved" used the weights at the end of training. Weights copied
    # by hand at each epoch's end, evaluated by hand, are each epoch's evaluated.
    snapshots = []
    model = keras_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    copier = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()))
    r = explain_fit(model, X, Y, epochs=3, epoch=0, verbose=0, callbacks=[copier])
    assert r.epoch == 0
    for epoch, weights in zip(r.epochs, snapshots):
        model.set_weights(weights)
        assert close(epoch.evaluated, by_hand(model), epoch.evaluated)
    first = r.epochs[0]
    inference = np.array([s.inference for s in first.steps])
    sizes = np.array([s.size for s in first.steps], dtype=float)
    assert close(first.parts["weights moved during the epoch"],
                 sizes @ inference / N - first.evaluated, first.logged)
    assert first.evaluated != r.epochs[-1].evaluated


def test_early_stopping_keeps_every_epoch_and_the_history(keras):
    # Defect: with EarlyStopping the default epoch=-1 trained the whole run, then raised and
    # lost the History. restore_best_weights puts other weights back after the last epoch:
    # each epoch is still measured at its own end.
    snapshots = []
    model = keras_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0,
                                         restore_best_weights=True)
    copier = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()))
    r = explain_fit(model, X, Y, epochs=20, verbose=0, callbacks=[stop, copier])
    ran = len(r.history.history["loss"])
    assert 1 < ran < 20 and len(r.epochs) == ran and r.epoch == ran - 1
    for epoch, weights in zip(r.epochs, snapshots):
        assert within_tolerance(epoch)
        model.set_weights(weights)
        assert close(epoch.evaluated, by_hand(model), epoch.evaluated)
    with pytest.raises(reconcile.ReconciliationError, match="did not run") as error:
        explain_fit(keras_model_compiled(keras), X, Y, epochs=20, epoch=15, verbose=0,
                    callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=0,
                                                             min_delta=10.0)])
    assert len(error.value.result.epochs) == len(error.value.result.history.history["loss"])


def keras_model_compiled(keras):
    model = keras_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def test_moving_statistics_at_learning_rate_zero(keras):
    # The weights do not move; batch normalization's moving statistics do. By hand: each
    # step's statistics and batch recorded, then the last weights evaluated on each batch with
    # them and with the last ones.
    model = keras_model(batch_norm=True)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    norm = next(layer for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization))
    statistics = []
    recorder = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: statistics.append(
        (norm.moving_mean.numpy(), norm.moving_variance.numpy())))
    r = explain_fit(model, X, Y, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    assert close(r.parts["weights moved during the epoch"], 0.0)
    last = (norm.moving_mean.numpy(), norm.moving_variance.numpy())
    gaps = []
    for start, (mean, variance) in zip(range(0, N, 32), statistics):
        rows = slice(start, start + 32)
        norm.moving_mean.assign(mean)
        norm.moving_variance.assign(variance)
        with_step = by_hand(model, X[rows], Y[rows])
        norm.moving_mean.assign(last[0])
        norm.moving_variance.assign(last[1])
        gaps.append(len(X[rows]) * (with_step - by_hand(model, X[rows], Y[rows])))
    assert close(r.parts["moving statistics"], sum(gaps) / N, r.logged)
    assert abs(r.parts["moving statistics"]) > 1e-3 and within_tolerance(r)


def test_label_smoothing_is_its_own_part(keras):
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    one_hot = np.eye(3, dtype=np.float32)[LABELS]
    model = keras_model(classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=smoothed)
    logits = model.predict(X, verbose=0)
    plain = float(keras.losses.CategoricalCrossentropy(from_logits=True)(one_hot, logits))
    gap = float(smoothed(one_hot, logits)) - plain
    r = explain_fit(model, X, one_hot, verbose=0)
    assert close(r.parts["training loss vs criterion"], gap, r.logged) and abs(gap) > 1e-3
    assert close(r.evaluated, plain, plain) and "label smoothing" in r.criterion
    assert within_tolerance(r)


def test_validation_gap(keras_runs, keras):
    for name in ("batch normalization, dropout, validation_split",
                 "Gaussian noise, validation_data"):
        r = keras_runs[name]
        for epoch in r.epochs:
            gap = epoch.validation
            assert gap.val_loss == r.history.history["val_loss"][epoch.epoch], name
            assert abs(gap.residual) <= 1e-6 * max(1.0, abs(gap.loss)), name
            assert close(sum(gap.parts.values()) + gap.residual, gap.loss - gap.val_loss)
            assert gap.parts[reconcile.DATA_PART] == epoch.evaluated - gap.validation.evaluated
    # The validation pass's evaluated, by hand: the model after the last epoch on the
    # validation data (no moving statistics or dropout in inference mode).
    model = keras_model(noise=0.3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    r = explain_fit(model, X, Y, epochs=1, validation_data=(X[:50] + 0.5, Y[:50]), verbose=0)
    assert close(r.validation.validation.evaluated, by_hand(model, X[:50] + 0.5, Y[:50]), 1.0)
    assert close(r.evaluated, by_hand(model), r.evaluated)
    assert abs(r.validation.parts["training-mode layers"]) > 1e-3  # noise, training only


# --- training is untouched ----------------------------------------------------------------------


def test_explain_fit_trains_exactly_as_fit(keras):
    def run(explain):
        model = keras_model(batch_norm=True, dropout=0.3)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        keras.utils.set_random_seed(7)  # fit's shuffling draws from it
        arguments = dict(batch_size=32, epochs=2, sample_weight=WEIGHTS, verbose=0,
                         validation_split=0.2)
        if explain:
            history = explain_fit(model, X, Y, epoch=1, **arguments).history
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
    # and the model trains on afterwards as a plain model does (the step wrappers are gone)
    assert not {"train_step", "test_step", "compute_loss"} & set(vars(model))
    assert model.train_function is None


def test_user_callbacks_still_run(keras):
    seen = []
    model = keras_model_compiled(keras)
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    explain_fit(model, X, Y, callbacks=[callback], verbose=0)
    assert seen == list(range(7))


def test_a_layer_drawing_from_tensorflows_own_generator_is_explained(keras):
    # The step's own training-mode prediction is measured, not replayed: draws that no seed
    # state governs are no obstacle.
    import tensorflow as tf

    class StatefulNoise(keras.layers.Layer):  # TensorFlow's global RNG, not a SeedGenerator
        def call(self, inputs, training=False):
            return inputs + tf.random.normal(tf.shape(inputs)) if training else inputs

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(4),
                              StatefulNoise(name="my_noise"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    inference = by_hand(model)
    r = explain_fit(model, X, Y, verbose=0)
    assert within_tolerance(r)
    assert close(r.parts["training-mode layers"], r.logged - inference, r.logged)


def test_xla_compiled_steps_are_explained(keras):
    # Defect: on a GPU, Keras' default jit_compile="auto" resolves to True, and explain_fit
    # refused it as "compiled with jit_compile=True". The measurements run inside the XLA step.
    model = keras_model(dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.jit_compile = True  # what "auto" resolves to on a GPU
    if not model.jit_compile:
        pytest.skip("this Keras cannot compile the model with XLA here")
    r = explain_fit(model, X, Y, epochs=2, verbose=0)
    assert within_tolerance(r) and any("XLA" in note for note in r.notes)


# --- what it cannot explain is refused, by name, before training --------------------------------


@pytest.fixture
def compiled(keras):
    return keras_model_compiled(keras)


def test_refuses_models_it_cannot_measure(keras):
    uncompiled = keras_model()
    assert_rejected(lambda: explain_fit(uncompiled, X, Y), "compile")
    assert_rejected(lambda: explain_fit("model", X, Y), "model")
    summed = keras_model()
    summed.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError(reduction="sum"))
    assert_rejected(lambda: explain_fit(summed, X, Y), "reduction")
    grouped = keras_model()
    grouped.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    assert_rejected(lambda: explain_fit(grouped, X, Y), "steps_per_execution=1")
    inputs = keras.Input((FEATURES,))
    two = keras.Model(inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)])
    two.compile(optimizer="sgd", loss=["mse", "mse"])
    assert_rejected(lambda: explain_fit(two, X, [Y, Y]), "output")

    class Custom(keras.Sequential):
        def train_step(self, data):
            return super().train_step(data)

    custom = Custom([keras.Input((FEATURES,)), keras.layers.Dense(1)])
    custom.compile(optimizer="sgd", loss="mse")
    assert_rejected(lambda: explain_fit(custom, X, Y), "train_step")


def test_refuses_data_and_arguments_it_cannot_measure(keras, compiled):
    import tensorflow as tf

    before = [w.copy() for w in compiled.get_weights()]
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
    assert_rejected(lambda: explain_fit(compiled, dataset, None), "x")
    assert_rejected(lambda: explain_fit(compiled, (row for row in X), Y), "x")
    assert_rejected(lambda: explain_fit(compiled, X, Y[:10]), "y")
    assert_rejected(lambda: explain_fit(compiled, X, Y, steps_per_epoch=3), "steps_per_epoch")
    assert_rejected(lambda: explain_fit(compiled, X, Y, batchsize=3), "batchsize")
    assert_rejected(lambda: explain_fit(compiled, X, Y, batch_size=0), "batch_size")
    assert_rejected(lambda: explain_fit(compiled, X, Y, sample_weight=WEIGHTS[:5]),
                    "sample_weight")
    assert_rejected(lambda: explain_fit(compiled, X, Y, criterion="no such loss"), "criterion")
    for epoch in (2, -3, 0.5, True):
        assert_rejected(lambda: explain_fit(compiled, X, Y, epochs=2, epoch=epoch), "epoch")
    assert_rejected(lambda: explain_fit(compiled, X, Y, epochs=2, initial_epoch=2), "epochs")
    for now, then in zip(compiled.get_weights(), before):  # refused before any training
        np.testing.assert_array_equal(now, then)


def test_refuses_another_keras_backend_by_name_before_training(tmp_path):
    # Defect: with KERAS_BACKEND=torch explain_fit crashed mid-training with a raw error.
    pytest.importorskip("torch")
    code = textwrap.dedent("""
        import numpy as np, keras
        from companion.reconcile_keras import explain_fit
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        before = model.get_weights()
        try:
            explain_fit(model, np.ones((8, 3)), np.ones((8, 1)), verbose=0)
        except ValueError as error:
            print(str(error))
        print(all((a == b).all() for a, b in zip(before, model.get_weights())))
    """)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert "KERAS_BACKEND='torch'" in output.stdout, output.stderr[-2000:]
    assert "Recorder" in output.stdout and output.stdout.strip().endswith("True")


def test_a_residual_over_the_tolerance_is_an_error(keras, compiled, monkeypatch):
    monkeypatch.setattr(reconcile, "TOLERANCE", -1.0)  # every residual, even 0, is too large
    with pytest.raises(reconcile.ReconciliationError, match="could not reconcile") as error:
        explain_fit(compiled, X, Y, verbose=0)
    assert error.value.result.logged == error.value.result.history.history["loss"][-1]
