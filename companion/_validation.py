"""Argument checks shared by the public functions: each error names the argument."""

from __future__ import annotations

import numbers

import numpy as np


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value}")
    return int(value)


def optional_seed(name: str, value) -> int | None:
    if value is None:
        return None
    return non_negative_int(name, value)


def boolean(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}: {value!r}")
    return bool(value)


def data_array(name: str, value, *, length: int | None = None, length_of: str = "x") -> np.ndarray:
    """A finite numeric array with at least one sample (and ``length`` samples, if given)."""
    if hasattr(value, "detach"):  # a torch tensor, converted without importing torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a TF eager tensor
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception as error:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}: {error}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"{name} must have a sample axis, got a scalar of shape ()")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(array)))} NaN/inf values")
    if length is not None and array.shape[0] != length:
        raise ValueError(
            f"{name} must have one row per sample of {length_of} ({length}), got shape {array.shape}"
        )
    return array


def sample_weights(name: str, value, *, length: int) -> np.ndarray | None:
    if value is None:
        return None
    array = data_array(name, value, length=length)
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape ({length},), one weight per sample, got {array.shape}")
    if np.any(array < 0):
        raise ValueError(f"{name} must be non-negative, got a minimum of {array.min()}")
    return array


def non_negative_number(name: str, value) -> float:
    """A finite real number >= 0 (bools and huge integers beyond float range are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number >= 0, got {type(value).__name__}: {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number
