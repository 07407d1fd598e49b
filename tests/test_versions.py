"""The minimum framework versions: declared once in the package, equal in pyproject, enforced."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import INPUT_SETTINGS, Expect, Invalid, classify, objects_valid_and_invalid
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


# --- at_least: the version key of a check where a framework changed behaviour ------------------


@pytest.mark.parametrize("installed, version, newer", [
    ("3.13.2", "3.15", False), ("3.15.0", "3.15", True), ("3.15.1", "3.15", True),
    ("3.15.0rc1", "3.15", True), ("3.2.1", "3.15", False), ("4.0", "3.15", True),
    ("2.11.0+cpu", "2.11", True), ("2.9.9", "2.10", False),
])
def test_at_least_compares_release_numbers(installed, version, newer):
    assert versions.at_least("keras", version, installed=installed) is newer


@pytest.mark.parametrize("package", sorted(versions.MINIMUM_VERSIONS))
def test_at_least_reads_the_installed_version(package):
    pytest.importorskip(package)
    found = versions._installed_version(package)
    assert versions.at_least(package, found) and versions.at_least(package, versions.MINIMUM_VERSIONS[package])
    assert not versions.at_least(package, "999")


def test_at_least_rejects_bad_arguments(monkeypatch):
    with pytest.raises(ValueError, match="package must be one of"):
        versions.at_least("jax", "1.0")
    for bad in (None, 3.15, b"3.15"):
        with pytest.raises(TypeError, match="version must be a str"):
            versions.at_least("keras", bad)
    with pytest.raises(ValueError, match="version must start with a number"):
        versions.at_least("keras", "latest")
    with pytest.raises(ValueError, match="installed must start with a number"):
        versions.at_least("keras", "3.15", installed="dev")
    with pytest.raises(TypeError, match="installed must be a str"):
        versions.at_least("keras", "3.15", installed=3.15)
    monkeypatch.setattr(versions, "_installed_version", lambda package: None)
    with pytest.raises(ImportError, match="keras is not installed"):
        versions.at_least("keras", "3.15")


@INPUT_SETTINGS
@given(package=PACKAGES, version=VERSIONS)
def test_inputs_at_least(package, version):
    def expected():
        e = Expect()
        name, wanted = e.object("package", package), e.object("version", version)
        e.done()
        if wanted is None:  # at_least needs a version to compare with
            raise Invalid("version")
        number = lambda text: tuple(int(p) for p in re.match(r"\d+(\.\d+)*", text).group(0).split("."))  # noqa: E731
        return number(versions._installed_version(name)) >= number(wanted)

    classify("versions.at_least", lambda: versions.at_least(package.value, version.value), expected,
             agree=lambda result, want: result is want)


def test_needs_version_marker_skips_only_where_the_version_is_older(tmp_path):
    """The conftest hook behind `make test-minimum`'s skips: run on a scratch test file."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n"
        "@pytest.mark.needs_version('numpy', '999', reason='a future NumPy')\n"
        "def test_future(): pass\n"
        "@pytest.mark.needs_version('numpy', '1.0', reason='any NumPy')\n"
        "def test_past(): pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                             str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert "1 passed, 1 skipped" in result.stdout, result.stdout
    assert "needs numpy>=999" in result.stdout and "a future NumPy" in result.stdout
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n@pytest.mark.needs_version('numpy', '1.0')\ndef test_no_reason(): pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "needs_version takes" in result.stdout + result.stderr
