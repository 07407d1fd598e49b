"""Figures that show where each logged number comes from.

>>> ax = plot_epoch_numbers(log, "loss", evaluations=[0.9, 0.8])  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_epoch_numbers"]


def plot_epoch_numbers(log, key: str = "loss", *, evaluations=None, ax=None, title: str | None = None,
                       ylabel: str | None = None):
    """Per-batch values, the running epoch average, and (optionally) end-of-epoch evaluations.

    ``log`` is a :class:`companion.training_log.TrainingLog`; ``evaluations`` holds one number
    per epoch measured *after* the epoch (e.g. ``model.evaluate``), drawn at the epoch's end.
    Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    batch = log.series(key, kind="batch")
    running = log.series(key, kind="running")
    epochs = np.array([r.epoch for r in log.batches])
    num_epochs = len(log.history[key])
    if key not in log.history:
        raise KeyError(f"key must be one of {tuple(log.history)}, got {key!r}")
    if evaluations is not None:
        evaluations = np.asarray(evaluations, dtype=float)
        if evaluations.shape != (num_epochs,):
            raise ValueError(f"evaluations must hold one value per epoch ({num_epochs}), got shape {evaluations.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    steps = np.arange(1, len(batch) + 1)
    ax.plot(steps, batch, ".", color="0.6", label=f"batch {key} (this batch only)")
    for epoch in range(num_epochs):
        mask = epochs == epoch
        ax.plot(steps[mask], running[mask], "-", color="C0", label="running epoch average" if epoch == 0 else None)
    ends = np.array([steps[epochs == e][-1] for e in range(num_epochs)])
    ax.plot(ends, log.history[key], "o", color="C0", label=f"logged epoch {key} (History)")
    if evaluations is not None:
        ax.plot(ends, evaluations, "x", color="C3", markersize=9, mew=2, label="evaluated after the epoch")
    for end in ends[:-1]:
        ax.axvline(end + 0.5, color="0.85", lw=1, zorder=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel or key)
    ax.set_title(title or f"Where the logged {key} comes from")
    ax.legend(fontsize=8)
    return ax
