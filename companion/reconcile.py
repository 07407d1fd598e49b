"""Why the number a training run logged is not the loss of its trained model, part by part.

An epoch's logged loss averages the loss of each step ``t`` of the epoch, computed at the
weights ``w_t`` the step *started* from, in training mode (dropout on, batch statistics), with
the sample weights and the regularization penalty. The number a reader compares it with, here
``evaluated``, is the criterion's mean over the epoch's data at the weights the epoch *ended*
with, in inference mode, without weights or penalty. With ``s_t`` the step's share of the
epoch (its batch's share of the criterion's denominator: samples, or elements, tokens or class
weights for a loss that divides by those) the two are joined by a chain of measured numbers,
each step taken in this order (a path: taken in another order, the parts would differ):

    logged = A(reported)                                        the loop's own averaging rule
      averaging rule        A(reported) - sum_t s_t L_t         L_t: the step's loss, undivided
      penalty               sum_t s_t P_t(w_t)
      sample weighting      sum_t s_t [weighted_t - train_t](w_t)   the loss's own weights kept
      training loss vs criterion  sum_t s_t [train_t - criterion_t](w_t)   e.g. label smoothing
      training-mode layers  sum_t s_t [criterion_t - inference_t](w_t)   dropout, batch stats
      weights moved during the epoch  sum_t s_t [inference_t(w_t) - inference_t(w_end)]
      moving statistics     sum_t s_t [inference_t(w_end, m_t) - inference_t(w_end, m_end)]
    evaluated = sum_t s_t inference_t(w_end, m_end)             (the batches cover the data)

``m_t`` are the moving statistics (batch normalization's moving mean and variance) when step
``t`` began: the weights' movement is taken first, with the statistics held at ``m_t``, then
the statistics' own movement. Every term is measured (the step's own training-mode
prediction, an inference-mode pass at ``w_t`` before the step, passes at the epoch's end), so
``residual = logged - evaluated - sum(parts)`` checks three things at once: the averaging rule
reproduces the logged number, each step's loss is the penalty plus the weighted loss the tool
recomputed, and the batches covered the data once. Above ``TOLERANCE * max(1, |logged|)`` the
tools raise :class:`ReconciliationError` naming which of the three failed.

A part appears in ``parts`` when the run can have it: the four of every run (penalty, sample
weighting, training-mode layers, weights moved during the epoch), plus the averaging rule when
the loop does not average per sample, the criterion when the training loss differs from it
(label smoothing is removed from the criterion unless told otherwise), and the moving
statistics when the model has them. A metric has the same parts without a penalty or an
averaging rule (metrics are per-sample running means).

``val_loss`` against ``loss`` (:class:`ValidationGap`) runs the same chain on the validation
pass, whose weights are ``w_end``, and joins the two: each part is the training one minus the
validation one, and the difference of the two ``evaluated`` is the data's own part.

The API (all epochs of one run in one call):

- :func:`explain_fit(model, x, y, **fit_kwargs) <companion.reconcile_keras.explain_fit>`:
  Keras;
- :func:`explain_torch(model, x, y, loss_fn=, optimizer=, batch_size=, ...)
  <companion.reconcile_torch.explain_torch>`: the course's PyTorch loop;
- :class:`Recorder <companion.reconcile_torch.Recorder>`: the reader's own PyTorch loop, or a
  framework's callback.

Each returns (or builds) a :class:`Reconciliation` of the explained epoch, whose ``epochs``
hold every epoch, ``validation`` the gap to ``val_loss``, ``plot()`` the waterfall and
``to_dict()`` the numbers.

>>> r = decompose([Step(size=2, reported=1.5, penalty=0.5, weighted=1.0, train=1.0,
...                     criterion=1.0, inference=0.8, inference_end=0.6)],
...               logged=1.5, evaluated=0.6)
>>> {name: round(value, 6) for name, value in r.parts.items()}  # doctest: +NORMALIZE_WHITESPACE
{'penalty': 0.5, 'sample weighting': 0.0, 'training-mode layers': 0.2,
 'weights moved during the epoch': 0.2}
>>> abs(r.residual) < TOLERANCE
True
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from companion import _validation as check

__all__ = ["AVERAGES", "CORE_PARTS", "DATA_PART", "PARTS", "TOLERANCE", "Average", "History",
           "Reconciliation", "ReconciliationError", "Recorder", "Step", "ValidationGap",
           "average_rule", "check_residuals", "decompose", "decompose_metric", "explain_fit",
           "explain_torch", "moving_average", "validation_gap", "within_tolerance"]

PARTS = ("averaging rule", "penalty", "sample weighting", "training loss vs criterion",
         "training-mode layers", "weights moved during the epoch", "moving statistics")
# Every run can have these; the others appear when the run has their cause.
CORE_PARTS = ("penalty", "sample weighting", "training-mode layers",
              "weights moved during the epoch")
DATA_PART = "training vs validation data"

# Float32 sums over one epoch round at about 1e-7 of their size; more than ten times that is a
# measurement of something else than the step computed.
TOLERANCE = 1e-6

# One line per part for the table: what it is, then what to do about it.
_MEANING = {
    "averaging rule": "the steps were averaged {rule}, not per sample: keep a total and a "
                      "count",
    "penalty": "regularization is added to the training loss only; subtract it before "
               "comparing",
    "sample weighting": "sample_weight/class_weight weight the logged value; pass the same "
                        "weights",
    "training loss vs criterion": "the training loss is not the criterion ({criterion}); "
                                  "compare like with like",
    "training-mode layers": "dropout, noise and batch statistics act only in training; "
                            "compare in one mode",
    "weights moved during the epoch": "each step logged the weights it started from; evaluate "
                                      "after the epoch instead",
    "moving statistics": "batch normalization's moving statistics changed during the epoch; "
                         "inference uses the last",
    DATA_PART: "the two sets differ: what is left once training and measuring are the same",
}


# --- averaging rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Average:
    """How a loop turns its step losses into the number it logs: ``rule(values, sizes)``."""

    name: str
    rule: object  # (values: np.ndarray, sizes: np.ndarray) -> float

    def __call__(self, values, sizes) -> float:
        return float(self.rule(np.asarray(values, np.float64), np.asarray(sizes, np.float64)))


AVERAGES = {
    "mean": Average("as a mean of batch means", lambda v, n: v.mean()),
    "size-weighted": Average("weighted by batch size", lambda v, n: (n @ v) / n.sum()),
    "last": Average("as the last batch's loss", lambda v, n: v[-1]),
    "sum": Average("as a sum", lambda v, n: v.sum()),
}


def moving_average(beta: float) -> Average:
    """The rule ``m_1 = v_1; m_t = beta * m_(t-1) + (1 - beta) * v_t`` (a smoothed progress
    bar): pass it as ``average=``."""
    beta = check.fraction("beta", beta)

    def rule(values, sizes):
        smoothed = values[0]
        for value in values[1:]:
            smoothed = beta * smoothed + (1 - beta) * value
        return smoothed

    return Average(f"as a moving average (beta={beta:g})", rule)


def average_rule(average) -> Average:
    """``average`` as an :class:`Average`: one of :data:`AVERAGES`' names, an Average, or a
    callable ``f(values, sizes) -> float``."""
    if isinstance(average, Average):
        return average
    if isinstance(average, str):
        return AVERAGES[check.choice("average", average, tuple(AVERAGES))]
    check.function("average", average, "average(values, sizes) -> float, or one of "
                   f"{tuple(AVERAGES)}")
    return Average(f"by {getattr(average, '__name__', 'a custom rule')}", average)


def _rule_key(average: Average) -> str:
    return next((key for key, value in AVERAGES.items() if value == average), "custom")


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step (one forward pass) of an explained epoch, each term its batch's mean.

    ``reported`` is the loss the loop reported for the step (divided by ``divided_by`` if the
    loop divides, as for gradient accumulation), ``running`` the number its log showed after
    the step (NaN if unknown); ``count`` is the criterion's denominator over the batch (the
    samples, or the elements, tokens or class weights it divides by). The terms: ``penalty``
    and ``weighted`` (the training loss with sample weights) at the step's weights; ``train``
    the training loss unweighted; ``criterion`` the criterion on the same training-mode
    prediction; ``inference`` the criterion in inference mode at the step's weights;
    ``inference_end`` the same at the epoch's last weights with the step's moving statistics,
    and ``final`` with the last statistics too (NaN where not measured batch by batch).
    """

    size: int
    running: float = math.nan
    reported: float = math.nan
    divided_by: float = 1.0
    count: float = math.nan
    penalty: float = 0.0
    weighted: float = math.nan
    train: float = math.nan
    criterion: float = math.nan
    inference: float = math.nan
    inference_end: float = math.nan
    final: float = math.nan

    @property
    def replayed(self) -> float:
        """This step's loss as the tool recomputed it: penalty plus weighted loss, undivided."""
        return self.penalty + self.weighted


@dataclass
class History:
    """A log's per-epoch values, shaped like Keras' ``History``: ``history[key][epoch]``."""

    history: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reconciliation:
    """``logged = evaluated + sum(parts.values()) + residual`` for one epoch of one run.

    ``parts`` holds the run's parts in the order of :data:`PARTS`; ``metrics`` maps each logged
    metric's name to its own ``Reconciliation``; ``epoch`` is 0-based in ``history``; ``steps``
    holds the epoch's :class:`Step` records (loss only); ``epochs`` every epoch of the run
    (``epochs[k]``, on the result a tool returns); ``validation`` the :class:`ValidationGap`
    to this epoch's ``val_loss`` (None without validation data).

    ``evaluated`` never includes the penalty (``evaluated_includes_penalty`` is False);
    ``end_penalty`` is the penalty of the epoch's last weights, which Keras' ``evaluate()``
    adds. ``average`` names the loop's averaging rule, ``criterion`` what was evaluated.
    """

    logged: float
    evaluated: float
    parts: dict[str, float]
    residual: float
    history: object
    epoch: int
    metrics: dict[str, Reconciliation] = field(default_factory=dict)
    name: str = "loss"
    steps: tuple[Step, ...] = ()
    epochs: tuple[Reconciliation, ...] = ()
    validation: ValidationGap | None = None
    end_penalty: float = 0.0
    evaluated_includes_penalty: bool = False
    average: str = "weighted by batch size"
    criterion: str = "the training loss"
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.name} of epoch {self.epoch} (0-based): logged {self.logged:.4f} = "
                 f"evaluated {self.evaluated:.4f} + parts + residual",
                 "  evaluated: the epoch's last weights, inference mode, unweighted, "
                 "no penalty"]
        if self.end_penalty and self.name == "loss":
            lines.append(f"    (evaluate() adds the penalty of those weights, "
                         f"{self.end_penalty:.4f})")
        if self.criterion not in ("the training loss", "the metric"):
            lines += textwrap.wrap(f"criterion: {self.criterion}", 86, initial_indent="  ",
                                   subsequent_indent="    ")
        lines += _part_lines(self.parts, average=self.average, criterion=self.criterion)
        lines.append(f"  {'residual':<32}{_residual_words(self.residual, self.logged)}")
        for note in self.notes:
            lines += textwrap.wrap(f"note: {note}", 86, initial_indent="  ",
                                   subsequent_indent="    ")
        return "\n\n".join(["\n".join(lines), *(str(m) for m in self.metrics.values())])

    def plot(self, *, ax=None, title: str | None = None, xlabel: str | None = None):
        """The waterfall from ``evaluated`` to ``logged``, one bar per part, largest first;
        returns the matplotlib ``Axes`` (see :func:`companion.plotting.plot_reconciliation`)."""
        from companion.plotting import plot_reconciliation

        return plot_reconciliation(self, ax=ax, title=title, xlabel=xlabel)

    def to_dict(self) -> dict:
        """The numbers as plain JSON types; :meth:`from_dict` rebuilds an equal result, whose
        ``history`` is a :class:`History` holding ``history.history`` (the log's per-epoch
        values; a framework's History object and its callbacks are not kept)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("history", "metrics", "steps", "epochs", "validation")}
        data.update(
            parts=dict(self.parts), notes=list(self.notes),
            history=_plain(getattr(self.history, "history", {})),
            metrics={name: m.to_dict() for name, m in self.metrics.items()},
            steps=[{k: _number(v) for k, v in asdict(s).items()} for s in self.steps],
            epochs=[e.to_dict() for e in self.epochs],
            validation=None if self.validation is None else self.validation.to_dict())
        return {k: _number(v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> Reconciliation:
        """The result :meth:`to_dict` described; a dict of other keys is refused by name."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict from Reconciliation.to_dict(), got "
                            f"{type(data).__name__}")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"data must have the keys of Reconciliation.to_dict(): missing "
                             f"{sorted(names - set(data))}, unknown {sorted(set(data) - names)}")
        history = History({k: list(v) for k, v in data["history"].items()})
        values = {**data, "history": history, "notes": tuple(data["notes"]),
                  "parts": {k: float(v) for k, v in data["parts"].items()},
                  "metrics": {k: cls.from_dict(v) for k, v in data["metrics"].items()},
                  "steps": tuple(Step(**{k: _float(v) for k, v in s.items()})
                                 for s in data["steps"]),
                  "epochs": tuple(cls.from_dict(e) for e in data["epochs"])}
        for key in ("logged", "evaluated", "residual", "end_penalty"):
            values[key] = _float(data[key])
        if data["validation"] is not None:
            values["validation"] = ValidationGap.from_dict(data["validation"])
        return cls(**values)


@dataclass(frozen=True)
class ValidationGap:
    """``loss - val_loss = sum(parts.values()) + residual`` for one epoch.

    Each part is the training chain's part minus the validation pass's (``training`` and
    ``validation``, two :class:`Reconciliation`); the validation pass runs at the epoch's
    last weights, so its "weights moved" is 0, and the part :data:`DATA_PART` is the
    difference of the two ``evaluated``: what is left when training and measuring are the
    same on both sets.
    """

    loss: float
    val_loss: float
    parts: dict[str, float]
    residual: float
    epoch: int
    training: Reconciliation
    validation: Reconciliation

    def __str__(self) -> str:
        lines = [f"loss - val_loss of epoch {self.epoch} (0-based): {self.loss:.4f} - "
                 f"{self.val_loss:.4f} = {self.loss - self.val_loss:+.4f} = parts + residual"]
        lines += _part_lines(self.parts, average=self.training.average,
                             criterion=self.training.criterion)
        lines.append(f"  {'residual':<32}"
                     f"{_residual_words(self.residual, max(abs(self.loss), abs(self.val_loss)))}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = {"loss": self.loss, "val_loss": self.val_loss, "parts": dict(self.parts),
                "residual": self.residual, "epoch": self.epoch,
                "training": replace(self.training, epochs=(), validation=None).to_dict(),
                "validation": self.validation.to_dict()}
        return {k: _number(v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> ValidationGap:
        return cls(loss=_float(data["loss"]), val_loss=_float(data["val_loss"]),
                   parts={k: float(v) for k, v in data["parts"].items()},
                   residual=_float(data["residual"]), epoch=data["epoch"],
                   training=Reconciliation.from_dict(data["training"]),
                   validation=Reconciliation.from_dict(data["validation"]))


class ReconciliationError(RuntimeError):
    """The parts did not add up: ``result`` holds them, and the trained model's history."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


def _part_lines(parts, *, average, criterion) -> list[str]:
    lines = []
    for part, value in sorted(parts.items(), key=lambda item: -abs(item[1])):
        lines.append(f"  {part:<32}{value:+.4f}")
        meaning = _MEANING[part].format(rule=average, criterion=criterion)
        lines += ["    " + line for line in textwrap.wrap(meaning, 84)]
    return lines


def _residual_words(residual: float, logged: float) -> str:
    """The residual against the named tolerance, never its own size (which depends on the
    CPU's kernels, even whether it is exactly 0): below it is float rounding; above it, the
    tools raise."""
    bound = TOLERANCE * max(1.0, abs(logged))
    if abs(residual) <= bound:
        return f"below {TOLERANCE:g} x max(1, |logged|) (float rounding)"
    return f"{residual:+.3g}, above {TOLERANCE:g} x max(1, |logged|)"


def _number(value):
    """JSON has no NaN or infinity: they travel as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _float(value) -> float:
    return float(value) if isinstance(value, str) else value


def _plain(history: dict) -> dict:
    """A log's history as JSON: lists of Python floats."""
    return json.loads(json.dumps({str(k): [float(v) for v in values]
                                  for k, values in history.items()}, allow_nan=True))


# --- the arithmetic -------------------------------------------------------------------------


def decompose(steps, *, logged: float, evaluated: float, average="size-weighted",
              criterion_differs: bool = False, fixed_weights: bool = False,
              name: str = "loss", epoch: int = 0, history=None, **fields_) -> Reconciliation:
    """The loss's parts from an epoch's :class:`Step` records, by the chain of the module
    docstring; ``logged`` is the number the loop logged, ``evaluated`` the criterion's mean
    over the epoch's data at its last weights. ``fixed_weights``: a pass that does not train
    (validation), which has no weights-moved part. Does not raise: see
    :func:`check_residuals`."""
    average = average_rule(average)
    steps = tuple(steps)
    if not steps:
        raise ValueError("steps must hold at least one Step: the epoch ran no step")
    column = {f.name: np.array([getattr(s, f.name) for s in steps], dtype=np.float64)
              for f in fields(Step)}
    sizes, counts = column["size"], column["count"]
    counts = np.where(np.isnan(counts), sizes, counts)
    share = counts / counts.sum()
    undivided = column["reported"] * column["divided_by"]
    parts = {}
    if (average != AVERAGES["size-weighted"] or np.any(column["divided_by"] != 1)
            or not np.allclose(counts * sizes.sum(), sizes * counts.sum(), rtol=1e-12)):
        parts["averaging rule"] = average(column["reported"], sizes) - share @ undivided
    parts["penalty"] = share @ column["penalty"]
    parts["sample weighting"] = share @ (column["weighted"] - column["train"])
    if criterion_differs:
        parts["training loss vs criterion"] = share @ (column["train"] - column["criterion"])
    parts["training-mode layers"] = share @ (column["criterion"] - column["inference"])
    if fixed_weights:
        pass
    elif np.all(np.isnan(column["inference_end"])):  # measured over the data, not per batch
        parts["weights moved during the epoch"] = share @ column["inference"] - evaluated
    else:
        parts["weights moved during the epoch"] = share @ (column["inference"]
                                                           - column["inference_end"])
    if not fixed_weights and not np.all(np.isnan(column["final"])):
        parts["moving statistics"] = share @ (column["inference_end"] - column["final"])
    parts = {key: float(value) for key, value in parts.items()}
    return Reconciliation(logged=float(logged), evaluated=float(evaluated), parts=parts,
                          residual=float(logged) - float(evaluated) - sum(parts.values()),
                          history=history, epoch=epoch, name=name, steps=steps,
                          average=average.name, **fields_)


def decompose_metric(values: dict, *, name: str, epoch: int, history=None) -> Reconciliation:
    """A metric's parts from its value over each quantity of the chain: ``logged``,
    ``weighted`` (the training-mode predictions with sample weights, as the log computed it),
    ``train`` (unweighted), ``inference`` (at each step's weights), ``inference_end`` (the
    epoch's last weights, each step's moving statistics; optional), ``final`` (last weights and
    statistics, over the epoch's batches; optional) and ``evaluated`` (over the data)."""
    end = values.get("inference_end", values.get("final", values["evaluated"]))
    parts = {"sample weighting": values["weighted"] - values["train"],
             "training-mode layers": values["train"] - values["inference"],
             "weights moved during the epoch": values["inference"] - end}
    if "final" in values and "inference_end" in values:
        parts["moving statistics"] = values["inference_end"] - values["final"]
    parts = {key: float(value) for key, value in parts.items()}
    logged, evaluated = float(values["logged"]), float(values["evaluated"])
    return Reconciliation(logged=logged, evaluated=evaluated, parts=parts,
                          residual=logged - evaluated - sum(parts.values()), history=history,
                          epoch=epoch, name=name, average="per sample (a running mean)",
                          criterion="the metric")


def validation_gap(training: Reconciliation, validation: Reconciliation) -> ValidationGap:
    """``loss - val_loss`` from the training chain and the validation pass's chain."""
    names = [p for p in PARTS if p in training.parts or p in validation.parts]
    parts = {p: training.parts.get(p, 0.0) - validation.parts.get(p, 0.0) for p in names}
    parts[DATA_PART] = training.evaluated - validation.evaluated
    return ValidationGap(loss=training.logged, val_loss=validation.logged, parts=parts,
                         residual=training.residual - validation.residual,
                         epoch=training.epoch, training=training, validation=validation)


def within_tolerance(result) -> bool:
    """|residual| <= TOLERANCE * max(1, |logged|), for a Reconciliation or a ValidationGap."""
    scale = (result.logged if isinstance(result, Reconciliation)
             else max(abs(result.loss), abs(result.val_loss)))
    return abs(result.residual) <= TOLERANCE * max(1.0, abs(scale))


def check_residuals(result: Reconciliation, *, what: str = "the loop") -> None:
    """Raise :class:`ReconciliationError` if an epoch's loss, a metric or the validation gap
    does not add up, naming which measurement disagrees: the averaging rule, a step's loss,
    or the data the batches covered."""
    for epoch in result.epochs or (result,):
        failed = [r for r in (epoch, *epoch.metrics.values()) if not within_tolerance(r)]
        gap = epoch.validation
        if gap is not None and not within_tolerance(gap.validation):
            failed.append(gap.validation)
        if failed:
            raise ReconciliationError(_diagnosis(epoch, failed, what), result)


def _diagnosis(epoch: Reconciliation, failed, what: str) -> str:
    names = ", ".join(f"{r.name} (logged {r.logged:.7g}, "
                      f"{_residual_words(r.residual, r.logged)})" for r in failed)
    head = (f"could not reconcile epoch {epoch.epoch} (0-based): the parts of {names} leave "
            f"more than {TOLERANCE:g} * max(1, |logged|)")
    loss = next((r for r in failed if r.name in ("loss", "val_loss")), None)
    if loss is None or not loss.steps:
        return head + "; the loss adds up, so a metric's replay differs from the log"
    steps = loss.steps
    reported = np.array([s.reported for s in steps])
    sizes = np.array([s.size for s in steps], dtype=np.float64)
    rule = next(a for a in [*AVERAGES.values(), Average(loss.average, None)]
                if a.name == loss.average)
    if rule.rule is not None and not math.isnan(reported[0]):
        averaged = rule(reported, sizes)
        if abs(averaged - loss.logged) > TOLERANCE * max(1.0, abs(loss.logged)):
            matches = [key for key, a in AVERAGES.items()
                       if abs(a(reported, sizes) - loss.logged)
                       <= TOLERANCE * max(1.0, abs(loss.logged))]
            hint = (f"it matches average={matches[0]!r}" if matches else
                    "no rule of " + ", ".join(AVERAGES) + " matches: pass your own rule")
            return (f"{head}; {what} logged {loss.logged:.7g}, but averaging its reported step "
                    f"losses {loss.average} gives {averaged:.7g}: {hint}")
    for index, s in enumerate(steps):
        undivided = s.reported * s.divided_by
        if not math.isnan(undivided) and abs(undivided - s.replayed) > TOLERANCE * max(
                1.0, abs(undivided)):
            return (f"{head}; at step {index} {what} reported {s.reported:.7g}"
                    f"{'' if s.divided_by == 1 else f' (divided by {s.divided_by:g})'}, but "
                    f"its penalty plus its (weighted) loss recomputed give {s.replayed:.7g}: "
                    "declare the penalty, the sample weights or the division the step used")
    return (f"{head}; every step's loss and the averaging rule agree with the log, so the gap "
            "is in the measurements at the epoch's end: did the epoch's batches cover the "
            "data once?")


# --- the tools, from their framework's module (imported when first used) ---------------------

_TOOLS = {"explain_fit": "companion.reconcile_keras", "explain_torch": "companion.reconcile_torch",
          "Recorder": "companion.reconcile_torch"}


def __getattr__(name: str):
    if name in _TOOLS:
        import importlib

        return getattr(importlib.import_module(_TOOLS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
