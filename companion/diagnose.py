"""Why does an MSE read 0, or a wrong number? Checks on the arrays it was computed from.

:func:`diagnose` looks at the targets, the predictions and, optionally, the inputs ``x``, the
text that showed the number (``shown``) and the metric object that produced it (``metric``).
It returns a :class:`Diagnosis`: a list of :class:`Finding`, each with a stable ``code`` and a
``message`` that says what was found, with the numbers, and what to do, and two fields that are
always there, ``mse`` and ``r2`` (R² = 1 - MSE / Var(y_true), the MSE without its units).
Healthy data gives an empty list.

>>> from companion.diagnose import diagnose
>>> result = diagnose([0.5, 1.5, 2.5], [0.6, 1.4, 2.5])
>>> result, round(result.mse, 4), round(result.r2, 4)
([], 0.0067, 0.99)
>>> [finding.code for finding in diagnose([0.5, 1.5, 2.5], [1.5, 1.5, 1.5])]
['CONSTANT_PREDICTION']

The codes, in the order the checks run:

``NAN_PREDICTIONS``
    ``y_pred`` holds NaN or inf (a diverged model, a float16 overflow): the MSE is nan or inf.
    The checks below look at the samples whose predictions are finite.
``SHAPE_BROADCAST``
    ``y_true`` and ``y_pred`` have different shapes that broadcast, such as (N,) and (N, 1):
    an elementwise loss compares every target with every prediction.
``EMPTY_METRIC``
    ``metric`` (a ``keras.metrics`` mean metric or a :mod:`companion.metrics` object) has seen
    no data; Keras returns 0.0 from it.
``METRIC_COUNT_MISMATCH``
    ``metric`` has counted another number of samples than ``y_true`` holds (1-D batches that
    Keras counts once each, a metric not reset between epochs, sample weights, lost batches).
``FLOAT16_UNDERFLOW``
    the data or the metric are float16, and squared errors below 2**-25 (about 3e-8) become 0
    there, so the MSE computed in float16 is far below the true one.
``INTEGER_VALUES``
    integers that change the number: predictions of an integer dtype (a cast truncated them),
    float predictions rounded to whole numbers while the targets have fractions, or two
    integer dtypes whose difference wraps around or overflows. Integer targets alone are fine.
``CONSTANT_TARGET``
    every target is the same number.
``PREDICTIONS_EQUAL_TARGETS``
    every prediction equals its target (an MSE of exactly 0, or 0 up to float32 rounding)
    while the targets vary: the model was scored on its own training set, or the target leaked.
``CONSTANT_PREDICTION``, ``NEAR_CONSTANT_PREDICTION``
    every prediction is the same number, or the predictions spread less than 5% as widely as
    the targets: the model barely uses its inputs.
``NO_BETTER_THAN_MEAN``
    R² <= 0: the model does no better than predicting the mean of ``y_true`` everywhere
    (reported when the predictions vary; a constant is the case above).
``TARGET_IN_INPUTS``
    a column of ``x`` is an affine copy of the target (checked from five samples on), or ranks
    the samples almost as the target does (Spearman's rank correlation of 0.99 or more, from
    ten samples on): a noisy, rounded or monotonically transformed copy (exp, a cube), leakage.
    A column that determines the target by an honest exact law is reported too: the data
    cannot tell the two apart, and the message says so.
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

__all__ = ["Diagnosis", "Finding", "diagnose"]

# A float32 copy of a column differs from the float64 original in the 8th digit, so an affine
# copy stored in float32 has a correlation of 1 - 1e-7 or so, never exactly 1.
_AFFINE_CORRELATION = 1 - 1e-6
# A copy of the target with noise of 10% of its spread, or rounded to a tenth of its standard
# deviation, still has a rank correlation above 0.99; the honest features of real data sets sit
# far below (scikit-learn's diabetes features: 0.59 at most). An unrelated column's rank
# correlation is 0 with a standard deviation of 1/sqrt(N - 1): below ten samples it reaches
# 0.99 by chance too often (once in 20,000 columns at eight samples, once in 60 at five).
_RANK_CORRELATION = 0.99
_RANK_MIN_SAMPLES = 10
# Values that differ by no more than float32 rounding are one value.
_CONSTANT_RTOL = 1e-6
# NEAR_CONSTANT_PREDICTION: predictions whose spread is below this share of the targets'. A
# least-squares fit spreads sqrt(R²) as widely as its target, so 5% is an R² of 0.0025.
_NEAR_CONSTANT_SPREAD = 0.05
# FLOAT16_UNDERFLOW is reported when the squared errors lost to underflow carry this share of
# the true total; a few isolated tiny errors that vanish do not change the MSE.
_UNDERFLOW_SHARE = 0.01
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\b(?:nan|inf)\b", re.IGNORECASE)
# The names a metric goes by in a printed line: "mse: 0.0000", "val_mse=0.0", "MSE 0".
_MSE_LABELS = ("mse", "mean_squared_error")


@dataclass(frozen=True)
class Finding:
    """One reason to distrust the number: a stable ``code`` and a plain-language ``message``.

    >>> print(Finding("CONSTANT_TARGET", "y_true is constant."))
    CONSTANT_TARGET: y_true is constant.
    """

    code: str
    message: str

    def __str__(self) -> str:
        return textwrap.fill(f"{self.code}: {self.message}", width=88, subsequent_indent="    ")


class Diagnosis(list):
    """What :func:`diagnose` returns: the list of findings, with the MSE and R² always attached.

    ``mse`` is the per-sample mean squared error of the arrays (nan or inf where ``y_pred``
    holds NaN or inf, as in every framework). ``r2`` is 1 - MSE / Var(y_true), pooled over the
    outputs: 1 is perfect, 0 is what always predicting the mean scores, below 0 is worse; it
    is nan where ``y_true`` does not vary (a constant, a single sample).

    >>> result = diagnose([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    >>> [f.code for f in result], round(result.mse, 4), round(result.r2, 4)
    (['CONSTANT_PREDICTION'], 0.6667, 0.0)
    """

    def __init__(self, findings=(), *, mse: float, r2: float):
        super().__init__(findings)
        self.mse, self.r2 = mse, r2


def diagnose(y_true, y_pred, *, x=None, shown=None, metric=None) -> Diagnosis:
    """Check the arrays behind a suspicious regression metric; ``[]`` when nothing is wrong.

    ``y_true`` and ``y_pred`` have one row per sample; ``y_pred`` may hold NaN or inf (that is
    a finding), ``y_true`` may not. ``x`` (optional) holds the model's inputs, one row per
    sample. ``shown`` (optional) is the text that displayed the metric, such as ``"0.0000"``,
    ``"mse: 0.0000"`` or ``"0.0000 (epoch 10)"``: the number after "mse" (or the metric's
    name) is read, else the first number written with a decimal point or an exponent, else the
    first number. ``metric`` (optional) is the metric object that produced it: anything with a
    running ``count`` of samples, such as ``keras.metrics.MeanSquaredError`` or
    ``companion.metrics.MeanSquaredError``.

    >>> [f.code for f in diagnose([1.0, 2.0, 3.0], [1.0, 2.0, 3.00001], shown="MSE: 0.0000")]
    ['DISPLAY_ROUNDING']
    """
    y_true, true_dtype = _as_array("y_true", y_true)
    y_pred, pred_dtype = _as_array("y_pred", y_pred, length=len(y_true), finite=False)
    if x is not None:
        x, _ = _as_array("x", x, length=len(y_true))
    metric_count, metric_dtype = _inspect_metric(metric)
    shown_text = _parse_shown(shown, getattr(metric, "name", None))
    samples = len(y_true)

    nan, inf, values = int(np.isnan(y_pred).sum()), int(np.isinf(y_pred).sum()), y_pred.size
    finite = np.all(np.isfinite(y_pred.reshape(samples, -1)), axis=1)
    if not finite.any():
        finding = _nan_predictions(nan, inf, values, pred_dtype, kept=None)
        return Diagnosis([finding], mse=np.nan if nan else np.inf, r2=np.nan)
    if not finite.all():  # every check below looks at the samples with finite predictions
        y_true, y_pred = y_true[finite], y_pred[finite]
        x = None if x is None else x[finite]

    findings = []
    y_true64, y_pred64, finding = _align(y_true, y_pred)
    squared = (y_true64 - y_pred64) ** 2
    mse = float(np.mean(squared))
    constant_target = _is_constant(y_true64)
    r2 = np.nan if constant_target else _r2(y_true64, mse)
    if nan or inf:
        kept = (int(finite.sum()), samples, mse, r2)
        findings.append(_nan_predictions(nan, inf, values, pred_dtype, kept=kept))
    findings += [finding] if finding else []

    if metric_count is not None and metric_count == 0:
        findings.append(_empty_metric(metric))
    elif metric_count is not None and not np.isclose(metric_count, samples, rtol=1e-6, atol=0):
        findings.append(_metric_count_mismatch(metric, metric_count, samples, mse))
    half = [name for name, dtype in (("y_true", true_dtype), ("y_pred", pred_dtype),
                                     ("metric", metric_dtype)) if dtype == "float16"]
    if half:
        findings += _float16_underflow(y_true64, y_pred64, squared, half)
    equal = _equal(y_true64, y_pred64)
    findings += _integer_values(y_true, true_dtype, y_pred, pred_dtype, equal=equal, mse=mse)
    if constant_target:
        integer = true_dtype if y_true.dtype.kind in "biu" else None
        findings.append(_constant_target(y_true64, integer))
    elif equal and np.isfinite(r2):  # r2 is nan for a single sample: nothing varies
        findings.append(_predictions_equal_targets(mse))
    # One finding says why the predictions score as they do: a constant, a near-constant, or
    # varying predictions that still do no better than the mean.
    if _is_constant(y_pred64):
        findings.append(_constant_prediction(y_true64, y_pred64, mse, r2))
    elif not constant_target and _spread(y_pred64, y_true64) < _NEAR_CONSTANT_SPREAD:
        findings.append(_near_constant_prediction(y_true64, y_pred64, r2))
    elif r2 <= 0:
        findings.append(_no_better_than_mean(y_true64, mse, r2))
    if x is not None and not constant_target:
        findings += _target_in_inputs(x, y_true64)
    if shown_text is not None:
        findings += _display_rounding(shown, shown_text, mse, y_true64)
    if nan or inf:  # the MSE and R² of all the samples, as any framework computes them
        mse, r2 = (np.nan, np.nan) if nan else (np.inf, np.nan if constant_target else -np.inf)
    return Diagnosis(findings, mse=float(mse), r2=float(r2))


# ------------------------------------------------------------------------ input conversion


def _as_array(name: str, value, *, length=None, finite=True) -> tuple[np.ndarray, str]:
    """A private NumPy copy of ``value`` and the name of its original dtype."""
    array = check.to_numpy(name, value)
    if not finite and array.dtype.kind == "f":
        # NaN and inf are a finding here, not bad input: check everything else about the array.
        check.data_array(name, np.where(np.isfinite(array), array, 0), length=length,
                         length_of="y_true")
    else:
        array = check.data_array(name, array, length=length, length_of="y_true")
    # A copy: nothing below touches the caller's data.
    return np.array(array, copy=True), _tensor_dtype(value) or array.dtype.name


def _tensor_dtype(value) -> str | None:
    """A tensor's own dtype name: the conversion to NumPy turns a bfloat16 into float32."""
    if hasattr(value, "detach"):  # a PyTorch tensor
        return str(value.dtype).removeprefix("torch.")
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # TF tensor or variable
        return getattr(value.dtype, "name", None) or str(value.dtype)  # tf.DType or a Keras dtype string
    return None


def _parse_shown(shown, metric_name) -> str | None:
    """The displayed number, as written: "0.0000 (epoch 10)" shows 0.0000, not 10."""
    if shown is None:
        return None
    if not isinstance(shown, str):
        raise TypeError(
            f"shown must be the text that displayed the metric, a str such as '0.0000', "
            f"got {type(shown).__name__}: {shown!r}"
        )
    numbers = list(_NUMBER.finditer(shown))
    if not numbers:
        raise ValueError(f"shown must contain the displayed number, got {shown!r}")
    labels = _MSE_LABELS + ((metric_name.lower(),) if isinstance(metric_name, str) else ())
    for number in numbers:  # a number right after the metric's name: "epoch 3 - mse: 0.0000"
        before = shown[:number.start()].rstrip(" \t:=").lower()
        # "val_mse: 0.0000" names the metric; "rmse: 0.0100" names another one.
        named = [label for label in labels if before.endswith(label)]
        if any(not before[:-len(label)][-1:].isalpha() for label in named):
            return number.group()
    # An epoch or a step is a whole number; a metric is printed with decimals or an exponent.
    written_as_metric = [n for n in numbers if not n.group().lstrip("+-").isdigit()]
    return (written_as_metric or numbers)[0].group()


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
    dtype = getattr(metric, "dtype", None)
    return _state_number(count), (str(dtype) if dtype is not None else None)


def _state_number(value) -> float:
    """A metric's state variable (a Keras variable, or a plain number) as a float."""
    if hasattr(value, "numpy"):  # a Keras variable
        value = value.numpy()
    return float(np.asarray(value))


# ------------------------------------------------------------------------ the checks


def _nan_predictions(nan: int, inf: int, size: int, dtype: str, *, kept) -> Finding:
    counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
    value = "nan" if nan else "inf"
    message = (f"y_pred holds {counts} among its {size} values, so the MSE is {value}: Keras and "
               f"PyTorch print {value}, and a Keras metric stays {value} from that batch on.")
    if kept is None:
        message += " No prediction is finite, so nothing else can be checked."
    else:
        finite, samples, mse, r2 = kept
        r2_text = f", R² {r2:.4f}" if np.isfinite(r2) else ""
        message += (f" The checks below look at the {finite} of {samples} samples whose "
                    f"predictions are finite (MSE {_number(mse)}{r2_text}).")
    message += (" A model outputs NaN when training diverged (a learning rate too high, exploding "
                "gradients: find the first epoch whose loss is nan), after a log or square root of "
                "a negative number or a division by 0, or when its inputs hold NaN")
    if dtype == "float16":
        message += "; y_pred is float16, which overflows to inf above 65504: compute it in float32"
    return Finding("NAN_PREDICTIONS", message + ".")


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


def _metric_count_mismatch(metric, count: float, samples: int, mse: float) -> Finding:
    name = getattr(metric, "name", type(metric).__name__)
    total = getattr(metric, "total", None)
    if total is None:
        result = f"The MSE of these arrays is {_number(mse)}."
    else:
        reads = _number(_state_number(total) / count)
        result = f"It reads total / count = {reads}; the MSE of these arrays is {_number(mse)}."
    times = count / samples
    if count < samples:
        why = ("It saw fewer samples: a loop that stopped early or dropped the last partial batch; "
               "1-D batches of shape (batch,), which Keras' MeanSquaredError averages to one "
               "number and counts once (its count is then the number of batches: give targets and "
               "predictions the shape (N, 1)); or sample weights, whose sum is the count.")
    elif times == round(times):
        why = (f"It counted {times:g} times as many: it was updated {times:g} times with data of "
               f"this size and never reset in between (call reset_state() at the start of every "
               f"epoch).")
    else:
        why = ("It counted more: it was not reset between epochs or data sets, saw other data as "
               "well, or was updated with sample weights, whose sum is the count.")
    return Finding(
        "METRIC_COUNT_MISMATCH",
        f"the metric {name!r} ({type(metric).__name__}) has count {count:g}, but y_true holds "
        f"{samples} samples. {why} {result}",
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


def _integer_values(y_true, true_dtype, y_pred, pred_dtype, *, equal: bool,
                    mse: float) -> list[Finding]:
    """Integers where they change the number; integer targets alone are legitimate (counts)."""
    if y_true.dtype.kind in "iu" and y_pred.dtype.kind in "iu" and y_true.size == y_pred.size:
        wrapped = _wrapped_difference(y_true, y_pred, true_dtype, pred_dtype, mse)
        if wrapped:
            return [wrapped]
    if equal:  # PREDICTIONS_EQUAL_TARGETS or CONSTANT_TARGET says what identical arrays mean
        return []
    values = np.unique(y_pred)
    if y_pred.dtype.kind in "biu":
        return [Finding(
            "INTEGER_VALUES",
            f"y_pred has the integer dtype {pred_dtype} ({_distinct(values)}): a regression "
            f"model outputs floats, so a cast (astype(int), torch .long(), tf.cast) truncated "
            f"every fraction of the predictions. Compute the MSE on the raw floating-point "
            f"output of the model.",
        )]
    # Several whole numbers and nothing else, against targets with fractions, is what np.round
    # or a cast leaves. (Whole-number predictions of whole-number targets may be honest.)
    target_fractions = y_true.dtype.kind == "f" and not np.array_equal(y_true, np.round(y_true))
    if target_fractions and len(values) > 1 and np.array_equal(values, np.round(values)):
        return [Finding(
            "INTEGER_VALUES",
            f"y_pred holds only whole numbers ({_distinct(values)}) while y_true has fractions: "
            f"the predictions were rounded or cast to int, which changes every error. Compute "
            f"the MSE on the raw floating-point output of the model.",
        )]
    return []


def _wrapped_difference(y_true, y_pred, true_dtype, pred_dtype, mse: float) -> Finding | None:
    """Two integer dtypes: NumPy, and Keras' MSE function and metric (not its loss object, which
    casts to float32 first), compute the difference and its square in their common integer
    type, which wraps around (0 - 100 is 156 in uint8, and 156² is 16)."""
    common = np.result_type(y_true.dtype, y_pred.dtype)
    t = y_true.reshape(len(y_true), -1).astype(common)
    p = y_pred.reshape(len(y_pred), -1).astype(common)
    difference = t - p  # NumPy integer arrays wrap around silently
    squares = difference * difference
    native = float(np.mean(squares, dtype=np.float64))
    if native == mse:
        return None
    true_squares = (t.astype(np.float64) - p.astype(np.float64)) ** 2
    i = np.flatnonzero((squares.astype(np.float64) != true_squares).reshape(-1))[0]
    a, b = t.reshape(-1)[i], p.reshape(-1)[i]
    return Finding(
        "INTEGER_VALUES",
        f"y_true is {true_dtype} and y_pred is {pred_dtype}: np.mean((y_true - y_pred) ** 2), "
        f"keras.losses.mean_squared_error and Keras' MSE metric compute the errors in "
        f"{common.name}, which wraps around outside its range ({a} - {b} gives {difference.reshape(-1)[i]} and a squared "
        f"error of {squares.reshape(-1)[i]}, not {true_squares.reshape(-1)[i]:g}), so they read "
        f"{_number(native)} instead of {_number(mse)}. Cast both to floating point before "
        f"subtracting (PyTorch's mse_loss refuses integer tensors).",
    )


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


def _equal(y_true64: np.ndarray, y_pred64: np.ndarray) -> bool:
    """Whether every prediction is its target, up to float32 rounding."""
    return bool(np.all(np.abs(y_true64 - y_pred64) <= _CONSTANT_RTOL * np.abs(y_true64)))


def _variance(y_true64: np.ndarray) -> float:
    """Var(y_true), pooled over the outputs: the MSE of always predicting each output's mean."""
    return float(np.mean(np.var(y_true64, axis=0)))


def _r2(y_true64: np.ndarray, mse: float) -> float:
    """1 - MSE / Var(y_true); nan where the targets do not vary (a single sample)."""
    variance = _variance(y_true64)
    return 1 - mse / variance if variance > 0 else float("nan")


def _spread(y_pred64: np.ndarray, y_true64: np.ndarray) -> float:
    """The largest ratio, over the outputs, of the predictions' standard deviation to the
    targets' (inf where a target column is constant)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.std(y_pred64, axis=0) / np.std(y_true64, axis=0)))


def _level(values: np.ndarray) -> str:
    return ", ".join(_number(v) for v in values[0])


def _constant_target(y_true64, integer_dtype: str | None) -> Finding:
    cast = (f" y_true has the integer dtype {integer_dtype}: a cast from a continuous target "
            f"(astype(int), torch .long(), tf.cast) truncates every fraction, and maps all "
            f"targets between 0 and 1 to 0." if integer_dtype else "")
    return Finding("CONSTANT_TARGET", (
        f"every value of y_true is {_level(y_true64)}.{cast} There is nothing to predict, and "
        f"a model that outputs that constant gets an MSE of 0. Check how the target was built: "
        f"an integer cast, a wrong column, a filter that kept one value."
    ))


def _predictions_equal_targets(mse: float) -> Finding:
    how = ("the MSE is exactly 0" if mse == 0
           else f"up to float32 rounding: the MSE is {_number(mse)}")
    return Finding("PREDICTIONS_EQUAL_TARGETS", (
        f"every prediction equals its target ({how}, R² = 1), and the targets vary. Real targets "
        f"hold noise that no model predicts, so the predictions are the targets themselves: the "
        f"model was scored on the data it was trained on (a deep decision tree or a "
        f"1-nearest-neighbour model reproduces every training target), the target leaked into "
        f"the inputs (pass x to look for it), or y_pred was set to y_true by mistake. Score "
        f"the model on held-out data."
    ))


_FLAT_CAUSES = (
    "look for dead ReLUs (zero-initialised kernels with ReLU), a saturated output activation, "
    "a learning rate so high that training collapsed."
)


def _constant_prediction(y_true64, y_pred64, mse: float, r2: float) -> Finding:
    message = f"every value of y_pred is {_level(y_pred64)}."
    if y_true64.shape[1] == 1:
        # For a constant c: mean((y - c)²) = Var(y) + (mean(y) - c)², at least Var(y).
        variance, bias = float(np.var(y_true64)), float(np.mean(y_true64 - y_pred64))
        message += (f" Its MSE is Var(y_true) + bias² = {_number(variance)} + {_number(bias ** 2)}"
                    f" = {_number(mse)}:")
        message += " no constant does better than Var(y_true)"
        message += f" (R² = {r2:.4f})." if np.isfinite(r2) else "."
    return Finding("CONSTANT_PREDICTION", f"{message} The model ignores its inputs: {_FLAT_CAUSES}")


def _near_constant_prediction(y_true64, y_pred64, r2: float) -> Finding:
    ratio = _spread(y_pred64, y_true64)
    if y_true64.shape[1] == 1:
        spread = (f"their standard deviation is {_number(float(np.std(y_pred64)))}, {ratio:.1%} "
                  f"of the targets' ({_number(float(np.std(y_true64)))})")
    else:
        spread = f"on every output their standard deviation is at most {ratio:.1%} of the targets'"
    return Finding("NEAR_CONSTANT_PREDICTION", (
        f"the predictions vary, but hardly: {spread}. The model scores about what a constant "
        f"scores, Var(y_true) + bias² (R² = {r2:.4f}). The model barely uses its inputs: "
        f"{_FLAT_CAUSES} A loss that rewards a constant does it too, such as an MSE over "
        f"shapes (N, 1) and (N,) that broadcast."
    ))


def _no_better_than_mean(y_true64, mse: float, r2: float) -> Finding:
    return Finding("NO_BETTER_THAN_MEAN", (
        f"R² = 1 - MSE / Var(y_true) = 1 - {_number(mse)} / {_number(_variance(y_true64))} = "
        f"{r2:.4f}: the model does no better than predicting the mean of y_true for every "
        f"sample. On the data it was trained on, training failed (a target in large or tiny "
        f"units: standardize it; the learning rate; too few epochs); on held-out data, the "
        f"model does not generalise, or the data were prepared differently (another scaling, "
        f"targets shuffled apart from their inputs)."
    ))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Each column's ranks 1..N, tied values sharing their average rank (as Spearman's ρ has)."""
    n = len(values)
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    position = np.arange(n)[:, None]
    starts = np.ones(ordered.shape, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, position, n)[::-1], axis=0)[::-1]
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=0)
    return ranks


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of every column of ``a`` with every column of ``b`` (none constant)."""
    za = (a - a.mean(axis=0)) / a.std(axis=0)
    zb = (b - b.mean(axis=0)) / b.std(axis=0)
    return za.T @ zb / len(a)


def _target_in_inputs(x: np.ndarray, y_true64: np.ndarray) -> list[Finding]:
    # With two samples every column is an affine function of the target, and with three or
    # four an unrelated column comes within 1e-6 of a correlation of 1 too often.
    if len(x) < 5:
        return []
    features = x.reshape(len(x), -1).astype(np.float64)
    x_std, y_std = features.std(axis=0), y_true64.std(axis=0)
    columns, outputs = np.flatnonzero(x_std > 0), np.flatnonzero(y_std > 0)
    pearson = _correlation(features[:, columns], y_true64[:, outputs])  # (features, outputs)
    spearman = np.zeros_like(pearson)
    if len(x) >= _RANK_MIN_SAMPLES:
        spearman = _correlation(_ranks(features[:, columns]), _ranks(y_true64[:, outputs]))
    affine = np.abs(pearson) >= _AFFINE_CORRELATION
    findings = []
    for i, j in zip(*np.nonzero(affine | (np.abs(spearman) >= _RANK_CORRELATION))):
        column, output = int(columns[i]), int(outputs[j])
        target = "y_true" if y_true64.shape[1] == 1 else f"y_true[:, {output}]"
        if affine[i, j]:
            findings.append(_affine_copy(features[:, column], column, y_true64[:, output], target,
                                         pearson[i, j]))
        else:
            findings.append(_rank_copy(column, target, spearman[i, j], pearson[i, j], len(x)))
    return findings


_LEAK_ADVICE = (
    "the model can read the answer from its input, so a small MSE says nothing about what it "
    "learned."
)


def _affine_copy(feature, column: int, y: np.ndarray, target: str, r: float) -> Finding:
    if np.array_equal(feature, y):
        how = f"equal to {target}"
    else:
        slope = r * y.std() / feature.std()
        intercept = y.mean() - slope * feature.mean()
        if abs(intercept) <= 1e-6 * (abs(y).max()):
            intercept = 0.0  # float rounding of a zero intercept
        sign = "+" if intercept >= 0 else "-"
        how = (f"an affine copy of {target} ({target} = {_number(slope)} * x[:, {column}] "
               f"{sign} {_number(abs(intercept))})")
    return Finding("TARGET_IN_INPUTS", (
        f"column {column} of x is {how}: {_LEAK_ADVICE} Remove the column (and check that the "
        f"call was not fit(y, y)). Only if the target is truly this exact function of an input "
        f"known when predicting (a unit conversion, a physical law) is the small MSE genuine."
    ))


def _rank_copy(column: int, target: str, rho: float, r: float, samples: int) -> Finding:
    return Finding("TARGET_IN_INPUTS", (
        f"column {column} of x orders the samples almost exactly as {target} does: Spearman's "
        f"rank correlation is {rho:.6f} (Pearson's r {r:.4f}), where a column unrelated to the "
        f"target gives 0 ± {1 / np.sqrt(samples - 1):.3f} over {samples} samples. It is a near "
        f"copy of the target: rounded, noisy, or through a monotone function such as exp, log "
        f"or a power (a feature computed from the target), or the target is nearly a function "
        f"of it. Either way {_LEAK_ADVICE} Remove the column, unless it is a legitimate input "
        f"known when predicting."
    ))


def _display_rounding(shown: str, text: str, mse: float, y_true64) -> list[Finding]:
    if float(text) != 0 or mse == 0:
        return []
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
