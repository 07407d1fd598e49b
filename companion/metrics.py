"""Streaming metrics: a running total, a count, and one division at the end.

Each metric has the three-verb life of ``keras.metrics`` and torchmetrics: ``update(...)`` adds
a batch, ``result()`` reads the metric, ``reset()`` empties it (a training loop resets at the
start of every epoch). The state is two numbers: ``total``, the weighted sum of the per-sample
values seen so far, and ``count``, the sum of their weights (the number of samples when there
are no weights). ``result()`` is ``total / count``, with one refinement: each addition to
``total`` rounds away some low-order bits, which a private term keeps (Neumaier's compensated
sum) and ``result()`` adds back. A long run of large values then keeps its digits: over 10**6
updates of 1e12 + U(0, 1), the plain running sum is off by 0.5 in the mean; the compensated
one is at least as close as ``np.mean`` (1e-4).

Because the state is a sum over samples, the result is the per-sample mean over everything
seen, however the data was cut into batches. It is *not* the mean of the batch means, which
differs as soon as one batch (usually the last) is smaller than the others:

>>> mse = MeanSquaredError()
>>> mse.update([0.0, 1.0, 2.0], [0.0, 1.0, 1.0])  # 3 samples, squared errors 0, 0, 1
>>> mse.update([4.0], [2.0])  # 1 sample, squared error 4
>>> mse.total, mse.count, mse.result()
(5.0, 4.0, 1.25)

The mean of the two batch means would be (1/3 + 4) / 2 = 2.1667.

**Where the predictions are.** Fed PyTorch tensors (the predictions, or ``values`` for
:class:`Mean`), a metric adds up on their device: ``total`` and ``count`` become float64
tensors there (float32 on Apple's MPS, which has no float64), and nothing is copied to the
host until ``result()``, or :func:`read`, reads them, once. On a GPU a copy to the host makes
the host wait for every queued kernel, so a metric that copied each batch would stall the
device at every step. The checks that need the values themselves (NaN or inf, labels out of
range, negative weights) are counted on the device too and raised by ``result()``; shapes and
dtypes are checked at once (a batch of the same shape, dtype and device as the last one is
not checked again). Such a total is a plain float64 sum, without the compensation
(its relative error after n updates is below n * 1.1e-16). NumPy arrays, lists and TensorFlow
tensors are added up on the host, as NumPy.

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
* Bad input fails with a message that names the argument (empty batches, NaN or inf,
  negative weights, mismatched lengths); Keras lets NaN through into the result.

Neither framework is imported.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from companion import _validation as check

__all__ = ["Accuracy", "Mean", "MeanSquaredError", "read"]


def read(values):
    """``values`` (numbers, tensors, and lists and tuples of them) with every PyTorch tensor
    replaced by the Python number it holds, copied to the host together: one copy for all
    the tensors of one dtype and device.

    A copy to the host makes the host wait for every kernel queued on a GPU: a training loop
    keeps its losses and metric states on the device during an epoch and reads them with one
    call after it.

    >>> read([1, (2.5, [3.0])])
    [1, (2.5, [3.0])]
    """
    torch = sys.modules.get("torch")
    if torch is None:  # no tensor can exist
        return values
    tensors = []
    _collect((values,), torch.Tensor, tensors)
    if not tensors:
        return values
    keys = [(tensor.dtype, tensor.device) for tensor in tensors]
    groups = {}  # (dtype, device) -> its tensors, as 0-d tensors, in order
    for key, tensor in zip(keys, tensors):
        groups.setdefault(key, []).append(tensor if tensor.dim() == 0 else tensor.reshape(()))
    copied = {key: iter(torch.stack(group).tolist()) for key, group in groups.items()}  # the copies
    numbers = [next(copied[key]) for key in keys]
    return _replace((values,), torch.Tensor, iter(numbers))[0]


def _collect(values: list | tuple, tensor_class, tensors: list) -> None:
    """Append the tensors in ``values``, depth first."""
    for value in values:
        kind = type(value)
        if kind is list or kind is tuple:
            _collect(value, tensor_class, tensors)
        elif isinstance(value, tensor_class):
            tensors.append(value)


def _replace(values: list | tuple, tensor_class, numbers):
    """``values`` with its tensors replaced by the next ``numbers``, in :func:`_collect`'s
    order (the containers are copied, every other value kept as it is)."""
    replaced = []
    for value in values:
        kind = type(value)
        if kind is list or kind is tuple:
            value = _replace(value, tensor_class, numbers)
        elif isinstance(value, tensor_class):
            value = next(numbers)
        replaced.append(value)
    return type(values)(replaced)


def _is_tensor(value) -> bool:
    """A PyTorch tensor, told apart without importing torch (none exists before it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


class _Metric:
    """The state and the three verbs every metric shares: ``result() = total / count``."""

    _FED = "the values"  # what update() is fed, named by the error about NaN or inf

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
        self._unchecked = {}  # fed tensors: message -> (count of the bad, values kept for it)
        self._found = {}  # message -> how many bad values its check found (a tensor)
        self._kept = 0  # how many values are kept unchecked
        self._size = (None, None)  # the last batch size added on the device, and it as a tensor
        self._checked = (None, None)  # the form of the last tensors taken, what checks found

    def result(self) -> float:
        """``total / count``; raises ``ValueError`` while ``count`` is 0, and for what the
        tensors fed since the last ``reset()`` held that the metric refuses."""
        self._check_kept()
        messages = list(self._found)
        total, count, found = read([self.total, self.count, [self._found[m] for m in messages]])
        for message, number in zip(messages, found):
            if number:
                raise ValueError(message.format(number))
        if not (math.isfinite(total) and math.isfinite(count)):
            raise ValueError(f"{self._FED} fed to {type(self).__name__} {self.name!r} since the "
                             f"last reset() held NaN or inf, or their sum overflowed float64: "
                             f"total is {total}, count {count} (tensors are checked when the "
                             f"metric is read, not at each update, which would wait for them)")
        if count == 0:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} has seen no data: result() = total / count "
                f"is undefined with count == 0 (no update() since the last reset(), or only "
                f"samples of weight 0); call update() first. (keras.metrics returns 0.0 here.)"
            )
        return (total + self._compensation) / count

    def _add(self, values: np.ndarray, weights: np.ndarray | None, of: str) -> None:
        # Called only once every argument was checked, so a refused batch changes nothing.
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            batch = float(np.add.reduce(values if weights is None else values * weights))
            count = self.count + (values.size if weights is None else np.add.reduce(weights))
        if _is_tensor(self.total):  # a NumPy batch after tensors: added where they are
            self.total, self.count = self.total + batch, count
            return
        total = self.total + batch
        if not (np.isfinite(total) and np.isfinite(count)):  # beyond float64 (about 1.8e308)
            raise ValueError(f"{of} or sample_weight are too large: the weighted sum overflows "
                             f"float64 ({type(self).__name__} {self.name!r}); rescale them")
        # Of the two addends, the smaller in magnitude lost its low-order bits: keep them.
        big, small = (self.total, batch) if abs(self.total) >= abs(batch) else (batch, self.total)
        self._compensation += (big - total) + small
        self.total, self.count = total, float(count)

    def _add_on_device(self, batch, count, *, scale=1.0) -> None:
        """Add ``scale * batch`` (a weighted sum: a 0-d tensor, float or integer) to ``total``
        and ``count`` (a 0-d tensor, or a Python number) to ``count``, where the tensor is:
        nothing is copied to the host."""
        if isinstance(self.total, float):  # the first tensor since reset(): float64 there
            self.total = batch.new_full((), self.total, dtype=_float_dtype(batch))
            self.count = self.total.new_full((), self.count)
        if isinstance(count, (int, float)):
            # A Python number would become a new tensor at every addition; the batch size
            # repeats from step to step, so the last one is kept as a tensor.
            if self._size[0] != count:
                self._size = (count, self.total.new_full((), count))
            count = self._size[1]
        # total is float64 (float32 on MPS): an integer batch is added in that dtype.
        # (Tensor.add is a little faster than the + operator, which checks its operands.)
        total = self.total.add(batch) if scale == 1 else self.total.add(batch, alpha=scale)
        self.total, self.count = total, self.count.add(count)

    def _same_form(self, y_true, y_pred, sample_weight) -> bool:
        """Whether ``y_true`` and ``y_pred`` are tensors of the form of the last ones this
        metric took, with no ``sample_weight`` again. The checks that run at once read a
        batch's form only (see :func:`_form`), and a training loop feeds one form at every
        step but the last: they need not run again. (The checks of the values run every time.)
        """
        return (sample_weight is None and type(y_true) is type(y_pred)
                and _form(y_true, y_pred) == self._checked[0])

    def _remember_form(self, given, checked, sample_weight, told=None) -> None:
        """After the checks of a batch passed: keep the form of the ``given`` tensors (and
        ``told``, what the checks found from it) for :meth:`_same_form`, if the checks
        took them as they were (``checked``: no reshape, no detach, no conversion)."""
        same = sample_weight is None and all(a is b for a, b in zip(given, checked))
        self._checked = (_form(*given), told) if same else (None, None)

    def _check_later(self, message: str, count_bad, values) -> None:
        """Keep ``values`` (a tensor) for the check ``count_bad(all kept values)``, which
        returns how many are bad; ``result()`` raises ``message`` (formatted with that number)
        if any is. The values are checked together when the metric is read, or once a million
        of them are kept: checking them at every update would cost operations every step."""
        if message not in self._unchecked:
            self._unchecked[message] = (count_bad, [])
        self._unchecked[message][1].append(values)
        self._kept += values.numel()
        if self._kept >= 2**20:
            self._check_kept()

    def _check_kept(self) -> None:
        import torch

        for message, (count_bad, kept) in self._unchecked.items():
            try:  # usually every batch has the same shape but for its length
                values = torch.cat(kept)
            except RuntimeError:  # a scalar, or shapes that differ: the checks count values
                values = torch.cat([values.reshape(-1) for values in kept])  # one by one
            found = count_bad(values)
            self._found[message] = self._found[message] + found if message in self._found else found
        self._unchecked.clear()
        self._kept = 0

    def _check_weights(self, weights) -> None:
        self._check_later("sample_weight must be >= 0, got {} negative weight(s) since the last "
                          "reset()", lambda w: (w < 0).count_nonzero(), weights)

    def _on_its_device(self, tensor) -> None:
        """Refuse a tensor on another device than the one this metric adds up on."""
        if not isinstance(self.total, float) and self.total.device != tensor.device:
            raise ValueError(f"{type(self).__name__} {self.name!r} adds up on "
                             f"{self.total.device} since its last reset(), got a tensor on "
                             f"{tensor.device}: feed it one device, or reset() it")

    def __repr__(self) -> str:
        total, count = read([self.total, self.count])
        return f"{type(self).__name__}(name={self.name!r}, total={total!r}, count={count!r})"


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

    _FED = "values or sample_weight"

    def __init__(self, name: str = "mean"):
        super().__init__(name)

    def update(self, values, sample_weight=None) -> None:
        """Add one scalar value, or a batch of values with optional per-sample weights."""
        if _is_tensor(values):
            return self._update_on_device(values, sample_weight)
        values = check.real_array("values", values).astype(np.float64)
        if values.ndim == 0:  # one number, e.g. a batch loss weighted by the batch size
            values, sample_weight = values.reshape(1), _scalar_weight(sample_weight)
        self._add(_row_means(values), check.sample_weights("sample_weight", sample_weight,
                                                           length=len(values), of="values"), "values")

    def _update_on_device(self, values, sample_weight) -> None:
        values = _tensor("values", values)
        self._on_its_device(values)
        if values.dim() == 0:  # one number, e.g. a batch loss weighted by the batch size
            weight = _scalar_weight_on_device(sample_weight, values)
            if _is_tensor(weight):
                self._check_weights(weight)
                return self._add_on_device(_floats(values) * weight, weight)
            return self._add_on_device(values, weight, scale=weight)  # in float64, exactly
        weights = _device_weights(sample_weight, values, of="values")
        per_sample = _row_means(_floats(values))
        if weights is None:
            return self._add_on_device(per_sample.sum(), per_sample.shape[0])
        self._check_weights(weights)
        self._add_on_device((per_sample * weights).sum(), weights.sum(dtype=per_sample.dtype))


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

    _FED = "y_true, y_pred or sample_weight"

    def __init__(self, name: str = "mean_squared_error"):
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch: each sample's squared error, averaged over its outputs, weighted."""
        if _is_tensor(y_pred):
            return self._update_on_device(y_true, y_pred, sample_weight)
        y_true, y_pred = check.same_shape(check.real_array("y_true", y_true),
                                          check.real_array("y_pred", y_pred))
        # In float64 (Keras: float32), so a long epoch's total keeps its last digits.
        with np.errstate(over="ignore"):  # a square beyond float64 is refused by _add
            errors = _row_means(np.square(np.subtract(y_true, y_pred, dtype=np.float64)))
        self._add(errors, check.sample_weights("sample_weight", sample_weight, length=len(errors),
                                               of="y_true"), "y_true and y_pred")

    def _update_on_device(self, y_true, y_pred, sample_weight) -> None:
        weights = None
        if not self._same_form(y_true, y_pred, sample_weight):  # else checked before
            given = y_true, y_pred
            y_pred = _tensor("y_pred", y_pred)
            self._on_its_device(y_pred)
            y_true, y_pred = check.same_shape(_on_device("y_true", y_true, y_pred), y_pred)
            weights = _device_weights(sample_weight, y_pred, of="y_true")
            self._remember_form(given, (y_true, y_pred), sample_weight)
        else:  # the one check that reads the metric's state, not the batch's form
            self._on_its_device(y_pred)
        # In float64, as above: the difference of two float32 numbers is exact there.
        difference = _floats(y_pred) - y_true  # y_true is promoted to float64 as it is read
        if weights is None:  # the sum of all squared errors, over the outputs per sample
            flat, samples = difference.reshape(-1), difference.shape[0]
            return self._add_on_device(flat.dot(flat), samples, scale=samples / flat.shape[0])
        self._check_weights(weights)
        errors = _row_means(difference.square())
        self._add_on_device((errors * weights).sum(), weights.sum(dtype=errors.dtype))


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

    _FED = "y_pred or sample_weight"

    def __init__(self, name: str = "accuracy", *, threshold: float = 0.5, top_k: int = 1):
        self.threshold = check.finite_number("threshold", threshold)
        self.top_k = check.positive_int("top_k", top_k)
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch of labels and predictions (see the class docstring for the shapes)."""
        if _is_tensor(y_pred):
            return self._update_on_device(y_true, y_pred, sample_weight)
        correct = self._correct(check.class_indices(check.real_array("y_true", y_true)),
                                check.real_array("y_pred", y_pred))
        self._add(correct, check.sample_weights("sample_weight", sample_weight, length=len(correct),
                                                of="y_true"), "y_true")

    def _kind(self, y_pred, labels: int) -> str:
        """How ``y_pred`` is read: "scores", "indices" or "binary" (or a clear error)."""
        if y_pred.ndim == 0 or y_pred.ndim > 2 or y_pred.shape[0] != labels:
            raise ValueError(f"y_pred must have shape (N,), (N, 1) or (N, C) with N = {labels} "
                             f"labels of y_true, got shape {tuple(y_pred.shape)}")
        if y_pred.ndim == 2 and y_pred.shape[1] >= 2:  # class scores
            if self.top_k > y_pred.shape[1]:
                raise ValueError(f"top_k={self.top_k} but y_pred has only {y_pred.shape[1]} "
                                 f"classes")
            return "scores"
        if self.top_k != 1:
            raise ValueError(f"top_k={self.top_k} needs class scores y_pred of shape (N, C), "
                             f"got shape {tuple(y_pred.shape)}")
        floats = y_pred.dtype.is_floating_point if _is_tensor(y_pred) else y_pred.dtype.kind == "f"
        return "binary" if floats else "indices"

    def _correct(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """1.0 for each sample predicted right, 0.0 otherwise."""
        kind = self._kind(y_pred, len(y_true))
        if kind == "scores":
            n_classes = y_pred.shape[1]
            if np.any(y_true >= n_classes):
                raise ValueError(f"y_true holds class {int(y_true.max())} but y_pred has scores "
                                 f"for classes 0..{n_classes - 1} (shape {y_pred.shape})")
            if self.top_k == 1:  # argmax takes the first of tied classes, as in every framework
                return (y_pred.argmax(axis=1) == y_true).astype(np.float64)
            # A stable sort of the negated scores ranks tied classes by index, as argmax does.
            top = np.argsort(-y_pred.astype(np.float64), axis=1, kind="stable")[:, : self.top_k]
            return np.any(top == y_true[:, None], axis=1).astype(np.float64)
        y_pred = y_pred.reshape(-1)
        if kind == "indices":
            return (y_pred == y_true).astype(np.float64)
        if np.any(y_true > 1):
            raise ValueError(f"a float y_pred of shape (N,) or (N, 1) is read as binary "
                             f"probabilities, so y_true must hold 0 or 1, got class "
                             f"{int(y_true.max())}; for predicted class indices pass integers")
        return ((y_pred > self.threshold) == y_true).astype(np.float64)

    def _update_on_device(self, y_true, y_pred, sample_weight) -> None:
        labels, weights = y_true, None
        kind, top_k = self._checked[1] or (None, None)  # top_k, should it have been changed
        if top_k != self.top_k or not self._same_form(y_true, y_pred, sample_weight):
            given = y_true, y_pred
            y_pred = _tensor("y_pred", y_pred)
            self._on_its_device(y_pred)
            labels = _on_device("y_true", y_true, y_pred)
            check.class_index_shape(labels)
            labels = labels if labels.dim() == 1 else labels.reshape(-1)
            kind = self._kind(y_pred, labels.shape[0])  # y_pred and top_k first, as NumPy's
            weights = _device_weights(sample_weight, labels, of="y_true")
            self._remember_form(given, (labels, y_pred), sample_weight, told=(kind, self.top_k))
        else:  # the one check that reads the metric's state, not the batch's form
            self._on_its_device(y_pred)
        # Every argument is checked: from here the batch is kept (a refused one leaves no trace).
        correct = self._correct_on_device(labels, y_pred, kind)
        if weights is None:  # count_nonzero: the fastest sum of bools
            return self._add_on_device(correct.count_nonzero(), correct.shape[0])
        self._check_weights(weights)
        self._add_on_device((correct * weights).sum(dtype=_float_dtype(y_pred)),
                            weights.sum(dtype=_float_dtype(y_pred)))

    def _correct_on_device(self, labels, y_pred, kind: str):
        """As :meth:`_correct`, on the device: True for each sample predicted right, ``y_pred``
        read as ``kind`` (see :meth:`_kind`). The values that need checking are kept for
        ``result()``."""
        classes = y_pred.shape[1] if kind == "scores" else 2 if kind == "binary" else None
        self._check_later(*_label_check(classes), labels)
        if y_pred.is_floating_point():
            self._check_later("y_pred must be finite, got {} NaN or inf value(s) since the last "
                              "reset()", _not_finite, y_pred)
        if kind == "scores" and self.top_k == 1:  # argmax takes the first of tied classes
            return y_pred.argmax(dim=1) == labels
        if kind == "scores":  # a stable sort of the negated scores ranks ties as argmax does
            top = y_pred.neg().argsort(dim=1, stable=True)[:, : self.top_k]
            return (top == labels[:, None]).any(dim=1)
        y_pred = y_pred.reshape(-1)
        return (y_pred if kind == "indices" else y_pred > self.threshold) == labels


@functools.lru_cache(maxsize=None)  # made once per number of classes, not at every update
def _label_check(classes):
    """The message and the count of the labels that are not class indices below ``classes``
    (any index >= 0 if None), for :meth:`_Metric._check_later`."""
    span = "(integers >= 0)" if classes is None else f"from 0 to {classes - 1}"
    message = (f"y_true must hold class indices {span} for this y_pred, got {{}} other label(s) "
               f"since the last reset()")

    def count(labels):
        if labels.is_floating_point():
            top = None if classes is None else classes - 1
            return (labels.round().clamp(0, top) != labels).count_nonzero()
        if classes is None:
            return (labels < 0).count_nonzero()
        return (labels // classes).count_nonzero()  # 0 exactly for 0 <= label < classes
    return message, count


def _form(y_true, y_pred) -> tuple:
    """What the checks of two tensors read when they are fed (their values are checked
    later): class, shape, dtype, device, layout and whether they require grad."""
    return (type(y_true), y_true.shape, y_true.dtype, y_true.device, y_true.layout,
            y_true.requires_grad, type(y_pred), y_pred.shape, y_pred.dtype, y_pred.device,
            y_pred.layout, y_pred.requires_grad)


def _not_finite(values):
    # x - x is 0 for every finite x and NaN for NaN or an infinity: two operations where
    # isfinite() takes several (this runs once per epoch on every prediction of it).
    return values.sub(values).count_nonzero()


def _row_means(values):
    """The mean of each sample's values (all axes but the first), shape (N,)."""
    rows = values.reshape(len(values), -1)
    if rows.shape[1] == 1:
        return rows[:, 0]
    if _is_tensor(rows):
        return rows.mean(dim=1)
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


# --- tensors: checked by shape and dtype at once, by value on the device ------------------------


def _tensor(name: str, tensor):
    """A tensor of real numbers, not empty, checked by shape and dtype only (its values are
    checked on the device, for ``result()``); bools as int64, detached."""
    torch = sys.modules["torch"]  # imported: a tensor exists
    dtype = tensor.dtype
    if tensor.layout is not torch.strided or tensor.is_meta or tensor.is_quantized:
        check._dense_tensor(name, tensor)  # raises, naming the kind
    if dtype.is_complex:
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype} "
                        f"(shape {tuple(tensor.shape)})")
    if not tensor.numel():
        raise ValueError(f"{name} must not be empty, got shape {tuple(tensor.shape)}")
    if dtype is torch.bool:
        return tensor.detach().long()
    return tensor.detach() if tensor.requires_grad else tensor


def _float_dtype(tensor):
    """float64, to add up in; float32 on Apple's MPS, which has no float64."""
    import torch

    return torch.float32 if tensor.is_mps else torch.float64


def _floats(tensor):
    """``tensor`` in float64 (float32 on MPS): no copy if it already is."""
    return tensor.float() if tensor.is_mps else tensor.double()


def _on_device(name: str, value, like):
    """``value`` as a tensor on ``like``'s device: a tensor as it is, anything else checked on
    the host first (as the NumPy path checks it) and then copied there."""
    if _is_tensor(value):
        if value.device != like.device:
            raise ValueError(f"{name} is on {value.device} but y_pred is on {like.device}: "
                             f"put both on one device")
        return _tensor(name, value)
    import torch

    array = check.real_array(name, value)
    return _tensor(name, torch.as_tensor(np.ascontiguousarray(array), device=like.device))


def _device_weights(sample_weight, like, *, of: str):
    """One weight per sample of ``like`` (shape (N,) or (N, 1)) on its device, or None. Weights
    given as a tensor are checked by shape here, by value on the device; others on the host."""
    if sample_weight is None:
        return None
    length = len(like)
    if not _is_tensor(sample_weight):
        import torch

        weights = check.sample_weights("sample_weight", sample_weight, length=length, of=of)
        return torch.as_tensor(weights, device=like.device)
    weights = _on_device("sample_weight", sample_weight, like)
    if tuple(weights.shape) not in ((length,), (length, 1)):
        hint = (f"; to weight all {length} samples by one number w, pass np.full({length}, w)"
                if weights.dim() == 0 else "")
        raise ValueError(f"sample_weight must hold one weight per sample, shape ({length},) or "
                         f"({length}, 1) for the {length} samples of {of}, got shape "
                         f"{tuple(weights.shape)}{hint}")
    return weights.reshape(length)


def _scalar_weight_on_device(sample_weight, like):
    """The weight of a single tensor value: a Python number (checked here), a tensor of one
    element (its value checked for ``result()``), or 1."""
    if sample_weight is None:
        return 1.0
    if not _is_tensor(sample_weight):
        return check.non_negative_number("sample_weight", _scalar_weight(sample_weight).item())
    weight = _on_device("sample_weight", sample_weight, like)
    if weight.numel() != 1:
        raise ValueError(f"sample_weight must be a single number for a scalar value, got shape "
                         f"{tuple(weight.shape)}")
    return _floats(weight.reshape(()))
