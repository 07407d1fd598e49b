"""Tests of companion.calibration: hand-computed cases, agreement with Keras and PyTorch where both
compute the same thing, and clear errors for bad input.

The frameworks are imported lazily (fixtures), so the NumPy tests run without them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Case, Expect, array_cases, arrays_valid_and_invalid,
                      assert_rejected, classify, close, not_a_fraction, not_a_positive_int, numbers_valid_and_invalid)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from companion.calibration import (ReliabilityDiagram, batch_accuracy_distribution, cross_entropy,
                                   expected_calibration_error, margins, reliability_diagram)
from companion.metrics import Accuracy

FAST = settings(max_examples=50, deadline=None)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@st.composite
def labelled_logits(draw, max_samples=40, max_classes=6):
    """(labels, logits) with 1..max_samples samples and 2..max_classes classes."""
    n = draw(st.integers(1, max_samples))
    c = draw(st.integers(2, max_classes))
    logits = draw(arrays(np.float64, (n, c), elements=st.floats(-8, 8)))
    labels = draw(arrays(np.int64, n, elements=st.integers(0, c - 1)))
    return labels, logits


# ---------------------------------------------------------------- margins and cross-entropy


def test_margins_by_hand():
    scores = [[2.0, 0.5, 1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0]]
    np.testing.assert_array_equal(margins([0, 2, 1], scores), [1.0, -2.0, 0.0])


@FAST
@given(labelled_logits())
def test_a_positive_margin_is_exactly_a_correct_prediction(case):
    labels, logits = case
    m = margins(labels, logits)
    accuracy = Accuracy()
    accuracy.update(labels, logits)
    untied = m != 0  # a tie goes to the lower class index, whatever the margin says
    assert np.sum((m > 0)) <= accuracy.total <= np.sum(m >= 0)
    np.testing.assert_array_equal((m > 0)[untied], (logits.argmax(axis=1) == labels)[untied])


def test_cross_entropy_by_hand():
    np.testing.assert_allclose(cross_entropy([0, 1], [[0.0, 0.0], [0.0, math.log(3.0)]]),
                               [math.log(2.0), math.log(4.0 / 3.0)], rtol=1e-12)


def test_cross_entropy_stays_finite_for_huge_logits():
    values = cross_entropy([0, 1], [[1000.0, -1000.0], [1000.0, -1000.0]])
    np.testing.assert_allclose(values, [0.0, 2000.0])


@FAST
@given(labelled_logits())
def test_cross_entropy_lies_between_the_margin_bounds(case):
    labels, logits = case
    m, loss = margins(labels, logits), cross_entropy(labels, logits)
    c = logits.shape[1]
    assert np.all(loss >= np.logaddexp(0.0, -m) - 1e-12)
    assert np.all(loss <= np.logaddexp(0.0, math.log(c - 1) - m) + 1e-12)


def test_cross_entropy_matches_keras_and_torch(keras, torch):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=50)
    ours = cross_entropy(labels, logits)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(labels, logits)
    torch_loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none")
    np.testing.assert_allclose(ours, np.asarray(keras_loss), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, torch_loss.numpy(), rtol=1e-5, atol=1e-6)


def test_framework_tensors_are_accepted(torch):
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    np.testing.assert_allclose(margins(torch.tensor([0, 0]), logits), [2.0, -1.0])


# ---------------------------------------------------------------- reliability diagram and ECE


def test_reliability_diagram_by_hand():
    probabilities = [[0.9, 0.1], [0.7, 0.3], [0.35, 0.65], [0.25, 0.75]]
    d = reliability_diagram([0, 1, 1, 0], probabilities, num_bins=5)
    assert isinstance(d, ReliabilityDiagram)
    np.testing.assert_allclose(d.bin_edges, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(d.count, [0, 0, 0, 3, 1])
    np.testing.assert_allclose(d.confidence[3:], [0.7, 0.9])
    np.testing.assert_allclose(d.accuracy[3:], [1 / 3, 1.0])
    assert np.all(np.isnan(d.confidence[:3])) and np.all(np.isnan(d.accuracy[:3]))
    np.testing.assert_allclose(d.gap[3:], [0.7 - 1 / 3, -0.1])
    assert d.num_samples == 4
    # |0.7 - 1/3| for three samples and |0.9 - 1| for one
    assert d.ece == pytest.approx((3 * (0.7 - 1 / 3) + 0.1) / 4)


def test_bins_are_closed_on_the_right():
    # A confidence on an edge goes to the bin that edge closes: 0.5 to (0.4, 0.5], 0.4 to
    # (0.3, 0.4] with 0.34; 1.0 to the last bin. Nothing falls out.
    probabilities = [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4], [0.34, 0.33, 0.33]]
    d = reliability_diagram([0, 0, 2, 0], probabilities, num_bins=10)
    assert d.count.sum() == 4
    assert d.count[4] == 1 and d.count[9] == 1 and d.count[3] == 2


def test_ties_count_as_the_lower_class_as_argmax_does():
    d = reliability_diagram([1, 0], [[0.5, 0.5], [0.5, 0.5]], num_bins=2)
    assert d.accuracy[0] == 0.5


def test_a_calibrated_model_has_zero_ece():
    # Ten samples at confidence 0.8, eight of them right: the bin's accuracy is its confidence.
    probabilities = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_an_always_right_model_at_confidence_c_has_ece_one_minus_c():
    probabilities = np.tile([0.6, 0.3, 0.1], (7, 1))
    assert expected_calibration_error(np.zeros(7, dtype=int), probabilities) == pytest.approx(0.4)


@FAST
@given(labelled_logits(), st.integers(1, 20))
def test_ece_is_the_sample_mean_of_each_samples_bin_gap(case, num_bins):
    labels, logits = case
    probabilities = softmax(logits)
    d = reliability_diagram(labels, probabilities, num_bins=num_bins)
    assert d.count.sum() == len(labels)
    confidence = probabilities.max(axis=1)
    which = np.array([np.flatnonzero((d.bin_edges[:-1] < c) & (c <= d.bin_edges[1:]))[0] if c > 0 else 0
                      for c in confidence])
    expected = np.mean(np.abs(d.gap[which]))
    assert d.ece == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= d.ece <= 1.0
    overall = np.nansum(d.accuracy * d.count) / d.count.sum()
    assert overall == pytest.approx(np.mean(probabilities.argmax(axis=1) == labels))


def test_per_bin_numbers_match_keras_metrics(keras):
    rng = np.random.default_rng(1)
    probabilities = softmax(rng.normal(scale=2.0, size=(200, 4))).astype(np.float32)
    labels = rng.integers(0, 4, size=200)
    d = reliability_diagram(labels, probabilities, num_bins=5)
    confidence = probabilities.max(axis=1)
    for b in np.flatnonzero(d.count):
        in_bin = ((d.bin_edges[b] < confidence) & (confidence <= d.bin_edges[b + 1])).astype(np.float32)
        accuracy = keras.metrics.SparseCategoricalAccuracy()
        accuracy.update_state(labels, probabilities, sample_weight=in_bin)
        mean_confidence = keras.metrics.Mean()
        mean_confidence.update_state(confidence, sample_weight=in_bin)
        assert d.accuracy[b] == pytest.approx(float(accuracy.result()), rel=1e-6)
        assert d.confidence[b] == pytest.approx(float(mean_confidence.result()), rel=1e-6)
    total = keras.metrics.SparseCategoricalAccuracy()
    total.update_state(labels, probabilities)
    assert np.nansum(d.accuracy * d.count) / d.num_samples == pytest.approx(float(total.result()), rel=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("function", [margins, cross_entropy, reliability_diagram, expected_calibration_error])
@pytest.mark.parametrize(
    "labels, scores, error, words",
    [
        ([0, 1], [0.3, 0.7], ValueError, "shape (N, C)"),
        ([0, 1], [[1.0], [1.0]], ValueError, "C >= 2"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], ValueError, "one row per sample"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ValueError, "class 2"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], ValueError, "class indices"),
        ([[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]], ValueError, "one-hot"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], ValueError, "finite"),
        ([0, 1], [["a", "b"], ["c", "d"]], TypeError, "numbers"),
        ([0, 1], 0.5, ValueError, "scalar"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(function, labels, scores, error, words):
    with pytest.raises(error, match=f"(?i){words.replace('(', '[(]').replace(')', '[)]')}"):
        function(labels, scores)


@pytest.mark.parametrize("probabilities, words", [
    ([[2.0, -1.0], [0.5, 0.5]], "lie in \\[0, 1\\].*softmax"),
    ([[0.6, 0.6], [0.5, 0.5]], "sum to 1.*softmax"),
])
def test_logits_are_not_taken_for_probabilities(probabilities, words):
    with pytest.raises(ValueError, match=words):
        reliability_diagram([0, 1], probabilities)


@pytest.mark.parametrize("num_bins, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)])
def test_num_bins_must_be_a_positive_int(num_bins, error):
    with pytest.raises(error, match="num_bins"):
        expected_calibration_error([0], [[0.6, 0.4]], num_bins=num_bins)


LABELS = np.array([0, 1, 2, 1, 0, 2, 1, 0])
SCORES = np.random.default_rng(0).normal(size=(8, 3))
PROBABILITIES = softmax(SCORES)


@BAD_INPUT_SETTINGS
@given(case=st.one_of(array_cases(LABELS, "y_true"), array_cases(SCORES, "scores"), array_cases(SCORES, "logits")))
def test_calibration_rejects_bad_arrays(case):
    name, value = case
    if name == "y_true":
        calls = [lambda: margins(value, SCORES), lambda: cross_entropy(value, SCORES),
                 lambda: expected_calibration_error(value, PROBABILITIES)]
    elif name == "scores":
        calls = [lambda: margins(LABELS, value)]
    else:
        calls = [lambda: cross_entropy(LABELS, value)]
    for call in calls:
        with pytest.raises((ValueError, TypeError)) as error:
            call()
        message = str(error.value)
        expected = (name, "y_true") if name != "y_true" else ("y_true", "scores", "logits", "probabilities")
        assert any(n in message for n in expected), f"the error does not name the argument: {message}"


@BAD_INPUT_SETTINGS
@given(num_bins=not_a_positive_int)
def test_calibration_rejects_bad_bin_counts(num_bins):
    assert_rejected(lambda: reliability_diagram(LABELS, PROBABILITIES, num_bins=num_bins), "num_bins")


# ---------------------------------------------------------------- the batch-accuracy distribution


@pytest.mark.parametrize("p, b", [(0.9, 32), (0.5, 7), (0.0, 4), (1.0, 4)])
def test_binomial_distribution_has_the_binomial_moments(p, b):
    pmf = batch_accuracy_distribution(p, b)
    k = np.arange(b + 1) / b
    assert pmf.shape == (b + 1,) and pmf.sum() == pytest.approx(1.0)
    assert np.sum(k * pmf) == pytest.approx(p)
    assert math.sqrt(np.sum((k - p) ** 2 * pmf)) == pytest.approx(math.sqrt(p * (1 - p) / b), abs=1e-12)


@pytest.mark.parametrize("right, n, b", [(1221, 1348, 32), (3, 10, 4), (10, 10, 5)])
def test_hypergeometric_distribution_is_narrower_by_the_finite_set_factor(right, n, b):
    p = right / n
    pmf = batch_accuracy_distribution(p, b, population=n)
    k = np.arange(b + 1) / b
    assert pmf.sum() == pytest.approx(1.0) and np.sum(k * pmf) == pytest.approx(p)
    expected = math.sqrt(p * (1 - p) / b * (n - b) / (n - 1))
    assert math.sqrt(np.sum((k - p) ** 2 * pmf)) == pytest.approx(expected, abs=1e-12)


def test_batch_accuracy_distribution_by_hand():
    np.testing.assert_allclose(batch_accuracy_distribution(0.5, 2), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(batch_accuracy_distribution(0.5, 2, population=4), [1 / 6, 4 / 6, 1 / 6])


@pytest.mark.parametrize("kwargs, error, words", [
    ({"accuracy": 1.5, "batch_size": 4}, ValueError, "accuracy"),
    ({"accuracy": True, "batch_size": 4}, TypeError, "accuracy"),
    ({"accuracy": 0.5, "batch_size": 0}, ValueError, "batch_size"),
    ({"accuracy": 0.5, "batch_size": 4.0}, TypeError, "batch_size"),
    ({"accuracy": 0.5, "batch_size": 4, "population": 3}, ValueError, "population"),
])
def test_batch_accuracy_distribution_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        batch_accuracy_distribution(**kwargs)


@BAD_INPUT_SETTINGS
@given(accuracy=not_a_fraction.filter(lambda v: v not in (0, 1)), batch_size=st.integers(1, 64))
def test_batch_accuracy_distribution_rejects_bad_accuracy(accuracy, batch_size):
    assert_rejected(lambda: batch_accuracy_distribution(accuracy, batch_size), "accuracy")


def test_batch_accuracy_distribution_of_large_batches_does_not_overflow():
    from companion.calibration import batch_accuracy_distribution

    for population in (None, 10_000):
        p = batch_accuracy_distribution(0.9, 2048, population=population)
        assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-9
        assert abs(np.argmax(p) / 2048 - 0.9) < 1e-3


# ---------------------------------------------------------------- every input, valid or not
# (issue 15: each outcome is a clear error naming the argument, or the float64 reference's result)


@st.composite
def labels_and_scores(draw, probabilities=False):
    labels, logits = draw(labelled_logits(max_samples=6, max_classes=4))
    scores = softmax(logits) if probabilities else logits
    return draw(arrays_valid_and_invalid(labels)), draw(arrays_valid_and_invalid(scores))


def _reference_labels_and_scores(e, y_true, scores, name):
    """The checks every calibration function shares: (N,) labels of (N, C >= 2) scores."""
    values, labels = e.array(name, scores, ndim=(2,)), e.labels("y_true", y_true)
    e.done()
    e.need(values.shape[1] >= 2, name)
    e.need(len(labels) == len(values), "y_true")
    e.done()
    e.need(labels.max() < values.shape[1], "y_true")
    e.done()
    return labels, values


@INPUT_SETTINGS
@given(cases=labels_and_scores())
def test_inputs_margins(cases):
    y_true, scores = cases

    def expected():
        labels, values = _reference_labels_and_scores(Expect(), y_true, scores, "scores")
        rows = np.arange(len(labels))
        others = np.where(np.arange(values.shape[1]) == labels[:, None], -np.inf, values)
        return values[rows, labels] - others.max(axis=1)

    classify("calibration.margins", lambda: margins(y_true.value, scores.value), expected)


@INPUT_SETTINGS
@given(cases=labels_and_scores())
def test_inputs_cross_entropy(cases):
    y_true, logits = cases

    def expected():
        labels, values = _reference_labels_and_scores(Expect(), y_true, logits, "logits")
        top = values.max(axis=1)
        return top + np.log(np.exp(values - top[:, None]).sum(axis=1)) - values[np.arange(len(labels)), labels]

    classify("calibration.cross_entropy", lambda: cross_entropy(y_true.value, logits.value), expected,
             agree=lambda result, want: close(result, want, rtol=1e-12, atol=1e-12))


def _reference_diagram(y_true, probabilities, num_bins):
    """(edges, confidence, accuracy, count) by direct comparisons with each bin's two edges."""
    e = Expect()
    bins = e.count("num_bins", num_bins)
    labels, values = _reference_labels_and_scores(e, y_true, probabilities, "probabilities")
    e.need(((values >= 0) & (values <= 1)).all(), "probabilities")
    # A softmax row sums to 1 within about one unit of its float type's precision.
    tolerance = max(1e-4, 4 * probabilities.eps)
    e.need(np.abs(values.sum(axis=1) - 1).max() <= tolerance, "probabilities")
    e.done()
    edges = np.linspace(0, 1, bins + 1)
    confidence, correct = values.max(axis=1), values.argmax(axis=1) == labels
    members = [(confidence > lo) & (confidence <= hi) | ((b == 0) & (confidence <= hi))
               for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    count = np.array([m.sum() for m in members])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (edges, np.array([confidence[m].sum() for m in members]) / count,
                np.array([correct[m].sum() for m in members]) / count, count)


def _diagram_fields(diagram):
    return diagram.bin_edges, diagram.confidence, diagram.accuracy, diagram.count


@INPUT_SETTINGS
@given(cases=labels_and_scores(probabilities=True), num_bins=numbers_valid_and_invalid(5, huge=10**5))
def test_inputs_reliability_diagram(cases, num_bins):
    y_true, probabilities = cases
    classify("calibration.reliability_diagram",
             lambda: _diagram_fields(reliability_diagram(y_true.value, probabilities.value, num_bins=num_bins.value)),
             lambda: _reference_diagram(y_true, probabilities, num_bins))


@INPUT_SETTINGS
@given(cases=labels_and_scores(probabilities=True), num_bins=numbers_valid_and_invalid(5, huge=10**5))
def test_inputs_expected_calibration_error(cases, num_bins):
    y_true, probabilities = cases

    def expected():
        _, confidence, accuracy, count = _reference_diagram(y_true, probabilities, num_bins)
        filled = count > 0
        return np.sum(count[filled] * np.abs(confidence - accuracy)[filled]) / count.sum()

    classify("calibration.expected_calibration_error",
             lambda: expected_calibration_error(y_true.value, probabilities.value, num_bins=num_bins.value),
             expected, agree=lambda result, want: type(result) is float and close(result, want))


def test_a_float16_softmax_row_is_a_probability_row():
    # Rounded to float16 (precision 2**-10), a softmax row sums to 1 only within about 2**-10.
    row = np.array([[0.5, 0.49973]], dtype=np.float16)
    assert abs(float(row.astype(np.float64).sum()) - 1) > 1e-4
    assert reliability_diagram([0], row, num_bins=2).count.tolist() == [1, 0]  # 0.5 is in (0, 0.5]
    with pytest.raises(ValueError, match="rows that sum to 1"):  # float64 rows are held to 1e-4
        reliability_diagram([0], row.astype(np.float64), num_bins=2)


@INPUT_SETTINGS
@given(accuracy=numbers_valid_and_invalid(0.75), batch_size=numbers_valid_and_invalid(6, huge=10**4),
       population=st.one_of(st.just(Case(None, "None")), numbers_valid_and_invalid(12, huge=10**5)))
def test_inputs_batch_accuracy_distribution(accuracy, batch_size, population):
    from scipy import stats

    def expected():
        e = Expect()
        p, b = e.number("accuracy", accuracy, low=0, high=1), e.count("batch_size", batch_size)
        n = e.count("population", population, optional=True)
        e.done()
        e.need(n is None or n >= b, "population")
        e.done()
        k = np.arange(b + 1)
        return stats.binom.pmf(k, b, p) if n is None else stats.hypergeom.pmf(k, n, round(p * n), b)

    classify("calibration.batch_accuracy_distribution",
             lambda: batch_accuracy_distribution(accuracy.value, batch_size.value, population=population.value),
             expected, agree=lambda result, want: close(result, want, rtol=1e-7, atol=1e-12))


# --- a diagram built by hand holds what a diagram can (issue 24) -------------------------------------


@pytest.mark.parametrize("confidence, accuracy, message", [
    ([np.nan, 2.0], [np.nan, 1.0], r"confidence must be inside its bin's edges .* got 2\.0 in bin 1"),
    ([np.nan, 0.3], [np.nan, 1.0], r"confidence must be inside its bin's edges .* got 0\.3 in bin 1"),
    ([np.nan, 0.8], [np.nan, -1.0], r"accuracy must be in \[0, 1\] for every filled bin, got -1\.0"),
    ([np.nan, 0.8], [np.nan, 1.5], r"accuracy must be in \[0, 1\] for every filled bin, got 1\.5"),
    ([0.2, 0.8], [np.nan, 0.5], r"confidence must be NaN exactly in the empty bins \(count 0\)"),
    ([np.nan, np.nan], [np.nan, 0.5], r"confidence must be NaN exactly in the empty bins"),
])
def test_a_hand_built_diagram_with_impossible_bins_is_refused(confidence, accuracy, message):
    # Before issue 24, confidence 2.0 gave an ECE of 1.5, and 3.0 with an accuracy of -1.
    with pytest.raises(ValueError, match=message):
        ReliabilityDiagram(np.array([0.0, 0.5, 1.0]), np.array(confidence),
                                       np.array(accuracy), np.array([0, 4]))
    good = ReliabilityDiagram(np.array([0.0, 0.5, 1.0]), np.array([np.nan, 0.8]),
                                          np.array([np.nan, 0.5]), np.array([0, 4]))
    assert good.ece == pytest.approx(0.3)


def test_every_computed_diagram_passes_its_own_checks():
    # The bins' means come from sums and counts: rounding must not push one past its edge.
    for seed in range(20):
        rng = np.random.default_rng(seed)
        probabilities = rng.dirichlet(np.full(4, 0.3), 300).astype(np.float32)
        labels = rng.integers(0, 4, 300)
        diagram = reliability_diagram(labels, probabilities, num_bins=rng.integers(1, 30))
        assert 0 <= diagram.ece <= 1
