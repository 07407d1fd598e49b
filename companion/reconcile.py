"""Why the loss a training run logged is not the loss of its final weights, part by part.

``fit`` logs, for an epoch, the mean of its step losses weighted by the batch sizes ``n_t``
(``N`` samples in all). Step ``t`` computed its loss at the weights ``w_t`` it *started* from,
in training mode (dropout on, batch statistics), with the sample weights, plus the
regularization penalty. The number a reader compares it with is the plain mean per-sample loss
of the *final* weights in inference mode. With per-batch means over the batch of step ``t``:

    logged = sum_t n_t/N [weighted_train_t(w_t) + penalty_t(w_t)]
           = evaluated                                           (final weights, inference)
           + sum_t n_t/N  penalty_t(w_t)                                          penalty
           + sum_t n_t/N [weighted_train_t(w_t) - train_t(w_t)]          sample weighting
           + sum_t n_t/N [train_t(w_t) - inference_t(w_t)]           training-mode layers
           + sum_t n_t/N [inference_t(w_t) - inference_t(w_final)]   weights moved during
                                                                                the epoch

The sum telescopes; its ``inference_t(w_final)`` terms add up to ``evaluated`` because one
epoch's batches cover every sample once. :func:`explain_fit` (Keras) and :func:`explain_torch`
(PyTorch) train the model, replay every step of one epoch at its own weights and random draws,
and return each part. ``residual`` is what is left over: float rounding, and any way the replay
differs from the training step; above ``TOLERANCE * max(1, |logged|)`` they raise
:class:`ReconciliationError`. Each refuses, by name, what it cannot replay.

>>> import keras, numpy as np
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> r = explain_fit(model, np.ones((10, 3)), np.ones((10, 1)), batch_size=4, verbose=0)
>>> list(r.parts)
['penalty', 'sample weighting', 'training-mode layers', 'weights moved during the epoch']
>>> r.logged == r.history.history["loss"][-1], abs(r.residual) < 1e-6
(True, True)
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from companion import _validation as check
from companion.batching import batches
from companion.compare import describe_difference
from companion.training_log import TrainingLog
from companion.versions import require

__all__ = ["PARTS", "Reconciliation", "ReconciliationError", "Step", "explain_fit",
           "explain_torch"]

PARTS = ("penalty", "sample weighting", "training-mode layers", "weights moved during the epoch")

# One line per part for the table: what it is, then what to do about it.
_MEANING = {
    "penalty": "regularization is added to the training loss only; subtract it before comparing",
    "sample weighting": "sample_weight/class_weight weight the logged value; pass the same weights",
    "training-mode layers": "dropout, noise and batch statistics act only in training; compare "
                            "in one mode",
    "weights moved during the epoch": "each step logged the weights it started from; evaluate "
                                      "after the epoch instead",
}

# Float32 sums over one epoch round at about 1e-7 of their size; more than ten times that is a
# replay that computed something else than the training step did.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Step:
    """One step of the explained epoch: its batch size, what the log read after it (the running
    epoch mean), and this step's loss as the replay computed it (penalty included)."""

    size: int
    running: float
    replayed: float


@dataclass(frozen=True)
class Reconciliation:
    """``logged = evaluated + sum(parts.values()) + residual`` for one epoch of one run.

    ``parts`` holds :data:`PARTS` in that order (a metric has no ``"penalty"``); ``metrics``
    maps each logged metric's name to its own ``Reconciliation``; ``epoch`` is 0-based in
    ``history``; ``steps`` holds the explained epoch's :class:`Step` records (loss only).
    """

    logged: float
    evaluated: float
    parts: dict[str, float]
    residual: float
    history: object
    epoch: int
    metrics: dict[str, Reconciliation] = field(default_factory=dict)
    name: str = "loss"
    steps: tuple[Step, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.name} of epoch {self.epoch} (0-based): logged {self.logged:.4f} = "
                 f"evaluated {self.evaluated:.4f} + parts + residual",
                 "  evaluated: the final weights' mean per-sample value, inference mode, "
                 "unweighted"]
        for part, value in sorted(self.parts.items(), key=lambda item: -abs(item[1])):
            lines.append(f"  {part:<32}{value:+.4f}")
            lines.append(f"    {_MEANING[part]}")
        rounding = "" if self.residual == 0 else " (float rounding)"
        lines.append(f"  {'residual':<32}{describe_difference(abs(self.residual))}{rounding}")
        return "\n\n".join(["\n".join(lines), *(str(m) for m in self.metrics.values())])


class ReconciliationError(RuntimeError):
    """The parts did not add up: ``result`` holds them, and the trained model's history."""

    def __init__(self, message: str, result: Reconciliation | None = None):
        super().__init__(message)
        self.result = result


# --- Keras --------------------------------------------------------------------------------------


def explain_fit(model, x, y, *, epoch: int = -1, **fit_kwargs) -> Reconciliation:
    """Run ``model.fit(x, y, **fit_kwargs)`` and split one epoch's logged loss into its parts.

    The model is trained exactly as that call would train it (same weights afterwards, same
    ``History``, returned as ``history``). ``epoch`` picks the explained epoch: 0-based in the
    history, or negative from the end (default: the last). ``x`` and ``y`` must be arrays;
    ``validation_data``/``validation_split`` are passed through but not explained.
    ``evaluated`` is the unweighted mean per-sample loss of the final weights in inference
    mode over the training samples (``validation_split``'s tail left out); it excludes
    ``model.losses``, which ``model.evaluate()`` adds.

    Each compiled metric is explained the same way, in ``metrics[name]``, without a penalty.
    Raises ``ValueError`` or ``TypeError``, naming the argument, for what it cannot replay:
    before training, or, for a layer whose random draws do not come from its seed states, in
    the explained epoch. Raises :class:`ReconciliationError` after training when ``|residual|``
    exceeds ``TOLERANCE * max(1, |logged|)`` for the loss or a metric.
    """
    require("keras")
    run = _check_fit(model, x, y, epoch, fit_kwargs)
    watch = _FitWatch(model, keras_epoch=run["initial_epoch"] + run["index"])
    with watch.recording_batches():
        history = model.fit(x, y, **{**fit_kwargs, "callbacks": [*run["callbacks"],
                                                                   watch.callback()]})
    if not watch.steps:
        raise ReconciliationError(f"fit stopped before epoch {run['index']} (0-based) ran: "
                                  "a callback ended training early; explain an earlier epoch")
    return watch.reconcile(history, run["index"], run["x"], run["y"], run["batch_size"])


class _FitWatch:
    """Watches one epoch of ``fit``: records each step's batch and replays the step at its own
    weights and random draws, then measures the final weights."""

    def __init__(self, model, *, keras_epoch: int):
        self.model = model
        self.keras_epoch = keras_epoch
        self.watching = False
        self.batch = None  # (x, y, sample_weight) of the running step, recorded inside it
        self.state = None  # the model's variables (seed states included) when the step began
        self.steps = []  # per step: its size and its replayed terms
        self.running = []  # per step: the running epoch loss fit logged after it
        self.batches = []  # the explained epoch's batches, to measure the final weights on
        self.metric_states = {}  # one state of the compiled metrics per replayed quantity

    # The batch of a step exists only inside fit's compiled step function, so a wrapper around
    # train_step hands it to Python; fit runs the same computation as without the wrapper.
    @contextlib.contextmanager
    def recording_batches(self):
        import keras
        import tensorflow as tf

        model, train_step = self.model, self.model.train_step

        def record(*arrays):
            if self.watching:
                self.batch = [np.array(a) for a in arrays]

        def recording_train_step(data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            tensors = [x, y] + ([] if sample_weight is None else [sample_weight])
            tf.numpy_function(record, tensors, [], stateful=True)
            return train_step(data)

        model.train_step = recording_train_step
        model.train_function = None  # traced again, with the wrapper; and again after
        try:
            yield
        finally:
            del model.train_step
            model.train_function = None

    def callback(self):
        import keras

        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: setattr(self, "watching",
                                                       epoch == self.keras_epoch),
            on_epoch_end=lambda epoch, logs: setattr(self, "watching", False),
            on_train_batch_begin=self._step_begins,
            on_train_batch_end=self._step_ends,
        )

    def _variables(self):
        # model.variables holds the weights, batch-norm statistics and the state of every
        # layer's SeedGenerator: everything a step's forward pass reads. Keras' global seed
        # generator (used by keras.random calls without a seed) is saved as well, if it exists.
        from keras.src.backend.common import global_state

        generator = global_state.get_global_attribute("global_seed_generator")
        extra = [] if generator is None else [generator.state]
        return list(self.model.variables) + extra

    def _read_state(self):
        return [v.numpy() for v in self._variables()]

    def _write_state(self, values):
        for variable, value in zip(self._variables(), values, strict=True):
            variable.assign(value)

    def _step_begins(self, step, logs):
        if self.watching:
            self.state = self._read_state()

    def _step_ends(self, step, logs):
        if not self.watching:
            return
        x, y, *weights = self.batch
        sample_weight = weights[0] if weights else None
        inference, train, penalty = self._replay(x)
        loss = self.model._compile_loss  # the loss object fit's step calls (without penalties)
        self.steps.append((len(x), {"weighted": float(loss(y, train, sample_weight)),
                                    "train": float(loss(y, train)),
                                    "inference": float(loss(y, inference)),
                                    "penalty": penalty}))
        self.running.append(float(logs["loss"]))
        self.batches.append((x, y))
        self._update_metrics({"weighted": (y, train, sample_weight), "train": (y, train, None),
                              "inference": (y, inference, None)})

    def _replay(self, x):
        """The step's predictions at its own w_t, in inference and in training mode, and its
        penalty; fit's state is put back afterwards."""
        model, live = self.model, self._read_state()
        self._write_state(self.state)
        inference = model(x, training=False)
        self._write_state(self.state)  # the seeds fit's step started from: the same masks
        train = model(x, training=True)
        penalty = sum(float(np.sum(loss)) for loss in model.losses)
        # A layer drawing from anything but its seed states would draw anew on a second pass.
        self._write_state(self.state)
        repeated = model(x, training=True)
        self._write_state(live)
        if not np.array_equal(np.asarray(repeated), np.asarray(train)):
            message = self._unrepeatable(x)
            self._write_state(live)
            raise ValueError(message)
        return inference, train, penalty

    def _unrepeatable(self, x) -> str:
        """Name the first layer whose training-mode output differs between two replays."""
        import keras

        model, culprit = self.model, f"a layer of {self.model.name!r}"
        inputs = getattr(model, "inputs", None)
        if inputs:  # a functional or Sequential model: replay its layers' outputs one by one
            for layer in model.layers:
                probe = keras.Model(inputs[0] if len(inputs) == 1 else inputs, layer.output)
                self._write_state(self.state)
                first = np.asarray(probe(x, training=True))
                self._write_state(self.state)
                if not np.array_equal(first, np.asarray(probe(x, training=True))):
                    culprit = f"layer {layer.name!r} ({type(layer).__name__})"
                    break
        return (f"model: {culprit} draws random numbers that cannot be replayed (two "
                "training-mode passes from the same seed states differ), so its effect cannot "
                "be told apart from the weights' movement; draw them with keras.random and a "
                "keras.random.SeedGenerator, as Keras' own layers do")

    def _update_metrics(self, inputs):
        compiled = self.model._compile_metrics  # the metrics object fit's step updates
        if compiled is None or not compiled.variables:
            return
        # Stateless updates: each replayed quantity keeps its own metric state, and fit's own
        # running metrics are not touched.
        for key, (y, y_pred, sample_weight) in inputs.items():
            if key not in self.metric_states:
                self.metric_states[key] = _fresh_state(compiled)
            self.metric_states[key] = compiled.stateless_update_state(
                self.metric_states[key], y, y_pred, sample_weight=sample_weight)

    def reconcile(self, history, index, x, y, batch_size) -> Reconciliation:
        model, saved = self.model, self._read_state()
        final = []
        for x_batch, y_batch in self.batches:
            y_pred = model(x_batch, training=False)
            final.append(float(model._compile_loss(y_batch, y_pred)))
            self._update_metrics({"final": (y_batch, y_pred, None)})
        evaluated, evaluated_metrics = self._evaluate(x, y, batch_size)
        self._write_state(saved)  # inference draws nothing in Keras' layers; a custom one might

        metrics = {}
        if self.metric_states:
            compiled = model._compile_metrics
            value = {key: {name: float(v) for name, v in compiled.stateless_result(state).items()}
                     for key, state in self.metric_states.items()}
            for name in evaluated_metrics:
                metrics[name] = _result(
                    name=name, logged=history.history[name][index],
                    evaluated=evaluated_metrics[name],
                    parts={"sample weighting": value["weighted"][name] - value["train"][name],
                           "training-mode layers": value["train"][name]
                           - value["inference"][name],
                           "weights moved during the epoch": value["inference"][name]
                           - value["final"][name]},
                    history=history, epoch=index)
        steps = tuple(Step(size=size, running=running,
                           replayed=terms["weighted"] + terms["penalty"])
                      for (size, terms), running in zip(self.steps, self.running))
        return _loss_result(history.history["loss"][index], evaluated, self.steps, final,
                            history=history, epoch=index, metrics=metrics, steps=steps)

    def _evaluate(self, x, y, batch_size):
        """Mean per-sample loss (and each metric) of the current weights, inference mode."""
        model = self.model
        compiled = model._compile_metrics
        state = _fresh_state(compiled) if self.metric_states else None
        total = 0.0
        for batch in batches(len(x), batch_size):
            y_pred = model(x[batch], training=False)
            total += float(model._compile_loss(y[batch], y_pred)) * len(y[batch])
            if state is not None:
                state = compiled.stateless_update_state(state, y[batch], y_pred)
        metrics = {} if state is None else {name: float(value) for name, value
                                            in compiled.stateless_result(state).items()}
        return total / len(x), metrics


def _fresh_state(metric) -> list:
    """The values of ``metric``'s variables after reset_state(), leaving the metric as it was."""
    live = [v.numpy() for v in metric.variables]
    metric.reset_state()
    fresh = [v.numpy() for v in metric.variables]
    for variable, value in zip(metric.variables, live):
        variable.assign(value)
    return fresh


def _check_fit(model, x, y, epoch, fit_kwargs) -> dict:
    """Refuse what explain_fit cannot replay, by name, before any training; return the training
    arrays as fit sees them, the batch size, the callbacks and the epoch to explain."""
    import keras

    _check_compiled_model(model)
    parameters = set(inspect.signature(model.fit).parameters) - {"self", "x", "y"}
    unknown = sorted(set(fit_kwargs) - parameters)
    if unknown:
        raise TypeError(f"fit_kwargs: model.fit() takes no argument {', '.join(unknown)}; "
                        f"it takes {sorted(parameters)}")
    if fit_kwargs.get("steps_per_epoch") is not None:
        raise ValueError(f"steps_per_epoch={fit_kwargs['steps_per_epoch']!r}: an epoch must "
                         "cover every sample once; leave steps_per_epoch out")
    for name, value in (("x", x), ("y", y)):
        _refuse_streams(name, value)
    x_array = check.data_array("x", x)
    y_array = check.data_array("y", y, length=len(x_array))
    check.sample_weights("sample_weight", fit_kwargs.get("sample_weight"), length=len(x_array))
    batch_size = fit_kwargs.get("batch_size")
    batch_size = 32 if batch_size is None else check.positive_int("batch_size", batch_size)
    epochs = check.positive_int("epochs", fit_kwargs.get("epochs", 1))
    initial_epoch = check.non_negative_int("initial_epoch", fit_kwargs.get("initial_epoch", 0))
    if epochs <= initial_epoch:
        raise ValueError(f"epochs must be > initial_epoch ({initial_epoch}) so that fit runs an "
                         f"epoch to explain, got epochs={epochs}")
    callbacks = check.sequence("callbacks", fit_kwargs.get("callbacks") or [])

    # fit converts float arrays to Keras' float type, and trains on the part of x before
    # validation_split's tail (when no validation_data is given).
    floatx = keras.config.floatx()
    x_array, y_array = (a.astype(floatx) if np.issubdtype(a.dtype, np.floating) else a
                        for a in (x_array, y_array))
    split = fit_kwargs.get("validation_split") or 0.0
    if split and fit_kwargs.get("validation_data") is None:
        end = int(math.floor(len(x_array) * (1.0 - check.fraction("validation_split", split))))
        x_array, y_array = x_array[:end], y_array[:end]
    return {"x": x_array, "y": y_array, "batch_size": batch_size, "callbacks": callbacks,
            "initial_epoch": initial_epoch, "index": _epoch_index(epoch, epochs - initial_epoch)}


def _check_compiled_model(model) -> None:
    """A compiled single-output Keras model whose training step is Keras' own."""
    import keras

    check.keras_model("model", model)
    if not getattr(model, "compiled", False) or getattr(model, "_compile_loss", None) is None:
        raise ValueError("model must be compiled with a loss: call model.compile(optimizer=..., "
                         "loss=...) first")
    for method in ("train_step", "compute_loss", "compute_metrics"):
        if getattr(type(model), method) is not getattr(keras.Model, method):
            raise ValueError(f"model overrides {method}(); explain_fit replays Keras' own "
                             "training step only")
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1 or isinstance(model.loss, (list, tuple, dict)):
        raise ValueError(f"model must have one output and one loss, got {max(len(outputs), 1)} "
                         f"output(s) and loss={model.loss!r}")
    reduction = getattr(model.loss, "reduction", "sum_over_batch_size")
    if reduction not in ("sum_over_batch_size", "mean"):  # the two names of one reduction
        raise ValueError(f"model.loss must have reduction='sum_over_batch_size' (the default), "
                         f"got reduction={reduction!r}: the logged loss would not be a mean "
                         "per-sample loss")
    if model.get_compile_config().get("loss_weights") is not None:
        raise ValueError("model was compiled with loss_weights; explain_fit needs the plain loss")
    if model.steps_per_execution != 1:
        raise ValueError(f"model was compiled with steps_per_execution="
                         f"{model.steps_per_execution}; callbacks then see one step in "
                         f"{model.steps_per_execution}: compile with steps_per_execution=1")
    if model.jit_compile:
        raise ValueError("model was compiled with jit_compile=True: XLA cannot hand each batch "
                         "to the replay; compile with jit_compile=False")


def _refuse_streams(name, value) -> None:
    """Datasets, generators and PyDatasets are read once and cannot be replayed: arrays only."""
    if isinstance(value, dict) or hasattr(value, "element_spec") or hasattr(value, "__next__") \
            or (hasattr(value, "__getitem__") and hasattr(value, "on_epoch_end")) \
            or inspect.isgenerator(value):
        raise TypeError(f"{name} must be a NumPy array (or tensor), got {type(value).__name__}: "
                        "explain_fit replays the batches it records from arrays; convert the "
                        "dataset or generator to arrays first")


# --- PyTorch ------------------------------------------------------------------------------------


def explain_torch(model, x, y, *, loss_fn, optimizer, batch_size: int, epochs: int = 1,
                  penalty=None, sample_weight=None, metrics=(), epoch: int = -1
                  ) -> Reconciliation:
    """Train a ``torch.nn.Module`` like :func:`companion.torch_loop.train` and split one epoch's
    logged loss into its parts.

    Without ``sample_weight`` the log, the weights and the random draws are exactly those of
    ``torch_loop.train(model, x, y, loss_fn=..., optimizer=..., batch_size=..., epochs=...,
    penalty=..., metrics=...)`` (no shuffling). ``sample_weight`` weights the loss the Keras
    way: per-sample losses times weights, summed, divided by the batch size; it needs a
    ``torch.nn`` loss with ``reduction='mean'`` (its per-sample values are read with
    ``reduction='none'``). ``loss_fn`` must return the batch's mean loss. ``metrics`` are
    :mod:`companion.metrics` objects. ``history`` is a :class:`TrainingLog`.
    """
    require("torch")
    x, y, sample_weight, metrics = _check_torch(model, x, y, loss_fn, optimizer, batch_size,
                                                epochs, penalty, sample_weight, metrics)
    watch = _TorchWatch(model, loss_fn, metrics, epoch=_epoch_index(epoch, epochs))
    log = _train_torch(model, x, y, sample_weight, loss_fn=loss_fn, optimizer=optimizer,
                       penalty=penalty, batch_size=batch_size, epochs=epochs, metrics=metrics,
                       watch=watch)
    return watch.reconcile(log, x, y, batch_size)


def _train_torch(model, x, y, sample_weight, *, loss_fn, optimizer, penalty, batch_size, epochs,
                 metrics, watch) -> TrainingLog:
    """torch_loop.train's loop (one micro-batch per step, no shuffling) with sample weights,
    and the watcher's two calls in the explained epoch."""
    import torch

    log = TrainingLog(keys=("loss", *(metric.name for metric in metrics)))
    for epoch in range(epochs):
        model.train()
        for metric in metrics:
            metric.reset()
        steps = []
        for step in batches(len(x), batch_size):
            x_batch, y_batch = x[step], y[step]
            weights = None if sample_weight is None else sample_weight[step]
            if epoch == watch.epoch:
                watch.before_step(x_batch, y_batch)
            before = [(metric.total, metric.count) for metric in metrics]
            optimizer.zero_grad()
            y_pred = model(x_batch)
            data_loss = _data_loss(loss_fn, y_pred, y_batch, weights)
            step_penalty = None if penalty is None else penalty(model)
            loss = data_loss if step_penalty is None else data_loss + step_penalty
            loss.backward()
            for metric in metrics:
                metric.update(y_batch, y_pred.detach())
            if epoch == watch.epoch:
                watch.after_forward(y_batch, y_pred.detach(), data_loss.detach(), step_penalty)
            optimizer.step()
            batch = {m.name: (m.total - total) / (m.count - count)
                     for m, (total, count) in zip(metrics, before)}
            running = {m.name: m.result() for m in metrics}
            steps.append((len(x_batch), loss.detach(), batch, running))

        # As torch_loop: one read of the epoch's losses, then the running mean of the step
        # losses weighted by the step sizes, in Python floats.
        losses = torch.stack([step_loss for _, step_loss, _, _ in steps]).tolist()
        total, count = 0.0, 0
        for index, ((size, _, batch, running), loss) in enumerate(zip(steps, losses)):
            check.finite_loss(loss, epoch, index)
            total, count = total + loss * size, count + size
            log.add_batch(epoch=epoch, step=index, size=size, batch={"loss": loss, **batch},
                          running={"loss": total / count, **running})
        log.end_epoch(log.batches[-1].running)
    return log


def _data_loss(loss_fn, y_pred, y, weights):
    """The batch's mean loss; with weights, the Keras way: sum(weight * loss) / batch size."""
    if weights is None:
        return loss_fn(y_pred, y)
    per_sample = copy.copy(loss_fn)  # the same loss, unreduced: one value per element
    per_sample.reduction = "none"
    values = per_sample(y_pred, y)
    values = values.reshape(len(values), -1).mean(dim=1)
    return (values * weights).sum() / len(values)


class _TorchWatch:
    """Records the explained epoch of :func:`_train_torch` and measures the final weights.

    The training-mode terms are the training step's own numbers (its forward pass *is* the
    training-mode pass at ``w_t``); the inference-mode pass at ``w_t`` runs before the step,
    with the random-number state and the buffers saved and put back, so training is untouched.
    """

    def __init__(self, model, loss_fn, metrics, *, epoch: int):
        self.model, self.loss_fn, self.epoch = model, loss_fn, epoch
        self.steps = []  # per step: size, and the terms as tensors (read once, at the end)
        self.inference = None
        self.metrics = {key: [_fresh(m) for m in metrics] for key in
                        ("train", "inference", "final", "evaluated")}

    def before_step(self, x_batch, y_batch) -> None:
        import torch

        with _untouched(self.model), torch.no_grad():
            self.model.eval()
            y_pred = self.model(x_batch)
        self.inference = self.loss_fn(y_pred, y_batch)
        for metric in self.metrics["inference"]:
            metric.update(y_batch, y_pred)

    def after_forward(self, y_batch, y_pred, data_loss, penalty) -> None:
        import torch

        train = self.loss_fn(y_pred, y_batch)  # unweighted, from the same forward pass
        penalty = torch.zeros(()) if penalty is None else torch.as_tensor(penalty).detach()
        self.steps.append((len(y_batch), {"weighted": data_loss, "train": train,
                                          "inference": self.inference, "penalty": penalty}))
        for metric in self.metrics["train"]:
            metric.update(y_batch, y_pred)

    def reconcile(self, log, x, y, batch_size) -> Reconciliation:
        import torch

        # The final weights, in inference mode: over the explained epoch's batches (the same
        # slices, as there is no shuffling) and over all of x, which is the same computation.
        final, total = [], 0.0
        with _untouched(self.model), torch.no_grad():
            self.model.eval()
            for step in batches(len(x), batch_size):
                y_pred = self.model(x[step])
                final.append(float(self.loss_fn(y_pred, y[step])))
                total += final[-1] * len(y_pred)
                for metric in self.metrics["final"] + self.metrics["evaluated"]:
                    metric.update(y[step], y_pred)
        records = [r for r in log.batches if r.epoch == self.epoch]
        steps = tuple(Step(size=r.size, running=r.running["loss"], replayed=r.batch["loss"])
                      for r in records)
        metrics = {}
        for index, name in enumerate(log.keys[1:]):
            value = {key: ms[index].result() for key, ms in self.metrics.items()}
            metrics[name] = _result(
                name=name, logged=log.history[name][self.epoch], evaluated=value["evaluated"],
                parts={"sample weighting": 0.0,  # torch_loop's metrics are unweighted
                       "training-mode layers": value["train"] - value["inference"],
                       "weights moved during the epoch": value["inference"] - value["final"]},
                history=log, epoch=self.epoch)
        steps_terms = [(size, {key: float(value) for key, value in terms.items()})
                       for size, terms in self.steps]
        return _loss_result(log.history["loss"][self.epoch], total / len(x), steps_terms, final,
                            history=log, epoch=self.epoch, metrics=metrics, steps=steps)


@contextlib.contextmanager
def _untouched(model):
    """Run an extra forward pass without changing what training does next: the random-number
    state, the buffers (batch-norm statistics) and the train/eval mode are put back."""
    import torch

    parameter = next(model.parameters(), None)
    cuda = parameter is not None and parameter.is_cuda
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(parameter.device) if cuda else None
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        if cuda:
            torch.cuda.set_rng_state(cuda_rng, parameter.device)
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
        for module, training in modes:
            module.training = training


def _fresh(metric):
    copied = copy.deepcopy(metric)
    copied.reset()
    return copied


def _check_torch(model, x, y, loss_fn, optimizer, batch_size, epochs, penalty, sample_weight,
                 metrics):
    """Refuse bad arguments by name; return x, y and the weights as tensors, and the metrics."""
    import torch

    device, dtype = check.torch_training(model, loss_fn, optimizer, penalty)
    check.positive_int("batch_size", batch_size)
    check.positive_int("epochs", epochs)
    if sample_weight is not None and getattr(loss_fn, "reduction", None) is None:
        raise TypeError(f"loss_fn must be a torch.nn loss with reduction='mean' when "
                        f"sample_weight is given (its per-sample values are weighted), got "
                        f"{type(loss_fn).__name__}")
    metrics = check.sequence("metrics", metrics)
    for metric in metrics:
        if not all(hasattr(metric, verb) for verb in ("update", "result", "reset", "total",
                                                      "count", "name")):
            raise TypeError(f"metrics must hold companion.metrics objects, got {metric!r}")
    check.distinct_names("metrics", [metric.name for metric in metrics])
    x = check.torch_tensor("x", x, device=device, float_dtype=dtype)
    y = check.torch_tensor("y", y, device=device, float_dtype=dtype, length=len(x))
    weights = check.sample_weights("sample_weight", sample_weight, length=len(x))
    if weights is not None:
        weights = torch.from_numpy(weights).to(dtype).to(device)
    check.torch_prediction_shape(model, loss_fn, x, y)  # as torch_loop does
    return x, y, weights, metrics


# --- shared -------------------------------------------------------------------------------------


def _epoch_index(epoch, epochs: int) -> int:
    """``epoch`` as a 0-based index into a history of ``epochs`` epochs (negative: from the end)."""
    epoch = check.integer("epoch", epoch, minimum=-epochs)
    if epoch >= epochs:
        raise ValueError(f"epoch must be from {-epochs} to {epochs - 1} for a run of {epochs} "
                         f"epoch(s) (0-based, or negative from the end), got {epoch}")
    return epoch % epochs


def _loss_result(logged, evaluated, steps_terms, final, **fields) -> Reconciliation:
    """The loss's parts, by the formula of the module docstring, from each step's size and
    terms (weighted, train, inference, penalty) and its batch's loss at the final weights;
    raises ReconciliationError if they do not add up."""
    sizes = np.array([size for size, _ in steps_terms], dtype=np.float64)
    share = sizes / sizes.sum()  # n_t / N
    term = {key: np.array([terms[key] for _, terms in steps_terms])
            for key in ("weighted", "train", "inference", "penalty")}
    parts = {
        "penalty": share @ term["penalty"],
        "sample weighting": share @ (term["weighted"] - term["train"]),
        "training-mode layers": share @ (term["train"] - term["inference"]),
        "weights moved during the epoch": share @ (term["inference"] - np.array(final)),
    }
    result = _result(name="loss", logged=logged, evaluated=evaluated, parts=parts, **fields)
    _check_residuals(result)
    return result


def _result(*, name, logged, evaluated, parts, history, epoch, metrics=None, steps=()):
    logged, evaluated = float(logged), float(evaluated)
    parts = {key: float(value) for key, value in parts.items()}
    return Reconciliation(logged=logged, evaluated=evaluated, parts=parts,
                          residual=logged - evaluated - sum(parts.values()),
                          history=history, epoch=epoch, metrics=metrics or {}, name=name,
                          steps=steps)


def _check_residuals(result: Reconciliation) -> None:
    """Raise ReconciliationError, naming where the replay went wrong, if the parts don't add up."""
    failed = [r for r in (result, *result.metrics.values())
              if not abs(r.residual) <= TOLERANCE * max(1.0, abs(r.logged))]
    if not failed:
        return
    steps = result.steps
    sizes = np.array([s.size for s in steps], dtype=np.float64)
    rebuilt = np.cumsum(sizes * [s.replayed for s in steps]) / np.cumsum(sizes)
    logged = np.array([s.running for s in steps])
    gaps = np.abs(rebuilt - logged) / np.maximum(1.0, np.abs(logged))
    first = int(np.argmax(gaps > TOLERANCE)) if np.any(gaps > TOLERANCE) else None
    where = ("the replayed step losses agree with the running loss fit logged, so the gap is "
             "in the final weights' measurements (do the epoch's batches cover the data once?) "
             "or in a metric" if first is None else
             f"the replay first differs from the log at step {first} (running loss "
             f"{rebuilt[first]:.7g} replayed, {logged[first]:.7g} logged)")
    names = ", ".join(f"{r.name} (residual {r.residual:.3g}, logged {r.logged:.7g})"
                      for r in failed)
    raise ReconciliationError(f"could not reconcile epoch {result.epoch} (0-based): the parts "
                              f"of {names} leave more than {TOLERANCE:g} * max(1, |logged|); "
                              f"{where}", result)
