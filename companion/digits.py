"""The 8x8 handwritten digits that ship with scikit-learn, split once into training and validation.

1,797 grey-scale images of the digits 0-9, 64 pixels each, read from scikit-learn's own copy
(no download). Pixels are scaled from 0..16 to [0, 1]; the split is a seeded permutation, so
every run, chapter and framework sees the same two sets.

>>> split = load_digits_split()
>>> split.x_train.shape, split.y_train.dtype, split.x_val.shape
((1348, 64), dtype('int64'), (449, 64))
>>> x_train, y_train, x_val, y_val = split  # it unpacks like a tuple
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from companion import _validation as check

__all__ = ["DigitsSplit", "load_digits_split", "NUM_CLASSES", "NUM_PIXELS"]

NUM_CLASSES = 10
NUM_PIXELS = 64
_MAX_PIXEL = 16.0  # scikit-learn's digits count the ink in a 4x4 block of a 32x32 bitmap: 0..16


class DigitsSplit(NamedTuple):
    """Training and validation images (float32, shape (N, 64)) and labels (int64, shape (N,))."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_digits_split(*, validation_fraction: float = 0.25, seed: int = 0) -> DigitsSplit:
    """The digits as a fixed, seeded training/validation split with pixels in [0, 1].

    ``validation_fraction`` of the 1,797 images (rounded to a whole number, at least one in
    each set) go to validation, chosen by a permutation drawn from ``seed``; the same
    arguments always give the same split.

    >>> x_train, y_train, x_val, y_val = load_digits_split(validation_fraction=0.5, seed=1)
    >>> len(x_train), len(x_val)
    (899, 898)
    """
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, numbers.Real):
        raise TypeError(
            f"validation_fraction must be a number in (0, 1), got "
            f"{type(validation_fraction).__name__}: {validation_fraction!r}"
        )
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    seed = check.non_negative_int("seed", seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits_split needs scikit-learn: pip install scikit-learn") from error

    images, labels = load_digits(return_X_y=True)
    num_samples = len(images)
    num_val = min(max(int(round(validation_fraction * num_samples)), 1), num_samples - 1)
    order = np.random.default_rng(seed).permutation(num_samples)
    val, train = order[:num_val], order[num_val:]
    x = (images / _MAX_PIXEL).astype(np.float32)
    y = labels.astype(np.int64)
    return DigitsSplit(x[train], y[train], x[val], y[val])
