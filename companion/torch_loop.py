"""A reference training loop for PyTorch that logs what ``keras.Model.fit`` would log.

The loop body is the ordinary PyTorch loop (predict, loss, ``backward``, ``step``); what it
adds is the bookkeeping of the numbers, done the Keras way so the two frameworks can be
compared key by key:

* the epoch ``"loss"`` is the mean of the batch losses weighted by batch *size* (a short last
  batch counts for fewer samples);
* a metric is a per-sample running mean over the epoch (see :mod:`companion.metrics`);
* batch values are computed on the predictions made *before* the optimizer step;
* nothing is copied to the host during an epoch (no ``.item()`` per step, which would make a GPU
  wait for Python): each step's loss and predictions stay on the device, and the log is
  computed from them once the epoch ends, in one host transfer;
* with ``accumulation_steps=k`` each optimizer step accumulates the gradients of ``k``
  micro-batches of ``batch_size`` samples, each micro-batch's mean loss weighted by its share of
  the step's samples, so that the step uses the mean gradient over *all* of them: exactly the
  step of one batch of ``k * batch_size`` samples, short last batches included.

>>> import torch, numpy as np
>>> model = torch.nn.Linear(3, 1)
>>> log = train(model, np.ones((10, 3)), np.ones((10, 1)), loss_fn=torch.nn.MSELoss(),
...             optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batch_size=4, epochs=2)
>>> sorted(log.history)
['loss']
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from companion import _validation as check
from companion.metrics import Mean
from companion.training_log import TrainingLog
from companion.versions import require

__all__ = ["train"]

# Losses that compare predictions and targets element by element: with unequal shapes they
# broadcast silently, e.g. (N, 1) against (N,) becomes an (N, N) comparison.
_ELEMENTWISE_LOSSES = ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss")


def train(
    model,
    x,
    y,
    *,
    loss_fn,
    optimizer,
    batch_size: int,
    epochs: int,
    metrics=(),
    shuffle: bool = False,
    seed: int | None = None,
    penalty=None,
    accumulation_steps: int = 1,
) -> TrainingLog:
    """Train a ``torch.nn.Module`` on arrays or tensors, logging every step the Keras way.

    ``loss_fn`` is a torch loss module called as ``loss_fn(prediction, target)`` with its
    default mean reduction. ``metrics`` are :mod:`companion.metrics` objects (fresh state) or
    callables ``f(y_true, y_pred) -> float``, averaged over the epoch weighted by batch size
    and keyed by their ``name`` (or ``__name__``). ``penalty``, if given, is a callable
    ``penalty(model) -> scalar tensor`` added to the loss, the counterpart of Keras'
    ``model.losses`` (weight regularizers); optimizer ``weight_decay`` is *not* part of any
    logged loss. ``shuffle=True`` draws a new order every epoch from ``seed``.

    ``accumulation_steps=k`` makes one optimizer step from ``k`` consecutive micro-batches of
    ``batch_size`` samples (the last step of an epoch may have fewer, and a short last
    micro-batch). The log keeps one record per *optimizer step*, whose ``size`` is the step's
    sample count, so the log and the weights equal those of ``batch_size=k * batch_size,
    accumulation_steps=1`` up to float rounding, for any model without batch-dependent layers
    such as batch normalization. (A callable metric is the exception: its step
    value is the size-weighted mean of its micro-batch values, which equals its value on the
    whole step only for a per-sample mean.)

    The log is computed at the end of each epoch from what the epoch kept on the device: one
    loss per micro-batch and, when there are metrics, the predictions of every sample (one
    epoch of model outputs). A companion metric reads them all in one call (``per_sample``);
    a callable or another metric object is called batch by batch. Each metric object ends
    holding the last epoch's data. A loss that is NaN or infinite raises ``ValueError`` naming
    the epoch and micro-batch, once that epoch ends.
    """
    require("torch")
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a torch loss module or callable, got {loss_fn!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if penalty is not None and not callable(penalty):
        raise TypeError(f"penalty must be a callable penalty(model) -> tensor, got {penalty!r}")
    batch_size = check.positive_int("batch_size", batch_size)
    epochs = check.non_negative_int("epochs", epochs)
    shuffle = check.boolean("shuffle", shuffle)
    seed = check.optional_seed("seed", seed)
    accumulation_steps = check.positive_int("accumulation_steps", accumulation_steps)
    metric_objects = [_as_metric(m) for m in _sequence("metrics", metrics)]
    keys = ("loss", *(m.name for m in metric_objects))

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = _as_tensor("x", x, torch, device)
    y = _as_tensor("y", y, torch, device, length=len(x))

    log = TrainingLog(keys=keys)
    rng = np.random.default_rng(seed)
    micro_batches = [slice(i, min(i + batch_size, len(x))) for i in range(0, len(x), batch_size)]
    steps = [micro_batches[i : i + accumulation_steps] for i in range(0, len(micro_batches), accumulation_steps)]
    # backward() adds to .grad: weighting each micro-batch's mean loss by its share of the step's
    # samples makes the sum the mean gradient over all of them. A step of one micro-batch needs
    # no weight.
    layout = _Layout(steps)
    plan = [[(batch, None if len(group) == 1 else (batch.stop - batch.start) / step_size) for batch in group]
            for group, step_size in zip(steps, layout.step_sizes)]
    compare_shapes = type(loss_fn).__name__ in _ELEMENTWISE_LOSSES
    for epoch in range(epochs):
        model.train()
        # Shuffling permutes the data once per epoch; batches are then contiguous slices (views).
        x_epoch, y_epoch = (x, y)
        if shuffle:
            order = torch.from_numpy(rng.permutation(len(x))).to(device)
            x_epoch, y_epoch = x[order], y[order]
        # The step loop only trains: it keeps each micro-batch's loss and predictions on the
        # device, with no .item() and no host copy, so a GPU is never made to wait for the
        # host mid-epoch. The numbers are read back once, after the epoch (_log_epoch).
        losses, predictions = [], []
        for group in plan:
            optimizer.zero_grad()
            for batch, share in group:
                x_batch, y_batch = x_epoch[batch], y_epoch[batch]
                y_pred = model(x_batch)
                if compare_shapes and y_pred.shape != y_batch.shape:
                    _refuse_shapes(loss_fn, y_pred, y_batch)
                loss = loss_fn(y_pred, y_batch)
                if penalty is not None:
                    loss = loss + penalty(model)
                (loss if share is None else loss * share).backward()
                # Both were computed before optimizer.step(): the logged numbers describe the
                # weights as they were at the start of the step.
                losses.append(loss.detach())
                if metric_objects:
                    predictions.append(y_pred.detach())
            optimizer.step()
        _log_epoch(log, epoch, layout, torch.stack(losses).tolist(), y_epoch,
                   torch.cat(predictions) if metric_objects else None, metric_objects)
    return log


class _Layout:
    """How an epoch is cut, the same every epoch: micro-batches, and where each step ends."""

    def __init__(self, steps: list[list[slice]]):
        self.batches = [batch for group in steps for batch in group]
        self.starts = [batch.start for batch in self.batches]
        self.sizes = [float(batch.stop - batch.start) for batch in self.batches]
        self.step_sizes = [sum(batch.stop - batch.start for batch in group) for group in steps]
        self.ends = [index - 1 for index in itertools.accumulate(len(group) for group in steps)]


def _log_epoch(log, epoch, layout, losses, y_epoch, predictions, metric_objects) -> None:
    """Turn one epoch's losses and predictions into the log: batch values and running means.

    Every key is a running total over a running count, in float64: the loss adds batch loss
    times batch size, a metric its per-sample values. A step's own value is what the step added
    to the total over what it added to the count (with accumulation, over all its micro-batches).
    (Plain Python floats: for a few dozen numbers they cost less than NumPy calls.)
    """
    sizes = layout.sizes
    for index, value in enumerate(losses):
        if not math.isfinite(value):
            raise ValueError(
                f"the loss is {value} in epoch {epoch}, micro-batch {index} (of {len(losses)}): "
                "training diverged or the data holds NaN/inf; lower the learning rate or check the data"
            )
    # Each key's running (total, count) after every micro-batch, summed in order.
    running_sums = {"loss": _running([loss * size for loss, size in zip(losses, sizes)], sizes)}
    for metric in metric_objects:
        metric.reset()
        if hasattr(metric, "per_sample") and hasattr(metric, "add_values"):  # a companion metric: one call
            per_sample = metric.per_sample(y_epoch, predictions)
            metric.add_values(per_sample)  # the metric ends the epoch holding the epoch's data
            sums = np.add.reduceat(per_sample, layout.starts).tolist()
            running_sums[metric.name] = _running(sums, sizes)
        else:  # callables and other metric objects: one update per micro-batch, in order
            states = []
            for batch in layout.batches:
                metric.update(y_epoch[batch], predictions[batch])
                states.append((metric.total, metric.count))
            running_sums[metric.name] = states
    # Read at the last micro-batch of each step; a step's value is what it added over its count.
    batch_values, running_values = {}, {}
    for key, states in running_sums.items():
        at_ends = [states[end] for end in layout.ends]
        previous = [(0.0, 0.0), *at_ends[:-1]]
        batch_values[key] = [(t - t0) / (c - c0) for (t, c), (t0, c0) in zip(at_ends, previous)]
        running_values[key] = [t / c for t, c in at_ends]
    log.add_steps(epoch=epoch, sizes=layout.step_sizes, batch=batch_values, running=running_values)
    log.end_epoch({key: values[-1] for key, values in running_values.items()})


def _running(totals: list[float], counts: list[float]) -> list[tuple[float, float]]:
    """Running sums of two lists, added in order: [(t0, c0), (t0 + t1, c0 + c1), ...]."""
    states, total, count = [], 0.0, 0.0
    for t, c in zip(totals, counts):
        total += t
        count += c
        states.append((total, count))
    return states


class _CallableMetric(Mean):
    """Wraps ``f(y_true, y_pred) -> float`` as a running mean of batch values weighted by size."""

    def __init__(self, fn, name: str):
        super().__init__(name=name)
        self.fn = fn

    def update(self, y_true, y_pred) -> None:
        super().update(float(self.fn(y_true, y_pred)), sample_weight=len(y_true))


def _as_metric(metric):
    if all(hasattr(metric, attribute) for attribute in ("update", "result", "reset", "total", "count")):
        return metric
    if callable(metric):
        return _CallableMetric(metric, getattr(metric, "name", None) or getattr(metric, "__name__", "metric"))
    raise TypeError("metrics must hold companion.metrics objects (with update, result, reset, total and "
                    f"count) or callables f(y_true, y_pred) -> float, got {metric!r}")


def _sequence(name: str, values) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence, got {values!r}")
    return list(values)


def _as_tensor(name: str, value, torch, device, length: int | None = None):
    if isinstance(value, torch.Tensor):
        array = value.detach()
        check.data_array(name, array, length=length)  # the same checks as for NumPy input
        tensor = array
    else:
        array = check.data_array(name, value, length=length)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    # Float data goes to PyTorch's default float type (float32), as Keras does with floatx.
    if tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    elif tensor.dtype != torch.bool:
        tensor = tensor.to(torch.int64)
    return tensor.to(device)


def _refuse_shapes(loss_fn, y_pred, y_batch) -> None:
    raise ValueError(
        f"y has shape {tuple(y_batch.shape)[1:]} per sample but the model predicts "
        f"{tuple(y_pred.shape)[1:]}: {type(loss_fn).__name__} would broadcast them against "
        "each other and average the wrong pairs; reshape y to the prediction's shape"
    )
