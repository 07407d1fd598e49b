"""Release an edition of the course: one version everywhere, the editions regenerated, a git tag.

An edition's version is ``YYYY.N`` (``2026.1``: the first edition of 2026), its tag ``v`` +
the version. It is written in ``pyproject.toml``, ``companion/__init__.py``, ``CITATION.cff``
and, as the tag, in ``_config.yml``'s ``repository.branch`` (so the book's Colab links open the
edition's notebooks) and in every Colab edition's setup cell (so they install the edition's
companion). ``check`` says whether all of these agree; ``make release VERSION=...`` runs

    python tools/release.py prepare 2026.2   # version everywhere, CHANGELOG dated, colab/, commit
    python tools/release.py tag              # checks, then `git tag -a v2026.2` on HEAD

on a clean ``main``. Push both afterwards: ``git push origin main v2026.2``. ``prepare`` with
the version already in place (the first edition) only dates the CHANGELOG and commits.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.compile(r"(\d{4})\.(\d+)")  # YYYY.N, N from 1
UNRELEASED = "## [Unreleased]"


def git(*args: str, root: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def check_version(version: str) -> str:
    """``version`` if it is an edition number YYYY.N."""
    match = VERSION.fullmatch(str(version))
    if not match or int(match[2]) < 1:
        raise ValueError(f"VERSION must be an edition number YYYY.N such as 2026.2, "
                         f"got {version!r}")
    return version


def _key(version: str) -> tuple[int, int]:
    year, count = check_version(version).split(".")
    return int(year), int(count)


# --- where the version is written ----------------------------------------------------------------

def versions(root: Path = ROOT) -> dict[str, str]:
    """Every place's version (the tag, where a tag is written), by file."""
    init = (root / "companion" / "__init__.py").read_text()
    found = {
        "pyproject.toml": tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"],
        "companion/__init__.py": re.search(r'^__version__ = "([^"]+)"$', init, re.M)[1],
        "CITATION.cff": str(yaml.safe_load((root / "CITATION.cff").read_text())["version"]),
        "_config.yml (repository.branch)":
            str(yaml.safe_load((root / "_config.yml").read_text())["repository"]["branch"]),
    }
    for path in sorted((root / "colab").glob("*/[0-9][0-9]_*.ipynb")):
        setup = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        release = re.search(r'^RELEASE = "([^"]+)"', "".join(setup["source"]), re.M)
        found[str(path.relative_to(root))] = release[1] if release else "(none)"
    return found


def install_line(notebook: Path) -> str:
    """The requirement an edition's setup cell installs on Colab: companion @ git+URL@TAG."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    setup = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    repository = re.search(r'^REPOSITORY = "([^"]+)"', setup, re.M)
    release = re.search(r'^RELEASE = "([^"]+)"', setup, re.M)
    if not (repository and release):
        raise ValueError(f"{notebook}: its first code cell names no REPOSITORY and RELEASE")
    return f"companion @ git+{repository[1]}@{release[1]}"


def disagreements(root: Path = ROOT) -> list[str]:
    """What does not name the current version (or its tag): empty when all agree."""
    found = versions(root)
    version = found["pyproject.toml"]
    problems = []
    try:
        check_version(version)
    except ValueError as error:
        problems.append(f"pyproject.toml: {error}")
    for place, value in found.items():
        wanted = f"v{version}" if place.startswith(("_config.yml", "colab/")) else version
        if value != wanted:
            problems.append(f"{place}: {value!r}, not {wanted!r}")
    changelog = (root / "CHANGELOG.md").read_text()
    if f"## [{version}]" not in changelog and UNRELEASED not in changelog:
        problems.append(f"CHANGELOG.md: no section for {version} (nor {UNRELEASED})")
    return problems


def _replace_line(path: Path, pattern: str, line: str) -> None:
    text = path.read_text()
    new, count = re.subn(pattern, line, text, count=1, flags=re.M)
    if count != 1:
        raise ValueError(f"{path.name}: no line matching {pattern!r}")
    path.write_text(new)


def write_version(version: str, root: Path = ROOT, today: datetime.date | None = None) -> None:
    """Write ``version`` everywhere and date its CHANGELOG section (the editions: `make editions`)."""
    check_version(version)
    today = today or datetime.date.today()
    _replace_line(root / "pyproject.toml", r'^version = "[^"]*"$', f'version = "{version}"')
    _replace_line(root / "companion" / "__init__.py", r'^__version__ = "[^"]*"$',
                  f'__version__ = "{version}"')
    citation = root / "CITATION.cff"
    _replace_line(citation, r'^version: .*$', f'version: "{version}"')
    if re.search(r"^date-released: ", citation.read_text(), re.M):
        _replace_line(citation, r"^date-released: .*$", f'date-released: "{today}"')
    else:
        _replace_line(citation, r'^(version: .*)$', f'\\1\ndate-released: "{today}"')
    _replace_line(root / "_config.yml", r"^  branch: .*$", f"  branch: v{version}")
    changelog = root / "CHANGELOG.md"
    text = changelog.read_text()
    if f"## [{version}]" not in text:
        if UNRELEASED not in text:
            raise ValueError(f"CHANGELOG.md: list the edition's changes under {UNRELEASED} first")
        text = text.replace(UNRELEASED, f"{UNRELEASED}\n\n## [{version}] - {today}", 1)
        changelog.write_text(text)


# --- the two steps ----------------------------------------------------------------------------

def _require_clean(root: Path) -> None:
    status = git("status", "--porcelain", root=root)
    if status:
        raise SystemExit(f"the working tree has changes; commit or stash them first:\n{status}")


def prepare(version: str, root: Path = ROOT, *, editions: bool = True) -> None:
    """Write the version, regenerate the editions, and commit "Release <version>"."""
    check_version(version)
    _require_clean(root)
    current = versions(root)["pyproject.toml"]
    if _key(version) < _key(current):
        raise SystemExit(f"VERSION {version} is older than the current {current}")
    if git("tag", "--list", f"v{version}", root=root):
        raise SystemExit(f"v{version} is already tagged: releases are never moved")
    write_version(version, root)
    if editions:
        subprocess.run([sys.executable, str(root / "tools" / "make_editions.py")], cwd=root,
                       check=True)
    problems = disagreements(root)
    if problems:
        raise SystemExit("the version does not agree everywhere:\n  " + "\n  ".join(problems))
    git("add", "-A", "pyproject.toml", "companion/__init__.py", "CITATION.cff", "_config.yml",
        "CHANGELOG.md", "colab", root=root)
    if git("status", "--porcelain", root=root):
        git("commit", "-q", "-m", f"Release {version} (edition {version}, tag v{version})",
            root=root)
        print(f"committed the release of {version}; next: python tools/release.py tag")
    else:
        print(f"{version} was in place already; next: python tools/release.py tag")


def tag(root: Path = ROOT) -> str:
    """Tag HEAD ``v<version>`` once everything names that version; returns the tag."""
    _require_clean(root)
    problems = disagreements(root)
    version = versions(root)["pyproject.toml"]
    if f"## [{version}]" not in (root / "CHANGELOG.md").read_text():
        problems.append(f"CHANGELOG.md: no dated section ## [{version}] (run prepare)")
    if problems:
        raise SystemExit("not tagged:\n  " + "\n  ".join(problems))
    name = f"v{version}"
    if git("tag", "--list", name, root=root):
        raise SystemExit(f"{name} exists already: releases are never moved")
    git("tag", "-a", name, "-m", f"Edition {version}", root=root)
    print(f"tagged {name}; publish it with: git push origin HEAD {name}")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("check", help="exit 1 unless every place names the current version")
    prepare_parser = steps.add_parser("prepare", help="write VERSION everywhere and commit")
    prepare_parser.add_argument("version")
    steps.add_parser("tag", help="tag HEAD v<version>")
    line = steps.add_parser("install-line", help="print what an edition's setup cell installs")
    line.add_argument("notebook", type=Path)
    args = parser.parse_args(argv)
    if args.step == "install-line":
        print(install_line(args.notebook))
        return 0
    if args.step == "check":
        problems = disagreements()
        print("\n".join(problems) or f"all name {versions()['pyproject.toml']}")
        return 1 if problems else 0
    if args.step == "prepare":
        prepare(args.version)
    else:
        tag()
    return 0


if __name__ == "__main__":
    sys.exit(main())
