"""Feedback on a student's answer to an exercise: right or not yet, with a hint, never the answer.

Each exercise of the book has an id ``"NN.k"`` (chapter ``NN``, its ``Exercise k``) in
:data:`EXERCISES`. Its ``asks`` says what to assign to ``answer``; its ``uses`` names the
chapter's objects (its log, model, data split or functions) that the check recomputes a correct
answer from, passed by name, as the student edition's check cell does:

    check("01.1", answer, log=log)

So a judge follows the chapter's settings instead of repeating them, and it checks the work,
not the shape of a number: a number typed in, or computed from the wrong object, is not what
the chapter's objects give. Each worked solution in the book ends by requiring ``Right`` from
its judge, so a change to a chapter that moves an answer fails the notebook test.

:func:`check` prints one line, ``Right: <why>`` or ``Not yet: <hint>``, and returns whether the
answer is right. Whatever the answer or the objects passed, it never raises and its own work is
bounded: it reads at most :data:`MOST_ITEMS` items of an iterable, trusts no ``__len__``, and
turns a value into a plain ``float``, ``int`` or ``bool`` before comparing it. A function the
student wrote is called on small inputs; only that function can make a check run long.

>>> check("02.3", 459.5)
Not yet: the answer should be a number of steps, an int; got a float.
False

The checks are for self-study: the expected values are computed here, where anyone can read
them. A check leaves Python's, NumPy's and PyTorch's global generators as it found them; a
judge that builds a model with the chapter's ``make_model`` seeds Keras as that function
always does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import itertools
import math
import numbers
import random
import sys
import textwrap
from collections.abc import Mapping, Set
from fractions import Fraction
from typing import Callable

import numpy as np

__all__ = ["EXERCISES", "Exercise", "check"]

WIDTH = 88  # the widest line a notebook shows
MOST_ITEMS = 64  # the most items read from an iterable answer
MOST_ELEMENTS = 10_000_000  # the largest array or tensor converted (the chapters' are far smaller)
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "jaxlib")


class NotYet(Exception):
    """Raised by a judge with the hint to show; never escapes :func:`check`."""


@dataclasses.dataclass(frozen=True)
class Exercise:
    """What an exercise asks for (``asks``, one line), how it is judged, and from what.

    ``judge(answer, **objects)`` returns the one-line reason the answer is right, or raises
    :class:`NotYet` with a hint; ``objects`` are the chapter's objects named in ``uses``.
    """

    asks: str
    judge: Callable[..., str]
    uses: tuple[str, ...] = ()


# --- reading an answer: whatever it is, a plain value or a hint ---------------------------------


def _name(value) -> str:
    """What a hint says the answer was: 'a float', 'an ndarray', 'None'."""
    if value is None or value is Ellipsis:
        return "None" if value is None else "the placeholder `...`"
    try:
        name = type(value).__name__
        name = name[:40] if isinstance(name, str) and name.isidentifier() else "object"
    except Exception:  # a metaclass may make even the type's name fail
        name = "object"
    return ("an " if name[0].lower() in "aeiou" else "a ") + name


def _got(what: str, value, subject: str = "the answer") -> NotYet:
    if value is Ellipsis:  # the student edition's `answer = ...`, not yet replaced
        return NotYet(f"{subject} should be {what}: write it in place of the placeholder `...`.")
    return NotYet(f"{subject} should be {what}; got {_name(value)}.")


def _framework(value) -> bool:
    """Whether ``value`` is a tensor or model of a framework (read through its own methods)."""
    module = getattr(type(value), "__module__", None)
    return isinstance(module, str) and module.split(".")[0] in FRAMEWORKS


def _array(value, what: str, subject: str = "the answer") -> np.ndarray:
    """An ndarray, a NumPy scalar or a framework tensor as a NumPy array (never a list)."""
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
    elif _framework(value) and hasattr(value, "shape"):
        try:
            size = math.prod(int(d) for d in tuple(value.shape))
            if size > MOST_ELEMENTS:
                raise NotYet(f"{subject} should be {what}; got a tensor of {size} elements.")
            if hasattr(value, "detach"):  # PyTorch: off the autograd graph and the device
                value = value.detach().cpu()
                if "bfloat16" in str(value.dtype):  # NumPy has no bfloat16
                    value = value.float()
            array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        except NotYet:
            raise
        except Exception as error:  # a symbolic tensor, a tensor on a lost device, ...
            raise NotYet(f"{subject} should be {what}; reading {_name(value)} failed "
                         f"({type(error).__name__}).") from None
    else:
        raise _got(what, value, subject)
    if array.size > MOST_ELEMENTS:
        raise NotYet(f"{subject} should be {what}; got an array of {array.size} elements.")
    return array


def _convert(kind: type, value, what: str, subject: str):
    try:
        return kind(value)
    except Exception as error:  # 10**400, an overridden __float__ that raises, ...
        raise NotYet(f"{subject} should be {what}; got {_name(value)} that cannot be read as "
                     f"a {kind.__name__} ({type(error).__name__}).") from None


def _one(value, what: str, kinds: str, subject: str) -> np.generic:
    """The single element of an array or tensor whose dtype kind is in ``kinds``."""
    array = _array(value, what, subject)
    if array.size != 1:
        raise NotYet(f"{subject} should be {what}; got an array of shape {array.shape}.")
    if array.dtype.kind not in kinds:
        raise NotYet(f"{subject} should be {what}; got an array of {array.dtype.name}.")
    return array.reshape(-1)[0]


def _python_number(value) -> bool:
    python = isinstance(value, (numbers.Number, decimal.Decimal))
    return python and not isinstance(value, np.generic)


def _real(value, what: str = "a number", subject: str = "the answer") -> float:
    """A finite float from a Python, NumPy or framework number (or a one-element array)."""
    if isinstance(value, (bool, np.bool_)):
        raise NotYet(f"{subject} should be {what}; got {bool(value)}.")
    if _python_number(value):
        if not isinstance(value, (numbers.Real, decimal.Decimal)):
            raise NotYet(f"{subject} should be {what} (a real one); got {_name(value)}.")
        number = _convert(float, value, what, subject)
    else:
        number = _convert(float, _one(value, what, "iuf", subject), what, subject)
    if not math.isfinite(number):
        raise NotYet(f"{subject} should be {what}, a finite one; got {number}.")
    return number


def _int(value, what: str = "an int", subject: str = "the answer") -> int:
    """A Python int from a Python, NumPy or framework integer; a float is a hint."""
    if isinstance(value, (bool, np.bool_)):
        raise NotYet(f"{subject} should be {what}; got {bool(value)}.")
    if _python_number(value):
        if not isinstance(value, numbers.Integral):
            raise _got(what, value, subject)
        return _convert(int, value, what, subject)
    return _convert(int, _one(value, what, "iu", subject), what, subject)


def _flag(value, subject: str) -> bool:
    """True or False, from a bool, a NumPy bool or a one-element boolean array or tensor."""
    what = "True or False"
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.ndarray) or _framework(value):
        return bool(_one(value, what, "b", subject))
    raise _got(what, value, subject)


def _items(value, what: str, count: int | None = None, *, ordered: bool = True,
           subject: str = "the answer") -> list:
    """The items of a list, tuple, array or other iterable: at most MOST_ITEMS of them.

    No ``len()`` is trusted and no iterable is read to its end: an infinite generator gives
    MOST_ITEMS + 1 items, and then a hint.
    """
    unordered = isinstance(value, Set) and ordered
    if isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) or unordered:
        raise _got(what, value, subject)
    if isinstance(value, (np.ndarray, np.generic)) or _framework(value):
        array = _array(value, what, subject)
        if array.ndim == 0:
            raise NotYet(f"{subject} should be {what}; got a single number (a 0-d array).")
        items = list(array[: MOST_ITEMS + 1])
    else:
        try:
            iterator = iter(value)
        except Exception:  # not iterable (or its __iter__ raises)
            raise _got(what, value, subject) from None
        try:
            items = list(itertools.islice(iterator, MOST_ITEMS + 1))
        except Exception as error:  # its iterator raises
            raise NotYet(f"{subject} should be {what}; reading {_name(value)} item by item "
                         f"failed ({type(error).__name__}).") from None
    if len(items) > MOST_ITEMS:
        raise NotYet(f"{subject} should be {what}; got more than {MOST_ITEMS} items.")
    if count is not None and len(items) != count:
        raise NotYet(f"{subject} should be {what}: {count} items; got {len(items)}.")
    return items


def _function(value, what: str) -> Callable:
    if not callable(value):
        raise _got(what, value)
    return value


def _call(function, args: tuple, on: str):
    """``function(*args)``; any failure of the student's function becomes a hint."""
    try:
        return function(*args)
    except Exception as error:
        raise NotYet(f"your function failed on {on}: {type(error).__name__}.") from None


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(b), 1e-300)


# --- reading the chapter's objects: a wrong one is a hint too -----------------------------------


def _needs(name: str, what: str) -> NotYet:
    return NotYet(f"this check needs the chapter's `{name}` ({what}), as the chapter defines it.")


def _data(value, name: str, *, kinds: str = "iuf") -> np.ndarray:
    """A chapter's array (or tensor), as float64 (or bool, for kinds="b")."""
    try:
        array = _array(value, "an array", f"`{name}`")
    except NotYet:
        raise _needs(name, "an array") from None
    if array.dtype.kind not in kinds or array.size == 0 or array.ndim == 0:
        raise _needs(name, "a non-empty array of " + ("bools" if kinds == "b" else "numbers"))
    if kinds == "b":
        return array.astype(bool)
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise _needs(name, "an array of finite numbers")
    return array


def _steps(value, keys: tuple[str, ...]) -> list[list] | None:
    """A TrainingLog's batch records, epoch by epoch, if it is one that logs ``keys``."""
    from companion.training_log import TrainingLog

    if not isinstance(value, TrainingLog) or not set(keys) <= set(value.keys):
        return None
    epochs = len(value.history[keys[0]])
    by_epoch = [[r for r in value.batches if r.epoch == e] for e in range(epochs)]
    if epochs == 0 or not all(by_epoch) or sum(map(len, by_epoch)) != len(value.batches):
        return None
    return by_epoch


def _log(value, name: str, keys: tuple[str, ...]) -> list[list]:
    by_epoch = _steps(value, keys)
    if by_epoch is None:
        raise _needs(name, f"a TrainingLog of {' and '.join(keys)}, with its steps")
    return by_epoch


def _chapter_call(function, name: str, *args, **kwargs):
    """Call a chapter's function or method; a failure means the wrong object was passed."""
    if not callable(function):
        raise _needs(name, "a function")
    try:
        return function(*args, **kwargs)
    except Exception as error:
        raise NotYet(f"calling the chapter's `{name}` failed ({type(error).__name__}): pass "
                     "the chapter's own object.") from None


def _chapter_number(value, name: str) -> float:
    try:
        return float(value)
    except Exception:
        raise _needs(name, "a function returning a number") from None


def _fitted_losses(model, name: str, *args, **kwargs) -> list[float]:
    """``model.fit(*args, **kwargs).history["loss"]`` for a chapter's Keras model."""
    history = _chapter_call(getattr(model, "fit", None), name, *args, **kwargs)
    logged = getattr(history, "history", None)
    losses = logged.get("loss") if isinstance(logged, Mapping) else None
    if not isinstance(losses, list) or not losses:
        raise _needs(name, "a compiled Keras model")
    return [_chapter_number(v, name) for v in losses]


def _model_weights(model, name: str) -> list[np.ndarray]:
    weights = _chapter_call(getattr(model, "get_weights", None), name)
    if not isinstance(weights, list):
        raise _needs(name, "a Keras model")
    return [_data(w, name) for w in weights]


@contextlib.contextmanager
def _random_state_kept():
    """Leave Python's, NumPy's and PyTorch's global generators as they were."""
    saved = [(random.setstate, random.getstate()), (np.random.set_state, np.random.get_state())]
    torch = sys.modules.get("torch")
    if torch is not None:
        saved.append((torch.random.set_rng_state, torch.random.get_rng_state()))
    try:
        yield
    finally:
        for restore, state in saved:
            restore(state)


# --- the judges, one per exercise ----------------------------------------------------------------


def _weighted(records, key: str = "loss") -> float:
    return sum(r.batch[key] * r.size for r in records) / sum(r.size for r in records)


def _unseen_records(records) -> list:
    """Records no run logged: other losses and the short batch first, running means to match."""
    sizes = [r.size for r in reversed(records)]
    losses = [1.0 + 0.5 * k for k in range(len(records))]
    made_up, total, count = [], 0.0, 0
    for record, size, loss in zip(records, sizes, losses):
        total, count = total + loss * size, count + size
        made_up.append(dataclasses.replace(record, size=size, batch={**record.batch, "loss": loss},
                                           running={**record.running, "loss": total / count}))
    return made_up


def _01_1(answer, *, log) -> str:
    epochs = _log(log, "log", ("loss",))
    if _python_number(answer) or isinstance(answer, np.generic):
        raise NotYet("a number cannot show how it was computed: the answer should be a "
                     "function of one epoch's records, e.g. `def epoch_loss(records): ...`.")
    epoch_loss = _function(answer, "a function of one epoch's records (a def or a lambda)")
    returns = "what your function returns"
    for epoch, records in enumerate(epochs):
        value = _real(_call(epoch_loss, (list(records),), f"epoch {epoch + 1}'s records"),
                      "the epoch's loss, a number", returns)
        if not _close(value, log.history["loss"][epoch], 1e-5):
            if _close(value, float(np.mean([r.batch["loss"] for r in records])), 1e-6):
                raise NotYet("that is the plain mean of the batch losses: weight each by its "
                             "batch size.")
            raise NotYet(f"for epoch {epoch + 1} your function does not give the loss History "
                         "stored: average the batch losses, each weighted by its size.")
    # A function that looks the value up, rather than computing it, fails on unseen records.
    unseen = _unseen_records(epochs[-1])
    value = _real(_call(epoch_loss, (unseen,), "records of another run"), "a number", returns)
    if not _close(value, _weighted(unseen), 1e-6):
        raise NotYet("on records of another run your function does not give their loss: "
                     "compute it from the records it is given.")
    return "the size-weighted mean of the batch losses is what History stores."


def _01_2(answer, *, model, x, y) -> str:
    items = _items(answer, "a list of batch sizes (ints from 1 to 60)", ordered=False)
    sizes = {_int(s, "an int", "each batch size") for s in items}
    if not sizes <= set(range(1, 61)):
        raise NotYet("batch sizes here run from 1 to 60.")
    inputs, targets = _data(x, "x"), _data(y, "y")
    predictions = _data(_chapter_call(getattr(model, "predict", None), "model", inputs,
                                      batch_size=len(inputs), verbose=0), "model")
    if predictions.shape != targets.shape:
        raise _needs("model", "the trained model, for x and y")
    errors = np.mean((predictions - targets) ** 2, axis=-1)  # one squared error per sample
    n = len(errors)

    def mean_of_means(size):
        return float(np.mean([errors[s : s + size].mean() for s in range(0, n, size)]))

    exact = {s for s in range(1, 61) if _close(mean_of_means(s), float(errors.mean()), 1e-9)}
    if sizes == exact:
        return "exactly the batch sizes that divide N, so that every batch has the same weight."
    if sizes < exact:
        raise NotYet("some batch sizes are missing: try every size from 1 to 60.")
    raise NotYet("some sizes in your list leave a short last batch: when is every batch, the "
                 "last one included, the same size?")


def _01_3(answer, *, log) -> str:
    from companion.training_log import TrainingLog

    keras_steps = [r for epoch in _log(log, "log", ("loss", "mse")) for r in epoch]
    if isinstance(answer, Mapping):
        raise NotYet("the answer should be the run's log, decayed_log, not its history: the "
                     "check reads every step of it.")
    if not isinstance(answer, TrainingLog):
        raise _got("the weight-decay run's log, decayed_log (what torch_loop.train returns)",
                   answer)
    by_epoch = _steps(answer, ("loss", "mse"))
    if by_epoch is None:
        raise NotYet("the log should have 'loss' and 'mse' for every step: pass metrics=["
                      "metrics.MeanSquaredError(name=\"mse\")] to torch_loop.train.")
    steps = [r for epoch in by_epoch for r in epoch]
    if [r.size for r in steps] != [r.size for r in keras_steps]:
        raise NotYet("train on the same data, batches and epochs as the Keras run, `log`.")
    if not all(_close(r.batch["mse"], k.batch["mse"], 1e-5) for r, k in zip(steps, keras_steps)):
        raise NotYet("the MSE does not follow the Keras run: start from its weights and decay "
                     "only the hidden kernel, by the gradient of the penalty (twice the L2 "
                     "factor).")
    if not all(_close(r.batch["loss"], r.batch["mse"], 1e-5) for r in steps):
        raise NotYet("the logged loss still differs from the MSE: leave out `penalty=`.")
    for key in ("loss", "mse"):
        for records, value in zip(by_epoch, answer.history[key]):
            if not _close(value, _weighted(records, key), 1e-5):
                raise NotYet("the log's history does not match its steps: give the log that "
                             "torch_loop.train returned.")
    return ("weight decay makes the same updates as the penalty, but never enters the computed "
            "loss, so the logged loss is the MSE.")


def _02_1(answer) -> str:
    what = "a pair (one call resumed with seed=0 bit-identical, seed=epoch bit-identical)"
    naive, fixed = (_flag(v, "each item") for v in _items(answer, what, 2))
    if (naive, fixed) == (False, True):
        return ("a generator created per call replays epoch 1's order after resuming; seed=epoch "
                "needs nothing saved.")
    if naive:
        raise NotYet("what order does a fresh generator seeded with 0 draw in the resumed epoch?")
    raise NotYet("with seed=epoch, which order does each run draw in epoch 2?")


def _02_2(answer, *, make_model, compiled, x, y, FIT) -> str:
    kept = _int(answer, "the kept epoch, counted from 1, an int")
    if not isinstance(FIT, Mapping):
        raise _needs("FIT", "the dict of fit options")
    model = _chapter_call(compiled, "compiled", _chapter_call(make_model, "make_model"))
    losses = _fitted_losses(model, "compiled(make_model())", _data(x, "x"), _data(y, "y"),
                            epochs=5, **FIT)
    best = int(np.argmin(losses)) + 1  # ModelCheckpoint keeps the first of equal minima
    if kept == best:
        return ("'best' for loss is the lowest epoch average, and while the loss falls that is "
                "the last epoch.")
    if kept == best - 1:
        raise NotYet("count the epochs from 1, as Keras' {epoch} in file names does.")
    if not 1 <= kept <= len(losses):
        raise NotYet("the five epochs are numbered 1 to 5.")
    raise NotYet("save_best_only keeps the epoch with the lowest logged loss: which one is it?")


def _bn_momentum() -> float:
    import keras

    return float(keras.layers.BatchNormalization().momentum)


def _02_3(answer) -> str:
    steps = _int(answer, "a number of steps, an int")
    momentum = _bn_momentum()  # Keras' default: the moving mean keeps this share every step
    needed = next(k for k in itertools.count(1) if 1 - momentum**k >= 0.99)
    if steps == needed:
        return f"after k steps the moving mean has come 1 - {momentum}**k of the way."
    hint = "round k up" if steps == needed - 1 else f"take logarithms of {momentum}**k <= 0.01"
    raise NotYet(f"the smallest k with 1 - {momentum}**k >= 0.99 ({hint}).")


def _02_4(answer) -> str:
    what = ("a pair (the last good file loads after torch.save to its path, the same after "
            "save_training_state)")
    direct, atomic = (_flag(v, "each item") for v in _items(answer, what, 2))
    if (direct, atomic) == (False, True):
        return ("writing to a temporary file and then os.replace never leaves a half-written "
                "file at the checkpoint's path.")
    if direct:
        raise NotYet("opening the path for writing truncates the last good file first.")
    raise NotYet("where does save_training_state write before the crash, and what is at the path?")


def _smallest_batches(right: np.ndarray) -> set[int]:
    """Every reading of 'the smallest B with a predicted scatter of at most 0.01'.

    sqrt(p(1-p)/B), or the hypergeometric sqrt(p(1-p)/B (N-B)/(N-1)) of draws without
    replacement; each solved exactly and in floating point (which may round across an integer).
    """
    n, hits = len(right), int(np.sum(right))
    p = Fraction(hits, n)
    variance, bound = p * (1 - p), Fraction(1, 100) ** 2
    exact = [math.ceil(variance / bound), math.ceil(variance * n / (bound * (n - 1) + variance))]
    v = hits / n * (1 - hits / n)
    floating = [math.ceil(v / 0.01**2), math.ceil(v * n / (0.01**2 * (n - 1) + v))]
    return set(exact) | set(floating)


def _03_1(answer, *, train_right) -> str:
    what = "a pair (p, the smallest batch size whose predicted scatter is at most 0.01)"
    p, needed = _items(answer, what, 2)
    right = _data(train_right, "train_right", kinds="b")
    p = _real(p, "the frozen model's training accuracy, a number", "p (the first item)")
    needed = _int(needed, "an int", "the batch size (the second item)")
    truth = float(right.mean())
    if abs(p - truth) > 1e-6:
        if abs(p - 100 * truth) <= 1e-4:
            raise NotYet("p is a fraction, not per cent.")
        raise NotYet("p should be the frozen model's training accuracy, the share of "
                     "train_right that is True.")
    if needed in _smallest_batches(right):
        return "sqrt(p(1-p)/B) <= 0.01 means B >= p(1-p) / 0.01**2, rounded up."
    if needed <= 1:
        raise NotYet("a scatter of one percentage point is 0.01, not 1.")
    raise NotYet("solve sqrt(p(1-p)/B) <= 0.01 for B (a scatter of one point is 0.01), then "
                 "round up.")


def _03_2(answer) -> str:
    floor = _function(answer, "a function of the number of classes C, e.g. `lambda C: ...`")
    classes = [2, 10, 100, 1000, *np.random.default_rng(0).integers(3, 100_000, size=5).tolist()]
    for c in classes:
        value = _real(_call(floor, (c,), f"C = {c}"), "a number", "what your function returns")
        if not _close(value, math.log(1 + (c - 1) / math.e), 1e-5):
            raise NotYet("a perfect model puts e times the probability on the true class: what "
                         "does the loss of the softmax of probabilities come to?")
    return "ln(1 + (C-1)/e) grows like ln C - 1, close to the loss at chance for many classes."


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _03_3(answer, *, val_logits, y_val) -> str:
    what = ("a pair (before, after), each a triple (losses, accuracies, ECEs) with one value "
            "per twin")
    logits, labels = _data(val_logits, "val_logits"), _data(y_val, "y_val")
    if logits.ndim != 4 or labels.ndim != 1 or logits.shape[2] != len(labels):
        raise _needs("val_logits", "epochs x twins x images x classes, for y_val")
    finals, labels = logits[-1], labels.astype(int)
    per_twin = f"{len(finals)} numbers, one per twin"
    before, after = (
        tuple([_real(v, "a number", "each value") for v in
               _items(values, per_twin, len(finals), subject="each of losses, accuracies, ECEs")]
              for values in _items(part, "a triple (losses, accuracies, ECEs)", 3,
                                   subject="each item"))
        for part in _items(answer, what, 2))
    for twin, final in enumerate(finals):
        try:
            _03_3_twin(final, labels, tuple(v[twin] for v in before),
                       tuple(v[twin] for v in after))
        except NotYet as hint:
            raise NotYet(f"twin {twin}: {hint}") from None
    return "dividing all logits by one T > 0 keeps every argmax; only the confidence changes."


def _03_3_twin(final, labels, before, after) -> None:
    """One twin's (loss, accuracy, ECE) at T = 1 and at the T picked on the first half."""
    from companion import calibration

    half = len(labels) // 2
    first, second = slice(0, half), slice(half, None)

    def report(part, t):
        z = final[part] / t
        return (float(calibration.cross_entropy(labels[part], z).mean()),
                float(np.mean(z.argmax(axis=1) == labels[part])),
                float(calibration.expected_calibration_error(labels[part], _softmax(z))))

    def chosen(part):  # T with the lowest loss on `part`, on grids of several steps
        def loss(t):
            return float(calibration.cross_entropy(labels[part], final[part] / t).mean())

        grids = [np.linspace(0.5, 5.0, round(4.5 / step) + 1) for step in (0.5, 0.1, 0.05, 0.01)]
        return {float(grid[np.argmin([loss(t) for t in grid])]) for grid in grids}

    def same(mine, truth):
        # float32 numbers are a correct route: one image moves the accuracy by 1/len, far more
        return (_close(mine[0], truth[0], 1e-4) and abs(mine[1] - truth[1]) <= 1e-6
                and abs(mine[2] - truth[2]) <= 1e-4 * max(truth[2], 1e-3))

    at_one = report(second, 1.0)
    if not same(before, at_one):
        if same(before, report(first, 1.0)):
            raise NotYet("report on the second half of the validation set; the first half "
                         "picks T.")
        if abs(before[1] - 100 * at_one[1]) <= 1e-6:
            raise NotYet("give the accuracy as a fraction, not per cent.")
        raise NotYet("at T = 1 these are not the numbers of the last epoch's logits on the "
                     "second half: recompute them from val_logits[-1].")
    if any(same(after, report(second, t)) for t in chosen(first)):
        return
    if abs(after[1] - before[1]) > 1e-6:
        raise NotYet("the accuracy changed: divide the logits (not the probabilities) by T > 0.")
    if any(same(after, report(second, t)) for t in chosen(second)):
        raise NotYet("pick T on the first half and report on the second: a T chosen on the "
                     "half you report flatters the result.")
    raise NotYet("at your T these are not the second half's numbers: pick T on the first half "
                 "as the grid's value with the lowest loss, then divide the logits by it.")


def _weights(value, what: str) -> list[np.ndarray]:
    """A list of weight arrays, from a list of arrays or tensors, or from a Keras model."""
    if _framework(value) and hasattr(value, "get_weights"):
        value = _call(value.get_weights, (), "get_weights()")
    return [_array(a, "an array", "each item").astype(np.float64) for a in _items(value, what)]


def _04_1(answer, *, make_model, x, y, BATCH) -> str:
    import keras

    from companion.gradients import gradient_difference

    what = "the accumulated model's weights, `accumulating.get_weights()`"
    mine = _weights(answer, what)
    inputs, targets = _data(x, "x"), _data(y, "y")
    if isinstance(BATCH, bool) or not isinstance(BATCH, int) or BATCH <= 0:
        raise _needs("BATCH", "the micro-batch size, an int")

    def after_one_epoch(batch_size):  # plain SGD, steps of batch_size samples, in order
        model = _chapter_call(make_model, "make_model")
        _chapter_call(getattr(model, "compile", None), "make_model()",
                      optimizer=keras.optimizers.SGD(0.05), loss="mse")
        _fitted_losses(model, "make_model()", inputs, targets, batch_size=batch_size, epochs=1,
                       shuffle=False, verbose=0)
        return _model_weights(model, "make_model()")

    reference = after_one_epoch(4 * BATCH)
    if [w.shape for w in mine] != [w.shape for w in reference]:
        raise NotYet(f"the answer should be {what}: {len(reference)} arrays of the model's "
                     "shapes.")
    if not all(np.isfinite(w).all() for w in mine):
        raise NotYet("your weights are not finite: the steps blew up.")
    if gradient_difference(reference, mine) < 1e-5:
        return "weighting each micro-batch's mean by its share makes the step's gradient the mean."
    start = _model_weights(_chapter_call(make_model, "make_model"), "make_model()")
    if all(np.array_equal(a, b) for a, b in zip(start, mine)):
        raise NotYet("these are the initial weights: train the accumulating model first.")
    if gradient_difference(after_one_epoch(BATCH), mine) < 1e-5:
        raise NotYet("you step after every micro-batch: sum the gradients of four and step once.")
    raise NotYet("weight each micro-batch's mean loss by its share of the step's samples, sum the "
                 "gradients, and step once per four micro-batches.")


def _04_2(answer, *, final_mse) -> str:
    what = "a pair (largest stable SGD rate on the mean, on the sum)"
    if _python_number(answer) or isinstance(answer, np.generic):
        raise NotYet(f"the answer should be {what}: the ratio follows from the two rates you "
                     f"measure; got {_name(answer)}.")
    rates = [_real(r, "a number", "each rate") for r in _items(answer, what, 2)]
    if not all(r > 0 for r in rates):
        raise NotYet("a learning rate is positive.")
    if rates[0] < rates[1]:
        raise NotYet("the first rate is the one on the mean: which reduction has the larger "
                     "gradients?")
    for reduction, rate in zip(("mean", "sum"), rates):
        final = _chapter_call(final_mse, "final_mse", reduction, "SGD", rate)
        if not math.isfinite(_chapter_number(final, "final_mse")):
            raise NotYet(f"at your rate on the {reduction}, five epochs blow up: the largest "
                         "stable rate is lower.")
        # Near the limit, stability need not be monotone in the rate (the chapter's model on
        # the sum trains at 1.05 times its limit but not at 1.01 to 1.04): two probes.
        for factor in (1.1, 1.2):
            larger = _chapter_call(final_mse, "final_mse", reduction, "SGD", factor * rate)
            if not math.isfinite(_chapter_number(larger, "final_mse")):
                break
        else:
            raise NotYet(f"on the {reduction}, rates 10% and 20% larger than yours still train: "
                         "look for the largest (to within a few per cent).")
    return ("the sum's gradients are the batch size times the mean's, so its stable rates "
            "are that much smaller.")


def _04_3(answer) -> str:
    what = ("a pair (short token's weight / long token's weight under the token-level mean, the "
            "same under the sequence-level mean), e.g. (1.0, 3.0)")
    token, sequence = (_real(v, "a number", "each ratio") for v in _items(answer, what, 2))
    lengths = [50, 10, 2]
    # Each token's weight is the derivative of the reduction with respect to its loss.
    weights = (1 / sum(lengths), 1 / sum(lengths)), (1 / (3 * lengths[2]), 1 / (3 * lengths[0]))
    expected = [short / long for short, long in weights]
    if _close(token, expected[0], 1e-4) and _close(sequence, expected[1], 1e-4):
        return ("the token-level mean weighs every token alike; the sequence-level mean gives "
                "each sequence an equal share.")
    if _close(sequence, 1 / expected[1], 1e-4):
        raise NotYet("the ratio is upside down: the short token's weight over the long one's.")
    raise NotYet("differentiate each reduction with respect to the token losses and divide the "
                 "last entry by the first.")


def _04_4(answer) -> str:
    import torch

    step = _function(answer, "your step function, "
                             "`fixed_train_step(model, x_batch, y_batch, optimizer, loss_fn)`")
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 10, generator=generator), torch.randn(32, 1, generator=generator))
               for _ in range(2)]
    nets = []
    for _ in range(2):
        torch.manual_seed(0)  # the global generator is restored when the check ends
        nets.append(torch.nn.Sequential(torch.nn.Linear(10, 4), torch.nn.Tanh(),
                                        torch.nn.Linear(4, 1)))
    mine, reference = nets
    optimizer = torch.optim.SGD(mine.parameters(), lr=0.05)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    for number, (x, y) in enumerate(batches, start=1):
        returned = _real(_call(step, (mine, x, y, optimizer, torch.nn.MSELoss()),
                               "a batch of 32"), "a number", "the loss your step returns")
        reference_optimizer.zero_grad()
        loss = torch.nn.MSELoss()(reference(x), y)
        loss.backward()
        reference_optimizer.step()
        same_step = all(torch.allclose(p, q, rtol=1e-5, atol=1e-7)
                        for p, q in zip(mine.parameters(), reference.parameters()))
        if not same_step and number == 2:
            raise NotYet("the first step is right, the second is not: zero the gradients at "
                         "every step, or they add up.")
        if not same_step:
            raise NotYet("the weights moved differently from one SGD step on the batch mean: "
                         "zero the gradients, use the loss as loss_fn returns it, step once.")
        if not _close(returned, loss.item(), 1e-5):
            raise NotYet("the step is right, but return the batch-mean loss itself.")
    return "one step along the gradient of the batch mean, returning that mean."


def _05_1(answer, *, x, y_raw) -> str:
    what = "a pair (your trained sigmoid model, your lower bound for its MSE)"
    model, bound = _items(answer, what, 2)
    bound = _real(bound, "a number", "the lower bound (the second item)")
    if not (_framework(model) and hasattr(model, "predict")):
        raise NotYet("the first item should be your trained Keras model, `squashed`; got "
                     f"{_name(model)}.")
    target = _data(y_raw, "y_raw")
    expected = float(np.var(target) + (np.mean(target) - 1.0) ** 2)
    if not _close(bound, expected, 1e-6):
        if _close(bound, float(np.var(target)), 1e-6):
            raise NotYet("Var(y) bounds any constant; a sigmoid output is at most 1: use c = 1.")
        raise NotYet("every output lies in (0, 1): what is the MSE of the constant 1?")
    logged = getattr(getattr(model, "history", None), "history", None)
    values = next((logged[k] for k in ("mse", "mean_squared_error", "loss")
                   if isinstance(logged, Mapping) and k in logged), None)
    if not isinstance(values, list) or not values:
        raise NotYet("train the model with `fit` first: the check reads the MSE it logged "
                     "(on older Keras, 3.2 for one, `predict` and `evaluate` clear it: fit last).")
    inputs = _data(x, "x")
    # Far from the data too: a sigmoid stays in [0, 1] for any input, a linear output does not.
    probe = np.concatenate([inputs, 1e3 * inputs, -1e3 * inputs]).astype(np.float32)
    history = model.history
    try:
        outputs = _array(_call(lambda: model.predict(probe, verbose=0), (), "the chapter's x"),
                         "an array", "what your model predicts")
    finally:  # Keras 3.2's predict replaces model.history with an empty one: put it back
        model.history = history
    if outputs.size == 0 or not (np.all(outputs >= 0) and np.all(outputs <= 1)):
        raise NotYet("some outputs are outside [0, 1]: give the output layer a sigmoid.")
    trained = _real(values[-1], "a number", "the MSE your model logged")
    if trained < bound:
        raise NotYet("your model's MSE is below the bound: train it on the raw target, y_raw.")
    return "outputs in (0, 1) cannot come closer to targets of 25 and more than the constant 1."


def _05_2(answer, *, y, least_squares) -> str:
    what = "a pair (the 1-D metric's result, its count)"
    result, count = (_real(v, "a number", "each item") for v in _items(answer, what, 2))
    target, fit = _data(y, "y"), _data(least_squares, "least_squares")
    if target.shape != fit.shape or target.ndim != 2:
        raise _needs("least_squares", "predictions shaped like y")
    target, fit = target[:, 0], fit[:, 0]
    starts = range(0, len(target), 32)
    means = [np.mean((target[s : s + 32] - fit[s : s + 32]) ** 2) for s in starts]
    if count == len(target):
        raise NotYet("that count would be one per sample: feed the 1-D batches, not (N, 1) ones.")
    if count != len(means) or not _close(result, float(np.mean(means)), 1e-5):
        raise NotYet("feed y[:, 0] and least_squares[:, 0] in batches of 32 to one metric; report "
                     "float(metric.result()) and float(metric.count).")
    return "a 1-D batch is one sample of 32 outputs: the metric counts batches, not samples."


def _05_3(answer, *, x, y_raw, least_squares_fit) -> str:
    scale = _real(answer, "the largest factor s, a number")
    target = _data(y_raw, "y_raw")
    fit = _data(_chapter_call(least_squares_fit, "least_squares_fit", _data(x, "x"), target),
                "least_squares_fit")
    if fit.shape != target.shape:
        raise _needs("least_squares_fit", "the chapter's least-squares fit")
    largest_error = float(np.max(np.abs(fit - target)))
    expected = math.sqrt(2.0**-25) / largest_error
    if _close(scale, expected, 1e-3):
        return "a float16 square rounds to 0 below half the smallest subnormal, 2**-25."
    if _close(scale, math.sqrt(2.0**-24) / largest_error, 1e-3):
        raise NotYet("a square rounds to 0 when below half the smallest float16 subnormal.")
    raise NotYet("start from the largest error: (s * error)**2 must round to 0 in float16.")


def _05_4(answer) -> str:
    formula = _function(answer, "your formula as a function of (predictions, targets)")
    rng = np.random.default_rng(1)
    for size in (5, 50):
        predictions, targets = rng.normal(0.0, 1.0, size), rng.normal(2.0, 3.0, size)
        all_pairs = float(np.mean((predictions[:, None] - targets[None, :]) ** 2))
        value = _real(_call(formula, (predictions, targets), f"vectors of {size}"), "a number",
                      "what your function returns")
        if not _close(value, all_pairs, 1e-9):
            raise NotYet("on random vectors it differs from the mean over all pairs (i, j): check "
                         "each of the three terms (population variances, ddof=0).")
    return "the mean over all pairs is both variances plus the squared gap between the means."


EXERCISES: dict[str, Exercise] = {
    "01.1": Exercise("a function: one epoch's records from log.batches -> that epoch's loss",
                     _01_1, ("log",)),
    "01.2": Exercise("batch sizes in 1..60 where the mean of batch means is exact, a list",
                     _01_2, ("model", "x", "y")),
    "01.3": Exercise("the weight-decay run's log (torch_loop.train's), decayed_log", _01_3,
                     ("log",)),
    "02.1": Exercise("(naive resume bit-identical, seed=epoch resume bit-identical), two bools",
                     _02_1),
    "02.2": Exercise("the epoch ModelCheckpoint keeps, counted from 1, an int", _02_2,
                     ("make_model", "compiled", "x", "y", "FIT")),
    "02.3": Exercise("the number of steps k, an int", _02_3),
    "02.4": Exercise("(loads after the torch.save crash, after the save_training_state crash)",
                     _02_4),
    "03.1": Exercise("(p, smallest batch size with a predicted scatter of at most 0.01)", _03_1,
                     ("train_right",)),
    "03.2": Exercise("a function of C returning the floor, e.g. lambda C: ...", _03_2),
    "03.3": Exercise("((losses, accs, ECEs) at T = 1, (the same) at each twin's T), 2nd half",
                     _03_3, ("val_logits", "y_val")),
    "04.1": Exercise("the accumulated model's weights, accumulating.get_weights()", _04_1,
                     ("make_model", "x", "y", "BATCH")),
    "04.2": Exercise("(largest stable SGD rate on the mean, on the sum), two floats", _04_2,
                     ("final_mse",)),
    "04.3": Exercise("(short/long token weight, token-level mean; same, sequence-level mean)",
                     _04_3),
    "04.4": Exercise("your fixed_train_step function", _04_4),
    "05.1": Exercise("(your trained sigmoid model, your lower bound for its MSE)", _05_1,
                     ("x", "y_raw")),
    "05.2": Exercise("(the 1-D metric's result, its count), two floats", _05_2,
                     ("y", "least_squares")),
    "05.3": Exercise("the largest factor s, a float", _05_3, ("x", "y_raw", "least_squares_fit")),
    "05.4": Exercise("your formula as a function of (predictions, targets)", _05_4),
}


def call_line(exercise: str, answer: str = "answer") -> str:
    """The check as a notebook writes it: ``check("01.1", answer, log=log)``."""
    names = EXERCISES[exercise].uses
    return f'check("{exercise}", {", ".join([answer, *(f"{n}={n}" for n in names)])})'


def check(exercise: str, answer, **objects) -> bool:
    """Print whether ``answer`` solves ``exercise`` (an id of :data:`EXERCISES`), and return it.

    ``objects`` are the chapter's objects the exercise names in ``uses``.

    >>> check("02.3", 10)
    Not yet: the smallest k with 1 - 0.99**k >= 0.99 (take logarithms of 0.99**k <= 0.01).
    False
    """
    known = ", ".join(EXERCISES)
    if not isinstance(exercise, str):
        raise TypeError(f"exercise must be an exercise id such as '01.1' (one of {known}), "
                        f"got {type(exercise).__name__}: {exercise!r}")
    if exercise not in EXERCISES:
        raise ValueError(f"exercise must be one of {known}, got {exercise!r}")
    entry = EXERCISES[exercise]
    if set(objects) != set(entry.uses):
        names = " and ".join(f"`{n}`" for n in entry.uses) or "nothing but the answer"
        verdict, right = (f"Not yet: this check takes the chapter's {names}: "
                          f"{call_line(exercise)}."), False
    else:
        try:
            with _random_state_kept():
                verdict, right = f"Right: {entry.judge(answer, **objects)}", True
        except NotYet as hint:
            verdict, right = f"Not yet: {hint}", False
        except Exception as error:  # what no reader foresaw: still a hint, never a traceback
            verdict, right = (f"Not yet: the answer should be {entry.asks}; reading it failed "
                              f"({type(error).__name__})."), False
    # A notebook shows no line wider than 88 columns.
    print(textwrap.fill(verdict, width=WIDTH, subsequent_indent="  "))
    return right
