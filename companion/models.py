"""The same small networks in Keras and PyTorch, and a way to give them identical weights.

Comparing what two frameworks log only makes sense when they start from the same weights:
:func:`copy_keras_weights_to_torch` copies every ``Dense`` layer into the matching
``torch.nn.Linear`` (Keras stores the kernel as inputs x outputs, PyTorch as outputs x inputs).

>>> keras_model = keras_mlp(10, hidden=(8,), seed=0)
>>> torch_model = torch_mlp(10, hidden=(8,))
>>> copy_keras_weights_to_torch(keras_model, torch_model)
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check

__all__ = ["keras_mlp", "torch_mlp", "copy_keras_weights_to_torch", "torch_l2_penalty"]

_ACTIVATIONS = ("linear", "tanh", "relu")


def _check_architecture(num_inputs, hidden, activation, dropout) -> tuple[int, tuple[int, ...]]:
    num_inputs = check.positive_int("num_inputs", num_inputs)
    hidden = tuple(check.positive_int("hidden", width) for width in check.sequence("hidden", hidden))
    check.choice("activation", activation, _ACTIVATIONS)
    check.fraction("dropout", dropout, one=False)
    return num_inputs, hidden


def keras_mlp(num_inputs: int, *, hidden=(16,), activation: str = "tanh", l2: float = 0.0,
              dropout: float = 0.0, seed: int = 0):
    """A built Keras ``Sequential`` MLP with one output; ``l2`` regularizes the hidden kernels."""
    import keras

    num_inputs, hidden = _check_architecture(num_inputs, hidden, activation, dropout)
    l2 = check.non_negative_number("l2", l2)
    seed = check.seed("seed", seed)
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((num_inputs,))]
    for width in hidden:
        regularizer = keras.regularizers.L2(l2) if l2 else None
        layers.append(keras.layers.Dense(width, activation=activation, kernel_regularizer=regularizer))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, seed=seed))
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def torch_mlp(num_inputs: int, *, hidden=(16,), activation: str = "tanh", dropout: float = 0.0):
    """The PyTorch twin of :func:`keras_mlp` (``torch.nn.Sequential`` of ``Linear`` layers)."""
    import torch

    num_inputs, hidden = _check_architecture(num_inputs, hidden, activation, dropout)
    layers, width_in = [], num_inputs
    for width in hidden:
        layers.append(torch.nn.Linear(width_in, width))
        if activation != "linear":
            layers.append(torch.nn.Tanh() if activation == "tanh" else torch.nn.ReLU())
        if dropout:
            layers.append(torch.nn.Dropout(dropout))
        width_in = width
    layers.append(torch.nn.Linear(width_in, 1))
    return torch.nn.Sequential(*layers)


def copy_keras_weights_to_torch(keras_model, torch_model) -> None:
    """Copy each Keras ``Dense`` (kernel, bias) into the matching ``torch.nn.Linear``, in order.

    Each pair must agree on shape and on having a bias: a bias that one side lacks would be
    dropped or left at its random initial value, and the two networks would differ.
    """
    import keras
    import torch

    check.keras_model("keras_model", keras_model)
    check.torch_model("torch_model", torch_model)
    dense = [layer for layer in keras_model.layers if isinstance(layer, keras.layers.Dense)]
    linear = [module for module in torch_model.modules() if isinstance(module, torch.nn.Linear)]
    if len(dense) != len(linear):
        raise ValueError(f"keras_model has {len(dense)} Dense layers but torch_model has "
                         f"{len(linear)} Linear layers: they must match one to one")
    for index, (k_layer, t_layer) in enumerate(zip(dense, linear)):
        kernel_shape, weight_shape = tuple(k_layer.kernel.shape), tuple(t_layer.weight.shape)
        if kernel_shape[::-1] != weight_shape:
            raise ValueError(f"torch_model's Linear layer {index} must take keras_model's Dense layer "
                             f"{index}, whose kernel has shape {kernel_shape}, but its weight has shape "
                             f"{weight_shape} (expected {kernel_shape[::-1]})")
        if k_layer.use_bias != (t_layer.bias is not None):
            raise ValueError(
                f"torch_model's Linear layer {index} has bias={t_layer.bias is not None} but the Keras "
                f"Dense layer {k_layer.name!r} has use_bias={k_layer.use_bias}: build them alike"
            )
    # Every pair is checked before the first copy: a mismatch leaves torch_model as it was.
    with torch.no_grad():
        for k_layer, t_layer in zip(dense, linear):
            t_layer.weight.copy_(torch.from_numpy(np.asarray(k_layer.kernel.numpy()).T.copy()))
            if k_layer.use_bias:
                t_layer.bias.copy_(torch.from_numpy(np.asarray(k_layer.bias.numpy()).copy()))


def torch_l2_penalty(l2: float, *, hidden_only: bool = True):
    """``penalty(model)``: Keras' ``L2(l2)`` on the kernels, ``l2 * sum(w**2)``, for PyTorch.

    With ``hidden_only=True`` the last ``Linear`` (the output layer, which :func:`keras_mlp`
    leaves unregularized) is skipped; biases are never penalized, as in Keras.
    """
    l2 = check.non_negative_number("l2", l2)
    check.boolean("hidden_only", hidden_only)

    def penalty(model):
        import torch

        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if hidden_only:
            linear = linear[:-1]
        return l2 * sum((m.weight**2).sum() for m in linear)

    return penalty
