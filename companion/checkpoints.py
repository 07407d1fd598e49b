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
  an ``.npz`` archive of ``model.variables``, ``optimizer.variables``, the state of Keras'
  global seed generator (what ``keras.random`` calls without a seed of their own draw from),
  the states of the ``generators=`` and of the ``callbacks=`` you pass, read without pickle.
  ``model.variables`` includes each ``Dropout`` layer's seed-generator state, which Keras'
  own ``.weights.h5``, ``.keras`` and ``tf.train.Checkpoint(model=...)`` files leave out;
  ``optimizer.variables`` includes the step (``iterations``), which is all a
  ``keras.optimizers.schedules.LearningRateSchedule`` reads, and an EMA optimizer's averages.

``generators=`` is a list or dict of the generators the run draws from besides the global ones:
a ``DataLoader(shuffle=True, generator=g)``'s ``g`` (a ``torch.Generator``), or a
``numpy.random.Generator`` you shuffle with. Each is restored exactly. ``callbacks=`` (Keras)
holds the callbacks whose state ``fit`` keeps from epoch to epoch and resets when it starts:
``ReduceLROnPlateau``, ``EarlyStopping`` and ``ModelCheckpoint`` (their best value, patience
and cooldown counters, the best weights); any other callback is refused by name. In PyTorch,
``torch.optim.lr_scheduler.ReduceLROnPlateau`` is a scheduler: pass it as ``scheduler=``.

What no file can hold, so that a resume is exact only if you take care of it:

* Keras' ``fit(shuffle=True)`` draws its order from TensorFlow's global seed at each ``fit``
  call, not from a state that could be saved (with Keras 3.15 on TensorFlow 2.21 it is the same
  permutation in every epoch). A resumed ``fit`` repeats the order only under the same seed
  (``keras.utils.set_random_seed``); under another it diverges (chapter 2 measures by how
  much). To resume exactly whatever the seed, shuffle yourself, one epoch per ``fit`` call:
  ``order = np.random.default_rng([seed, epoch]).permutation(n)``, then
  ``fit(x[order], y[order], shuffle=False, initial_epoch=epoch, epochs=epoch + 1)``.
* An optimizer with ``use_ema=True`` (Keras) ends every ``fit`` by copying its moving
  averages into the weights (``finalize_variable_values``), so the weights after a ``fit``
  are not those training goes on from, and one ``fit`` per epoch trains another run than one
  long ``fit``. The exact recipe: save from inside the ``fit``, at the end of an epoch,
  ``keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs:
  save_keras_training_state(path, model=model, optimizer=model.optimizer, epoch=epoch + 1))``,
  and resume with one ``fit(..., initial_epoch=saved_epoch, epochs=total)``: the weights then
  equal those of the uninterrupted run bit for bit. (Saved after ``fit`` returns, the file
  holds the averages as weights; the tests measure both differences.)
* Generators you do not pass, such as the one ``torch_loop.train(shuffle=True, seed=s)``
  creates afresh in every call, are not saved; nor is a ``DataLoader``'s position inside an
  epoch, so save at the end of one. Keras' global seed generator is saved only if it exists
  when you save (the first unseeded ``keras.random`` call creates it).

Every file ends in one line, ``companion.checkpoints sha256=<64 hex digits>``, the SHA-256 of
every byte before it. A load verifies it first, so a flipped bit or a truncated file is
refused with an error naming the file (``torch.load`` and ``np.load`` still read the files
as they are: both ignore bytes after the archive). The checksum proves integrity against
accidental damage, not authenticity: anyone who changes a file can append the checksum of the
new bytes. To trust a file, know where it comes from (your own run, or a source you trust),
and compare it with a signature or a SHA-256 its author publishes apart from the file
(``sha256sum``, ``gpg --verify``): a checksum stored inside the file vouches only for itself.

Whatever a file holds, a load reads it without running its code, then checks the whole of it
before it writes anything, and refuses it with an error naming the file and what is wrong: its
layout and the types of its values; the model's keys, shapes and dtypes; the optimizer's class,
its parameter groups (the same parameters, by name, in the same groups and order),
hyperparameters of the types and ranges its class takes, and each parameter's state laid out
as one step of that class lays it out (keys, shapes, dtypes, a whole step count >= 0); the
scheduler's class, keys and value types; the generators, callbacks and every array header.
A refused load leaves every weight, optimizer state, generator and callback as it was.

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
import inspect
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

_TORCH_FORMAT = "companion.checkpoints/torch/3"
_KERAS_FORMAT = "companion.checkpoints/keras/3"
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
    names = [info.filename for info in members]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # torch.load reads the first of two members of one name, zipfile the last
        raise ValueError(f"refused to load {str(path)!r}: it holds the members {twice} more than "
                         f"once, which the saving functions never write (readers disagree on "
                         f"which copy counts)")
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
        "parameters": _parameter_names(model, optimizer),
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
    import or call anything raises ``pickle.UnpicklingError`` and nothing in it runs), its
    layout, the model's keys, shapes and dtypes, the optimizer's class, its parameter groups
    (the same parameters by name, in the same groups and order), their hyperparameters (as
    the optimizer's class takes them) and each parameter's state (as one step of that class
    lays it out, with a whole step count), that a ``scheduler`` (of the saved class, with its
    keys and value types) is passed exactly when one was saved, and the ``generators`` by
    name and kind. Then it loads the model, the optimizer, the scheduler and the generators;
    with ``restore_rng=True`` the global torch, NumPy and Python generators also continue
    where they were when the file was saved. A refusal is a ``ValueError`` naming the file
    and what is wrong.

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
        raise ValueError(f"refused to load {str(path)!r}: it is not a training state written by "
                         f"save_training_state in this format ({_TORCH_FORMAT}; a file of an "
                         f"earlier companion must be saved again)")
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
    _expect("the file", state, dict, keys=_TORCH_KEYS)
    saved, current = state["model"], model.state_dict()
    _expect("its model state", saved, dict)
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
    if not isinstance(state["optimizer_class"], str) or not _same_class(
            state["optimizer_class"], optimizer):
        raise ValueError(f"it holds the state of a {state['optimizer_class']}, but optimizer is "
                         f"a {_class_name(optimizer)}: build the optimizer the saved run used")
    # The scheduler first: one adds keys to the optimizer's groups (initial_lr, max_lr...).
    if (scheduler is None) != (state["scheduler"] is None):
        raise ValueError("it holds a learning-rate scheduler's state: pass the scheduler as "
                         "scheduler=" if scheduler is None else
                         "scheduler= was given, but the checkpoint holds no scheduler state")
    if scheduler is not None:
        if not isinstance(state["scheduler_class"], str) or not _same_class(
                state["scheduler_class"], scheduler):
            raise ValueError(f"it holds the state of a {state['scheduler_class']}, but "
                             f"scheduler is a {_class_name(scheduler)}")
        _check_scheduler_state(state["scheduler"], scheduler, torch)
    _check_optimizer_state(state["optimizer"], state["parameters"], model, optimizer, torch)
    _expect("its generators", state["generators"], dict)
    for name, value in state["generators"].items():
        _expect(f"its state of generators[{name!r}]", value, dict, keys={"kind", "state"})
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
    _expect("its extra values", state["extra"], dict)
    return lambda: [restore() for restore in restores]


_TORCH_KEYS = {"format", "model", "parameters", "optimizer_class", "optimizer",
               "scheduler_class", "scheduler", "generators", "rng", "extra"}


def _expect(what: str, value, kind, *, keys=None) -> None:
    """Refuse ``value`` unless it is a ``kind`` (with exactly ``keys``, for a dict)."""
    if not isinstance(value, kind):
        raise ValueError(f"{what} is a {type(value).__name__}, not a {kind.__name__}: it was "
                         f"not written by save_training_state")
    if keys is not None and set(value) != set(keys):
        raise ValueError(f"{what} {_differences(set(keys), set(value))}: it was not written by "
                         f"save_training_state")


def _differences(expected: set, found: set) -> str:
    """"lacks [...]" and/or "has unexpected [...]": how the keys ``found`` differ."""
    parts = [f"lacks {sorted(expected - found, key=repr)}" if expected - found else "",
             f"has unexpected {sorted(found - expected, key=repr)}" if found - expected else ""]
    return " and ".join(part for part in parts if part)


def _parameter_names(model, optimizer) -> list[list[str]]:
    """The name of each parameter of each of the optimizer's groups, in order: what ties the
    optimizer's state to the model's parameters, since state_dict() numbers them 0, 1, ..."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def _kind(value) -> str:
    """The kind of a value in a state dict, as far as a load must keep it: a number may be
    an int or a float, but not a string, None or a tensor."""
    if value is None or isinstance(value, (bool, str, dict)):
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "sequence"
    return "tensor" if hasattr(value, "dtype") and hasattr(value, "shape") else "object"


def _same_kind(saved, own) -> bool:
    """``saved`` is of the kind of ``own``, through sequences and dicts (flags that torch
    leaves None by default, such as foreach, may be saved as bools)."""
    kinds = {_kind(saved), _kind(own)}
    if len(kinds) == 2:
        return kinds == {"NoneType", "bool"}
    if isinstance(own, (list, tuple)):
        return len(saved) == len(own) and all(map(_same_kind, saved, own))
    if isinstance(own, dict):
        return saved.keys() == own.keys() and all(_same_kind(saved[k], own[k]) for k in own)
    return True


def _check_optimizer_state(saved, saved_names, model, optimizer, torch) -> None:
    """Refuse an optimizer state that ``optimizer`` could not take whole: the layout of its
    ``state_dict()``, the same parameters in the same groups and order (by name, so that two
    groups of the same sizes cannot be swapped), hyperparameters of the kinds and ranges its
    class takes, and per-parameter state laid out as a step of its class lays it out."""
    cls = type(optimizer).__name__
    _expect("its optimizer state", saved, dict, keys=optimizer.state_dict().keys())
    groups, states = saved["param_groups"], saved["state"]
    _expect("its optimizer's param_groups", groups, list)
    _expect("its optimizer's per-parameter state", states, dict)
    names = _parameter_names(model, optimizer)
    if len(groups) != len(names):
        raise ValueError(f"optimizer has {len(names)} parameter groups but the checkpoint's "
                         f"has {len(groups)}")
    if saved_names != names:
        for index, (own, theirs) in enumerate(zip(names, saved_names)):
            if own != theirs:
                raise ValueError(f"optimizer's parameter group {index} holds {own}, but the "
                                 f"checkpoint's held {theirs}: build the optimizer's groups "
                                 f"from the same parameters, in the same order")
        raise ValueError(f"its parameter names {saved_names!r} are not those of the "
                         f"optimizer's groups {names}")
    parameters, first = {}, 0
    for index, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        _expect(f"its optimizer's parameter group {index}", group, dict)
        numbers = list(range(first, first + len(own["params"])))
        if group.get("params") != numbers:
            raise ValueError(f"its optimizer's parameter group {index} numbers its parameters "
                             f"{group.get('params')!r}, but optimizer.state_dict() numbers "
                             f"them {numbers}")
        _check_hyperparameters(index, group, own, optimizer)
        parameters.update({number: (p, name, index, position) for position, (number, p, name)
                           in enumerate(zip(numbers, own["params"], names[index]))})
        first += len(numbers)
    unknown = sorted(set(states) - set(parameters), key=repr)
    if unknown:
        raise ValueError(f"its optimizer state is for parameters numbered {unknown}, which no "
                         f"parameter group holds")
    references = _reference_states(optimizer, groups, torch)
    for number, state in states.items():
        parameter, name, index, position = parameters[number]
        reference = None if references is None else references[index][position]
        _check_parameter_state(state, parameter, name, reference, cls)


def _check_hyperparameters(index: int, group: dict, own: dict, optimizer) -> None:
    cls = type(optimizer).__name__
    where = f"its optimizer's parameter group {index}"
    # Names are for the user, and a load ignores them; initial_lr is a scheduler's, whose
    # presence on both sides is checked with the scheduler.
    optional = {"params", "param_names", "initial_lr"}
    expected = set(own) - optional
    found = (set(_completed(optimizer, group)) - optional) | (set(group) - optional)
    if found != expected:
        raise ValueError(f"{where} {_differences(expected, found)}: the hyperparameters of "
                         f"{cls} are {sorted(expected)}")
    for key in sorted(set(own) & set(group) - optional):
        if not _same_kind(group[key], own[key]):
            raise ValueError(f"{where} has {key}={check._short_repr(group[key])}, but {cls}'s "
                             f"{key} is a {_kind(own[key])}, such as "
                             f"{check._short_repr(own[key])}")


def _completed(optimizer, group: dict) -> dict:
    """``group`` with the keys that ``optimizer``'s class adds to a group of an older file
    (its ``__setstate__`` fills in foreach, fused and the like)."""
    scratch = type(optimizer).__new__(type(optimizer))
    try:
        scratch.__setstate__({"defaults": dict(optimizer.defaults), "state": {},
                              "param_groups": [dict(group, params=[])]})
        return scratch.param_groups[0]
    except Exception:  # a class of the reader's own that cannot do this: compare as saved
        return group


def _reference_states(optimizer, groups: list, torch):
    """For each group, the per-parameter state that one step of ``optimizer``'s class,
    built with the group's saved hyperparameters, gives small stand-ins of the parameters
    (at most 2 along each axis): what each saved state must look like. None where the class
    cannot be built or stepped so (its constructor needs other arguments); a class that
    refuses the saved hyperparameters but takes the optimizer's own refuses the file."""
    cls = type(optimizer)
    references = []
    for index, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        if _stepped(cls, own, torch) is None:
            return None
        try:
            references.append(_stepped(cls, group, torch, own["params"], strict=True))
        except Exception as error:
            raise ValueError(f"its optimizer's parameter group {index} holds hyperparameters "
                             f"that {cls.__name__} refuses ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return references


def _stepped(cls, group: dict, torch, like=None, *, strict=False):
    """The states of stand-ins after one step of ``cls(stand_ins, **group's arguments)``, as
    (stand-in shape, state) pairs; None if that fails and not ``strict``."""
    like = group["params"] if like is None else like
    try:
        signature = inspect.signature(cls.__init__).parameters
        arguments = {k: v for k, v in group.items() if k in signature and k != "params"}
        stand_ins = [torch.zeros([min(n, 2) for n in p.shape], dtype=p.dtype, device=p.device,
                                 requires_grad=True) for p in like]
        for stand_in in stand_ins:
            stand_in.grad = torch.ones_like(stand_in)
        scratch = cls(stand_ins, **arguments)
        needs_closure = inspect.signature(cls.step).parameters.get("closure")
        if needs_closure is not None and needs_closure.default is inspect.Parameter.empty:
            scratch.step(lambda: torch.zeros(()))
        else:
            scratch.step()
    except Exception:
        if strict:
            raise
        return None
    return [(tuple(s.shape), scratch.state.get(s, {})) for s in stand_ins]


def _check_parameter_state(state, parameter, name: str, reference, cls: str) -> None:
    """One parameter's saved optimizer state against the reference step's (or, without one,
    against the parameter's shape), and its step count."""
    where = f"its optimizer state for {name}"
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise ValueError(f"{where} is a {type(state).__name__}, not a dict of named values")
    for key, value in state.items():
        if key == "step" and not _whole_count(value):
            raise ValueError(f"{where} has step={check._short_repr(value)}, not a whole "
                             f"number >= 0 of steps taken")
    if reference is None:
        for key, value in state.items():
            if _kind(value) == "tensor" and not _fits(tuple(value.shape), tuple(parameter.shape)):
                raise ValueError(f"{where} has {key!r} of shape {tuple(value.shape)}, which does "
                                 f"not fit the parameter's shape {tuple(parameter.shape)}")
        return
    stand_in_shape, expected = reference
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{where} lacks {missing}, which a step of {cls} keeps")
    for key, model_value in expected.items():
        value = state[key]
        # A number and a tensor of one number are one kind here: torch turns a saved step
        # count into a tensor, and LBFGS keeps H_diag as either.
        if _kind(value) != _kind(model_value) and {_kind(value), _kind(model_value)} != {
                "number", "tensor"}:
            raise ValueError(f"{where} has {key}={check._short_repr(value)}, but {cls} keeps a "
                             f"{_kind(model_value)} there")
        if _kind(value) != "tensor" or _kind(model_value) != "tensor":
            continue
        if value.is_complex() or value.is_floating_point() != model_value.is_floating_point():
            raise ValueError(f"{where} has {key!r} of dtype {value.dtype}, but {cls} keeps "
                             f"{model_value.dtype} there")
        shape = _expected_shape(tuple(model_value.shape), stand_in_shape, tuple(parameter.shape))
        if shape is not None and tuple(value.shape) != shape:
            raise ValueError(f"{where} has {key!r} of shape {tuple(value.shape)}, but {cls} "
                             f"keeps shape {shape} there for a parameter of shape "
                             f"{tuple(parameter.shape)}")


def _whole_count(value) -> bool:
    """A step count: a whole number >= 0, as a number or a tensor of one element."""
    if _kind(value) == "tensor":
        if value.numel() != 1 or value.is_complex():
            return False
        value = value.item()
    return _kind(value) == "number" and math.isfinite(value) and value >= 0 and value == int(value)


def _fits(shape: tuple, parameter: tuple) -> bool:
    """A state tensor's shape without a reference: a scalar, or the parameter's shape with
    some axes of size 1 (a factored estimate, as Adafactor keeps)."""
    return len(shape) == 0 or (len(shape) == len(parameter) and all(
        n in (m, 1) for n, m in zip(shape, parameter)))


def _expected_shape(reference: tuple, stand_in: tuple, parameter: tuple):
    """The shape the reference step's tensor of shape ``reference`` (for a stand-in of shape
    ``stand_in``) has for the real parameter, or None if it does not follow from them."""
    if reference == ():
        return ()
    if len(reference) != len(stand_in):
        return None
    shape = []
    for r, s, p in zip(reference, stand_in, parameter):
        if r == s:
            shape.append(p)
        elif r == 1:
            shape.append(1)
        else:
            return None
    return tuple(shape)


def _check_scheduler_state(saved, scheduler, torch) -> None:
    """Refuse a scheduler state ``scheduler.load_state_dict`` would take apart: it copies
    every key into the scheduler's attributes (``__dict__.update``), so a key of another
    scheduler, or one named ``optimizer``, would replace what drives the schedule."""
    own = scheduler.state_dict()
    cls = type(scheduler).__name__
    if not isinstance(saved, dict):
        raise ValueError(f"its scheduler state is a {type(saved).__name__}, not the dict a "
                         f"{cls}'s state_dict() is")
    # Before PyTorch 2.3, ReduceLROnPlateau sets _last_lr at its first step(): a fresh one's
    # state lacks the key that a stepped one's holds (a list of learning rates).
    late = {"_last_lr"} - set(own)
    if not set(own) <= set(saved) <= set(own) | late:
        raise ValueError(f"its scheduler state {_differences(set(own), set(saved))}: it is not "
                         f"the state of a {cls}")
    for key in late & set(saved):
        if not (isinstance(saved[key], list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in saved[key])):
            raise ValueError(f"its scheduler state has {key}={check._short_repr(saved[key])}, "
                             f"not a list of learning rates")
    for key, value in own.items():
        if not _same_kind(saved[key], value):
            raise ValueError(f"its scheduler state has {key}={check._short_repr(saved[key])}, "
                             f"but {cls}'s {key} is a {_kind(value)}, such as "
                             f"{check._short_repr(value)}")
    for key in ("last_epoch", "_step_count"):
        if key in own and not _whole_count(saved[key]):
            raise ValueError(f"its scheduler state has {key}={saved[key]!r}, not a whole "
                             f"number >= 0")


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


def save_keras_training_state(path, *, model, optimizer, generators=None, callbacks=None,
                              **extra) -> Path:
    """Save a Keras 3 training state to one ``.npz`` file, atomically, with its checksum.

    Saves every variable of ``model`` (the non-trainable ones too: batch-norm statistics and
    each dropout layer's seed-generator state) and of ``optimizer`` (its step, learning rate
    and slots), the optimizer's class, the state of Keras' global seed generator (which
    ``keras.random`` calls without a seed of their own draw from) if one exists, the states
    of the ``generators`` (a list or dict of ``numpy.random.Generator``), and the state of
    the ``callbacks`` (a list of ``keras.callbacks.ReduceLROnPlateau``, ``EarlyStopping`` and
    ``ModelCheckpoint``: their best value, patience and cooldown counters, the best weights;
    ``fit`` resets them when it starts, so without them a resumed run reduces the learning
    rate or stops at other epochs). ``extra`` holds numbers, strings, NumPy scalars or
    numeric or string arrays, under names that are printable and not empty;
    :func:`load_keras_training_state` returns them (a scalar as the Python number or string
    it equals).

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
    for name in named:
        _member_name("generators", name)
    watched = _keras_callbacks(callbacks)
    arrays = {_member_name("extra value", name): _keras_extra(name, value)
              for name, value in extra.items()}
    path = check.file_path("path", path, for_writing=True)
    members = {"format": np.array(_KERAS_FORMAT),
               "optimizer.class": np.array(_class_name(optimizer))}
    for group, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        members[f"{group}.paths"] = np.array([v.path for v in variables], dtype=str)
        for index, variable in enumerate(variables):
            members[f"{group}.{index}"] = np.asarray(variable.numpy())
    generator = _keras_global_seed_generator()
    if generator is not None:
        members["keras.global_seed_generator"] = np.asarray(generator.state.numpy())
    for name, generator in named.items():
        members[f"generators.{name}"] = np.array(_numpy_generator_state(generator))
    for index, callback in enumerate(watched):
        members.update(_callback_members(index, callback))
    for name, value in arrays.items():
        members[f"extra.{name}"] = value
    buffer = io.BytesIO()  # in memory: the checksum of the bytes goes after them
    np.savez(buffer, **members)
    try:  # a file this function writes, the loader reads: its members' names and headers
        _Npz(buffer.getvalue(), path)
    except ValueError as error:
        raise ValueError(f"the state would not load back, so nothing was written: "
                         f"{error}") from None
    _write_checkpoint(path, buffer.getvalue())
    return path


def load_keras_training_state(path, *, model, optimizer, generators=None, callbacks=None) -> dict:
    """Load a file written by :func:`save_keras_training_state`; return its ``extra`` values.

    Checks, before any variable is written: the checksum (a damaged or truncated file is
    refused), every member's declared shape and dtype against the bytes it stores (a crafted
    file cannot make the load allocate more than the file's size), the optimizer's class, and
    each variable's shape and dtype, matched by position as Keras' ``load_weights`` does for a
    model built the same way (their names may differ: Keras numbers the layers of every new
    model), and the callbacks' states. An unbuilt ``optimizer`` is built for ``model`` first:
    the one change a refused load can leave, and one that training makes anyway. The file is
    read without pickle: an object array is refused, unread.

    Keras' global seed generator is put back as it was saved, or removed if there was none
    (the next unseeded ``keras.random`` call creates one). The ``callbacks`` (of the saved
    classes, in the saved order) get their state back, and again right after the next
    ``fit`` resets them in ``on_train_begin``, so that run goes on where the saved one was.

    >>> load_keras_training_state(folder / "last.npz", model=fresh,  # doctest: +SKIP
    ...                           optimizer=fresh.optimizer)
    {'epoch': 3}
    """
    import keras

    check.keras_model("model", model)
    check.instance("optimizer", optimizer, keras.optimizers.Optimizer)
    named = _named_generators(generators, (np.random.Generator,))
    watched = _keras_callbacks(callbacks)
    path = check.file_path("path", path, for_writing=False)
    npz = _Npz(_read_checkpoint(path, "save_keras_training_state"), path)
    if npz.string("format") != _KERAS_FORMAT:
        raise ValueError(f"refused to load {str(path)!r}: it is not a training state written by "
                         f"save_keras_training_state in this format ({_KERAS_FORMAT}; a file "
                         f"of an earlier companion must be saved again)")
    saved_class = npz.string("optimizer.class")
    if not _same_class(saved_class, optimizer):
        npz.refuse(f"it holds the state of a {saved_class}, but optimizer is a "
                   f"{_class_name(optimizer)}: build the optimizer the saved run used")
    pending = npz.matching("model", model.variables)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    pending += npz.matching("optimizer", optimizer.variables)
    seed_state = npz.seed_generator_state()
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
    callback_states = npz.callback_states(watched, model)
    extra = {name[len("extra."):]: _keras_plain(npz.array(name)) for name in npz.headers
             if name.startswith("extra.")}
    # Every check passed and every value was read before the first assignment: a refused
    # load changed nothing.
    for variable, name in pending:
        variable.assign(npz.array(name))
    _set_keras_global_seed_generator(seed_state)
    for name, generator in named.items():
        generator.bit_generator.state = states[name]
    for callback, state in zip(watched, callback_states):
        _restore_callback(callback, state)
    return extra


# --- Keras: what the model's variables leave out ---------------------------------------------

# The state of each callback whose state fit() keeps between epochs: the attributes its
# on_epoch_end reads back. fit() resets them in on_train_begin (ReduceLROnPlateau,
# EarlyStopping; ModelCheckpoint keeps its best), so a resumed fit starts them afresh.
_CALLBACK_STATE = {
    "ReduceLROnPlateau": ("best", "wait", "cooldown_counter"),
    "EarlyStopping": ("best", "wait", "stopped_epoch", "best_epoch", "best_weights"),
    "ModelCheckpoint": ("best",),
}


def _keras_callbacks(callbacks) -> list:
    """``callbacks`` as a list of the classes whose state a file holds; others refused."""
    import keras

    if callbacks is None:
        return []
    callbacks = check.sequence("callbacks", callbacks)
    for index, callback in enumerate(callbacks):
        if _callback_kind(callback) is None:
            raise TypeError(
                f"callbacks[{index}] must be a keras.callbacks.ReduceLROnPlateau, EarlyStopping "
                f"or ModelCheckpoint, the callbacks whose state fit() keeps from epoch to epoch, "
                f"got {type(callback).__name__}: {check._short_repr(callback)}"
                + ("; pass only those: a callback that keeps no state needs no saving"
                   if isinstance(callback, keras.callbacks.Callback) else ""))
    return callbacks


def _callback_kind(callback) -> str | None:
    import keras

    return next((name for name in _CALLBACK_STATE
                 if isinstance(callback, getattr(keras.callbacks, name))), None)


def _callback_members(index: int, callback) -> dict:
    kind = _callback_kind(callback)
    members = {f"callbacks.{index}.class": np.array(kind)}
    for attribute in _CALLBACK_STATE[kind]:
        value = getattr(callback, attribute, None)
        if value is None:
            continue  # not set yet (a new callback): the load leaves it None too
        if attribute == "best_weights":
            for number, weight in enumerate(value):
                members[f"callbacks.{index}.best_weights.{number}"] = np.asarray(weight)
        else:
            members[f"callbacks.{index}.{attribute}"] = np.asarray(float(value))
    return members


def _restore_callback(callback, state: dict) -> None:
    """Set the saved state now, and again right after the next fit's on_train_begin, which
    resets it; then the callback is as it was."""
    for attribute, value in state.items():
        setattr(callback, attribute, value)
    reset = type(callback).on_train_begin

    def on_train_begin(logs=None):
        reset(callback, logs)
        for attribute, value in state.items():
            setattr(callback, attribute, value)
        del callback.on_train_begin  # once: a later fit starts afresh, as Keras does
        if "best" in state and getattr(callback, "monitor_op", 0) is None and hasattr(
                type(callback), "_set_monitor_op"):
            # Keras 3.2's EarlyStopping picks its direction at the first epoch's end, and
            # resets best there too: keep the saved best through that.
            choose = type(callback)._set_monitor_op

            def set_monitor_op():
                choose(callback)
                callback.best = state["best"]
                del callback._set_monitor_op

            callback._set_monitor_op = set_monitor_op

    callback.on_train_begin = on_train_begin


def _keras_global_seed_generator():
    """Keras' global seed generator, or None if no unseeded ``keras.random`` call made one.

    Keras keeps it in a private registry (``keras.src.backend.common.global_state``), where
    ``keras.utils.set_random_seed`` removes it too."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("global_seed_generator")


def _set_keras_global_seed_generator(state) -> None:
    import keras
    from keras.src.backend.common import global_state

    generator = None
    if state is not None:
        generator = _keras_global_seed_generator() or keras.random.SeedGenerator(seed=0)
        generator.state.assign(state)
    global_state.set_global_attribute("global_seed_generator", generator)


def _member_name(what: str, name: str) -> str:
    """``name`` if the loader reads it back as a member name: printable and not empty."""
    if not isinstance(name, str) or not name or not name.isprintable():
        raise ValueError(f"{what} names must be printable and not empty, as a file name, got "
                         f"{name!r}")
    return name


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
                        r"|keras\.global_seed_generator|generators\..+|extra\..+"
                        r"|callbacks\.\d+\.(class|best|wait|cooldown_counter|stopped_epoch"
                        r"|best_epoch|best_weights\.\d+)")

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
        if not all(type(n) is int and n >= 0 for n in shape):
            self.refuse(f"its member {info.filename!r} declares the shape {shape}, which no "
                        f"array has (a dimension below 0)")
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

    def seed_generator_state(self):
        """The saved state of Keras' global seed generator (None if there was none), checked
        against the shape and dtype of a generator's state."""
        import keras

        if "keras.global_seed_generator" not in self.headers:
            return None
        _, shape, dtype, _, _ = self.headers["keras.global_seed_generator"]
        like = keras.random.SeedGenerator(seed=0).state
        if shape != tuple(like.shape) or dtype != np.dtype(like.dtype):
            self.refuse(f"its state of Keras' global seed generator has shape {shape} and dtype "
                        f"{dtype}, but a seed generator's has {tuple(like.shape)} and "
                        f"{like.dtype}")
        return self.array("keras.global_seed_generator")

    def callback_states(self, callbacks: list, model) -> list[dict]:
        """The saved state of each of ``callbacks``, which must be of the saved classes, in
        the saved order; best weights checked against the model's."""
        saved = sorted({int(name.split(".")[1]) for name in self.headers
                        if name.startswith("callbacks.")})
        if saved != list(range(len(saved))):
            self.refuse(f"its callback states are numbered {saved}, not 0, 1, ...")
        kinds = [self.string(f"callbacks.{index}.class") for index in saved]
        given = [_callback_kind(callback) for callback in callbacks]
        if kinds != given:
            self.refuse(f"it holds the states of the callbacks {kinds}, but callbacks= has "
                        f"{given}: pass the same callbacks, in the same order")
        weights = [tuple(w.shape) for w in model.get_weights()]
        states = []
        for index, kind in enumerate(kinds):
            state = {}
            for attribute in _CALLBACK_STATE[kind]:
                prefix = f"callbacks.{index}.{attribute}"
                if attribute == "best_weights":
                    names = [n for n in self.headers if n.startswith(prefix + ".")]
                    arrays = [self.array(f"{prefix}.{j}") for j in range(len(names))]
                    if names and [a.shape for a in arrays] != weights:
                        self.refuse(f"its best weights of callbacks[{index}] have shapes "
                                    f"{[a.shape for a in arrays]}, but the model's are {weights}")
                    state[attribute] = arrays or None
                elif prefix in self.headers:
                    header = self.headers[prefix]
                    if header[1] != () or header[2].kind not in "iuf":
                        self.refuse(f"its {attribute} of callbacks[{index}] is not a number")
                    value = self.array(prefix).item()
                    if attribute != "best" and not _whole_count(value):
                        self.refuse(f"its {attribute} of callbacks[{index}] is {value!r}, not "
                                    f"a whole number >= 0")
                    state[attribute] = value if attribute == "best" else int(value)
                else:
                    state[attribute] = None if attribute == "best" else 0
            states.append(state)
        return states

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
