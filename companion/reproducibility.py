"""Seeding, deterministic kernels and quiet framework logs, in one place.

>>> from companion.reproducibility import seed_everything
>>> seed_everything(42)
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings

import numpy as np

from companion import _validation as check

__all__ = ["seed_everything"]


def _quiet_frameworks() -> None:
    """Silence TensorFlow's C++ start-up logging and make its CPU kernels reproducible.

    TensorFlow reads these variables once, when it is first imported, so this must run before
    that import (``import companion`` calls it). ``TF_ENABLE_ONEDNN_OPTS=0`` turns off oneDNN's
    fused kernels, whose summation order can depend on the thread count; without it, printed
    numbers can change from one machine to the next in the last digits.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # absl (used by TensorFlow) logs a warning when it is used before its own set-up.
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow|keras|tf_keras)")


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy, and TensorFlow/Keras and PyTorch when they are importable.

    With ``deterministic=True`` (the default) it also switches on the frameworks'
    deterministic-kernel modes, so that the same code on the same machine gives the same
    numbers to the last bit. Frameworks that are not installed are skipped; a framework that is
    installed but not yet imported is imported here (seeding it requires it).

    >>> seed_everything(0)
    >>> import numpy as np; float(np.random.rand()) == 0.5488135039273248
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}: {seed!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    deterministic = check.boolean("deterministic", deterministic)
    seed = int(seed)
    _quiet_frameworks()
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    _seed_tensorflow(seed, deterministic)
    _seed_torch(seed, deterministic)


def _installed(name: str) -> bool:
    if name in sys.modules:
        return True
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _seed_tensorflow(seed: int, deterministic: bool) -> None:
    if not _installed("tensorflow"):
        return
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        import keras

        keras.utils.set_random_seed(seed)  # seeds Python, NumPy, TF and Keras' own generator
    except ImportError:
        tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _seed_torch(seed: int, deterministic: bool) -> None:
    if not _installed("torch"):
        return
    import torch

    torch.manual_seed(seed)
    if deterministic:
        # Needed by cuBLAS for deterministic matrix products on a GPU; harmless on a CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
