"""A reference training loop for Keras 3 models that logs exactly what ``model.fit`` logs.

Read :func:`train` top to bottom: it is the whole of what ``fit`` does to produce the numbers
in ``History.history``, minus callbacks and distribution. Every step:

1. predict the batch in training mode, *before* the weights change;
2. loss = the Keras loss on the batch + the regularization penalties (``model.losses``);
3. one optimizer update;
4. the epoch's running loss is a mean of batch losses weighted by the batch *size*, and each
   metric keeps a running per-sample total and count over the epoch.

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
>>> log = train(model, np.ones((10, 3)), np.ones((10, 1)), loss=keras.losses.MeanSquaredError(),
...             optimizer=keras.optimizers.SGD(0.1), batch_size=4, epochs=2)
>>> sorted(log.history)
['loss']
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check
from companion.batching import batch_indices
from companion.training_log import TrainingLog
from companion.versions import require

__all__ = ["train"]


def train(
    model,
    x,
    y,
    *,
    loss,
    optimizer,
    batch_size: int,
    epochs: int,
    metrics=(),
    weighted_metrics=(),
    sample_weight=None,
    shuffle: bool = False,
    seed: int | None = None,
) -> TrainingLog:
    """Train ``model`` on NumPy arrays the way ``model.fit`` does, logging every step.

    ``loss`` is a Keras loss object, ``optimizer`` a Keras optimizer; ``metrics`` and
    ``weighted_metrics`` are Keras metric objects, keyed in the history by their ``name``.
    As in ``model.compile``, ``sample_weight`` weights the loss and the ``weighted_metrics``
    but not the plain ``metrics``. The model must be built (give it an ``Input``).

    With ``shuffle=False`` the history equals ``model.fit(..., shuffle=False).history`` for the
    same initial weights. ``shuffle=True`` draws a new order every epoch from ``seed``; it
    cannot reproduce ``fit``'s own shuffling.
    """
    require("keras")
    import keras
    import tensorflow as tf

    _check_model(model, keras)
    _check_keras_object("loss", loss, keras.losses.Loss)
    _check_keras_object("optimizer", optimizer, keras.optimizers.Optimizer)
    metrics = _check_metrics("metrics", metrics, keras)
    weighted_metrics = _check_metrics("weighted_metrics", weighted_metrics, keras)
    batch_size = check.positive_int("batch_size", batch_size)
    epochs = check.non_negative_int("epochs", epochs)
    shuffle = check.boolean("shuffle", shuffle)
    seed = check.optional_seed("seed", seed)
    x = check.data_array("x", x)
    y = check.data_array("y", y, length=len(x))
    sample_weight = check.sample_weights("sample_weight", sample_weight, length=len(x))

    # fit() converts float inputs to Keras' float type (float32) before the first step.
    floatx = keras.config.floatx()
    x, y = (a.astype(floatx) if np.issubdtype(a.dtype, np.floating) else a for a in (x, y))
    if sample_weight is not None:
        sample_weight = sample_weight.astype(floatx)

    loss_tracker = keras.metrics.Mean(name="loss")  # what fit() calls the "loss" in its logs
    trackers = [loss_tracker, *metrics, *weighted_metrics]
    # A second, fresh copy of each tracker measures the current batch alone.
    batch_trackers = [type(m).from_config(m.get_config()) for m in trackers]
    keys = tuple(m.name for m in trackers)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def train_step(x_batch, y_batch, w_batch):
        with tf.GradientTape() as tape:
            y_pred = model(x_batch, training=True)
            batch_loss = loss(y_batch, y_pred, sample_weight=w_batch)
            if model.losses:  # weight penalties (e.g. L2) belong to the loss fit() reports
                batch_loss = batch_loss + tf.add_n(model.losses)
        gradients = tape.gradient(batch_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        # y_pred was computed before apply_gradients: the logged numbers describe the weights
        # as they were at the start of the step.
        size = tf.shape(x_batch)[0]
        for tracker in (loss_tracker, batch_trackers[0]):
            tracker.update_state(batch_loss, sample_weight=size)
        for m, batch_m in zip(metrics, batch_trackers[1 : 1 + len(metrics)]):
            m.update_state(y_batch, y_pred)
            batch_m.update_state(y_batch, y_pred)
        for m, batch_m in zip(weighted_metrics, batch_trackers[1 + len(metrics) :]):
            m.update_state(y_batch, y_pred, sample_weight=w_batch)
            batch_m.update_state(y_batch, y_pred, sample_weight=w_batch)
        return [m.result() for m in batch_trackers], [m.result() for m in trackers]

    log = TrainingLog(keys=keys)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        for m in trackers:
            m.reset_state()  # fit() resets its metrics at the start of every epoch
        order = rng.permutation(len(x)) if shuffle else None
        for step, idx in enumerate(batch_indices(len(x), batch_size, order=order)):
            for m in batch_trackers:
                m.reset_state()
            w_batch = None if sample_weight is None else tf.constant(sample_weight[idx])
            batch_values, running_values = train_step(tf.constant(x[idx]), tf.constant(y[idx]), w_batch)
            log.add_batch(
                epoch=epoch,
                step=step,
                size=len(idx),
                batch=dict(zip(keys, _floats(batch_values))),
                running=dict(zip(keys, _floats(running_values))),
            )
        log.end_epoch(log.batches[-1].running)
    return log


def _floats(tensors) -> list[float]:
    return [float(t) for t in tensors]


def _check_model(model, keras) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError("model must be built before training: give it a keras.Input or call build()")


def _check_keras_object(name: str, value, cls) -> None:
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__module__.split('.')[0]}.{cls.__qualname__} "
                        f"instance, got {type(value).__name__}: {value!r}")


def _check_metrics(name: str, values, keras) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of keras.metrics.Metric objects, got {values!r}")
    values = list(values)
    for value in values:
        if not isinstance(value, keras.metrics.Metric):
            raise TypeError(f"{name} must hold keras.metrics.Metric objects (not strings), "
                            f"got {type(value).__name__}: {value!r}")
    return values
