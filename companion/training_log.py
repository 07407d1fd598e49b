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

from dataclasses import dataclass, field

import numpy as np

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
        self.keys = tuple(self.keys)
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"keys must be unique, got {self.keys}: give each metric its own name")
        for key in self.keys:
            self.history.setdefault(key, [])

    def add_batch(self, *, epoch: int, step: int, size: int, batch: dict, running: dict) -> None:
        """Append the record of one step (values are converted to Python floats)."""
        self.batches.append(
            BatchRecord(
                epoch=int(epoch),
                step=int(step),
                size=int(size),
                batch={k: float(batch[k]) for k in self.keys},
                running={k: float(running[k]) for k in self.keys},
            )
        )

    def end_epoch(self, values: dict) -> None:
        """Append one epoch's final averages to ``history``."""
        for key in self.keys:
            self.history[key].append(float(values[key]))

    def series(self, key: str, *, kind: str = "batch", epoch: int | None = None) -> np.ndarray:
        """The per-step values of ``key``: ``kind="batch"`` (this batch alone) or ``"running"``.

        ``epoch`` restricts the series to one epoch (0-based).
        """
        if key not in self.keys:
            raise KeyError(f"key must be one of {self.keys}, got {key!r}")
        if kind not in ("batch", "running"):
            raise ValueError(f"kind must be 'batch' or 'running', got {kind!r}")
        records = [r for r in self.batches if epoch is None or r.epoch == epoch]
        return np.array([getattr(r, kind)[key] for r in records], dtype=np.float64)

    def sizes(self, *, epoch: int | None = None) -> np.ndarray:
        """The batch size of every step (of one epoch, if ``epoch`` is given)."""
        return np.array([r.size for r in self.batches if epoch is None or r.epoch == epoch])
