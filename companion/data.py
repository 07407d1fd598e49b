"""The course's data sets, read from the copies that ship inside scikit-learn (no download).

* :func:`load_diabetes`: a regression, 442 patients with 10 features each.
* :func:`load_digits_split`: a classification, 1,797 grey-scale 8x8 images of the digits 0-9,
  split once into training and validation sets by a seeded permutation, so every run, chapter
  and framework sees the same two sets.

>>> x, y = load_diabetes()
>>> x.shape, y.shape
((442, 10), (442, 1))
>>> split = load_digits_split()
>>> split.x_train.shape, split.y_train.dtype, split.x_val.shape
((1348, 64), dtype('int64'), (449, 64))
>>> x_train, y_train, x_val, y_val = split  # it unpacks like a tuple
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from companion import _validation as check

__all__ = ["load_diabetes", "DigitsSplit", "load_digits_split", "NUM_CLASSES", "NUM_PIXELS"]

NUM_CLASSES = 10
NUM_PIXELS = 64
_MAX_PIXEL = 16.0  # scikit-learn's digits count the ink in a 4x4 block of a 32x32 bitmap: 0..16


def load_diabetes(*, standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The diabetes regression data as float32 ``x`` of shape (442, 10) and ``y`` of (442, 1).

    With ``standardize=True`` (the default) the target is shifted and scaled to mean 0 and
    standard deviation 1, so that an MSE of 1.0 means "no better than predicting the mean".
    The features are already centred and scaled by scikit-learn.
    """
    check.boolean("standardize", standardize)
    try:
        from sklearn.datasets import load_diabetes as sklearn_load_diabetes
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("load_diabetes needs scikit-learn: pip install scikit-learn") from error
    x, y = sklearn_load_diabetes(return_X_y=True)
    if standardize:
        y = (y - y.mean()) / y.std()
    return x.astype(np.float32), y.reshape(-1, 1).astype(np.float32)


class DigitsSplit(NamedTuple):
    """Training and validation images (float32, shape (N, 64)) and labels (int64, shape (N,))."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_digits_split(*, validation_fraction: float = 0.25, seed: int = 0) -> DigitsSplit:
    """The digits as a fixed, seeded training/validation split with pixels scaled to [0, 1].

    ``validation_fraction`` of the 1,797 images (rounded to a whole number, at least one in
    each set) go to validation, chosen by a permutation drawn from ``seed``; the same
    arguments always give the same split.

    >>> x_train, y_train, x_val, y_val = load_digits_split(validation_fraction=0.5, seed=1)
    >>> len(x_train), len(x_val)
    (899, 898)
    """
    validation_fraction = check.fraction("validation_fraction", validation_fraction, zero=False, one=False)
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
