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


def to_numpy(name: str, value) -> np.ndarray:
    """``value`` as a NumPy array: PyTorch and TensorFlow tensors (without importing either),
    their bfloat16 as float32 (which holds every bfloat16 value exactly), lists, numbers."""
    if hasattr(value, "detach"):  # a PyTorch tensor: leave autograd and the GPU first
        value = value.detach().cpu()
        try:
            value = value.numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks
            value = value.float().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a TensorFlow tensor
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged nested lists, or an object whose __array__ fails
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}: {error}") from None
    if array.dtype.kind == "V" and "float" in array.dtype.name:
        # TensorFlow's bfloat16 arrives as an ml_dtypes type that NumPy calls kind "V".
        array = array.astype(np.float32)
    return array


def data_array(name: str, value, *, length: int | None = None, length_of: str = "x") -> np.ndarray:
    """A finite real array with at least one sample (and ``length`` samples, if given)."""
    array = to_numpy(name, value)
    if array.dtype.kind not in "biuf":  # not complex, strings or objects
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


def class_indices(y_true: np.ndarray) -> np.ndarray:
    """Class labels as int64 of shape (N,), from (N,) or (N, 1) integers >= 0 of any numeric dtype."""
    if y_true.ndim == 2 and y_true.shape[1] > 1:
        raise ValueError(
            f"y_true must hold class indices of shape (N,) or (N, 1), got shape {y_true.shape}; "
            f"for one-hot labels pass y_true.argmax(axis=-1)"
        )
    if y_true.ndim == 0 or y_true.ndim > 2:
        raise ValueError(
            f"y_true must hold class indices of shape (N,) or (N, 1), got shape {y_true.shape}"
        )
    labels = y_true.reshape(-1).astype(np.float64)
    bad = (labels < 0) | (labels != np.round(labels))
    if np.any(bad):
        first = y_true.reshape(-1)[bad][0].item()
        raise ValueError(
            f"y_true must hold class indices (integers >= 0), got {first!r} among "
            f"{int(bad.sum())} invalid label(s) (dtype {y_true.dtype})"
        )
    return labels.astype(np.int64)
