"""The minimum framework versions: declared once in the package, equal in pyproject, enforced."""

import re
import tomllib
from pathlib import Path

import pytest
from conftest import INPUT_SETTINGS, Expect, classify, objects_valid_and_invalid
from hypothesis import given

from companion import versions

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAMES = {"tensorflow-cpu": "tensorflow", "tensorflow": "tensorflow", "torch": "torch", "keras": "keras", "numpy": "numpy"}


def declared_minimums() -> dict[str, str]:
    found = {}
    requirements = PYPROJECT["dependencies"] + [r for extra in PYPROJECT["optional-dependencies"].values() for r in extra]
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement)
        if match and match.group(1) in NAMES:
            found[NAMES[match.group(1)]] = match.group(2)
    return found


def test_pyproject_declares_exactly_the_minimums_the_companion_enforces():
    assert declared_minimums() == versions.MINIMUM_VERSIONS


@pytest.mark.parametrize("package", sorted(versions.MINIMUM_VERSIONS))
def test_installed_frameworks_meet_the_minimum(package):
    versions.require(package)  # the pinned environment must satisfy its own minimums


@pytest.mark.parametrize("package, old, new", [("torch", "2.1.2", "2.2.0+cpu"), ("keras", "3.1.1", "3.2.0"),
                                               ("tensorflow", "2.15.1", "2.16.1"), ("numpy", "1.25.2", "2.0.0rc1")])
def test_require_refuses_older_releases_only(package, old, new):
    with pytest.raises(ImportError, match=rf"{package} {re.escape(old)} is too old"):
        versions.require(package, version=old)
    versions.require(package, version=new)


def test_the_loops_check_the_version_first(monkeypatch):
    pytest.importorskip("keras")
    from companion import tf_loop

    monkeypatch.setitem(versions.MINIMUM_VERSIONS, "keras", "99.0")
    with pytest.raises(ImportError, match="keras .* is too old"):
        tf_loop.train(None, [[1.0]], [[1.0]], loss=None, optimizer=None, batch_size=1, epochs=1)


def test_unknown_package_and_bad_version_are_rejected():
    with pytest.raises(ValueError, match="package must be one of"):
        versions._installed_version("jax")
    with pytest.raises(ValueError, match="version must start with a number"):
        versions.require("torch", version="latest")


# --- every input, valid or not (issue 15) -----------------------------------------------------------

PACKAGES = objects_valid_and_invalid(valid={name: name for name in versions.MINIMUM_VERSIONS},
                                     invalid={"unknown": "jax", "capitalized": "NumPy", "None": None, "int": 3})
VERSIONS = objects_valid_and_invalid(
    valid={"installed": None, "old": "0.1", "new": "99.0", "local": "2.16.1+cpu", "pre-release": "3.2.0rc1"},
    invalid={"words": "latest", "empty": "", "float": 3.2, "bytes": b"3.2", "tuple": (3, 2)})


@INPUT_SETTINGS
@given(package=PACKAGES, version=VERSIONS)
def test_inputs_require(package, version):
    def expected():
        e = Expect()
        name, found = e.object("package", package), e.object("version", version)
        e.done()
        if found is None:
            return "ok"  # the pinned environment meets its own minimums
        number = lambda text: tuple(int(p) for p in re.match(r"\d+(\.\d+)*", text).group(0).split("."))  # noqa: E731
        return "ok" if number(found) >= number(versions.MINIMUM_VERSIONS[name]) else "too old"

    def call():
        try:
            versions.require(package.value, version=version.value)
        except ImportError as error:  # what require is for: a version too old, said clearly
            return "too old" if "is too old" in str(error) else str(error)
        return "ok"

    classify("versions.require", call, expected, agree=lambda result, want: result == want)
