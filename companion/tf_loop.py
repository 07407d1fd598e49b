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
from companion.batching import batches
from companion.training_log import TrainingLog
from companion.versions import require

__all__ = ["train"]


def train(model, x, y, *, loss, optimizer, batch_size: int, epochs: int, metrics=(),
          weighted_metrics=(), sample_weight=None, shuffle: bool = False,
          seed: int | None = None) -> TrainingLog:
    """Train ``model`` on NumPy arrays the way ``model.fit`` does, logging every step.

    ``loss`` is a Keras loss object, ``optimizer`` a Keras optimizer; ``metrics`` and
    ``weighted_metrics`` are Keras metric objects, keyed in the history by ``name``.
    As in ``model.compile``, ``sample_weight`` weights the loss and the
    ``weighted_metrics`` but not the plain ``metrics``. The model must be built.

    With ``shuffle=False`` the history equals ``model.fit(..., shuffle=False).history``
    for the same initial weights. ``shuffle=True`` draws a new order every epoch from
    ``seed``; it cannot reproduce ``fit``'s own shuffling. Like ``fit``, it trains on
    when the loss becomes NaN or infinite (the history shows it), and it runs a model
    with no trainable weights, logging its loss.
    """
    require("keras")
    import keras
    import tensorflow as tf

    x, y, sample_weight = _check_arguments(model, x, y, loss, optimizer, metrics,
                                           weighted_metrics, sample_weight, batch_size,
                                           epochs, shuffle, seed)
    loss_tracker = keras.metrics.Mean(name="loss")  # what fit() logs as "loss"
    trackers = [loss_tracker, *metrics, *weighted_metrics]
    weighted = [False] * len(metrics) + [True] * len(weighted_metrics)
    # A second, fresh copy of each tracker measures the current batch alone.
    batch_trackers = [type(m).from_config(m.get_config()) for m in trackers]
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def train_step(x_batch, y_batch, w_batch):
        with tf.GradientTape() as tape:
            y_pred = model(x_batch, training=True)
            batch_loss = loss(y_batch, y_pred, sample_weight=w_batch)
            if model.losses:  # weight penalties (e.g. L2) are part of the logged loss
                batch_loss = batch_loss + tf.add_n(model.losses)
        if model.trainable_variables:  # fit() runs a frozen model too, and logs
            gradients = tape.gradient(batch_loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        # y_pred was computed before apply_gradients: the logged numbers describe the
        # weights the step started from. The loss is weighted by the batch size.
        for tracker in (loss_tracker, batch_trackers[0]):
            tracker.update_state(batch_loss, sample_weight=tf.shape(x_batch)[0])
        for m, batch_m, uses_weights in zip(trackers[1:], batch_trackers[1:], weighted):
            w = w_batch if uses_weights else None
            m.update_state(y_batch, y_pred, sample_weight=w)
            batch_m.update_state(y_batch, y_pred, sample_weight=w)
        return [m.result() for m in batch_trackers], [m.result() for m in trackers]

    log = TrainingLog(keys=[m.name for m in trackers])
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        for m in trackers:
            m.reset_state()  # fit() resets its metrics at the start of every epoch
        order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
        for step, batch in enumerate(batches(len(x), batch_size)):
            idx = order[batch]
            for m in batch_trackers:
                m.reset_state()
            w = None if sample_weight is None else tf.constant(sample_weight[idx])
            values, running = train_step(tf.constant(x[idx]), tf.constant(y[idx]), w)
            log.add_batch(epoch=epoch, step=step, size=len(idx),
                          batch=dict(zip(log.keys, map(float, values))),
                          running=dict(zip(log.keys, map(float, running))))
        log.end_epoch(log.batches[-1].running)
    return log


def _check_arguments(model, x, y, loss, optimizer, metrics, weighted_metrics, sample_weight,
                     batch_size, epochs, shuffle, seed):
    """Refuse bad arguments by name; return ``x``, ``y`` and ``sample_weight`` as fit() sees them."""
    import keras

    check.keras_model("model", model)
    check.instance("loss", loss, keras.losses.Loss)
    check.instance("optimizer", optimizer, keras.optimizers.Optimizer)
    for name, values in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
        for value in check.sequence(name, values):
            check.instance(name, value, keras.metrics.Metric)
    names = ["loss", *(m.name for m in [*metrics, *weighted_metrics])]
    if len(set(names)) != len(names):
        raise ValueError(f"metrics and weighted_metrics must have distinct names other than 'loss', "
                         f"got {names[1:]}")
    check.positive_int("batch_size", batch_size)
    check.non_negative_int("epochs", epochs)
    check.boolean("shuffle", shuffle)
    check.optional_seed("seed", seed)
    x, y = check.keras_data(model, x, y)  # as fit() converts them, to Keras' float type
    sample_weight = check.sample_weights("sample_weight", sample_weight, length=len(x))
    return x, y, None if sample_weight is None else sample_weight.astype(keras.config.floatx())
