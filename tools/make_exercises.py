"""Generate the student notebooks: each chapter with its worked solutions taken out.

``make exercises`` (also run by ``make sync``) writes ``exercises/NN_name.ipynb`` for every
chapter ``book/NN_name.md`` that has exercises. Every code cell tagged ``solution`` is replaced by an empty cell for
the reader's own answer; all other cells are kept as they are, without outputs, so the notebook
runs top to bottom in Colab. The files are committed so that Colab can open them from the
repository; ``tests/test_exercises.py`` checks they are up to date and leak no solution.

    python tools/make_exercises.py            # all chapters
    python tools/make_exercises.py --check    # exit 1 if a committed notebook is out of date
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK, OUT = ROOT / "book", ROOT / "exercises"
PLACEHOLDER = "# Your solution here. The worked solution is in the book, under this exercise.\n"
HEADER = (
    "# {title} (student version)\n\n"
    "This is the chapter with the solutions of its exercises taken out: each exercise is followed by an "
    "empty cell for your own code. Run the notebook from the top (the first cell sets everything up), "
    "read on, and try each exercise before you look at the worked solution in the book "
    "(`book/{name}.ipynb` in the repository)."
)


def student_version(source: Path) -> nbformat.NotebookNode:
    """The student notebook for the chapter source ``source`` (a jupytext .md)."""
    chapter = jupytext.read(source)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = copy.deepcopy(chapter.metadata)
    notebook.metadata.pop("jupytext", None)  # a standalone notebook, not half of a pair
    title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in chapter.cells
                  if c.cell_type == "markdown" and c.source.startswith("# ")), source.stem)
    notebook.cells.append(nbformat.v4.new_markdown_cell(HEADER.format(title=title, name=source.stem)))
    for cell in chapter.cells:
        tags = list(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            continue  # the header above replaces the title
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
            if "solution" in tags:
                new.source = PLACEHOLDER
                tags = ["exercise"]
            elif tags:
                tags = [t for t in tags if t not in ("hide-input", "hide-cell", "hide-output", "remove-output")]
            if tags:
                new.metadata["tags"] = tags
        else:
            new = nbformat.v4.new_markdown_cell(cell.source)
        notebook.cells.append(new)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:03d}"  # stable ids: regenerating an unchanged chapter changes nothing
    return notebook


def has_solutions(source: Path) -> bool:
    return any("solution" in c.metadata.get("tags", []) for c in jupytext.read(source).cells)


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that exercises/ is up to date")
    args = parser.parse_args(argv)
    sources = [s for s in sorted(BOOK.glob("[0-9][0-9]_*.md")) if has_solutions(s)]
    stale = []
    OUT.mkdir(exist_ok=True)
    for source in sources:
        target = OUT / f"{source.stem}.ipynb"
        text = render(student_version(source))
        if target.is_file() and target.read_text() == text:
            continue
        if args.check:
            stale.append(target.relative_to(ROOT))
        else:
            target.write_text(text)
            print(f"{source.relative_to(ROOT)} -> {target.relative_to(ROOT)}")
    expected = {f"{s.stem}.ipynb" for s in sources}
    orphans = [p for p in OUT.glob("*.ipynb") if p.name not in expected]
    if args.check and (stale or orphans):
        print("out of date (run `make exercises`):", *stale, *orphans, sep="\n  ")
        return 1
    for orphan in orphans:
        orphan.unlink()
        print(f"removed {orphan.relative_to(ROOT)} (no chapter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
