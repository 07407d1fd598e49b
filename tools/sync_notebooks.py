"""Regenerate each chapter's .ipynb from its MyST .md source and execute it in place.

The executed .ipynb is what the book shows and what nbval compares against on every test run,
so this is the one way outputs are refreshed: ``make sync`` (all chapters) or
``make sync NB=book/01_x.md`` (one).

It runs the notebook on this interpreter's own kernel (the .venv one), in the notebook's
folder, and does not record execution timestamps, so that re-syncing an unchanged chapter
leaves its .ipynb unchanged.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient


def sync(md_path: Path, *, timeout: int = 600) -> float:
    """Write ``md_path`` with ``.ipynb`` suffix, executed; return the seconds it took."""
    if md_path.suffix != ".md" or not md_path.is_file():
        raise SystemExit(f"expected an existing .md notebook source, got {md_path}")
    notebook = jupytext.read(md_path)
    formats = notebook.metadata.get("jupytext", {}).get("formats", "")
    if "ipynb" not in formats.split(","):
        raise SystemExit(f"{md_path} is not paired with an .ipynb (front matter jupytext.formats: ipynb,md:myst)")
    start = time.perf_counter()
    execute(notebook, md_path.parent, timeout=timeout)
    seconds = time.perf_counter() - start
    _stable_cell_ids(notebook)
    jupytext.write(notebook, md_path.with_suffix(".ipynb"), fmt="ipynb")
    return seconds


def execute(notebook, folder: Path, *, timeout: int = 600) -> None:
    """Run ``notebook`` top to bottom on this interpreter's kernel, in ``folder``."""
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        # The kernel logs a start-up notice about its local TCP transport to the terminal.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": str(folder)}},
    ).execute()


def _stable_cell_ids(notebook) -> None:
    """Name each cell after its content, so that re-syncing does not rewrite every cell id."""
    seen: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:8]
        cell_id = digest if digest not in seen else f"{digest}-{index}"
        seen.add(cell_id)
        cell["id"] = cell_id


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python tools/sync_notebooks.py book/NN_name.md [...]")
    for name in argv:
        seconds = sync(Path(name))
        print(f"{name} -> {Path(name).with_suffix('.ipynb')}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
