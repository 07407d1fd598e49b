"""Argument checks shared by the public functions: each error names the argument."""

from __future__ import annotations

import math
import numbers
import os
import sys
from pathlib import Path

import numpy as np


def integer(name: str, value, *, minimum: int) -> int:
    """An int (or NumPy integer, not a bool) >= ``minimum``."""
    if type(value) is int and value >= minimum:  # the common case, checked first: loops call this
        return value
    what = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, got {value}")
    return int(value)


def positive_int(name: str, value) -> int:
    return integer(name, value, minimum=1)


def non_negative_int(name: str, value) -> int:
    return integer(name, value, minimum=0)


def seed(name: str, value) -> int:
    """A seed for ``keras.utils.set_random_seed`` or ``np.random.seed``: an int in [0, 2**32)."""
    value = non_negative_int(name, value)
    if value >= 2**32:
        raise ValueError(f"{name} must be below 2**32 (NumPy's legacy seeding takes 32 bits), got {value}")
    return value


def optional_seed(name: str, value) -> int | None:
    if value is None:
        return None
    return non_negative_int(name, value)


def boolean(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}: {value!r}")
    return bool(value)


def to_numpy(name: str, value) -> np.ndarray:
    """``value`` as a NumPy array: PyTorch and TensorFlow tensors (without importing either),
    their bfloat16 as float32 (which holds every bfloat16 value exactly), lists, numbers.
    PyTorch's meta, sparse and quantized tensors are refused, by kind, and so is a NumPy
    masked array with masked values (its mask would be ignored)."""
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array of numbers (a NumPy array, a list or a tensor), "
                        f"got {type(value).__name__}: {_short_repr(value)}")
    if isinstance(value, (list, tuple)) and value and all(getattr(v, "ndim", 0) >= 1 for v in value):
        # np.asarray would stack them into one array with a new first axis, of len(value)
        # "samples": the mistake of passing a model's several inputs, or a list of batches.
        shapes = [tuple(v.shape) for v in value]
        raise TypeError(f"{name} must be one array, got a {type(value).__name__} of {len(value)} "
                        f"arrays of shapes {shapes}: pass one array (np.concatenate({name}) "
                        f"joins batches, np.stack({name}) stacks samples)")
    if isinstance(value, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(value))
        if masked:  # np.asarray would keep the hidden values and drop the mask
            raise TypeError(f"{name} must be a plain array, got a numpy.ma.MaskedArray with "
                            f"{masked} of its {value.size} values masked, which this function "
                            f"would use as data: drop those samples, or fill them "
                            f"({name}.filled(value))")
        value = value.data
    if hasattr(value, "detach"):  # a PyTorch tensor: leave autograd and the GPU first
        _dense_tensor(name, value)
        value = value.detach().cpu()
        try:
            value = value.numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks
            value = value.float().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a TensorFlow tensor
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged nested lists, or an object whose __array__ fails
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}: {error}") from None
    if array.dtype.kind == "V" and "float" in array.dtype.name:
        # TensorFlow's bfloat16 arrives as an ml_dtypes type that NumPy calls kind "V".
        array = array.astype(np.float32)
    return array


def _dense_tensor(name: str, tensor) -> None:
    """Refuse, by kind, the PyTorch tensors that hold no plain array of numbers."""
    if getattr(tensor, "is_meta", False):
        kind = "a meta tensor (a shape without data)"
    elif str(getattr(tensor, "layout", "torch.strided")) != "torch.strided":
        kind = f"a sparse tensor (layout {tensor.layout}); pass {name}.to_dense()"
    elif getattr(tensor, "is_quantized", False):
        kind = f"a quantized tensor (dtype {tensor.dtype}); pass {name}.dequantize()"
    else:
        return
    raise TypeError(f"{name} must be a dense tensor of numbers, got {kind}")


def real_array(name: str, value) -> np.ndarray:
    """``value`` as a NumPy array of real numbers, not empty, none of them NaN or inf (its dtype
    kept: integer labels stay integers)."""
    array = to_numpy(name, value)
    if array.dtype.kind not in "biuf":  # not complex, strings or objects
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype} (shape {array.shape})")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"{name} must be finite, got {bad} NaN or inf value(s) out of {array.size} "
                         f"(shape {array.shape})")
    return array


def data_array(name: str, value, *, length: int | None = None, length_of: str = "x") -> np.ndarray:
    """A :func:`real_array` with a sample axis (and ``length`` samples, if given)."""
    array = to_numpy(name, value)
    if array.ndim == 0:
        raise ValueError(f"{name} must have a sample axis, got a scalar of shape ()")
    array = real_array(name, array)
    if length is not None and array.shape[0] != length:
        raise ValueError(
            f"{name} must have one row per sample of {length_of} ({length}), got shape {array.shape}"
        )
    return array


def sample_weights(name: str, value, *, length: int, of: str = "x") -> np.ndarray | None:
    """One weight >= 0 per sample, shape ``(length,)`` or ``(length, 1)``, as float64 ``(length,)``."""
    if value is None:
        return None
    weights = real_array(name, value).astype(np.float64)
    if weights.shape not in ((length,), (length, 1)):
        hint = ""
        if weights.ndim == 0:
            hint = f"; to weight all {length} samples by one number w, pass np.full({length}, w)"
        raise ValueError(f"{name} must hold one weight per sample, shape ({length},) or ({length}, 1) "
                         f"for the {length} samples of {of}, got shape {weights.shape}{hint}")
    if np.any(weights < 0):
        raise ValueError(f"{name} must be >= 0, got a minimum of {weights.min().item()!r}")
    return weights.reshape(length)


def finite_number(name: str, value, *, minimum: float | None = None) -> float:
    """A finite real number (>= ``minimum``, if given) as a float; bools and integers beyond
    float range are refused."""
    what = "a finite number" + ("" if minimum is None else f" >= {minimum:g}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}: {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    if not np.isfinite(number) or (minimum is not None and number < minimum):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def non_negative_number(name: str, value) -> float:
    """A finite real number >= 0."""
    return finite_number(name, value, minimum=0)


def same_shape(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make (N,) and (N, 1) agree, as Keras does; refuse every other pair of shapes that differ.
    Arrays or tensors: only their shapes are read."""
    if y_true.ndim == 0 or y_pred.ndim == 0:
        raise ValueError(f"y_true and y_pred must be batches of shape (N, ...), got y_true of shape "
                         f"{tuple(y_true.shape)} and y_pred of shape {tuple(y_pred.shape)}")
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_pred = y_pred[..., 0]
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {tuple(y_true.shape)} and y_pred has shape {tuple(y_pred.shape)}; "
            f"expected equal shapes, or shapes that differ by a trailing axis of size 1 such as (N,) and (N, 1). "
            f"Nothing is broadcast: (N,) against (N, N) would compare every label with every prediction"
        )
    return y_true, y_pred


def class_index_shape(y_true) -> None:
    """Refuse class labels (an array or tensor) not shaped (N,) or (N, 1)."""
    shape = tuple(y_true.shape)
    if len(shape) == 2 and shape[1] > 1:
        raise ValueError(
            f"y_true must hold class indices of shape (N,) or (N, 1), got shape {shape}; "
            f"for one-hot labels pass y_true.argmax(axis=-1)"
        )
    if len(shape) == 0 or len(shape) > 2:
        raise ValueError(f"y_true must hold class indices of shape (N,) or (N, 1), got shape {shape}")


def class_indices(y_true: np.ndarray) -> np.ndarray:
    """Class labels as int64 of shape (N,), from (N,) or (N, 1) integers >= 0 of any numeric dtype."""
    class_index_shape(y_true)
    labels = y_true.reshape(-1)
    if labels.dtype.kind == "u":  # beyond int64's range a label would wrap around to negative
        bad = labels > np.iinfo(np.int64).max
    elif labels.dtype.kind in "bi":  # integers: only a negative label can be wrong
        bad = labels < 0
    else:  # past 2**53 a float is no longer an exact integer, and int64 would wrap around
        bad = (labels < 0) | (labels != np.round(labels)) | (labels >= np.float64(2**53))
    if bad.any():
        first = y_true.reshape(-1)[bad][0].item()
        raise ValueError(
            f"y_true must hold class indices (integers >= 0), got {first!r} among "
            f"{int(bad.sum())} invalid label(s) (dtype {y_true.dtype})"
        )
    return labels.astype(np.int64, copy=False)


def sequence(name: str, values) -> list:
    """A list of the items of ``values`` (a list, tuple or other iterable, not a string)."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence, got {type(values).__name__}: {values!r}")
    return list(values)


def function(name: str, value, signature: str):
    """``value`` itself, if it can be called; ``signature`` says how it will be called."""
    if not callable(value):
        raise TypeError(f"{name} must be a callable {signature}, got {type(value).__name__}: {value!r}")
    return value


# --- framework objects: each check imports its framework only when it is called ----------------


def instance(name: str, value, cls) -> None:
    """Refuse ``value`` unless it is a ``cls``, naming the class as a reader would import it."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {_public_name(cls)}, got {type(value).__name__}: "
                        f"{_short_repr(value)}")


def keras_model(name: str, value) -> None:
    """A built ``keras.Model`` (one with an ``Input``, so that its weights exist)."""
    import keras

    instance(name, value, keras.Model)
    if not value.built:
        raise ValueError(f"{name} must be built (its weights exist only then), got an unbuilt "
                         f"{type(value).__name__}: give it a keras.Input or call build() first")


def torch_model(name: str, value) -> None:
    """A ``torch.nn.Module``."""
    import torch

    instance(name, value, torch.nn.Module)


def torch_optimizer(name: str, value, *, model=None) -> None:
    """A ``torch.optim.Optimizer``, which updates only ``model``'s parameters if ``model`` is given."""
    import torch

    instance(name, value, torch.optim.Optimizer)
    if model is not None:
        owned = {id(p) for p in model.parameters()}
        foreign = sum(id(p) not in owned for group in value.param_groups for p in group["params"])
        if foreign:
            raise ValueError(f"{name} must update the model's parameters, but {foreign} of its "
                             "parameters belong to another model: build it from model.parameters()")


def torch_tensor(name: str, value, *, device, length: int | None = None, float_dtype=None):
    """A NumPy array or tensor checked like :func:`data_array`, as a tensor on ``device``.

    Float data become ``float_dtype``, by default PyTorch's default float type (float32), as
    Keras does with its floatx; integers become int64 (class labels), bools stay bools.
    """
    import torch

    array = data_array(name, value, length=length)
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_floating_point():
        float_dtype = float_dtype or torch.get_default_dtype()
        within_range(name, array, limit=torch.finfo(float_dtype).max, dtype=str(float_dtype))
        tensor = tensor.to(float_dtype)
    elif tensor.dtype != torch.bool:
        tensor = tensor.to(torch.int64)
    return tensor.to(device)


def torch_training(model, loss_fn, optimizer, penalty=None):
    """The model, loss and optimizer of a PyTorch training loop that logs mean batch losses;
    returns the device and the float type of the trainable weights, where the data must go."""
    torch_model("model", model)
    function("loss_fn", loss_fn, "loss_fn(prediction, target) -> mean loss of the batch")
    torch_optimizer("optimizer", optimizer, model=model)
    if penalty is not None:
        function("penalty", penalty, "penalty(model) -> scalar tensor")
    if getattr(loss_fn, "reduction", "mean") != "mean":
        raise ValueError(f"loss_fn must average over the batch (reduction='mean'), got "
                         f"reduction={loss_fn.reduction!r}: the loop weights each batch's mean "
                         "loss by the batch size, as Keras does")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model must have a parameter with requires_grad=True: with every "
                         "parameter frozen there is nothing to train")
    return trainable[0].device, trainable[0].dtype


# Losses that compare predictions and targets element by element: with unequal shapes they
# broadcast silently, e.g. (N, 1) against (N,) becomes an (N, N) comparison.
_ELEMENTWISE_LOSSES = ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss")


def torch_prediction_shape(model, loss_fn, x, y) -> None:
    """Refuse what the first step would fail on or silently broadcast: ``x`` of a dtype or shape
    the model cannot take (integers for float weights, the wrong number of features), and, for
    an elementwise loss, targets shaped unlike the predictions. Predicts one sample in inference
    mode: no dropout draw, no batch-norm update."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            prediction = model(x[:1])
    except RuntimeError as error:  # PyTorch's message names neither x nor what to do
        floats = x.is_floating_point()
        hint = "" if floats else "; for a model with float weights pass float data, e.g. x.astype(np.float32)"
        raise (ValueError if floats else TypeError)(
            f"x has dtype {x.dtype} and shape {tuple(x.shape)}, which the model cannot take: {error}{hint}"
        ) from None
    finally:
        model.train(was_training)
    elementwise = type(loss_fn).__name__ in _ELEMENTWISE_LOSSES
    if elementwise and tuple(prediction.shape[1:]) != tuple(y.shape[1:]):
        raise ValueError(
            f"y must have the prediction's shape per sample, {tuple(prediction.shape)[1:]}, got "
            f"{tuple(y.shape)[1:]}: {type(loss_fn).__name__} would broadcast them against "
            "each other and average the wrong pairs; reshape y to the prediction's shape"
        )


def distinct_names(name: str, names) -> None:
    """Refuse two metrics under one name (or one named like the loss): their logs would collide."""
    keys = ["loss", *names]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} must have distinct names other than 'loss', got {keys[1:]}")


def finite_loss(loss: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss):
        raise ValueError(f"the loss is {loss} in epoch {epoch}, step {step}: training diverged or "
                         "the data holds NaN/inf; lower the learning rate or check the data")


def keras_input(name: str, model, x: np.ndarray) -> None:
    """Refuse ``x`` whose sample shape differs from the model's input shape (where it has one),
    and a model with several inputs, which one array cannot feed."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) > 1:
        raise ValueError(f"model must take one input, got a model with {len(inputs)} inputs "
                         f"{[tuple(i.shape) for i in inputs]}: {name} is one array here; train "
                         f"such a model with model.fit({name}=[...])")
    expected = getattr(model, "input_shape", None)
    if x is None or not isinstance(expected, tuple) or not all(
            d is None or isinstance(d, int) for d in expected):
        return  # a model without an Input: Keras checks x itself
    if len(expected) != x.ndim or any(d is not None and d != n for d, n in zip(expected[1:], x.shape[1:])):
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, expected[1:]))}) for the "
                         f"model's input {expected}, got shape {x.shape}")


def keras_data(model, x, y) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as ``fit`` feeds them to a Keras ``model``: checked arrays, x shaped for
    the model's input, floats converted to Keras' float type (float32), which must hold them."""
    import keras

    keras_input("x", model, None)  # a model of several inputs, before x is read as one array
    x = data_array("x", x)
    y = data_array("y", y, length=len(x))
    keras_input("x", model, x)
    keras_target("y", model, y)
    floatx = keras.config.floatx()
    for name, array in (("x", x), ("y", y)):
        within_range(name, array, limit=float(np.finfo(floatx).max), dtype=floatx)
    x, y = (a.astype(floatx) if np.issubdtype(a.dtype, np.floating) else a for a in (x, y))
    return x, y


def keras_target(name: str, model, y: np.ndarray) -> None:
    """Refuse targets ``y`` that a Keras loss would broadcast against the model's output: each
    sample's target must have the output's shape, or be one number (a class index), up to a
    trailing axis of size 1."""
    output = getattr(model, "output_shape", None)
    if not isinstance(output, tuple) or not all(d is None or isinstance(d, int) for d in output):
        return  # several outputs, or a model without an Input: Keras checks y itself
    target, predicted = tuple(y.shape[1:]), tuple(output[1:])
    accepted = {predicted, predicted + (1,), predicted[:-1], (), (1,)}
    if target not in accepted and not (len(target) == len(predicted) and all(
            p is None for t, p in zip(target, predicted) if t != p)):
        raise ValueError(f"{name} must hold, per sample, the model's output shape {predicted} (or "
                         f"one class index), got {target}: a Keras loss would broadcast them "
                         f"against each other and average the wrong pairs; reshape {name}")


def within_range(name: str, array: np.ndarray, *, limit: float, dtype: str) -> None:
    """Refuse float values beyond ``limit``, the largest of the float type ``dtype`` that a model
    computes in: converted, they would silently become inf."""
    largest = float(np.max(np.abs(array))) if array.dtype.kind == "f" and array.size else 0.0
    if largest > limit:
        raise ValueError(f"{name} must fit the model's float type {dtype} (at most {limit:.4g} in "
                         f"magnitude), got values up to {largest:.4g}; rescale them")


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _public_name(cls) -> str:
    """Where a reader imports ``cls`` from: the shortest loaded module path that exports it.

    Classes live in private modules (``torch.nn.modules.module``, ``keras.src.models.model``);
    the first prefix of that path, ``src`` left out, whose module has the class is the public one.
    """
    if cls.__module__ == "builtins":
        return cls.__qualname__
    parts = [part for part in cls.__module__.split(".") if part != "src"]
    for end in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:end]))
        if getattr(module, cls.__qualname__, None) is cls:
            return f"{module.__name__}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


# --- more argument kinds ------------------------------------------------------------------------


def choice(name: str, value, allowed: tuple[str, ...]) -> str:
    """``value``, if it is one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def positive_number(name: str, value) -> float:
    """A finite real number > 0, such as a timeout in seconds."""
    number = finite_number(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def fraction(name: str, value, *, zero: bool = True, one: bool = True) -> float:
    """A real number from 0 to 1; ``zero`` and ``one`` say whether the ends themselves are allowed."""
    number = finite_number(name, value)
    if not 0 <= number <= 1 or (number == 0 and not zero) or (number == 1 and not one):
        interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return number


def file_path(name: str, value, *, for_writing: bool) -> Path:
    """``value`` as a ``Path``: to write, a file name in an existing folder; to read, an existing file."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}: {value!r}")
    path = Path(value)
    if not for_writing:
        if not path.is_file():
            raise FileNotFoundError(f"{name} must be an existing file, got {str(path)!r}")
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"{name} must be in an existing folder, got {str(path)!r} "
                                f"(no folder {str(path.parent)!r})")
    elif path.is_dir():
        raise ValueError(f"{name} must name a file, got the folder {str(path)!r}")
    return path
