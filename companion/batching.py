"""Which samples go into which batch: in order, or shuffled once per epoch.

>>> [b.tolist() for b in batch_indices(5, 2)]
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check

__all__ = ["batch_indices", "number_of_batches"]


def number_of_batches(num_samples: int, batch_size: int) -> int:
    """Steps per epoch when the short last batch is kept (as ``model.fit`` and DataLoader do)."""
    num_samples = check.positive_int("num_samples", num_samples)
    batch_size = check.positive_int("batch_size", batch_size)
    return -(-num_samples // batch_size)


def batch_indices(num_samples: int, batch_size: int, *, order: np.ndarray | None = None) -> list[np.ndarray]:
    """Index arrays of consecutive batches; the last one is short when the sizes don't divide.

    ``order`` is a permutation of ``range(num_samples)`` (a shuffled epoch); by default the
    samples are taken in order.
    """
    steps = number_of_batches(num_samples, batch_size)
    if order is None:
        order = np.arange(num_samples)
    elif sorted(np.asarray(order).tolist()) != list(range(num_samples)):
        raise ValueError(f"order must be a permutation of range({num_samples})")
    return [np.asarray(order[i * batch_size : (i + 1) * batch_size]) for i in range(steps)]
