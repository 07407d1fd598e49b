"""Small real and synthetic data sets that need no download.

``load_diabetes`` wraps scikit-learn's copy of the diabetes data (442 patients, 10 features),
which ships inside the scikit-learn package, so notebooks run offline.

>>> x, y = load_diabetes()
>>> x.shape, y.shape
((442, 10), (442, 1))
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check

__all__ = ["load_diabetes", "linear_regression_data"]


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


def linear_regression_data(
    num_samples: int = 100, num_features: int = 3, *, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic ``y = x @ w + noise`` with float32 ``x`` (N, F) and ``y`` (N, 1), from ``seed``."""
    num_samples = check.positive_int("num_samples", num_samples)
    num_features = check.positive_int("num_features", num_features)
    seed = check.non_negative_int("seed", seed)
    noise = check.non_negative_number("noise", noise)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features))
    w = rng.normal(size=(num_features, 1))
    y = x @ w + noise * rng.normal(size=(num_samples, 1))
    return x.astype(np.float32), y.astype(np.float32)
