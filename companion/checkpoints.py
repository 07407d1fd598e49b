"""Checkpoints that resume a training run exactly and load without running anyone's code.

A *training state* is everything the next optimizer step depends on: the weights, the
optimizer's own state (Adam's moment estimates and its step count), and the state of every
random number generator the next step draws from (dropout masks, shuffling). A weights file
holds only the first of these, so a run resumed from it takes different steps.

Two pairs of functions, one per framework, with the same shape:

* PyTorch: :func:`save_training_state` / :func:`load_training_state` write one ``torch.save``
  file that ``torch.load(..., weights_only=True)`` reads: plain tensors, numbers, strings,
  lists and dicts. The Python and NumPy generator states are converted to tensors, so nothing
  is ever unpickled; a file holding anything else (such as a crafted ``__reduce__`` payload)
  is refused before any of it runs.
* Keras 3: :func:`save_keras_training_state` / :func:`load_keras_training_state` write one
  ``.npz`` file of ``model.variables`` and ``optimizer.variables``, read back with
  ``np.load(..., allow_pickle=False)``. ``model.variables`` includes each ``Dropout`` layer's
  seed-generator state, which Keras' own ``.weights.h5``, ``.keras`` and
  ``tf.train.Checkpoint(model=...)`` files leave out; ``optimizer.variables`` includes the step
  (``iterations``).

Every write is atomic: the file is written under a temporary name in the same folder and then
renamed over the target with ``os.replace``, so a crash part-way through a save leaves the
previous checkpoint whole.

>>> save_training_state("run.pt", model=model, optimizer=optimizer, epoch=1)  # doctest: +SKIP
>>> load_training_state("run.pt", model=fresh_model, optimizer=fresh_optimizer)["epoch"]  # doctest: +SKIP
1
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np

from companion import _validation as check

__all__ = [
    "save_training_state",
    "load_training_state",
    "save_keras_training_state",
    "load_keras_training_state",
]

_TORCH_FORMAT = "companion.checkpoints/torch/1"
_KERAS_FORMAT = "companion.checkpoints/keras/1"


# --- shared -------------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    ``os.replace`` within one folder (one file system) is atomic: a reader sees either the old
    file or the complete new one. If ``write`` fails part-way, only the temporary file is
    incomplete, and it is removed.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _is_plain(value, allowed) -> bool:
    """True for None, an ``allowed`` instance, or lists, tuples and str-keyed dicts of those."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, allowed) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, allowed) for k, v in value.items())
    return value is None or isinstance(value, allowed)


# --- PyTorch ------------------------------------------------------------------------------------


def save_training_state(path, *, model, optimizer, **extra) -> Path:
    """Save a PyTorch model, its optimizer and the RNG states to one file, atomically.

    ``extra`` holds your own plain values (numbers, strings, tensors, lists and dicts of
    them), typically ``epoch=`` and ``step=``; :func:`load_training_state` returns them.

    >>> save_training_state(folder / "last.pt", model=model, optimizer=optimizer,  # doctest: +SKIP
    ...                     epoch=3, step=42)
    """
    import torch

    check.torch_model("model", model)
    check.torch_optimizer("optimizer", optimizer, model=model)
    for name, value in extra.items():
        # Only what the weights-only unpickler rebuilds without importing anything.
        if not _is_plain(value, (bool, int, float, str, torch.Tensor)):
            raise TypeError(f"extra value {name}= must be a number, string, tensor, or a list or "
                            f"dict of them, got {type(value).__name__}: {value!r}")
    path = check.file_path("path", path, for_writing=True)
    state = {
        "format": _TORCH_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _torch_rng_state(torch),
        "extra": dict(extra),
    }
    _atomic_write(path, lambda file: torch.save(state, file))
    return path


def load_training_state(path, *, model, optimizer, restore_rng: bool = True) -> dict:
    """Load a file written by :func:`save_training_state` into ``model`` and ``optimizer``.

    The file is read with ``torch.load(weights_only=True)``: a file that would need to import
    or call anything to be unpickled raises ``pickle.UnpicklingError`` and nothing in it runs.
    With ``restore_rng=True`` the torch, NumPy and Python generators continue where they were
    when the file was saved. Returns the ``extra`` values.

    >>> load_training_state(folder / "last.pt", model=model, optimizer=optimizer)  # doctest: +SKIP
    {'epoch': 3, 'step': 42}
    """
    import torch

    check.torch_model("model", model)
    check.torch_optimizer("optimizer", optimizer, model=model)
    check.boolean("restore_rng", restore_rng)
    path = check.file_path("path", path, for_writing=False)
    try:
        # Explicit, so that neither an older torch (whose default was False) nor the variable
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD can switch the full unpickler back on.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).splitlines()[0]
        raise pickle.UnpicklingError(
            f"refused to load {str(path)!r}: it holds objects a weights-only load does not "
            f"allow, which full unpickling would construct by running code ({first_line})"
        ) from error
    if not isinstance(state, dict) or state.get("format") != _TORCH_FORMAT:
        raise ValueError(f"path {str(path)!r} is not a training state written by save_training_state")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if restore_rng:
        _set_torch_rng_state(state["rng"], torch)
    return state["extra"]


def _torch_rng_state(torch) -> dict:
    # Python's and NumPy's states are tuples holding a Python int list or a NumPy array;
    # as int64 tensors (every entry is below 2**32) they need no unpickling to come back.
    version, python_words, gauss_next = random.getstate()
    kind, numpy_words, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "words": torch.tensor(python_words, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": kind, "words": torch.from_numpy(numpy_words.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_torch_rng_state(state: dict, torch) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["words"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))


# --- Keras 3 ------------------------------------------------------------------------------------


def save_keras_training_state(path, *, model, optimizer, **extra) -> Path:
    """Save a Keras 3 model's variables and its optimizer's variables to one ``.npz``, atomically.

    The model's variables include the non-trainable ones: batch-norm statistics and each
    dropout layer's seed-generator state. The optimizer's include its step (``iterations``),
    learning rate and slots. ``extra`` holds numbers, strings or numeric arrays, returned by
    :func:`load_keras_training_state`.

    >>> save_keras_training_state(folder / "last.npz", model=model,  # doctest: +SKIP
    ...                           optimizer=model.optimizer, epoch=3)
    """
    import keras

    check.keras_model("model", model)
    check.instance("optimizer", optimizer, keras.optimizers.Optimizer)
    if not optimizer.built:
        raise ValueError("optimizer must have been built (trained for a step, or optimizer.build("
                         "model.trainable_variables)) before its state can be saved")
    for name, value in extra.items():
        # An .npz entry is one array; anything that would become an object array would need
        # pickle to come back, which the loader refuses.
        if not isinstance(value, (bool, int, float, str, np.ndarray, np.generic)) or np.asarray(value).dtype == object:
            raise TypeError(f"extra value {name}= must be a number, string or numeric array, "
                            f"got {type(value).__name__}: {value!r}")
    path = check.file_path("path", path, for_writing=True)
    arrays = {"format": np.array(_KERAS_FORMAT)}
    for group, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        arrays[f"{group}.paths"] = np.array([v.path for v in variables], dtype=str)
        for index, variable in enumerate(variables):
            arrays[f"{group}.{index}"] = np.asarray(variable.numpy())
    for name, value in extra.items():
        arrays[f"extra.{name}"] = np.asarray(value)
    _atomic_write(path, lambda file: np.savez(file, **arrays))
    return path


def load_keras_training_state(path, *, model, optimizer) -> dict:
    """Load a file written by :func:`save_keras_training_state` into ``model`` and ``optimizer``.

    Variables are matched by position and checked for shape and dtype, as Keras'
    ``load_weights`` does for a model built the same way (their names may differ: Keras
    numbers the layers of every new model). An unbuilt ``optimizer`` is built for ``model``
    first. The file is read with ``allow_pickle=False``: an object array is refused, unread.
    Returns the ``extra`` values.

    >>> load_keras_training_state(folder / "last.npz", model=fresh,  # doctest: +SKIP
    ...                           optimizer=fresh.optimizer)
    {'epoch': 3}
    """
    import keras

    check.keras_model("model", model)
    check.instance("optimizer", optimizer, keras.optimizers.Optimizer)
    path = check.file_path("path", path, for_writing=False)
    arrays = _read_npz(path)
    if "format" not in arrays or str(arrays["format"]) != _KERAS_FORMAT:
        raise ValueError(f"path {str(path)!r} is not a training state written by save_keras_training_state")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    pending = []
    for group, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        saved_paths = arrays[f"{group}.paths"]
        if len(saved_paths) != len(variables):
            raise ValueError(f"{group} has {len(variables)} variables but the checkpoint holds "
                             f"{len(saved_paths)}: build the {group} exactly as the saved one")
        for index, variable in enumerate(variables):
            value = arrays[f"{group}.{index}"]
            if tuple(value.shape) != tuple(variable.shape) or value.dtype != np.dtype(variable.dtype):
                raise ValueError(
                    f"{group} variable {index} ({variable.path}) has shape {tuple(variable.shape)} "
                    f"and dtype {variable.dtype}, but the checkpoint's ({saved_paths[index]}) has "
                    f"shape {value.shape} and dtype {value.dtype}"
                )
            pending.append((variable, value))
    # Every check passes before the first assignment: a mismatch leaves every variable as it was.
    for variable, value in pending:
        variable.assign(value)
    return {name[len("extra."):]: _plain(value) for name, value in arrays.items() if name.startswith("extra.")}


def _read_npz(path: Path) -> dict:
    """The arrays of an ``.npz`` file, read without unpickling (empty for any other file)."""
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):  # a single .npy array
            return {}
        with stored:
            return {name: stored[name] for name in stored.files}
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise
        raise ValueError(f"refused to load {str(path)!r}: it holds pickled objects, which only "
                         f"running code could rebuild ({error})") from error


def _plain(value: np.ndarray):
    return value.item() if value.ndim == 0 else value
