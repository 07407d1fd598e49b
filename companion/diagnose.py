"""Why does an MSE read 0, or a wrong number? Checks on the arrays it was computed from.

:func:`diagnose` looks at the targets, the predictions and, optionally, the inputs ``x``, the
text that showed the number (``shown``) and the metric object that produced it (``metric``).
It returns a list of :class:`Finding`, each with a stable ``code`` and a ``message`` that says
what was found, with the numbers, and what to do. Healthy data gives an empty list.

>>> from companion.diagnose import diagnose
>>> diagnose([0.5, 1.5, 2.5], [0.6, 1.4, 2.5])
[]
>>> [finding.code for finding in diagnose([0.5, 1.5, 2.5], [1.5, 1.5, 1.5])]
['CONSTANT_PREDICTION']

The codes, in the order the checks run:

``SHAPE_BROADCAST``
    ``y_true`` and ``y_pred`` have different shapes that broadcast, such as (N,) and (N, 1):
    an elementwise loss compares every target with every prediction.
``EMPTY_METRIC``
    ``metric`` (a ``keras.metrics`` mean metric or a :mod:`companion.metrics` object) has seen
    no data; Keras returns 0.0 from it.
``FLOAT16_UNDERFLOW``
    the data or the metric are float16, and squared errors below 2**-25 (about 3e-8) become 0
    there, so the MSE computed in float16 is far below the true one.
``INTEGER_VALUES``
    the targets or predictions have an integer dtype, or the predictions are several whole
    numbers and nothing else: a cast or a rounding truncated them.
``CONSTANT_TARGET``, ``CONSTANT_PREDICTION``
    every target (every prediction) is the same number.
``TARGET_IN_INPUTS``
    a column of ``x`` is the target or an affine copy of it (leakage, or ``fit(y, y)``);
    checked from five samples on.
``DISPLAY_ROUNDING``
    ``shown`` reads 0 but the MSE is not 0: the format rounded it away.

Inputs may be NumPy arrays, lists, TensorFlow or PyTorch tensors; neither framework is
imported, and the inputs are never modified.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

import numpy as np

from companion import _validation as check

__all__ = ["Finding", "diagnose"]

# A float32 copy of a column differs from the float64 original in the 8th digit, so an affine
# copy stored in float32 has a correlation of 1 - 1e-7 or so, never exactly 1.
_AFFINE_CORRELATION = 1 - 1e-6
# Values that differ by no more than float32 rounding are one value.
_CONSTANT_RTOL = 1e-6
# FLOAT16_UNDERFLOW is reported when the squared errors lost to underflow carry this share of
# the true total; a few isolated tiny errors that vanish do not change the MSE.
_UNDERFLOW_SHARE = 0.01
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Finding:
    """One reason to distrust the number: a stable ``code`` and a plain-language ``message``.

    >>> print(Finding("CONSTANT_TARGET", "y_true is constant."))
    CONSTANT_TARGET: y_true is constant.
    """

    code: str
    message: str

    def __str__(self) -> str:
        return textwrap.fill(f"{self.code}: {self.message}", width=100, subsequent_indent="    ")


def diagnose(y_true, y_pred, *, x=None, shown=None, metric=None) -> list[Finding]:
    """Check the arrays behind a suspicious regression metric; ``[]`` when nothing is wrong.

    ``y_true`` and ``y_pred`` have one row per sample. ``x`` (optional) holds the model's
    inputs, one row per sample. ``shown`` (optional) is the text that displayed the metric,
    such as ``"0.0000"`` or ``"mse: 0.0000"`` (its last number is read). ``metric``
    (optional) is the metric object that produced it.

    >>> [f.code for f in diagnose([1.0, 2.0, 3.0], [1.0, 2.0, 3.00001], shown="MSE: 0.0000")]
    ['DISPLAY_ROUNDING']
    """
    y_true, true_dtype = _as_array("y_true", y_true)
    y_pred, pred_dtype = _as_array("y_pred", y_pred, length=len(y_true))
    if x is not None:
        x, _ = _as_array("x", x, length=len(y_true))
    shown_value = _parse_shown(shown)
    metric_count, metric_dtype = _inspect_metric(metric)

    findings = []
    y_true64, y_pred64, finding = _align(y_true, y_pred)
    findings += [finding] if finding else []
    squared = (y_true64 - y_pred64) ** 2
    mse = float(np.mean(squared))

    if metric_count is not None and metric_count == 0:
        findings.append(_empty_metric(metric))
    half = [name for name, dtype in (("y_true", true_dtype), ("y_pred", pred_dtype),
                                     ("metric", metric_dtype)) if dtype == "float16"]
    if half:
        findings += _float16_underflow(y_true64, y_pred64, squared, half)
    findings += _integer_values(y_true, true_dtype, y_pred, pred_dtype)
    constant_target = _is_constant(y_true64)
    if constant_target:
        findings.append(_constant_target(y_true64))
    if _is_constant(y_pred64):
        findings.append(_constant_prediction(y_true64, y_pred64, mse))
    # With two samples every column is an affine function of the target, and with three or
    # four an unrelated column comes within 1e-6 of a correlation of 1 too often.
    if x is not None and not constant_target and len(x) >= 5:
        findings += _target_in_inputs(x, y_true64)
    if shown_value is not None:
        findings += _display_rounding(shown, shown_value, mse, y_true64)
    return findings


# ------------------------------------------------------------------------ input conversion


def _as_array(name: str, value, *, length=None) -> tuple[np.ndarray, str]:
    """A private NumPy copy of ``value`` and the name of its original dtype."""
    array = check.data_array(name, value, length=length, length_of="y_true")
    # A copy: nothing below touches the caller's data.
    return np.array(array, copy=True), _tensor_dtype(value) or array.dtype.name


def _tensor_dtype(value) -> str | None:
    """A tensor's own dtype name: the conversion to NumPy turns a bfloat16 into float32."""
    if hasattr(value, "detach"):  # a PyTorch tensor
        return str(value.dtype).removeprefix("torch.")
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # TF tensor or variable
        return getattr(value.dtype, "name", None) or str(value.dtype)  # tf.DType or a Keras dtype string
    return None


def _parse_shown(shown) -> float | None:
    if shown is None:
        return None
    if not isinstance(shown, str):
        raise TypeError(
            f"shown must be the text that displayed the metric, a str such as '0.0000', "
            f"got {type(shown).__name__}: {shown!r}"
        )
    numbers = _NUMBER.findall(shown)
    if not numbers:
        raise ValueError(f"shown must contain the displayed number, got {shown!r}")
    return float(numbers[-1])


def _inspect_metric(metric) -> tuple[float | None, str | None]:
    """The metric's sample count and its compute dtype (Keras), read without calling result()."""
    if metric is None:
        return None, None
    count = getattr(metric, "count", None)
    if count is None or callable(count):
        raise TypeError(
            f"metric must keep a running count of samples, as keras.metrics.Mean, "
            f"MeanSquaredError and the companion.metrics classes do, got {type(metric).__name__}"
        )
    if hasattr(count, "numpy"):  # a Keras variable
        count = count.numpy()
    dtype = getattr(metric, "dtype", None)
    return float(np.asarray(count)), (str(dtype) if dtype is not None else None)


# ------------------------------------------------------------------------ the checks


def _align(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, Finding | None]:
    """Both as float64 (N, outputs) arrays compared elementwise, and a finding if shapes differ."""
    y_true64, y_pred64 = y_true.astype(np.float64), y_pred.astype(np.float64)
    if y_true.shape == y_pred.shape:
        n = len(y_true)
        return y_true64.reshape(n, -1), y_pred64.reshape(n, -1), None
    try:
        broadcast = np.broadcast_shapes(y_true.shape, y_pred.shape)
    except ValueError:
        raise ValueError(
            f"y_true has shape {y_true.shape} and y_pred has shape {y_pred.shape}: they can be "
            f"neither compared elementwise nor broadcast; expected one prediction per target"
        ) from None
    if y_true.size == y_pred.size:
        n = len(y_true)
        aligned = y_true64.reshape(n, -1), y_pred64.reshape(n, -1)
        if int(np.prod(broadcast)) == y_true.size:  # e.g. (1,) and (1, 1): nothing is repeated
            return *aligned, None
        wrong = float(np.mean((y_true64 - y_pred64) ** 2))
        right = float(np.mean((aligned[0] - aligned[1]) ** 2))
        fix = (
            "Give them the same shape before any loss or metric: "
            "y_pred.reshape(y_true.shape) (PyTorch: y_pred.view_as(y_true))."
        )
        message = (
            f"y_true has shape {y_true.shape} and y_pred has shape {y_pred.shape}. An "
            f"elementwise loss broadcasts them to {broadcast} and averages all "
            f"{int(np.prod(broadcast))} pairs, every target against every prediction: that MSE "
            f"is {_number(wrong)}, the per-sample MSE is {_number(right)}. torch.nn.MSELoss does "
            f"this and only warns. {fix}"
        )
        return *aligned, Finding("SHAPE_BROADCAST", message)
    # Different sizes, e.g. 3 targets per sample and 1 prediction: what broadcasting compares.
    y_true64, y_pred64 = np.broadcast_arrays(y_true64, y_pred64)
    n = len(y_true)
    message = (
        f"y_true has shape {y_true.shape} and y_pred has shape {y_pred.shape}, which broadcast "
        f"to {broadcast}: each prediction is repeated against several targets (or the "
        f"reverse). Check that the model has one output per target."
    )
    return y_true64.reshape(n, -1), y_pred64.reshape(n, -1), Finding("SHAPE_BROADCAST", message)


def _empty_metric(metric) -> Finding:
    name = getattr(metric, "name", type(metric).__name__)
    return Finding(
        "EMPTY_METRIC",
        f"the metric {name!r} ({type(metric).__name__}) has seen no data (count 0): it was read "
        f"before any update, or right after a reset. A Keras metric returns 0.0 there "
        f"(total / count with divide_no_nan), which looks like a perfect score. Read it after "
        f"update_state() and before reset_state(); companion.metrics raises instead.",
    )


def _float16_underflow(y_true64, y_pred64, squared, half) -> list[Finding]:
    # What a float16 computation sees: both sides rounded to float16, squared in float16.
    with np.errstate(over="ignore"):  # float16 overflows above 65504: inf is what it computes
        squared16 = (y_true64.astype(np.float16) - y_pred64.astype(np.float16)) ** 2
    lost = (squared16 == 0) & (squared > 0)
    total = float(np.sum(squared))
    if total == 0 or float(np.sum(squared[lost])) < _UNDERFLOW_SHARE * total:
        return []
    mse16 = float(np.mean(squared16, dtype=np.float64))
    return [Finding(
        "FLOAT16_UNDERFLOW",
        f"{' and '.join(half)} {'is' if len(half) == 1 else 'are'} float16, where a square "
        f"below 2**-25 (about 3e-8) rounds to 0: {int(lost.sum())} of {lost.size} squared errors "
        f"vanish, and the MSE computed in float16 is {_number(mse16)} instead of "
        f"{_number(float(np.mean(squared)))}. Compute losses and metrics in float32 (cast the "
        f"predictions first: .astype('float32'), .float()), or rescale the target.",
    )]


def _integer_values(y_true, true_dtype, y_pred, pred_dtype) -> list[Finding]:
    findings = []
    if y_true.dtype.kind in "biu":
        values = np.unique(y_true)
        findings.append(Finding(
            "INTEGER_VALUES",
            f"y_true has the integer dtype {true_dtype} and holds {_distinct(values)}. If it "
            f"was cast from a continuous target (astype(int), torch .long(), tf.cast), every "
            f"fraction was truncated. Keep regression targets in floating point.",
        ))
    values = np.unique(y_pred)
    # A float prediction that is one whole number (a constant 0.0, say) is CONSTANT_PREDICTION's
    # case; several whole numbers and nothing else is what np.round or a cast leaves.
    whole = y_pred.dtype.kind in "biu" or (len(values) > 1 and bool(np.all(values == np.round(values))))
    if whole:
        kind = f"the integer dtype {pred_dtype}" if y_pred.dtype.kind in "biu" else "only whole numbers"
        findings.append(Finding(
            "INTEGER_VALUES",
            f"y_pred has {kind} ({_distinct(values)}): the predictions were rounded or cast "
            f"to int, which truncates them. Compute the MSE on the raw floating-point output "
            f"of the model.",
        ))
    return findings


def _number(value: float) -> str:
    """Four significant digits, trailing zeros kept: 1.000 is not a rounded 1; 0 is 0."""
    return "0" if value == 0 else f"{value:#.4g}".rstrip(".")


def _distinct(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:5])
    if len(values) == 1:
        return f"the single value {shown}"
    return f"{len(values)} distinct values ({shown}{', ...' if len(values) > 5 else ''})"


def _is_constant(values: np.ndarray) -> bool:
    """Whether every output column holds one value, up to float32 rounding."""
    if len(values) < 2:  # one sample is trivially constant, and says nothing
        return False
    spread = np.ptp(values, axis=0)
    return bool(np.all(spread <= _CONSTANT_RTOL * np.max(np.abs(values), axis=0)))


def _level(values: np.ndarray) -> str:
    return ", ".join(_number(v) for v in values[0])


def _constant_target(y_true64) -> Finding:
    return Finding("CONSTANT_TARGET", (
        f"every value of y_true is {_level(y_true64)}. There is nothing to predict, and a "
        f"model that outputs that constant gets an MSE of 0. Check how the target was built: "
        f"an integer cast, a wrong column, a filter that kept one value."
    ))


def _constant_prediction(y_true64, y_pred64, mse: float) -> Finding:
    message = f"every value of y_pred is {_level(y_pred64)}."
    if y_true64.shape[1] == 1:
        # For a constant c: mean((y - c)²) = Var(y) + (mean(y) - c)², at least Var(y).
        variance, bias = float(np.var(y_true64)), float(np.mean(y_true64 - y_pred64))
        message += (f" Its MSE is Var(y_true) + bias² = {_number(variance)} + {_number(bias ** 2)}"
                    f" = {_number(mse)}:")
        message += " no constant does better than Var(y_true)."
    return Finding("CONSTANT_PREDICTION", message + (
        " The model ignores its inputs: look for dead ReLUs (zero-initialised kernels with "
        "ReLU), a saturated output activation, a learning rate so high that training collapsed."
    ))


def _target_in_inputs(x: np.ndarray, y_true64: np.ndarray) -> list[Finding]:
    features = x.reshape(len(x), -1).astype(np.float64)
    x_std, y_std = features.std(axis=0), y_true64.std(axis=0)
    columns, outputs = np.flatnonzero(x_std > 0), np.flatnonzero(y_std > 0)
    zx = (features[:, columns] - features[:, columns].mean(axis=0)) / x_std[columns]
    zy = (y_true64[:, outputs] - y_true64[:, outputs].mean(axis=0)) / y_std[outputs]
    correlation = zx.T @ zy / len(x)  # (usable features, usable outputs)
    findings = []
    for i, j in zip(*np.nonzero(np.abs(correlation) >= _AFFINE_CORRELATION)):
        column, output = int(columns[i]), int(outputs[j])
        target = "y_true" if y_true64.shape[1] == 1 else f"y_true[:, {output}]"
        if np.array_equal(features[:, column], y_true64[:, output]):
            how = f"equal to {target}"
        else:
            slope = correlation[i, j] * y_std[output] / x_std[column]
            intercept = y_true64[:, output].mean() - slope * features[:, column].mean()
            if abs(intercept) <= 1e-6 * (abs(y_true64[:, output]).max()):
                intercept = 0.0  # float rounding of a zero intercept
            sign = "+" if intercept >= 0 else "-"
            how = (f"an affine copy of {target} ({target} = {_number(slope)} * x[:, {column}] "
                   f"{sign} {_number(abs(intercept))})")
        findings.append(Finding(
            "TARGET_IN_INPUTS",
            f"column {column} of x is {how}: the model can read the answer from its input, so "
            f"a small MSE says nothing about what it learned. Remove the column (and check "
            f"that the call was not fit(y, y)).",
        ))
    return findings


def _display_rounding(shown: str, shown_value: float, mse: float, y_true64) -> list[Finding]:
    if shown_value != 0 or mse == 0:
        return []
    text = _NUMBER.findall(shown)[-1]
    if "e" in text.lower():
        return []  # a relative format never shows a nonzero number as 0: it is another number
    decimals = len(text.split(".")[1]) if "." in text else 0
    if mse >= 0.5 * 10.0**-decimals:
        return []  # this MSE would not round to 0: the text shows some other number
    variance = float(np.var(y_true64))
    scale = (
        f" Judge it against the spread of the target: R² = 1 - MSE / Var(y_true) = "
        f"{1 - mse / variance:.4f}, RMSE / std(y_true) = {np.sqrt(mse / variance):.4f}."
        if variance > 0 else ""
    )
    return [Finding(
        "DISPLAY_ROUNDING",
        f"{shown!r} reads 0, but the MSE of these arrays is {_number(mse)}: a fixed-point format "
        f"with {decimals} decimals rounds it away. Print it with a relative format "
        f"(f'{{mse:.4g}}' or f'{{mse:.4e}}', as Keras' progress bar does below 1e-3).{scale}",
    )]
