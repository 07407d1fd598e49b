"""Feedback on a student's answer to an exercise: right or not yet, with a hint, never the answer.

Each exercise of the book has an id ``"NN.k"`` (chapter ``NN``, its ``Exercise k``) in
:data:`EXERCISES`; its ``asks`` says what to assign to ``answer``. :func:`check` recomputes the
expected value with the companion (the chapter's own settings: the same data, seeds and
hyperparameters) or checks a property of the answer, and prints one line: ``Right: <why>`` or
``Not yet: <hint>``. A malformed answer (the placeholder ``...``, a wrong type) is a "Not yet"
too, never an exception: a student notebook runs top to bottom before any answer is written.

>>> check("02.3", 459.5)
Not yet: the answer should be a number of steps (an int).
False

Checks that train a model (chapters 1, 2 and 4) re-seed the frameworks, as the chapter does
before each experiment; each such reference is computed once per session.
"""

from __future__ import annotations

import functools
import math
import numbers
import textwrap
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["EXERCISES", "Exercise", "check"]

WIDTH = 88  # the widest line a notebook shows


class NotYet(Exception):
    """Raised by a judge with the hint to show; never escapes :func:`check`."""


@dataclass(frozen=True)
class Exercise:
    """What an exercise asks for (``asks``, one line) and how an answer is judged.

    ``judge(answer)`` returns the one-line reason the answer is right, or raises
    :class:`NotYet` with a hint.
    """

    asks: str
    judge: Callable[[object], str]


# --- reading an answer: a wrong shape is a hint, not a traceback ---------------------------------


def _number(value, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise NotYet(f"the answer should be {what}.")
    value = float(np.asarray(value).item()) if np.size(value) == 1 else math.nan
    if not math.isfinite(value):
        raise NotYet(f"the answer should be {what}, a finite number.")
    return value


def _parts(value, count: int, what: str) -> tuple:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        raise NotYet(f"the answer should be {what}.")
    if len(value) != count:
        raise NotYet(f"the answer should be {what}.")
    return tuple(value)


def _flag(value, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise NotYet(f"the answer should be {what}: True or False each.")
    return bool(value)


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(b), 1e-300)


# --- reference computations, shared and cached: the chapters' own settings -----------------------


@functools.cache
def _diabetes():
    from companion.data import load_diabetes

    x, y = load_diabetes()
    return x, y, load_diabetes(standardize=False)[1]


@functools.cache
def _chapter1_log():
    """Chapter 1's reference run: tf_loop.train, SGD(0.05), L2 0.01, batches of 32, 5 epochs."""
    import keras

    from companion import models, tf_loop

    x, y, _ = _diabetes()
    return tf_loop.train(models.keras_mlp(10, hidden=(16,), l2=0.01, seed=0), x, y,
                         loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.05),
                         metrics=[keras.metrics.MeanSquaredError(name="mse")], batch_size=32,
                         epochs=5)


@functools.cache
def _chapter2_losses() -> tuple[float, ...]:
    """Chapter 2's five logged epoch losses: Adam(0.01), batches of 32, no shuffling."""
    import keras

    from companion import models

    x, y, _ = _diabetes()
    model = models.keras_mlp(10, hidden=(16,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0).history
    return tuple(history["loss"])


@functools.cache
def _chapter4_large_batch_weights() -> tuple:
    """Chapter 4's ``fit`` with SGD(0.05) and batches of 128 for one epoch: the final weights."""
    import keras

    from companion import models

    x, y, _ = _diabetes()
    model = models.keras_mlp(10, hidden=(16,), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=128, epochs=1, shuffle=False, verbose=0)
    return tuple(model.get_weights())


@functools.cache
def _least_squares(raw: bool) -> np.ndarray:
    """Chapter 5's least-squares fit (with an intercept) of the standardized or raw target."""
    x, y, y_raw = _diabetes()
    target = (y_raw if raw else y).astype(np.float64)
    design = np.c_[x, np.ones(len(x))].astype(np.float64)
    return design @ np.linalg.lstsq(design, target, rcond=None)[0]


# --- the judges, one per exercise ----------------------------------------------------------------


def _01_1(answer) -> str:
    value = _number(answer, "the epoch-3 loss recomputed from log.batches, a float")
    records = [r for r in _chapter1_log().batches if r.epoch == 2]
    plain = float(np.mean([r.batch["loss"] for r in records]))
    if _close(value, _chapter1_log().history["loss"][2], 1e-5):
        return "the size-weighted mean of the batch losses is what History stores."
    if _close(value, plain, 1e-7):
        raise NotYet("that is the plain mean of the batch losses: weight each by its batch size.")
    raise NotYet("average the third epoch's batch losses (epoch == 2), each weighted by its size.")


def _01_2(answer) -> str:
    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__iter__"):
        raise NotYet("the answer should be a list of the batch sizes (ints from 1 to 60).")
    sizes = sorted({int(s) for s in answer if isinstance(s, numbers.Integral)})
    n = len(_diabetes()[0])
    expected = [d for d in range(1, 61) if n % d == 0]
    if sizes == expected:
        return "exactly the batch sizes that divide N, so that every batch has the same weight."
    if set(sizes) < set(expected):
        raise NotYet("some batch sizes are missing: try every size from 1 to 60.")
    raise NotYet("when is every batch, the last one included, the same size?")


def _01_3(answer) -> str:
    from companion.compare import max_relative_difference

    if not isinstance(answer, dict) or not {"loss", "mse"} <= set(answer):
        raise NotYet("the answer should be the run's history, a dict with 'loss' and 'mse' lists.")
    keras_mse = _chapter1_log().history["mse"]
    try:
        same_path = max_relative_difference(keras_mse, list(answer["mse"])) <= 1e-5
        loss_is_mse = max_relative_difference(list(answer["loss"]), list(answer["mse"])) <= 1e-6
    except (TypeError, ValueError) as error:
        raise NotYet(f"the history's lists should hold 5 numbers each ({error}).") from None
    if not same_path:
        raise NotYet("the MSE does not follow the Keras run: decay only the hidden kernel, by the "
                     "gradient of the penalty (twice the L2 factor).")
    if not loss_is_mse:
        raise NotYet("the logged loss still differs from the MSE: leave out `penalty=`.")
    return ("weight decay makes the same updates as the penalty, but never enters the computed "
            "loss, so the logged loss is the MSE.")


def _02_1(answer) -> str:
    what = "a pair (one call resumed with seed=0 bit-identical, seed=epoch bit-identical)"
    naive, fixed = (_flag(v, what) for v in _parts(answer, 2, what))
    if (naive, fixed) == (False, True):
        return ("a generator created per call replays epoch 1's order after resuming; seed=epoch "
                "needs nothing saved.")
    if naive:
        raise NotYet("what order does a fresh generator seeded with 0 draw in the resumed epoch?")
    raise NotYet("with seed=epoch, which order does each run draw in epoch 2?")


def _02_2(answer) -> str:
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, numbers.Integral):
        raise NotYet("the answer should be the kept epoch, counted from 1 (an int).")
    losses = _chapter2_losses()
    kept = int(np.argmin(losses)) + 1
    if answer == kept:
        return ("'best' for loss is the lowest epoch average, and while the loss falls that is "
                "the last epoch.")
    if answer == kept - 1:
        raise NotYet("count the epochs from 1, as Keras' {epoch} in file names does.")
    raise NotYet("save_best_only keeps the epoch with the lowest logged loss: which one is it?")


def _02_3(answer) -> str:
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, numbers.Integral):
        raise NotYet("the answer should be a number of steps (an int).")
    steps = math.ceil(math.log(0.01) / math.log(0.99))
    if answer == steps:
        return "after k steps the moving mean has come 1 - 0.99**k of the way."
    hint = "round k up" if answer == steps - 1 else "take logarithms of 0.99**k <= 0.01"
    raise NotYet(f"the smallest k with 1 - 0.99**k >= 0.99 ({hint}).")


def _02_4(answer) -> str:
    what = "a pair (the last good file still loads after torch.save to the path, the same " \
           "after save_training_state)"
    direct, atomic = (_flag(v, what) for v in _parts(answer, 2, what))
    if (direct, atomic) == (False, True):
        return ("writing to a temporary file and then os.replace never leaves a half-written "
                "file at the checkpoint's path.")
    if direct:
        raise NotYet("opening the path for writing truncates the last good file first.")
    raise NotYet("where does save_training_state write before the crash, and what is at the path?")


def _03_1(answer) -> str:
    what = "a pair (p, the smallest batch size whose predicted scatter is at most 0.01)"
    p, needed = _parts(answer, 2, what)
    p = _number(p, "a pair whose first item, p, is the frozen model's training accuracy")
    if not 0 < p < 1:
        raise NotYet("p should be an accuracy strictly between 0 and 1.")
    if isinstance(needed, (bool, np.bool_)) or not isinstance(needed, numbers.Integral):
        raise NotYet("the batch size (second item) should be an int.")
    expected = math.ceil(p * (1 - p) / 0.01**2)
    if needed == expected:
        return "sqrt(p(1-p)/B) <= 0.01 means B >= p(1-p) / 0.01**2, rounded up."
    raise NotYet("solve sqrt(p(1-p)/B) <= 0.01 for B (a scatter of one point is 0.01, not 1), "
                 "then round up.")


def _03_2(answer) -> str:
    if not callable(answer):
        raise NotYet("the answer should be a function of the number of classes C, e.g. "
                     "`lambda C: ...`, returning the floor.")
    classes = [2, 10, 100, 1000, *np.random.default_rng(0).integers(3, 100_000, size=5).tolist()]
    for c in classes:
        try:
            value = float(answer(c))
        except Exception as error:  # the student's function: any failure is a hint
            raise NotYet(f"your function failed for C = {c}: {type(error).__name__}.") from None
        if not _close(value, math.log(1 + (c - 1) / math.e), 1e-5):
            raise NotYet("a perfect model puts e times the probability on the true class: what "
                         "does the loss of the softmax of probabilities come to?")
    return "ln(1 + (C-1)/e) grows like ln C - 1, close to the loss at chance for many classes."


def _03_3(answer) -> str:
    what = "a pair ((loss, accuracy, ECE) at T = 1, (loss, accuracy, ECE) at your T)"
    before, after = _parts(answer, 2, what)
    (loss_1, acc_1, ece_1), (loss_t, acc_t, ece_t) = (
        [_number(v, what) for v in _parts(part, 3, what)] for part in (before, after))
    if acc_t != acc_1:
        raise NotYet("the accuracy changed: divide the logits (not the probabilities) by T > 0.")
    # Whether the loss and the ECE fall on the second half depends on the draw (the chapter's
    # model at seed 0: the ECE rises), so only what T guarantees is checked.
    if (loss_t, ece_t) == (loss_1, ece_1):
        raise NotYet("nothing changed: divide the logits by the T you picked on the first half.")
    if not (0 <= ece_t <= 1 and loss_t > 0):
        raise NotYet("an ECE lies in [0, 1] and a cross-entropy above 0: check what you report.")
    return "dividing all logits by one T > 0 keeps every argmax; only the confidence changes."


def _04_1(answer) -> str:
    from companion.gradients import gradient_difference

    what = "the accumulated model's weights, `accumulating.get_weights()`"
    try:
        shapes = [np.shape(a) for a in answer]
    except TypeError:
        raise NotYet(f"the answer should be {what}.") from None
    reference = list(_chapter4_large_batch_weights())
    if shapes != [w.shape for w in reference]:
        raise NotYet(f"the answer should be {what} (4 arrays).")
    difference = gradient_difference(reference, [np.asarray(a, np.float64) for a in answer])
    if difference < 1e-5:
        return "weighting each micro-batch's mean by its share makes the step's gradient the mean."
    raise NotYet("weight each micro-batch's mean loss by its share of the step's samples, sum the "
                 "gradients, and step once per four micro-batches.")


def _04_2(answer) -> str:
    ratio = _number(answer, "the ratio (largest stable rate on the mean) / (on the sum), a float")
    if 24 < ratio < 40:
        return ("the sum's gradients are the batch size times the mean's, so its stable rates "
                "are that much smaller.")
    if ratio < 1:
        raise NotYet("divide the mean's rate by the sum's: which one has the larger gradients?")
    raise NotYet("compare the size of the two gradients: how many losses does the sum add up?")


def _04_3(answer) -> str:
    what = ("a pair (short token's weight / long token's weight under the token-level mean, the "
            "same under the sequence-level mean), e.g. (1.0, 3.0)")
    token, sequence = (_number(v, what) for v in _parts(answer, 2, what))
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

    if not callable(answer):
        raise NotYet("the answer should be your step function, "
                     "`fixed_train_step(model, x_batch, y_batch, optimizer, loss_fn)`.")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 10, generator=generator)
    y = torch.randn(32, 1, generator=generator)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(torch.nn.Sequential(torch.nn.Linear(10, 4), torch.nn.Tanh(),
                                          torch.nn.Linear(4, 1)))
    mine, reference = models
    try:
        optimizer = torch.optim.SGD(mine.parameters(), lr=0.05)
        returned = answer(mine, x, y, optimizer, torch.nn.MSELoss())
        returned = float(torch.as_tensor(returned).detach())
    except Exception as error:  # the student's function: any failure is a hint
        raise NotYet(f"your step failed on a batch of 32: {type(error).__name__}.") from None
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    loss = torch.nn.MSELoss()(reference(x), y)
    loss.backward()
    optimizer.step()
    same_step = all(torch.allclose(p, q, rtol=1e-5, atol=1e-7)
                    for p, q in zip(mine.parameters(), reference.parameters()))
    if not same_step:
        raise NotYet("the weights moved differently from one SGD step on the batch mean: zero the "
                     "gradients, use the loss as loss_fn returns it, step once.")
    if not _close(returned, loss.item(), 1e-5):
        raise NotYet("the step is right, but return the batch-mean loss itself.")
    return "one step along the gradient of the batch mean, returning that mean."


def _05_1(answer) -> str:
    what = "a pair (the MSE after 3 epochs, your lower bound)"
    trained, bound = (_number(v, what) for v in _parts(answer, 2, what))
    y_raw = _diabetes()[2].astype(np.float64)
    expected = float(np.var(y_raw) + (np.mean(y_raw) - 1.0) ** 2)
    if not _close(bound, expected, 1e-6):
        if _close(bound, float(np.var(y_raw)), 1e-6):
            raise NotYet("Var(y) bounds any constant; a sigmoid output is at most 1: use c = 1.")
        raise NotYet("every output lies in (0, 1): what is the MSE of the constant 1?")
    if trained < bound:
        raise NotYet("your MSE is below the bound: train on the raw target, y_raw.")
    return "outputs in (0, 1) cannot come closer to targets of 25 and more than the constant 1."


def _05_2(answer) -> str:
    what = "a pair (the 1-D metric's result, its count)"
    result, count = (_number(v, what) for v in _parts(answer, 2, what))
    _, y, _ = _diabetes()
    fit, target = _least_squares(raw=False)[:, 0], y[:, 0].astype(np.float64)
    batches = range(0, len(target), 32)
    means = [np.mean((target[s:s + 32] - fit[s:s + 32]) ** 2) for s in batches]
    if count == len(target):
        raise NotYet("that count would be one per sample: feed the 1-D batches, not (N, 1) ones.")
    if count != len(means) or not _close(result, float(np.mean(means)), 1e-5):
        raise NotYet("feed y[:, 0] and least_squares[:, 0] in batches of 32 to one metric; report "
                     "float(metric.result()) and float(metric.count).")
    return "a 1-D batch is one sample of 32 outputs: the metric counts batches, not samples."


def _05_3(answer) -> str:
    scale = _number(answer, "the largest factor s, a float")
    _, _, y_raw = _diabetes()
    largest_error = float(np.max(np.abs(_least_squares(raw=True) - y_raw)))
    expected = math.sqrt(2.0**-25) / largest_error
    if _close(scale, expected, 1e-3):
        return "a float16 square rounds to 0 below half the smallest subnormal, 2**-25."
    if _close(scale, math.sqrt(2.0**-24) / largest_error, 1e-3):
        raise NotYet("a square rounds to 0 when below half the smallest float16 subnormal.")
    raise NotYet("start from the largest error: (s * error)**2 must round to 0 in float16.")


def _05_4(answer) -> str:
    if not callable(answer):
        raise NotYet("the answer should be your formula as a function of (predictions, targets).")
    rng = np.random.default_rng(1)
    for size in (5, 50):
        predictions, targets = rng.normal(0.0, 1.0, size), rng.normal(2.0, 3.0, size)
        all_pairs = float(np.mean((predictions[:, None] - targets[None, :]) ** 2))
        try:
            value = float(answer(predictions, targets))
        except Exception as error:  # the student's function: any failure is a hint
            failure = type(error).__name__
            raise NotYet(f"your function failed on vectors of {size}: {failure}.") from None
        if not _close(value, all_pairs, 1e-9):
            raise NotYet("on random vectors it differs from the mean over all pairs (i, j): check "
                         "each of the three terms (population variances, ddof=0).")
    return "the mean over all pairs is both variances plus the squared gap between the means."


EXERCISES: dict[str, Exercise] = {
    "01.1": Exercise("the epoch-3 loss recomputed from log.batches, a float", _01_1),
    "01.2": Exercise("batch sizes in 1..60 where the mean of batch means is exact, a list",
                     _01_2),
    "01.3": Exercise("the weight-decay run's history, decayed_log.history", _01_3),
    "02.1": Exercise("(naive resume bit-identical, seed=epoch resume bit-identical), two bools",
                     _02_1),
    "02.2": Exercise("the epoch ModelCheckpoint keeps, counted from 1, an int", _02_2),
    "02.3": Exercise("the number of steps k, an int", _02_3),
    "02.4": Exercise("(loads after the torch.save crash, after the save_training_state crash)",
                     _02_4),
    "03.1": Exercise("(p, smallest batch size with a predicted scatter of at most 0.01)", _03_1),
    "03.2": Exercise("a function of C returning the floor, e.g. lambda C: ...", _03_2),
    "03.3": Exercise("((loss, acc, ECE) at T = 1, (loss, acc, ECE) at your T), second half",
                     _03_3),
    "04.1": Exercise("the accumulated model's weights, accumulating.get_weights()", _04_1),
    "04.2": Exercise("largest stable rate on the mean / on the sum, a float", _04_2),
    "04.3": Exercise("(short/long token weight, token-level mean; same, sequence-level mean)",
                     _04_3),
    "04.4": Exercise("your fixed_train_step function", _04_4),
    "05.1": Exercise("(MSE after 3 epochs, your lower bound), two floats", _05_1),
    "05.2": Exercise("(the 1-D metric's result, its count), two floats", _05_2),
    "05.3": Exercise("the largest factor s, a float", _05_3),
    "05.4": Exercise("your formula as a function of (predictions, targets)", _05_4),
}


def check(exercise: str, answer) -> bool:
    """Print whether ``answer`` solves ``exercise`` (an id of :data:`EXERCISES`), and return it.

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
    try:
        verdict = f"Right: {EXERCISES[exercise].judge(answer)}"
        right = True
    except NotYet as hint:
        verdict, right = f"Not yet: {hint}", False
    # A notebook shows no line wider than 88 columns.
    print(textwrap.fill(verdict, width=WIDTH, subsequent_indent="  "))
    return right
