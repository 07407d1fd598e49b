"""Explain the loss ``model.fit`` logged, every epoch of one run (Keras, TensorFlow backend).

:func:`explain_fit` takes exactly ``fit``'s arguments and trains the model as that call
would (same weights, same ``History``). Inside each of ``fit``'s own traced training steps it
measures, at the weights the step started from, an inference-mode pass and the step's loss
terms (penalty, weighted and unweighted loss of the step's own training-mode prediction); at
each epoch's end, before any other callback, the epoch's last weights on the training data;
and in each validation step the same terms of ``val_loss``. The measurements run in the
compiled step itself (XLA included), so the cost is a fraction of a step. The private Keras
names this needs sit in :mod:`companion.keras_internals`.

>>> import keras, numpy as np
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5),
...                           keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> r = explain_fit(model, np.ones((10, 3)), np.ones((10, 1)), batch_size=4, epochs=2,
...                 verbose=0)
>>> list(r.parts)
['penalty', 'sample weighting', 'training-mode layers', 'weights moved during the epoch']
>>> r.logged == r.history.history["loss"][-1], len(r.epochs), abs(r.residual) < 1e-6
(True, 2, True)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import numpy as np

from companion import _validation as check
from companion import keras_internals as internals
from companion.batching import batches
from companion.reconcile import (ReconciliationError, Step, check_residuals, decompose,
                                 decompose_metric, validation_gap)
from companion.versions import require

__all__ = ["explain_fit"]

# Terms measured in each step, in this order, in one float64 vector.
_TERMS = ("reported", "penalty", "weighted", "train", "criterion", "inference", "count")
# Rows of the training data measured per call at the epoch's end.
_CHUNK = 4096


def explain_fit(model, x, y, *, epoch: int = -1, criterion=None, **fit_kwargs):
    """Run ``model.fit(x, y, **fit_kwargs)`` and split each epoch's logged loss into its parts.

    Returns the :class:`~companion.reconcile.Reconciliation` of ``epoch`` (0-based in the
    history, negative from the end: default the last epoch that ran, EarlyStopping included),
    with every epoch in ``epochs``, ``validation`` the gap to ``val_loss`` when
    ``validation_data`` or ``validation_split`` is given, and ``history`` fit's ``History``.
    ``x`` and ``y`` must be arrays. ``evaluated`` is the criterion's mean per sample over the
    training samples (``validation_split``'s tail left out) at the epoch's last weights, in
    inference mode, without weights or penalty; ``criterion`` (a Keras loss or its name) is by
    default the compiled loss, without its label smoothing.

    Each compiled metric is explained the same way, in ``metrics[name]``, without a penalty.
    Refuses, before any training and by name, what it cannot measure, saying what to pass
    instead. Raises :class:`~companion.reconcile.ReconciliationError` after training when
    ``|residual|`` exceeds ``TOLERANCE * max(1, |logged|)``, or when ``epoch`` did not run;
    its ``result`` then holds every epoch that did.
    """
    require("keras")
    run = _check_fit(model, x, y, epoch, criterion, fit_kwargs)
    watch = _FitWatch(model, run)
    with internals.step_hooks(model, before_train=watch.before_train, on_loss=watch.on_loss):
        history = model.fit(x, y, **{**fit_kwargs,
                                     "callbacks": [watch.callback(), *run["callbacks"]]})
    return watch.result(history, epoch)


class _FitWatch:
    """The measurements of one ``fit``: in-graph terms per step, read by a callback; the
    epoch's end measured by the same callback, before the others run."""

    def __init__(self, model, run: dict):
        import keras
        import tensorflow as tf

        self.model, self.run, self.tf = model, run, tf
        self.loss = internals.compiled_loss(model)
        self.criterion = run["criterion"] or self.loss
        self.metrics = internals.compiled_metrics(model)
        self.seeds = internals.seed_variables(model)
        self.statistics = internals.statistics_variables(model)
        self.train_terms = tf.Variable(tf.zeros([len(_TERMS)], tf.float64), trainable=False)
        self.val_terms = tf.Variable(tf.zeros([len(_TERMS)], tf.float64), trainable=False)
        self.fresh = [] if self.metrics is None else internals.fresh_metric_state(self.metrics)
        self.states = {key: [tf.Variable(v, trainable=False) for v in self.fresh]
                       for key in ("weighted", "train", "inference")}
        if self.statistics:  # the step's batch, for the moving statistics' part
            self.captured = [tf.Variable(np.zeros((0,), a.dtype), shape=tf.TensorShape(None),
                                         trainable=False)
                             for a in (run["x"], run["y"])]
        self.inference = None  # the traced step's inference-mode loss, for on_loss
        self.epochs = []  # one dict of measurements per epoch that ran
        self.current = None
        # The epoch's bookkeeping as compiled functions: eager metric code costs milliseconds.
        self._measure = tf.function(self._measure_batch, reduce_retracing=True, autograph=False)
        self._reset = tf.function(self._reset_states, autograph=False)
        self._results = tf.function(self._state_results, autograph=False)
        self.keras = keras

    # --- inside fit's traced steps ----------------------------------------------------------

    def before_train(self, x, y, sample_weight) -> None:
        """At the step's weights, before its forward pass: an inference-mode pass, the seed
        generators put back as they were (a layer might draw in inference mode)."""
        tf = self.tf
        seeds = [tf.identity(tf.convert_to_tensor(v)) for v in self.seeds]
        prediction = internals.call(self.model, x, training=False)
        for variable, value in zip(self.seeds, seeds):
            variable.assign(value)
        self.inference = self._criterion(y, prediction)
        self._update("inference", y, prediction, None)
        if self.statistics:
            for variable, value in zip(self.captured, (x, y)):
                variable.assign(value)

    def on_loss(self, training, x, y, y_pred, sample_weight, total) -> None:
        """Where the step computes its loss: the terms of its own prediction."""
        tf = self.tf
        train = self.loss(y, y_pred)
        weighted = train if sample_weight is None else self.loss(y, y_pred, sample_weight)
        criterion = train if self.run["criterion"] is None else self._criterion(y, y_pred)
        inference = self.inference if training else criterion
        count = tf.shape(y_pred)[0]
        terms = [total, internals.penalty(self.model), weighted, train, criterion, inference,
                 count]
        vector = tf.stack([tf.cast(tf.reshape(t, []), tf.float64) for t in terms])
        (self.train_terms if training else self.val_terms).assign(vector)
        if training:
            self._update("weighted", y, y_pred, sample_weight)
            self._update("train", y, y_pred, None)

    def _criterion(self, y, y_pred):
        return self.criterion(y, y_pred)

    def _update(self, key, y, y_pred, sample_weight) -> None:
        if self.metrics is None:
            return
        state = [v.read_value() for v in self.states[key]]
        for variable, value in zip(self.states[key],
                                   internals.metric_update(self.metrics, state, y, y_pred,
                                                           sample_weight)):
            variable.assign(value)

    # --- the callback -----------------------------------------------------------------------

    def callback(self):
        watch = self

        class Watch(self.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                watch.begin_epoch()

            def on_train_batch_begin(self, batch, logs=None):
                if watch.statistics:
                    watch.current["statistics"].append([v.numpy() for v in watch.statistics])

            def on_train_batch_end(self, batch, logs=None):
                watch.current["rows"].append(watch.train_terms.numpy())
                watch.current["running"].append(float(logs["loss"]))
                if watch.statistics:
                    watch.current["batches"].append(tuple(v.numpy() for v in watch.captured))

            def on_test_batch_end(self, batch, logs=None):
                if watch.current is not None:
                    watch.current["val_rows"].append(watch.val_terms.numpy())

            def on_epoch_end(self, epoch, logs=None):
                watch.end_epoch(logs or {})

        return Watch()

    def begin_epoch(self) -> None:
        if self.metrics is not None:
            self._reset()
        self.current = {"rows": [], "running": [], "statistics": [], "batches": [],
                        "val_rows": []}

    def end_epoch(self, logs: dict) -> None:
        """At the epoch's last weights, before the other callbacks (EarlyStopping may restore
        other weights later): the training data, and each step's batch with its statistics."""
        epoch, self.current = self.current, None
        epoch["logs"] = {key: float(value) for key, value in logs.items()
                         if np.ndim(value) == 0}
        results = ({key: {name: float(value) for name, value in values.items()}
                    for key, values in self._results().items()} if self.metrics else {})
        x, y = self.run["x"], self.run["y"]
        total, penalty, state = 0.0, 0.0, list(self.fresh)
        for rows in batches(len(x), _CHUNK):
            loss, chunk_penalty, state = self._measure(x[rows], y[rows], state)
            total += float(loss) * len(x[rows])
            penalty += float(chunk_penalty) * len(x[rows])
        epoch["evaluated"], epoch["end_penalty"] = total / len(x), penalty / len(x)
        if self.metrics:
            results["evaluated"] = internals.metric_result(self.metrics, state)
        if self.statistics:
            self._per_batch(epoch, results)
        epoch["metrics"] = results
        epoch["batches"] = epoch["statistics"] = []  # the epoch's data are let go
        self.epochs.append(epoch)

    def _per_batch(self, epoch: dict, results: dict) -> None:
        """Each step's batch at the last weights, with the step's moving statistics and with
        the last ones."""
        last = [v.numpy() for v in self.statistics]
        epoch["inference_end"], epoch["final"] = [], []
        states = {"inference_end": list(self.fresh), "final": list(self.fresh)}
        for (x, y), statistics in zip(epoch["batches"], epoch["statistics"]):
            for key, values in (("inference_end", statistics), ("final", last)):
                for variable, value in zip(self.statistics, values):
                    variable.assign(value)
                loss, _, states[key] = self._measure(x, y, states[key])
                epoch[key].append(float(loss))
        for variable, value in zip(self.statistics, last):
            variable.assign(value)
        if self.metrics:
            for key, state in states.items():
                results[key] = internals.metric_result(self.metrics, state)

    def _reset_states(self) -> None:
        for states in self.states.values():
            for variable, value in zip(states, self.fresh):
                variable.assign(value)

    def _state_results(self) -> dict:
        return {key: self.metrics.stateless_result([v.read_value() for v in states])
                for key, states in self.states.items()}

    def _measure_batch(self, x, y, state):
        prediction = internals.call(self.model, x, training=False)
        loss = self._criterion(y, prediction)
        penalty = internals.penalty(self.model)
        if self.metrics is not None:
            state = internals.metric_update(self.metrics, state, y, prediction)
        return loss, penalty, state

    # --- after fit --------------------------------------------------------------------------

    def result(self, history, epoch: int):
        if not self.epochs:
            raise ReconciliationError("fit ran no epoch: a callback stopped training before "
                                      "the first epoch ended", None)
        epochs = tuple(self._reconcile(k, e, history) for k, e in enumerate(self.epochs))
        last = replace(epochs[-1], epochs=epochs)
        ran = len(epochs)
        if not -ran <= epoch < ran:
            raise ReconciliationError(
                f"epoch {epoch} did not run: fit stopped after {ran} epoch(s) (a callback such "
                f"as EarlyStopping ended training); the error's result holds every epoch that "
                f"ran, or pass epoch= from {-ran} to {ran - 1}", last)
        chosen = replace(epochs[epoch % ran], epochs=epochs)
        check_residuals(chosen, what="fit")
        return chosen

    def _reconcile(self, index: int, epoch: dict, history):
        rows = np.array(epoch["rows"], dtype=np.float64).reshape(-1, len(_TERMS))
        per_batch = "inference_end" in epoch
        steps = tuple(Step(size=int(row[6]), running=running,
                           **{key: float(row[i]) for i, key in enumerate(_TERMS[:6])},
                           count=float(row[6]),
                           inference_end=epoch["inference_end"][t] if per_batch else math.nan,
                           final=epoch["final"][t] if per_batch else math.nan)
                      for t, (row, running) in enumerate(zip(rows, epoch["running"])))
        common = dict(history=history, epoch=index, criterion=self.run["criterion_words"],
                      criterion_differs=self.run["criterion"] is not None,
                      notes=self.run["notes"])
        metrics = {}
        for name, value in epoch["metrics"].get("evaluated", {}).items():
            values = {key: result[name] for key, result in epoch["metrics"].items()}
            values["logged"] = epoch["logs"].get(name, values["weighted"])
            metrics[name] = decompose_metric(values, name=name, epoch=index, history=history)
        result = decompose(steps, logged=epoch["logs"]["loss"], evaluated=epoch["evaluated"],
                           average="size-weighted", metrics=metrics,
                           end_penalty=epoch["end_penalty"], **common)
        if epoch["val_rows"] and "val_loss" in epoch["logs"]:
            rows = np.array(epoch["val_rows"], dtype=np.float64)
            val_steps = tuple(Step(size=int(row[6]), count=float(row[6]),
                                   **{key: float(row[i]) for i, key in enumerate(_TERMS[:6])})
                              for row in rows)
            counts = rows[:, 6]
            validation = decompose(val_steps, logged=epoch["logs"]["val_loss"],
                                   evaluated=float(counts @ rows[:, 5] / counts.sum()),
                                   name="val_loss", fixed_weights=True, **common)
            result = replace(result, validation=validation_gap(result, validation))
        return result


# --- refusals, before any training ------------------------------------------------------------


def _check_fit(model, x, y, epoch, criterion, fit_kwargs) -> dict:
    """Refuse what explain_fit cannot measure, by name, before any training, saying what to
    pass instead; return the training arrays as fit sees them, the callbacks, the criterion."""
    import keras

    if internals.backend() != "tensorflow":
        raise ValueError(
            f"explain_fit measures fit's steps on Keras' TensorFlow backend, and this Keras "
            f"runs on KERAS_BACKEND={internals.backend()!r}: set KERAS_BACKEND=tensorflow "
            "before Keras is imported, or, for a PyTorch model, record your own loop with "
            "companion.reconcile_torch.Recorder")
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
    planned = epochs - initial_epoch
    epoch = check.integer("epoch", epoch, minimum=-planned)
    if epoch >= planned:
        raise ValueError(f"epoch must be from {-planned} to {planned - 1} for a run of "
                         f"{planned} epoch(s) (0-based, or negative from the end), got {epoch}")
    callbacks = check.sequence("callbacks", fit_kwargs.get("callbacks") or [])

    # fit converts float arrays to Keras' float type, and trains on the part of x before
    # validation_split's tail (when no validation_data is given).
    floatx = keras.config.floatx()
    x_array, y_array = (a.astype(floatx, copy=False) if np.issubdtype(a.dtype, np.floating) else a
                        for a in (x_array, y_array))
    split = fit_kwargs.get("validation_split") or 0.0
    if split and fit_kwargs.get("validation_data") is None:
        end = int(math.floor(len(x_array) * (1.0 - check.fraction("validation_split", split))))
        x_array, y_array = x_array[:end], y_array[:end]
    # The compiled metrics get their variables now, so that the traced step can use them.
    internals.build_metrics(model, y_array[:2], internals.call(model, x_array[:2],
                                                               training=False))
    criterion, words, notes = _criterion(model, criterion)
    if model.jit_compile:
        notes = (*notes, "fit's step ran compiled with XLA (jit_compile resolved to True); "
                         "the measurements ran inside it")
    return {"x": x_array, "y": y_array, "callbacks": callbacks, "criterion": criterion,
            "criterion_words": words, "notes": notes}


def _criterion(model, criterion):
    """The criterion ``evaluated`` measures: None for the compiled loss itself, or a loss."""
    import keras

    if criterion is not None:
        try:
            loss = keras.losses.get(criterion)
        except (ValueError, TypeError) as error:
            raise ValueError(f"criterion must be a Keras loss or its name, got {criterion!r}: "
                             f"{error}") from None
        return loss, f"{getattr(loss, 'name', criterion)}, not the compiled loss", ()
    smoothing = getattr(model.loss, "label_smoothing", 0.0) or 0.0
    if smoothing:  # a reader evaluates the loss itself, unsmoothed
        config = {**model.loss.get_config(), "label_smoothing": 0.0}
        return (type(model.loss).from_config(config),
                f"the training loss without its label smoothing ({smoothing:g})",
                (f"the criterion is the compiled loss without its label smoothing "
                 f"({smoothing:g}); pass criterion= to choose another",))
    return None, "the training loss", ()


def _check_compiled_model(model) -> None:
    """A compiled single-output Keras model whose training step is Keras' own."""
    import keras

    check.keras_model("model", model)
    if not getattr(model, "compiled", False) or getattr(model, "_compile_loss", None) is None:
        raise ValueError("model must be compiled with a loss: call model.compile(optimizer=..., "
                         "loss=...) first")
    for method in ("train_step", "test_step", "compute_loss", "compute_metrics"):
        if getattr(type(model), method) is not getattr(keras.Model, method):
            raise ValueError(f"model overrides {method}(); explain_fit measures Keras' own "
                             "step: put the custom computation in a layer or a loss, or write "
                             "the loop in PyTorch and record it with reconcile_torch.Recorder")
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1 or isinstance(model.loss, (list, tuple, dict)):
        raise ValueError(f"model must have one output and one loss, got {max(len(outputs), 1)} "
                         f"output(s) and loss={model.loss!r}: explain one output at a time "
                         "with a single-output model sharing its layers")
    reduction = getattr(model.loss, "reduction", "sum_over_batch_size")
    if reduction not in ("sum_over_batch_size", "mean"):  # the two names of one reduction
        raise ValueError(f"model.loss must have reduction='sum_over_batch_size' (the default), "
                         f"got reduction={reduction!r}: the logged loss would not be a mean "
                         "per-sample loss; compile with the default reduction")
    if model.get_compile_config().get("loss_weights") is not None:
        raise ValueError("model was compiled with loss_weights; explain_fit needs the plain "
                         "loss: compile without loss_weights")
    if model.steps_per_execution != 1:
        raise ValueError(f"model was compiled with steps_per_execution="
                         f"{model.steps_per_execution}; callbacks then see one step in "
                         f"{model.steps_per_execution}: compile with steps_per_execution=1")
    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is not None:
        raise ValueError(f"model was built under a distribution strategy "
                         f"({type(strategy).__name__}): explain_fit measures one replica's "
                         "steps; build and compile the model outside the strategy's scope")


def _refuse_streams(name, value) -> None:
    """Datasets, generators and PyDatasets are read once and cannot be measured again."""
    if isinstance(value, dict) or hasattr(value, "element_spec") or hasattr(value, "__next__") \
            or (hasattr(value, "__getitem__") and hasattr(value, "on_epoch_end")) \
            or inspect.isgenerator(value):
        raise TypeError(f"{name} must be a NumPy array (or tensor), got {type(value).__name__}: "
                        "explain_fit measures the epoch's last weights on the training arrays; "
                        "convert the dataset or generator to arrays first (e.g. "
                        "np.concatenate over its batches)")
