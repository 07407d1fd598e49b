"""Figures that show where each logged number comes from.

>>> ax = plot_epoch_numbers(log, "loss", evaluations=[0.9, 0.8])  # doctest: +SKIP
"""

from __future__ import annotations

import numbers

import numpy as np

from companion import _validation as _check
from companion.calibration import ReliabilityDiagram, batch_accuracy_distribution
from companion.training_log import TrainingLog

__all__ = ["plot_epoch_numbers"]


def plot_epoch_numbers(log, key: str = "loss", *, evaluations=None, ax=None, title: str | None = None,
                       ylabel: str | None = None):
    """Per-batch values, the running epoch average, and (optionally) end-of-epoch evaluations.

    ``log`` is a :class:`companion.training_log.TrainingLog`; ``evaluations`` holds one number
    per epoch measured *after* the epoch (e.g. ``model.evaluate``), drawn at the epoch's end.
    Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    _check.instance("log", log, TrainingLog)
    _check_axes_and_text(ax, optional={"title": title, "ylabel": ylabel})
    if not isinstance(key, str) or key not in log.history:
        raise KeyError(f"key must be one of {tuple(log.history)}, got {key!r}")
    batch = log.series(key, kind="batch")
    running = log.series(key, kind="running")
    epochs = np.array([r.epoch for r in log.batches])
    num_epochs = len(log.history[key])
    if evaluations is not None:
        evaluations = _check.data_array("evaluations", evaluations, length=num_epochs,
                                        length_of="the log's epochs").astype(float)
        if evaluations.ndim != 1:
            raise ValueError(f"evaluations must hold one number per epoch, got shape {evaluations.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    steps = np.arange(1, len(batch) + 1)
    ax.plot(steps, batch, ".", color="0.6", label=f"batch {key} (this batch only)")
    for epoch in range(num_epochs):
        mask = epochs == epoch
        ax.plot(steps[mask], running[mask], "-", color="C0", label="running epoch average" if epoch == 0 else None)
    ends = np.array([steps[epochs == e][-1] for e in range(num_epochs)])
    ax.plot(ends, log.history[key], "o", color="C0", label=f"logged epoch {key} (History)")
    if evaluations is not None:
        ax.plot(ends, evaluations, "x", color="C3", markersize=9, mew=2, label="evaluated after the epoch")
    for end in ends[:-1]:
        ax.axvline(end + 0.5, color="0.85", lw=1, zorder=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel or key)
    ax.set_title(title or f"Where the logged {key} comes from")
    ax.legend(fontsize=8)
    return ax


# --- Chapter 3: mini-batch loss vs accuracy -------------------------------------------------------

__all__ += [
    "plot_batch_accuracy_histogram",
    "plot_loss_and_accuracy",
    "plot_loss_vs_margin",
    "plot_reliability_diagram",
]


def plot_loss_vs_margin(margins, losses, *, num_classes: int, ax=None, title: str | None = None):
    """Per-sample cross-entropy against the margin, with its two bounds and the 0-1 error step.

    ``margins`` are true-class logit minus the best other logit (:func:`companion.calibration.margins`),
    ``losses`` the per-sample cross-entropies in nats. Every point lies between
    ``log(1 + exp(-m))`` (one rival class, the others far below) and ``log(1 + (C - 1) exp(-m))``
    (all ``C - 1`` rivals tied); the 0-1 error is 1 left of 0 and 0 right of it. Returns the ``Axes``.

    >>> ax = plot_loss_vs_margin([2.0, -1.0], [0.2, 1.5], num_classes=10)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    margins = _check.data_array("margins", margins).astype(float)
    losses = _check.data_array("losses", losses, length=len(margins), length_of="margins").astype(float)
    if margins.ndim != 1 or losses.ndim != 1:
        raise ValueError(f"margins and losses must be 1-D, got shapes {margins.shape} and {losses.shape}")
    num_classes = _check.integer("num_classes", num_classes, minimum=2)
    _check_axes_and_text(ax, optional={"title": title})
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    reach = max(1.0, float(np.max(np.abs(margins))))
    grid = np.linspace(-reach, reach, 400)
    ax.plot(margins, losses, ".", color="0.55", alpha=0.6, label="one sample's cross-entropy")
    ax.plot(grid, np.logaddexp(0.0, -grid), "-", color="C0",
            label=r"lower bound $\log(1 + e^{-m})$: one rival class")
    ax.plot(grid, np.logaddexp(0.0, np.log(num_classes - 1) - grid), "--", color="C0",
            label=rf"upper bound $\log(1 + {num_classes - 1}\,e^{{-m}})$: all rivals tied")
    ax.step([-reach, 0.0, reach], [1.0, 0.0, 0.0], where="post", color="C3", lw=2,
            label="0-1 error (1 = wrong): what accuracy counts")
    ax.axvline(0.0, color="0.8", lw=1, zorder=0)
    ax.set_xlabel("margin m = true-class logit − best other logit (logit units)")
    ax.set_ylabel("per-sample loss (nats) / 0-1 error")
    ax.set_title(title or "Cross-entropy is a smooth function of the margin; accuracy is a step")
    ax.legend(fontsize=8)
    return ax


def plot_batch_accuracy_histogram(batch_accuracies, *, batch_size: int, accuracy: float,
                                  population: int | None = None, ax=None, title: str | None = None):
    """How often each batch accuracy k / B occurred, next to the count the binomial predicts.

    ``batch_accuracies`` are measured on batches of ``batch_size`` samples from a fixed model
    whose accuracy on the whole set is ``accuracy``; with ``population`` the prediction is the
    exact hypergeometric one for batches of distinct samples (see
    :func:`companion.calibration.batch_accuracy_distribution`). Returns the ``Axes``.

    >>> ax = plot_batch_accuracy_histogram([0.75, 1.0, 0.75], batch_size=4, accuracy=0.8)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    values = _check.data_array("batch_accuracies", batch_accuracies).astype(float)
    batch_size = _check.positive_int("batch_size", batch_size)
    accuracy = _check.fraction("accuracy", accuracy)
    _check_axes_and_text(ax, optional={"title": title})
    hits = values * batch_size
    if values.ndim != 1 or np.any(np.abs(hits - np.round(hits)) > 1e-6) or np.any((values < 0) | (values > 1)):
        raise ValueError(f"batch_accuracies must be a 1-D array of fractions k / batch_size "
                         f"(batch_size={batch_size}), got shape {values.shape} with values such as {values[:3]}")
    expected = batch_accuracy_distribution(accuracy, batch_size, population=population) * len(values)
    observed = np.bincount(np.round(hits).astype(int), minlength=batch_size + 1)
    fractions = np.arange(batch_size + 1) / batch_size
    sigma = np.sqrt(accuracy * (1 - accuracy) / batch_size)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    ax.bar(fractions, observed, width=0.8 / batch_size, color="0.7", label=f"measured ({len(values)} batches)")
    kind = "hypergeometric" if population is not None else "binomial"
    ax.plot(fractions, expected, "o-", color="C0", ms=4, label=f"{kind} prediction, p = {accuracy:.4f}, B = {batch_size}")
    for side in (-1, 1):
        ax.axvline(accuracy + side * sigma, color="C3", ls=":", label=r"$p \pm \sqrt{p(1-p)/B}$" if side < 0 else None)
    shown = expected >= 0.05  # outcomes expected at least once in twenty such runs
    low, high = fractions[shown].min(), fractions[shown].max()
    ax.set_xlim(min(low, values.min()) - 1.0 / batch_size, max(high, values.max()) + 1.0 / batch_size)
    ax.set_xlabel(f"batch accuracy (fraction of the {batch_size} samples classified correctly)")
    ax.set_ylabel("number of batches")
    ax.set_title(title or "Batch accuracies of one fixed model scatter as the binomial predicts")
    ax.legend(fontsize=8)
    return ax


def plot_loss_and_accuracy(loss, accuracy, *, mark_epoch: int | None = None, ax=None, title: str | None = None,
                           loss_label: str = "validation loss", accuracy_label: str = "validation accuracy",
                           legend_loc: str = "center right"):
    """A loss curve (left axis) and an accuracy curve (right axis) over epochs.

    ``mark_epoch`` (0-based) draws a vertical line, e.g. at the epoch of lowest loss;
    ``legend_loc`` is a matplotlib legend location. Returns the left ``Axes``; the right one is
    ``ax.right_axis``.

    >>> ax = plot_loss_and_accuracy([0.5, 0.4, 0.45], [0.8, 0.85, 0.86], mark_epoch=1)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    loss = _check.data_array("loss", loss).astype(float)
    accuracy = _check.data_array("accuracy", accuracy, length=len(loss), length_of="loss").astype(float)
    if loss.ndim != 1 or accuracy.ndim != 1:
        raise ValueError(f"loss and accuracy must be 1-D, one value per epoch, got shapes {loss.shape} and {accuracy.shape}")
    if mark_epoch is not None:
        mark_epoch = _check.non_negative_int("mark_epoch", mark_epoch)
        if mark_epoch >= len(loss):
            raise ValueError(f"mark_epoch must be below the number of epochs ({len(loss)}), got {mark_epoch}")
    _check_axes_and_text(ax, optional={"title": title},
                         required={"loss_label": loss_label, "accuracy_label": accuracy_label})
    _check_legend_location("legend_loc", legend_loc)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    epochs = np.arange(1, len(loss) + 1)
    right = ax.twinx()
    ax.plot(epochs, loss, "-", color="C0", label=loss_label)
    right.plot(epochs, accuracy, "-", color="C1", label=accuracy_label)
    if mark_epoch is not None:
        ax.axvline(mark_epoch + 1, color="0.5", ls=":", label=f"lowest {loss_label} (epoch {mark_epoch + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{loss_label} (nats per sample)", color="C0")
    right.set_ylabel(f"{accuracy_label} (fraction correct)", color="C1")
    ax.set_title(title or f"{loss_label.capitalize()} and {accuracy_label} over training")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc=legend_loc)
    ax.right_axis = right
    return ax


def plot_reliability_diagram(diagram, *, ax=None, title: str | None = None, label: str = "accuracy in bin"):
    """Bars of per-bin accuracy against confidence, the diagonal of perfect calibration, and the ECE.

    ``diagram`` is a :class:`companion.calibration.ReliabilityDiagram`. Bars below the diagonal
    are bins where the model is over-confident; each bar is labelled with its sample count.
    Returns the ``Axes``.

    >>> from companion.calibration import reliability_diagram
    >>> diagram = reliability_diagram([0, 1], [[0.9, 0.1], [0.8, 0.2]])
    >>> ax = plot_reliability_diagram(diagram)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    _check.instance("diagram", diagram, ReliabilityDiagram)
    _check_axes_and_text(ax, optional={"title": title}, required={"label": label})
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    edges = np.asarray(diagram.bin_edges)
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = np.asarray(diagram.count) > 0
    ax.bar(centers[filled], np.asarray(diagram.accuracy)[filled], width=widths[filled] * 0.9, color="C0",
           alpha=0.8, label=label)
    ax.plot(np.asarray(diagram.confidence)[filled], np.asarray(diagram.accuracy)[filled], "o", color="C3", ms=4,
            label="(mean confidence, accuracy) of the bin")
    ax.plot([0, 1], [0, 1], "--", color="0.4", label="perfect calibration")
    for x, y, n in zip(centers[filled], np.asarray(diagram.accuracy)[filled], np.asarray(diagram.count)[filled]):
        ax.annotate(str(int(n)), (x, y), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"confidence: top-class probability (bins of width {widths[0]:.2g})")
    ax.set_ylabel("accuracy in the bin (fraction correct)")
    ax.set_title(title or f"Reliability diagram, ECE = {diagram.ece:.4f}")
    ax.legend(fontsize=8, loc="upper left")
    return ax


# --- Chapter 6: reconcile a run ----------------------------------------------------------------

__all__ += ["plot_reconciliation"]


def plot_reconciliation(result, *, ax=None, title: str | None = None, xlabel: str | None = None):
    """The waterfall from ``evaluated`` to ``logged`` of a :class:`companion.reconcile.Reconciliation`.

    The grey bar is ``evaluated``; each part, largest first, starts where the previous bar
    ended (red adds, blue takes away); the dark bar is ``logged``, where the last part ends
    (up to the residual, float rounding). Returns the ``Axes``.

    >>> ax = plot_reconciliation(explain_fit(model, x, y))  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from companion.reconcile import Reconciliation

    _check.instance("result", result, Reconciliation)
    _check_axes_and_text(ax, optional={"title": title, "xlabel": xlabel})
    bars = [("evaluated", result.evaluated)] + sorted(result.parts.items(),
                                                      key=lambda item: -abs(item[1]))
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.4))
    ends = np.cumsum([value for _, value in bars])
    span = max(abs(result.logged), *np.abs(ends), 1e-12)
    start = 0.0
    for row, (name, value) in enumerate(bars):
        color = "0.6" if row == 0 else ("tab:red" if value > 0 else "tab:blue")
        ax.barh(row, value, left=start, color=color)
        start += value
        label = f"{value:.4f}" if row == 0 else f"{value:+.4f}"
        ax.text(max(start, start - value) + 0.01 * span, row, label, va="center", fontsize=8)
    ax.barh(len(bars), result.logged, color="0.3")
    ax.text(result.logged + 0.01 * span, len(bars), f"{result.logged:.4f}", va="center",
            fontsize=8)
    low = min(0.0, *ends, result.logged)
    ax.set_xlim(low - 0.05 * span if low < 0 else 0.0, 1.15 * span)
    ax.set_yticks(range(len(bars) + 1), [name for name, _ in bars] + ["logged"])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel or result.name)
    ax.set_title(title or f"From the epoch's last weights to the logged {result.name}, "
                          "part by part")
    return ax


def _check_axes_and_text(ax, *, optional: dict, required: dict | None = None) -> None:
    """Refuse by name an ``ax`` that is no Matplotlib ``Axes``, and titles and labels that are no
    str (``optional`` ones may be None)."""
    from matplotlib.axes import Axes

    if ax is not None:
        _check.instance("ax", ax, Axes)
    for name, text in {**optional, **(required or {})}.items():
        if not isinstance(text, str) and not (text is None and name in optional):
            allowed = "a str or None" if name in optional else "a str"
            raise TypeError(f"{name} must be {allowed}, got {type(text).__name__}: {text!r}")


def _check_legend_location(name: str, location) -> None:
    """A location Matplotlib's ``legend(loc=...)`` takes: a name such as "best", or a point (x, y)."""
    from matplotlib.legend import Legend

    point = isinstance(location, tuple) and len(location) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in location)
    if not point and not (isinstance(location, str) and location in Legend.codes):
        raise ValueError(f"{name} must be one of {tuple(Legend.codes)} or a point (x, y) in axes "
                         f"coordinates, got {location!r}")
