"""Explain the number a PyTorch loop logged: the reader's own loop, a framework's, or the course's.

:class:`Recorder` is called by the loop where it computes its loss; it measures, at each
step's weights, what :mod:`companion.reconcile` needs, and splits the epoch's logged number
into its parts, the loop's averaging rule included. The loop keeps its DataLoader (shuffled or
not), sampler, scheduler, clipping, accumulation and way of averaging; the recorder leaves the
random-number state, the buffers and the train/eval modes as it found them, so training is
exactly what it would be without it. :func:`explain_torch` is the course's loop
(:mod:`companion.torch_loop`'s) written with a Recorder.

The recorder's protocol, what a loop or a framework's callback calls (the signatures are
stable; ``inputs`` and ``target`` are what ``forward(model, inputs)`` and ``loss_fn(prediction,
target)`` take):

``Recorder(model, *, loss_fn, criterion=None, penalty=None, average="mean", forward=None, denominator=None, metrics=(), data=None)``
    ``loss_fn(prediction, target)``: the training loss, a batch mean (a ``torch.nn`` loss with
    ``reduction='mean'`` or a callable); ``criterion``: what ``evaluated`` measures (default
    ``loss_fn``, without its label smoothing); ``penalty(model)``: a term the loop adds to the
    loss; ``average``: how the loop turns step losses into the logged number (``"mean"`` of
    batch means, ``"size-weighted"``, ``"last"``, ``"sum"``, :func:`moving_average`, or
    ``f(values, sizes)``); ``forward(model, inputs)``: how a prediction is made (default
    ``model(inputs)``); ``denominator(prediction, target)``: what ``loss_fn`` divides its sum
    by (inferred for ``torch.nn`` losses: elements, or the kept targets' class weights with
    ``weight=``/``ignore_index``; the batch size otherwise); ``data``: batches ``(inputs,
    target)`` to evaluate the epoch's last weights on (default: the epoch's own batches, kept
    as references until ``end_epoch``: one epoch's data; with ``data=`` and no moving
    statistics none are kept).

``before(inputs, target, *, size=None)``
    before the forward pass, at the step's weights ``w_t`` (before ``optimizer.step()``): an
    inference-mode pass, the random-number state saved for a replay. With gradient
    accumulation, once per micro-batch.

``after(loss, prediction=None, *, penalty=None, sample_weight=None, divided_by=1, logged=None)``
    after the loss, before ``optimizer.step()``: ``loss`` is what the loop reports for the step
    (the tensor it calls ``.item()`` on, or a float); ``prediction`` the training-mode output it
    came from (None: the recorder replays the forward pass with the random-number state of
    ``before``); ``penalty`` the value the loop added (default: ``penalty(model)`` if given);
    ``sample_weight`` the per-sample weights the loss used (:meth:`Recorder.weighted_loss` is
    the rule); ``divided_by`` declares a loss divided before ``backward()``, e.g. by the
    accumulation steps; ``logged`` the running number the loop showed after the step.

``with recorder.step(inputs, target) as step: ... step.record(loss, prediction, ...)``
    the two calls above as one block around the forward pass and the loss.

``end_epoch(logged=None, *, metrics=None)``
    at the epoch's end, at its last weights: ``logged`` the number the loop logged (or later,
    :meth:`Recorder.set_logged`), ``metrics`` the logged value of each recorded metric. "Epoch"
    is whatever span the logged number averages over: an epoch, or a logging window.

``validate(inputs, target, loss, prediction=None, *, ...)`` and ``end_validation(logged)``
    each batch of a validation pass and its logged ``val_loss``, for :class:`ValidationGap`.

``result(epoch=-1, *, history=None, check=True)``
    the :class:`Reconciliation` of that epoch, ``epochs`` holding every epoch; raises
    :class:`ReconciliationError` if a part does not add up (``check=False``: returns it).

>>> import torch
>>> model = torch.nn.Linear(3, 1)
>>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
>>> recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="mean")
>>> x, y = torch.ones(10, 3), torch.ones(10, 1)
>>> total = 0.0
>>> for start in range(0, 10, 4):
...     with recorder.step(x[start:start + 4], y[start:start + 4]) as step:
...         loss = torch.nn.functional.mse_loss(model(x[start:start + 4]), y[start:start + 4])
...         step.record(loss)
...     optimizer.zero_grad(); loss.backward(); optimizer.step()
...     total += loss.item()
>>> recorder.end_epoch(logged=total / 3)
>>> r = recorder.result()
>>> list(r.parts)[:2], abs(r.residual) < 1e-6
(['averaging rule', 'penalty'], True)
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import replace

import numpy as np

from companion import _validation as check
from companion.batching import batches
from companion.reconcile import (History, ReconciliationError, Step, average_rule,
                                 check_residuals, decompose, decompose_metric, moving_average,
                                 validation_gap)
from companion.training_log import TrainingLog
from companion.versions import require

__all__ = ["Recorder", "explain_torch", "moving_average", "ReconciliationError"]

# torch.nn losses that average over every element of the prediction-target pair.
_ELEMENTWISE = ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss",
                "SoftMarginLoss", "KLDivLoss", "PoissonNLLLoss", "GaussianNLLLoss")
_TERMS = ("reported", "divided_by", "count", "penalty", "weighted", "train", "criterion",
          "inference")


class Recorder:
    """Records a PyTorch loop's steps and explains the number it logged (see the module
    docstring for the protocol)."""

    def __init__(self, model, *, loss_fn, criterion=None, penalty=None, average="mean",
                 forward=None, denominator=None, metrics=(), data=None):
        require("torch")
        import torch

        check.torch_model("model", model)
        check.function("loss_fn", loss_fn, "loss_fn(prediction, target) -> mean loss")
        if getattr(loss_fn, "reduction", "mean") != "mean" and denominator is None:
            raise ValueError(f"loss_fn must average over the batch (reduction='mean'), got "
                             f"reduction={loss_fn.reduction!r}; for another reduction pass "
                             "denominator=, what the loss divides its sum by")
        self.model, self.loss_fn = model, loss_fn
        notes = []
        if criterion is None:
            criterion = loss_fn
            smoothing = getattr(loss_fn, "label_smoothing", 0.0)
            if smoothing:  # the criterion is the loss a reader evaluates: unsmoothed
                criterion = copy.copy(loss_fn)
                criterion.label_smoothing = 0.0
                notes.append(f"the criterion is the training loss without its label smoothing "
                             f"({smoothing:g}); pass criterion= to choose another")
        self.criterion = check.function("criterion", criterion,
                                        "criterion(prediction, target) -> mean loss")
        self.penalty = None if penalty is None else check.function(
            "penalty", penalty, "penalty(model) -> scalar tensor")
        self.average = average_rule(average)
        self.forward = forward or (lambda module, inputs: module(inputs))
        check.function("forward", self.forward, "forward(model, inputs) -> prediction")
        self.denominator = denominator or (lambda p, t: _denominator(loss_fn, p, t))
        check.function("denominator", self.denominator, "denominator(prediction, target)")
        self.metrics = _check_metrics(metrics)
        self.data = data
        self.notes = tuple(notes)
        self._torch = torch
        # Looked up once: walking the module tree at every step costs more than the step's
        # extra forward pass on a small model.
        self._modules = list(model.modules())
        self._buffers = list(model.buffers())
        self._parameter = next(model.parameters(), None)
        # Moving statistics (batch normalization's running mean and variance): float buffers.
        self._statistics = [b for b in self._buffers if b.is_floating_point()]
        self._epochs = []  # closed epochs: dicts of measurements
        self._open = None  # the epoch being recorded
        self._pending = None  # what before() measured, until after()
        self._validation = None  # the validation pass being recorded

    # --- the protocol -----------------------------------------------------------------------

    def before(self, inputs, target, *, size: int | None = None) -> None:
        """At the step's weights, before the forward pass: see the module docstring."""
        if self._pending is not None:
            raise RuntimeError("before() was called twice without after(): call after(loss) "
                               "once per forward pass")
        if self._open is None:
            self._open = self._new_epoch()
        torch = self._torch
        saved = self._save()
        try:
            with torch.no_grad():
                _set_modes(self._modules, False)
                prediction = self.forward(self.model, inputs)
                inference = self.criterion(prediction, target)
                for metric in self._open["metrics"]["inference"]:
                    metric.update(target, prediction)
        finally:
            self._restore(saved)
        statistics = [b.detach().clone() for b in self._statistics]
        self._pending = {"inputs": inputs, "target": target, "rng": saved["rng"],
                         "statistics": statistics, "inference": inference.detach(),
                         "size": size}

    def after(self, loss, prediction=None, *, penalty=None, sample_weight=None,
              divided_by=1, logged=None) -> None:
        """After the loss, before ``optimizer.step()``: see the module docstring."""
        if self._pending is None:
            raise RuntimeError("after() needs before(inputs, target) first, at the step's "
                               "weights, before the forward pass")
        torch = self._torch
        pending, self._pending = self._pending, None
        target = pending["target"]
        with torch.no_grad():
            if prediction is None:
                prediction = self._replay(pending)
            prediction = prediction.detach()
            train = self.loss_fn(prediction, target)
            criterion = (train if self.criterion is self.loss_fn
                         else self.criterion(prediction, target))
            count = self.denominator(prediction, target)
            weighted = train
            if sample_weight is not None:
                weighted = self.weighted_loss(prediction, target, sample_weight, count=count)
            if penalty is None and self.penalty is not None:
                penalty = self.penalty(self.model)
            for metric in self._open["metrics"]["train"]:
                metric.update(target, prediction)
        divided_by = check.positive_number("divided_by", divided_by)
        size = pending["size"] if pending["size"] is not None else len(target)
        record = {"reported": _detached(loss), "divided_by": divided_by, "count": count,
                  "penalty": 0.0 if penalty is None else _detached(penalty),
                  "weighted": weighted, "train": train, "criterion": criterion,
                  "inference": pending["inference"]}
        epoch = self._open
        for key, value in record.items():
            epoch["terms"][key].append(value)
        epoch["sizes"].append(int(size))
        epoch["running"].append(math.nan if logged is None else float(logged))
        if self._keep_batches():
            epoch["batches"].append((pending["inputs"], target, pending["statistics"]))

    @contextlib.contextmanager
    def step(self, inputs, target, *, size: int | None = None):
        """``before`` on entry; the block calls ``step.record(loss, prediction, ...)``, which
        takes :meth:`after`'s arguments."""
        self.before(inputs, target, size=size)
        step = _StepBlock(self)
        yield step
        if not step.recorded:
            self._pending = None
            raise RuntimeError("the recorder's step block ended without step.record(loss, "
                               "prediction): call it where the loop computes its loss")

    def end_epoch(self, logged=None, *, metrics=None) -> None:
        """At the epoch's last weights: see the module docstring."""
        if self._pending is not None:
            raise RuntimeError("end_epoch() came between before() and after()")
        if self._open is None or not self._open["sizes"]:
            raise RuntimeError("end_epoch() needs at least one recorded step in the epoch")
        epoch, self._open = self._open, None
        self._measure_end(epoch)
        epoch["logged"] = None if logged is None else float(logged)
        epoch["logged_metrics"] = dict(metrics or {})
        self._epochs.append(epoch)

    def set_logged(self, logged, *, epoch: int = -1, metrics=None) -> None:
        """The logged number of an epoch already ended (a framework may compute it later)."""
        record = self._epochs[check.integer("epoch", epoch, minimum=-len(self._epochs))]
        record["logged"] = float(logged)
        record["logged_metrics"].update(metrics or {})

    def validate(self, inputs, target, loss, prediction=None, *, penalty=None,
                 sample_weight=None, divided_by=1, size: int | None = None) -> None:
        """One batch of a validation pass: ``loss`` is what the loop reports for it,
        ``prediction`` the output it came from (None: an inference-mode pass)."""
        torch = self._torch
        if self._validation is None:
            self._validation = {"terms": {key: [] for key in _TERMS}, "sizes": []}
        saved = self._save()
        try:
            with torch.no_grad():
                _set_modes(self._modules, False)
                inference_prediction = self.forward(self.model, inputs)
                inference = self.criterion(inference_prediction, target)
        finally:
            self._restore(saved)
        with torch.no_grad():
            prediction = inference_prediction if prediction is None else prediction.detach()
            train = self.loss_fn(prediction, target)
            count = self.denominator(prediction, target)
            weighted = train if sample_weight is None else self.weighted_loss(
                prediction, target, sample_weight, count=count)
            criterion = (train if self.criterion is self.loss_fn
                         else self.criterion(prediction, target))
        record = {"reported": _detached(loss),
                  "divided_by": check.positive_number("divided_by", divided_by),
                  "count": count, "penalty": 0.0 if penalty is None else _detached(penalty),
                  "weighted": weighted, "train": train, "criterion": criterion,
                  "inference": inference}
        for key, value in record.items():
            self._validation["terms"][key].append(value)
        self._validation["sizes"].append(int(size if size is not None else len(target)))

    def end_validation(self, logged, *, average=None) -> None:
        """The validation pass's logged number (``average``: its rule, by default the
        training loop's); it belongs to the epoch being recorded, or else the last one."""
        if self._validation is None:
            raise RuntimeError("end_validation() needs validate() calls first")
        record, self._validation = self._validation, None
        record["logged"] = float(logged)
        record["average"] = self.average if average is None else average_rule(average)
        target = self._open if self._open is not None else (
            self._epochs[-1] if self._epochs else None)
        if target is None:
            raise RuntimeError("end_validation() needs a recorded training epoch")
        target["validation"] = record

    def result(self, epoch: int = -1, *, history=None, check: bool = True):
        """The :class:`Reconciliation` of ``epoch`` (0-based, negative from the end) with
        every recorded epoch in ``epochs``; ``history`` is kept as the result's ``history``
        (default: a :class:`History` of the logged numbers). Raises
        :class:`ReconciliationError` if a part does not add up, unless ``check=False``."""
        if not self._epochs:
            raise RuntimeError("result() needs an ended epoch: call end_epoch(logged) first")
        missing = [k for k, e in enumerate(self._epochs) if e["logged"] is None]
        if missing:
            raise RuntimeError(f"epochs {missing} have no logged number: pass end_epoch("
                               "logged=...) or set_logged(...)")
        if history is None:
            history = History(self._history())
        epochs = tuple(self._reconcile(k, e, history) for k, e in enumerate(self._epochs))
        index = _epoch_index(epoch, len(epochs))
        chosen = replace(epochs[index], epochs=epochs)
        if check:
            check_residuals(chosen)
        return chosen

    # --- helpers a loop may use -------------------------------------------------------------

    def weighted_loss(self, prediction, target, sample_weight, *, count=None):
        """The training loss with per-sample weights, keeping the loss's own weighting and
        denominator: ``sum_i w_i * loss_i / count``, where ``loss_i`` sums sample ``i``'s
        (class-weighted) element losses and ``count`` is what the loss divides by. With unit
        weights it is ``loss_fn(prediction, target)``, to float rounding."""
        torch = self._torch
        if getattr(self.loss_fn, "reduction", None) is None:
            raise TypeError(f"loss_fn must be a torch.nn loss with reduction='mean' when "
                            f"sample weights are given (its per-sample values are weighted), "
                            f"got {type(self.loss_fn).__name__}")
        per_element = copy.copy(self.loss_fn)
        per_element.reduction = "none"
        values = per_element(prediction, target)
        values = values.reshape(len(values), -1).sum(dim=1)
        weights = torch.as_tensor(sample_weight, dtype=values.dtype, device=values.device)
        if count is None:
            count = self.denominator(prediction, target)
        return (values * weights.reshape(-1)).sum() / count

    # --- internals --------------------------------------------------------------------------

    def _new_epoch(self) -> dict:
        metrics = {key: [_fresh(m) for m in self.metrics]
                   for key in ("train", "inference", "inference_end", "final", "evaluated")}
        return {"terms": {key: [] for key in _TERMS}, "sizes": [], "running": [],
                "batches": [], "metrics": metrics, "validation": None}

    def _keep_batches(self) -> bool:
        # The epoch's batches are kept (references, one epoch's data) only when the last
        # weights must be measured batch by batch: with moving statistics, or without data=.
        return bool(self._statistics) or self.data is None

    def _save(self) -> dict:
        torch = self._torch
        device = _device(self._parameter)
        return {"rng": torch.get_rng_state(),
                "cuda": None if device is None else (device, torch.cuda.get_rng_state(device)),
                "buffers": [b.detach().clone() for b in self._buffers],
                "modes": [m.training for m in self._modules]}

    def _restore(self, saved: dict, *, rng=None) -> None:
        torch = self._torch
        torch.set_rng_state(saved["rng"] if rng is None else rng)
        if saved["cuda"] is not None:
            torch.cuda.set_rng_state(saved["cuda"][1], saved["cuda"][0])
        with torch.no_grad():
            for buffer, value in zip(self._buffers, saved["buffers"]):
                buffer.copy_(value)
        for module, mode in zip(self._modules, saved["modes"]):
            module.__dict__["training"] = mode

    def _replay(self, pending):
        """The step's training-mode prediction again, from the random-number state the step
        started with; the weights must still be the step's (before ``optimizer.step()``).
        Batch normalization is kept from updating its statistics a second time: an in-place
        write to them between the forward pass and ``backward()`` would break the backward."""
        torch = self._torch
        rng = torch.get_rng_state()
        device = _device(self._parameter)
        cuda = None if device is None else torch.cuda.get_rng_state(device)
        norms = [m for m in self._modules if isinstance(m, torch.nn.modules.batchnorm._NormBase)
                 and m.track_running_stats]
        buffers = [(b, b.detach().clone()) for b in self._buffers]
        try:
            for module in norms:
                module.track_running_stats = False
            torch.set_rng_state(pending["rng"])
            return self.forward(self.model, pending["inputs"])
        finally:
            for module in norms:
                module.track_running_stats = True
            torch.set_rng_state(rng)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, device)
            for buffer, value in buffers:  # a custom module's buffer the pass wrote to
                if not torch.equal(buffer, value):
                    with torch.no_grad():
                        buffer.copy_(value)

    def _measure_end(self, epoch: dict) -> None:
        """At the epoch's last weights, inference mode: each kept batch with its step's moving
        statistics and with the last ones, and the data."""
        torch = self._torch
        saved = self._save()
        measured = {"inference_end": [], "final": [], "evaluated": None}
        metrics = epoch["metrics"]
        try:
            with torch.no_grad():
                _set_modes(self._modules, False)
                for inputs, target, statistics in epoch["batches"]:
                    if self._statistics:
                        for buffer, value in zip(self._statistics, statistics):
                            buffer.copy_(value)
                        prediction = self.forward(self.model, inputs)
                        measured["inference_end"].append(self.criterion(prediction, target))
                        for metric in metrics["inference_end"]:
                            metric.update(target, prediction)
                        for buffer, value in zip(self._buffers, saved["buffers"]):
                            buffer.copy_(value)
                    prediction = self.forward(self.model, inputs)
                    measured["final"].append(self.criterion(prediction, target))
                    for metric in metrics["final"]:
                        metric.update(target, prediction)
                if self.data is not None:
                    total, count = 0.0, 0.0
                    for inputs, target in self.data:
                        prediction = self.forward(self.model, inputs)
                        weight = float(self.denominator(prediction, target))
                        total += float(self.criterion(prediction, target)) * weight
                        count += weight
                        for metric in metrics["evaluated"]:
                            metric.update(target, prediction)
                    measured["evaluated"] = total / count
        finally:
            self._restore(saved)
        epoch["terms"] = {key: _floats(values) for key, values in epoch["terms"].items()}
        for key in ("inference_end", "final"):
            epoch[key] = _floats(measured[key])
        epoch["evaluated"] = measured["evaluated"]
        if self.data is None:
            metrics["evaluated"] = metrics["final"]
        epoch["batches"] = []  # the epoch's data are let go
        validation = epoch.get("validation")
        if validation is not None and not isinstance(validation["terms"]["reported"],
                                                     np.ndarray):
            validation["terms"] = {k: _floats(v) for k, v in validation["terms"].items()}

    def _steps(self, epoch: dict) -> tuple[Step, ...]:
        terms, n = epoch["terms"], len(epoch["sizes"])
        inference_end = epoch["inference_end"] if len(epoch["inference_end"]) else None
        final = epoch["final"] if len(epoch["final"]) else None
        if inference_end is None and final is not None:  # no moving statistics
            inference_end, final = final, None
        return tuple(Step(size=epoch["sizes"][t], running=epoch["running"][t],
                          **{key: float(terms[key][t]) for key in _TERMS},
                          inference_end=math.nan if inference_end is None
                          else float(inference_end[t]),
                          final=math.nan if final is None else float(final[t]))
                     for t in range(n))

    def _reconcile(self, index: int, epoch: dict, history):
        steps = self._steps(epoch)
        evaluated = epoch["evaluated"]
        if evaluated is None:  # over the epoch's own batches
            counts = np.array([s.count for s in steps])
            last = [s.final if not math.isnan(s.final) else s.inference_end for s in steps]
            evaluated = float(counts @ np.array(last) / counts.sum())
        common = dict(history=history, epoch=index, criterion_differs=self.criterion
                      is not self.loss_fn, criterion=self._criterion_words(),
                      notes=self.notes)
        with self._torch.no_grad():
            end_penalty = 0.0 if self.penalty is None else float(self.penalty(self.model))
        metrics = {}
        for position, metric in enumerate(self.metrics):
            values = {key: ms[position].result() for key, ms in epoch["metrics"].items()
                      if ms[position].count}
            values["weighted"] = values["train"]  # the course's metrics are unweighted
            values["logged"] = epoch["logged_metrics"].get(metric.name, values["train"])
            if not self._statistics:
                values.pop("inference_end", None)
                values["inference_end"] = values.pop("final", values["evaluated"])
            metrics[metric.name] = decompose_metric(values, name=metric.name, epoch=index,
                                                    history=history)
        result = decompose(steps, logged=epoch["logged"], evaluated=evaluated,
                           average=self.average, metrics=metrics, **common)
        if epoch["validation"] is not None:
            val = epoch["validation"]
            val_steps = tuple(Step(size=val["sizes"][t],
                                   **{k: float(val["terms"][k][t]) for k in _TERMS})
                              for t in range(len(val["sizes"])))
            counts = np.array([s.count for s in val_steps])
            val_evaluated = float(counts @ np.array([s.inference for s in val_steps])
                                  / counts.sum())
            validation = decompose(val_steps, logged=val["logged"], evaluated=val_evaluated,
                                   average=val["average"], name="val_loss",
                                   fixed_weights=True, **common)
            result = replace(result, validation=validation_gap(result, validation))
        return replace(result, end_penalty=end_penalty)

    def _criterion_words(self) -> str:
        if self.criterion is self.loss_fn:
            return "the training loss"
        smoothing = getattr(self.loss_fn, "label_smoothing", 0.0)
        if smoothing and type(self.criterion) is type(self.loss_fn) and not getattr(
                self.criterion, "label_smoothing", 0.0):
            return f"the training loss without its label smoothing ({smoothing:g})"
        return f"{_name(self.criterion)}, while training used {_name(self.loss_fn)}"

    def _history(self) -> dict:
        history = {"loss": [e["logged"] for e in self._epochs]}
        for metric in self.metrics:
            history[metric.name] = [e["logged_metrics"].get(metric.name, math.nan)
                                    for e in self._epochs]
        if any(e["validation"] is not None for e in self._epochs):
            history["val_loss"] = [math.nan if e["validation"] is None
                                   else e["validation"]["logged"] for e in self._epochs]
        return history


class _StepBlock:
    def __init__(self, recorder: Recorder):
        self.recorder, self.recorded = recorder, False

    def record(self, loss, prediction=None, **kwargs) -> None:
        """The step's loss and prediction: :meth:`Recorder.after`'s arguments."""
        self.recorder.after(loss, prediction, **kwargs)
        self.recorded = True


def _denominator(loss_fn, prediction, target):
    """What a ``torch.nn`` loss with ``reduction='mean'`` divides its sum by: the kept targets'
    class weights for a cross-entropy with class indices, the elements for an elementwise
    loss, the samples (and positions) otherwise."""
    import torch

    name = type(loss_fn).__name__
    if name in ("CrossEntropyLoss", "NLLLoss") and not torch.is_floating_point(target):
        kept = target != getattr(loss_fn, "ignore_index", -100)
        weight = getattr(loss_fn, "weight", None)
        if weight is None:
            return kept.sum().to(prediction.dtype)
        return torch.where(kept, weight[torch.where(kept, target, 0)], 0).sum()
    if name in _ELEMENTWISE:
        if prediction.shape == target.shape:
            return float(prediction.numel())
        return float(np.prod(torch.broadcast_shapes(prediction.shape, target.shape)))
    if name == "CrossEntropyLoss":  # probabilities as targets: a mean over the positions
        return float(np.prod(target.shape) / target.shape[1]) if target.ndim > 1 else 1.0
    return float(len(target))


def _detached(value):
    return value.detach() if hasattr(value, "detach") else float(value)


def _floats(values) -> np.ndarray:
    """A list of 0-d tensors and floats as float64, read from the device once."""
    import torch

    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if len(tensors) == len(values) and tensors and len({t.device for t in tensors}) == 1:
        return torch.stack([t.reshape(()) for t in tensors]).double().cpu().numpy()
    return np.array([float(v) for v in values], dtype=np.float64)


def _device(parameter):
    return parameter.device if parameter is not None and parameter.is_cuda else None


def _set_modes(modules, training: bool) -> None:
    """``model.eval()`` without its recursion: the flag each module's forward reads."""
    for module in modules:
        module.__dict__["training"] = training


def _fresh(metric):
    copied = copy.deepcopy(metric)
    copied.reset()
    return copied


def _name(loss) -> str:
    return type(loss).__name__ if hasattr(loss, "forward") else getattr(loss, "__name__",
                                                                          repr(loss))


def _check_metrics(metrics) -> list:
    metrics = check.sequence("metrics", metrics)
    for metric in metrics:
        if not all(hasattr(metric, verb) for verb in ("update", "result", "reset", "total",
                                                      "count", "name")):
            raise TypeError(f"metrics must hold companion.metrics objects, got {metric!r}")
    check.distinct_names("metrics", [metric.name for metric in metrics])
    return metrics


def _epoch_index(epoch, epochs: int) -> int:
    """``epoch`` as a 0-based index into ``epochs`` epochs (negative: from the end)."""
    epoch = check.integer("epoch", epoch, minimum=-epochs)
    if epoch >= epochs:
        raise ValueError(f"epoch must be from {-epochs} to {epochs - 1} for a run of {epochs} "
                         f"epoch(s) (0-based, or negative from the end), got {epoch}")
    return epoch % epochs


# --- the course's loop, explained -----------------------------------------------------------


def explain_torch(model, x, y, *, loss_fn, optimizer, batch_size: int, epochs: int = 1,
                  penalty=None, sample_weight=None, metrics=(), epoch: int = -1,
                  criterion=None, validation_data=None):
    """Train a ``torch.nn.Module`` like :func:`companion.torch_loop.train` and split every
    epoch's logged loss into its parts; returns the :class:`Reconciliation` of ``epoch``
    (0-based, negative from the end), with all epochs in ``epochs``.

    Without ``sample_weight`` the log, the weights and the random draws are exactly those of
    ``torch_loop.train(model, x, y, loss_fn=..., optimizer=..., batch_size=..., epochs=...,
    penalty=..., metrics=...)`` (no shuffling). ``sample_weight`` weights each sample's loss
    by :meth:`Recorder.weighted_loss`, which keeps the loss's own class weights and ignored
    targets. ``criterion`` is what ``evaluated`` measures (default ``loss_fn``, without its
    label smoothing). ``validation_data=(x_val, y_val)`` adds a validation pass after each
    epoch, logged as ``val_loss`` (size-weighted, inference mode), and the epoch's
    :class:`ValidationGap`. ``metrics`` are :mod:`companion.metrics` objects. ``history`` is a
    :class:`TrainingLog`.
    """
    require("torch")
    import torch

    x, y, weights, metrics, validation = _check_torch(
        model, x, y, loss_fn, optimizer, batch_size, epochs, penalty, sample_weight, metrics,
        validation_data, epoch)
    data = [(x[s], y[s]) for s in batches(len(x), batch_size)]
    recorder = Recorder(model, loss_fn=loss_fn, criterion=criterion, penalty=penalty,
                        average="size-weighted", metrics=metrics, data=data)
    log = TrainingLog(keys=("loss", *(m.name for m in metrics)))
    if validation:
        log.history["val_loss"] = []  # one value per epoch, no per-step record
    for index in range(epochs):
        model.train()
        for metric in metrics:
            metric.reset()
        steps = []
        for step in batches(len(x), batch_size):
            x_batch, y_batch = x[step], y[step]
            recorder.before(x_batch, y_batch)
            before = [(metric.total, metric.count) for metric in metrics]
            optimizer.zero_grad()
            y_pred = model(x_batch)
            loss = (loss_fn(y_pred, y_batch) if weights is None
                    else recorder.weighted_loss(y_pred, y_batch, weights[step]))
            step_penalty = None if penalty is None else penalty(model)
            if step_penalty is not None:
                loss = loss + step_penalty
            loss.backward()
            for metric in metrics:
                metric.update(y_batch, y_pred.detach())
            recorder.after(loss, y_pred, penalty=step_penalty,
                           sample_weight=None if weights is None else weights[step])
            optimizer.step()
            batch = {m.name: (m.total - total) / (m.count - count)
                     for m, (total, count) in zip(metrics, before)}
            steps.append((len(x_batch), loss.detach(), batch,
                          {m.name: m.result() for m in metrics}))
        _log_epoch(log, index, steps)
        recorder.end_epoch(log.history["loss"][index],
                           metrics={m.name: log.history[m.name][index] for m in metrics})
        if validation:
            val_loss = _validate(model, recorder, loss_fn, *validation, batch_size)
            log.history["val_loss"].append(val_loss)
    return recorder.result(epoch, history=log)


def _log_epoch(log: TrainingLog, index: int, steps) -> None:
    """As torch_loop: one read of the epoch's losses, then the running mean of the step
    losses weighted by the step sizes, in Python floats."""
    import torch

    losses = torch.stack([step_loss for _, step_loss, _, _ in steps]).tolist()
    total, count = 0.0, 0
    for step, ((size, _, batch, running), loss) in enumerate(zip(steps, losses)):
        check.finite_loss(loss, index, step)
        total, count = total + loss * size, count + size
        log.add_batch(epoch=index, step=step, size=size, batch={"loss": loss, **batch},
                      running={"loss": total / count, **running})
    values = dict(log.batches[-1].running)
    log.history["loss"].append(values.pop("loss"))
    for key, value in values.items():
        log.history[key].append(value)


def _validate(model, recorder: Recorder, loss_fn, x_val, y_val, batch_size: int) -> float:
    """The validation pass as ``fit`` runs it: inference mode, at the epoch's last weights,
    the size-weighted mean of the batch losses."""
    import torch

    was_training, total, count = model.training, 0.0, 0
    model.eval()
    with torch.no_grad():
        for step in batches(len(x_val), batch_size):
            prediction = model(x_val[step])
            loss = loss_fn(prediction, y_val[step])
            recorder.validate(x_val[step], y_val[step], loss, prediction)
            total, count = total + float(loss) * len(prediction), count + len(prediction)
    model.train(was_training)
    recorder.end_validation(total / count, average="size-weighted")
    return total / count


def _check_torch(model, x, y, loss_fn, optimizer, batch_size, epochs, penalty, sample_weight,
                 metrics, validation_data, epoch):
    """Refuse bad arguments by name, before any training; return x, y, the weights and the
    validation arrays as tensors, and the metrics."""
    import torch

    device, dtype = check.torch_training(model, loss_fn, optimizer, penalty)
    check.positive_int("batch_size", batch_size)
    check.positive_int("epochs", epochs)
    _epoch_index(epoch, epochs)
    if sample_weight is not None and getattr(loss_fn, "reduction", None) is None:
        raise TypeError(f"loss_fn must be a torch.nn loss with reduction='mean' when "
                        f"sample_weight is given (its per-sample values are weighted), got "
                        f"{type(loss_fn).__name__}")
    metrics = _check_metrics(metrics)
    x = check.torch_tensor("x", x, device=device, float_dtype=dtype)
    y = check.torch_tensor("y", y, device=device, float_dtype=dtype, length=len(x))
    weights = check.sample_weights("sample_weight", sample_weight, length=len(x))
    if weights is not None:
        weights = torch.from_numpy(weights).to(dtype).to(device)
    check.torch_prediction_shape(model, loss_fn, x, y)  # as torch_loop does
    validation = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (x_val, y_val), got "
                            f"{type(validation_data).__name__}")
        x_val = check.torch_tensor("validation_data[0]", validation_data[0], device=device,
                                   float_dtype=dtype)
        y_val = check.torch_tensor("validation_data[1]", validation_data[1], device=device,
                                   float_dtype=dtype, length=len(x_val))
        validation = (x_val, y_val)
    return x, y, weights, metrics, validation
