"""Per-example gradients and batch gradients in TensorFlow and PyTorch, and ways to compare them.

A batch's mean loss is a sum of per-example terms divided by the batch size, and a gradient is
linear, so the gradient of the batch-mean loss *is* the mean of the per-example gradients. The
functions here compute both sides of that identity, in either framework, as NumPy arrays: one
array per trainable variable, with a leading example axis for the per-example ones.

``loss_fn`` always returns *per-example* losses (a leading batch axis; any further axes, such as
the outputs of a regression, are averaged per example, as Keras does). A loss that already
reduced the batch to one number is refused: its per-example values are gone.

>>> import numpy as np, torch
>>> model = torch.nn.Linear(3, 1)
>>> x, y = np.ones((4, 3), np.float32), np.zeros((4, 1), np.float32)
>>> mse = torch.nn.MSELoss(reduction="none")
>>> per_example = torch_per_example_gradients(model, x, y, loss_fn=mse)
>>> batch = torch_batch_gradients(model, x, y, loss_fn=mse, reduction="mean")
>>> gradient_difference(batch, [g.mean(axis=0) for g in per_example]) < 1e-6
True
"""

from __future__ import annotations

import contextlib

import numpy as np

from companion import _validation as check

__all__ = [
    "tf_per_example_gradients",
    "tf_batch_gradients",
    "torch_per_example_gradients",
    "torch_batch_gradients",
    "flatten",
    "gradient_difference",
]

_REDUCTIONS = ("mean", "sum")
_LAYOUTS = ("torch", "keras")


# --- TensorFlow / Keras ---------------------------------------------------------------------


def tf_per_example_gradients(model, x, y, *, loss_fn) -> list[np.ndarray]:
    """The gradient of every example's own loss, one array ``(N, *variable.shape)`` per variable.

    ``loss_fn(y_true, y_pred)`` returns per-example losses, e.g. ``keras.losses.mean_squared_error``
    or a ``keras.losses.Loss`` built with ``reduction=None``. The model is called with
    ``training=False`` (no dropout), and its ``model.losses`` (weight penalties) are not included.
    ``GradientTape.jacobian`` differentiates the vector of N losses in one vectorized pass.

    >>> grads = tf_per_example_gradients(model, x, y, loss_fn=keras.losses.mean_squared_error)  # doctest: +SKIP
    >>> [g.shape for g in grads]                                 # doctest: +SKIP
    [(4, 3, 1), (4, 1)]
    """
    import tensorflow as tf

    x, y = _tf_inputs(model, x, y, loss_fn)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        losses = _per_example(loss_fn(y, model(x, training=False)), len(x), tf.reduce_mean)
    jacobians = tape.jacobian(losses, variables)
    return [_tf_numpy(j, v, len(x)) for j, v in zip(jacobians, variables)]


def tf_batch_gradients(model, x, y, *, loss_fn, reduction: str = "mean") -> list[np.ndarray]:
    """The gradient of the batch loss, one array per trainable variable.

    ``reduction="mean"`` differentiates ``tf.reduce_mean`` of the per-example losses (what a
    Keras loss does by default), ``"sum"`` differentiates ``tf.reduce_sum``.

    >>> tf_batch_gradients(model, x, y, loss_fn=keras.losses.mean_squared_error)[1]  # doctest: +SKIP
    array([...], dtype=float32)
    """
    import tensorflow as tf

    reduction = check.choice("reduction", reduction, _REDUCTIONS)
    x, y = _tf_inputs(model, x, y, loss_fn)
    reduce = tf.reduce_mean if reduction == "mean" else tf.reduce_sum
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        losses = _per_example(loss_fn(y, model(x, training=False)), len(x), tf.reduce_mean)
        batch_loss = reduce(losses)
    return [_tf_numpy(g, v) for g, v in zip(tape.gradient(batch_loss, variables), variables)]


def _tf_inputs(model, x, y, loss_fn):
    import tensorflow as tf

    check.keras_model("model", model)
    if not model.trainable_variables:
        raise ValueError("model must have trainable variables, got none")
    check.function("loss_fn", loss_fn, "loss_fn(y_true, y_pred)")
    x, y = check.keras_data(model, x, y)
    return tf.constant(x), tf.constant(y)


def _tf_numpy(gradient, variable, examples: int | None = None) -> np.ndarray:
    shape = tuple(variable.shape) if examples is None else (examples, *variable.shape)
    if gradient is None:  # a variable the loss does not depend on has a zero gradient
        return np.zeros(shape, dtype=np.float32)
    return np.asarray(gradient.numpy()).reshape(shape)


# --- PyTorch --------------------------------------------------------------------------------


def torch_per_example_gradients(model, x, y, *, loss_fn, layout: str = "torch") -> list[np.ndarray]:
    """The gradient of every example's own loss, one array ``(N, *parameter.shape)`` per parameter.

    ``loss_fn(prediction, target)`` returns per-example losses, e.g.
    ``torch.nn.MSELoss(reduction="none")``. The gradients come from ``torch.func``:
    ``vmap(grad(loss of one example))``, one vectorized pass over the N examples, in the order of
    ``model.parameters()``. ``layout="keras"`` transposes 2-D weights to Keras' (inputs, outputs).
    The model runs in eval mode (no dropout, batch-norm running statistics), as the TensorFlow
    version calls it with ``training=False``; its own mode is restored afterwards.

    >>> grads = torch_per_example_gradients(torch.nn.Linear(3, 1), x, y, loss_fn=mse)  # doctest: +SKIP
    >>> [g.shape for g in grads]                                 # doctest: +SKIP
    [(4, 1, 3), (4, 1)]
    """
    import torch
    from torch.func import functional_call, grad, vmap

    layout = check.choice("layout", layout, _LAYOUTS)
    x, y = _torch_inputs(model, x, y, loss_fn)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def one_example_loss(trainable, x_one, y_one):
        # vmap strips the example axis; put it back so the model sees a batch of one.
        prediction = functional_call(model, ({**trainable, **frozen}, buffers), (x_one.unsqueeze(0),))
        return _per_example(loss_fn(prediction, y_one.unsqueeze(0)), 1, _torch_mean).sum()

    with _eval_mode(model):  # dropout would draw one mask per example, which vmap refuses
        per_example = vmap(grad(one_example_loss), in_dims=(None, 0, 0))(params, x, y)
    with torch.no_grad():
        return [_torch_numpy(per_example[name], layout, leading=1) for name in names]


def torch_batch_gradients(model, x, y, *, loss_fn, reduction: str = "mean", layout: str = "torch") -> list[np.ndarray]:
    """The gradient of the batch loss, one array per parameter; ``.grad`` is left untouched.

    ``reduction="mean"`` differentiates the mean of the per-example losses (what a torch loss
    does with its default ``reduction="mean"``), ``"sum"`` their sum. The model runs in eval
    mode, as in :func:`torch_per_example_gradients`, so the two agree.

    >>> torch_batch_gradients(torch.nn.Linear(3, 1), x, y, loss_fn=mse, reduction="sum")  # doctest: +SKIP
    [array([[...]], dtype=float32), array([...], dtype=float32)]
    """
    import torch

    reduction = check.choice("reduction", reduction, _REDUCTIONS)
    layout = check.choice("layout", layout, _LAYOUTS)
    x, y = _torch_inputs(model, x, y, loss_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    with _eval_mode(model):
        losses = _per_example(loss_fn(model(x), y), len(x), _torch_mean)
    batch_loss = losses.mean() if reduction == "mean" else losses.sum()
    gradients = torch.autograd.grad(batch_loss, params, allow_unused=True)
    return [
        _torch_numpy(torch.zeros_like(p) if g is None else g, layout, leading=0)
        for g, p in zip(gradients, params)
    ]


def _torch_inputs(model, x, y, loss_fn):
    check.torch_model("model", model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model must have at least one parameter with requires_grad=True")
    check.function("loss_fn", loss_fn, "loss_fn(prediction, target)")
    # The data go where the weights are, in their float type, as in companion.torch_loop.
    device, dtype = trainable[0].device, trainable[0].dtype
    x = check.torch_tensor("x", x, device=device, float_dtype=dtype)
    y = check.torch_tensor("y", y, device=device, float_dtype=dtype, length=len(x))
    check.torch_prediction_shape(model, loss_fn, x, y)
    return x, y


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _torch_mean(values, axis):
    return values.mean(dim=axis)


def _torch_numpy(gradient, layout: str, *, leading: int) -> np.ndarray:
    array = gradient.detach().cpu().numpy()
    if layout == "keras" and array.ndim == leading + 2:  # Linear weight: (out, in) -> (in, out)
        array = np.swapaxes(array, -1, -2)
    return np.ascontiguousarray(array)


# --- shared ---------------------------------------------------------------------------------


def _per_example(losses, examples: int, mean):
    """Check that ``losses`` holds one value per example, averaging any trailing axes."""
    shape = tuple(losses.shape)
    if len(shape) == 0:
        raise ValueError(
            "loss_fn must return one loss per example, got a scalar: it already reduced the batch. "
            "Use a per-example loss (torch: reduction='none'; Keras: reduction=None or "
            "keras.losses.mean_squared_error)"
        )
    if shape[0] != examples:
        raise ValueError(f"loss_fn must return one loss per example ({examples}), got shape {shape}")
    if len(shape) > 1:
        losses = mean(losses, tuple(range(1, len(shape))))
    return losses


def flatten(gradients) -> np.ndarray:
    """All gradient arrays of a list, raveled and concatenated into one float64 vector.

    The arrays may be NumPy arrays or tensors; NaN and inf are kept (a diverged gradient is
    something to look at).

    >>> flatten([np.ones((2, 2)), np.zeros(1)]).tolist()
    [1.0, 1.0, 1.0, 1.0, 0.0]
    """
    return _flatten("gradients", gradients)


def _flatten(name: str, gradients) -> np.ndarray:
    if isinstance(gradients, np.ndarray) or not isinstance(gradients, (list, tuple)):
        raise TypeError(f"{name} must be a list of arrays (one per variable), got {type(gradients).__name__}")
    if not gradients:
        raise ValueError(f"{name} must hold at least one array, got an empty list")
    arrays = []
    for index, g in enumerate(gradients):
        array = check.to_numpy(f"{name}[{index}]", g)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name}[{index}] must be a numeric array, got dtype {array.dtype}")
        arrays.append(array.astype(np.float64).ravel())
    return np.concatenate(arrays)


def gradient_difference(a, b) -> float:
    """``max|a - b| / max|a|`` over all entries of two gradient lists: 0 means identical.

    Dividing by the largest entry of ``a`` (not entry by entry) keeps near-zero entries from
    turning rounding noise into huge relative errors.

    >>> gradient_difference([np.array([2.0, 0.0])], [np.array([2.0, 1e-9])])
    5e-10
    """
    a, b = _finite("a", a), _finite("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold the same number of entries, got {a.size} and {b.size}")
    scale = np.max(np.abs(a))
    if scale == 0:
        raise ValueError("a must not be all zeros: the difference has no scale to be relative to")
    return float(np.max(np.abs(a - b)) / scale)


def _finite(name: str, gradients) -> np.ndarray:
    vector = _flatten(name, gradients)
    if vector.size == 0:
        raise ValueError(f"{name} must hold at least one number, got only empty arrays")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(vector)))} NaN or inf "
                         f"value(s): a difference relative to them means nothing")
    return vector
