"""The oldest TensorFlow, Keras and PyTorch the companion supports, checked where they are used.

Colab brings its own TensorFlow and PyTorch, which the course never reinstalls, so the companion
states what it needs and says so clearly when a version is too old, instead of failing later
with an obscure error. ``pyproject.toml`` declares the same minimums (a test keeps them equal).

Where a framework changed what it does, a chapter's check expects what the installed version
does, and the page says which version does what:

>>> require("numpy")                                            # doctest: +SKIP
>>> at_least("keras", "3.15")  # train_on_batch resets the metrics  # doctest: +SKIP
True
"""

from __future__ import annotations

import re
from importlib import metadata

from companion import _validation as check

__all__ = ["MINIMUM_VERSIONS", "require", "at_least"]

# Keras 3.2: the first release whose fit() weights each batch loss by the batch size (3.0 and
# 3.1 averaged batch means, keras-team/keras#19363), which is what companion.tf_loop reproduces.
# TensorFlow 2.16 is the first release that ships Keras 3 as tf.keras.
# PyTorch 2.2: torch.func for per-example gradients, and torch.load(weights_only=True) that
# accepts the plain-tensor checkpoints of companion.checkpoints.
MINIMUM_VERSIONS = {"numpy": "1.26", "keras": "3.2", "tensorflow": "2.16", "torch": "2.2"}

# A package can be installed under another distribution name.
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "torch": ("torch",),
                  "keras": ("keras",), "numpy": ("numpy",)}


def _release(version: str, name: str = "version") -> tuple[int, ...]:
    """(2, 13, 0) from '2.13.0+cpu' or '3.0.0rc1': the numeric release part only."""
    match = re.match(r"\d+(\.\d+)*", version)
    if match is None:
        raise ValueError(f"{name} must start with a number, got {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def _installed_version(package: str) -> str | None:
    """The installed version of ``package`` (any of its distribution names), or None."""
    if package not in _DISTRIBUTIONS:
        raise ValueError(f"package must be one of {sorted(_DISTRIBUTIONS)}, got {package!r}")
    for distribution in _DISTRIBUTIONS[package]:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def require(package: str, *, version: str | None = None) -> None:
    """Raise ImportError unless ``package`` is installed at its minimum version or newer.

    ``version`` overrides the installed version (for tests and diagnostics).
    """
    check.choice("package", package, tuple(MINIMUM_VERSIONS))
    if version is not None and not isinstance(version, str):
        raise TypeError(f"version must be a str such as '2.16.1', got {type(version).__name__}: {version!r}")
    found = version if version is not None else _installed_version(package)
    minimum = MINIMUM_VERSIONS[package]
    if found is None:
        raise ImportError(f"{package} is not installed; the companion needs {package}>={minimum}")
    if _release(found) < _release(minimum):
        raise ImportError(f"{package} {found} is too old: the companion needs {package}>={minimum} "
                          f"(upgrade it, e.g. pip install -U '{package}>={minimum}')")


def at_least(package: str, version: str, *, installed: str | None = None) -> bool:
    """Whether the installed ``package`` is ``version`` or newer (release numbers only: 3.15.0rc1
    counts as 3.15.0), for a check whose expected result depends on the version.

    ``installed`` overrides the installed version (for tests). Raises ImportError if ``package``
    is not installed.
    """
    check.choice("package", package, tuple(_DISTRIBUTIONS))
    for name, value in (("version", version), ("installed", installed)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str such as '3.15', got {type(value).__name__}: {value!r}")
    if version is None:
        raise TypeError("version must be a str such as '3.15', got NoneType: None")
    wanted = _release(version)
    found = installed if installed is not None else _installed_version(package)
    if found is None:
        raise ImportError(f"{package} is not installed")
    return _release(found, "installed") >= wanted
