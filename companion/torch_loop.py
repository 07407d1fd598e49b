"""A reference training loop for PyTorch that logs what ``keras.Model.fit`` would log.

The loop body is the ordinary PyTorch loop (predict, loss, ``backward``, ``step``); what it
adds is the bookkeeping of the numbers, done the Keras way so the two frameworks can be
compared key by key:

* the epoch ``"loss"`` is the mean of the batch losses weighted by batch *size* (a short last
  batch counts for fewer samples);
* a metric is a per-sample running mean over the epoch (see :mod:`companion.metrics`);
* batch values are computed on the predictions made *before* the optimizer step;
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
    trackers = [Mean(name="loss"), *(_as_metric(m) for m in _sequence("metrics", metrics))]
    keys = tuple(m.name for m in trackers)

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = _as_tensor("x", x, torch, device)
    y = _as_tensor("y", y, torch, device, length=len(x))

    log = TrainingLog(keys=keys)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        for m in trackers:
            m.reset()
        # Shuffling permutes the data once per epoch; batches are then contiguous slices (views).
        x_epoch, y_epoch = (x, y)
        if shuffle:
            order = torch.from_numpy(rng.permutation(len(x))).to(device)
            x_epoch, y_epoch = x[order], y[order]
        micro_batches = [slice(i, min(i + batch_size, len(x))) for i in range(0, len(x), batch_size)]
        for step, first in enumerate(range(0, len(micro_batches), accumulation_steps)):
            group = micro_batches[first : first + accumulation_steps]
            step_size = sum(batch.stop - batch.start for batch in group)
            optimizer.zero_grad()
            # A running mean is a total over a count: what this step adds to each, divided,
            # is the step's own value.
            before = [(m.total, m.count) for m in trackers]
            for batch in group:
                x_batch, y_batch = x_epoch[batch], y_epoch[batch]
                y_pred = model(x_batch)
                _check_shapes(loss_fn, y_pred, y_batch)
                loss = loss_fn(y_pred, y_batch)
                if penalty is not None:
                    loss = loss + penalty(model)
                # backward() adds to .grad: weighting each micro-batch's mean by its share of the
                # step's samples makes the sum the mean gradient over all of them (k=1: weight 1).
                (loss * (len(x_batch) / step_size)).backward()

                # y_pred was computed before optimizer.step(): the logged numbers describe the
                # weights as they were at the start of the step.
                trackers[0].update(loss.item(), sample_weight=len(x_batch))
                for m in trackers[1:]:
                    m.update(y_batch, y_pred.detach())
            optimizer.step()
            log.add_batch(
                epoch=epoch,
                step=step,
                size=step_size,
                batch={m.name: (m.total - t) / (m.count - c) for m, (t, c) in zip(trackers, before)},
                running={m.name: m.result() for m in trackers},
            )
        log.end_epoch(log.batches[-1].running)
    return log


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


def _check_shapes(loss_fn, y_pred, y_batch) -> None:
    if type(loss_fn).__name__ in _ELEMENTWISE_LOSSES and y_pred.shape != y_batch.shape:
        raise ValueError(
            f"y has shape {tuple(y_batch.shape)[1:]} per sample but the model predicts "
            f"{tuple(y_pred.shape)[1:]}: {type(loss_fn).__name__} would broadcast them against "
            "each other and average the wrong pairs; reshape y to the prediction's shape"
        )
