"""Explain the loss ``model.fit`` logged (Keras): interim port of the earlier replay.

>>> explain_fit  # doctest: +ELLIPSIS
<function explain_fit at ...>
"""

from __future__ import annotations

import contextlib
import inspect
import math

import numpy as np

from companion import _validation as check
from companion import reconcile
from companion.batching import batches
from companion.reconcile import Reconciliation, ReconciliationError, Step, decompose
from companion.reconcile_torch import _epoch_index
from companion.versions import require

__all__ = ["explain_fit"]


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
        steps = tuple(_OldStep(size=size, running=running,
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


def _loss_result(logged, evaluated, steps_terms, final, **fields) -> Reconciliation:
    """The loss's parts, by the formula of the module docstring, from each step's size and
    terms (weighted, train, inference, penalty) and its batch's loss at the final weights;
    raises ReconciliationError if they do not add up."""
    old = fields.pop("steps")
    steps = [Step(size=size, running=o.running, reported=o.replayed, penalty=t["penalty"],
                  weighted=t["weighted"], train=t["train"], criterion=t["train"],
                  inference=t["inference"], inference_end=f)
             for (size, t), o, f in zip(steps_terms, old, final)]
    result = decompose(steps, logged=logged, evaluated=evaluated, **fields)
    _check_residuals(result)
    return result


def _result(*, name, logged, evaluated, parts, history, epoch, metrics=None, steps=()):
    logged, evaluated = float(logged), float(evaluated)
    parts = {key: float(value) for key, value in parts.items()}
    return Reconciliation(logged=logged, evaluated=evaluated, parts=parts,
                          residual=logged - evaluated - sum(parts.values()),
                          history=history, epoch=epoch, metrics=metrics or {}, name=name,
                          steps=steps)


class _OldStep:
    def __init__(self, size, running, replayed):
        self.size, self.running, self.replayed = size, running, replayed


def _check_residuals(result: Reconciliation) -> None:
    """Raise ReconciliationError, naming where the replay went wrong, if the parts don't add up."""
    failed = [r for r in (result, *result.metrics.values())
              if not abs(r.residual) <= reconcile.TOLERANCE * max(1.0, abs(r.logged))]
    if not failed:
        return
    steps = result.steps
    sizes = np.array([s.size for s in steps], dtype=np.float64)
    rebuilt = np.cumsum(sizes * [s.replayed for s in steps]) / np.cumsum(sizes)
    logged = np.array([s.running for s in steps])
    gaps = np.abs(rebuilt - logged) / np.maximum(1.0, np.abs(logged))
    first = int(np.argmax(gaps > reconcile.TOLERANCE)) if np.any(gaps > reconcile.TOLERANCE) else None
    where = ("the replayed step losses agree with the running loss fit logged, so the gap is "
             "in the final weights' measurements (do the epoch's batches cover the data once?) "
             "or in a metric" if first is None else
             f"the replay first differs from the log at step {first} (running loss "
             f"{rebuilt[first]:.7g} replayed, {logged[first]:.7g} logged)")
    names = ", ".join(f"{r.name} (residual {r.residual:.3g}, logged {r.logged:.7g})"
                      for r in failed)
    raise ReconciliationError(f"could not reconcile epoch {result.epoch} (0-based): the parts "
                              f"of {names} leave more than {reconcile.TOLERANCE:g} * max(1, |logged|); "
                              f"{where}", result)
