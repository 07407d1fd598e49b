"""companion.plotting: the figures of the chapters, the data they draw, and their errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests draw off-screen; notebooks keep their inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import (BAD_INPUT_SETTINGS, array_cases, assert_rejected, not_a_fraction,  # noqa: E402
                      not_a_positive_int, poisoned)
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
