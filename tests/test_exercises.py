"""The student notebooks (exercises/) are up to date, leak no solution, and run up to the first exercise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_exercises  # noqa: E402

CHAPTERS = [s for s in sorted((ROOT / "book").glob("[0-9][0-9]_*.md")) if make_exercises.has_solutions(s)]
ids = [c.stem for c in CHAPTERS]


def student(source: Path) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "exercises" / f"{source.stem}.ipynb", as_version=4)


def test_every_chapter_with_exercises_has_a_current_student_notebook():
    assert CHAPTERS, "no chapter has exercises"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "make_exercises.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", CHAPTERS, ids=ids)
def test_no_solution_code_leaks(source):
    chapter = jupytext.read(source)
    solutions = [c.source for c in chapter.cells if "solution" in c.metadata.get("tags", [])]
    others = "\n".join(c.source for c in chapter.cells if "solution" not in c.metadata.get("tags", []))
    text = "\n".join(c.source for c in student(source).cells)
    for solution in solutions:
        assert solution.strip() not in text
        # Lines that appear only in this solution must not appear in the student version.
        distinctive = [line.strip() for line in solution.splitlines()
                       if len(line.strip()) > 12 and not line.strip().startswith("#") and line.strip() not in others]
        assert distinctive, "a solution with no line of its own: the check below would be empty"
        leaked = [line for line in distinctive if line in text]
        assert not leaked, f"{source.name}: solution lines leaked into the student notebook: {leaked[:3]}"


@pytest.mark.parametrize("source", CHAPTERS, ids=ids)
def test_each_exercise_is_followed_by_an_empty_cell_for_the_answer(source):
    cells = student(source).cells
    exercises = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "{admonition} Exercise" in c.source]
    assert len(exercises) >= 3
    for index in exercises:
        answer = cells[index + 1]
        assert answer.cell_type == "code" and answer.metadata.get("tags") == ["exercise"]
        assert answer.source == make_exercises.PLACEHOLDER
    assert not any(c.get("outputs") for c in cells if c.cell_type == "code"), "student notebooks carry no outputs"


@pytest.mark.parametrize("source", CHAPTERS, ids=ids)
def test_student_notebook_runs_up_to_the_first_exercise(source):
    from nbclient import NotebookClient

    notebook = student(source)
    first = next(i for i, c in enumerate(notebook.cells) if "exercise" in c.metadata.get("tags", []))
    notebook.cells = notebook.cells[: first + 1]  # everything a student runs before answering
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(ROOT / "exercises")}})
    client.execute()
    assert notebook.cells[first].outputs == []  # the empty answer cell ran and printed nothing
