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
    assert CODES == ("SHAPE_BROADCAST", "EMPTY_METRIC", "FLOAT16_UNDERFLOW", "INTEGER_VALUES",
                     "CONSTANT_TARGET", "CONSTANT_PREDICTION", "TARGET_IN_INPUTS", "DISPLAY_ROUNDING")


def test_a_finding_is_a_code_and_a_message_printed_wrapped():
    finding = Finding("CONSTANT_TARGET", "word " * 40)
    assert str(finding).startswith("CONSTANT_TARGET: word")
    assert max(len(line) for line in str(finding).splitlines()) <= 100
    with pytest.raises(AttributeError):
        finding.code = "OTHER"


# ---------------------------------------------------------------- healthy data


def test_healthy_data_gives_no_findings():
    metric = MeanSquaredError()
    metric.update(Y, P)
    assert diagnose(Y, P, x=X, shown=f"{metric.result():.4f}", metric=metric) == []
    assert diagnose(Y[:, 0], P[:, 0]) == []
    assert diagnose(Y.astype(np.float32), P.astype(np.float16)) == []  # errors far above 3e-8


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
    assert diagnose(y, prediction, x=rng.normal(size=(n, 5))) == []


def test_findings_come_in_the_documented_order():
    y = np.zeros((N, 1), dtype=np.int64)
    found = codes(y[:, 0], y, x=X, shown="0.00", metric=MeanSquaredError())
    assert found == ["SHAPE_BROADCAST", "EMPTY_METRIC", "INTEGER_VALUES", "INTEGER_VALUES",
                     "CONSTANT_TARGET", "CONSTANT_PREDICTION"]
    assert set(found) <= set(CODES)


def test_messages_can_be_printed_in_a_notebook():
    # The book's tests reject stored outputs that look like warnings; findings are printed there.
    y = np.zeros((N, 1), dtype=np.int64)
    findings = diagnose(y[:, 0], y, x=X, shown="0.00", metric=MeanSquaredError())
    findings += diagnose(TINY_Y.astype(np.float16), TINY_P.astype(np.float16), x=np.c_[X, TINY_Y],
                         shown="0.0000")
    assert {f.code for f in findings} == set(CODES)
    for finding in findings:
        assert not re.search(r"\b\w*Warning\b|\bWARNING\b", str(finding)), finding


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


# ---------------------------------------------------------------- FLOAT16_UNDERFLOW

TINY_Y = 1e-4 * Y  # errors about 3e-5: squares about 1e-9, below float16's 3e-8
TINY_P = 1e-4 * P


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


def test_integer_targets_are_reported():
    fractions = np.linspace(0.05, 0.95, N)  # e.g. a min-max scaled target
    truncated = fractions.astype(np.int32)
    finding = only("INTEGER_VALUES", truncated, fractions * 0.9)
    assert "integer dtype int32 and holds the single value 0" in finding.message


def test_rounded_predictions_are_reported(torch):
    finding = only("INTEGER_VALUES", Y, np.round(P))
    assert finding.message.startswith("y_pred has only whole numbers")
    finding = only("INTEGER_VALUES", Y, torch.from_numpy(P).long())
    assert finding.message.startswith("y_pred has the integer dtype int64")


def test_whole_number_float_targets_are_not_reported():
    counts = np.arange(N, dtype=np.float64)[:, None]  # a count target is fine as floats
    assert "INTEGER_VALUES" not in codes(counts, counts + 0.3 * RNG.normal(size=(N, 1)))
    # One whole-number float prediction is a constant, reported as that alone.
    assert codes(Y, np.full((N, 1), 100.0)) == ["CONSTANT_PREDICTION"]


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


def test_correlated_but_not_copied_inputs_are_fine():
    close = Y + 0.01 * RNG.normal(size=(N, 1))  # correlation about 0.9999, not 1
    assert "TARGET_IN_INPUTS" not in codes(Y, P, x=np.c_[X, close, np.ones(N)])
    # Below five samples an unrelated column can match by chance, so nothing is checked.
    assert "TARGET_IN_INPUTS" not in codes(Y[:4], P[:4], x=Y[:4])
    # A constant target is reported as such, not as equal to every constant column.
    assert codes(np.ones(N), P[:, 0], x=np.ones((N, 2))) == ["CONSTANT_TARGET"]


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
    (([1.0, 2.0], [np.inf, 2.0]), {}, ValueError, r"y_pred must be finite"),
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
    with pytest.raises((ValueError, TypeError)) as error:
        diagnose(arguments["y_true"], arguments["y_pred"])
    assert "y_true" in str(error.value) or "y_pred" in str(error.value), str(error.value)
