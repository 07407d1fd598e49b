"""How an epoch is cut into batches: consecutive slices, the last one short when sizes don't divide.

Both reference loops cut their epochs this way, as ``model.fit`` and PyTorch's ``DataLoader``
do by default (no sample is dropped). To shuffle, permute the data once per epoch and slice
the permuted copy.

>>> batches(5, 2)
[slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
>>> import numpy as np
>>> [np.arange(10, 15)[b].tolist() for b in batches(5, 2)]
[[10, 11], [12, 13], [14]]
"""

from __future__ import annotations

from companion import _validation as check

__all__ = ["batches"]


def batches(num_samples: int, batch_size: int) -> list[slice]:
    """The slices ``[0:B], [B:2B], ...`` that cover ``range(num_samples)`` once, in order."""
    num_samples = check.positive_int("num_samples", num_samples)
    batch_size = check.positive_int("batch_size", batch_size)
    return [slice(start, min(start + batch_size, num_samples)) for start in range(0, num_samples, batch_size)]
