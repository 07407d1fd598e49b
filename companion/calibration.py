"""How confident a classifier is, and whether its confidence can be trusted.

Accuracy looks at one bit per sample (is the top class the true one?); the cross-entropy loss
looks at how much probability the true class got. Three tools connect the two:

* :func:`margins`: the true class's score minus the best other score. A sample counts as
  correct exactly when its margin is positive, and its cross-entropy is a smooth, decreasing
  function of the margin, between ``log(1 + exp(-m))`` and ``log(1 + (C - 1) exp(-m))``.
* :func:`cross_entropy`: the per-sample cross-entropy of logits, in NumPy (the number that
  ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` and
  ``torch.nn.CrossEntropyLoss`` average).
* :func:`reliability_diagram` and :func:`expected_calibration_error`: group the samples by
  confidence (the top-class probability) into equal-width bins and compare, bin by bin, the
  mean confidence with the fraction that is correct. A calibrated model that says "90 %" is
  right 90 % of the time.

And one for the accuracy of a mini-batch: :func:`batch_accuracy_distribution`, how far a
batch's accuracy scatters around the model's accuracy on the whole set, by chance alone.

>>> import numpy as np
>>> probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.35, 0.65], [0.25, 0.75]])
>>> labels = np.array([0, 1, 1, 0])
>>> diagram = reliability_diagram(labels, probabilities, num_bins=5)
>>> diagram.count.tolist(), diagram.accuracy[3:].tolist()
([0, 0, 0, 3, 1], [0.3333333333333333, 1.0])
>>> round(expected_calibration_error(labels, probabilities, num_bins=5), 4)  # (3 * |0.7 - 1/3| + 1 * |0.9 - 1|) / 4
0.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from companion import _validation as check

__all__ = [
    "ReliabilityDiagram",
    "batch_accuracy_distribution",
    "cross_entropy",
    "expected_calibration_error",
    "margins",
    "reliability_diagram",
]

# float32 softmax rows sum to 1 within a few 1e-7; logits almost never do. Rows of 16-bit floats
# sum to 1 only within about one unit of their precision (float16: 2**-10, bfloat16: 2**-7).
_ROW_SUM_TOLERANCE = 1e-4
_UNITS_OF_PRECISION = 4


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin mean confidence, accuracy and sample count over equal-width confidence bins.

    Bin ``b`` holds the samples whose confidence lies in ``(bin_edges[b], bin_edges[b + 1]]``
    (the first bin includes 0). ``confidence`` and ``accuracy`` are NaN in empty bins.

    >>> d = reliability_diagram([0, 1], [[0.7, 0.3], [0.55, 0.45]], num_bins=2)
    >>> d.bin_edges.tolist(), d.count.tolist(), d.confidence.tolist(), d.accuracy.tolist()
    ([0.0, 0.5, 1.0], [0, 2], [nan, 0.625], [nan, 0.5])
    """

    bin_edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    def __post_init__(self) -> None:
        # Built by hand, a diagram is checked like any argument: its four arrays must fit.
        edges = check.real_array("bin_edges", self.bin_edges).astype(np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0 or edges[-1] > 1:
            raise ValueError(f"bin_edges must be a 1-D array of increasing numbers in [0, 1], at "
                             f"least two of them, got {edges!r}")
        count = check.real_array("count", self.count)
        if count.shape != (len(edges) - 1,) or np.any(count < 0) or np.any(count != np.round(count)):
            raise ValueError(f"count must hold one whole number >= 0 per bin, shape ({len(edges) - 1},), "
                             f"got {count!r}")
        fields = {"bin_edges": edges, "count": count.astype(np.int64)}
        empty = count == 0
        for name in ("confidence", "accuracy"):  # NaN marks an empty bin
            values = check.to_numpy(name, getattr(self, name))
            if values.dtype.kind not in "biuf" or values.shape != count.shape:
                raise ValueError(f"{name} must hold one number per bin, shape {count.shape}, got "
                                 f"dtype {values.dtype} and shape {values.shape}")
            values = values.astype(np.float64)
            if not np.array_equal(np.isnan(values), empty):
                raise ValueError(f"{name} must be NaN exactly in the empty bins (count 0), got "
                                 f"{values.tolist()} for the counts {count.tolist()}")
            # A bin's mean confidence lies within the bin (up to the rounding of a mean); an
            # accuracy is a fraction.
            low, high = (edges[:-1], edges[1:]) if name == "confidence" else (0.0, 1.0)
            outside = ~empty & ((values < low - 1e-12) | (values > high + 1e-12))
            if outside.any():
                where = "inside its bin's edges" if name == "confidence" else "in [0, 1]"
                raise ValueError(f"{name} must be {where} for every filled bin, got "
                                 f"{float(values[outside][0])!r} in bin {int(np.argmax(outside))}")
            fields[name] = values
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def num_samples(self) -> int:
        """How many samples were binned."""
        return int(self.count.sum())

    @property
    def gap(self) -> np.ndarray:
        """``confidence - accuracy`` per bin: positive where the model is over-confident."""
        return self.confidence - self.accuracy

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean of ``|confidence - accuracy|``."""
        filled = self.count > 0
        return float(np.sum(self.count[filled] * np.abs(self.gap[filled])) / self.num_samples)


def margins(y_true, scores) -> np.ndarray:
    """The true class's score minus the highest score of any other class, per sample.

    ``scores`` are logits or probabilities of shape (N, C), C >= 2. A positive margin means the
    sample is classified correctly, a negative one that it is not; 0 is a tie (``argmax``
    then picks the lower class index).

    >>> margins([0, 2], [[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]]).tolist()
    [1.0, -2.0]
    """
    labels, values = _labels_and_scores(y_true, scores, "scores")
    rows = np.arange(len(labels))
    true_score = values[rows, labels]
    others = values.copy()
    others[rows, labels] = -np.inf
    return true_score - others.max(axis=1)


def cross_entropy(y_true, logits) -> np.ndarray:
    """Per-sample cross-entropy of softmax(``logits``) with the true class, in nats (float64).

    Computed as ``logsumexp(z) - z[y]``, which stays finite for any finite logits.

    >>> cross_entropy([0, 1], [[0.0, 0.0], [0.0, 0.0]]).round(4).tolist()  # ln 2 each
    [0.6931, 0.6931]
    """
    labels, values = _labels_and_scores(y_true, logits, "logits")
    top = values.max(axis=1, keepdims=True)
    log_sum = np.log(np.sum(np.exp(values - top), axis=1)) + top[:, 0]
    return log_sum - values[np.arange(len(labels)), labels]


def reliability_diagram(y_true, probabilities, *, num_bins: int = 10) -> ReliabilityDiagram:
    """Bin the samples by confidence and measure each bin's mean confidence and accuracy.

    ``probabilities`` has shape (N, C) and rows that sum to 1 (apply a softmax to logits
    first): within 1e-4, or within 4 units of precision for 16-bit floats (a float16 softmax
    row can sum to 0.9997). A sample's confidence is its largest probability, its prediction
    that class.

    >>> d = reliability_diagram([1, 1, 0], [[0.2, 0.8], [0.1, 0.9], [0.15, 0.85]], num_bins=10)
    >>> d.count[7:].tolist(), d.accuracy[7:].tolist()  # 0.8 is in (0.7, 0.8]; 0.85 and 0.9 in (0.8, 0.9]
    ([1, 2, 0], [1.0, 0.5, nan])
    """
    num_bins = check.positive_int("num_bins", num_bins)
    raw = check.data_array("probabilities", probabilities)
    tolerance = max(_ROW_SUM_TOLERANCE, _UNITS_OF_PRECISION * _precision(probabilities, raw))
    labels, values = _labels_and_scores(y_true, raw, "probabilities")
    if np.any(values < 0) or np.any(values > 1):
        raise ValueError(
            f"probabilities must lie in [0, 1], got values from {values.min():.4g} to "
            f"{values.max():.4g}; for logits, apply a softmax first"
        )
    sums = values.sum(axis=1)
    worst = float(np.max(np.abs(sums - 1)))
    if worst > tolerance:
        raise ValueError(
            f"probabilities must have rows that sum to 1 (within {tolerance:.2g} for dtype "
            f"{raw.dtype}), got a row summing to {sums[np.argmax(np.abs(sums - 1))]:.6g}; for "
            f"logits, apply a softmax first"
        )
    confidence = values.max(axis=1)
    # A stable argmax (first on a tie), the prediction every framework's accuracy makes.
    correct = values.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # side="left" puts a confidence equal to an edge into the bin that edge closes: (lo, hi].
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(which, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=num_bins) / count
        accuracy = np.bincount(which, weights=correct.astype(np.float64), minlength=num_bins) / count
    return ReliabilityDiagram(edges, mean_confidence, accuracy, count.astype(np.int64))


def expected_calibration_error(y_true, probabilities, *, num_bins: int = 10) -> float:
    """ECE: the mean over samples of |bin confidence - bin accuracy| for each sample's bin.

    0 for a perfectly calibrated model; equal-width bins, as :func:`reliability_diagram`.

    >>> round(expected_calibration_error([0, 0], [[0.9, 0.1], [0.9, 0.1]]), 4)  # 90 % sure, always right
    0.1
    """
    return reliability_diagram(y_true, probabilities, num_bins=num_bins).ece


def batch_accuracy_distribution(accuracy: float, batch_size: int, *,
                                population: int | None = None) -> np.ndarray:
    """P(batch accuracy = k / batch_size) for k = 0..batch_size, for a model of accuracy ``accuracy``.

    Without ``population`` each sample of the batch is right with probability ``accuracy``,
    independently: a binomial distribution, standard deviation ``sqrt(p (1 - p) / B)``. With
    ``population=N`` the batch is ``batch_size`` distinct samples drawn from ``N``, of which
    ``round(accuracy * N)`` are right: a hypergeometric distribution, whose standard deviation is
    smaller by the factor ``sqrt((N - B) / (N - 1))``.

    >>> batch_accuracy_distribution(0.5, 2).round(4).tolist()
    [0.25, 0.5, 0.25]
    >>> batch_accuracy_distribution(0.5, 2, population=4).round(4).tolist()  # 2 right, 2 wrong
    [0.1667, 0.6667, 0.1667]

    The probabilities are computed from logarithms, so large batches do not overflow.
    """
    accuracy = check.fraction("accuracy", accuracy)
    batch_size = check.positive_int("batch_size", batch_size)
    k = range(batch_size + 1)
    if population is None:
        if accuracy in (0.0, 1.0):  # every sample wrong, or every sample right
            return np.eye(batch_size + 1)[0 if accuracy == 0 else batch_size]
        log_p = [_log_comb(batch_size, i) + i * math.log(accuracy)
                 + (batch_size - i) * math.log1p(-accuracy) for i in k]
        return np.exp(log_p)
    population = check.positive_int("population", population)
    if population < batch_size:
        raise ValueError(f"population must be at least batch_size ({batch_size}), got {population}")
    right = int(round(accuracy * population))
    log_p = [_log_comb(right, i) + _log_comb(population - right, batch_size - i)
             - _log_comb(population, batch_size) for i in k]
    return np.exp(log_p)


def _log_comb(n: int, k: int) -> float:
    """log(n choose k), and -inf (probability 0) where k is not in 0..n."""
    if not 0 <= k <= n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _precision(original, array: np.ndarray) -> float:
    """The spacing of the floats near 1 in the dtype ``original`` came in (0 for integers)."""
    if "bfloat16" in str(getattr(original, "dtype", "")):  # it arrives as float32, exactly
        return 2.0**-7
    return float(np.finfo(array.dtype).eps) if array.dtype.kind == "f" else 0.0


def _labels_and_scores(y_true, scores, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (N,) and float64 scores (N, C) with one row per label, or a clear error."""
    values = check.data_array(name, scores).astype(np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (N, C) with C >= 2 classes, got shape {values.shape}"
        )
    labels = check.class_indices(check.data_array("y_true", y_true, length=len(values), length_of=name))
    if np.any(labels >= values.shape[1]):
        raise ValueError(
            f"y_true holds class {int(labels.max())} but {name} has {values.shape[1]} classes "
            f"(shape {values.shape})"
        )
    return labels, values
