"""A reference training loop for PyTorch that logs what ``keras.Model.fit`` would log.

Read :func:`train` top to bottom: it is the ordinary PyTorch loop (predict, loss, ``backward``,
``step``) with the numbers kept the Keras way, so that a Keras run and a PyTorch run can be
compared key by key:

* the epoch ``"loss"`` is the mean of the batch losses weighted by the batch *size* (a short
  last batch counts for fewer samples);
* a metric is a per-sample running mean over the epoch (see :mod:`companion.metrics`);
* the logged values are computed on the predictions made *before* the optimizer step;
* with ``accumulation_steps=k`` one optimizer step accumulates the gradients of ``k``
  micro-batches, each micro-batch's mean loss weighted by its share of the step's samples:
  exactly the step of one batch of ``k * batch_size`` samples, short last batches included.

>>> import torch, numpy as np
>>> model = torch.nn.Linear(3, 1)
>>> log = train(model, np.ones((10, 3)), np.ones((10, 1)), loss_fn=torch.nn.MSELoss(),
...             optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batch_size=4, epochs=2)
>>> sorted(log.history), log.sizes().tolist()
(['loss'], [4, 4, 2, 4, 4, 2])
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check
from companion.batching import batches
from companion.metrics import Mean, read
from companion.training_log import TrainingLog
from companion.versions import require

__all__ = ["train"]


def train(model, x, y, *, loss_fn, optimizer, batch_size: int, epochs: int, metrics=(),
          shuffle: bool = False, seed: int | None = None, penalty=None,
          accumulation_steps: int = 1) -> TrainingLog:
    """Train a ``torch.nn.Module`` on arrays or tensors, logging steps the Keras way.

    ``loss_fn(prediction, target)`` is a torch loss with its default mean reduction.
    ``metrics`` are :mod:`companion.metrics` objects or callables ``f(y_true, y_pred)
    -> float`` (averaged over the epoch weighted by batch size), keyed by their ``name``
    (or ``__name__``); each is reset when an epoch starts and ends holding the last one.
    ``penalty(model) -> scalar tensor``, if given, is added to the loss: the counterpart
    of Keras' ``model.losses``. An optimizer's ``weight_decay`` is *not* in the loss.
    ``shuffle=True`` draws a new order every epoch from ``seed``.

    ``accumulation_steps=k`` makes one optimizer step of ``k`` micro-batches of
    ``batch_size`` samples. The log keeps one record per *optimizer step*, sized by the
    step's samples, so the log and the weights equal those of one batch of
    ``k * batch_size`` up to float rounding (for models without batch normalization).

    The losses and the metrics' totals and counts stay on the model's device during an
    epoch and are read back once, after it: a NaN or infinite loss then raises
    ``ValueError`` naming the epoch and the step, and a metric raises what it found
    wrong in its inputs (a label out of range). A callable metric that returns a tensor
    stays on the device too; one that returns a Python number is read at every step.
    """
    require("torch")
    import torch

    x, y, metrics, batch_size, accumulation_steps = _check_arguments(
        model, x, y, loss_fn, optimizer, metrics, penalty, batch_size, epochs, shuffle,
        seed, accumulation_steps)
    log = TrainingLog(keys=("loss", *(metric.name for metric in metrics)))
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        x_epoch, y_epoch = x, y
        if shuffle:  # a new order every epoch; batches are slices of the permuted copy
            order = torch.from_numpy(rng.permutation(len(x))).to(x.device)
            x_epoch, y_epoch = x[order], y[order]
        for metric in metrics:
            metric.reset()  # a metric averages over one epoch, as in fit()
        steps = []
        for step in batches(len(x), batch_size * accumulation_steps):
            x_step, y_step = x_epoch[step], y_epoch[step]
            size = len(x_step)
            optimizer.zero_grad()
            losses = []  # of its micro-batches: one, unless accumulating gradients
            for x_batch, y_batch in _micro_batches(x_step, y_step, batch_size):
                y_pred = model(x_batch)
                loss = loss_fn(y_pred, y_batch)
                if penalty is not None:
                    loss = loss + penalty(model)
                # backward() adds to .grad: weighting each micro-batch's mean loss by
                # its share of the step's samples makes .grad the step's mean gradient.
                share = len(y_pred) / size  # 1, without accumulation
                weighted = loss if share == 1 else loss * share
                weighted.backward()
                losses.append(weighted.detach())
                for metric in metrics:
                    metric.update(y_batch, y_pred.detach())
            optimizer.step()
            # Loss and metrics were computed before step(): they describe the weights
            # the step started from. All of them are still on the model's device.
            steps.append((size, losses, [(m.total, m.count) for m in metrics]))

        # One read of the epoch's numbers: a read per step would make a GPU wait for
        # the host at every step. Then the Keras way: the running epoch loss is the mean
        # of the step losses weighted by the step sizes; a metric's value for a step is
        # what the step added to its total over what it added to its count.
        total, count, before = 0.0, 0, [(0.0, 0.0)] * len(metrics)
        for index, (size, losses, after) in enumerate(read(steps)):
            loss = sum(losses)
            check.finite_loss(loss, epoch, index)
            total, count = total + loss * size, count + size
            batch, running = {"loss": loss}, {"loss": total / count}
            for m, (t, c), (t0, c0) in zip(metrics, after, before):
                batch[m.name], running[m.name] = (t - t0) / (c - c0), t / c
            log.add_batch(epoch=epoch, step=index, size=size, batch=batch,
                          running=running)
            before = after
        log.end_epoch({"loss": total / count, **{m.name: m.result() for m in metrics}})
    return log


def _micro_batches(x_step, y_step, batch_size: int):
    """The micro-batches of one optimizer step: the step itself, unless it holds more than
    ``batch_size`` samples (gradient accumulation)."""
    if len(x_step) <= batch_size:
        return [(x_step, y_step)]
    return [(x_step[micro], y_step[micro]) for micro in batches(len(x_step), batch_size)]


# --- argument checks: all of them, before the first step ------------------------------------------


def _check_arguments(model, x, y, loss_fn, optimizer, metrics, penalty, batch_size, epochs, shuffle,
                     seed, accumulation_steps):
    """Refuse bad arguments by name; return ``x`` and ``y`` as tensors, the metric objects, and
    the two sizes as Python ints (a NumPy int32 product could overflow)."""
    device, dtype = check.torch_training(model, loss_fn, optimizer, penalty)
    batch_size = check.positive_int("batch_size", batch_size)
    check.non_negative_int("epochs", epochs)
    check.boolean("shuffle", shuffle)
    check.optional_seed("seed", seed)
    accumulation_steps = check.positive_int("accumulation_steps", accumulation_steps)
    metrics = [_as_metric(metric) for metric in check.sequence("metrics", metrics)]
    check.distinct_names("metrics", [metric.name for metric in metrics])
    # The data go where the trainable weights are, in their float type (float32 unless the
    # model was converted, e.g. with model.double()).
    x = check.torch_tensor("x", x, device=device, float_dtype=dtype)
    y = check.torch_tensor("y", y, device=device, float_dtype=dtype, length=len(x))
    check.torch_prediction_shape(model, loss_fn, x, y)
    return x, y, metrics, batch_size, accumulation_steps


class _CallableMetric(Mean):
    """Wraps ``f(y_true, y_pred) -> float`` as a running mean of batch values weighted by size."""

    def __init__(self, fn, name: str):
        super().__init__(name=name)
        self.fn = fn

    def update(self, y_true, y_pred) -> None:
        value = self.fn(y_true, y_pred)
        if not _one_number(value):
            raise TypeError(f"metrics: the function {self.name!r} must return one number (a "
                            f"float or a tensor of one element), got "
                            f"{type(value).__name__}: {check._short_repr(value)}")
        # A tensor stays on its device: float() of it would make the host wait for a GPU.
        value = value.reshape(()) if hasattr(value, "reshape") else float(value)
        super().update(value, sample_weight=len(y_true))


def _one_number(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if hasattr(value, "shape") and hasattr(value, "reshape"):  # an array or a tensor
        return int(np.prod(tuple(value.shape))) == 1
    return isinstance(value, (int, float, np.number))


def _as_metric(metric):
    if hasattr(metric, "update_state"):  # a Keras metric: called, it would update and never reset
        raise TypeError(f"metrics must hold companion.metrics objects or callables, got the Keras "
                        f"metric {type(metric).__name__}: use its companion.metrics counterpart")
    if all(hasattr(metric, verb) for verb in ("update", "result", "reset", "total", "count")):
        return metric
    if callable(metric):
        return _CallableMetric(metric, getattr(metric, "name", None) or getattr(metric, "__name__", "metric"))
    raise TypeError("metrics must hold companion.metrics objects (with update, result, reset, total and "
                    f"count) or callables f(y_true, y_pred) -> float, got {metric!r}")
