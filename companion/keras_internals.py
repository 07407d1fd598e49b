"""The one place the companion reaches into Keras' private API, for :mod:`companion.reconcile_keras`.

``fit`` hands a callback the running loss and nothing of a step's batch, prediction or loss
terms. To measure them inside the step, at the weights the step started from, this module
wraps the model's ``train_step``, ``test_step`` and ``compute_loss`` on the *instance* (the
class is untouched, and the wrappers are removed afterwards), and reads the compiled loss and
metrics (``model._compile_loss``, ``model._compile_metrics``) and Keras' global seed
generator. Each of these is a private name that may move between releases: the tests in
``tests/test_keras_internals.py`` run at the declared minimum (Keras 3.2.1, ``make
test-minimum``), at Colab's Keras and at the pinned one.

>>> import keras
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> float(compiled_loss(model)(np.zeros((2, 1)), np.ones((2, 1))))
1.0
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np

__all__ = ["backend", "build_metrics", "call", "compiled_loss", "compiled_metrics",
           "fresh_metric_state", "metric_result", "metric_update", "seed_variables",
           "statistics_variables", "step_hooks", "unpack"]


def backend() -> str:
    """The Keras backend in use: ``"tensorflow"``, ``"jax"``, ``"torch"`` or ``"numpy"``."""
    import keras

    return keras.config.backend()


def compiled_loss(model):
    """The loss object ``fit``'s step calls, ``loss(y, y_pred, sample_weight=None)``: the
    compiled loss(es) reduced to one number, without the model's own losses (penalties)."""
    return model._compile_loss


def compiled_metrics(model):
    """The metrics object ``fit``'s step updates (all compiled metrics), or None."""
    metrics = getattr(model, "_compile_metrics", None)
    return metrics if metrics is not None and metrics.variables is not None else None


def build_metrics(model, y, y_pred) -> None:
    """Build the compiled metrics from one batch, as their first update would, so that their
    variables exist before ``fit`` traces its step (Keras 3.2 builds them only then)."""
    metrics = getattr(model, "_compile_metrics", None)
    if metrics is not None and not metrics.built:
        metrics.build(y, y_pred)


def fresh_metric_state(metrics) -> list:
    """The values of ``metrics``' variables after ``reset_state()``, leaving them as they were."""
    live = [v.numpy() for v in metrics.variables]
    metrics.reset_state()
    fresh = [v.numpy() for v in metrics.variables]
    for variable, value in zip(metrics.variables, live):
        variable.assign(value)
    return fresh


def metric_update(metrics, state, y, y_pred, sample_weight=None) -> list:
    """``state`` after one update with this batch; the metrics' own variables are untouched."""
    return metrics.stateless_update_state(list(state), y, y_pred, sample_weight=sample_weight)


def metric_result(metrics, state) -> dict[str, float]:
    """Each metric's value (named as ``History`` names it) from ``state``."""
    return {name: float(value) for name, value in metrics.stateless_result(list(state)).items()}


def seed_variables(model) -> list:
    """The seed-generator states that the model's layers draw from, and Keras' global seed
    generator's (used by ``keras.random`` calls without a seed), if it exists."""
    from keras.src.backend.common import global_state

    variables = [v for v in model.variables if "seed_generator" in v.path
                 or "seed_generator" in getattr(v, "name", "")]
    generator = global_state.get_global_attribute("global_seed_generator")
    return variables + ([] if generator is None else [generator.state])


def statistics_variables(model) -> list:
    """Batch normalization's moving mean and variance: the variables a training step changes
    other than by the optimizer."""
    import keras

    return [v for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def unpack(data):
    """``(x, y, sample_weight)`` of a step's data."""
    import keras

    return keras.utils.unpack_x_y_sample_weight(data)


def call(model, x, *, training: bool):
    """The model's forward pass, with ``training`` if its ``call`` takes it."""
    return model(x, training=training) if model._call_has_training_arg else model(x)


@contextlib.contextmanager
def step_hooks(model, *, before_train, on_loss):
    """Run ``before_train(x, y, sample_weight)`` at the start of each training step, and
    ``on_loss(training, x, y, y_pred, sample_weight, total)`` where the step computes its loss
    (``training`` False in a validation step), both inside ``fit``'s traced step. The step is
    otherwise Keras' own; the wrappers live on the instance and are removed on exit, and the
    step functions are traced again on either side."""
    train_step, test_step, compute_loss = model.train_step, model.test_step, model.compute_loss
    parameters = inspect.signature(compute_loss)
    phase = []

    def traced_train_step(data):
        x, y, sample_weight = unpack(data)
        before_train(x, y, sample_weight)
        phase.append(True)
        try:
            return train_step(data)
        finally:
            phase.pop()

    def traced_test_step(data):
        phase.append(False)
        try:
            return test_step(data)
        finally:
            phase.pop()

    def traced_compute_loss(*args, **kwargs):
        total = compute_loss(*args, **kwargs)
        if phase:
            bound = parameters.bind(*args, **kwargs).arguments
            on_loss(phase[-1], bound.get("x"), bound.get("y"), bound.get("y_pred"),
                    bound.get("sample_weight"), total)
        return total

    model.train_step, model.test_step = traced_train_step, traced_test_step
    model.compute_loss = traced_compute_loss
    model.train_function = model.test_function = None
    try:
        yield
    finally:
        for name in ("train_step", "test_step", "compute_loss"):
            vars(model).pop(name, None)
        model.train_function = model.test_function = None


def penalty(model):
    """The model's own losses (regularization) of its last forward pass, summed: what
    ``compute_loss`` adds to the compiled loss."""
    import keras

    losses = model.losses
    if not losses:
        return keras.ops.zeros(())
    return keras.ops.sum(keras.ops.stack([keras.ops.sum(loss) for loss in losses]))


def as_float64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
