"""The adversarial sweep (issue 24): every public function, each argument given hostile values.

A case is one call: the function's valid arguments with at most one of them replaced, by a
hostile value (for that argument, bad input) or by the same value in another container (a
list, a tensor: valid input). Its outcome is one of four:

  clear    an error raised by companion code (TypeError, ValueError, KeyError or
           FileNotFoundError) whose message names the argument at fault, says what it got and
           what it expected;
  correct  a result, for valid input, equal to the result of the plain NumPy call, which is
           itself checked against an independent reference;
  silent   a result for bad input, or a wrong result: the worst outcome, as nothing says so;
  unclear  any other error: raised from inside NumPy or a framework, naming another argument or
           none, or not saying what it got or what it expected.

"Says what it got" and "what it expected" are read from the words: the message holds "got",
"but", "has", "holds", "is a"... for the first, and "must", "expected", "needs", "only",
"pass"... for the second. ``test_validation.py`` requires every case to be clear or correct;
``python tests/sweep.py`` prints the counts per function and every case that is not, also
against another copy of the package (``PYTHONPATH=/path/to/old python tests/sweep.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ERRORS = (TypeError, ValueError, KeyError, FileNotFoundError)
GOT = re.compile(r"\b(got|but|has|have|holds?|held|is an?|is on|is not|are|declares|with|"
                 r"lacks|gives|from)\b")
EXPECTED = re.compile(r"\b(must|expected|expects|should|needs?|only|pass|use|requires?|at "
                      r"(least|most)|cannot|refused|not an?)\b")


@dataclass
class Case:
    """One call: ``argument`` is the one given a hostile value (None: valid input), ``kind``
    what the value is; ``check(result)`` says whether a valid call's result is right."""

    function: str
    argument: str | None
    kind: str
    call: Callable
    check: Callable | None = None
    outcome: str = ""
    detail: str = ""


@dataclass
class Spec:
    """A public function: its valid arguments, the call, the reference check of the valid
    call's result, and per argument the kind of value it takes (which hostile values to try)."""

    function: str
    call: Callable  # call(**arguments) -> result
    valid: dict
    kinds: dict  # argument -> kind name in HOSTILE
    check: Callable  # result of the valid call -> bool (an independent reference)
    valid_alike: dict = field(default_factory=dict)  # argument -> kinds that are valid here
    skip: dict = field(default_factory=dict)  # argument -> hostile kinds not to try
    optional: tuple = ()  # arguments for which None is a valid value (not tried)
    summary: Callable = lambda result: result  # what to compare between two valid calls


# --- hostile values, by the kind of value an argument takes ---------------------------------------


def _masked(array):
    array = np.asarray(array)
    mask = np.zeros(array.shape, dtype=bool)
    mask.reshape(-1)[0] = True
    return np.ma.masked_array(array, mask=mask)


def _poked(array, value):
    array = np.array(array, dtype=np.float64)
    array.reshape(-1)[0] = value
    return array


def _torch(array, **kwargs):
    import torch

    return torch.tensor(np.asarray(array), **kwargs)


def arrays(base, *, labels=False):
    """(kind, value, valid) for an array argument whose valid value is ``base``."""
    base = np.asarray(base)
    import torch

    yield "list", base.tolist(), True
    yield "torch", _torch(base), True
    yield "None", None, False
    yield "a string", "abc", False
    yield "a dict", {"x": base}, False
    yield "empty", base[:0], False
    yield "strings", base.astype(str), False
    yield "complex", base + 1j, False
    yield "objects", np.array([object()] * len(base), dtype=object), False
    yield "ragged", [[1.0, 2.0], [3.0]], False
    yield "a scalar", base.reshape(-1)[0], False
    yield "two more axes", base[..., None, None], False
    yield "one shorter", base[:-1], False
    yield "masked", _masked(base), False
    yield "a list of two arrays (two inputs)", [base, base], False
    yield "torch meta", torch.empty(base.shape, device="meta"), False
    if labels:
        yield "negative label", np.where(np.arange(len(base)) == 0, -1, base), False
        yield "fraction label", _poked(base, 0.5), False
        yield "uint64 label >= 2**63", base.astype(np.uint64) + np.uint64(2**63), False
        yield "label 1e30", _poked(base, 1e30), False
    else:
        yield "NaN", _poked(base, np.nan), False
        yield "inf", _poked(base, np.inf), False


def counts(base, minimum=1):
    yield "numpy int", np.int64(base), True
    yield "0" if minimum else "-1", minimum - 1, False
    yield "negative", -5, False
    yield "a float", float(base) + 0.5, False
    yield "a whole float", float(base), False
    yield "a string", str(base), False
    yield "None", None, False
    yield "True", True, False
    yield "NaN", float("nan"), False
    yield "a list", [base], False


def numbers(base, *, low=-math.inf, high=math.inf):
    yield "numpy float32", np.float32(base), True
    yield "NaN", float("nan"), False
    yield "inf", float("inf"), False
    yield "a string", str(base), False
    yield "None", None, False
    yield "True", True, False
    yield "a list", [base], False
    if low > -math.inf:
        yield "below the range", low - 1.0, False
    if high < math.inf:
        yield "above the range", high + 1.0, False


def flags(base):
    yield "numpy bool", np.bool_(base), True
    yield "1", 1, False
    yield "a string", "True", False
    yield "None", None, False


def texts(base):
    yield "None", None, False
    yield "a number", 3, False
    yield "bytes", b"abc", False


def objects(base, *others):
    yield "None", None, False
    yield "a string", "adam", False
    yield "a number", 3, False
    for name, value in others:
        yield name, value, False


# --- the result of a call, for comparisons --------------------------------------------------------


def close(a, b, rtol=1e-6) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], rtol) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(
            close(u, v, rtol) for u, v in zip(a, b))
    try:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        return a == b
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=1e-9, equal_nan=True))


# A message says what it got only if it shows these, for values that are not arrays of numbers.
GOT_SHOWN = {"None": ("None",), "a string": ("str", "'"), "a dict": ("dict",), "masked": ("mask",),
             "a list of two arrays (two inputs)": ("2 arrays", "list of 2"), "torch meta": ("meta",),
             "complex": ("complex",), "bytes": ("bytes", "b'")}


def clarity(message: str, argument: str, kind: str = "") -> str:
    """"" if ``message`` names ``argument``, says what it got and what it expected; else why not."""
    shown = GOT_SHOWN.get(kind)
    if shown and not any(token in message for token in shown):
        return f"does not say it got {kind}"
    short = len(argument) <= 2
    after = r"(?=\s+(must|has|holds|and|is|of|were|was|or|are)\b|\[|:|\s*\(|,)" if short else r"(?!\w)"
    if not re.search(rf"(?<![\w.]){re.escape(argument)}{after}", message):
        return f"does not name {argument}"
    if not GOT.search(message):
        return "does not say what it got"
    if not EXPECTED.search(message):
        return "does not say what it expected"
    return ""


def _from_companion(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "companion" in Path(frames[-1].filename).parts


def run(case: Case) -> Case:
    """Call ``case`` and set its outcome."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = case.call()
        except ERRORS as error:
            message = f"{type(error).__name__}: {error}"
            if case.argument is None:
                case.outcome, case.detail = "unclear", f"valid input refused: {message}"
            elif not _from_companion(error):
                case.outcome, case.detail = "unclear", f"raised outside companion: {message}"
            else:
                why = min((clarity(str(error), name, case.kind) for name in case.argument.split("|")),
                          key=len)
                case.outcome, case.detail = ("unclear", f"{why}: {message}") if why else ("clear", message)
            return case
        except Exception as error:  # noqa: BLE001 - any other error is unclear by definition
            case.outcome, case.detail = "unclear", f"{type(error).__name__}: {str(error)[:300]}"
            return case
    if case.argument is not None:
        case.outcome, case.detail = "silent", f"accepted, returned {str(result)[:200]}"
    elif case.check is not None and not case.check(result):
        case.outcome, case.detail = "silent", f"wrong result: {str(result)[:200]}"
    else:
        case.outcome = "correct"
    return case


def expand(spec: Spec) -> list[Case]:
    """The valid call, and one case per argument and hostile (or alike) value."""
    cases = [Case(spec.function, None, "valid", lambda: spec.call(**spec.valid), spec.check)]
    reference = []

    def same_as_valid(result):
        if not reference:
            reference.append(spec.summary(spec.call(**spec.valid)))
        return close(spec.summary(result), reference[0])

    for argument, kind in spec.kinds.items():
        for name, value, valid in HOSTILE[kind](spec.valid[argument]):
            if name in spec.skip.get(argument, ()) or (name == "None" and argument in spec.optional):
                continue
            valid = valid or name in spec.valid_alike.get(argument, ())
            arguments = dict(spec.valid, **{argument: value})
            cases.append(Case(spec.function, None if valid else argument, name,
                              lambda a=arguments: spec.call(**a), same_as_valid if valid else None))
            if valid:
                cases[-1].kind = f"{argument}: {name}"
    return cases


HOSTILE = {
    "array": arrays,
    "labels": lambda base: arrays(base, labels=True),
    "count": counts,
    "count0": lambda base: counts(base, minimum=0),
    "number": numbers,
    "fraction": lambda base: numbers(base, low=0.0, high=1.0),
    "flag": flags,
    "text": texts,
}


def add_objects(name: str, *others):
    HOSTILE[name] = lambda base: objects(base, *others)


# --- the public functions ---------------------------------------------------------------------------


def specs(folder: Path) -> list[Spec]:
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from companion import (batching, calibration, checkpoints, data, diagnose, glue, gradients,
                           metrics, models, plotting, reproducibility, tf_loop, torch_loop,
                           training_log)

    rng = np.random.default_rng(0)
    labels = np.array([0, 2, 1, 1, 0, 2])
    scores = rng.normal(size=(6, 3))
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    values = rng.normal(size=6)
    weights = np.array([1.0, 2.0, 0.5, 1.0, 0.0, 3.0])
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)

    torch.manual_seed(0)
    torch_net = torch.nn.Linear(3, 1)
    torch_opt = torch.optim.SGD(torch_net.parameters(), lr=0.01)
    keras_net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    keras_net.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    keras_net.optimizer.build(keras_net.trainable_variables)
    inputs = [keras.Input((3,)), keras.Input((3,))]
    two_inputs = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(inputs)))
    add_objects("torch model", ("a Keras model", keras_net), ("a torch optimizer", torch_opt))
    add_objects("torch optimizer", ("a torch model", torch_net),
                ("an optimizer of another model", torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)))
    add_objects("keras model", ("a torch model", torch_net), ("a Keras model with two inputs", two_inputs),
                ("an unbuilt Keras model", keras.Sequential([keras.layers.Dense(1)])))
    add_objects("keras optimizer", ("a torch optimizer", torch_opt))
    add_objects("torch loss", ("a Keras loss", keras.losses.MeanSquaredError()),
                ("a sum-reduced loss", torch.nn.MSELoss(reduction="sum")))
    add_objects("keras loss", ("a torch loss", torch.nn.MSELoss()))
    add_objects("axes", ("a figure", plt.figure()))
    add_objects("log", ("a dict", {"loss": [1.0]}))
    add_objects("diagram", ("a tuple", (1, 2, 3, 4)))
    HOSTILE["path"] = lambda base: [("a str", str(base), True), ("None", None, False),
                                    ("a number", 3, False), ("a folder", folder, False),
                                    ("in a missing folder", folder / "missing" / "s", False)]
    HOSTILE["existing path"] = lambda base: [*HOSTILE["path"](base),
                                             ("a missing file", folder / "missing.pt", False)]
    add_objects("metric object", ("an object without a count", object()))
    add_objects("metric list", ("a Keras metric", [keras.metrics.MeanSquaredError()]),
                ("two metrics of one name", [metrics.Mean(name="m"), metrics.Mean(name="m")]))
    add_objects("gradients", ("an array of objects", np.array([object()], dtype=object)),
                ("a list of strings", ["a"]), ("a list with NaN", [np.array([np.nan])]))

    def metric_run(metric, *batch, **kwargs):
        metric.update(*batch, **kwargs)
        return metric.result()

    log = training_log.TrainingLog(keys=("loss", "mse"))
    for epoch in range(2):
        for step, size in enumerate((4, 1)):
            log.add_batch(epoch=epoch, step=step, size=size, batch={"loss": 1.0 + step, "mse": 0.5},
                          running={"loss": 1.0, "mse": 0.5})
        log.end_epoch({"loss": 1.0, "mse": 0.5})
    diagram = calibration.reliability_diagram(labels, probabilities, num_bins=4)
    saved = checkpoints.save_training_state(folder / "state.pt", model=torch_net, optimizer=torch_opt)
    keras_saved = checkpoints.save_keras_training_state(folder / "state.npz", model=keras_net,
                                                        optimizer=keras_net.optimizer)

    def figure_axes(ax):
        plt.close("all")
        return len(ax.lines), len(ax.patches)

    def top1(l, s):
        return float(np.mean(np.argmax(s, axis=1) == l))

    def mse_keras(t, p):
        return keras.losses.mean_squared_error(t, p)

    out = [
        Spec("batching.batches", batching.batches, {"num_samples": 10, "batch_size": 4},
             {"num_samples": "count", "batch_size": "count"},
             lambda r: r == [slice(0, 4), slice(4, 8), slice(8, 10)]),
        Spec("calibration.margins", calibration.margins, {"y_true": labels, "scores": scores},
             {"y_true": "labels", "scores": "array"},
             lambda r: close(r, [s[l] - np.max(np.delete(s, l)) for l, s in zip(labels, scores)])),
        Spec("calibration.cross_entropy", calibration.cross_entropy, {"y_true": labels, "logits": scores},
             {"y_true": "labels", "logits": "array"},
             lambda r: close(r, -np.log(probabilities[np.arange(6), labels]))),
        Spec("calibration.reliability_diagram", lambda **a: calibration.reliability_diagram(**a).ece,
             {"y_true": labels, "probabilities": probabilities, "num_bins": 4},
             {"y_true": "labels", "probabilities": "array", "num_bins": "count"},
             lambda r: math.isfinite(r) and 0 <= r <= 1),
        Spec("calibration.expected_calibration_error", calibration.expected_calibration_error,
             {"y_true": labels, "probabilities": probabilities, "num_bins": 4},
             {"y_true": "labels", "probabilities": "array", "num_bins": "count"},
             lambda r: close(r, diagram.ece)),
        Spec("calibration.batch_accuracy_distribution", calibration.batch_accuracy_distribution,
             {"accuracy": 0.75, "batch_size": 4, "population": None},
             {"accuracy": "fraction", "batch_size": "count"},
             lambda r: close(r, [math.comb(4, k) * 0.75**k * 0.25 ** (4 - k) for k in range(5)])),
        Spec("calibration.ReliabilityDiagram", lambda **a: calibration.ReliabilityDiagram(**a).ece,
             {"bin_edges": np.array([0.0, 0.5, 1.0]), "confidence": np.array([np.nan, 0.8]),
              "accuracy": np.array([np.nan, 0.5]), "count": np.array([0, 4])},
             {"confidence": "diagram field", "accuracy": "diagram field"},
             lambda r: close(r, 0.3)),
        Spec("data.load_diabetes", lambda **a: data.load_diabetes(**a)[1].std(), {"standardize": True},
             {"standardize": "flag"}, lambda r: close(r, 1.0, rtol=1e-5)),
        Spec("data.load_digits_split", lambda **a: len(data.load_digits_split(**a).x_val),
             {"validation_fraction": 0.5, "seed": 1}, {"validation_fraction": "open fraction", "seed": "count0"},
             lambda r: r == 898),
        Spec("diagnose.diagnose", lambda **a: diagnose.diagnose(**a).mse,
             {"y_true": values, "y_pred": values + 0.5, "x": None, "shown": None, "metric": None},
             {"y_true": "array", "y_pred": "array", "shown": "text"},
             lambda r: close(r, 0.25), skip={"y_pred": ("NaN", "inf")}, optional=("shown",),
             valid_alike={"y_true": ("two more axes",), "y_pred": ("two more axes",)}),
        Spec("diagnose.diagnose(metric=)", lambda **a: diagnose.diagnose(values, values, **a).mse,
             {"metric": metrics.Mean()}, {"metric": "metric object"}, lambda r: r == 0.0,
             optional=("metric",)),
        Spec("metrics.Mean", lambda **a: metrics.Mean(**a).name, {"name": "m"}, {"name": "text"},
             lambda r: r == "m"),
        Spec("metrics.Mean.update", lambda **a: metric_run(metrics.Mean(), **a),
             {"values": values, "sample_weight": weights}, {"values": "array", "sample_weight": "array"},
             lambda r: close(r, np.average(values, weights=weights)),
             skip={"values": ("a scalar", "two more axes")}, optional=("sample_weight",)),
        Spec("metrics.MeanSquaredError.update", lambda **a: metric_run(metrics.MeanSquaredError(), **a),
             {"y_true": values, "y_pred": values * 2, "sample_weight": weights},
             {"y_true": "array", "y_pred": "array", "sample_weight": "array"},
             lambda r: close(r, np.average(values**2, weights=weights)), optional=("sample_weight",)),
        Spec("metrics.Accuracy", lambda **a: metrics.Accuracy(**a).top_k,
             {"name": "acc", "threshold": 0.5, "top_k": 2},
             {"name": "text", "threshold": "number", "top_k": "count"}, lambda r: r == 2),
        Spec("metrics.Accuracy.update", lambda **a: metric_run(metrics.Accuracy(), **a),
             {"y_true": labels, "y_pred": scores, "sample_weight": None},
             {"y_true": "labels", "y_pred": "array"}, lambda r: close(r, top1(labels, scores))),
        Spec("models.keras_mlp", lambda **a: len(models.keras_mlp(**a).layers),
             {"num_inputs": 3, "hidden": (4,), "activation": "tanh", "l2": 0.01, "dropout": 0.1, "seed": 0},
             {"num_inputs": "count", "l2": "nonnegative", "dropout": "open-high fraction", "seed": "count0",
              "activation": "text"}, lambda r: r == 3),
        Spec("models.torch_mlp", lambda **a: len(models.torch_mlp(**a)),
             {"num_inputs": 3, "hidden": (4,), "activation": "tanh", "dropout": 0.1},
             {"num_inputs": "count", "dropout": "open-high fraction", "activation": "text"}, lambda r: r == 4),
        Spec("models.copy_keras_weights_to_torch",
             lambda **a: (models.copy_keras_weights_to_torch(**a), float(torch_net.bias))[1],
             {"keras_model": keras_net, "torch_model": torch_net},
             {"keras_model": "keras model", "torch_model": "torch model"},
             lambda r: r == float(keras_net.layers[-1].bias.numpy()[0])),
        Spec("models.torch_l2_penalty", lambda **a: float(models.torch_l2_penalty(**a)(torch_net)),
             {"l2": 0.5, "hidden_only": False}, {"l2": "nonnegative", "hidden_only": "flag"},
             lambda r: close(r, 0.5 * float((torch_net.weight**2).sum()))),
        Spec("plotting.plot_epoch_numbers", lambda **a: figure_axes(plotting.plot_epoch_numbers(**a)),
             {"log": log, "key": "loss", "evaluations": [0.9, 0.8], "ax": None, "title": None, "ylabel": None},
             {"log": "log", "key": "text", "evaluations": "array", "ax": "axes", "title": "text"},
             lambda r: r[0] >= 4, optional=("evaluations", "ax", "title")),
        Spec("plotting.plot_loss_vs_margin", lambda **a: figure_axes(plotting.plot_loss_vs_margin(**a)),
             {"margins": values, "losses": np.abs(values), "num_classes": 3, "ax": None, "title": None},
             {"margins": "array", "losses": "array", "num_classes": "count"}, lambda r: r[0] >= 3),
        Spec("plotting.plot_batch_accuracy_histogram",
             lambda **a: figure_axes(plotting.plot_batch_accuracy_histogram(**a)),
             {"batch_accuracies": np.array([0.75, 1.0, 0.5]), "batch_size": 4, "accuracy": 0.75,
              "population": None, "ax": None, "title": None},
             {"batch_accuracies": "array", "batch_size": "count", "accuracy": "fraction"},
             lambda r: r[1] >= 3, skip={"batch_accuracies": ("one shorter",)}),
        Spec("plotting.plot_loss_and_accuracy", lambda **a: figure_axes(plotting.plot_loss_and_accuracy(**a)),
             {"loss": [0.5, 0.4, 0.45], "accuracy": [0.8, 0.85, 0.86], "mark_epoch": 1},
             {"loss": "array", "accuracy": "array", "mark_epoch": "count0"}, lambda r: r[0] >= 2,
             optional=("mark_epoch",)),
        Spec("plotting.plot_reliability_diagram", lambda **a: figure_axes(plotting.plot_reliability_diagram(**a)),
             {"diagram": diagram, "ax": None, "title": None, "label": "accuracy"},
             {"diagram": "diagram", "label": "text"}, lambda r: r[1] >= 1),
        Spec("tf_loop.train", lambda **a: tf_loop.train(**a).history["loss"][0],
             {"model": keras_net, "x": x, "y": y, "loss": keras.losses.MeanSquaredError(),
              "optimizer": keras.optimizers.SGD(0.0), "batch_size": 4, "epochs": 1, "metrics": (),
              "weighted_metrics": (), "sample_weight": None, "shuffle": False, "seed": None},
             {"model": "keras model", "x": "array", "y": "array", "loss": "keras loss",
              "optimizer": "keras optimizer", "batch_size": "count", "epochs": "count0", "shuffle": "flag"},
             lambda r: close(r, float(np.mean((keras_net.predict(x, verbose=0) - y) ** 2)), rtol=1e-4),
             skip={"x": ("torch meta",), "y": ("torch meta",)}),
        Spec("torch_loop.train", lambda **a: torch_loop.train(**a).history["loss"][0],
             {"model": torch_net, "x": x, "y": y, "loss_fn": torch.nn.MSELoss(), "optimizer": torch.optim.SGD(
                 torch_net.parameters(), lr=0.0), "batch_size": 4, "epochs": 1, "metrics": (), "shuffle": False,
              "seed": None, "penalty": None, "accumulation_steps": 1},
             {"model": "torch model", "x": "array", "y": "array", "loss_fn": "torch loss",
              "optimizer": "torch optimizer", "batch_size": "count", "epochs": "count0", "metrics": "metric list",
              "shuffle": "flag", "accumulation_steps": "count"},
             lambda r: close(r, float(((torch_net(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean()),
                             rtol=1e-5),
             skip={"model": ("a torch optimizer",), "optimizer": ("a torch model",)}),
        Spec("training_log.TrainingLog", lambda **a: training_log.TrainingLog(**a).keys, {"keys": ("loss",)},
             {"keys": "key list"}, lambda r: r == ("loss",)),
        Spec("training_log.TrainingLog.add_batch",
             lambda **a: (lambda t: (t.add_batch(**a), t.batches[0].size)[1])(training_log.TrainingLog(("loss",))),
             {"epoch": 0, "step": 0, "size": 4, "batch": {"loss": 1.0}, "running": {"loss": 1.0}},
             {"epoch": "count0", "step": "count0", "size": "count", "batch": "values", "running": "values"},
             lambda r: r == 4),
        Spec("training_log.TrainingLog.series", lambda **a: log.series(**a).tolist(),
             {"key": "loss", "kind": "batch", "epoch": 1}, {"key": "text", "kind": "text", "epoch": "count0"},
             lambda r: r == [1.0, 2.0], optional=("epoch",)),
        Spec("checkpoints.save_training_state",
             lambda **a: checkpoints.save_training_state(**a).name,
             {"path": folder / "s.pt", "model": torch_net, "optimizer": torch_opt},
             {"path": "path", "model": "torch model", "optimizer": "torch optimizer"}, lambda r: r == "s.pt"),
        Spec("checkpoints.load_training_state", lambda **a: checkpoints.load_training_state(**a),
             {"path": saved, "model": torch_net, "optimizer": torch_opt, "restore_rng": True},
             {"path": "existing path", "model": "torch model", "optimizer": "torch optimizer",
              "restore_rng": "flag"},
             lambda r: r == {}),
        Spec("checkpoints.save_keras_training_state",
             lambda **a: checkpoints.save_keras_training_state(**a).name,
             {"path": folder / "s.npz", "model": keras_net, "optimizer": keras_net.optimizer},
             {"path": "path", "model": "keras model", "optimizer": "keras optimizer"}, lambda r: r == "s.npz",
             skip={"model": ("a Keras model with two inputs",)}),
        Spec("checkpoints.load_keras_training_state", lambda **a: checkpoints.load_keras_training_state(**a),
             {"path": keras_saved, "model": keras_net, "optimizer": keras_net.optimizer},
             {"path": "existing path", "model": "keras model", "optimizer": "keras optimizer"},
             lambda r: r == {}),
        Spec("gradients.torch_batch_gradients",
             lambda **a: gradients.torch_batch_gradients(**a)[1].tolist(),
             {"model": torch_net, "x": x, "y": y, "loss_fn": torch.nn.MSELoss(reduction="none"),
              "reduction": "mean", "layout": "torch"},
             {"model": "torch model", "x": "array", "y": "array", "reduction": "text", "layout": "text"},
             lambda r: close(r, [2 * float((torch_net(torch.from_numpy(x)) - torch.from_numpy(y)).mean())],
                             rtol=1e-5),
             skip={"x": ("torch meta",), "y": ("torch meta",)}),
        Spec("gradients.tf_batch_gradients", lambda **a: gradients.tf_batch_gradients(**a)[1].tolist(),
             {"model": keras_net, "x": x, "y": y, "loss_fn": mse_keras, "reduction": "mean"},
             {"model": "keras model", "x": "array", "y": "array", "reduction": "text"},
             lambda r: close(r, [2 * float(np.mean(keras_net.predict(x, verbose=0) - y))], rtol=1e-4),
             skip={"x": ("torch meta",), "y": ("torch meta",)}),
        Spec("gradients.flatten", lambda **a: gradients.flatten(**a).tolist(),
             {"gradients": [np.ones((2, 2)), np.zeros(3)]}, {"gradients": "gradients"},
             lambda r: r == [1.0] * 4 + [0.0] * 3, skip={"gradients": ("a list with NaN",)}),
        Spec("gradients.gradient_difference", gradients.gradient_difference,
             {"a": [np.ones(3)], "b": [np.ones(3) * 1.5]}, {"a": "gradients", "b": "gradients"},
             lambda r: close(r, 0.5) or close(r, 1 / 3)),
        Spec("tf_loop.train (metrics, weights, seed)", lambda **a: sorted(tf_loop.train(
                 keras_net, x, y, loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.0),
                 batch_size=4, epochs=1, **a).history),
             {"metrics": [keras.metrics.MeanSquaredError(name="m")], "weighted_metrics": [],
              "sample_weight": np.ones(8), "seed": 3},
             {"metrics": "keras metric list", "weighted_metrics": "keras metric list", "sample_weight": "array",
              "seed": "count0"}, lambda r: r == ["loss", "m"], optional=("sample_weight", "seed")),
        Spec("torch_loop.train (penalty, seed, metrics)", lambda **a: sorted(torch_loop.train(
                 torch_net, x, y, loss_fn=torch.nn.MSELoss(), optimizer=torch.optim.SGD(torch_net.parameters(),
                                                                                        lr=0.0),
                 batch_size=4, epochs=1, shuffle=True, **a).history),
             {"penalty": models.torch_l2_penalty(0.1, hidden_only=False), "seed": 3,
              "metrics": [metrics.MeanSquaredError(name="m")]},
             {"penalty": "penalty", "seed": "count0", "metrics": "callable metric list"},
             lambda r: r == ["loss", "m"], optional=("penalty", "seed"), summary=len),
        Spec("training_log.TrainingLog.end_epoch",
             lambda **a: (lambda t: (t.end_epoch(**a), t.history["loss"])[1])(training_log.TrainingLog(("loss",))),
             {"values": {"loss": 2.0}}, {"values": "values"}, lambda r: r == [2.0]),
        Spec("training_log.TrainingLog.sizes", lambda **a: log.sizes(**a).tolist(), {"epoch": 0},
             {"epoch": "count0"}, lambda r: r == [4, 1], optional=("epoch",)),
        Spec("plotting.plot_loss_and_accuracy (labels)",
             lambda **a: figure_axes(plotting.plot_loss_and_accuracy([0.5, 0.4], [0.8, 0.9], **a)),
             {"loss_label": "val loss", "accuracy_label": "val acc", "legend_loc": "center right", "title": "t"},
             {"loss_label": "text", "accuracy_label": "text", "legend_loc": "legend", "title": "text"},
             lambda r: r[0] >= 1, optional=("title",)),
        Spec("calibration.batch_accuracy_distribution (population)",
             lambda **a: calibration.batch_accuracy_distribution(0.5, 2, **a).tolist(),
             {"population": 4}, {"population": "count"}, lambda r: close(r, [1 / 6, 2 / 3, 1 / 6]),
             optional=("population",)),
        Spec("diagnose.diagnose (x)", lambda **a: diagnose.diagnose(values, values + 0.5, **a).mse,
             {"x": np.c_[values, -values]}, {"x": "array"}, lambda r: close(r, 0.25), optional=("x",),
             skip={"x": ("a scalar",)}, valid_alike={"x": ("two more axes",)}),
        Spec("models.keras_mlp (hidden)", lambda **a: len(models.keras_mlp(3, **a).layers),
             {"hidden": (4, 2)}, {"hidden": "widths"}, lambda r: r == 3),
        Spec("models.torch_mlp (hidden)", lambda **a: len(models.torch_mlp(3, **a)),
             {"hidden": (4, 2)}, {"hidden": "widths"}, lambda r: r == 5),
        Spec("gradients.torch_per_example_gradients",
             lambda **a: gradients.torch_per_example_gradients(**a)[1].shape,
             {"model": torch_net, "x": x, "y": y, "loss_fn": torch.nn.MSELoss(reduction="none"), "layout": "keras"},
             {"model": "torch model", "x": "array", "y": "array", "layout": "text"}, lambda r: r == (8, 1),
             skip={"x": ("torch meta",), "y": ("torch meta",)}),
        Spec("gradients.tf_per_example_gradients",
             lambda **a: gradients.tf_per_example_gradients(**a)[1].shape,
             {"model": keras_net, "x": x, "y": y, "loss_fn": mse_keras},
             {"model": "keras model", "x": "array", "y": "array"}, lambda r: r == (8, 1),
             skip={"x": ("torch meta",), "y": ("torch meta",)}),
        Spec("checkpoints.save_training_state (scheduler, generators, extra)",
             lambda **a: checkpoints.save_training_state(folder / "t.pt", model=torch_net, optimizer=torch_opt,
                                                         **a).name,
             {"scheduler": None, "generators": [torch.Generator()], "epoch": 3},
             {"scheduler": "scheduler", "generators": "generator list", "epoch": "extra"},
             lambda r: r == "t.pt", optional=("scheduler", "generators")),
        Spec("glue.reading_minutes", glue.reading_minutes, {"words": 2000, "lines": 250},
             {"words": "count0", "lines": "count0"}, lambda r: r == 55),
        Spec("reproducibility.seed_everything", lambda **a: reproducibility.seed_everything(**a),
             {"seed": 0, "deterministic": True}, {"seed": "count0", "deterministic": "flag"},
             lambda r: r is None),
    ]
    HOSTILE["keras metric list"] = lambda base: [
        ("a companion metric", [metrics.MeanSquaredError(name="c")], False), ("a string", "mse", False),
        ("a metric name in a list", ["mse"], False), ("None", None, False),
        ("two of one name", [keras.metrics.Mean(name="d"), keras.metrics.Mean(name="d")], False),
        ("named loss", [keras.metrics.Mean(name="loss")], False)]
    HOSTILE["callable metric list"] = lambda base: [
        ("a function returning a tensor", [lambda t, p: ((t - p) ** 2).mean()], True),
        ("a function returning a string", [lambda t, p: "good"], False),
        ("a function returning an array", [lambda t, p: (t - p).numpy()], False),
        ("a Keras metric", [keras.metrics.MeanSquaredError()], False), ("None", None, False),
        ("a string", "mse", False), ("an integer", [3], False)]
    HOSTILE["penalty"] = lambda base: [("a number", 0.1, False), ("a string", "l2", False),
                                       ("a tensor", _torch(0.1), False)]
    HOSTILE["legend"] = lambda base: [("a point", (0.5, 0.5), True), ("an unknown place", "middle", False),
                                      ("a number", 3, False), ("a point with NaN", (0.5, float("nan")), False),
                                      ("None", None, False)]
    HOSTILE["widths"] = lambda base: [("a list", list(base), True), ("numpy ints", np.array(base), True),
                                      ("zero", (0,), False), ("negative", (-4,), False), ("a float", (4.5,), False),
                                      ("a string", "4", False), ("a number", 4, False), ("None", None, False),
                                      ("a nested list", [[4]], False)]
    HOSTILE["scheduler"] = lambda base: [
        ("a scheduler of another optimizer", torch.optim.lr_scheduler.StepLR(
            torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), 2), False),
        ("an optimizer", torch_opt, False), ("a string", "cosine", False), ("a number", 3, False)]
    HOSTILE["generator list"] = lambda base: [
        ("a generator alone", torch.Generator(), False), ("a list with a seed", [3], False),
        ("a Python Random", [__import__("random").Random(0)], False), ("a string", "g", False),
        ("a dict of NumPy generators", {"order": np.random.default_rng(0)}, True)]
    HOSTILE["extra"] = lambda base: [("an object", object(), False), ("a set", {1, 2}, False),
                                     ("a NumPy array", np.zeros(2), False), ("bytes", b"\x00", False),
                                     ("a NumPy int", np.int64(3), True), ("a tensor", _torch(3), True)]
    HOSTILE["nonnegative"] = lambda base: numbers(base, low=0.0)
    HOSTILE["open fraction"] = lambda base: list(numbers(base, low=0.0, high=1.0)) + [
        ("0 (an end)", 0.0, False), ("1 (an end)", 1.0, False)]
    HOSTILE["open-high fraction"] = lambda base: list(numbers(base, low=0.0, high=1.0)) + [
        ("1 (the end)", 1.0, False)]
    HOSTILE["diagram field"] = lambda base: [
        ("list", base.tolist(), True), ("confidence or accuracy 2.0", np.array([np.nan, 2.0]), False),
        ("negative", np.array([np.nan, -1.0]), False), ("NaN in a filled bin", np.array([np.nan, np.nan]), False),
        ("a number in an empty bin", np.array([0.2, 0.8]), False), ("None", None, False),
        ("masked", _masked(base), False), ("strings", base.astype(str), False)]
    HOSTILE["key list"] = lambda base: [("a list", list(base), True), ("None", None, False),
                                        ("a string", "loss", False), ("empty name", ("",), False),
                                        ("repeated", ("loss", "loss"), False), ("a number", (3,), False)]
    HOSTILE["values"] = lambda base: [("a numpy float", {"loss": np.float32(base["loss"])}, True),
                                      ("a tensor", {"loss": _torch(base["loss"])}, True), ("None", None, False),
                                      ("missing key", {}, False), ("a string value", {"loss": "1"}, False),
                                      ("a list", [1.0], False), ("two values", {"loss": [1.0, 2.0]}, False)]
    return out


def explicit(folder: Path) -> list[Case]:
    """Cases the argument-by-argument expansion does not make: a reader's mistakes that span
    arguments. ``argument`` may name several ("model|x"): an error naming either is clear."""
    import keras
    import torch

    from companion import gradients, metrics, tf_loop

    inputs = [keras.Input((3,)), keras.Input((3,))]
    two_inputs = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(inputs)))
    x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)

    def mse(t, p):
        return keras.losses.mean_squared_error(t, p)

    def accuracy(*batch):
        metric = metrics.Accuracy()
        metric.update(*batch)
        return metric.result()

    return [
        Case("tf_loop.train", "model|x", "a model with two inputs, x a list of two arrays",
             lambda: tf_loop.train(two_inputs, [x, x], y, loss=keras.losses.MeanSquaredError(),
                                   optimizer=keras.optimizers.SGD(0.01), batch_size=4, epochs=1)),
        Case("gradients.tf_batch_gradients", "model|x", "a model with two inputs, x a list of two",
             lambda: gradients.tf_batch_gradients(two_inputs, [x, x], y, loss_fn=mse)),
        Case("metrics.Accuracy.update", "y_true", "torch labels beyond the classes",
             lambda: accuracy(torch.tensor([0, 7]), torch.tensor([[0.2, 0.8], [0.6, 0.4]]))),
        Case("metrics.Accuracy.update", "y_pred", "torch scores with NaN",
             lambda: accuracy(torch.tensor([0, 1]), torch.tensor([[0.2, float("nan")], [0.6, 0.4]]))),
        Case("metrics.Accuracy.update", "y_true", "uint64 labels >= 2**63 with class indices",
             lambda: accuracy(np.array([2**63 + 1, 1], dtype=np.uint64), np.array([1, 1]))),
    ]


def sweep(folder: Path | None = None) -> list[Case]:
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        cases = [case for spec in specs(folder) for case in expand(spec)] + explicit(folder)
        return [run(case) for case in cases]


def table(cases: list[Case]) -> dict:
    counts = Counter(case.outcome for case in cases)
    return {"tried": len(cases), **{k: counts.get(k, 0) for k in ("clear", "correct", "silent", "unclear")}}


def main() -> int:
    import companion

    cases = sweep()
    by_function = {}
    for case in cases:
        by_function.setdefault(case.function, []).append(case)
    print(f"companion from {Path(companion.__file__).parent}")
    print(f"{'function':45s} {'tried':>5} {'clear':>5} {'right':>5} {'silent':>6} {'unclear':>7}")
    for function, group in by_function.items():
        t = table(group)
        print(f"{function:45s} {t['tried']:5d} {t['clear']:5d} {t['correct']:5d} {t['silent']:6d} {t['unclear']:7d}")
    t = table(cases)
    print(f"{'all':45s} {t['tried']:5d} {t['clear']:5d} {t['correct']:5d} {t['silent']:6d} {t['unclear']:7d}")
    for case in cases:
        if case.outcome in ("silent", "unclear"):
            print(f"\n[{case.outcome}] {case.function}({case.argument or ''}: {case.kind})\n    {case.detail[:400]}")
    if "--clear" in sys.argv:
        for case in cases:
            if case.outcome == "clear":
                print(f"[clear] {case.function}({case.argument}: {case.kind}): {case.detail[:300]}")
    if len(sys.argv) > 1 and sys.argv[1].endswith(".json"):
        Path(sys.argv[1]).write_text(json.dumps(table(cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
