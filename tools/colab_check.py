"""Run the Colab and student editions top to bottom and compare their numbers with the book's.

``make test-colab`` runs this with the Python of ``.venv-colab`` (Colab's versions, from
``requirements/colab.txt``). It

1. installs the companion as the Colab setup cell does, ``pip install "companion @ git+URL"``,
   with URL a git repository made from the working tree (``--install``; see ``install``);
2. executes every Colab edition and every student edition with nbclient, in an empty folder as
   Colab's ``/content`` is, and fails on any error: in a student edition the placeholder answers
   make each ``check`` print "Not yet", which is not an error;
3. compares the printed text of each Colab edition, cell by cell, with the stored output of the
   book's notebook: every word, verdict and check result must be identical, and every number
   within ``--rtol`` (relative) or one unit of its last printed digit.

    python tools/colab_check.py --install            # what `make test-colab` runs
    python tools/colab_check.py --editions book --students exercises --reference book

The report gives, per notebook: cells run, numbers compared, numbers that differ at all, those
that differ beyond their last printed digit, and the largest relative difference.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
# A printed number: optional sign, digits with an optional fraction, optional exponent. Output
# text is not Python, so no tokenizer of a library fits; this is the one pattern the runner needs.
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
RTOL = 1e-3
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of IPython's tracebacks
# requirements/colab.txt's one forced deviation: PyPI's torch is a CUDA build, which warns once
# per kernel, at its first autograd call, that it finds no CUDA; Colab's CPU build does not.
# Only this warning is forgiven; any other stderr text fails.
TORCH_CUDA_BUILD = re.compile(r"^\S+torch/\S+: UserWarning: CUDA initialization: .*\n(?:  .*\n?)*",
                              re.MULTILINE)
# Python 3.13's frozen modules make debugpy warn on the kernel's stderr at every start.
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def edition_folders() -> tuple[Path, Path]:
    """The Colab and student edition folders, as tools/make_editions.py names them.

    The generator needs Sphinx, which Colab's environment lacks; there the folders come from
    the command line (`make test-colab` asks the project's .venv), else the agreed defaults.
    """
    try:
        spec = importlib.util.spec_from_file_location("make_editions",
                                                      ROOT / "tools" / "make_editions.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return Path(module.EDITIONS), Path(module.STUDENT_EDITIONS)
    except (ImportError, FileNotFoundError):
        return ROOT / "colab" / "book", ROOT / "colab" / "exercises"


# --- 1. the install, as the setup cell does it ---------------------------------------------------


def install() -> None:
    """``pip install "companion @ git+file://<snapshot>"``, the setup cell's command.

    The snapshot is a one-commit git repository of the working tree (tracked and untracked,
    not ignored, files), so uncommitted work is what gets installed; pip clones it and builds
    the wheel exactly as it does from GitHub. Every other installed package must be unchanged:
    the companion may not touch what Colab already has.
    """
    before = _freeze()
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "companion"],
                   check=False, capture_output=True)
    with tempfile.TemporaryDirectory() as snapshot:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
        for name in filter(None, files):
            source = ROOT / name
            if source.is_file():  # a tracked file deleted in the working tree is skipped
                (Path(snapshot) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, Path(snapshot) / name)
        git = ["git", "-c", "user.name=colab-check", "-c", "user.email=colab-check@localhost"]
        subprocess.run(git + ["init", "-q"], cwd=snapshot, check=True)
        subprocess.run(git + ["add", "-A"], cwd=snapshot, check=True)
        subprocess.run(git + ["commit", "-q", "-m", "snapshot"], cwd=snapshot, check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        f"companion @ git+file://{snapshot}"], check=True)
    after = _freeze()
    changed = sorted(set(before.items()) ^ set(after.items()))
    changed = [f"{name}=={version}" for name, version in changed if name != "companion"]
    if changed:
        raise SystemExit(f"installing the companion changed other packages: {changed}")
    print(f"companion installed from a git snapshot of the working tree; {len(after) - 1} other "
          "packages unchanged")


def _freeze() -> dict[str, str]:
    lines = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line)


# --- 2. running a notebook -----------------------------------------------------------------------


def execute(path: Path, *, cwd: Path | None) -> tuple[nbformat.NotebookNode, float]:
    """``path`` executed top to bottom in a fresh kernel (any error raises), and its run time."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as empty:
        client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                                extra_arguments=["--IPKernelApp.log_level=ERROR"],
                                resources={"metadata": {"path": str(cwd or empty)}})
        start = time.perf_counter()
        client.execute()
    return notebook, time.perf_counter() - start


def check_kernel() -> None:
    """Refuse to run if "python3" would start another Python than this one (another venv)."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    if argv[0] not in ("python", sys.executable):
        raise SystemExit(f"the python3 kernel runs {argv[0]}, not {sys.executable}: remove the "
                         "user kernelspec or run this with that Python")


# --- 3. comparing printed text ------------------------------------------------------------------


def printed(cell) -> str:
    """What a code cell printed: its stdout and the plain text of its results, in order."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def stderr_of(cell) -> str:
    """What a cell wrote to stderr, less the CUDA build's known warning."""
    text = "".join(o.text for o in cell.get("outputs", [])
                   if o.output_type == "stream" and o.name == "stderr")
    return TORCH_CUDA_BUILD.sub("", text)


def _unit(token: str) -> float:
    """One unit of the last printed digit: 0.01 for '3.14', 1 for '31', 1e-5 for '1.2e-4'."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


@dataclass
class Comparison:
    compared: int = 0
    differ: int = 0
    beyond_last_digit: int = 0
    largest_relative: float = 0.0
    problems: list[str] = field(default_factory=list)

    def text(self, label: str, got: str, want: str, rtol: float) -> None:
        got_tokens, want_tokens = NUMBER.split(got), NUMBER.split(want)
        got_numbers, want_numbers = NUMBER.findall(got), NUMBER.findall(want)
        if got_tokens != want_tokens or len(got_numbers) != len(want_numbers):
            diff = difflib.unified_diff(NUMBER.sub("#", want).splitlines(),
                                        NUMBER.sub("#", got).splitlines(), "book", "colab",
                                        lineterm="", n=0)
            self.problems.append(f"{label}: the words differ\n    " + "\n    ".join(diff))
            return
        for a, b in zip(got_numbers, want_numbers):
            self.compared += 1
            if a == b:
                continue
            self.differ += 1
            x, y = float(a), float(b)
            relative = abs(x - y) / abs(y) if y else abs(x - y)
            self.largest_relative = max(self.largest_relative, relative)
            beyond = abs(x - y) > _unit(b) * (1 + 1e-9)
            self.beyond_last_digit += beyond
            if beyond and relative > rtol:
                self.problems.append(f"{label}: {a} where the book has {b} "
                                     f"(relative difference {relative:.1e})")


def pair_cells(edition, reference) -> list[tuple[int, object, object]]:
    """Each code cell of ``edition`` with the book cell it came from (same source, in order).

    The editions drop removed cells and rewrite the setup cell, so cells are matched by source,
    with difflib aligning the two sequences; an unmatched cell is compared with nothing.
    """
    mine = [c for c in edition.cells if c.cell_type == "code"]
    theirs = [c for c in reference.cells if c.cell_type == "code"]
    matcher = difflib.SequenceMatcher(a=[c.source.strip() for c in mine],
                                      b=[c.source.strip() for c in theirs], autojunk=False)
    pairs = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            pairs.append((block.a + k, mine[block.a + k], theirs[block.b + k]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    editions, students = edition_folders()
    parser.add_argument("--install", action="store_true", help="install the companion first")
    parser.add_argument("--editions", type=Path, default=editions, help="Colab editions folder")
    parser.add_argument("--students", type=Path, default=students, help="student editions folder")
    parser.add_argument("--reference", type=Path, default=ROOT / "book",
                        help="the book's executed notebooks, whose stored outputs are compared")
    parser.add_argument("--rtol", type=float, default=RTOL, help="relative tolerance per number")
    parser.add_argument("--in-place", action="store_true",
                        help="run each notebook in its own folder (the book's notebooks read "
                             "their .md source) instead of an empty one")
    parser.add_argument("--only", help="run only notebooks whose name contains this")
    args = parser.parse_args(argv)

    check_kernel()
    if args.install:
        install()
    import companion  # noqa: F401  (the installed one: fail here, not in every notebook)

    runs = [("colab", p) for p in sorted(args.editions.glob("[0-9][0-9]_*.ipynb"))]
    runs += [("student", p) for p in sorted(args.students.glob("[0-9][0-9]_*.ipynb"))]
    runs = [(kind, p) for kind, p in runs if not args.only or args.only in p.name]
    if not runs:
        print(f"no notebooks in {args.editions} or {args.students}")
        return 1
    failures, total = [], Comparison()
    started = time.perf_counter()
    header = f"{'notebook':34s} {'cells':>5s} {'numbers':>7s} {'differ':>6s} {'>digit':>6s} " \
             f"{'max rel':>8s} {'seconds':>7s}"
    print(header)
    for kind, path in runs:
        label = f"{kind}/{path.name}"
        try:
            executed, seconds = execute(path, cwd=path.parent if args.in_place else None)
        except Exception as error:  # nbclient's CellExecutionError carries the cell and traceback
            failures.append(f"{label}: {type(error).__name__}: {ANSI.sub('', str(error))[-2000:]}")
            print(f"{label:34s} FAILED")
            continue
        cells = sum(c.cell_type == "code" for c in executed.cells)
        result = Comparison()
        noisy = [i for i, c in enumerate(executed.cells) if stderr_of(c)]
        if kind == "colab":
            reference = nbformat.read(args.reference / path.name, as_version=4)
            for index, got, want in pair_cells(executed, reference):
                result.text(f"{label} code cell {index}", printed(got), printed(want), args.rtol)
        for index in noisy:  # a reader sees it; the book's notebooks may have none
            text = ANSI.sub("", stderr_of(executed.cells[index])).strip()
            result.problems.append(f"{label}: cell {index} wrote to stderr: {text[:300]}")
        failures += result.problems
        for name in ("compared", "differ", "beyond_last_digit"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        total.largest_relative = max(total.largest_relative, result.largest_relative)
        numbers = f"{result.compared:7d} {result.differ:6d} {result.beyond_last_digit:6d} " \
                  f"{result.largest_relative:8.1e}" if kind == "colab" else f"{'-':>7s} " * 3 + \
                  f"{'-':>8s}"
        print(f"{label:34s} {cells:5d} {numbers} {seconds:7.1f}", flush=True)
    print(f"{'all':34s} {'':5s} {total.compared:7d} {total.differ:6d} "
          f"{total.beyond_last_digit:6d} {total.largest_relative:8.1e} "
          f"{time.perf_counter() - started:7.1f}")
    print(f"(numbers: printed numbers compared with the book's stored output; differ: not the "
          f"same text; >digit: differ by more than one unit of the last printed digit; a number "
          f"fails only if it is beyond its last digit and beyond relative {args.rtol:g})")
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        return 1
    print("All notebooks ran; every word identical and every number within tolerance.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
