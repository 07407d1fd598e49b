"""Tests of the chapter 3 figures in companion.plotting: the data they draw and their errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests draw off-screen; notebooks keep their inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from companion.calibration import batch_accuracy_distribution, reliability_diagram  # noqa: E402
from companion.plotting import (plot_batch_accuracy_histogram, plot_loss_and_accuracy,  # noqa: E402
                                plot_loss_vs_margin, plot_reliability_diagram)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labelled(ax):
    return bool(ax.get_title()) and bool(ax.get_xlabel()) and bool(ax.get_ylabel())


# ---------------------------------------------------------------- the figures


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
