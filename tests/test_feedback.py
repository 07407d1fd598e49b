"""companion.feedback: every exercise accepts its worked solution's answer, rejects a typical
wrong one, and never prints the expected value."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from companion import feedback
from companion.feedback import EXERCISES, check

ROOT_BOOK = __import__("pathlib").Path(__file__).resolve().parents[1] / "book"


def verdict(capsys, exercise, answer) -> tuple[bool, str]:
    right = check(exercise, answer)
    return right, capsys.readouterr().out


def spellings(value) -> set[str]:
    """The ways a number can appear in a printed line (as typed, rounded, in e notation)."""
    if isinstance(value, (bool, np.bool_)):
        return set()  # a lone True or False is a word of the hint's language, not a leak
    if isinstance(value, (int, np.integer)):
        return {str(int(value))}
    value = float(value)
    forms = {repr(value), f"{value:.3g}", f"{value:.4f}", f"{value:.2e}", f"{value:.3e}"}
    return {f for f in forms if len(f.strip("0.-e+")) >= 2}  # "0.0000" matches anything


def assert_accepted_and_secret(capsys, exercise, answer, *expected):
    right, out = verdict(capsys, exercise, answer)
    assert right and out.startswith("Right: "), out
    _assert_no_leak(out, expected)


def assert_rejected_and_secret(capsys, exercise, answer, *expected):
    right, out = verdict(capsys, exercise, answer)
    assert not right and out.startswith("Not yet: "), out
    _assert_no_leak(out, expected)


def _assert_no_leak(out: str, expected) -> None:
    numbers_in_out = set(re.findall(r"[-+]?\d[\d.]*(?:e[-+]?\d+)?", out))
    for value in expected:
        leaked = [s for s in spellings(value) if s in numbers_in_out or (len(s) > 3 and s in out)]
        assert not leaked, f"the verdict prints the expected value {value!r}: {out!r}"
    assert all(len(line) <= 88 for line in out.splitlines()), "a printed line wider than 88"


# --- the registry and the contract with the student editions --------------------------------


def book_exercise_ids() -> set[str]:
    """Every "Exercise k" admonition of the chapters, as NN.k."""
    ids = set()
    for source in sorted(ROOT_BOOK.glob("[0-9][0-9]_*.md")):
        for number in re.findall(r"^```\{admonition\} Exercise (\d+)", source.read_text(), re.M):
            ids.add(f"{source.name[:2]}.{number}")
    return ids


def test_every_exercise_of_the_book_has_a_check_and_no_other():
    assert book_exercise_ids() == set(EXERCISES)


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_asks_fits_on_the_answer_line(exercise):
    # The student edition writes `answer = ...  # <asks>`: one line of at most 88 columns.
    asks = EXERCISES[exercise].asks
    assert asks and "\n" not in asks and len(f"answer = ...  # {asks}") <= 88


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_the_placeholder_answer_is_not_yet_and_does_not_raise(capsys, exercise):
    right, out = verdict(capsys, exercise, ...)
    assert not right and out.startswith("Not yet: ")


@pytest.mark.parametrize("bad", ["99.9", "1.1", 1.1, None])
def test_an_unknown_exercise_is_refused_by_name(bad):
    with pytest.raises((ValueError, TypeError), match=r"exercise must be .*01\.1, 01\.2"):
        check(bad, 1)


# --- chapter 1 ------------------------------------------------------------------------------


def test_01_1_weighted_mean_is_right_plain_mean_is_not(capsys):
    log = feedback._chapter1_log()  # the chapter's run (tf_loop.train, its settings)
    records = [r for r in log.batches if r.epoch == 2]
    weighted = sum(r.batch["loss"] * r.size for r in records) / sum(r.size for r in records)
    plain_mean = np.mean([r.batch["loss"] for r in records])
    assert_accepted_and_secret(capsys, "01.1", weighted, log.history["loss"][2])
    assert_rejected_and_secret(capsys, "01.1", plain_mean, log.history["loss"][2])


def test_01_2_divisors_are_right_all_sizes_are_not(capsys):
    divisors = [d for d in range(1, 61) if 442 % d == 0]
    assert_accepted_and_secret(capsys, "01.2", divisors, *divisors[1:])
    assert_rejected_and_secret(capsys, "01.2", list(range(1, 61)), *divisors[1:])
    assert_rejected_and_secret(capsys, "01.2", [1, 2, 13], *divisors[1:])


def _torch_run(weight_decay: bool):
    import keras
    import torch

    from companion import metrics, models, torch_loop
    from companion.data import load_diabetes

    x, y = load_diabetes()
    model = models.torch_mlp(10, hidden=(16,))
    models.copy_keras_weights_to_torch(models.keras_mlp(10, hidden=(16,), l2=0.01, seed=0), model)
    hidden_weight = model[0].weight
    others = [p for p in model.parameters() if p is not hidden_weight]
    decay = 2 * 0.01 if weight_decay else 0.0
    sgd = torch.optim.SGD([{"params": [hidden_weight], "weight_decay": decay},
                           {"params": others, "weight_decay": 0.0}], lr=0.05)
    penalty = None if weight_decay else models.torch_l2_penalty(0.01)
    del keras
    return torch_loop.train(model, x, y, loss_fn=torch.nn.MSELoss(), optimizer=sgd,
                            metrics=[metrics.MeanSquaredError(name="mse")], penalty=penalty,
                            batch_size=32, epochs=5).history


def test_01_3_weight_decay_history_is_right_penalty_history_is_not(capsys):
    reference = feedback._chapter1_log().history["mse"]
    assert_accepted_and_secret(capsys, "01.3", _torch_run(weight_decay=True), *reference)
    # The chapter's twin with `penalty=`: same weights, but its loss still carries the penalty.
    assert_rejected_and_secret(capsys, "01.3", _torch_run(weight_decay=False), *reference)


# --- chapter 2 ------------------------------------------------------------------------------


def test_02_1_only_the_per_epoch_seed_resumes_exactly(capsys):
    assert_accepted_and_secret(capsys, "02.1", (False, True))
    assert_rejected_and_secret(capsys, "02.1", (True, True))
    assert_rejected_and_secret(capsys, "02.1", ("no", "yes"))


def test_02_2_kept_epoch_is_the_lowest_loss_counted_from_one(capsys):
    losses = feedback._chapter2_losses()
    kept = int(np.argmin(losses))  # the solution's line: an index from 0
    assert_accepted_and_secret(capsys, "02.2", kept + 1, *losses)
    assert_rejected_and_secret(capsys, "02.2", kept, *losses)


def test_02_3_rounding_up_is_right_rounding_down_is_not(capsys):
    k = int(np.ceil(np.log(0.01) / np.log(0.99)))
    assert_accepted_and_secret(capsys, "02.3", k, k)
    assert_rejected_and_secret(capsys, "02.3", k - 1, k)
    assert_rejected_and_secret(capsys, "02.3", float(k), k)


def test_02_4_only_the_atomic_save_survives(capsys):
    assert_accepted_and_secret(capsys, "02.4", (False, True))
    assert_rejected_and_secret(capsys, "02.4", (True, True))


# --- chapter 3 ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.9125, 0.5, 0.99])
def test_03_1_batch_size_for_a_one_point_scatter(capsys, p):
    needed = math.ceil(p * (1 - p) / 0.01**2)
    assert_accepted_and_secret(capsys, "03.1", (p, needed), needed)
    assert_rejected_and_secret(capsys, "03.1", (p, needed - 1), needed)
    # Reading "one percentage point" as 1 instead of 0.01.
    assert_rejected_and_secret(capsys, "03.1", (p, math.ceil(p * (1 - p))), needed)


def test_03_2_the_floor_formula_and_its_pytorch_measurement_are_right(capsys):
    import torch
    import torch.nn.functional as F

    def measured(classes):  # the solution's check in PyTorch: a perfect, confident model
        targets = torch.arange(64) % classes
        perfect_logits = 100.0 * F.one_hot(targets, classes).float()
        return F.cross_entropy(torch.softmax(perfect_logits, dim=1), targets).item()

    floors = [math.log(1 + (c - 1) / math.e) for c in (2, 10, 100, 1000)]
    assert_accepted_and_secret(capsys, "03.2", lambda c: math.log(1 + (c - 1) / math.e), *floors)
    assert_accepted_and_secret(capsys, "03.2", measured, *floors)
    assert_rejected_and_secret(capsys, "03.2", math.log, *floors)  # the loss at chance
    assert_rejected_and_secret(capsys, "03.2", floors[1], *floors)  # a number, not a function


def test_03_3_temperature_scaling_keeps_the_accuracy(capsys):
    import torch

    from companion import calibration

    # An over-confident model, as in claim 5: logits that are right 80 % of the time, too large.
    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 10, 400)
    final_logits = rng.normal(0, 1, (400, 10))
    right = rng.random(400) < 0.8
    final_logits[np.arange(400), np.where(right, y_val, (y_val + 1) % 10)] += 3.0
    final_logits *= 4.0
    half = len(y_val) // 2
    fit_part, test_part = slice(0, half), slice(half, None)
    grid = np.linspace(0.5, 5.0, 91)
    temperature = grid[np.argmin([calibration.cross_entropy(y_val[fit_part],
                                                            final_logits[fit_part] / t).mean()
                                  for t in grid])]

    def report(t, on_probabilities=False):
        z = final_logits[test_part] / (1.0 if on_probabilities else t)
        probabilities = torch.softmax(torch.from_numpy(z), dim=1).numpy()
        if on_probabilities:  # the mistake: rescaling probabilities, which moves some argmaxes
            probabilities = probabilities ** (1 / t) + rng.random(probabilities.shape) * 0.3
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            z = np.log(probabilities)
        return (calibration.cross_entropy(y_val[test_part], z).mean(),
                np.mean(z.argmax(axis=1) == y_val[test_part]),
                calibration.expected_calibration_error(y_val[test_part], probabilities))

    assert temperature > 1
    assert_accepted_and_secret(capsys, "03.3", (report(1.0), report(temperature)))
    assert_rejected_and_secret(capsys, "03.3", (report(1.0), report(temperature, True)))
    assert_rejected_and_secret(capsys, "03.3", (report(1.0), report(1.0)))  # T not applied


# --- chapter 4 ------------------------------------------------------------------------------


def test_04_1_weighted_accumulation_is_right_no_training_is_not(capsys):
    import keras
    import tensorflow as tf

    from companion import models
    from companion.data import load_diabetes

    x, y = load_diabetes()
    n, batch = len(x), 32
    accumulating = models.keras_mlp(10, hidden=(16,), seed=0)
    start = accumulating.get_weights()
    step_optimizer = keras.optimizers.SGD(0.05)

    def weighted_gradients(x_micro, y_micro, share):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.mean_squared_error(
                y_micro, accumulating(x_micro, training=True))) * share
        return tape.gradient(loss, accumulating.trainable_variables)

    for first in range(0, n, 4 * batch):  # the solution's loop
        end = min(first + 4 * batch, n)
        summed = None
        for begin in range(first, end, batch):
            stop = min(begin + batch, end)
            share = tf.constant((stop - begin) / (end - first), tf.float32)
            grads = weighted_gradients(tf.constant(x[begin:stop]), tf.constant(y[begin:stop]), share)
            summed = grads if summed is None else [a + b for a, b in zip(summed, grads)]
        step_optimizer.apply_gradients(zip(summed, accumulating.trainable_variables))
    assert_accepted_and_secret(capsys, "04.1", accumulating.get_weights())
    assert_rejected_and_secret(capsys, "04.1", start)
    assert_rejected_and_secret(capsys, "04.1", start[:2])


def test_04_2_ratio_near_the_batch_size(capsys):
    assert_accepted_and_secret(capsys, "04.2", 0.554 / 0.0178)  # the book's printed rates
    assert_rejected_and_secret(capsys, "04.2", 0.0178 / 0.554)
    assert_rejected_and_secret(capsys, "04.2", 1.0)


def test_04_3_token_weights_by_autograd(capsys):
    import torch

    lengths = [50, 10, 2]
    token_losses = torch.ones(sum(lengths), requires_grad=True)
    pieces = torch.split(token_losses, lengths)
    token_weights = torch.autograd.grad(token_losses.sum() / sum(lengths), token_losses)[0]
    sequence_weights = torch.autograd.grad(sum(p.mean() for p in pieces) / len(pieces),
                                           token_losses)[0]
    answer = (float(token_weights[-1] / token_weights[0]),
              float(sequence_weights[-1] / sequence_weights[0]))
    assert_accepted_and_secret(capsys, "04.3", answer, 25.0)
    assert_rejected_and_secret(capsys, "04.3", (1.0, 1 / 25), 25.0)
    assert_rejected_and_secret(capsys, "04.3", (1.0, 1.0), 25.0)


def test_04_4_the_fixed_step_is_right_the_articles_is_not(capsys):
    import torch

    def fixed_train_step(model, x_batch, y_batch, optimizer, loss_fn):
        optimizer.zero_grad()
        loss = loss_fn(model(x_batch), y_batch)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def summed_step(model, x_batch, y_batch, optimizer, loss_fn):  # steps on the batch's sum
        optimizer.zero_grad()
        loss = loss_fn(model(x_batch), y_batch) * len(x_batch)
        loss.backward()
        optimizer.step()
        return loss.detach() / len(x_batch)

    def scaled_return(model, x_batch, y_batch, optimizer, loss_fn):  # returns the sum
        return fixed_train_step(model, x_batch, y_batch, optimizer, loss_fn) * len(x_batch)

    assert_accepted_and_secret(capsys, "04.4", fixed_train_step)
    assert_rejected_and_secret(capsys, "04.4", summed_step)
    assert_rejected_and_secret(capsys, "04.4", scaled_return)
    assert_rejected_and_secret(capsys, "04.4", lambda *args: torch.tensor(1.0))


# --- chapter 5 ------------------------------------------------------------------------------


def test_05_1_the_bound_of_the_constant_one(capsys):
    import keras

    from companion.data import load_diabetes

    x, _ = load_diabetes()
    _, y_raw = load_diabetes(standardize=False)
    keras.utils.set_random_seed(0)
    squashed = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(1, activation="sigmoid")])
    squashed.compile(optimizer="adam", loss="mse", metrics=["mse"])
    trained = squashed.fit(x, y_raw, batch_size=32, epochs=3, shuffle=False,
                           verbose=0).history["mse"][-1]
    variance_raw = float(np.var(y_raw, dtype=np.float64))
    mean_raw = float(np.mean(y_raw, dtype=np.float64))
    bound = variance_raw + (mean_raw - 1.0) ** 2
    assert_accepted_and_secret(capsys, "05.1", (trained, bound), bound)
    assert_rejected_and_secret(capsys, "05.1", (trained, variance_raw), bound)


def _least_squares(target):
    from companion.data import load_diabetes

    x, _ = load_diabetes()
    design = np.c_[x, np.ones(len(x))].astype(np.float64)
    return design @ np.linalg.lstsq(design, target.astype(np.float64), rcond=None)[0]


def test_05_2_one_dimensional_batches_count_as_one_sample(capsys):
    import keras

    from companion.data import load_diabetes

    _, y = load_diabetes()
    least_squares = _least_squares(y)
    flat_metric = keras.metrics.MeanSquaredError()
    for start in range(0, len(y), 32):
        flat_metric.update_state(y[start:start + 32, 0], least_squares[start:start + 32, 0])
    answer = (float(flat_metric.result()), float(flat_metric.count.numpy()))
    per_sample = float(np.mean((y - least_squares) ** 2))
    assert_accepted_and_secret(capsys, "05.2", answer, answer[0])
    assert_rejected_and_secret(capsys, "05.2", (per_sample, 442.0), answer[0])


def test_05_3_half_the_smallest_subnormal(capsys):
    from companion.data import load_diabetes

    _, y_raw = load_diabetes(standardize=False)
    raw_fit = _least_squares(y_raw)
    largest_error = float(np.max(np.abs(raw_fit - y_raw)))
    s_max = float(np.sqrt(2.0**-25) / largest_error)
    assert_accepted_and_secret(capsys, "05.3", s_max, s_max)
    assert_rejected_and_secret(capsys, "05.3", float(np.sqrt(2.0**-24) / largest_error), s_max)
    assert_rejected_and_secret(capsys, "05.3", 1.5 * s_max, s_max)


def test_05_4_the_broadcast_formula(capsys):
    def formula(predictions, targets):
        return (np.var(predictions) + np.var(targets)
                + (predictions.mean() - targets.mean()) ** 2)

    assert_accepted_and_secret(capsys, "05.4", formula)
    assert_rejected_and_secret(capsys, "05.4", lambda p, t: np.var(p) + np.var(t))
    assert_rejected_and_secret(capsys, "05.4", lambda p, t: np.var(p, ddof=1) + np.var(t, ddof=1)
                               + (p.mean() - t.mean()) ** 2)
    assert_rejected_and_secret(capsys, "05.4", lambda p: 0.0)
