"""Explain the loss a PyTorch Lightning run logged, every epoch, with a callback.

What Lightning logs (pytorch-lightning 2.6, read from its source, checked in
``tests/test_lightning.py``): ``self.log(name, value, on_epoch=True)`` in ``training_step``,
with the default ``reduce_fx="mean"``, logs for an epoch of steps ``t`` on one process

    S / B,   S = sum_t b_t v_t,   B = sum_t b_t                           (in float32)

``v_t`` the value logged at step ``t``, ``b_t`` its batch size: the length of the first tensor
Lightning finds in the batch (or ``self.log(batch_size=...)``). Under DDP each of the ``W``
processes sums its own batches, ``S_r`` and ``B_r``:

* ``sync_dist=False``: each process logs its own ``S_r / B_r``; loggers record rank 0's, the
  mean over its 1/W of the data;
* ``sync_dist=True``: ``(sum_r S_r / W) / (sum_r B_r / W)``, the second average taken in
  integers (``B_r`` are counts) and, on gloo, rounded down (pytorch-lightning#21859): the
  logged value is ``S / W / floor(B / W)``, too large by ``(B/W) / floor(B/W)`` when ``W``
  does not divide ``B``.

``val_loss`` logged in ``validation_step`` follows the same rule over the validation batches,
at the epoch's last weights, in eval mode.

:class:`Explain` is a thin adapter: on every process it feeds a
:class:`companion.reconcile_torch.Recorder` from Lightning's hooks (``on_train_batch_start``:
before the step, at its weights; ``on_before_backward``: the step's loss; ``on_validation_*``:
the validation pass), gathers the processes' step records at each epoch's end, and splits rank
0's logged number with :func:`companion.reconcile.decompose`, Lightning's rule (above) as the
averaging rule. It refuses, by name and before training, what it cannot replay.

>>> import torch, pytorch_lightning as pl                                  # doctest: +SKIP
>>> explain = Explain(loss_fn=torch.nn.functional.mse_loss, logged="train_loss")  # doctest: +SKIP
>>> pl.Trainer(max_epochs=2, callbacks=[explain]).fit(module, train, val)  # doctest: +SKIP
>>> r = explain.result()                # the last epoch; r.epochs[k], every epoch  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, replace

from companion import _validation as check

__all__ = ["Explain", "lightning_average"]

# The strategies whose processes each hold the whole model and step in lockstep.
_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy")
_PRECISIONS = ("32-true", "64-true", "32", "64")


def __getattr__(name: str):
    # The callback subclasses Lightning's Callback, so it is made on first use: importing
    # this module must not import PyTorch.
    if name == "Explain":
        import pytorch_lightning as pl

        cls = type("Explain", (_Explain, pl.Callback), {"__module__": __name__,
                                                       "__doc__": _Explain.__doc__})
        globals()["Explain"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Explain:
    """A Lightning callback that explains, each epoch, the loss ``training_step`` logged with
    ``self.log(logged, loss, on_epoch=True)`` and the ``val_loss`` of ``validation_step``.

    ``loss_fn(prediction, target)`` is the loss ``training_step`` computes, a batch mean;
    ``split(batch) -> (inputs, target)`` takes a batch apart (default: ``inputs, target =
    batch``); ``forward(module, inputs)`` makes the prediction (default ``module(inputs)``);
    ``criterion`` is what ``evaluated`` measures (default ``loss_fn``); ``val_logged=None``
    leaves validation out. After ``fit``, :meth:`result` returns the
    :class:`~companion.reconcile.Reconciliation` of an epoch, every epoch in ``epochs``.
    """

    def __init__(self, loss_fn, *, logged: str = "train_loss", val_logged: str | None = "val_loss",
                 split=None, forward=None, criterion=None):
        self.loss_fn = check.function("loss_fn", loss_fn, "loss_fn(prediction, target)")
        self.logged = _name("logged", logged)
        self.val_logged = None if val_logged is None else _name("val_logged", val_logged)
        self.split = _split if split is None else check.function(
            "split", split, "split(batch) -> (inputs, target)")
        self.forward = forward if forward is None else check.function(
            "forward", forward, "forward(module, inputs) -> prediction")
        self.criterion = criterion if criterion is None else check.function(
            "criterion", criterion, "criterion(prediction, target)")
        self._recorder = None
        self._stepping = False  # between on_train_batch_start and the step's backward()
        self._epochs = []  # one Reconciliation per epoch, rank 0's number
        self._sync = {}  # logged name -> sync_dist, as Lightning recorded the self.log call
        # A DDP run in child processes (ddp_spawn, ddp_fork, ddp_notebook) explains there;
        # rank 0 leaves the result in this file for the process that made the callback.
        self._pid = os.getpid()
        self._outbox = os.path.join(tempfile.gettempdir(),
                                    f"companion-lightning-{secrets.token_hex(8)}.json")

    # --- Lightning's hooks ------------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        refuse_what_cannot_be_explained(trainer, pl_module)
        self._recorder = self._new_recorder(pl_module)
        self._epochs, self._sync = [], {}

    def _new_recorder(self, pl_module):
        # One recorder an epoch: each epoch is explained once, at its end, then let go.
        from companion.reconcile_torch import Recorder

        return Recorder(pl_module, loss_fn=self.loss_fn, criterion=self.criterion,
                        forward=self.forward)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._recorder is None:  # not fitting
            return
        inputs, target = self.split(batch)
        self._recorder.before(inputs, target, size=_batch_size(batch))
        self._stepping = True

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if not self._stepping:
            return
        # Lightning divides the step's loss by accumulate_grad_batches before backward();
        # the log holds it undivided.
        self._recorder.after(loss.detach() * trainer.accumulate_grad_batches)
        self._stepping = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._stepping:
            raise RuntimeError(f"training_step returned no loss at batch {batch_idx}: a skipped "
                               "step cannot be explained (Lightning still logs its values)")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or self.val_logged is None or self._recorder is None:
            return
        if dataloader_idx:
            raise ValueError("val_logged can be explained for one validation dataloader, got "
                             f"a batch of dataloader {dataloader_idx}: pass val_logged=None")
        inputs, target = self.split(batch)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if getattr(loss, "ndim", None) != 0:  # validation_step returned no loss: recomputed
            loss = self.loss_fn((self.forward or _call)(pl_module, inputs), target)
        self._recorder.validate(inputs, target, loss, size=_batch_size(batch))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.val_logged is None or self._recorder is None:
            return
        self._sync[self.val_logged] = _logged_with_sync(trainer, self.val_logged)
        self._recorder.end_validation(_logged(trainer, self.val_logged), average="size-weighted")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._recorder is None:
            return
        self._sync[self.logged] = _logged_with_sync(trainer, self.logged)
        logged = _logged(trainer, self.logged)
        self._recorder.end_epoch(logged)
        local = self._recorder.result(check_residuals_=False)
        self._recorder = self._new_recorder(pl_module)
        mine = {"steps": [asdict(s) for s in local.steps], "logged": logged,
                "validation": None}
        if local.validation is not None:
            mine["validation"] = {"steps": [asdict(s) for s in local.validation.validation.steps],
                                  "logged": local.validation.val_loss}
        ranks = _gather(trainer, mine)
        self._epochs.append(explain_epoch(
            ranks, sync=self._sync[self.logged], val_sync=self._sync.get(self.val_logged, False),
            epoch=len(self._epochs), words={"criterion_differs": "training loss vs criterion"
                                            in local.parts, "criterion": local.criterion,
                                            "notes": local.notes + _padding_note(trainer, ranks)}))

    def on_fit_end(self, trainer, pl_module) -> None:
        if os.getpid() != self._pid and trainer.global_rank == 0 and self._epochs:
            descriptor = os.open(self._outbox, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                json.dump([e.to_dict() for e in self._epochs], file)

    # --- the result -------------------------------------------------------------------------

    def result(self, epoch: int = -1):
        """The :class:`~companion.reconcile.Reconciliation` of ``epoch`` (0-based, negative
        from the end) of the last ``fit``, every epoch in ``epochs``; raises
        :class:`~companion.reconcile.ReconciliationError` if an epoch's parts do not add up."""
        from companion.reconcile import History, check_residuals

        epochs = self._epochs or self._from_outbox()
        if not epochs:
            raise RuntimeError("no epoch was explained: call result() after trainer.fit(...) "
                               "with this callback in Trainer(callbacks=[...])")
        epoch = check.integer("epoch", epoch, minimum=-len(epochs))
        if epoch >= len(epochs):
            raise ValueError(f"epoch must be from {-len(epochs)} to {len(epochs) - 1}, got {epoch}")
        history = {"loss": [e.logged for e in epochs]}
        if any(e.validation is not None for e in epochs):
            history["val_loss"] = [math.nan if e.validation is None else e.validation.val_loss
                                   for e in epochs]
        epochs = tuple(replace(e, history=History(history)) for e in epochs)
        chosen = replace(epochs[epoch], epochs=epochs)
        check_residuals(chosen, what="Lightning")
        return chosen

    def _from_outbox(self) -> list:
        from companion.reconcile import Reconciliation

        if not os.path.exists(self._outbox):
            return []
        with open(self._outbox) as file:
            self._epochs = [Reconciliation.from_dict(e) for e in json.load(file)]
        os.remove(self._outbox)
        return self._epochs


# --- Lightning's rule -----------------------------------------------------------------------


def lightning_average(batch_sizes, *, sync: bool):
    """Lightning's epoch value of ``self.log(..., on_epoch=True)`` as an averaging rule over
    every process's steps, rank by rank (``batch_sizes[r]``: the batch sizes of rank ``r``'s
    steps, in order): see the module docstring.

    >>> rule = lightning_average([[2, 2, 1], [2, 2, 2]], sync=True)
    >>> rule([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], [2, 2, 1, 2, 2, 2])  # 17 / 2 / floor(11 / 2)
    1.7
    """
    from companion.reconcile import AVERAGES, Average

    ranks = [[check.positive_int("batch_sizes", n) for n in check.sequence("batch_sizes", sizes)]
             for sizes in check.sequence("batch_sizes", batch_sizes)]
    world, first, total = len(ranks), len(ranks[0]) if ranks else 0, sum(map(sum, ranks))
    if not ranks or not first:
        raise ValueError("batch_sizes must hold each process's batch sizes, rank 0's not empty")
    if world == 1 or (check.boolean("sync", sync) and total % world == 0):
        return AVERAGES["size-weighted"]
    if not sync:
        return Average(f"over rank 0's batches only, weighted by batch size (sync_dist=False: "
                       f"each of the {world} processes logs its own)",
                       lambda v, n: (n[:first] @ v[:first]) / n[:first].sum())
    return Average(f"weighted by batch size, divided by {world} x {total // world} instead of "
                   f"{total}: the count is averaged over the {world} processes in integers "
                   "(pytorch-lightning#21859)",
                   lambda v, n: (n @ v) / world / (total // world))


def explain_epoch(ranks, *, sync: bool, val_sync: bool, epoch: int, words: dict):
    """One epoch's :class:`~companion.reconcile.Reconciliation` from every process's step
    records (``ranks[r]``: ``{"steps", "logged", "validation"}``), rank 0's number explained."""
    from companion.reconcile import Step, decompose, validation_gap

    steps = [Step(**s) for rank in ranks for s in rank["steps"]]
    rule = lightning_average([[s["size"] for s in rank["steps"]] for rank in ranks], sync=sync)
    training = decompose(steps, logged=ranks[0]["logged"], evaluated=_evaluated(steps),
                         average=rule, epoch=epoch, **words)
    if ranks[0]["validation"] is None:
        return training
    val_steps = [Step(**s) for rank in ranks for s in rank["validation"]["steps"]]
    val_rule = lightning_average([[s["size"] for s in rank["validation"]["steps"]]
                                  for rank in ranks], sync=val_sync)
    counts = [s.count for s in val_steps]
    evaluated = sum(c * s.inference for c, s in zip(counts, val_steps)) / sum(counts)
    validation = decompose(val_steps, logged=ranks[0]["validation"]["logged"],
                           evaluated=evaluated, average=val_rule, name="val_loss",
                           fixed_weights=True, epoch=epoch, **words)
    return replace(training, validation=validation_gap(training, validation))


def refuse_what_cannot_be_explained(trainer, pl_module) -> None:
    """Raise, naming the setting, for a run whose steps the callback cannot replay."""
    strategy = type(trainer.strategy).__name__
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy {strategy} cannot be explained: each process must hold the "
                         "whole model (use a single device, or strategy='ddp', 'ddp_spawn', "
                         "'ddp_fork' or 'ddp_notebook')")
    if str(trainer.precision) not in _PRECISIONS:
        raise ValueError(f"precision={trainer.precision!r} cannot be explained: the loss is "
                         "computed under autocast, which the callback does not replay; use "
                         "precision='32-true'")
    if not pl_module.automatic_optimization:
        raise ValueError("automatic_optimization=False cannot be explained by the callback: with "
                         "manual optimization, call companion.reconcile_torch.Recorder in "
                         "training_step")
    if not (isinstance(trainer.val_check_interval, float) and trainer.val_check_interval == 1.0):
        raise ValueError(f"val_check_interval={trainer.val_check_interval!r} cannot be explained: "
                         "validation must run once, at the end of the epoch (1.0)")


# --- helpers --------------------------------------------------------------------------------


def _name(argument: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{argument} must be the name passed to self.log, a non-empty str, got "
                        f"{type(value).__name__}: {value!r}")
    return value


def _split(batch):
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"the batch is a {type(batch).__name__}, not a pair (inputs, target): pass "
                    "split=lambda batch: (inputs, target)")


def _call(module, inputs):
    return module(inputs)


def _batch_size(batch) -> int:
    """The batch size Lightning weights a logged value by, found in the batch as it does."""
    from pytorch_lightning.utilities.data import extract_batch_size

    return extract_batch_size(batch)


def _logged(trainer, name: str) -> float:
    value = trainer.callback_metrics.get(f"{name}_epoch", trainer.callback_metrics.get(name))
    if value is None:
        raise KeyError(f"nothing was logged as {name!r}: the logged names are "
                       f"{sorted(trainer.callback_metrics)}; pass the name given to self.log")
    return float(value)


def _logged_with_sync(trainer, name: str) -> bool:
    """Whether ``self.log(name, ...)`` was reduced across processes, read from Lightning's own
    record of the call; also refuses a reduction other than the mean, or no epoch value."""
    results = getattr(trainer, "_results", None)
    found = [v for k, v in (results or {}).items() if k.split(".", 1)[-1] == name]
    if not found:
        raise KeyError(f"nothing was logged as {name!r} in this loop; pass the name given to "
                       "self.log")
    meta = found[0].meta
    if not meta.on_epoch or not meta.is_mean_reduction:
        raise ValueError(f"{name!r} must be logged with on_epoch=True and reduce_fx='mean' (the "
                         f"default) to be explained, got on_epoch={meta.on_epoch}, "
                         f"reduce_fx={meta.reduce_fx.__name__}")
    return bool(meta.sync.should) and trainer.world_size > 1


def _gather(trainer, mine: dict) -> list:
    """Every process's records, rank by rank (one process: ``[mine]``)."""
    if trainer.world_size == 1:
        return [mine]
    import torch.distributed as dist

    ranks = [None] * trainer.world_size
    dist.all_gather_object(ranks, mine)
    return ranks


def _evaluated(steps) -> float:
    """The criterion at the epoch's last weights over the epoch's batches (all processes')."""
    counts = [s.count for s in steps]
    last = [s.inference_end if math.isnan(s.final) else s.final for s in steps]
    return sum(c * v for c, v in zip(counts, last)) / sum(counts)


def _padding_note(trainer, ranks) -> tuple[str, ...]:
    """DistributedSampler repeats samples so that every process gets as many: say so."""
    sampler = getattr(trainer.train_dataloader, "sampler", None)
    extra = getattr(sampler, "total_size", 0) - len(getattr(sampler, "dataset", ()))
    if len(ranks) > 1 and type(sampler).__name__ == "DistributedSampler" and extra > 0:
        return (f"DistributedSampler repeated {extra} sample(s) so that each of the "
                f"{len(ranks)} processes gets as many: evaluated counts them twice",)
    return ()
