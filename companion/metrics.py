"""Streaming metrics on NumPy: a running total, a count, and one division at the end.

Each metric has the three-verb life of ``keras.metrics`` and torchmetrics: ``update(...)`` adds
a batch, ``result()`` reads the metric, ``reset()`` empties it (a training loop resets at the
start of every epoch). The state is two public numbers: ``total``, the weighted sum of the
per-sample values seen so far, and ``count``, the sum of their weights (the number of samples
when there are no weights). ``result()`` is ``total / count``. The error metrics and
``Accuracy`` also show their per-sample values without adding them (``per_sample(y_true,
y_pred)``), and ``add_values`` adds such values: ``companion.torch_loop`` computes an epoch's
values once and both logs every batch and fills the metric from them.

Because the state is a sum over samples, the result is the per-sample mean over everything
seen, however the data was cut into batches. It is *not* the mean of the batch means, which
differs as soon as one batch (usually the last) is smaller than the others:

>>> from companion.metrics import MeanSquaredError
>>> mse = MeanSquaredError()
>>> mse.update([0.0, 1.0, 2.0], [0.0, 1.0, 1.0])  # 3 samples, squared errors 0, 0, 1
>>> mse.update([4.0], [2.0])  # 1 sample, squared error 4
>>> mse.total, mse.count, mse.result()
(5.0, 4.0, 1.25)

The mean of the two batch means would be (1/3 + 4) / 2 = 2.1667.

Where these metrics differ from ``keras.metrics``, on purpose:

* An empty metric has no result. ``result()`` raises ``ValueError`` when the metric has seen
  no sample, or only samples of weight 0. Keras returns 0.0 there (``divide_no_nan``), which
  reads like a perfect mean squared error.
* The state is float64. Keras keeps ``total`` and ``count`` in float32, so the two agree to
  about 1e-6 relative, not bit for bit, and a Keras count cannot tell 2**24 from 2**24 + 1.
* ``y_true`` and ``y_pred`` of shape (N,) are N samples with one output each, as if (N, 1).
  Keras' ``MeanSquaredError`` and ``MeanAbsoluteError`` average over the last axis first, so
  for 1-D input they reduce the whole batch to one number and count it as *one* sample: the
  epoch result becomes the mean of the batch means. (Keras' accuracies do count 1-D samples
  one by one.)
* No broadcasting: ``y_true`` and ``y_pred`` must have the same shape, up to one trailing axis
  of size 1 ((N,) against (N, 1) is fine, as in Keras). Keras silently broadcasts (N,)
  against (N, N) or (N, 1) against (N, 3).
* ``sample_weight`` holds one weight per sample, shape (N,) or (N, 1). A scalar weight is
  accepted only for a scalar value (``Mean().update(batch_loss, sample_weight=batch_size)``).
  Keras accepts a scalar weight for a whole batch of values, applies it to the batch *mean*,
  and so computes a mean of batch means again.
* Bad input fails early, with a message that names the argument: empty batches, NaN or inf,
  negative weights, mismatched lengths, non-numeric dtypes. Keras lets NaN through into the
  result, accepts negative weights and ignores empty batches.

Inputs can be NumPy arrays, Python numbers or lists, TensorFlow tensors (anything with
``.numpy()``) and PyTorch tensors (``.detach().cpu().numpy()``); neither framework is imported.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from companion import _validation as check

__all__ = ["Accuracy", "Mean", "MeanAbsoluteError", "MeanSquaredError"]


class _RunningMean:
    """The state and the three verbs shared by every metric: total / count."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {type(name).__name__}: {name!r}")
        self.name = name
        self.reset()

    @property
    def total(self) -> float:
        """Weighted sum of the per-sample values seen since the last ``reset()``."""
        return self._total

    @property
    def count(self) -> float:
        """Sum of the weights seen since the last ``reset()``: the sample count if unweighted."""
        return self._count

    def result(self) -> float:
        """``total / count``; raises ``ValueError`` while ``count`` is 0."""
        if self._count == 0:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} has seen no data: result() = total / count "
                f"is undefined with count == 0 (no update() since the last reset(), or only "
                f"samples of weight 0); call update() first. (keras.metrics returns 0.0 here.)"
            )
        return self._total / self._count

    def reset(self) -> None:
        """Forget every sample: back to the state of a new metric."""
        self._total = 0.0
        self._count = 0.0

    def add_values(self, values, sample_weight=None) -> None:
        """Add per-sample values computed earlier, shape (N,), with optional per-sample weights.

        ``m.add_values(m.per_sample(y_true, y_pred))`` does what ``m.update(y_true, y_pred)``
        does, for a loop that needs each sample's value anyway (to log every batch) and should
        compute it only once.
        """
        values = _as_float_array("values", values)
        if values.ndim != 1:
            raise ValueError(f"values must hold one value per sample, shape (N,), got shape {values.shape}")
        self._add(values, _sample_weights(sample_weight, len(values), "values", values.shape))

    def _add(self, values: np.ndarray, weights: np.ndarray | None) -> None:
        # Reached only after every argument of update() was checked, so a rejected batch
        # leaves the state as it was.
        if weights is None:
            self._total += float(np.sum(values))
            self._count += float(values.size)
        else:
            self._total += float(np.sum(values * weights))
            self._count += float(np.sum(weights))

    def __repr__(self) -> str:
        state = f"name={self.name!r}, total={self._total!r}, count={self._count!r}"
        return f"{type(self).__name__}({state})"


class Mean(_RunningMean):
    """Weighted running mean of values, e.g. of batch losses weighted by batch size.

    ``values`` is a scalar (one value, weight ``sample_weight`` or 1) or a batch of shape
    (N, ...), whose per-sample value is the mean over all axes but the first.

    >>> loss = Mean(name="loss")
    >>> loss.update(0.5, sample_weight=32)  # a full batch of 32 samples
    >>> loss.update(2.0, sample_weight=8)  # the last, short batch
    >>> loss.result()  # (0.5 * 32 + 2.0 * 8) / 40, not (0.5 + 2.0) / 2
    0.8
    """

    def __init__(self, name: str = "mean"):
        super().__init__(name)

    def update(self, values, sample_weight=None) -> None:
        """Add one scalar value, or a batch of values with optional per-sample weights."""
        if _is_plain_number(values) and (sample_weight is None or _is_plain_number(sample_weight)):
            # A training loop's call, once per step (a batch loss weighted by the batch size):
            # plain numbers need none of the array machinery below, only the same checks.
            try:
                value, weight = float(values), 1.0 if sample_weight is None else float(sample_weight)
            except OverflowError:  # an integer beyond float range
                raise ValueError("values and sample_weight must fit in a float") from None
            if not math.isfinite(value):
                raise ValueError(f"values holds 1 NaN or inf value(s) out of 1 (shape ()); "
                                 f"a running mean would carry them into every later result")
            if not math.isfinite(weight):
                raise ValueError("sample_weight holds 1 NaN or inf value(s) out of 1 (shape ())")
            if weight < 0:
                raise ValueError(f"sample_weight must be >= 0, got a minimum of {weight!r}")
            self._total += value * weight
            self._count += weight
            return
        values = _as_float_array("values", values)
        if values.ndim == 0:
            weight = None if sample_weight is None else _scalar_weight(sample_weight)
            self._add(values.reshape(1), weight)
            return
        per_sample = _row_means(values)
        self._add(per_sample, _sample_weights(sample_weight, len(values), "values", values.shape))


class _ErrorMetric(_RunningMean):
    """Per-sample mean of an elementwise error between ``y_true`` and ``y_pred``."""

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch: per-sample error (mean over the outputs), weighted per sample."""
        errors = self.per_sample(y_true, y_pred)
        self._add(errors, _sample_weights(sample_weight, len(errors), "y_true", tuple(np.shape(y_true))))

    def per_sample(self, y_true, y_pred) -> np.ndarray:
        """The error of each sample (mean over its outputs), float64 of shape (N,): the values
        ``update`` adds up. It checks its input as ``update`` does and changes no state."""
        y_true = _as_float_array("y_true", y_true)
        y_pred = _as_float_array("y_pred", y_pred)
        y_true, y_pred = _same_shape(y_true, y_pred)
        return _row_means(self._elementwise(y_true - y_pred))


class MeanSquaredError(_ErrorMetric):
    """Running per-sample mean squared error, as ``keras.metrics.MeanSquaredError``.

    >>> mse = MeanSquaredError()
    >>> mse.update([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
    >>> mse.result()  # samples 0.5 and 0.0
    0.25
    >>> mse.update([[2.0, 2.0]], [[0.0, 0.0]], sample_weight=[2.0])
    >>> mse.total, mse.count
    (8.5, 4.0)
    """

    def __init__(self, name: str = "mean_squared_error"):
        super().__init__(name)

    @staticmethod
    def _elementwise(difference: np.ndarray) -> np.ndarray:
        return np.square(difference)


class MeanAbsoluteError(_ErrorMetric):
    """Running per-sample mean absolute error, as ``keras.metrics.MeanAbsoluteError``.

    >>> mae = MeanAbsoluteError()
    >>> mae.update([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]], sample_weight=[1, 0])
    >>> mae.result()  # only the first sample counts
    0.5
    """

    def __init__(self, name: str = "mean_absolute_error"):
        super().__init__(name)

    @staticmethod
    def _elementwise(difference: np.ndarray) -> np.ndarray:
        return np.abs(difference)


class Accuracy(_RunningMean):
    """Running fraction of samples whose predicted class is the true class index.

    ``y_true`` holds class indices, shape (N,) or (N, 1). What ``y_pred`` means is read from
    its shape and dtype, one rule each:

    * (N, C) with C >= 2: class scores (logits or probabilities). The prediction is the
      class with the highest score, the first one on a tie, as ``argmax`` in NumPy, TensorFlow
      and PyTorch; with ``top_k=k`` a sample is right when its class is among the first k of
      a stable descending sort (so ties go to the lower index again).
      Keras: ``SparseCategoricalAccuracy``, ``SparseTopKCategoricalAccuracy(k)``.
    * (N,) or (N, 1) of an integer or bool dtype: predicted class indices, compared for
      equality. Keras: ``Accuracy``.
    * (N,) or (N, 1) of a float dtype: the probability of class 1 in a binary problem; the
      prediction is 1 where ``y_pred > threshold``, and ``y_true`` must be 0 or 1. For logits,
      pass ``threshold=0.0``. Keras: ``BinaryAccuracy(threshold)``.

    One-hot ``y_true`` is refused rather than guessed at: pass ``y_true.argmax(axis=-1)``.

    >>> acc = Accuracy()
    >>> acc.update([0, 2, 1], [[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    >>> acc.total, acc.count
    (2.0, 3.0)
    >>> acc.update([1, 0], [0.8, 0.6])  # binary: 0.8 > 0.5 is right, 0.6 > 0.5 is wrong
    >>> acc.result()
    0.6
    """

    def __init__(self, name: str = "accuracy", *, threshold: float = 0.5, top_k: int = 1):
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise TypeError(
                f"threshold must be a number, got {type(threshold).__name__}: {threshold!r}"
            )
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be a positive int, got {type(top_k).__name__}: {top_k!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        super().__init__(name)
        self.threshold = float(threshold)
        self.top_k = int(top_k)

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch of labels and predictions (see the class docstring for the shapes)."""
        correct = self.per_sample(y_true, y_pred)
        self._add(correct, _sample_weights(sample_weight, len(correct), "y_true", tuple(np.shape(y_true))))

    def per_sample(self, y_true, y_pred) -> np.ndarray:
        """1.0 for each sample predicted right, 0.0 otherwise (float64, shape (N,)): the values
        ``update`` adds up. It checks its input as ``update`` does and changes no state."""
        y_true = check.class_indices(_as_array("y_true", y_true))
        y_pred = _as_array("y_pred", y_pred)
        if y_pred.ndim == 0 or y_pred.ndim > 2:
            raise ValueError(
                f"y_pred must have shape (N,), (N, 1) or (N, C), got shape {y_pred.shape}"
            )
        if len(y_pred) != len(y_true):
            raise ValueError(
                f"y_true and y_pred must have one row per sample, got {len(y_true)} labels "
                f"(shape {y_true.shape}) and y_pred of shape {y_pred.shape}"
            )
        if y_pred.ndim == 2 and y_pred.shape[1] >= 2:
            correct = self._in_top_k(y_true, y_pred.astype(np.float64))
        else:
            if self.top_k != 1:
                raise ValueError(
                    f"top_k={self.top_k} needs class scores y_pred of shape (N, C), "
                    f"got shape {y_pred.shape}"
                )
            y_pred = y_pred.reshape(-1)
            if y_pred.dtype.kind in "biu":
                correct = y_pred == y_true
            else:
                if np.any(y_true > 1):
                    raise ValueError(
                        f"a float y_pred of shape (N,) or (N, 1) is read as binary probabilities, "
                        f"so y_true must hold 0 or 1, got class {int(y_true.max())}; for "
                        f"predicted class indices pass y_pred as integers"
                    )
                correct = (y_pred > self.threshold) == y_true
        return correct.astype(np.float64)

    def _in_top_k(self, y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
        n_classes = scores.shape[1]
        if self.top_k > n_classes:
            raise ValueError(
                f"top_k={self.top_k} but y_pred has only {n_classes} classes (shape {scores.shape})"
            )
        if np.any(y_true >= n_classes):
            raise ValueError(
                f"y_true holds class {int(y_true.max())} but y_pred has scores for classes "
                f"0..{n_classes - 1} (shape {scores.shape})"
            )
        # A stable sort of the negated scores ranks tied classes by index, so top_k=1 is argmax.
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        return np.any(top == y_true[:, None], axis=1)


def _as_array(name: str, value) -> np.ndarray:
    """``value`` as a non-empty, finite, numeric NumPy array (its dtype kept)."""
    array = check.to_numpy(name, value)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {array.dtype} (shape {array.shape})"
        )
    if array.size == 0:
        raise ValueError(
            f"{name} is empty (shape {array.shape}): a batch with no samples has nothing to "
            f"average; skip the update() instead"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(
            f"{name} holds {bad} NaN or inf value(s) out of {array.size} (shape {array.shape}); "
            f"a running mean would carry them into every later result"
        )
    return array


def _row_means(values: np.ndarray) -> np.ndarray:
    """The mean of each sample's values (all axes but the first), shape (N,).

    The same numbers as ``values.reshape(N, -1).mean(axis=1)``, a sum divided by the count,
    without the Python layer of ``ndarray.mean``, which a training loop would pay every step.
    """
    rows = values.reshape(len(values), -1)
    return np.add.reduce(rows, axis=1) / rows.shape[1]


def _is_plain_number(value) -> bool:
    """A Python or NumPy real scalar (not a bool, not an array, not a tensor)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _as_float_array(name: str, value) -> np.ndarray:
    # float64 arithmetic (Keras: float32), so a long epoch's total keeps its last digits.
    return _as_array(name, value).astype(np.float64, copy=False)  # nothing here writes to it


def _same_shape(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make (N,) and (N, 1) agree, as Keras does; refuse everything else that differs."""
    if y_true.ndim == 0 or y_pred.ndim == 0:
        raise ValueError(
            f"y_true and y_pred must be batches of shape (N, ...), got y_true of shape "
            f"{y_true.shape} and y_pred of shape {y_pred.shape}"
        )
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_pred = y_pred[..., 0]
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {y_true.shape} and y_pred has shape {y_pred.shape}; expected "
            f"equal shapes, or shapes that differ by a trailing axis of size 1 such as (N,) "
            f"and (N, 1). Nothing is broadcast: (N,) against (N, N) would compare every "
            f"label with every prediction"
        )
    return y_true, y_pred


def _sample_weights(sample_weight, n: int, of: str, shape: tuple) -> np.ndarray | None:
    """One non-negative weight per sample, shape (n,), or None."""
    if sample_weight is None:
        return None
    weights = _as_float_array("sample_weight", sample_weight)
    if weights.shape not in ((n,), (n, 1)):
        hint = (
            f"; to weight a whole batch by one number w, pass np.full({n}, w)"
            if weights.ndim == 0
            else ""
        )
        raise ValueError(
            f"sample_weight must hold one weight per sample, shape ({n},) or ({n}, 1) for "
            f"{of} of shape {shape}, got shape {weights.shape}{hint}"
        )
    return _non_negative(weights.reshape(n))


def _scalar_weight(sample_weight) -> np.ndarray:
    weight = _as_float_array("sample_weight", sample_weight)
    if weight.size != 1:
        raise ValueError(
            f"sample_weight must be a single number for a scalar value, got shape {weight.shape}"
        )
    return _non_negative(weight.reshape(1))


def _non_negative(weights: np.ndarray) -> np.ndarray:
    if np.any(weights < 0):
        raise ValueError(f"sample_weight must be >= 0, got a minimum of {weights.min().item()!r}")
    return weights
