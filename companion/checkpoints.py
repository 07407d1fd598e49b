"""Checkpoints that resume a training run exactly, load without running anyone's code, and
refuse a damaged file.

A *training state* is everything the next optimizer step depends on: the weights, the
optimizer's own state (Adam's moment estimates and its step count), the position of the
learning-rate schedule, and the state of every random number generator the next step draws
from (dropout masks, the data order). A weights file holds only the first of these, so a run
resumed from it takes different steps.

Two pairs of functions, one per framework, with the same shape:

* PyTorch: :func:`save_training_state` / :func:`load_training_state`. The file is a
  ``torch.save`` archive that ``torch.load(..., weights_only=True)`` reads: tensors, numbers,
  strings and containers. It holds the model's and the optimizer's ``state_dict``, the
  ``scheduler=``'s, the states of the ``generators=`` you pass and of the global torch, NumPy
  and Python generators, converted to tensors and text, so nothing is ever unpickled; a file
  holding anything else (such as a crafted ``__reduce__`` payload) is refused before any of it
  runs.
* Keras 3: :func:`save_keras_training_state` / :func:`load_keras_training_state`. The file is
  an ``.npz`` archive of ``model.variables``, ``optimizer.variables`` and the states of the
  ``generators=`` you pass, read without pickle. ``model.variables`` includes each ``Dropout``
  layer's seed-generator state, which Keras' own ``.weights.h5``, ``.keras`` and
  ``tf.train.Checkpoint(model=...)`` files leave out; ``optimizer.variables`` includes the step
  (``iterations``), which is all a ``keras.optimizers.schedules.LearningRateSchedule`` reads.

``generators=`` is a list or dict of the generators the run draws from besides the global ones:
a ``DataLoader(shuffle=True, generator=g)``'s ``g`` (a ``torch.Generator``), or a
``numpy.random.Generator`` you shuffle with. Each is restored exactly.

What no file can hold, so that a resume is exact only if you take care of it:

* Keras' ``fit(shuffle=True)`` draws its order from TensorFlow's global seed at each ``fit``
  call, not from a state that could be saved (with Keras 3.15 on TensorFlow 2.21 it is the same
  permutation in every epoch). A resumed ``fit`` repeats the order only under the same seed
  (``keras.utils.set_random_seed``); under another it diverges (chapter 2 measures by how
  much). To resume exactly whatever the seed, shuffle yourself, one epoch per ``fit`` call:
  ``order = np.random.default_rng([seed, epoch]).permutation(n)``, then
  ``fit(x[order], y[order], shuffle=False, initial_epoch=epoch, epochs=epoch + 1)``.
* Generators you do not pass, such as the one ``torch_loop.train(shuffle=True, seed=s)``
  creates afresh in every call, are not saved; nor is a ``DataLoader``'s position inside an
  epoch, so save at the end of one.

Every file ends in one line, ``companion.checkpoints sha256=<64 hex digits>``, the SHA-256 of
every byte before it. A load verifies it first, so a flipped bit or a truncated file is
refused with an error naming the file (``torch.load`` and ``np.load`` still read the files
as they are: both ignore bytes after the archive). Then it checks the whole file against the
model, the optimizer (its class too), the scheduler and the generators, and only then writes
anything: a refused load leaves every weight, optimizer state and generator as it was.

Every write is atomic: the file is written under a temporary name in the same folder,
``.<name>.tmp-<host>-<pid>-<random>``, then renamed over the target with ``os.replace``, so a
crash part-way through a save leaves the previous checkpoint whole. The next save or load of
the same target removes the temporaries of processes that no longer exist (and any over a
day old). Files get the permissions ``open(path, "wb")`` would give them.

>>> save_training_state("run.pt", model=model, optimizer=optimizer, epoch=1)  # doctest: +SKIP
>>> load_training_state("run.pt", model=fresh_model, optimizer=fresh_optimizer)["epoch"]  # doctest: +SKIP
1
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import secrets
import socket
import time
import zipfile
from pathlib import Path

import numpy as np

from companion import _validation as check

__all__ = [
    "save_training_state",
    "load_training_state",
    "save_keras_training_state",
    "load_keras_training_state",
]

_TORCH_FORMAT = "companion.checkpoints/torch/2"
_KERAS_FORMAT = "companion.checkpoints/keras/2"
_CHECKSUM_PREFIX = b"\ncompanion.checkpoints sha256="
_CHECKSUM_LINE = re.compile(re.escape(_CHECKSUM_PREFIX) + rb"([0-9a-f]{64})\n")
_CHECKSUM_LENGTH = len(_CHECKSUM_PREFIX) + 64 + 1
_HOST = socket.gethostname().replace(os.sep, "_")
_STALE_AFTER_S = 24 * 3600  # a temporary this old is stale whichever machine wrote it


# --- the file: a payload, its checksum, written atomically ------------------------------------


def _write_checkpoint(path: Path, payload: bytes) -> None:
    """Write ``payload`` and the line with its SHA-256 to ``path``, atomically.

    ``os.replace`` within one folder (one file system) is atomic: a reader sees either the old
    file or the complete new one. If writing fails part-way, only the temporary file is
    incomplete, and it is removed.
    """
    _remove_stale_temporaries(path)
    checksum = _CHECKSUM_PREFIX + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    temporary = path.parent / f".{path.name}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        # Mode 0o666 less the umask, as open(path, "wb") and torch.save give (mkstemp: 0o600).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        with os.fdopen(os.open(temporary, flags, 0o666), "wb") as file:
            file.write(payload)
            file.write(checksum)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # The rename itself is an entry in the folder: without this, a power cut can undo it.
    if os.name != "posix":
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is still atomic
    finally:
        os.close(handle)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` left by saves that died (killed, out of memory)."""
    prefix = f".{path.name}.tmp-"
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        parts = entry.name[len(prefix):].rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # not a name this module writes
        host, pid = parts[0], int(parts[1])
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
            if (host == _HOST and not _process_exists(pid)) or age > _STALE_AFTER_S:
                os.unlink(entry.path)
        except OSError:
            pass  # removed meanwhile by another process, or not ours to remove


def _process_exists(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill would end the process on Windows: rely on the age alone
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # it exists but belongs to someone else, or the number is not a pid
    return True


def _read_checkpoint(path: Path, writer: str) -> bytes:
    """The payload of ``path`` (every byte before its checksum line), verified."""
    _remove_stale_temporaries(path)
    data = path.read_bytes()
    found = _CHECKSUM_LINE.fullmatch(data[-_CHECKSUM_LENGTH:])
    if found is None:
        raise ValueError(f"refused to load {str(path)!r}: it is not a training state written by "
                         f"{writer}, or it is truncated or damaged (it does not end with the "
                         f"checksum line that {writer} writes)")
    payload = data[:-_CHECKSUM_LENGTH]
    if hashlib.sha256(payload).hexdigest() != found.group(1).decode():
        raise ValueError(f"refused to load {str(path)!r}: its bytes do not match the SHA-256 "
                         f"saved with them, so the file is damaged")
    return payload


def _stored_members(payload: bytes, path: Path) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The archive in ``payload`` and its members, each checked to be stored uncompressed.

    Both writers store members uncompressed, so a member can never take more memory to read
    than its bytes in the file, whatever sizes a crafted archive declares.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
        members = archive.infolist()
    except Exception as error:  # BadZipFile, or a struct or value error from a mangled archive
        raise ValueError(f"refused to load {str(path)!r}: it is not a readable zip archive "
                         f"({type(error).__name__}: {error})") from None
    for info in members:
        if (info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size
                or info.header_offset + info.compress_size > len(payload)):
            raise ValueError(f"refused to load {str(path)!r}: its member {info.filename!r} "
                             f"declares {info.file_size} bytes but stores {info.compress_size} "
                             f"(compressed or cut short), which the saving functions never write")
    return archive, members


# --- values that load back as they were -------------------------------------------------------

def _plain(where: str, value, tensor=None):
    """``value`` with NumPy scalars replaced by the Python numbers they equal.

    A weights-only load rebuilds ``None``, bools, ints, floats, strings, tensors (instances
    of ``tensor``), and lists, tuples and dicts of them without importing anything. A
    subclass (an ``IntEnum``, a namedtuple, a ``defaultdict``) would need its class imported,
    so the file would not load: those are refused here, at save.
    """
    if isinstance(value, np.generic) and value.dtype.kind in "biufU":
        return value.item()  # np.min(losses) is a np.float64: saved as the float it equals
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if tensor is not None and isinstance(value, tensor):
        return value if kind is tensor else value.detach()  # a Parameter as a plain tensor
    if kind in (list, tuple):
        return kind(_plain(f"{where}[{i}]", item, tensor) for i, item in enumerate(value))
    if kind in (dict, collections.OrderedDict):
        plain = kind()
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; "
                                f"keys must be str or int")
            plain[key] = _plain(f"{where}[{key!r}]", item, tensor)
        return plain
    base = next((b for b in (bool, int, float, str, tuple, list, dict) if isinstance(value, b)),
                None)
    if base is not None:
        hint = f"; pass it as a plain {base.__name__}: {base.__name__}(value)"
    elif isinstance(value, np.ndarray):
        hint = "; pass torch.from_numpy(value) or value.tolist()"
    else:
        hint = "; pass numbers, strings, tensors, or lists, tuples and dicts of them"
    raise TypeError(f"{where} is a {kind.__module__}.{kind.__qualname__}, which a load could "
                    f"not rebuild without importing that class: {check._short_repr(value)}{hint}")


def _named_generators(generators, kinds: tuple) -> dict:
    """``generators`` (None, a list or a dict of ``kinds``) as a dict keyed by name or index."""
    names = " or ".join(check._public_name(kind) for kind in kinds)
    if generators is None:
        return {}
    if isinstance(generators, dict):
        named = dict(generators)
    elif isinstance(generators, (list, tuple)):
        named = {str(index): generator for index, generator in enumerate(generators)}
    else:
        raise TypeError(f"generators must be a list or dict of {names}, got "
                        f"{type(generators).__name__}: {check._short_repr(generators)}")
    for name, generator in named.items():
        if not isinstance(name, str) or not isinstance(generator, kinds):
            raise TypeError(f"generators[{name!r}] must be a {names} (with a str name), got "
                            f"{type(generator).__name__}: {check._short_repr(generator)}")
    return named


def _numpy_generator_state(generator) -> str:
    # A bit generator's state is a dict of ints, strings and (for some kinds) integer arrays:
    # as JSON text it needs no unpickling to come back.
    return json.dumps(generator.bit_generator.state, default=lambda array: array.tolist())


def _checked_numpy_state(generator, text) -> dict:
    """The state saved as ``text``, first set on a scratch generator of the same kind (which
    raises if it is malformed or of another kind), so that ``generator`` is not touched yet."""
    state = json.loads(text)
    np.random.Generator(type(generator.bit_generator)()).bit_generator.state = state
    return state


def _class_name(value) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _same_class(saved: str, value) -> bool:
    # The class name alone (Adam, AdamW, Adamax): a module path can move between versions.
    return saved.rsplit(".", 1)[-1] == type(value).__qualname__


# --- PyTorch ----------------------------------------------------------------------------------


def save_training_state(path, *, model, optimizer, scheduler=None, generators=None,
                        **extra) -> Path:
    """Save a PyTorch training state to one file, atomically, with its checksum.

    Saves ``model.state_dict()``, ``optimizer.state_dict()`` and the optimizer's class, the
    ``scheduler``'s ``state_dict`` (required if the optimizer has one: its parameter groups
    then hold ``initial_lr``), the states of the ``generators`` (a list or dict of
    ``torch.Generator`` and ``numpy.random.Generator``) and of the global torch, NumPy and
    Python generators. ``extra`` holds your own values, typically ``epoch=`` and ``step=``:
    ``None``, bools, ints, floats, strings, tensors, and lists, tuples and dicts of them; a
    NumPy scalar is saved as the Python number it equals, a ``Parameter`` as a tensor. Anything
    a weights-only load could not rebuild (an ``IntEnum``, a namedtuple, a ``defaultdict``, a
    set, an array) raises ``TypeError`` here, before anything is written.

    >>> save_training_state(folder / "last.pt", model=model, optimizer=optimizer,  # doctest: +SKIP
    ...                     scheduler=scheduler, generators=[loader.generator], epoch=3)
    """
    import torch

    check.torch_model("model", model)
    check.torch_optimizer("optimizer", optimizer, model=model)
    _check_scheduler(scheduler, optimizer, torch)
    if scheduler is None and any("initial_lr" in group for group in optimizer.param_groups):
        raise ValueError("optimizer is driven by a learning-rate scheduler (its param_groups hold "
                         "'initial_lr'): pass it as scheduler= so that the schedule resumes "
                         "where it stopped")
    named = _named_generators(generators, (torch.Generator, np.random.Generator))
    extra = {name: _plain(f"extra value {name}=", value, torch.Tensor)
             for name, value in extra.items()}
    path = check.file_path("path", path, for_writing=True)
    weights = model.state_dict()
    for key, value in weights.items():  # a module's get_extra_state() may return anything
        weights[key] = _plain(f"model state {key!r}", value, torch.Tensor)
    state = {
        "format": _TORCH_FORMAT,
        "model": weights,
        "optimizer_class": _class_name(optimizer),
        "optimizer": _plain("optimizer state", optimizer.state_dict(), torch.Tensor),
        "scheduler_class": None if scheduler is None else _class_name(scheduler),
        "scheduler": None if scheduler is None else _plain(
            "scheduler state", scheduler.state_dict(), torch.Tensor),
        "generators": {name: _torch_generator_state(g, torch) for name, g in named.items()},
        "rng": _torch_rng_state(torch),
        "extra": extra,
    }
    # The parts built here, not by torch, are loaded back once: whatever the installed
    # version's weights-only unpickler refuses is refused now, not when the run needs the file.
    try:
        torch.load(_saved(torch, {key: state[key] for key in ("scheduler", "generators", "rng",
                                                              "extra")}), weights_only=True)
    except pickle.UnpicklingError as error:
        raise TypeError(f"the training state holds a value that torch.load(weights_only=True) "
                        f"does not rebuild ({str(error).splitlines()[0]})") from None
    # Built in memory: the checksum of the bytes goes after them.
    _write_checkpoint(path, _saved(torch, state).getvalue())
    return path


def load_training_state(path, *, model, optimizer, scheduler=None, generators=None,
                        restore_rng: bool = True) -> dict:
    """Load a file written by :func:`save_training_state`; return its ``extra`` values.

    Checks, before anything is written: the checksum (a damaged or truncated file is refused),
    that the file unpickles with ``torch.load(weights_only=True)`` (a file that would need to
    import or call anything raises ``pickle.UnpicklingError`` and nothing in it runs), the
    model's keys, shapes and dtypes, the optimizer's class and parameter groups, that a
    ``scheduler`` (of the saved class) is passed exactly when one was saved, and the
    ``generators`` by name and kind. Then it loads the model, the optimizer, the scheduler
    and the generators; with ``restore_rng=True`` the global torch, NumPy and Python
    generators also continue where they were when the file was saved.

    >>> load_training_state(folder / "last.pt", model=model, optimizer=optimizer,  # doctest: +SKIP
    ...                     scheduler=scheduler, generators=[loader.generator])
    {'epoch': 3}
    """
    import torch

    check.torch_model("model", model)
    check.torch_optimizer("optimizer", optimizer, model=model)
    _check_scheduler(scheduler, optimizer, torch)
    named = _named_generators(generators, (torch.Generator, np.random.Generator))
    check.boolean("restore_rng", restore_rng)
    path = check.file_path("path", path, for_writing=False)
    payload = _read_checkpoint(path, "save_training_state")
    _stored_members(payload, path)
    try:
        # Explicit, so that neither an older torch (whose default was False) nor the variable
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD can switch the full unpickler back on.
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).splitlines()[0]
        raise pickle.UnpicklingError(
            f"refused to load {str(path)!r}: it holds objects a weights-only load does not "
            f"allow, which full unpickling would construct by running code ({first_line})"
        ) from error
    except Exception as error:  # a mangled archive: torch raises RuntimeError and others
        raise ValueError(f"refused to load {str(path)!r}: torch.load cannot read it "
                         f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != _TORCH_FORMAT:
        raise ValueError(f"path {str(path)!r} is not a training state written by "
                         f"save_training_state (format {_TORCH_FORMAT})")
    try:
        restore = _checked_torch_state(state, model, optimizer, scheduler, named, restore_rng,
                                       torch)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as error:
        raise ValueError(f"refused to load {str(path)!r}: its contents are not laid out as "
                         f"save_training_state writes them ({type(error).__name__}: {error})"
                         ) from None
    except ValueError as error:
        raise ValueError(f"refused to load {str(path)!r}: {error}") from None
    # Every check passed before the first assignment: a refused load changed nothing.
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore()
    return state["extra"]


def _saved(torch, value) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return buffer


def _check_scheduler(scheduler, optimizer, torch) -> None:
    if scheduler is None:
        return
    schedulers = torch.optim.lr_scheduler
    # ReduceLROnPlateau is an LRScheduler only since PyTorch 2.2.
    if not isinstance(scheduler, (schedulers.LRScheduler, schedulers.ReduceLROnPlateau)):
        check.instance("scheduler", scheduler, schedulers.LRScheduler)
    if scheduler.optimizer is not optimizer:
        raise ValueError("scheduler must drive optimizer, but it was built for another "
                         "optimizer: build it as SomeScheduler(optimizer, ...)")


def _torch_generator_state(generator, torch) -> dict:
    if isinstance(generator, torch.Generator):
        return {"kind": "torch", "state": generator.get_state()}
    return {"kind": "numpy", "state": _numpy_generator_state(generator)}


def _checked_torch_state(state, model, optimizer, scheduler, generators, restore_rng, torch):
    """Check the whole ``state`` against the objects; return the function that restores the
    generators (each state already tried on a scratch generator, which raises if malformed)."""
    saved, current = state["model"], model.state_dict()
    if set(saved) != set(current):
        raise ValueError(f"model does not match the checkpoint's: keys missing from the file "
                         f"{sorted(set(current) - set(saved))}, unexpected keys "
                         f"{sorted(set(saved) - set(current))}")
    for key, value in current.items():
        other = saved[key]
        if isinstance(value, torch.Tensor) and (not isinstance(other, torch.Tensor)
                                                or other.shape != value.shape
                                                or other.dtype != value.dtype):
            raise ValueError(f"model's {key} has shape {tuple(value.shape)} and dtype "
                             f"{value.dtype}, but the checkpoint's is "
                             f"{getattr(other, 'shape', type(other).__name__)} "
                             f"{getattr(other, 'dtype', '')}")
    if not _same_class(state["optimizer_class"], optimizer):
        raise ValueError(f"it holds the state of a {state['optimizer_class']}, but optimizer is "
                         f"a {_class_name(optimizer)}: build the optimizer the saved run used")
    groups = state["optimizer"]["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"optimizer has {len(optimizer.param_groups)} parameter groups but the "
                         f"checkpoint's has {len(groups)}")
    for index, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        if len(group["params"]) != len(own["params"]):
            raise ValueError(f"optimizer's parameter group {index} has {len(own['params'])} "
                             f"parameters but the checkpoint's has {len(group['params'])}")
    if (scheduler is None) != (state["scheduler"] is None):
        raise ValueError("it holds a learning-rate scheduler's state: pass the scheduler as "
                         "scheduler=" if scheduler is None else
                         "scheduler= was given, but the checkpoint holds no scheduler state")
    if scheduler is not None and not _same_class(state["scheduler_class"], scheduler):
        raise ValueError(f"it holds the state of a {state['scheduler_class']}, but scheduler is "
                         f"a {_class_name(scheduler)}")
    if set(generators) != set(state["generators"]):
        raise ValueError(f"it holds generators {sorted(state['generators'])}, but generators= "
                         f"has {sorted(generators)}: pass the same ones, in the same order")
    restores = []
    for name, generator in generators.items():
        saved_kind = state["generators"][name]["kind"]
        kind = "torch" if isinstance(generator, torch.Generator) else "numpy"
        if saved_kind != kind:
            raise ValueError(f"generators[{name!r}] is a {kind} generator, but the checkpoint's "
                             f"is a {saved_kind} one")
        value = state["generators"][name]["state"]
        if kind == "torch":
            torch.Generator(device=generator.device).set_state(value)
            restores.append(lambda g=generator, v=value: g.set_state(v))
        else:
            value = _checked_numpy_state(generator, value)
            restores.append(lambda g=generator, v=value: setattr(g.bit_generator, "state", v))
    if restore_rng:
        rng = _checked_torch_rng_state(state["rng"], torch)
        restores.append(lambda: _set_torch_rng_state(rng, torch))
    if not isinstance(state["extra"], dict):
        raise TypeError(f"extra is a {type(state['extra']).__name__}, not a dict")
    return lambda: [restore() for restore in restores]


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


def _checked_torch_rng_state(state: dict, torch) -> dict:
    """The global generator states of ``state``, each first set on a scratch generator."""
    python, numpy = state["python"], state["numpy"]
    checked = {
        "torch": state["torch"],
        "python": (python["version"], tuple(python["words"].tolist()), python["gauss_next"]),
        "numpy": (numpy["kind"], numpy["words"].numpy().astype(np.uint32), numpy["position"],
                  numpy["has_gauss"], numpy["cached_gaussian"]),
        "cuda": state.get("cuda"),
    }
    torch.Generator().set_state(checked["torch"])
    random.Random().setstate(checked["python"])
    np.random.RandomState().set_state(checked["numpy"])
    return checked


def _set_torch_rng_state(state: dict, torch) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


# --- Keras 3 ----------------------------------------------------------------------------------


def save_keras_training_state(path, *, model, optimizer, generators=None, **extra) -> Path:
    """Save a Keras 3 training state to one ``.npz`` file, atomically, with its checksum.

    Saves every variable of ``model`` (the non-trainable ones too: batch-norm statistics and
    each dropout layer's seed-generator state) and of ``optimizer`` (its step, learning rate
    and slots), the optimizer's class, and the states of the ``generators`` (a list or dict of
    ``numpy.random.Generator``). ``extra`` holds numbers, strings, NumPy scalars or numeric
    or string arrays; :func:`load_keras_training_state` returns them (a scalar as the Python
    number or string it equals).

    >>> save_keras_training_state(folder / "last.npz", model=model,  # doctest: +SKIP
    ...                           optimizer=model.optimizer, epoch=3)
    """
    import keras

    check.keras_model("model", model)
    check.instance("optimizer", optimizer, keras.optimizers.Optimizer)
    if not optimizer.built:
        raise ValueError("optimizer must have been built (trained for a step, or optimizer.build("
                         "model.trainable_variables)) before its state can be saved")
    named = _named_generators(generators, (np.random.Generator,))
    arrays = {name: _keras_extra(name, value) for name, value in extra.items()}
    path = check.file_path("path", path, for_writing=True)
    members = {"format": np.array(_KERAS_FORMAT),
               "optimizer.class": np.array(_class_name(optimizer))}
    for group, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        members[f"{group}.paths"] = np.array([v.path for v in variables], dtype=str)
        for index, variable in enumerate(variables):
            members[f"{group}.{index}"] = np.asarray(variable.numpy())
    for name, generator in named.items():
        members[f"generators.{name}"] = np.array(_numpy_generator_state(generator))
    for name, value in arrays.items():
        members[f"extra.{name}"] = value
    buffer = io.BytesIO()  # in memory: the checksum of the bytes goes after them
    np.savez(buffer, **members)
    _write_checkpoint(path, buffer.getvalue())
    return path


def load_keras_training_state(path, *, model, optimizer, generators=None) -> dict:
    """Load a file written by :func:`save_keras_training_state`; return its ``extra`` values.

    Checks, before any variable is written: the checksum (a damaged or truncated file is
    refused), every member's declared shape and dtype against the bytes it stores (a crafted
    file cannot make the load allocate more than the file's size), the optimizer's class, and
    each variable's shape and dtype, matched by position as Keras' ``load_weights`` does for a
    model built the same way (their names may differ: Keras numbers the layers of every new
    model). An unbuilt ``optimizer`` is built for ``model`` first: the one change a refused
    load can leave, and one that training makes anyway. The file is read without pickle:
    an object array is refused, unread.

    >>> load_keras_training_state(folder / "last.npz", model=fresh,  # doctest: +SKIP
    ...                           optimizer=fresh.optimizer)
    {'epoch': 3}
    """
    import keras

    check.keras_model("model", model)
    check.instance("optimizer", optimizer, keras.optimizers.Optimizer)
    named = _named_generators(generators, (np.random.Generator,))
    path = check.file_path("path", path, for_writing=False)
    npz = _Npz(_read_checkpoint(path, "save_keras_training_state"), path)
    if npz.string("format") != _KERAS_FORMAT:
        raise ValueError(f"path {str(path)!r} is not a training state written by "
                         f"save_keras_training_state (format {_KERAS_FORMAT})")
    saved_class = npz.string("optimizer.class")
    if not _same_class(saved_class, optimizer):
        npz.refuse(f"it holds the state of a {saved_class}, but optimizer is a "
                   f"{_class_name(optimizer)}: build the optimizer the saved run used")
    pending = npz.matching("model", model.variables)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    pending += npz.matching("optimizer", optimizer.variables)
    saved_generators = {name[len("generators."):] for name in npz.headers
                        if name.startswith("generators.")}
    if saved_generators != set(named):
        npz.refuse(f"it holds generators {sorted(saved_generators)}, but generators= has "
                   f"{sorted(named)}: pass the same ones, in the same order")
    states = {}
    for name, generator in named.items():
        try:
            states[name] = _checked_numpy_state(generator, npz.string(f"generators.{name}"))
        except (ValueError, TypeError, KeyError) as error:
            npz.refuse(f"the state of generators[{name!r}] does not fit it ({error})")
    # Every check passed before the first assignment: a refused load changed nothing.
    for variable, name in pending:
        variable.assign(npz.array(name))
    for name, generator in named.items():
        generator.bit_generator.state = states[name]
    return {name[len("extra."):]: _keras_plain(npz.array(name)) for name in npz.headers
            if name.startswith("extra.")}


def _keras_extra(name: str, value) -> np.ndarray:
    # An .npz member is one array; anything that would become an object array would need
    # pickle to come back, which the loader refuses.
    if isinstance(value, (np.generic, np.ndarray)) or type(value) in (bool, int, float,
                                                                       complex, str):
        try:
            array = np.asarray(value)
        except OverflowError:  # an int beyond 64 bits
            array = np.asarray(None)
        if array.dtype.kind in "biufcU":
            return array
    raise TypeError(f"extra value {name}= must be a number, a string, or a NumPy scalar or "
                    f"array of numbers or strings, got {type(value).__name__}: "
                    f"{check._short_repr(value)}")


def _keras_plain(value: np.ndarray):
    return value.item() if value.ndim == 0 else value


class _Npz:
    """The arrays of an ``.npz`` payload, read only after their headers were checked.

    Each member's header (shape and dtype) is read first and checked against the bytes the
    member stores; data is read only for the members the loader asks for, after it has
    compared their shapes with the model's.
    """

    _KNOWN = re.compile(r"format|optimizer\.class|(model|optimizer)\.(paths|\d+)"
                        r"|generators\..+|extra\..+")

    def __init__(self, payload: bytes, path: Path):
        self.path = path
        self.archive, members = _stored_members(payload, path)
        self.headers = {}
        for info in members:
            name = info.filename[:-len(".npy")]
            if not info.filename.endswith(".npy") or not self._KNOWN.fullmatch(name):
                self.refuse(f"it holds a member {info.filename!r}, which "
                            f"save_keras_training_state never writes")
            if name in self.headers:
                self.refuse(f"it holds the member {info.filename!r} twice")
            self.headers[name] = self._header(info)

    def refuse(self, message: str):
        raise ValueError(f"refused to load {str(self.path)!r}: {message}")

    def _header(self, info: zipfile.ZipInfo) -> tuple:
        try:
            with self.archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}[version]
                shape, fortran, dtype = read(member)  # the header is at most 10,000 bytes
                offset = member.tell()
        except Exception as error:
            self.refuse(f"its member {info.filename!r} is not a NumPy array "
                        f"({type(error).__name__}: {error})")
        if dtype.hasobject:
            self.refuse(f"it holds pickled objects, which only running code could rebuild "
                        f"(member {info.filename!r}, dtype {dtype})")
        # Python ints: a crafted shape cannot overflow the product.
        size = math.prod(shape) * dtype.itemsize
        if size != info.file_size - offset:
            self.refuse(f"its member {info.filename!r} declares shape {shape} and dtype {dtype} "
                        f"({size} bytes) but stores {info.file_size - offset} bytes")
        return info, shape, dtype, fortran, offset

    def array(self, name: str) -> np.ndarray:
        if name not in self.headers:
            self.refuse(f"it has no member {name!r}")
        info, shape, dtype, fortran, offset = self.headers[name]
        with self.archive.open(info) as member:
            member.seek(offset)
            data = member.read()
        if dtype.itemsize == 0 or not data:
            return np.zeros(shape, dtype)
        return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()

    def string(self, name: str) -> str:
        header = self.headers.get(name)
        if header is None or header[1] != () or header[2].kind != "U":
            self.refuse(f"its member {name!r} is missing or not a string")
        return str(self.array(name))

    def matching(self, group: str, variables) -> list:
        """(variable, member name) pairs, once every shape and dtype matches."""
        header = self.headers.get(f"{group}.paths")
        if header is None or header[2].kind != "U" or len(header[1]) != 1:
            self.refuse(f"its member {group}.paths is missing or not a list of names")
        if header[1][0] != len(variables):
            self.refuse(f"{group} has {len(variables)} variables but the checkpoint holds "
                        f"{header[1][0]}: build the {group} exactly as the saved one")
        saved_paths = self.array(f"{group}.paths")
        pairs = []
        for index, variable in enumerate(variables):
            name = f"{group}.{index}"
            if name not in self.headers:
                self.refuse(f"it has no member {name!r}")
            _, shape, dtype, _, _ = self.headers[name]
            if shape != tuple(variable.shape) or dtype != np.dtype(variable.dtype):
                self.refuse(f"{group} variable {index} ({variable.path}) has shape "
                            f"{tuple(variable.shape)} and dtype {variable.dtype}, but the "
                            f"checkpoint's ({saved_paths[index]}) has shape {shape} and dtype "
                            f"{dtype}")
            pairs.append((variable, name))
        return pairs
