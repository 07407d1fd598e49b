"""What a training loop logs: per-epoch history and one record per optimizer step.

Both reference loops (:mod:`companion.tf_loop`, :mod:`companion.torch_loop`) return a
:class:`TrainingLog`, so a Keras run and a PyTorch run can be compared key by key.

>>> log = TrainingLog(keys=("loss",))
>>> log.add_batch(epoch=0, step=0, size=32, batch={"loss": 2.0}, running={"loss": 2.0})
>>> log.end_epoch({"loss": 2.0})
>>> log.history
{'loss': [2.0]}
>>> log.series("loss", kind="batch").tolist()
[2.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from companion import _validation as check

__all__ = ["BatchRecord", "TrainingLog"]


@dataclass(frozen=True)
class BatchRecord:
    """One optimizer step.

    ``batch`` holds the loss and metric values of this batch alone, computed on the weights
    *before* this step's update (that is what the frameworks log); ``running`` holds the epoch
    averages after this step, the numbers a progress bar shows.
    """

    epoch: int
    step: int
    size: int
    batch: dict[str, float]
    running: dict[str, float]


@dataclass(eq=False)
class TrainingLog:
    """Per-epoch ``history`` (named like Keras' ``History.history``) and per-step ``batches``."""

    keys: tuple[str, ...]
    history: dict[str, list[float]] = field(default_factory=dict)
    batches: list[BatchRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = tuple(check.sequence("keys", self.keys))
        for key in self.keys:
            if not isinstance(key, str) or not key:
                raise TypeError(f"keys must be non-empty strs (metric names), got {key!r} in {self.keys}")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"keys must be unique, got {self.keys}: give each metric its own name")
        for key in self.keys:
            self.history.setdefault(key, [])

    def add_batch(self, *, epoch: int, step: int, size: int, batch: dict, running: dict) -> None:
        """Append the record of one step (values are converted to Python floats; NaN and inf
        are kept, since a diverging loss is something to log)."""
        self.batches.append(
            BatchRecord(
                epoch=check.non_negative_int("epoch", epoch),
                step=check.non_negative_int("step", step),
                size=check.positive_int("size", size),
                batch=self._values("batch", batch),
                running=self._values("running", running),
            )
        )

    def end_epoch(self, values: dict) -> None:
        """Append one epoch's final averages to ``history``."""
        for key, value in self._values("values", values).items():
            self.history[key].append(value)

    def _values(self, name: str, values) -> dict[str, float]:
        """One Python float per key, from a dict that has every key (and maybe others)."""
        # What the loops log, once per step: a dict of floats with the keys in order. (Checked
        # without a Python loop: this runs at every step of every epoch.)
        if type(values) is dict and tuple(values) == self.keys and set(map(type, values.values())) <= {float}:
            return dict(values)
        if not isinstance(values, Mapping):
            raise TypeError(f"{name} must be a dict with a number for each of {self.keys}, got "
                            f"{type(values).__name__}")
        missing = [key for key in self.keys if key not in values]
        if missing:
            raise KeyError(f"{name} must have a number for each of {self.keys}, missing {missing}")
        return {key: _number(f"{name}[{key!r}]", values[key]) for key in self.keys}

    def series(self, key: str, *, kind: str = "batch", epoch: int | None = None) -> np.ndarray:
        """The per-step values of ``key``: ``kind="batch"`` (this batch alone) or ``"running"``.

        ``epoch`` restricts the series to one epoch (0-based).
        """
        if not isinstance(key, str) or key not in self.keys:
            raise KeyError(f"key must be one of {self.keys}, got {key!r}")
        check.choice("kind", kind, ("batch", "running"))
        records = self._records(epoch)
        return np.array([getattr(r, kind)[key] for r in records], dtype=np.float64)

    def sizes(self, *, epoch: int | None = None) -> np.ndarray:
        """The batch size of every step (of one epoch, if ``epoch`` is given)."""
        return np.array([r.size for r in self._records(epoch)], dtype=np.int64)

    def _records(self, epoch) -> list[BatchRecord]:
        if epoch is None:
            return self.batches
        epoch = check.non_negative_int("epoch", epoch)
        logged = sorted({r.epoch for r in self.batches})
        if epoch not in logged:
            raise ValueError(f"epoch must be one of the logged epochs {logged}, got {epoch}")
        return [r for r in self.batches if r.epoch == epoch]


def _number(name: str, value) -> float:
    """``value`` (a Python, NumPy or framework number) as a Python float."""
    if type(value) is float:  # what the loops log: nothing to convert
        return value
    array = check.to_numpy(name, value)
    if array.dtype.kind not in "iuf" or array.size != 1:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} of dtype "
                        f"{array.dtype} and shape {array.shape}")
    return float(array.reshape(()))
