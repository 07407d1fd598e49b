"""Tests of companion.diagnose: each finding code fires when it should and only then.

Every code has a positive case (the bug is there, and the framework really shows the symptom
the message describes where a framework is involved) and a negative case (a near miss that is
healthy). Keras and PyTorch are imported lazily, through fixtures.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import BAD_INPUT_SETTINGS, array_cases
from hypothesis import given, settings
from hypothesis import strategies as st

import companion.diagnose
from companion.diagnose import Finding, diagnose
from companion.metrics import MeanSquaredError

RNG = np.random.default_rng(0)
N = 50
Y = RNG.normal(size=(N, 1))  # a healthy continuous target
P = Y + 0.3 * RNG.normal(size=(N, 1))  # and a healthy, imperfect prediction
X = RNG.normal(size=(N, 4))
TINY_Y = 1e-4 * Y  # errors about 3e-5: squares about 1e-9, below float16's 3e-8
TINY_P = 1e-4 * P


def four(value: float) -> str:
    """How the messages print a number: four significant digits, trailing zeros kept."""
    return f"{value:#.4g}".rstrip(".")


def codes(*args, **kwargs) -> list[str]:
    return [finding.code for finding in diagnose(*args, **kwargs)]


def only(code: str, *args, **kwargs) -> Finding:
    findings = [f for f in diagnose(*args, **kwargs) if f.code == code]
    assert len(findings) == 1, f"expected one {code}, got {findings}"
    return findings[0]


# ---------------------------------------------------------------- the module

# The codes as the module's docstring documents them, in the order the checks run: the promise
# that a reader's code may match on.
CODES = tuple(dict.fromkeys(re.findall(r"``([A-Z0-9]+(?:_[A-Z0-9]+)+)``", companion.diagnose.__doc__)))


def test_the_docstring_documents_every_code():
    assert CODES == ("NAN_PREDICTIONS", "SHAPE_BROADCAST", "EMPTY_METRIC", "METRIC_COUNT_MISMATCH",
                     "FLOAT16_UNDERFLOW", "INTEGER_VALUES", "CONSTANT_TARGET",
                     "PREDICTIONS_EQUAL_TARGETS", "CONSTANT_PREDICTION", "NEAR_CONSTANT_PREDICTION",
                     "NO_BETTER_THAN_MEAN", "TARGET_IN_INPUTS", "DISPLAY_ROUNDING")


def test_a_finding_is_a_code_and_a_message_printed_wrapped():
    finding = Finding("CONSTANT_TARGET", "word " * 40)
    assert str(finding).startswith("CONSTANT_TARGET: word")
    # The book prints findings: no output line wider than its 88 columns.
    assert max(len(line) for line in str(finding).splitlines()) <= 88
    with pytest.raises(AttributeError):
        finding.code = "OTHER"


# ---------------------------------------------------------------- healthy data


def test_healthy_data_gives_no_findings():
    metric = MeanSquaredError()
    metric.update(Y, P)
    assert diagnose(Y, P, x=X, shown=f"{metric.result():.4f}", metric=metric) == []
    assert diagnose(Y[:, 0], P[:, 0]) == []
    assert diagnose(Y.astype(np.float32), P.astype(np.float16)) == []  # errors far above 3e-8


def test_the_result_always_carries_the_mse_and_r2():
    result = diagnose(Y, P)
    assert result == [] and isinstance(result, list)
    mse = np.mean((Y - P) ** 2)
    assert result.mse == pytest.approx(mse, rel=1e-12)
    assert result.r2 == pytest.approx(1 - mse / np.var(Y), rel=1e-12)
    # Findings or not, both are there; R² pools the outputs' variances, and is nan (undefined)
    # where the target does not vary.
    two = np.c_[Y, 10 * Y]
    pooled = diagnose(two, two + 0.3 * RNG.normal(size=(N, 2)))
    assert pooled.r2 == pytest.approx(1 - pooled.mse / np.mean(np.var(two, axis=0)), rel=1e-12)
    constant = diagnose(np.full(N, 2.0), P[:, 0])
    assert [f.code for f in constant] == ["CONSTANT_TARGET"] and np.isnan(constant.r2)
    assert constant.mse == pytest.approx(np.mean((2.0 - P) ** 2))
    assert np.isnan(diagnose([1.0], [1.5]).r2)  # one sample: no variance to compare with


def test_real_data_in_raw_units_is_healthy():
    pytest.importorskip("sklearn")
    from companion.data import load_diabetes

    x, y = load_diabetes(standardize=False)  # whole-number targets in a float array
    design = np.c_[x, np.ones(len(x))]
    prediction = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    assert diagnose(y, prediction, x=x, shown=f"mse: {np.mean((y - prediction) ** 2):.4f}") == []


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 60), outputs=st.integers(1, 3),
       scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_random_healthy_data_gives_no_findings(seed, n, outputs, scale):
    rng = np.random.default_rng(seed)
    y = scale * rng.normal(size=(n, outputs))
    prediction = y + 0.5 * scale * rng.normal(size=(n, outputs))
    result = diagnose(y, prediction, x=rng.normal(size=(n, 5)))
    # On a handful of samples a useful model can still do worse than their mean: that is
    # reported, and only that.
    r2 = 1 - np.mean((y - prediction) ** 2) / np.mean(np.var(y, axis=0))
    assert [f.code for f in result] == ([] if r2 > 0 else ["NO_BETTER_THAN_MEAN"])
    assert result.r2 == pytest.approx(r2, rel=1e-9, abs=1e-12)


def counted(samples: int) -> MeanSquaredError:
    """A companion metric that has seen ``samples`` samples."""
    metric = MeanSquaredError()
    metric.update(Y[:samples], P[:samples])
    return metric


# Between them, these calls produce every code, in the documented order.
ALL_CODES_CALLS = [
    # a broadcast pair of an integer target and rounded predictions, one of them NaN
    ((Y[:, 0], np.r_[np.round(P[:-1]), [[np.nan]]]),
     {"x": np.c_[X, np.exp(Y)], "shown": "0.0000 (epoch 10)", "metric": MeanSquaredError()}),
    ((Y, Y), {"metric": counted(N // 2)}),  # a perfect fit, and a metric that saw half
    ((np.zeros(N, dtype=np.int64), np.zeros(N, dtype=np.int64)), {}),
    ((np.r_[np.zeros(N - 1), 1.0].astype(np.uint8), np.r_[np.full(N - 1, 100), 0].astype(np.uint8)), {}),
    ((TINY_Y.astype(np.float16), TINY_P.astype(np.float16)), {}),
    ((Y, 0.01 * P), {}),  # predictions that hardly vary
    ((Y, -P), {"x": np.c_[X, Y], "shown": "mse: 0.00"}),
    ((1e-3 * Y, 1e-3 * P), {"shown": "0.0000 (epoch 10)"}),
]


def test_findings_come_in_the_documented_order():
    found = [codes(*args, **kwargs) for args, kwargs in ALL_CODES_CALLS]
    assert found == [
        ["NAN_PREDICTIONS", "SHAPE_BROADCAST", "EMPTY_METRIC", "INTEGER_VALUES", "TARGET_IN_INPUTS"],
        ["METRIC_COUNT_MISMATCH", "PREDICTIONS_EQUAL_TARGETS"],
        ["CONSTANT_TARGET", "CONSTANT_PREDICTION"],
        ["INTEGER_VALUES", "NO_BETTER_THAN_MEAN"],
        ["FLOAT16_UNDERFLOW"],
        ["NEAR_CONSTANT_PREDICTION"],
        ["NO_BETTER_THAN_MEAN", "TARGET_IN_INPUTS"],
        ["DISPLAY_ROUNDING"],
    ]
    for codes_of_one_call in found:
        assert codes_of_one_call == sorted(codes_of_one_call, key=CODES.index)


def test_messages_can_be_printed_in_a_notebook():
    # The book's tests reject stored outputs that look like warnings; findings are printed there.
    findings = [f for args, kwargs in ALL_CODES_CALLS for f in diagnose(*args, **kwargs)]
    assert {f.code for f in findings} == set(CODES)
    for finding in findings:
        assert not re.search(r"\b\w*Warning\b|\bWARNING\b", str(finding)), finding
        assert max(len(line) for line in str(finding).splitlines()) <= 88


# ---------------------------------------------------------------- NAN_PREDICTIONS


def test_nan_predictions_are_a_finding_not_an_error(keras):
    prediction = P.copy()
    prediction[[3, 7]] = np.nan
    assert np.isnan(float(keras.losses.mean_squared_error(Y[:, 0], prediction[:, 0])))  # the symptom
    result = diagnose(Y, prediction, x=X)
    assert [f.code for f in result] == ["NAN_PREDICTIONS"]
    assert np.isnan(result.mse) and np.isnan(result.r2)
    message = result[0].message
    assert message.startswith(f"y_pred holds 2 NaN among its {N} values, so the MSE is nan")
    kept = np.ones(N, dtype=bool)
    kept[[3, 7]] = False
    finite_mse = np.mean((Y[kept] - P[kept]) ** 2)
    assert f"the {N - 2} of {N} samples whose predictions are finite (MSE {four(finite_mse)}" in message


def test_the_other_checks_look_at_the_finite_predictions():
    prediction = np.full((N, 1), 0.5)
    prediction[0] = np.nan
    assert codes(Y, prediction) == ["NAN_PREDICTIONS", "CONSTANT_PREDICTION"]
    nothing_finite = diagnose(Y, np.full((N, 1), np.nan), x=np.c_[X, Y], shown="nan")
    assert [f.code for f in nothing_finite] == ["NAN_PREDICTIONS"]
    assert "No prediction is finite" in nothing_finite[0].message


def test_float16_overflow_to_inf_is_explained(torch):
    prediction = torch.from_numpy(1e5 * P).half()  # float16 stops at 65504
    assert torch.isinf(prediction).any()
    result = diagnose(1e5 * Y, prediction)
    assert result[0].code == "NAN_PREDICTIONS" and result.mse == np.inf and result.r2 == -np.inf
    assert "inf among its" in result[0].message and "overflows to inf above 65504" in result[0].message


# ---------------------------------------------------------------- SHAPE_BROADCAST


def test_shape_broadcast_reports_the_number_torch_computes(torch):
    import warnings

    finding = only("SHAPE_BROADCAST", Y[:, 0], P)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrong = torch.nn.MSELoss()(torch.from_numpy(P), torch.from_numpy(Y[:, 0])).item()
    assert "broadcasting" in str(caught[0].message)
    right = float(np.mean((Y - P) ** 2))
    assert f"that MSE is {four(wrong)}, the per-sample MSE is {four(right)}" in finding.message
    assert f"({N}, {N})" in finding.message
    # mean over all pairs = Var(p) + Var(y) + (mean p - mean y)²
    assert wrong == pytest.approx(np.var(P) + np.var(Y) + (P.mean() - Y.mean()) ** 2)


def test_shape_broadcast_the_other_way_and_with_missing_outputs():
    assert "SHAPE_BROADCAST" in codes(Y, P[:, 0])
    y3 = np.c_[Y, Y + 1, Y - 1]
    finding = only("SHAPE_BROADCAST", y3, P)
    assert "one output per target" in finding.message


def test_equal_shapes_and_a_single_sample_do_not_broadcast():
    assert "SHAPE_BROADCAST" not in codes(Y, P)
    assert "SHAPE_BROADCAST" not in codes(Y[:, 0], P[:, 0])
    assert "SHAPE_BROADCAST" not in codes([0.5], [[0.7]])  # (1,) and (1, 1): one pair only


# ---------------------------------------------------------------- EMPTY_METRIC


def test_empty_companion_metric():
    metric = MeanSquaredError()
    assert "EMPTY_METRIC" in codes(Y, P, metric=metric)
    metric.update(Y, P)
    assert "EMPTY_METRIC" not in codes(Y, P, metric=metric)
    metric.reset()
    assert "EMPTY_METRIC" in codes(Y, P, metric=metric)


def test_empty_keras_metric_reads_zero_and_is_reported(keras):
    metric = keras.metrics.MeanSquaredError()
    assert float(metric.result()) == 0.0  # the symptom
    finding = only("EMPTY_METRIC", Y, P, metric=metric)
    assert "'mean_squared_error' (MeanSquaredError)" in finding.message
    metric.update_state(Y, P)
    assert "EMPTY_METRIC" not in codes(Y, P, metric=metric)
    metric.reset_state()
    assert "EMPTY_METRIC" in codes(Y, P, metric=metric)


# ---------------------------------------------------------------- METRIC_COUNT_MISMATCH


def test_a_keras_metric_fed_1d_batches_counts_batches_not_samples(keras):
    metric = keras.metrics.MeanSquaredError()
    batch_means = []
    for start in range(0, N, 32):  # batches of 32 and 18 samples, of shape (batch,)
        metric.update_state(Y[start:start + 32, 0], P[start:start + 32, 0])
        batch_means.append(np.mean((Y[start:start + 32] - P[start:start + 32]) ** 2))
    assert float(metric.count.numpy()) == 2  # the symptom: one "sample" per batch
    finding = only("METRIC_COUNT_MISMATCH", Y, P, metric=metric)
    assert f"has count 2, but y_true holds {N} samples" in finding.message
    assert "1-D batches of shape (batch,)" in finding.message
    assert f"It reads total / count = {four(np.mean(batch_means))}" in finding.message
    assert f"the MSE of these arrays is {four(np.mean((Y - P) ** 2))}" in finding.message


def test_a_metric_not_reset_between_epochs_or_weighted_is_reported(keras):
    metric = keras.metrics.MeanSquaredError()
    for _ in range(3):
        metric.update_state(Y, P)
    assert "It counted 3 times as many" in only("METRIC_COUNT_MISMATCH", Y, P, metric=metric).message
    weighted = MeanSquaredError()
    weighted.update(Y, P, sample_weight=np.full(N, 0.5))
    assert "sample weights" in only("METRIC_COUNT_MISMATCH", Y, P, metric=weighted).message
    # Counts that agree: (N, 1) batches in Keras, any batches in companion.metrics.
    metric.reset_state()
    for start in range(0, N, 32):
        metric.update_state(Y[start:start + 32], P[start:start + 32])
    assert "METRIC_COUNT_MISMATCH" not in codes(Y, P, metric=metric)
    assert "METRIC_COUNT_MISMATCH" not in codes(Y[:, 0], P[:, 0], metric=counted(N))


# ---------------------------------------------------------------- FLOAT16_UNDERFLOW

def test_float16_squares_below_3e_8_vanish():
    assert np.float16(2.0**-25) == 0 and np.float16(2.0**-25 * 1.01) > 0


def test_float16_data_with_tiny_errors_is_reported():
    y16, p16 = TINY_Y.astype(np.float16), TINY_P.astype(np.float16)
    assert float(np.mean((y16 - p16) ** 2)) == 0.0  # the symptom
    finding = only("FLOAT16_UNDERFLOW", y16, p16)
    assert finding.message.startswith("y_true and y_pred are float16")
    assert "the MSE computed in float16 is 0 instead of" in finding.message
    assert "FLOAT16_UNDERFLOW" in codes(TINY_Y, p16)


def test_float16_torch_tensors_are_reported(torch):
    p16 = torch.from_numpy(TINY_P).half()
    assert torch.nn.functional.mse_loss(p16, torch.from_numpy(TINY_Y).half()).item() == 0.0
    assert "FLOAT16_UNDERFLOW" in codes(TINY_Y, p16)
    # bfloat16 has float32's exponent range: no underflow, and the tensor is accepted.
    assert "FLOAT16_UNDERFLOW" not in codes(TINY_Y, torch.from_numpy(TINY_P).bfloat16())


def test_a_float16_keras_metric_is_reported(keras):
    metric = keras.metrics.MeanSquaredError(dtype="float16")
    metric.update_state(TINY_Y, TINY_P)
    assert float(metric.result()) == 0.0  # the symptom
    finding = only("FLOAT16_UNDERFLOW", TINY_Y, TINY_P, metric=metric)
    assert finding.message.startswith("metric is float16")


def test_keras_mixed_precision_mse_metric_underflows_where_the_loss_does_not(keras):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.set_weights([np.array([[1e-4]], np.float32), np.zeros(1, np.float32)])
        model.compile(loss="mse", metrics=["mse"])
        result = model.evaluate(Y, TINY_P, batch_size=N, verbose=0, return_dict=True)
        prediction = model.predict(Y, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The loss casts the float16 output to float32 before squaring; the metric squares in float16.
    assert result["mse"] == 0.0 and result["loss"] == pytest.approx(np.mean((TINY_Y - TINY_P) ** 2), rel=1e-2)
    assert prediction.dtype == np.float16
    assert codes(TINY_P, prediction) == ["FLOAT16_UNDERFLOW"]


def test_no_underflow_in_float32_or_with_large_errors():
    assert "FLOAT16_UNDERFLOW" not in codes(TINY_Y.astype(np.float32), TINY_P.astype(np.float32))
    assert "FLOAT16_UNDERFLOW" not in codes(Y.astype(np.float16), P.astype(np.float16))
    # One tiny error among large ones vanishes too, but does not change the MSE.
    p = P.copy()
    p[0] = Y[0] + 1e-5
    assert "FLOAT16_UNDERFLOW" not in codes(Y.astype(np.float16), p.astype(np.float16))
    # Overflow (float16 stops at 65504) is not underflow.
    assert "FLOAT16_UNDERFLOW" not in codes(1e3 * Y.astype(np.float16), np.zeros((N, 1), np.float16) + 0.5)


# ---------------------------------------------------------------- INTEGER_VALUES


def test_integer_targets_alone_are_not_reported():
    # Changed: integer targets used to be reported whatever the predictions. Counts are honest
    # integers, and float predictions of them compute the MSE exactly.
    counts = RNG.poisson(20, size=N)
    assert "INTEGER_VALUES" not in codes(counts, counts + 3 * RNG.normal(size=N))
    # A target truncated to one value is reported as constant, and the dtype named there.
    fractions = np.linspace(0.05, 0.95, N)  # e.g. a min-max scaled target
    truncated = fractions.astype(np.int32)
    finding = only("CONSTANT_TARGET", truncated, fractions * 0.9)
    assert codes(truncated, fractions * 0.9) == ["CONSTANT_TARGET"]
    assert "y_true has the integer dtype int32" in finding.message


def test_rounded_predictions_are_reported(torch):
    finding = only("INTEGER_VALUES", Y, np.round(P))
    assert finding.message.startswith("y_pred holds only whole numbers")
    assert "while y_true has fractions" in finding.message
    finding = only("INTEGER_VALUES", Y, torch.from_numpy(P).long())
    assert finding.message.startswith("y_pred has the integer dtype int64")
    # Predictions cast to int are reported against integer targets too: the cast truncates.
    counts = RNG.poisson(20, size=N)
    assert "INTEGER_VALUES" in codes(counts, (counts + 3 * RNG.random(size=N)).astype(np.int64))


def test_whole_number_float_targets_are_not_reported():
    counts = np.arange(N, dtype=np.float64)[:, None]  # a count target is fine as floats
    assert "INTEGER_VALUES" not in codes(counts, counts + 0.3 * RNG.normal(size=(N, 1)))
    # Whole-number predictions of whole-number targets may be honest: not reported.
    assert "INTEGER_VALUES" not in codes(counts, np.round(counts + 2 * RNG.normal(size=(N, 1))))
    # One whole-number float prediction is a constant, reported as that alone.
    assert codes(Y, np.full((N, 1), 100.0)) == ["CONSTANT_PREDICTION"]


def test_predictions_equal_to_integer_targets_are_not_called_a_cast():
    # Changed: y_pred = y_true on a whole-number target used to read "the predictions were
    # rounded or cast to int"; identical arrays are PREDICTIONS_EQUAL_TARGETS' case.
    counts = RNG.poisson(20, size=N)
    assert codes(counts.astype(np.float64), counts.astype(np.float64)) == ["PREDICTIONS_EQUAL_TARGETS"]
    assert codes(counts, counts.copy()) == ["PREDICTIONS_EQUAL_TARGETS"]


def test_an_unsigned_pair_whose_difference_wraps_around(keras):
    y = np.r_[np.zeros(N - 1), 100].astype(np.uint8)
    prediction = np.r_[np.full(N - 1, 3), 0].astype(np.uint8)
    true_mse = np.mean((y.astype(np.float64) - prediction) ** 2)
    numpy_mse = float(np.mean((y - prediction) ** 2))  # the symptom: 100² is 16 in uint8
    keras_mse = float(keras.losses.mean_squared_error(y[:, None], prediction[:, None]).numpy().mean())
    metric = keras.metrics.MeanSquaredError()
    metric.update_state(y[:, None], prediction[:, None])
    assert keras_mse == pytest.approx(numpy_mse) == float(metric.result()) and numpy_mse < true_mse / 20
    finding = only("INTEGER_VALUES", y, prediction)
    assert finding.message.startswith("y_true is uint8 and y_pred is uint8")
    # 0 - 3 wraps to 253, whose square wraps back to 9: the example is the error that changed.
    assert "(100 - 0 gives 100 and a squared error of 16, not 10000)" in finding.message
    assert f"so they read {four(numpy_mse)} instead of {four(true_mse)}" in finding.message
    # Small int16 differences do not wrap: the cast is all there is to say.
    small = only("INTEGER_VALUES", y.astype(np.int16), prediction.astype(np.int16))
    assert small.message.startswith("y_pred has the integer dtype int16")


# ---------------------------------------------------------------- CONSTANT_TARGET, CONSTANT_PREDICTION


def test_constant_target():
    finding = only("CONSTANT_TARGET", np.full(N, 3.0), P[:, 0])
    assert finding.message.startswith("every value of y_true is 3.")
    # Differences at float32 rounding level are one value.
    assert "CONSTANT_TARGET" in codes(np.float32(3.0) + 1e-8 * RNG.normal(size=N), P[:, 0])
    assert "CONSTANT_TARGET" not in codes(Y, P)
    assert "CONSTANT_TARGET" not in codes([2.0], [2.5])  # a single sample is not "constant"


def test_constant_prediction_states_the_variance_plus_bias_decomposition():
    c = 0.7
    finding = only("CONSTANT_PREDICTION", Y, np.full((N, 1), c))
    variance, bias2 = np.var(Y), (np.mean(Y) - c) ** 2
    mse = np.mean((Y - c) ** 2)
    assert mse == pytest.approx(variance + bias2)
    assert f"= {four(variance)} + {four(bias2)} = {four(mse)}" in finding.message
    assert "CONSTANT_PREDICTION" not in codes(Y, P)


def test_identical_constants_give_zero_and_both_findings():
    assert codes(np.full(N, 2.5), np.full(N, 2.5)) == ["CONSTANT_TARGET", "CONSTANT_PREDICTION"]


def test_a_constant_prediction_states_its_r2():
    finding = only("CONSTANT_PREDICTION", Y, np.full((N, 1), 0.7))
    assert f"(R² = {1 - np.mean((Y - 0.7) ** 2) / np.var(Y):.4f})" in finding.message


# ---------------------------------------------------------------- PREDICTIONS_EQUAL_TARGETS


def test_a_tree_scored_on_its_training_set_reads_exactly_zero(diabetes):
    tree = pytest.importorskip("sklearn.tree")
    x, y, _ = diabetes
    prediction = tree.DecisionTreeRegressor(random_state=0).fit(x, y[:, 0]).predict(x)[:, None]
    assert np.mean((y - prediction) ** 2) == 0.0  # the symptom
    result = diagnose(y, prediction, x=x)
    assert [f.code for f in result] == ["PREDICTIONS_EQUAL_TARGETS"]
    assert result.mse == 0.0 and result.r2 == 1.0
    assert "(the MSE is exactly 0, R² = 1)" in result[0].message
    assert "scored on the data it was trained on" in result[0].message
    # The same with the whole-number target as integers: no word of a cast.
    assert codes(y.astype(np.int64), prediction.astype(np.int64)) == ["PREDICTIONS_EQUAL_TARGETS"]


def test_predictions_equal_up_to_float32_rounding():
    finding = only("PREDICTIONS_EQUAL_TARGETS", Y, Y.astype(np.float32))
    assert "up to float32 rounding: the MSE is " in finding.message
    assert "PREDICTIONS_EQUAL_TARGETS" not in codes(Y, Y * (1 + 1e-4))
    assert codes(np.full(N, 2.5), np.full(N, 2.5))[0] == "CONSTANT_TARGET"  # not this case
    assert codes([2.0], [2.0]) == []  # one sample: there is no variation to reproduce


# ---------------------------------------------------------------- NEAR_CONSTANT_PREDICTION


def test_nearly_constant_predictions():
    prediction = 0.2 + 0.01 * P  # a spread of 1% of the target's
    ratio = np.std(prediction) / np.std(Y)
    r2 = 1 - np.mean((Y - prediction) ** 2) / np.var(Y)
    finding = only("NEAR_CONSTANT_PREDICTION", Y, prediction)
    assert f"{four(np.std(prediction))}, {ratio:.1%} of the targets' ({four(np.std(Y))})" in finding.message
    assert f"(R² = {r2:.4f})" in finding.message
    assert codes(Y, prediction) == ["NEAR_CONSTANT_PREDICTION"]  # not also NO_BETTER_THAN_MEAN
    assert codes(Y, 0.06 * P) == []  # 6% of the spread, and R² above 0: a weak model, not a flat one
    two = np.c_[Y, 5 * Y]
    assert "at most" in only("NEAR_CONSTANT_PREDICTION", two, 0.01 * np.c_[P, P]).message


# ---------------------------------------------------------------- NO_BETTER_THAN_MEAN


def test_r2_at_or_below_zero():
    prediction = Y + 1.2 * RNG.normal(size=(N, 1))  # noise larger than the target's spread
    mse = np.mean((Y - prediction) ** 2)
    finding = only("NO_BETTER_THAN_MEAN", Y, prediction)
    assert f"= 1 - {four(mse)} / {four(np.var(Y))} = {1 - mse / np.var(Y):.4f}:" in finding.message
    assert "NO_BETTER_THAN_MEAN" in codes(Y, -P)
    assert "NO_BETTER_THAN_MEAN" not in codes(Y, P)
    # R² of exactly 0 (an MSE exactly as large as Var(y_true)) counts too.
    y, prediction = np.array([1.0, -1.0, 1.0, -1.0]), np.array([1.0, -1.0, -1.0, -1.0])
    result = diagnose(y, prediction)
    assert result.mse == np.var(y) == 1.0 and result.r2 == 0.0
    assert [f.code for f in result] == ["NO_BETTER_THAN_MEAN"]


# ---------------------------------------------------------------- TARGET_IN_INPUTS


def test_target_copied_into_the_inputs():
    finding = only("TARGET_IN_INPUTS", Y, P, x=np.c_[X, Y])
    assert finding.message.startswith("column 4 of x is equal to y_true")
    assert "TARGET_IN_INPUTS" in codes(Y, P, x=Y)  # fit(y, y)


def test_an_affine_float32_copy_of_the_target_is_found():
    raw = (77.0 * Y + 152.0).astype(np.float32)  # the target in other units, rounded to float32
    finding = only("TARGET_IN_INPUTS", Y, P, x=np.c_[raw, X])
    assert "column 0 of x is an affine copy of y_true (y_true = 0.01299 * x[:, 0] - 1.974)" in finding.message
    assert "TARGET_IN_INPUTS" in codes(Y, P, x=-raw)  # a negative slope too
    scaled = only("TARGET_IN_INPUTS", Y, P, x=Y / 3.0)  # no intercept at all
    assert "(y_true = 3.000 * x[:, 0] + 0)" in scaled.message


def test_an_exact_copy_says_an_exact_law_would_be_genuine():
    finding = only("TARGET_IN_INPUTS", Y, P, x=np.c_[X, 1.8 * Y + 32])  # °C to °F, say
    assert "(a unit conversion, a physical law) is the small MSE genuine" in finding.message


def test_correlated_but_not_copied_inputs_are_fine():
    # Changed: a copy with noise of 1% of the target's spread (correlation 0.9999) used to pass
    # as honest; it is a near copy now (test_near_copies_of_the_target_are_found).
    related = Y + 0.5 * RNG.normal(size=(N, 1))  # correlation about 0.9: a good honest feature
    assert "TARGET_IN_INPUTS" not in codes(Y, P, x=np.c_[X, related, np.ones(N)])
    # Below five samples an unrelated column can match by chance, so nothing is checked; below
    # ten only exact affine copies are, as a rank correlation of 1 comes by chance too often.
    assert "TARGET_IN_INPUTS" not in codes(Y[:4], P[:4], x=Y[:4])
    assert "TARGET_IN_INPUTS" in codes(Y[:8], P[:8], x=2 * Y[:8] + 1)
    assert "TARGET_IN_INPUTS" not in codes(Y[:8], P[:8], x=np.exp(Y[:8]))
    assert "TARGET_IN_INPUTS" in codes(Y[:10], P[:10], x=np.exp(Y[:10]))
    # A constant target is reported as such, not as equal to every constant column.
    assert codes(np.ones(N), P[:, 0], x=np.ones((N, 2))) == ["CONSTANT_TARGET"]


@pytest.fixture(scope="module")
def diabetes():
    """scikit-learn's diabetes features (float32) and raw target (442, 1), and a least-squares fit."""
    pytest.importorskip("sklearn")
    from companion.data import load_diabetes

    x, y = load_diabetes(standardize=False)
    design = np.c_[x, np.ones(len(x))]
    return x, y, design @ np.linalg.lstsq(design, y, rcond=None)[0]


def test_no_honest_diabetes_feature_is_taken_for_the_target(diabetes):
    x, y, fit = diabetes
    assert "TARGET_IN_INPUTS" not in codes(y, fit, x=x)
    assert "TARGET_IN_INPUTS" not in codes((y - y.mean()) / y.std(), fit, x=x)
    assert "TARGET_IN_INPUTS" not in codes(np.log(y), np.log(fit.clip(1)), x=x)


@pytest.mark.parametrize("copy", ["noise of 1% of its std", "rounded to tens", "exp", "cube"])
def test_near_copies_of_the_target_are_found(diabetes, copy):
    stats = pytest.importorskip("scipy.stats")
    x, y, fit = diabetes
    standardized = (y - y.mean()) / y.std()
    column = {
        "noise of 1% of its std": y + 0.01 * y.std() * np.random.default_rng(1).normal(size=y.shape),
        "rounded to tens": np.round(y, -1),  # ties: 33 distinct values for 442 samples
        "exp": np.exp(standardized),
        "cube": standardized ** 3,
    }[copy]
    finding = only("TARGET_IN_INPUTS", y, fit, x=np.c_[x[:, :4], column, x[:, 4:]].astype(np.float32))
    rho = stats.spearmanr(column.astype(np.float32)[:, 0], y[:, 0]).statistic
    assert 0.99 <= rho < 1 - 1e-6 or copy in ("exp", "cube")
    # How sure: the column, the rank correlation, and what an unrelated column would give.
    assert finding.message.startswith("column 4 of x orders the samples almost exactly as y_true")
    assert f"Spearman's rank correlation is {rho:.6f}" in finding.message
    assert f"0 ± {1 / np.sqrt(len(y) - 1):.3f} over {len(y)} samples" in finding.message


# ---------------------------------------------------------------- DISPLAY_ROUNDING


@pytest.mark.parametrize(("shown", "mse", "expected"), [
    ("0.0000", 2.4e-6, True),
    ("mse: 0.0000", 4e-5, True),
    ("0.00", 0.004, True),
    ("MSE 0", 0.3, True),
    ("0.00", 0.006, False),  # would round to 0.01: the text shows another number
    ("0.0000", 0.5, False),
    ("2.4000e-06", 2.4e-6, False),  # a relative format shows it
    ("mse: 0.0000e+00", 2.4e-6, False),  # a relative format never rounds to 0
    ("0.0000", 0.0, False),  # the display is right: the MSE is 0
    ("0.0000 (epoch 10)", 2.4e-6, True),  # the epoch is not the value
    ("Epoch 10/10 - loss: 0.5000 - mse: 0.0000", 2.4e-6, True),  # the number after "mse"
    ("epoch 3: 0.0000", 2.4e-6, True),  # a number with decimals, not a whole one
    ("rmse: 0.0016 - mse: 0.0000", 2.4e-6, True),  # "rmse" is another metric
    ("mse: 0.0000 (epoch 10)", 0.5, False),
    ("mse: nan", 2.4e-6, False),  # a nan is shown as nan: nothing rounded away
])
def test_display_rounding(shown, mse, expected):
    y = np.array([1.0, 2.0, 3.0, 4.0])
    # errors +e, -e, +e, -e give an MSE of e² exactly
    prediction = y + np.sqrt(mse) * np.array([1, -1, 1, -1])
    found = "DISPLAY_ROUNDING" in codes(y, prediction, shown=shown)
    assert found is expected


def test_display_rounding_gives_scale_free_numbers():
    finding = only("DISPLAY_ROUNDING", TINY_Y, TINY_P, shown="MSE: 0.0000")
    r2 = 1 - np.mean((TINY_Y - TINY_P) ** 2) / np.var(TINY_Y)
    assert f"R² = 1 - MSE / Var(y_true) = {r2:.4f}" in finding.message


# ---------------------------------------------------------------- frameworks and inputs


def test_accepts_tensorflow_tensors(keras):
    import tensorflow as tf

    assert diagnose(tf.constant(Y), tf.constant(P, dtype=tf.float32)) == []
    assert codes(tf.constant(Y), tf.constant(P[:, 0])) == ["SHAPE_BROADCAST"]
    assert "FLOAT16_UNDERFLOW" in codes(tf.constant(TINY_Y, tf.float16), tf.constant(TINY_P, tf.float16))
    assert diagnose(tf.constant(Y), tf.constant(P, dtype=tf.bfloat16)) == []


def test_accepts_torch_tensors_that_require_grad(torch):
    prediction = torch.tensor(P, requires_grad=True) * 1.0
    assert diagnose(torch.from_numpy(Y), prediction, x=torch.from_numpy(X)) == []


def test_never_modifies_its_inputs(torch):
    y = np.full((N, 1), 2.0)
    prediction = np.round(P)
    x = np.c_[X, y]
    before = [a.copy() for a in (y, prediction, x)]
    tensor = torch.from_numpy(TINY_P).half()
    tensor_before = tensor.clone()
    diagnose(y, prediction, x=x, shown="0.0000", metric=MeanSquaredError())
    diagnose(TINY_Y[:, 0], tensor)
    for array, copy in zip((y, prediction, x), before):
        np.testing.assert_array_equal(array, copy)
        assert array.dtype == copy.dtype and array.flags.writeable
    assert torch.equal(tensor, tensor_before) and tensor.dtype == torch.float16
    listed = [1.0, 2.0, 3.0]
    diagnose(listed, [1.0, 2.0, 4.0])
    assert listed == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------- bad input

BAD_INPUT = [
    # (args, kwargs, error, message pattern)
    (([1.0, 2.0, 3.0], [1.0, 2.0]), {}, ValueError,
     r"y_pred must have one row per sample of y_true \(3\), got shape \(2,\)"),
    (([1.0, 2.0], [1.0, 2.0]), {"x": np.ones((3, 2))}, ValueError,
     r"x must have one row per sample of y_true \(2\), got shape \(3, 2\)"),
    (([], []), {}, ValueError, r"y_true must not be empty, got shape \(0,\)"),
    (([1.0, 2.0], np.ones((2, 0))), {}, ValueError, r"y_pred must not be empty, got shape \(2, 0\)"),
    (([1.0, np.nan], [1.0, 2.0]), {}, ValueError, r"y_true must be finite, got 1 NaN or inf"),
    (([np.inf, 2.0], [1.0, 2.0]), {}, ValueError, r"y_true must be finite"),
    (([1.0, 2.0], [1.0, 2.0]), {"x": [[np.nan], [1.0]]}, ValueError, r"x must be finite"),
    ((1.0, 1.0), {}, ValueError, r"y_true must have a sample axis, got a scalar"),
    ((["a", "b"], [1.0, 2.0]), {}, TypeError, r"y_true must hold real numbers, got dtype <U1"),
    (([[1.0, 2.0], [3.0]], [1.0, 2.0]), {}, TypeError, r"y_true must be array-like"),
    ((np.ones((3, 2)), np.ones((3, 3))), {}, ValueError,
     r"y_true has shape \(3, 2\) and y_pred has shape \(3, 3\).*neither compared elementwise nor broadcast"),
    (([1.0, 2.0], [1.0, 2.0]), {"shown": 0.0}, TypeError, r"shown must be the text.*got float: 0\.0"),
    (([1.0, 2.0], [1.0, 2.0]), {"shown": "zero"}, ValueError, r"shown must contain the displayed number, got 'zero'"),
    (([1.0, 2.0], [1.0, 2.0]), {"metric": "mse"}, TypeError, r"metric must keep a running count.*got str"),
]


@pytest.mark.parametrize(("args", "kwargs", "error", "pattern"), BAD_INPUT)
def test_bad_input_is_refused_with_a_message_that_names_it(args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        diagnose(*args, **kwargs)


@BAD_INPUT_SETTINGS
@given(case=st.one_of(array_cases(Y[:, 0], "y_true"), array_cases(Y[:, 0], "y_pred")))
def test_diagnose_rejects_bad_arrays(case):
    name, value = case
    arguments = {"y_true": Y[:, 0], "y_pred": Y[:, 0] + 0.1}
    arguments[name] = value
    if name == "y_pred" and len(value) == N:  # a NaN or inf prediction: a finding, not an error
        assert codes(arguments["y_true"], arguments["y_pred"])[0] == "NAN_PREDICTIONS"
        return
    with pytest.raises((ValueError, TypeError)) as error:
        diagnose(arguments["y_true"], arguments["y_pred"])
    assert "y_true" in str(error.value) or "y_pred" in str(error.value), str(error.value)
