"""The book's conventions, checked on the files themselves (no notebook is executed here).

- every chapter is a jupytext pair, book/NN_name.md (the source) and book/NN_name.ipynb (executed),
  with identical cells;
- every notebook's first code cell is the setup cell, with its output hidden, installing the
  companion from exactly the repository URL in _config.yml;
- stored outputs are complete and clean (executed top to bottom, no errors, no warnings);
- the table of contents and the configuration point at what exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPOSITORY_URL = CONFIG["repository"]["url"]

NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CHAPTER_SOURCES = sorted(BOOK.glob("[0-9][0-9]_*.md"))
SETUP_TAGS = {"hide-output", "remove-output"}


def notebook_ids(paths):
    return [p.name for p in paths]


def cells(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must agree between the two files of a pair: type, source and tags of every cell."""
    notebook = jupytext.read(path)
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_book_has_notebooks():
    assert NOTEBOOKS, "no book/*.ipynb found"


# --- jupytext pairs ----------------------------------------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_notebook_has_an_identical_md_twin(notebook):
    source = notebook.with_suffix(".md")
    assert source.is_file(), f"{notebook.name} has no {source.name}: create it with jupytext, edit the .md"
    md_cells, ipynb_cells = cells(source), cells(notebook)
    assert len(md_cells) == len(ipynb_cells), f"{source.name}: {len(md_cells)} cells, {notebook.name}: {len(ipynb_cells)}"
    for index, (md_cell, ipynb_cell) in enumerate(zip(md_cells, ipynb_cells)):
        assert md_cell == ipynb_cell, f"cell {index} differs between {source.name} and {notebook.name}; run `make sync`"


@pytest.mark.parametrize("source", CHAPTER_SOURCES, ids=notebook_ids(CHAPTER_SOURCES))
def test_chapter_source_has_an_ipynb_twin(source):
    assert source.with_suffix(".ipynb").is_file(), f"{source.name} was never synced: run `make sync NB={source.relative_to(ROOT)}`"
    front_matter = jupytext.read(source).metadata
    assert front_matter["jupytext"]["formats"] == "ipynb,md:myst"
    assert front_matter["kernelspec"]["name"] == "python3"


# --- the setup cell ----------------------------------------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_first_code_cell_is_the_setup_cell(notebook):
    first = code_cells(notebook)[0]
    source = first.source
    assert SETUP_TAGS & set(first.metadata.get("tags", ())), "the setup cell must be tagged hide-output"
    assert '"google.colab" in sys.modules' in source, "install only on Colab"
    assert f'REPOSITORY = "{REPOSITORY_URL}"' in source, f"the setup cell must use _config.yml's URL {REPOSITORY_URL}"
    assert set(re.findall(r"https?://[^\s\"'}]+", source)) == {REPOSITORY_URL}, "no other URL in the setup cell"
    assert '"companion @ git+{REPOSITORY}"' in source, "install the companion from the repository"
    assert not re.search(r"tensorflow|keras|torch", source), "Colab has the frameworks: never (re)install them"
    assert "import companion" in source and "companion.seed_everything(" in source


def test_the_repository_url_is_well_formed():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL), REPOSITORY_URL


# --- stored outputs ----------------------------------------------------------------------------

WARNING_TEXT = re.compile(r"\b\w*Warning\b|\bWARNING\b|^W\d{4} ", re.MULTILINE)


def output_text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return "\n".join(v for k, v in output.get("data", {}).items() if k.startswith("text/") and isinstance(v, str))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_notebook_was_executed_top_to_bottom_in_one_run(notebook):
    counts = [c.execution_count for c in code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}: run `make sync`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_stored_outputs_are_free_of_errors_and_warnings(notebook):
    for index, cell in enumerate(code_cells(notebook)):
        for output in cell.outputs:
            where = f"{notebook.name}, code cell {index}"
            assert output.output_type != "error", f"{where}: stored error {output.get('ename')}"
            assert not (output.output_type == "stream" and output.name == "stderr"), (
                f"{where}: stderr in the stored output: {output.text[:200]!r}"
            )
            match = WARNING_TEXT.search(output_text(output))
            assert not match, f"{where}: warning in the stored output: {match.group(0)!r}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_every_glued_name_in_the_text_is_glued_by_the_code(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    text = "\n".join(c.source for c in notebook_cells if c.cell_type == "markdown")
    used = set(re.findall(r"\{glue(?::\w+)?\}`([\w-]+)", text))
    glued = {
        o.metadata["scrapbook"]["name"]
        for c in notebook_cells
        if c.cell_type == "code"
        for o in c.outputs
        if "scrapbook" in o.get("metadata", {})
    }
    assert used <= glued, f"the text uses {sorted(used - glued)}, which no stored output glues"


# --- table of contents and configuration -------------------------------------------------------


def toc_files(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file"):
                found.append(value)
            else:
                found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


def test_toc_entries_exist():
    entries = toc_files(TOC)
    assert entries[0] == "book/intro"
    for entry in entries:
        candidates = [ROOT / entry] + [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
        assert any(p.is_file() for p in candidates), f"_toc.yml lists {entry}, which does not exist"


def test_every_notebook_is_in_the_toc():
    # only_build_toc_files: a notebook missing from _toc.yml would silently be left out of the book.
    listed = {entry.removesuffix(".ipynb") for entry in toc_files(TOC)}
    missing = [nb.name for nb in NOTEBOOKS if str(nb.relative_to(ROOT).with_suffix("")) not in listed]
    assert not missing, f"not in _toc.yml: {missing}"


def test_the_book_renders_stored_outputs_only():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["only_build_toc_files"] is True
    assert "book/[0-9][0-9]_*.md" in CONFIG["exclude_patterns"], "the .md twins must not be built as pages too"


# --- every chapter keeps the same teaching structure ------------------------------------------

REQUIRED_SECTIONS = ("Overview", "Setup", "The question", "The article's claims, tested",
                     "What to do about it", "Summary", "Exercises", "Self-check")
CHAPTERS = [nb for nb in NOTEBOOKS if re.match(r"0[1-9]_", nb.name)]


def sections(notebook_cells) -> dict[str, str]:
    """The markdown under each `## ` heading (up to the next one), code cells as placeholders."""
    found, current = {}, None
    for cell in notebook_cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else ["<code>"]:
            heading = re.match(r"## (.+)", line)
            if heading:
                current = heading.group(1).strip()
                found[current] = ""
            elif current is not None:
                found[current] += line + "\n"
    return found


@pytest.mark.parametrize("notebook", CHAPTERS, ids=notebook_ids(CHAPTERS))
def test_chapter_has_the_course_structure(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    found = sections(notebook_cells)
    missing = [s for s in REQUIRED_SECTIONS if s not in found]
    assert not missing, f"{notebook.name} lacks the sections {missing}"
    assert "By the end of this chapter you will be able to" in found["Overview"]
    assert found["Overview"].count("\n- ") >= 3, "at least three learning objectives, as a bullet list"
    assert "|---" in found["Summary"] or "| ---" in found["Summary"], "the summary is a table"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=notebook_ids(CHAPTERS))
def test_every_claim_has_a_verdict_and_a_check(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    claims = sections(notebook_cells)["The article's claims, tested"]
    subsections = re.split(r"^### ", claims, flags=re.MULTILINE)[1:]
    assert len(subsections) >= 2, "each claim gets a ### subsection"
    for body in subsections:
        title = body.splitlines()[0]
        assert re.search(r"\*\*Verdict: (holds|partly holds|does not hold)\b", body), f"claim {title!r} has no verdict"
        assert "<code>" in body, f"claim {title!r} has no experiment"
    all_code = "\n".join(c.source for c in notebook_cells if c.cell_type == "code")
    assert len(re.findall(r"^\s*(assert |np\.testing\.assert|torch\.testing\.assert)", all_code, re.MULTILINE)) >= len(subsections)


@pytest.mark.parametrize("notebook", CHAPTERS, ids=notebook_ids(CHAPTERS))
def test_exercises_have_executed_solutions_and_self_check_has_answers(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    found = sections(notebook_cells)
    exercises = re.findall(r"```\{admonition\} Exercise \d+", found["Exercises"])
    assert len(exercises) >= 3, "at least three exercises"
    solutions = [c for c in notebook_cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", ())]
    assert len(solutions) >= len(exercises), "every exercise is followed by a solution cell tagged 'solution'"
    for cell in solutions:
        assert "hide-cell" in cell.metadata.get("tags", ()), (
            "a solution's code and output stay collapsed (hide-cell) until the reader opens them")
        assert cell.execution_count is not None and re.search(r"assert|np\.testing", cell.source), (
            "a solution is executed and checks its own answer"
        )
    dropdowns = re.findall(r"^(?:```|:::)\{dropdown\}(.*)$", found["Self-check"], re.MULTILINE)
    assert len(dropdowns) >= 3, "at least three self-check questions"
    # A backtick fence's title may not contain backticks (CommonMark), or the dropdown is
    # silently printed as text: use a ::: fence for titles with code in them.
    assert not any("`" in title for title in re.findall(r"^```\{dropdown\}(.*)$", found["Self-check"], re.MULTILINE))


def test_chapter_1_shows_both_reference_loops_whole():
    # The book promises "a short loop you can read": each train() is printed whole, with no
    # line cut, and fits in one sitting (at most 60 lines besides its docstring, 88 columns).
    import ast
    import inspect

    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from companion import tf_loop, torch_loop

    shown = "\n".join(
        "".join(output.get("data", {}).get("text/markdown", ""))
        for cell in nbformat.read(BOOK / "01_loss_vs_metric.ipynb", as_version=4).cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    for module in (tf_loop, torch_loop):
        source = inspect.getsource(module.train)
        assert source in shown, f"chapter 1 does not show {module.__name__}.train as it is now"
        function = ast.parse(source).body[0]
        docstring = function.body[0]
        lines = len(source.splitlines()) - (docstring.end_lineno - docstring.lineno + 1)
        assert lines <= 60, f"{module.__name__}.train has {lines} lines besides its docstring"
        widest = max(len(line) for line in source.splitlines())
        assert widest <= 88, f"{module.__name__}.train has a line of {widest} characters"
