"""Streaming metrics on NumPy: a running total, a count, and one division at the end.

Each metric has the three-verb life of ``keras.metrics`` and torchmetrics: ``update(...)`` adds
a batch, ``result()`` reads the metric, ``reset()`` empties it (a training loop resets at the
start of every epoch). The state is two plain numbers: ``total``, the weighted sum of the
per-sample values seen so far, and ``count``, the sum of their weights (the number of samples
when there are no weights). ``result()`` is ``total / count``, with one refinement: each
addition to ``total`` rounds away some low-order bits, which a private term keeps
(Neumaier's compensated sum) and ``result()`` adds back. A long run of large values then
keeps its digits: over 10**6 updates of 1e12 + U(0, 1), the plain running sum is off by
0.5 in the mean; the compensated one is at least as close as ``np.mean`` (1e-4).

Because the state is a sum over samples, the result is the per-sample mean over everything
seen, however the data was cut into batches. It is *not* the mean of the batch means, which
differs as soon as one batch (usually the last) is smaller than the others:

>>> mse = MeanSquaredError()
>>> mse.update([0.0, 1.0, 2.0], [0.0, 1.0, 1.0])  # 3 samples, squared errors 0, 0, 1
>>> mse.update([4.0], [2.0])  # 1 sample, squared error 4
>>> mse.total, mse.count, mse.result()
(5.0, 4.0, 1.25)

The mean of the two batch means would be (1/3 + 4) / 2 = 2.1667.

Where these metrics differ from ``keras.metrics``, on purpose:

* An empty metric has no result: ``result()`` raises ``ValueError`` when the metric has seen
  no sample, or only samples of weight 0. Keras returns 0.0 there, which reads like a perfect
  mean squared error.
* The state is float64, summed pairwise within a batch. Keras keeps ``total`` and ``count`` in
  float32, so the two agree to about 1e-6 relative, not bit for bit.
* ``y_true`` and ``y_pred`` of shape (N,) are N samples with one output each, as if (N, 1).
  Keras' ``MeanSquaredError`` averages over the last axis first, so for 1-D input it reduces
  the whole batch to one number and counts it as *one* sample. (Keras' accuracies do count 1-D
  samples one by one.)
* No broadcasting: ``y_true`` and ``y_pred`` must have the same shape, up to one trailing axis
  of size 1. Keras silently broadcasts (N,) against (N, N).
* ``sample_weight`` holds one weight per sample, shape (N,) or (N, 1). A scalar weight is
  accepted only for a scalar value (``Mean().update(batch_loss, sample_weight=batch_size)``);
  Keras applies a scalar weight to the batch *mean*, a mean of batch means again.
* Bad input fails early, with a message that names the argument (empty batches, NaN or inf,
  negative weights, mismatched lengths); Keras lets NaN through into the result.

Inputs can be NumPy arrays, Python numbers or lists, TensorFlow tensors and PyTorch tensors;
neither framework is imported.
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check

__all__ = ["Accuracy", "Mean", "MeanSquaredError"]


class _Metric:
    """The state and the three verbs every metric shares: ``result() = total / count``."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {type(name).__name__}: {name!r}")
        self.name = name
        self.reset()

    def reset(self) -> None:
        """Forget every sample: back to the state of a new metric."""
        self.total = 0.0  # weighted sum of the per-sample values since the last reset()
        self.count = 0.0  # sum of their weights: the number of samples, if unweighted
        self._compensation = 0.0  # the low-order bits that rounding dropped from total

    def result(self) -> float:
        """``total / count``; raises ``ValueError`` while ``count`` is 0."""
        if self.count == 0:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} has seen no data: result() = total / count "
                f"is undefined with count == 0 (no update() since the last reset(), or only "
                f"samples of weight 0); call update() first. (keras.metrics returns 0.0 here.)"
            )
        return (self.total + self._compensation) / self.count

    def _add(self, values: np.ndarray, weights: np.ndarray | None, of: str) -> None:
        # Called only once every argument was checked, so a refused batch changes nothing.
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            batch = float(np.add.reduce(values if weights is None else values * weights))
            count = self.count + (values.size if weights is None else np.add.reduce(weights))
        total = self.total + batch
        if not (np.isfinite(total) and np.isfinite(count)):  # beyond float64 (about 1.8e308)
            raise ValueError(f"{of} or sample_weight are too large: the weighted sum overflows "
                             f"float64 ({type(self).__name__} {self.name!r}); rescale them")
        # Of the two addends, the smaller in magnitude lost its low-order bits: keep them.
        big, small = (self.total, batch) if abs(self.total) >= abs(batch) else (batch, self.total)
        self._compensation += (big - total) + small
        self.total, self.count = total, float(count)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, total={self.total!r}, count={self.count!r})"


class Mean(_Metric):
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
        values = check.real_array("values", values).astype(np.float64)
        if values.ndim == 0:  # one number, e.g. a batch loss weighted by the batch size
            values, sample_weight = values.reshape(1), _scalar_weight(sample_weight)
        self._add(_row_means(values), check.sample_weights("sample_weight", sample_weight,
                                                           length=len(values), of="values"), "values")


class MeanSquaredError(_Metric):
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

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch: each sample's squared error, averaged over its outputs, weighted."""
        y_true, y_pred = check.same_shape(check.real_array("y_true", y_true),
                                          check.real_array("y_pred", y_pred))
        # In float64 (Keras: float32), so a long epoch's total keeps its last digits.
        with np.errstate(over="ignore"):  # a square beyond float64 is refused by _add
            errors = _row_means(np.square(np.subtract(y_true, y_pred, dtype=np.float64)))
        self._add(errors, check.sample_weights("sample_weight", sample_weight, length=len(errors),
                                               of="y_true"), "y_true and y_pred")


class Accuracy(_Metric):
    """Running fraction of samples whose predicted class is the true class index.

    ``y_true`` holds class indices, shape (N,) or (N, 1). What ``y_pred`` means is read from
    its shape and dtype, one rule each:

    * (N, C) with C >= 2: class scores (logits or probabilities). The prediction is the
      class with the highest score, the first one on a tie, as ``argmax`` in NumPy, TensorFlow
      and PyTorch; with ``top_k=k`` a sample is right when its class is among the first k of
      a stable descending sort. Keras: ``SparseCategoricalAccuracy``,
      ``SparseTopKCategoricalAccuracy(k)``.
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
        self.threshold = check.finite_number("threshold", threshold)
        self.top_k = check.positive_int("top_k", top_k)
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch of labels and predictions (see the class docstring for the shapes)."""
        correct = self._correct(check.class_indices(check.real_array("y_true", y_true)),
                                check.real_array("y_pred", y_pred))
        self._add(correct, check.sample_weights("sample_weight", sample_weight, length=len(correct),
                                                of="y_true"), "y_true")

    def _correct(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """1.0 for each sample predicted right, 0.0 otherwise."""
        if y_pred.ndim == 0 or y_pred.ndim > 2 or len(y_pred) != len(y_true):
            raise ValueError(f"y_pred must have shape (N,), (N, 1) or (N, C) with N = {len(y_true)} "
                             f"labels of y_true, got shape {y_pred.shape}")
        if y_pred.ndim == 2 and y_pred.shape[1] >= 2:  # class scores
            n_classes = y_pred.shape[1]
            if self.top_k > n_classes:
                raise ValueError(f"top_k={self.top_k} but y_pred has only {n_classes} classes")
            if np.any(y_true >= n_classes):
                raise ValueError(f"y_true holds class {int(y_true.max())} but y_pred has scores "
                                 f"for classes 0..{n_classes - 1} (shape {y_pred.shape})")
            if self.top_k == 1:  # argmax takes the first of tied classes, as in every framework
                return (y_pred.argmax(axis=1) == y_true).astype(np.float64)
            # A stable sort of the negated scores ranks tied classes by index, as argmax does.
            top = np.argsort(-y_pred.astype(np.float64), axis=1, kind="stable")[:, : self.top_k]
            return np.any(top == y_true[:, None], axis=1).astype(np.float64)
        if self.top_k != 1:
            raise ValueError(f"top_k={self.top_k} needs class scores y_pred of shape (N, C), "
                             f"got shape {y_pred.shape}")
        y_pred = y_pred.reshape(-1)
        if y_pred.dtype.kind in "biu":  # predicted class indices
            return (y_pred == y_true).astype(np.float64)
        if np.any(y_true > 1):
            raise ValueError(f"a float y_pred of shape (N,) or (N, 1) is read as binary "
                             f"probabilities, so y_true must hold 0 or 1, got class "
                             f"{int(y_true.max())}; for predicted class indices pass integers")
        return ((y_pred > self.threshold) == y_true).astype(np.float64)


def _row_means(values: np.ndarray) -> np.ndarray:
    """The mean of each sample's values (all axes but the first), shape (N,)."""
    rows = values.reshape(len(values), -1)
    return np.add.reduce(rows, axis=1) / rows.shape[1]  # rows.mean(axis=1), without its Python layer


def _scalar_weight(sample_weight) -> np.ndarray | None:
    """The weight of a single value: one number, kept as a weight for one sample."""
    if sample_weight is None:
        return None
    weight = check.real_array("sample_weight", sample_weight)
    if weight.size != 1:
        raise ValueError(f"sample_weight must be a single number for a scalar value, got shape "
                         f"{weight.shape}")
    return weight.reshape(1)
