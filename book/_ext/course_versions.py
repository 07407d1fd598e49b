"""Sphinx extension: the versions the book was tested with, read from the pinned set.

The landing page shows which TensorFlow, Keras, PyTorch and NumPy the stored outputs come from.
Typing them would let the page drift from ``requirements/constraints.txt``; this extension reads
that file when the build starts and offers each pin as a MyST substitution, e.g.
``{{ tested_torch }}``, together with the minimum versions that ``pyproject.toml`` declares
(``{{ minimum_torch }}``), which is what a Colab user needs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"tensorflow": "tensorflow_cpu", "keras": "keras", "torch": "torch", "numpy": "numpy",
            "scikit_learn": "scikit-learn", "jupyter_book": "jupyter-book"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints: Path = ROOT / "requirements" / "constraints.txt") -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            pins[_normalize(match.group(1))] = match.group(2)
    return pins


def minimum_versions(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    minimums = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)[^;]*>=\s*([0-9][^,;\s]*)", requirement)
        if match:
            minimums[_normalize(match.group(1))] = match.group(2)
    return minimums


def substitutions() -> dict[str, str]:
    pins, minimums = pinned_versions(), minimum_versions()
    values = {}
    for key, package in PACKAGES.items():
        values[f"tested_{key}"] = pins[_normalize(package)]
        if _normalize(package) in minimums:
            values[f"minimum_{key}"] = minimums[_normalize(package)]
    return values


def _add_substitutions(app, config) -> None:
    merged = dict(substitutions())
    merged.update(config.myst_substitutions or {})
    config.myst_substitutions = merged


def setup(app):
    app.connect("config-inited", _add_substitutions)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
