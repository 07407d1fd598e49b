"""companion.plotting: the figures of the chapters, the data they draw, and their errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests draw off-screen; notebooks keep their inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Case, Expect, array_cases, arrays_valid_and_invalid,  # noqa: E402
                      assert_rejected, at_most_one_broken, classify, close, not_a_fraction, not_a_positive_int,
                      numbers_valid_and_invalid, objects_valid_and_invalid, poisoned)
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from companion.calibration import batch_accuracy_distribution, reliability_diagram  # noqa: E402
from companion.plotting import (plot_batch_accuracy_histogram, plot_epoch_numbers,  # noqa: E402
                                plot_loss_and_accuracy, plot_loss_vs_margin, plot_reliability_diagram)
from companion.training_log import TrainingLog  # noqa: E402

@pytest.fixture(autouse=True)
def close_figures():
    # Also after a call that wrongly accepts its input and draws: the failure is the report.
    yield
    plt.close("all")


def labelled(ax):
    return bool(ax.get_title()) and bool(ax.get_xlabel()) and bool(ax.get_ylabel())


# ---------------------------------------------------------------- the figures


def test_plot_epoch_numbers_draws_every_series(two_epoch_log):
    ax = plot_epoch_numbers(two_epoch_log, "loss", evaluations=[1.0, 2.0], ylabel="loss")
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["batch loss (this batch only)", "running epoch average",
                      "logged epoch loss (History)", "evaluated after the epoch"]
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss"


def test_loss_vs_margin_draws_points_bounds_and_step():
    ax = plot_loss_vs_margin([2.0, -1.0, 0.5], [0.2, 1.5, 0.6], num_classes=10)
    assert labelled(ax)
    points, lower, upper, step = ax.lines[:4]
    np.testing.assert_allclose(points.get_xdata(), [2.0, -1.0, 0.5])
    grid = lower.get_xdata()
    np.testing.assert_allclose(lower.get_ydata(), np.log1p(np.exp(-grid)))
    np.testing.assert_allclose(upper.get_ydata(), np.log1p(9 * np.exp(-grid)))
    assert set(step.get_ydata()) == {0.0, 1.0}


@pytest.mark.parametrize("kwargs, error, words", [
    ({"margins": [1.0, 2.0], "losses": [0.1], "num_classes": 10}, ValueError, "losses"),
    ({"margins": [1.0], "losses": [0.1], "num_classes": 1}, ValueError, "num_classes"),
    ({"margins": [[1.0]], "losses": [[0.1]], "num_classes": 3}, ValueError, "1-D"),
    ({"margins": [1.0], "losses": [np.nan], "num_classes": 3}, ValueError, "losses"),
])
def test_loss_vs_margin_bad_input(kwargs, error, words):
    with pytest.raises(error, match=words):
        plot_loss_vs_margin(**kwargs)


def test_batch_accuracy_histogram_counts_every_outcome():
    values = np.array([3, 4, 4, 2, 4, 3]) / 4
    ax = plot_batch_accuracy_histogram(values, batch_size=4, accuracy=0.8)
    assert labelled(ax)
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_array_equal(heights, [0, 0, 1, 2, 3])
    expected = ax.lines[0].get_ydata()
    np.testing.assert_allclose(expected, batch_accuracy_distribution(0.8, 4) * len(values))


def test_batch_accuracy_histogram_with_a_population_uses_the_hypergeometric():
    ax = plot_batch_accuracy_histogram([0.5, 1.0], batch_size=2, accuracy=0.5, population=4)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [2 / 6, 8 / 6, 2 / 6])
    assert "hypergeometric" in ax.lines[0].get_label()


@pytest.mark.parametrize("values", [[0.3], [1.25], [[0.5]]])
def test_batch_accuracy_histogram_refuses_values_that_are_not_k_over_b(values):
    with pytest.raises(ValueError, match="batch_accuracies"):
        plot_batch_accuracy_histogram(values, batch_size=4, accuracy=0.5)


def test_loss_and_accuracy_has_two_axes_and_a_marker():
    ax = plot_loss_and_accuracy([0.5, 0.4, 0.45], [0.8, 0.85, 0.86], mark_epoch=1)
    assert labelled(ax) and ax.right_axis.get_ylabel()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 0.4, 0.45])
    np.testing.assert_allclose(ax.right_axis.lines[0].get_ydata(), [0.8, 0.85, 0.86])
    assert ax.lines[1].get_xdata()[0] == 2  # epochs are drawn 1-based


@pytest.mark.parametrize("kwargs, error, words", [
    ({"loss": [0.5, 0.4], "accuracy": [0.8]}, ValueError, "accuracy"),
    ({"loss": [0.5, 0.4], "accuracy": [0.8, 0.9], "mark_epoch": 2}, ValueError, "mark_epoch"),
    ({"loss": [0.5, 0.4], "accuracy": [0.8, 0.9], "mark_epoch": -1}, ValueError, "mark_epoch"),
])
def test_loss_and_accuracy_bad_input(kwargs, error, words):
    with pytest.raises(error, match=words):
        plot_loss_and_accuracy(**kwargs)


def test_reliability_diagram_draws_one_bar_per_filled_bin():
    diagram = reliability_diagram([0, 1, 1, 0], [[0.9, 0.1], [0.7, 0.3], [0.35, 0.65], [0.25, 0.75]], num_bins=5)
    ax = plot_reliability_diagram(diagram)
    assert labelled(ax) and f"{diagram.ece:.4f}" in ax.get_title()
    heights = sorted(bar.get_height() for bar in ax.patches)
    np.testing.assert_allclose(heights, [1 / 3, 1.0])


def test_reliability_diagram_needs_a_diagram():
    with pytest.raises(TypeError, match="diagram"):
        plot_reliability_diagram({"ece": 0.1})


# ---------------------------------------------------------------- bad input, drawn by Hypothesis

CURVE = np.array([0.5, 0.4, 0.45, 0.42])


def lone_array_cases(reference: np.ndarray, name: str):
    """Bad versions of an array that has no partner to match in length: empty or non-finite."""
    return st.one_of(st.tuples(st.just(name), st.just(reference[:0])), st.tuples(st.just(name), poisoned(reference)))


@BAD_INPUT_SETTINGS
@given(case=st.one_of(array_cases(CURVE, "loss"), array_cases(CURVE, "accuracy"),
                      st.tuples(st.just("mark_epoch"), st.one_of(st.integers(max_value=-1), st.integers(min_value=4),
                                                                 st.floats(), st.text(max_size=2)))))
def test_plot_loss_and_accuracy_rejects_bad_input(case):
    arguments = {"loss": CURVE, "accuracy": CURVE + 0.3, "mark_epoch": None}
    name, value = case
    arguments[name] = value
    assert_rejected(lambda: plot_loss_and_accuracy(**arguments), name)


@BAD_INPUT_SETTINGS
@given(case=st.one_of(array_cases(CURVE, "margins"), array_cases(CURVE, "losses"),
                      st.tuples(st.just("num_classes"), not_a_positive_int)))
def test_plot_loss_vs_margin_rejects_bad_input(case):
    arguments = {"margins": CURVE, "losses": CURVE, "num_classes": 10}
    name, value = case
    arguments[name] = value
    # A length mismatch is reported against the first array: either name may appear.
    with pytest.raises((ValueError, TypeError)) as error:
        plot_loss_vs_margin(arguments.pop("margins"), arguments.pop("losses"), **arguments)
    names = ("margins", "losses") if name in ("margins", "losses") else (name,)
    assert any(n in str(error.value) for n in names), str(error.value)


@BAD_INPUT_SETTINGS
@given(case=st.one_of(lone_array_cases(np.array([0.75, 1.0, 0.75, 0.5]), "batch_accuracies"),
                      st.tuples(st.just("batch_size"), not_a_positive_int),
                      st.tuples(st.just("accuracy"), not_a_fraction.filter(lambda v: v not in (0, 1)))))
def test_plot_batch_accuracy_histogram_rejects_bad_input(case):
    arguments = {"batch_accuracies": np.array([0.75, 1.0, 0.75, 0.5]), "batch_size": 4, "accuracy": 0.8}
    name, value = case
    arguments[name] = value
    assert_rejected(lambda: plot_batch_accuracy_histogram(arguments.pop("batch_accuracies"), **arguments), name)


@BAD_INPUT_SETTINGS
@given(key=st.text(max_size=4).filter(lambda k: k != "loss"),
       evaluations=st.one_of(st.none(), st.sampled_from([0, 1, 3]).map(lambda n: [0.5] * n), st.just([np.nan, 0.5]),
                             st.just([[0.5], [0.5]]), st.just(["a", "b"])))
def test_plot_epoch_numbers_rejects_bad_keys_and_evaluations(key, evaluations):
    log = TrainingLog(keys=("loss",))
    for epoch in range(2):
        log.add_batch(epoch=epoch, step=0, size=4, batch={"loss": 1.0}, running={"loss": 1.0})
        log.add_batch(epoch=epoch, step=1, size=1, batch={"loss": 2.0}, running={"loss": 1.2})
        log.end_epoch({"loss": 1.2})
    with pytest.raises(KeyError, match="key must be one of"):
        plot_epoch_numbers(log, key)
    if evaluations is not None:  # not one finite number per epoch
        assert_rejected(lambda: plot_epoch_numbers(log, "loss", evaluations=evaluations), "evaluations")
    assert_rejected(lambda: plot_epoch_numbers(log.history, "loss"), "log")


# ---------------------------------------------------------------- every input, valid or not (issue 15)
#
# A figure is correct when it draws the numbers it was given (read back from the Axes) and renders
# (canvas.draw(), which is where Matplotlib meets NaN, inf and huge values).

TITLES = objects_valid_and_invalid(valid={"None": None, "a str": "A title"}, invalid={"an int": 3, "bytes": b"t"})
AXES = objects_valid_and_invalid(valid={"None": None, "an Axes": "axes"}, invalid={"a Figure": "figure", "a str": "ax"})


def _axes(case):
    """The Axes (or Figure) a case of AXES stands for, made fresh for each example."""
    if case.value in ("axes", "figure"):
        figure, ax = plt.subplots(figsize=(4, 3), dpi=40)
        return ax if case.value == "axes" else figure
    return case.value


def _drawn(ax, cases):
    """The Axes, rendered where a case holds huge values: errors that only rendering finds come
    out here. (Rendering every example would take 0.2 s each.)"""
    if any(case.kind == "huge" for case in cases.values()):
        ax.figure.set_size_inches(4, 3)
        ax.figure.set_dpi(40)
        ax.figure.canvas.draw()
    return ax


def _common(e, ax, title):
    e.object("ax", ax), e.object("title", title)


@INPUT_SETTINGS
@given(cases=at_most_one_broken(
    log=objects_valid_and_invalid(valid={"two epochs": "log"}, invalid={"its history": "history", "None": None}),
    key=objects_valid_and_invalid(valid={"loss": "loss", "mse": "mse"}, invalid={"other": "acc", "None": None}),
    evaluations=st.one_of(st.just(Case(None, "valid: None")), arrays_valid_and_invalid(np.array([0.9, 0.8]))),
    ax=AXES, title=TITLES))
def test_inputs_plot_epoch_numbers(two_epoch_log, cases):
    log, key, evaluations, ax, title = cases.values()
    value = {"log": two_epoch_log, "history": two_epoch_log.history}.get(log.value)

    def expected():
        e = Expect()
        e.object("log", log), e.object("key", key), _common(e, ax, title)
        values = e.array("evaluations", evaluations, ndim=(1,), length=2, optional=True)
        e.done()
        return two_epoch_log.series(key.value), values

    def agree(ax, want):
        batch, evaluations_ = want
        drawn = [line.get_ydata() for line in ax.lines]
        return close(drawn[0], batch) and (evaluations_ is None or any(
            len(y) == 2 and close(y, evaluations_) for y in drawn[1:]))

    try:
        classify("plotting.plot_epoch_numbers", lambda: _drawn(plot_epoch_numbers(
            value, key.value, evaluations=evaluations.value, ax=_axes(ax), title=title.value), cases), expected, agree=agree)
    finally:
        plt.close("all")


@INPUT_SETTINGS
@given(cases=at_most_one_broken(margins=arrays_valid_and_invalid(np.array([2.0, -1.0, 0.5])),
                                losses=arrays_valid_and_invalid(np.array([0.2, 1.5, 0.4])),
                                num_classes=numbers_valid_and_invalid(10, huge=10**6), ax=AXES, title=TITLES))
def test_inputs_plot_loss_vs_margin(cases):
    margins, losses, num_classes, ax, title = cases.values()

    def expected():
        e = Expect()
        m, loss = e.array("margins", margins, ndim=(1,)), e.array("losses", losses, ndim=(1,))
        e.count("num_classes", num_classes, minimum=2), _common(e, ax, title)
        e.done()
        e.need(len(m) == len(loss), "margins", "losses")
        e.done()
        return m, loss

    try:
        classify("plotting.plot_loss_vs_margin", lambda: _drawn(plot_loss_vs_margin(
            margins.value, losses.value, num_classes=num_classes.value, ax=_axes(ax), title=title.value), cases), expected,
            agree=lambda ax, want: close((ax.lines[0].get_xdata(), ax.lines[0].get_ydata()), want))
    finally:
        plt.close("all")


@INPUT_SETTINGS
@given(cases=at_most_one_broken(batch_accuracies=arrays_valid_and_invalid(np.array([0.75, 1.0, 0.75, 0.5])),
                                batch_size=numbers_valid_and_invalid(4, huge=4000),
                                accuracy=numbers_valid_and_invalid(0.8),
                                population=st.one_of(st.just(Case(None, "valid: None")),
                                                     numbers_valid_and_invalid(40, huge=10**5)),
                                ax=AXES, title=TITLES))
def test_inputs_plot_batch_accuracy_histogram(cases):
    values, batch_size, accuracy, population, ax, title = cases.values()

    def expected():
        e = Expect()
        v, b = e.array("batch_accuracies", values, ndim=(1,)), e.count("batch_size", batch_size)
        p, n = e.number("accuracy", accuracy, low=0, high=1), e.count("population", population, optional=True)
        _common(e, ax, title)
        e.done()
        hits = v * b
        e.need((np.abs(hits - np.round(hits)) <= 1e-6).all() and ((v >= 0) & (v <= 1)).all(), "batch_accuracies")
        e.need(n is None or n >= b, "population")
        e.done()
        return np.bincount(np.round(hits).astype(int), minlength=b + 1), batch_accuracy_distribution(
            p, b, population=n) * len(v)

    def agree(ax, want):
        observed, expected_ = want
        return close([bar.get_height() for bar in ax.patches], observed) and close(ax.lines[0].get_ydata(), expected_)

    try:
        classify("plotting.plot_batch_accuracy_histogram", lambda: _drawn(plot_batch_accuracy_histogram(
            values.value, batch_size=batch_size.value, accuracy=accuracy.value, population=population.value,
            ax=_axes(ax), title=title.value), cases), expected, agree=agree)
    finally:
        plt.close("all")


@INPUT_SETTINGS
@given(cases=at_most_one_broken(
    loss=arrays_valid_and_invalid(np.array([0.5, 0.4, 0.45])), accuracy=arrays_valid_and_invalid(np.array([0.8, 0.85, 0.86])),
    mark_epoch=st.one_of(st.just(Case(None, "valid: None")), numbers_valid_and_invalid(1, huge=3)),
    legend_loc=objects_valid_and_invalid(valid={"center right": "center right", "best": "best", "a point": (1.02, 0.5)},
                                         invalid={"middle": "middle", "None": None, "a triple": (1, 2, 3)}),
    loss_label=objects_valid_and_invalid(valid={"a str": "loss"}, invalid={"None": None, "an int": 3}),
    ax=AXES, title=TITLES))
def test_inputs_plot_loss_and_accuracy(cases):
    loss, accuracy, mark_epoch, legend_loc, loss_label, ax, title = cases.values()

    def expected():
        e = Expect()
        curve, acc = e.array("loss", loss, ndim=(1,)), e.array("accuracy", accuracy, ndim=(1,))
        mark = e.count("mark_epoch", mark_epoch, minimum=0, optional=True)
        e.object("legend_loc", legend_loc), e.object("loss_label", loss_label), _common(e, ax, title)
        e.done()
        e.need(len(acc) == len(curve), "loss", "accuracy")
        e.need(mark is None or mark < len(curve), "mark_epoch")
        e.done()
        return curve, acc

    try:
        classify("plotting.plot_loss_and_accuracy", lambda: _drawn(plot_loss_and_accuracy(
            loss.value, accuracy.value, mark_epoch=mark_epoch.value, legend_loc=legend_loc.value,
            loss_label=loss_label.value, ax=_axes(ax), title=title.value), cases), expected,
            agree=lambda ax, want: close((ax.lines[0].get_ydata(), ax.right_axis.lines[0].get_ydata()), want))
    finally:
        plt.close("all")


def _diagrams():
    from companion.calibration import ReliabilityDiagram

    good = reliability_diagram([0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], num_bins=5)
    return objects_valid_and_invalid(
        valid={"a diagram": good},
        invalid={"None": None, "a dict": good.__dict__, "a tuple": (good.bin_edges, good.accuracy)}), ReliabilityDiagram


@INPUT_SETTINGS
@given(cases=at_most_one_broken(diagram=_diagrams()[0], ax=AXES, title=TITLES,
                                label=objects_valid_and_invalid(valid={"a str": "accuracy"}, invalid={"None": None})))
def test_inputs_plot_reliability_diagram(cases):
    diagram, ax, title, label = cases.values()

    def expected():
        e = Expect()
        d = e.object("diagram", diagram)
        e.object("label", label), _common(e, ax, title)
        e.done()
        return d.accuracy[d.count > 0]

    try:
        classify("plotting.plot_reliability_diagram", lambda: _drawn(plot_reliability_diagram(
            diagram.value, ax=_axes(ax), title=title.value, label=label.value), cases), expected,
            agree=lambda ax, want: close([bar.get_height() for bar in ax.patches], want))
    finally:
        plt.close("all")


@INPUT_SETTINGS
@given(edges=arrays_valid_and_invalid(np.linspace(0, 1, 3)), count=arrays_valid_and_invalid(np.array([1, 2])))
def test_inputs_reliability_diagram_fields(edges, count):
    # A ReliabilityDiagram built by hand is checked like any argument: its fields must fit each other.
    ReliabilityDiagram = _diagrams()[1]

    def expected():
        e = Expect()
        b, n = e.array("bin_edges", edges, ndim=(1,)), e.array("count", count, ndim=(1,))
        e.need(b is None or (len(b) >= 2 and (np.diff(b) > 0).all() and b[0] >= 0 and b[-1] <= 1), "bin_edges")
        e.need(n is None or ((n >= 0).all() and (n == np.round(n)).all()), "count")
        e.done()
        e.need(len(n) == len(b) - 1, "count")
        e.done()
        return b, n

    bins = max(len(edges.reference) - 1, 1) if edges.reference is not None and edges.reference.ndim == 1 else 2
    classify("calibration.ReliabilityDiagram", lambda: (lambda d: (d.bin_edges, d.count))(ReliabilityDiagram(
        edges.value, np.full(bins, 0.5), np.full(bins, 0.5), count.value)), expected)
