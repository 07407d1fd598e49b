"""companion.feedback: each judge recomputes the answer from the chapter's objects, accepts every
correct route, rejects the wrong answers students give (with a hint, never the expected value),
and, whatever it is given, never raises and never hangs.

The chapters' worked solutions call the judges too (nbval checks that each prints "Right"); here
the judges meet the chapter's objects rebuilt with the companion, and cheap stand-ins of them
for the fuzz tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import fractions
import io
import itertools
import math
import random
import re
import signal
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from companion import feedback
from companion.feedback import EXERCISES, check
from companion.training_log import TrainingLog

ROOT_BOOK = Path(__file__).resolve().parents[1] / "book"


def verdict(capsys, exercise, answer, **objects) -> tuple[bool, str]:
    right = check(exercise, answer, **objects)
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


def accepted(capsys, exercise, answer, objects, *expected):
    right, out = verdict(capsys, exercise, answer, **objects)
    assert right and out.startswith("Right: "), out
    _assert_no_leak(out, expected)


def rejected(capsys, exercise, answer, objects, *expected, hint: str = "") -> str:
    right, out = verdict(capsys, exercise, answer, **objects)
    assert not right and out.startswith("Not yet: "), out
    assert hint in " ".join(out.split()), f"expected the hint {hint!r}, got {out!r}"
    _assert_no_leak(out, expected)
    return out


def _assert_no_leak(out: str, expected) -> None:
    numbers_in_out = set(re.findall(r"[-+]?\d[\d.]*(?:e[-+]?\d+)?", out))
    for value in expected:
        leaked = [s for s in spellings(value) if s in numbers_in_out or (len(s) > 3 and s in out)]
        assert not leaked, f"the verdict prints the expected value {value!r}: {out!r}"
    assert all(len(line) <= 88 for line in out.splitlines()), "a printed line wider than 88"


# --- the registry and the contract with the book and the student editions ------------------------


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


def solution_checks() -> dict[str, list]:
    """Exercise id -> the last statement of each of its worked-solution cells (in the .ipynb)."""
    import ast

    import nbformat

    found = {}
    for path in sorted(ROOT_BOOK.glob("[0-9][0-9]_*.ipynb")):
        exercise = None
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                numbers = re.findall(r"\{admonition\} Exercise (\d+)", cell.source)
                exercise = f"{path.name[:2]}.{numbers[-1]}" if numbers else exercise
            elif "solution" in cell.metadata.get("tags", []):
                found.setdefault(exercise, []).append(ast.parse(cell.source).body[-1])
    return found


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_each_worked_solution_ends_by_requiring_right_from_its_judge(exercise):
    # So a chapter change that moves an answer fails nbval: the worked solution's answer,
    # with the chapter's own objects, must be "Right", or the cell's assert fails.
    import ast

    last = solution_checks()[exercise][-1]
    assert isinstance(last, ast.Assert) and isinstance(last.test, ast.Call), ast.unparse(last)
    call = last.test
    assert isinstance(call.func, ast.Name) and call.func.id == "check", ast.unparse(last)
    assert ast.literal_eval(call.args[0]) == exercise and len(call.args) == 2
    passed = {k.arg: k.value for k in call.keywords}
    assert set(passed) == set(EXERCISES[exercise].uses), ast.unparse(last)
    assert all(isinstance(v, ast.Name) and v.id == k for k, v in passed.items()), \
        "the chapter's objects are passed under their own names, as the student edition does"


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_the_placeholder_answer_is_not_yet_and_says_what_is_expected(capsys, exercise):
    right, out = verdict(capsys, exercise, ..., **STAND_INS[exercise])
    assert not right and out.startswith("Not yet: ")
    assert "should be" in out or "a number cannot" in out, out


@pytest.mark.parametrize("bad", ["99.9", "1.1", 1.1, None])
def test_an_unknown_exercise_is_refused_by_name(bad):
    with pytest.raises((ValueError, TypeError), match=r"exercise must be .*01\.1, 01\.2"):
        check(bad, 1)


def test_a_check_without_the_chapters_objects_says_how_to_call_it(capsys):
    right, out = verdict(capsys, "01.1", lambda records: 1.0)
    assert not right and 'check("01.1", answer, log=log)' in " ".join(out.split())
    right, out = verdict(capsys, "02.3", 459, log=None)
    assert not right and 'check("02.3", answer)' in out


def test_a_judge_leaves_the_global_random_generators_as_they_were(capsys):
    import torch

    states = random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state()
    check("04.4", lambda model, x, y, optimizer, loss_fn: 0.0)  # builds seeded networks
    check("04.1", [np.zeros((10, 16))], **STAND_INS["04.1"])
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.random.get_rng_state(), states[2])
    capsys.readouterr()


# --- the chapters' objects, rebuilt with the companion -------------------------------------------


@pytest.fixture(scope="module")
def diabetes():
    from companion.data import load_diabetes

    x, y = load_diabetes()
    return x, y, load_diabetes(standardize=False)[1]


@pytest.fixture(scope="module")
def chapter1(diabetes):
    import keras

    from companion import models, tf_loop

    x, y, _ = diabetes

    def make_model(l2=0.01, seed=0):
        return models.keras_mlp(10, hidden=(16,), l2=l2, seed=seed)

    log = tf_loop.train(make_model(), x, y, loss=keras.losses.MeanSquaredError(),
                        optimizer=keras.optimizers.SGD(0.05),
                        metrics=[keras.metrics.MeanSquaredError(name="mse")], batch_size=32,
                        epochs=5)
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mse"])
    history = model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0).history
    return {"x": x, "y": y, "log": log, "model": model, "history": history,
            "make_model": make_model}


def test_01_1_a_function_of_the_records_is_right_by_any_route(capsys, chapter1):
    log = chapter1["log"]
    expected = log.history["loss"]

    def weighted(records):
        return sum(r.batch["loss"] * r.size for r in records) / sum(r.size for r in records)

    routes = [weighted,
              lambda rs: np.average([r.batch["loss"] for r in rs], weights=[r.size for r in rs]),
              lambda rs: rs[-1].running["loss"],  # the epoch's running mean after its last step
              lambda rs: np.float32(weighted(rs))]
    for route in routes:
        accepted(capsys, "01.1", route, {"log": log}, *expected)


def test_01_1_rejects_the_stored_number_the_plain_mean_and_a_lookup(capsys, chapter1):
    log = chapter1["log"]
    expected = log.history["loss"]
    objects = {"log": log}
    # The issue: history["loss"][2] passed without the recomputation the exercise asks for.
    rejected(capsys, "01.1", log.history["loss"][2], objects, *expected,
             hint="a number cannot show how it was computed")
    rejected(capsys, "01.1", lambda rs: np.mean([r.batch["loss"] for r in rs]), objects,
             *expected, hint="plain mean of the batch losses")
    rejected(capsys, "01.1", lambda rs: log.history["loss"][rs[0].epoch], objects, *expected,
             hint="on records of another run")
    rejected(capsys, "01.1", lambda rs: log.history["loss"][2], objects, *expected,
             hint="for epoch 1 your function does not give")


def test_01_2_the_divisors_of_n_are_right_as_any_collection_of_ints(capsys, chapter1):
    objects = {k: chapter1[k] for k in ("model", "x", "y")}
    n = len(chapter1["x"])
    divisors = [d for d in range(1, 61) if n % d == 0]
    for answer in (divisors, tuple(divisors), set(divisors), np.array(divisors),
                   (d for d in divisors), [np.int64(d) for d in divisors]):
        accepted(capsys, "01.2", answer, objects, *divisors[1:])


def test_01_2_rejects_floats_all_sizes_and_missing_sizes(capsys, chapter1):
    objects = {k: chapter1[k] for k in ("model", "x", "y")}
    n = len(chapter1["x"])
    divisors = [d for d in range(1, 61) if n % d == 0]
    # The issue: floats were taken for missing sizes.
    rejected(capsys, "01.2", [float(d) for d in divisors], objects, *divisors[1:],
             hint="each batch size should be an int; got a float")
    rejected(capsys, "01.2", list(range(1, 61)), objects, *divisors[1:],
             hint="leave a short last batch")
    rejected(capsys, "01.2", divisors[:3], objects, *divisors[1:], hint="missing")
    rejected(capsys, "01.2", itertools.count(1), objects, *divisors[1:],
             hint="more than 64 items")


def _torch_run(x, y, make_model, *, decay=0.02, penalty=False, every_parameter=False):
    import torch

    from companion import metrics, models, torch_loop

    model = models.torch_mlp(10, hidden=(16,))
    models.copy_keras_weights_to_torch(make_model(), model)
    hidden_weight = model[0].weight
    others = [p for p in model.parameters() if p is not hidden_weight]
    groups = ([{"params": list(model.parameters()), "weight_decay": decay}] if every_parameter
              else [{"params": [hidden_weight], "weight_decay": decay},
                    {"params": others, "weight_decay": 0.0}])
    return torch_loop.train(model, x, y, loss_fn=torch.nn.MSELoss(),
                            optimizer=torch.optim.SGD(groups, lr=0.05),
                            metrics=[metrics.MeanSquaredError(name="mse")],
                            penalty=models.torch_l2_penalty(0.01) if penalty else None,
                            batch_size=32, epochs=5)


def test_01_3_the_weight_decay_log_is_right_and_look_alikes_are_not(capsys, chapter1):
    x, y, make_model, log = (chapter1[k] for k in ("x", "y", "make_model", "log"))
    objects = {"log": log}
    accepted(capsys, "01.3", _torch_run(x, y, make_model), objects)
    # The issue: the Keras history's MSE given as both lists passed.
    mse = chapter1["history"]["mse"]
    rejected(capsys, "01.3", {"loss": mse, "mse": mse}, objects, hint="not its history")
    rejected(capsys, "01.3", _torch_run(x, y, make_model, decay=0.0, penalty=True), objects,
             hint="leave out `penalty=`")
    rejected(capsys, "01.3", _torch_run(x, y, make_model, decay=0.01), objects,
             hint="twice the L2 factor")
    rejected(capsys, "01.3", _torch_run(x, y, make_model, every_parameter=True), objects,
             hint="decay only the hidden kernel")


def test_02_1_and_02_4_pairs_of_bools_in_any_form(capsys):
    import torch

    for answer in ((False, True), [np.bool_(False), np.bool_(True)], np.array([False, True]),
                   (torch.tensor(False), np.array(True))):
        accepted(capsys, "02.1", answer, {})
        accepted(capsys, "02.4", answer, {})
    rejected(capsys, "02.1", (True, True), {}, hint="fresh generator")
    rejected(capsys, "02.1", ("no", "yes"), {}, hint="each item should be True or False")
    rejected(capsys, "02.4", (True, True), {}, hint="truncates")
    rejected(capsys, "02.4", (0, 1), {}, hint="True or False; got an int")


@pytest.fixture(scope="module")
def chapter2(diabetes):
    import keras

    from companion import models

    x, y, _ = diabetes

    def make_model(dropout=0.0, seed=0):
        return models.keras_mlp(10, hidden=(16,), dropout=dropout, seed=seed)

    def compiled(model, lr=0.01):
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        return model

    return {"make_model": make_model, "compiled": compiled, "x": x, "y": y,
            "FIT": dict(batch_size=32, shuffle=False, verbose=0)}


def test_02_2_the_kept_epoch_is_counted_from_one(capsys, chapter2):
    model = chapter2["compiled"](chapter2["make_model"]())
    losses = model.fit(chapter2["x"], chapter2["y"], epochs=5, **chapter2["FIT"]).history["loss"]
    kept = int(np.argmin(losses)) + 1
    accepted(capsys, "02.2", kept, chapter2, *losses)
    accepted(capsys, "02.2", np.int64(kept), chapter2)
    rejected(capsys, "02.2", kept - 1, chapter2, *losses, hint="count the epochs from 1")
    rejected(capsys, "02.2", float(kept), chapter2, hint="an int; got a float")


def test_02_3_rounding_up_is_right_rounding_down_is_not(capsys):
    k = int(np.ceil(np.log(0.01) / np.log(0.99)))
    accepted(capsys, "02.3", k, {}, k)
    accepted(capsys, "02.3", np.array(k), {}, k)
    rejected(capsys, "02.3", k - 1, {}, k, hint="round k up")
    rejected(capsys, "02.3", float(k), {}, k, hint="an int; got a float")
    rejected(capsys, "02.3", 10**400, {}, k, hint="take logarithms")


def test_03_1_p_must_be_the_models_and_b_either_prediction(capsys):
    right = np.zeros(1437, dtype=bool)
    right[:1311] = True  # p = 1311/1437, the order of the chapter's frozen model
    objects = {"train_right": np.random.default_rng(0).permutation(right)}
    p = float(right.mean())
    binomial = math.ceil(p * (1 - p) / 0.01**2)
    n = len(right)
    hypergeometric = next(b for b in range(1, n + 1)
                          if p * (1 - p) / b * (n - b) / (n - 1) <= 0.01**2)
    assert binomial != hypergeometric
    accepted(capsys, "03.1", (p, binomial), objects, binomial)
    accepted(capsys, "03.1", (np.float32(p), hypergeometric), objects, binomial)
    # The issue: (0.5, 2500) passed though p is not the model's accuracy.
    rejected(capsys, "03.1", (0.5, 2500), objects, binomial, hint="training accuracy")
    rejected(capsys, "03.1", (100 * p, binomial), objects, binomial, hint="not per cent")
    rejected(capsys, "03.1", (p, binomial - 1), objects, binomial, hint="round up")
    rejected(capsys, "03.1", (p, math.ceil(p * (1 - p))), objects, binomial, hint="0.01, not 1")


def test_03_2_the_floor_formula_and_its_pytorch_measurement_are_right(capsys):
    import torch
    import torch.nn.functional as F

    def measured(classes):  # the solution's check in PyTorch: a perfect, confident model
        targets = torch.arange(64) % classes
        perfect_logits = 100.0 * F.one_hot(targets, classes).float()
        return F.cross_entropy(torch.softmax(perfect_logits, dim=1), targets)

    floors = [math.log(1 + (c - 1) / math.e) for c in (2, 10, 100, 1000)]
    accepted(capsys, "03.2", lambda c: math.log(1 + (c - 1) / math.e), {}, *floors)
    accepted(capsys, "03.2", measured, {}, *floors)  # returns a 0-d tensor
    rejected(capsys, "03.2", math.log, {}, *floors, hint="e times the probability")
    rejected(capsys, "03.2", floors[1], {}, *floors, hint="a function of the number of classes")


@pytest.fixture(scope="module")
def chapter3():
    """Two over-trained twins' validation logits: right 80 % of the time, far too confident,
    the second half more so, so that the halves pick different temperatures."""
    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 10, 400)
    twins = []
    for second_half_scale in (6.0, 5.0):
        logits = rng.normal(0, 1, (400, 10))
        right = rng.random(400) < 0.8
        logits[np.arange(400), np.where(right, y_val, (y_val + 1) % 10)] += 3.0
        logits[:200] *= 3.0
        logits[200:] *= second_half_scale
        twins.append(logits)
    final = np.stack(twins)
    return {"val_logits": np.stack([final / 4, final]), "y_val": y_val}


def _temperature_report(objects, *, pick, report, steps=91, percent=False):
    """((losses, accuracies, ECEs) at T = 1, the same at each twin's T), one value per twin,
    T from the `pick` half's grid."""
    from companion import calibration

    labels = objects["y_val"]
    halves = {"first": slice(0, 200), "second": slice(200, None)}
    grid = np.linspace(0.5, 5.0, steps)
    before, after, temperatures = [], [], []
    for final in objects["val_logits"][-1]:
        chosen = grid[np.argmin([calibration.cross_entropy(labels[halves[pick]],
                                                           final[halves[pick]] / g).mean()
                                 for g in grid])]

        def at(t, final=final):
            z = final[halves[report]] / t
            probs = np.exp(z - z.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            accuracy = float(np.mean(z.argmax(axis=1) == labels[halves[report]]))
            return (float(calibration.cross_entropy(labels[halves[report]], z).mean()),
                    100 * accuracy if percent else accuracy,
                    float(calibration.expected_calibration_error(labels[halves[report]],
                                                                 probs)))

        before.append(at(1.0))
        after.append(at(chosen))
        temperatures.append(float(chosen))
    as_columns = (tuple(list(column) for column in zip(*before)),
                  tuple(list(column) for column in zip(*after)))
    return as_columns, temperatures


def test_03_3_temperature_chosen_on_the_first_half_reported_on_the_second(capsys, chapter3):
    import torch

    answer, t_first = _temperature_report(chapter3, pick="first", report="second")
    _, t_second = _temperature_report(chapter3, pick="second", report="second")
    assert t_first != t_second, "the halves must pick different temperatures for this test"
    accepted(capsys, "03.3", answer, chapter3)
    # Another grid from 0.5 to 5 is a correct route too, and so are float32 or tensor numbers.
    coarse, t_coarse = _temperature_report(chapter3, pick="first", report="second", steps=10)
    assert t_coarse != t_first
    accepted(capsys, "03.3", coarse, chapter3)
    as_tensors = tuple(tuple(torch.tensor(v, dtype=torch.float32) for v in part) for part in answer)
    accepted(capsys, "03.3", as_tensors, chapter3)


def test_03_3_rejects_made_up_numbers_the_wrong_half_and_per_cent(capsys, chapter3):
    answer, _ = _temperature_report(chapter3, pick="first", report="second")
    # The issue: made-up numbers, T chosen on the test half, results on the wrong half and
    # accuracy in percent all passed.
    made_up = (([0.9, 0.9], [0.8, 0.8], [0.1, 0.1]), ([0.5, 0.5], [0.8, 0.8], [0.05, 0.05]))
    rejected(capsys, "03.3", made_up, chapter3,
             hint="at T = 1 these are not the numbers")
    on_test_half, _ = _temperature_report(chapter3, pick="second", report="second")
    rejected(capsys, "03.3", on_test_half, chapter3, hint="pick T on the first half")
    wrong_half, _ = _temperature_report(chapter3, pick="first", report="first")
    rejected(capsys, "03.3", wrong_half, chapter3, hint="report on the second half")
    percent, _ = _temperature_report(chapter3, pick="first", report="second", percent=True)
    rejected(capsys, "03.3", percent, chapter3, hint="not per cent")
    (loss_t, acc_t, ece_t) = answer[1]  # a transform that moved some argmax
    rejected(capsys, "03.3", (answer[0], (loss_t, np.array(acc_t) - 0.01, ece_t)), chapter3,
             hint="the accuracy changed")
    rejected(capsys, "03.3", (answer[0], answer[0]), chapter3,
             hint="at your T these are not")


@pytest.fixture(scope="module")
def chapter4(diabetes):
    from companion import models

    x, y, _ = diabetes

    def make_model(seed=0):
        return models.keras_mlp(x.shape[1], hidden=(16,), seed=seed)

    return {"make_model": make_model, "x": x, "y": y, "BATCH": 32}


def _accumulated(objects, share):
    """The solution's loop: one epoch of SGD(0.05) in steps of four micro-batches."""
    import keras
    import tensorflow as tf

    x, y, batch = objects["x"], objects["y"], objects["BATCH"]
    model = objects["make_model"]()
    optimizer = keras.optimizers.SGD(0.05)
    for first in range(0, len(x), 4 * batch):
        end = min(first + 4 * batch, len(x))
        summed = None
        for begin in range(first, end, batch):
            stop = min(begin + batch, end)
            with tf.GradientTape() as tape:
                losses = keras.losses.mean_squared_error(y[begin:stop], model(x[begin:stop]))
                loss = tf.reduce_mean(losses) * share(stop - begin, end - first)
            grads = tape.gradient(loss, model.trainable_variables)
            summed = grads if summed is None else [a + b for a, b in zip(summed, grads)]
        optimizer.apply_gradients(zip(summed, model.trainable_variables))
    return model


def test_04_1_weighted_accumulation_is_right_as_weights_or_as_the_model(capsys, chapter4):
    import keras

    model = _accumulated(chapter4, lambda n_j, n: n_j / n)
    accepted(capsys, "04.1", model.get_weights(), chapter4)
    accepted(capsys, "04.1", model, chapter4)
    accepted(capsys, "04.1", [keras.ops.convert_to_numpy(v) for v in model.weights], chapter4)
    stepping = chapter4["make_model"]()
    stepping.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    stepping.fit(chapter4["x"], chapter4["y"], batch_size=32, epochs=1, shuffle=False, verbose=0)
    rejected(capsys, "04.1", stepping.get_weights(), chapter4, hint="step after every")
    rejected(capsys, "04.1", chapter4["make_model"]().get_weights(), chapter4,
             hint="initial weights")
    equal_shares = _accumulated(chapter4, lambda n_j, n: 1 / 4)  # the common 1/k recipe
    rejected(capsys, "04.1", equal_shares.get_weights(), chapter4, hint="by its share")
    rejected(capsys, "04.1", model.get_weights()[:2], chapter4, hint="4 arrays")


def fake_final_mse(reduction, optimizer_name, learning_rate, seed=0, epochs=5):
    """Chapter 4's final_mse with its measured stability limits, without the training."""
    assert optimizer_name == "SGD"
    limit = {"mean": 0.5718, "sum": 0.01833}[reduction]
    return 0.5 if learning_rate < limit else math.inf


def test_04_2_the_two_largest_stable_rates_are_right(capsys):
    objects = {"final_mse": fake_final_mse}
    accepted(capsys, "04.2", (0.554, 0.0178), objects)
    accepted(capsys, "04.2", [np.float32(0.56), 0.018], objects)
    # The issue: a guessed ratio of 32.0 passed.
    rejected(capsys, "04.2", 32.0, objects, hint="the ratio follows from the two rates")
    rejected(capsys, "04.2", (0.1, 0.1 / 32), objects, hint="20% larger than yours still train")
    rejected(capsys, "04.2", (1.0, 0.0178), objects, hint="five epochs blow up")
    rejected(capsys, "04.2", (0.0178, 0.554), objects, hint="the first rate is the one on the mean")


def test_04_2_a_rate_just_under_a_limit_that_is_not_monotone_is_right(capsys):
    def island(reduction, optimizer_name, learning_rate, seed=0, epochs=5):
        # As measured for the chapter's model on the sum: stable up to the limit, unstable
        # from 1.01 to 1.04 times it, stable again at 1.05, unstable beyond.
        ratio = learning_rate / {"mean": 0.554, "sum": 0.0178}[reduction]
        return 0.5 if ratio <= 1.0 or 1.045 <= ratio <= 1.055 else math.inf

    accepted(capsys, "04.2", (0.554 * 0.955, 0.0178 * 0.955), {"final_mse": island})


def test_04_3_token_weights(capsys):
    import torch

    lengths = [50, 10, 2]
    token_losses = torch.ones(sum(lengths), requires_grad=True)
    pieces = torch.split(token_losses, lengths)
    token_weights = torch.autograd.grad(token_losses.sum() / sum(lengths), token_losses)[0]
    sequence_weights = torch.autograd.grad(sum(p.mean() for p in pieces) / len(pieces),
                                           token_losses)[0]
    answer = (token_weights[-1] / token_weights[0], sequence_weights[-1] / sequence_weights[0])
    accepted(capsys, "04.3", answer, {}, 25.0)  # 0-d tensors
    accepted(capsys, "04.3", tuple(float(a) for a in answer), {}, 25.0)
    rejected(capsys, "04.3", (1.0, 1 / 25), {}, 25.0, hint="upside down")
    rejected(capsys, "04.3", (1.0, 1.0), {}, 25.0, hint="differentiate")


def test_04_4_the_fixed_step_is_right_and_its_look_alikes_are_not(capsys):
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

    def no_zero_grad(model, x_batch, y_batch, optimizer, loss_fn):  # gradients pile up
        loss = loss_fn(model(x_batch), y_batch)
        loss.backward()
        optimizer.step()
        return loss.item()

    accepted(capsys, "04.4", fixed_train_step, {})
    rejected(capsys, "04.4", summed_step, {}, hint="moved differently")
    rejected(capsys, "04.4", scaled_return, {}, hint="return the batch-mean loss")
    rejected(capsys, "04.4", no_zero_grad, {}, hint="zero the gradients at every step")
    rejected(capsys, "04.4", lambda *args: 1.0, {}, hint="moved differently")


@pytest.fixture(scope="module")
def chapter5(diabetes):
    x, y, y_raw = diabetes

    def least_squares_fit(x, y):
        design = np.c_[x, np.ones(len(x))]
        return design @ np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]

    return {"x": x, "y": y, "y_raw": y_raw, "least_squares": least_squares_fit(x, y),
            "least_squares_fit": least_squares_fit}


def _squashed(x, target, activation="sigmoid"):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation=activation)])
    model.compile(optimizer="adam", loss="mse", metrics=["mse"])
    model.fit(x, target, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return model


def test_05_1_the_model_and_the_bound_of_the_constant_one(capsys, chapter5):
    x, y, y_raw = (chapter5[k] for k in ("x", "y", "y_raw"))
    objects = {"x": x, "y_raw": y_raw}
    variance = float(np.var(y_raw, dtype=np.float64))
    bound = variance + (float(np.mean(y_raw, dtype=np.float64)) - 1.0) ** 2
    squashed = _squashed(x, y_raw)
    accepted(capsys, "05.1", (squashed, bound), objects, bound)
    accepted(capsys, "05.1", [squashed, np.float32(bound)], objects, bound)
    # The issue: any MSE above the bound passed (1e9): the MSE is now read from the model.
    rejected(capsys, "05.1", (1e9, bound), objects, bound, hint="your trained Keras model")
    rejected(capsys, "05.1", (squashed, variance), objects, bound, hint="use c = 1")
    rejected(capsys, "05.1", (_squashed(x, y), bound), objects, bound, hint="train it on the raw")
    rejected(capsys, "05.1", (_squashed(x, y_raw, activation=None), bound), objects, bound,
             hint="outside [0, 1]")


def test_05_2_one_dimensional_batches_count_as_one_sample(capsys, chapter5):
    import keras

    y, least_squares = chapter5["y"], chapter5["least_squares"]
    objects = {"y": y, "least_squares": least_squares}
    flat = keras.metrics.MeanSquaredError()
    for start in range(0, len(y), 32):
        flat.update_state(y[start:start + 32, 0], least_squares[start:start + 32, 0])
    accepted(capsys, "05.2", (float(flat.result()), float(flat.count.numpy())), objects)
    accepted(capsys, "05.2", (flat.result(), flat.count), objects)  # Keras variables as they are
    per_sample = float(np.mean((y - least_squares) ** 2))
    rejected(capsys, "05.2", (per_sample, 442.0), objects, hint="one per sample")
    rejected(capsys, "05.2", (per_sample, 14.0), objects, hint="in batches of 32")


def test_05_3_half_the_smallest_subnormal(capsys, chapter5):
    objects = {k: chapter5[k] for k in ("x", "y_raw", "least_squares_fit")}
    raw_fit = chapter5["least_squares_fit"](chapter5["x"], chapter5["y_raw"])
    largest_error = float(np.max(np.abs(raw_fit - chapter5["y_raw"])))
    s_max = float(np.sqrt(2.0**-25) / largest_error)
    accepted(capsys, "05.3", s_max, objects, s_max)
    rejected(capsys, "05.3", float(np.sqrt(2.0**-24) / largest_error), objects, s_max,
             hint="half the smallest")
    rejected(capsys, "05.3", 1.5 * s_max, objects, s_max, hint="start from the largest error")


def test_05_4_the_broadcast_formula(capsys):
    def formula(predictions, targets):
        return (np.var(predictions) + np.var(targets)
                + (predictions.mean() - targets.mean()) ** 2)

    accepted(capsys, "05.4", formula, {})
    rejected(capsys, "05.4", lambda p, t: np.var(p) + np.var(t), {}, hint="three terms")
    rejected(capsys, "05.4", lambda p, t: np.var(p, ddof=1) + np.var(t, ddof=1)
             + (p.mean() - t.mean()) ** 2, {}, hint="ddof=0")
    rejected(capsys, "05.4", lambda p: 0.0, {}, hint="failed on vectors of 5: TypeError")


# --- never raises, never hangs: stand-ins for the chapters' objects, and hostile answers --------


class FakeModel:
    """A Keras model's interface at no cost: compile, fit, predict, get_weights."""

    shapes = [(10, 16), (16,), (16, 1), (1,)]

    def compile(self, **kwargs):
        pass

    def fit(self, x, y, **kwargs):
        return type("History", (), {"history": {"loss": [5.0, 4.0, 3.0, 2.0, 1.0]}})()

    def predict(self, x, **kwargs):
        return np.asarray(x)[:, :1] * 0.5

    def get_weights(self):
        return [np.full(shape, 0.1) for shape in self.shapes]


def _fake_log(keys=("loss", "mse"), epochs=3) -> TrainingLog:
    log = TrainingLog(keys=keys)
    step = 0
    for epoch in range(epochs):
        for size, value in zip((32, 32, 10), (1.0, 2.0, 4.0)):
            values = {k: value + epoch for k in keys}
            log.add_batch(epoch=epoch, step=step, size=size, batch=values, running=values)
            step += 1
        log.end_epoch({k: (32 * 1.0 + 32 * 2.0 + 10 * 4.0) / 74 + epoch for k in keys})
    return log


def _fake_objects() -> dict[str, dict]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(74, 10)).astype(np.float32)
    y = rng.normal(size=(74, 1)).astype(np.float32)
    y_raw = (150 + 50 * y).astype(np.float32)

    def least_squares_fit(x, y):
        design = np.c_[x, np.ones(len(x))]
        return design @ np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]

    log = _fake_log()
    return {
        "01.1": {"log": log}, "01.2": {"model": FakeModel(), "x": x, "y": y},
        "01.3": {"log": log},
        "02.2": {"make_model": FakeModel, "compiled": lambda model: model, "x": x, "y": y,
                 "FIT": {"batch_size": 32}},
        "03.1": {"train_right": rng.random(300) < 0.9},
        "03.3": {"val_logits": rng.normal(size=(2, 2, 60, 10)),
                 "y_val": rng.integers(0, 10, 60)},
        "04.1": {"make_model": FakeModel, "x": x, "y": y, "BATCH": 32},
        "04.2": {"final_mse": fake_final_mse},
        "05.1": {"x": x, "y_raw": y_raw}, "05.2": {"y": y, "least_squares": y * 0.9},
        "05.3": {"x": x, "y_raw": y_raw, "least_squares_fit": least_squares_fit},
    }


FAKES = _fake_objects()
STAND_INS = {exercise: FAKES.get(exercise, {}) for exercise in EXERCISES}
assert all(set(STAND_INS[e]) == set(EXERCISES[e].uses) for e in EXERCISES)


class Raises(Exception):
    """What the hostile objects raise."""


def _raise(*args, **kwargs):
    raise Raises("hostile")


class Hostile:
    """Every protocol a reader might use raises; only repr works (for hypothesis' reports)."""

    __eq__ = __ne__ = __lt__ = __gt__ = __le__ = __ge__ = __hash__ = _raise
    __bool__ = __len__ = __iter__ = __float__ = __int__ = __index__ = __complex__ = _raise
    __getitem__ = __array__ = __call__ = __abs__ = __neg__ = __round__ = __format__ = _raise
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _raise

    def __getattr__(self, name):
        raise Raises(name)

    def __repr__(self):
        return "Hostile()"


class RaisingFloat(float):
    __float__ = __eq__ = __ne__ = __lt__ = __gt__ = __hash__ = __abs__ = __round__ = _raise
    __sub__ = __rsub__ = __mul__ = __truediv__ = __bool__ = _raise


class RaisingInt(int):
    __int__ = __index__ = __float__ = __eq__ = __ne__ = __lt__ = __gt__ = __le__ = _raise
    __ge__ = __hash__ = __bool__ = __sub__ = __add__ = _raise


class LyingLength:
    """Says it holds two items, and iterates forever."""

    def __len__(self):
        return 2

    def __iter__(self):
        return itertools.count()

    def __repr__(self):
        return "LyingLength()"


class ShortLength(LyingLength):
    """Says two, gives one."""

    def __iter__(self):
        return iter([1.0])


class HugeLength:
    """A sequence whose __len__ overflows and whose items never end."""

    def __len__(self):
        return 10**20

    def __getitem__(self, index):
        return 0.5

    def __repr__(self):
        return "HugeLength()"


class NegativeLength(HugeLength):
    def __len__(self):
        return -1


class BrokenIterator:
    """Iterates one item, then raises."""

    def __iter__(self):
        yield 1.0
        raise Raises("second item")

    def __repr__(self):
        return "BrokenIterator()"


class RaisingClass:
    """Even isinstance() raises: __class__ is a property that raises."""

    @property
    def __class__(self):
        raise Raises("__class__")

    def __repr__(self):
        return "RaisingClass()"


def _forever():
    while True:
        yield 1.0


def _object_array():
    items = np.empty(2, dtype=object)  # np.array([...]) would probe Hostile's attributes
    items[0], items[1] = Hostile(), 1.0
    return items


def _recursive_list():
    items = [1.0]
    items.append(items)
    return items


def _framework_values():
    import keras
    import tensorflow as tf
    import torch

    return [
        torch.tensor(2.0), torch.tensor(3), torch.tensor(True), torch.tensor(1.0, requires_grad=True),
        torch.tensor(1.5, dtype=torch.bfloat16), torch.zeros(2, 3), torch.tensor([True, False]),
        torch.empty(2, device="meta"), torch.tensor([[1.0, 2.0]]).to_sparse(),
        torch.nn.Linear(2, 1), tf.constant(1.0), tf.constant([1, 2]), tf.Variable(2.0),
        tf.constant("text"), tf.ragged.constant([[1.0], [2.0, 3.0]]), keras.Variable(0.5),
        keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)]),
    ]


HOSTILE = [
    Hostile, lambda: RaisingFloat(1.5), lambda: RaisingInt(3), LyingLength, ShortLength,
    HugeLength, NegativeLength, BrokenIterator, RaisingClass, itertools.count,
    lambda: itertools.repeat(0.5), lambda: itertools.cycle([True, False]), _forever,
    _recursive_list, mock.MagicMock, mock.Mock, lambda: 10**400, lambda: -(10**400),
    lambda: complex(1, 2), lambda: decimal.Decimal("NaN"), lambda: decimal.Decimal("1e999"),
    lambda: fractions.Fraction(10**400, 3), lambda: np.array(["a", "b"]), lambda: np.array("s"),
    lambda: np.array(2.5), lambda: np.array([[1.0, 2.0]]), _object_array,
    lambda: np.ma.masked_array([1.0, 2.0], mask=[True, False]), lambda: np.float16(1.0),
    lambda: np.datetime64("2026-01-01"), lambda: np.timedelta64(3, "D"),
    lambda: np.complex64(1j), lambda: np.longdouble(1.0), lambda: np.zeros((0,)),
    lambda: np.nan, lambda: math.inf, lambda: -0.0, lambda: b"bytes", lambda: bytearray(b"x"),
    lambda: memoryview(b"ab"), lambda: {"loss": [1.0]}, lambda: {1, 2}, lambda: frozenset(),
    lambda: Ellipsis, lambda: None, lambda: NotImplemented, lambda: type, lambda: object(),
    lambda: (Hostile(), Hostile()), lambda: (LyingLength(), 1.0), lambda: [RaisingInt(2)] * 3,
    lambda: ((Hostile(), 1.0, 2.0), (1.0, 2.0, 3.0)), lambda: (_forever(), _forever()),
    lambda: _raise, lambda: (lambda *args, **kwargs: itertools.count()),
    lambda: (lambda *args, **kwargs: Hostile()), lambda: (lambda *args, **kwargs: 10**400),
    lambda: (lambda *args, **kwargs: None), _fake_log, lambda: TrainingLog(keys=("loss",)),
]


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail, instead of hanging, if the block runs longer than `seconds` (a detector only)."""
    def timed_out(signum, frame):
        raise TimeoutError(f"no verdict after {seconds} s: a check hung")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_a_verdict(exercise, answer, **objects) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), deadline(30):
        right = check(exercise, answer, **objects)
    text = out.getvalue()
    assert isinstance(right, bool)
    assert text.startswith("Right: " if right else "Not yet: "), text
    assert text.count("\n") == len(text.splitlines()) and all(len(line) <= 88
                                                            for line in text.splitlines())
    return text


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_every_hostile_answer_gets_a_verdict_and_never_an_exception(exercise):
    for make in HOSTILE + [lambda v=v: v for v in _framework_values()]:
        assert_a_verdict(exercise, make(), **STAND_INS[exercise])


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_a_wrong_type_gets_not_yet_and_the_type_expected(exercise):
    text = assert_a_verdict(exercise, "a string", **STAND_INS[exercise])
    assert text.startswith("Not yet: ") and "got a str" in " ".join(text.split()), text


@pytest.mark.parametrize("exercise", sorted(e for e in EXERCISES if EXERCISES[e].uses))
def test_hostile_objects_in_place_of_the_chapters_get_a_verdict(exercise):
    for name in EXERCISES[exercise].uses:
        for make in HOSTILE[:30]:
            objects = {**STAND_INS[exercise], name: make()}
            assert_a_verdict(exercise, ..., **objects)
            assert_a_verdict(exercise, (1.0, 2.0), **objects)


# Any value: scalars of every kind, arrays of every dtype and shape, the hostile objects, and
# functions returning any of them, nested in lists, tuples, dicts and sets.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True), st.complex_numbers(), st.text(max_size=4),
    st.binary(max_size=4), st.fractions(), st.decimals(), st.just(Ellipsis))
ARRAYS = hnp.arrays(dtype=st.one_of(hnp.scalar_dtypes(), hnp.unicode_string_dtypes(),
                                    hnp.byte_string_dtypes()),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
# RaisingClass breaks hypothesis' own bookkeeping, so it is tried above, not in generated data.
HOSTILE_VALUES = st.sampled_from([h for h in HOSTILE if h is not RaisingClass]).map(
    lambda make: make())
LEAVES = st.one_of(SCALARS, ARRAYS, HOSTILE_VALUES)
FUNCTIONS = st.functions(like=lambda *args, **kwargs: None, returns=LEAVES, pure=False)
VALUES = st.recursive(
    st.one_of(LEAVES, FUNCTIONS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.tuples(inner, inner, inner),
                            st.tuples(st.tuples(inner, inner, inner),
                                      st.tuples(inner, inner, inner)),
                            st.dictionaries(st.text(max_size=2), inner, max_size=2),
                            st.frozensets(st.integers(), max_size=3)),
    max_leaves=8)
FUZZ_EXAMPLES = 200  # per judge: 18 judges, 3,600 answers in all


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(answer=VALUES)
def test_fuzz_any_answer_gets_a_verdict_and_never_an_exception_or_a_hang(exercise, answer):
    started = time.perf_counter()
    assert_a_verdict(exercise, answer, **STAND_INS[exercise])
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize("exercise", ["01.2", "02.1", "02.4", "03.1", "04.1", "04.3", "05.2"])
@pytest.mark.parametrize("endless", [itertools.count, _forever, LyingLength, HugeLength,
                                     lambda: itertools.repeat(True)])
def test_an_endless_or_lying_iterable_is_read_a_bounded_number_of_items(exercise, endless):
    taken = []
    source = endless()

    def counting():
        for item in source:
            taken.append(item)
            yield item

    text = assert_a_verdict(exercise, counting(), **STAND_INS[exercise])
    assert text.startswith("Not yet: ") and len(taken) <= feedback.MOST_ITEMS + 1
    assert_a_verdict(exercise, endless(), **STAND_INS[exercise])


@dataclasses.dataclass
class WrongAnswer:
    exercise: str
    answer: object
    hint: str


def test_the_judges_state_the_issues_wrong_answers_as_the_table_in_the_docs(capsys):
    # The issue's list, with stand-in objects (the real ones are checked above): each is
    # "Not yet", with the hint that names the mistake.
    objects = _fake_objects()
    log = objects["01.1"]["log"]
    table = [
        WrongAnswer("01.1", log.history["loss"][2], "a number cannot show how it was computed"),
        WrongAnswer("01.2", [1.0, 2.0], "should be an int; got a float"),
        WrongAnswer("01.3", {"loss": [1.0] * 3, "mse": [1.0] * 3}, "not its history"),
        WrongAnswer("03.1", (0.5, 2500), "training accuracy"),
        WrongAnswer("04.2", 32.0, "the ratio follows from the two rates"),
        WrongAnswer("05.1", (1e9, 1e9), "your trained Keras model"),
    ]
    for wrong in table:
        rejected(capsys, wrong.exercise, wrong.answer, STAND_INS[wrong.exercise], hint=wrong.hint)
