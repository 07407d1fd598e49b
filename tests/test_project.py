"""The project's foundations: a cheap `import companion`, tests that mirror the package, and one
pinned environment."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from conftest import run_python
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
FRAMEWORKS = ("tensorflow", "keras", "torch")


# --- import companion --------------------------------------------------------------------------


IMPORT_PROBE = """
    import json, sys, time
    start = time.perf_counter()
    import companion
    seconds = time.perf_counter() - start
    loaded = sorted(name for name in {frameworks} if name in sys.modules)
    print(json.dumps({{"seconds": seconds, "loaded": loaded}}))
"""


def test_import_companion_loads_no_framework():
    probe = json.loads(run_python(IMPORT_PROBE.format(frameworks=FRAMEWORKS)))
    assert probe["loaded"] == [], f"`import companion` imported {probe['loaded']}; import them lazily"


MODULES = sorted(p.stem for p in (ROOT / "companion").glob("*.py") if p.stem != "__init__")


def test_every_module_is_probed():
    assert {"metrics", "diagnose", "tf_loop", "torch_loop", "checkpoints"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_any_module_loads_no_framework(module):
    # TensorFlow and PyTorch are imported inside the functions that need them (STYLE.md), so a
    # reader on a machine with one framework can still use every framework-free module.
    code = f"import sys, companion.{module}; print(sorted(set({FRAMEWORKS!r}) & set(sys.modules)))"
    assert run_python(code).strip() == "[]", f"importing companion.{module} imported a framework"


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    # An example a reader copies from a docstring must run; `# doctest: +SKIP` marks only the
    # ones that write files or start processes, line by line.
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(f"companion.{module}"), raise_on_error=False)
    assert failures == 0, f"{failures} of {tried} docstring examples of companion.{module} failed"
    if module in ("metrics", "tf_loop", "torch_loop", "training_log", "calibration", "diagnose", "plotting"):
        assert tried > 0, f"companion.{module} lost its docstring examples"


def test_import_companion_is_fast():
    # Best of three fresh interpreters, so a cold disk cache on the first one does not count.
    timings = [json.loads(run_python(IMPORT_PROBE.format(frameworks=FRAMEWORKS)))["seconds"] for _ in range(3)]
    assert min(timings) < 0.3, f"`import companion` took {min(timings):.3f} s (best of {timings})"


# --- the tests mirror the package ---------------------------------------------------------------

# Test files that check the project as a whole, not one module (tests/rendered/ checks the built
# book); test_keras3_facts.py checks what the chapters say about Keras itself.
PROJECT_TEST_FILES = ("test_book.py", "test_colab_check.py", "test_editions.py", "test_keras3_facts.py", "test_project.py",
                      "test_security.py")


def module_test_file(module: str) -> str:
    """companion/metrics.py is tested in tests/test_metrics.py, companion/_validation.py in test_validation.py."""
    return f"test_{module.lstrip('_')}.py"


def test_every_module_has_its_test_file():
    # A reader who sees `from companion import checkpoints` finds its tests in test_checkpoints.py.
    missing = [f"companion/{m}.py: tests/{module_test_file(m)}" for m in MODULES
               if not (ROOT / "tests" / module_test_file(m)).is_file()]
    assert not missing, f"modules without their test file: {missing}"


def test_every_test_file_is_a_modules_or_the_projects():
    expected = {module_test_file(m) for m in MODULES} | set(PROJECT_TEST_FILES)
    found = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert found - expected == set(), "test files of no module: put their tests in the module's file"
    assert set(PROJECT_TEST_FILES) <= found, "a project-level test file was renamed: update PROJECT_TEST_FILES"


# --- one pinned environment --------------------------------------------------------------------


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def extras() -> dict[str, list[Requirement]]:
    return {name: [Requirement(r) for r in reqs] for name, reqs in pyproject()["project"]["optional-dependencies"].items()}


def named_packages() -> set[str]:
    """Every third-party package that pyproject.toml names (core and extras)."""
    requirements = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    requirements += [r for reqs in extras().values() for r in reqs]
    return {canonicalize_name(r.name) for r in requirements} - {"companion"}


def pins() -> dict[str, str]:
    pinned = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.]*)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not a plain name==version pin"
        name = canonicalize_name(match[1])
        assert name not in pinned, f"constraints.txt:{number}: {name} is pinned twice"
        pinned[name] = match[2]
    return pinned


def test_constraints_pin_every_package_pyproject_names():
    missing = named_packages() - pins().keys()
    assert not missing, f"named in pyproject.toml but not pinned in constraints.txt: {sorted(missing)}"


def test_constraints_satisfy_pyproject_bounds():
    pinned = pins()
    requirements = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    requirements += [r for reqs in extras().values() for r in reqs if r.name != "companion"]
    for requirement in requirements:
        version = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} excludes pin {version}"


def test_constraints_do_not_pin_the_companion_itself():
    assert "companion" not in pins()


def test_all_extra_is_every_other_extra():
    declared = extras()
    (self_reference,) = declared["all"]
    assert canonicalize_name(self_reference.name) == "companion"
    assert self_reference.extras == set(declared) - {"all"}


@pytest.mark.pinned_environment(reason="it checks that the environment is the pinned one")
def test_installed_versions_match_the_pins():
    # The environment running the tests is the one the constraints describe.
    pinned = pins()
    for name in sorted(named_packages()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # e.g. tensorflow-cpu on a machine its platform marker excludes
        assert installed.public == Version(pinned[name]).public, f"{name}: installed {installed}, pinned {pinned[name]}"


def test_environment_yml_installs_the_same_pinned_set():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    dependencies = environment["dependencies"]
    python = [d for d in dependencies if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"], python
    (pip_section,) = [d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d]
    assert "-c requirements/constraints.txt" in pip_section
    assert "-e .[all]" in pip_section
    pinned = pins()
    for line in pip_section:
        if line.startswith("-"):
            continue
        requirement = Requirement(line)  # any explicit pin must agree with constraints.txt
        version = pinned.get(canonicalize_name(requirement.name))
        assert version and requirement.specifier.contains(version), f"environment.yml: {line} vs pin {version}"


def test_makefile_installs_the_same_pinned_set():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c \$\(CONSTRAINTS\) -e \"\.\[all\]\"", makefile)
    assert "CONSTRAINTS := requirements/constraints.txt" in makefile


def test_python_version_agrees():
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") in Requirement(
        "python" + pyproject()["project"]["requires-python"]
    ).specifier
    assert sys.version_info[:2] == (3, 11), "the pinned environment is tested on Python 3.11"


def test_readme_lists_every_module_each_chapter_imports():
    # The README's chapter table is where a reader looks for a chapter's code.
    import re

    readme = (ROOT / "README.md").read_text()
    for source in sorted((ROOT / "book").glob("[0-9][0-9]_*.md")):
        if source.stem.startswith("00_"):
            continue
        text = source.read_text()
        imported = set(re.findall(r"from companion\.(\w+) import", text))
        for names in re.findall(r"from companion import ([\w, ]+)", text):
            imported |= {name.strip() for name in names.split(",")}
        row = next((line for line in readme.splitlines() if line.startswith(f"| `book/{source.stem}`")), None)
        assert row is not None, f"README.md has no row for {source.stem}"
        listed = set(re.findall(r"`(\w+)`", row.split("|")[3]))
        assert imported <= listed, f"README.md's row for {source.stem} lacks {sorted(imported - listed)}"
