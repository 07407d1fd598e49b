"""The Colab and student editions (colab/, `make editions`): current, plain Markdown, runnable.

What Colab opens must read like the book: no MyST syntax, glued numbers as numbers, solutions
hidden (Colab edition) or replaced by an answer cell and its check (student edition), and a
first cell that installs the companion from _config.yml's repository and explains a failure.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml
from docutils import nodes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_editions  # noqa: E402
from make_editions import EDITIONS, STUDENT_EDITIONS  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"]
CHAPTERS = sorted(ROOT.glob(make_editions.CHAPTER_GLOB))
WITH_EXERCISES = [c for c in CHAPTERS if make_editions.has_exercises(nbformat.read(c, 4))]
EDITION_FILES = [EDITIONS / c.name for c in CHAPTERS] + [STUDENT_EDITIONS / c.name
                                                           for c in WITH_EXERCISES]
ids = [str(p.relative_to(ROOT)) for p in EDITION_FILES]


def read(path: Path) -> nbformat.NotebookNode:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run `make editions`"
    return nbformat.read(path, as_version=4)


def markdown(notebook) -> str:
    return "\n\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")


def shown_text(text: str) -> str:
    """Markdown source as a reader sees its characters (backslash escapes and &lt; undone)."""
    return re.sub(r"\\([\\`*_\[\]$|])", r"\1", text).replace("&lt;", "<")


def tags(cell) -> set:
    return set(cell.metadata.get("tags", []))


def book_of(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "book" / path.name, as_version=4)


# --- current --------------------------------------------------------------------------------------

def test_every_chapter_has_current_editions_and_nothing_else_is_in_colab():
    assert CHAPTERS and WITH_EXERCISES
    # Regenerates every edition in memory (one Sphinx pass, about ten seconds) and compares.
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "make_editions.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


@pytest.mark.parametrize("path", EDITION_FILES, ids=ids)
def test_edition_records_the_sha256_of_its_inputs(path):
    recorded = read(path).metadata["course_edition"]
    docname = f"book/{path.stem}"
    assert recorded["source"] == f"{docname}.ipynb"
    assert recorded["edition"] == ("student" if path.parent == STUDENT_EDITIONS else "colab")
    assert recorded["inputs_sha256"] == make_editions.inputs_sha256(docname), (
        f"{path.relative_to(ROOT)} was made from other inputs than today's "
        f"({', '.join([recorded['source'], *make_editions.SHARED_INPUTS])}): run `make editions`")


# --- plain Markdown -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EDITION_FILES, ids=ids)
def test_no_myst_syntax_is_left(path):
    text = markdown(read(path))
    found = [marker for marker in make_editions.MYST_MARKERS if marker in text]
    assert not found, f"{path.relative_to(ROOT)} still has MyST syntax: {found}"
    # A directive's option line (":class: tip") or a role (`{name}`) in any form.
    assert not re.search(r"^:[a-z-]+:", text, re.MULTILINE), "a directive option line is left"
    assert not re.search(r"\{[a-z:-]+\}`", text), "a MyST role is left"
    assert "pasted-text" not in text and "Unresolved" not in text


def glued_values(notebook) -> dict[str, str]:
    """name -> the stored text of each value the chapter glues (myst-nb's scrapbook outputs)."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                values[name] = output["data"]["application/papermill.record/text/plain"]
    return values


def formatted(text: str, spec: str) -> str:
    """A glued value as the book shows it: the stored repr, formatted with the role's spec."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if not spec:
        return str(value)
    kind = spec[-1]
    value = (float(value) if kind in "eEfFgGn%" else int(value) if kind in "bcdoxX"
             else str(value) if kind == "s" else value)
    return format(value, spec)


@pytest.mark.parametrize("path", EDITION_FILES, ids=ids)
def test_glued_values_read_as_their_values_in_the_books_order(path):
    book = book_of(path)
    values = glued_values(book)
    # The roles in the book's Markdown, in reading order (the test's oracle reads the MyST).
    roles = re.findall(r"\{glue(?::text)?\}`([^`]+)`", markdown(book))
    assert roles, "every chapter glues its numbers"
    text = shown_text(markdown(read(path)))
    position = 0
    for role in roles:
        name, _, spec = role.partition(":")
        assert name in values, f"{path.name}: {name} is glued in the text but never stored"
        expected = formatted(values[name], spec)
        found = text.find(expected, position)
        assert found >= 0, f"{path.name}: glued {name} ({expected!r}) not found after {position}"
        position = found + len(expected)


@pytest.mark.parametrize("path", EDITION_FILES, ids=ids)
def test_terms_and_cross_references_link_to_the_published_book(path):
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", "", markdown(read(path)), flags=re.S)  # no math
    book = make_editions.book_url()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "no link at all"
    relative = [link for link in links if not link.startswith(("https://", "http://"))]
    assert not relative, f"links that only work inside the book: {relative}"
    if "{term}" in markdown(book_of(path)):
        assert f"{book}book/glossary.html#term-" in text


# --- the Colab edition --------------------------------------------------------------------

@pytest.mark.parametrize("path", [EDITIONS / c.name for c in CHAPTERS],
                         ids=[c.stem for c in CHAPTERS])
def test_colab_edition_keeps_the_books_cells_hides_solutions_and_drops_removed_cells(path):
    edition, book = read(path), book_of(path)
    sources = [c.source for c in edition.cells if c.cell_type == "code"]
    for cell in [c for c in book.cells if c.cell_type == "code"][1:]:  # after the setup cell
        if "remove-cell" in tags(cell):
            assert not any(cell.source in s and "Bookkeeping" not in s.splitlines()[0]
                           for s in sources), "a cell the book removes is shown"
        elif make_editions.SOLUTION_TAG in tags(cell):
            hidden = [c for c in edition.cells if c.cell_type == "code" and cell.source in c.source]
            assert hidden and hidden[0].metadata.get("cellView") == "form", "solution not hidden"
            assert hidden[0].source.startswith("# @title Solution to exercise ")
            assert not hidden[0].outputs, "a hidden solution shows its output"
        else:
            assert any(cell.source in s for s in sources), f"missing:\n{cell.source[:200]}"
    shown = [c for c in edition.cells if c.cell_type == "code" and c.outputs]
    assert shown or not any(c.get("outputs") for c in book.cells), "the book's outputs are kept"


# --- the student edition ------------------------------------------------------------------

STUDENTS = [STUDENT_EDITIONS / c.name for c in WITH_EXERCISES]


@pytest.mark.parametrize("path", STUDENTS, ids=[p.stem for p in STUDENTS])
def test_no_solution_leaks_into_the_student_edition(path):
    book = book_of(path)
    solutions = [c.source for c in book.cells if make_editions.SOLUTION_TAG in tags(c)]
    others = "\n".join(c.source for c in book.cells if make_editions.SOLUTION_TAG not in tags(c))
    text = "\n".join(c.source for c in read(path).cells)
    assert solutions
    for solution in solutions:
        assert solution.strip() not in text
        distinctive = [line.strip() for line in solution.splitlines()
                       if len(line.strip()) > 12 and not line.strip().startswith("#")
                       and line.strip() not in others]
        assert distinctive, "a solution with no line of its own: the check below would be empty"
        leaked = [line for line in distinctive if line in text]
        assert not leaked, f"{path.name}: solution lines in the student edition: {leaked[:3]}"


@pytest.mark.parametrize("path", STUDENTS, ids=[p.stem for p in STUDENTS])
def test_each_exercise_ends_in_an_answer_cell_and_its_check(path):
    cells = read(path).cells
    assert not any(c.get("outputs") for c in cells if c.cell_type == "code"), "no outputs"
    exercises = {i: int(m.group(1)) for i, c in enumerate(cells) if c.cell_type == "markdown"
                 for m in [re.search(r"^> \*\*Exercise (\d+)\*\*", c.source, re.M)] if m}
    assert len(exercises) >= 3
    for index, number in exercises.items():
        answer, check = cells[index + 1], cells[index + 2]
        assert answer.cell_type == check.cell_type == "code"
        assert answer.source.startswith("# Your solution here\nanswer = ...  # ")
        assert check.source == (f'from companion.feedback import check\n\n'
                                f'check("{path.stem[:2]}.{number}", answer);')
    assert "Open the student version" not in markdown(read(path)), "the reader is in it"


def test_every_exercise_has_its_feedback():
    feedback = pytest.importorskip("companion.feedback")
    for path in STUDENTS:
        for line in (c.source for c in read(path).cells if "check(" in c.source):
            exercise = re.search(r'check\("([\d.]+)"', line).group(1)
            assert exercise in feedback.EXERCISES, f"{path.name}: no feedback for {exercise}"
            text = "\n".join(c.source for c in read(path).cells)
            assert feedback.EXERCISES[exercise].asks in text


# --- the setup cell -------------------------------------------------------------------------------

def setup_cell(notebook) -> str:
    return next(c for c in notebook.cells if c.cell_type == "code").source


@pytest.mark.parametrize("path", EDITION_FILES, ids=ids)
def test_first_code_cell_installs_the_companion_from_the_configured_repository(path):
    edition = read(path)
    first = next(c for c in edition.cells if c.cell_type == "code")
    assert "setup" in tags(first) and first.metadata.get("cellView") == "form"
    assert f'REPOSITORY = "{REPOSITORY}"' in first.source
    urls = set(re.findall(r"https?://[^\s\"'}]+", "\n".join(c.source for c in edition.cells
                                                             if c.cell_type == "code")))
    assert urls <= {REPOSITORY}, f"another URL in the code: {urls - {REPOSITORY}}"
    assert all(len(line) <= 88 for line in first.source.splitlines()), "88 columns"


def fake_colab(tmp_path: Path) -> dict:
    """An environment whose Python finds a `google.colab` module, as on Colab."""
    package = tmp_path / "fake" / "google" / "colab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Stands in for Colab\'s module in the tests."""\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "GIT_CONFIG"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), env.get("PYTHONPATH", "")])
    return env


SOURCE = setup_cell(read(EDITIONS / CHAPTERS[0].name))


def test_on_colab_a_failed_install_says_what_happened_and_what_to_do(tmp_path):
    env = fake_colab(tmp_path)
    # Every GitHub URL is rewritten to a closed port on this machine, so the install fails
    # at once, with or without a network, the way an unknown repository fails on Colab.
    env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="url.http://127.0.0.1:9/.insteadOf",
               GIT_CONFIG_VALUE_0="https://github.com/", PIP_NO_INDEX="1", GIT_TERMINAL_PROMPT="0")
    code = "import google.colab  # Colab imports it at start-up\n" + SOURCE
    result = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner",
                             "--colors=nocolor", "-c", code],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    shown = result.stdout + result.stderr
    lines = [line for line in shown.splitlines() if line.strip()]
    assert lines[:3] == [
        "The companion package could not be installed: pip failed "
        "(print(install.stderr) shows why).",
        f'Tried: pip install "companion @ git+{REPOSITORY}"',
        "What to do: for a fork, run `make editions REPOSITORY=<its URL>` and commit colab/; "
        "offline, upload the companion wheel and `!pip install` it.",
    ], shown
    assert lines[3:] == ["Setup stopped: the cells below need the companion."], shown
    for noise in ("Traceback", "CalledProcessError", "ERROR", "Username", "ModuleNotFoundError"):
        assert noise not in shown


RECORDER = textwrap.dedent("""
    import json, subprocess, sys
    calls, real_run = [], subprocess.run
    def run(args, **kwargs):  # records an install instead of running it
        if "pip" not in args:
            return real_run(args, **kwargs)  # e.g. platform's uname while packages import
        calls.append(list(args))
        return subprocess.CompletedProcess(args, 0, "", "")
    subprocess.run = run
    if {colab}:
        import google.colab
    exec(compile(open(sys.argv[1]).read(), "setup cell", "exec"))
    print(json.dumps({{"calls": calls, "companion": "companion" in sys.modules,
                      "python": sys.executable}}))
""")


@pytest.mark.parametrize("colab", [True, False], ids=["on Colab", "elsewhere"])
def test_setup_cell_installs_the_companion_on_colab_and_only_imports_elsewhere(tmp_path, colab):
    (tmp_path / "cell.py").write_text(SOURCE)
    (tmp_path / "run.py").write_text(RECORDER.format(colab=colab))
    env = fake_colab(tmp_path)
    # A stand-in companion: the test is about the install, not about importing TensorFlow.
    (tmp_path / "fake" / "companion").mkdir()
    stand_in = "def seed_everything(seed):\n    pass\n"
    (tmp_path / "fake" / "companion" / "__init__.py").write_text(stand_in)
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "cell.py")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["companion"], "the setup cell imports the companion"
    expected = ([[report["python"], "-m", "pip", "install", "-q", f"companion @ git+{REPOSITORY}"]]
                if colab else [])
    assert report["calls"] == expected
    assert result.stdout.strip().splitlines()[:-1] == [], "a successful setup prints nothing"


def test_setup_cell_keeps_the_chapters_own_setup_and_refuses_a_cell_without_the_companion():
    book_setup = setup_cell(nbformat.read(CHAPTERS[0], as_version=4))
    source = make_editions.setup_cell_source(REPOSITORY, book_setup)
    assert source.count("import subprocess") == 1 and source.count("REPOSITORY =") == 1
    assert source.rstrip().endswith("companion.seed_everything(0)")
    with pytest.raises(ValueError, match="setup cell"):
        make_editions.setup_cell_source(REPOSITORY, "import numpy as np\n")
    with pytest.raises(ValueError, match="repository"):
        make_editions.setup_cell_source("https://gitlab.com/a/b", book_setup)


# --- one place for the repository -----------------------------------------------------------------

def test_launch_buttons_and_student_links_open_the_editions():
    theme = {"repository_url": REPOSITORY, **make_editions._theme_options()}
    for chapter in CHAPTERS:
        docname = f"book/{chapter.stem}"
        # sphinx-book-theme's launch button: <path_to_book>/<page>.ipynb in the repository.
        launch = ROOT / theme["path_to_docs"] / f"{docname}.ipynb"
        assert launch == EDITIONS / chapter.name and launch.is_file()
    for chapter in WITH_EXERCISES:
        path = make_editions.course_colab.student_edition_path(theme, f"book/{chapter.stem}")
        assert ROOT / path == STUDENT_EDITIONS / chapter.name
        url = make_editions.course_colab.colab_url(theme, path)
        owner_name = REPOSITORY.removeprefix("https://github.com/")
        assert url == f"https://colab.research.google.com/github/{owner_name}/blob/main/{path}"


def test_student_edition_role_builds_its_link_from_the_config(tmp_path):
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "07_x.md").write_text("# X\n\n{student-edition}`Try it`\n")
    (tmp_path / "index.md").write_text("# I\n\n```{toctree}\nbook/07_x\n```\n")
    overrides = {"extensions": ["myst_parser", "course_colab"],
                 "html_theme_options": {"repository_url": "https://github.com/o/n",
                                        "path_to_docs": "colab", "repository_branch": "dev"}}
    with patch_docutils(None), docutils_namespace():
        app = Sphinx(str(tmp_path), None, str(tmp_path / "out"), str(tmp_path / "dt"), "dummy",
                     confoverrides=overrides, status=None, warning=None, freshenv=True)
        app.build()
        tree = app.env.get_doctree("book/07_x")
    links = [n for n in tree.findall(nodes.reference) if "student-edition" in n["classes"]]
    assert [n["refuri"] for n in links] == [
        "https://colab.research.google.com/github/o/n/blob/dev/colab/exercises/07_x.ipynb"]
    assert links[0].astext() == "Try it"


def test_repository_option_rewrites_the_one_place_and_refuses_other_hosts(tmp_path, monkeypatch):
    config = tmp_path / "_config.yml"
    config.write_text((ROOT / "_config.yml").read_text())
    monkeypatch.setattr(make_editions, "CONFIG", config)
    assert make_editions.set_repository("https://github.com/someone/fork")
    written = yaml.safe_load(config.read_text())["repository"]["url"]
    assert written == "https://github.com/someone/fork"
    assert not make_editions.set_repository("https://github.com/someone/fork/")
    for bad in ("https://gitlab.com/a/b", "github.com/a/b", "https://github.com/a", 3):
        with pytest.raises(ValueError, match="repository must be"):
            make_editions.set_repository(bad)


# --- the Markdown writer ------------------------------------------------------------------

def writer(student=False):
    return make_editions.MarkdownWriter("https://book/p.html", make_editions.Counts(),
                                        student=student)


def test_plain_text_stays_plain_markdown():
    text = "a*b [x] $5 <b> snake_case _lead `tick` back\\slash"
    escaped = make_editions.escape(text)
    assert shown_text(escaped) == text
    assert "\\*" in escaped and "\\[" in escaped and "\\$" in escaped and "&lt;b>" in escaped
    assert "snake_case" in escaped and "\\_lead" in escaped


def test_dropdown_becomes_details_and_admonition_a_quote():
    dropdown = nodes.container(design_component="dropdown")
    dropdown += nodes.rubric("", "", nodes.Text("Why "), nodes.literal("x<1", "x<1"),
                             nodes.Text("?"))
    dropdown += nodes.paragraph("", "Because.")
    assert writer().block(dropdown) == (
        "<details>\n<summary>Why <code>x&lt;1</code>?</summary>\n\nBecause.\n\n</details>")
    box = nodes.admonition("", nodes.title("", "The short answer"),
                           nodes.paragraph("", "One.\nTwo."))
    assert writer().block(box) == "> **The short answer**\n>\n> One.\n> Two."


def test_same_page_links_go_to_the_published_page_and_the_student_link_is_dropped_for_students():
    link = nodes.reference("", "", nodes.Text("below"), refid="going-further")
    assert writer().inline(link) == "[below](https://book/p.html#going-further)"
    paragraph = nodes.paragraph("", "", nodes.reference("", "Open", refuri="https://c/x.ipynb",
                                                        classes=["student-edition"]))
    assert writer().block(paragraph) == "[Open](https://c/x.ipynb)"
    assert writer(student=True).block(paragraph) == ""


def test_an_unknown_node_stops_the_run_with_its_name():
    with pytest.raises(make_editions.UnsupportedNode, match="footnote"):
        writer().block(nodes.footnote("", nodes.paragraph("", "x")))


def test_a_removed_cell_that_a_later_cell_needs_is_kept():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import numpy as np"),
        nbformat.v4.new_code_cell("helper = 2\nglue('x', 1)"),  # removed in the book
        nbformat.v4.new_code_cell("value = [helper * k for k in range(3)]"),
        nbformat.v4.new_code_cell("k = 5"),  # removed; `k` above is the comprehension's own
        nbformat.v4.new_code_cell("y = np.ones(2)\nprint(y, [k for k in range(2)])"),
    ])
    assert make_editions.needed_removed_cells(notebook, {0, 2, 4}) == {1}
