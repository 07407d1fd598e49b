"""Generate the Colab editions of the chapters: the book's notebooks as Colab shows them.

Colab shows a notebook's Markdown as plain Jupyter Markdown, so the book's MyST (glued numbers,
glossary terms, admonitions, dropdowns, cross-references, substitutions) reads there as raw
syntax. ``make editions`` renders it instead: it parses the book with Sphinx exactly as the
book build does (Jupyter Book's configuration, myst-nb, every extension), so each glued value
is the text the book shows and each reference is resolved; then it writes every chapter's
resolved document tree back out as a notebook, with a small Markdown writer for the node types
the chapters use (an unknown node type stops the run with its name). Two editions per chapter
``book/NN_name``:

- ``colab/book/NN_name.ipynb``, the Colab edition, which the book's launch buttons open
  (``repository.path_to_book`` in ``_config.yml``): the chapter with its stored outputs, cells
  the book removes removed, solutions as hidden code cells;
- ``colab/exercises/NN_name.ipynb``, the student edition (chapters with exercises): no
  outputs, and each worked solution replaced by a cell for the student's ``answer`` and a cell
  that checks it (``companion.feedback.check``).

Links to the glossary and to other pages go to the published book (``html.baseurl``). The first
cell of each edition says how to keep a copy (File > Save a copy in Drive) and which runtime
to pick; its first code cell is generated: on Colab it installs the companion from
``repository.url`` at the release tag of the book's edition (``v`` + the version in
``pyproject.toml``, see ``release_tag``) and, if that fails, says why in three lines, with a
link to the troubleshooting page, instead of a traceback. The repository's URL is read from
``_config.yml`` and nowhere else; ``--repository`` rewrites it there first (for a fork),
together with the published book's address (``html.baseurl``, its GitHub Pages site) and
``CITATION.cff``, so the launch buttons, links and setup cells all follow.

    python tools/make_editions.py                     # write colab/
    python tools/make_editions.py --check             # exit 1 if colab/ is not what it would write
    python tools/make_editions.py --repository https://github.com/OWNER/NAME
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import hashlib
import html
import io
import json
import re
import symtable
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nbformat
import yaml
from docutils import nodes
from sphinx.builders import Builder

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
PYPROJECT = ROOT / "pyproject.toml"
CITATION = ROOT / "CITATION.cff"
EXTENSIONS = ROOT / "book" / "_ext"
sys.path.insert(0, str(EXTENSIONS))
import course_colab  # noqa: E402  (the URL helpers the book's {student-edition} role uses)

CHAPTER_GLOB = "book/[0-9][0-9]_*.ipynb"
BUILDER = "colab_editions"
# Files whose change can change an edition besides its own notebook; their SHA-256, with the
# notebook's, is recorded in each edition (metadata.course_edition.inputs_sha256).
SHARED_INPUTS = ("tools/make_editions.py", "book/_ext/course_colab.py", "_config.yml",
                 "book/glossary.md", "companion/feedback.py")
SOLUTION_TAG = "solution"
HIDDEN_TAGS = {"hide-input", "hide-cell", "remove-input"}
NO_OUTPUT_TAGS = {"hide-output", "hide-cell", "remove-output"}
# Strings that are MyST syntax and never plain Markdown; tests/test_editions.py looks for them.
MYST_MARKERS = ("{glue", "{term}", "```{", ":::{", "{{", "{ref}", "{doc}", "{numref}",
                "{student-edition}", ")=\n")


def _config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def folders(config: dict | None = None) -> tuple[Path, Path]:
    """The Colab editions' folder and the student editions' folder, from ``_config.yml``."""
    config = config or _config()
    base = ROOT / str(config["repository"].get("path_to_book") or "").strip("/")
    if base == ROOT:
        raise ValueError("_config.yml: repository.path_to_book must name the editions' folder "
                         "(the launch buttons open <path_to_book>/<page>.ipynb)")
    return base / course_colab.EDITION_FOLDER, base / course_colab.STUDENT_FOLDER


EDITIONS, STUDENT_EDITIONS = folders()


# --- the repository's URL, one place ----------------------------------------------------------

def check_repository(url: str) -> str:
    """``url`` if it is a GitHub repository URL Colab can open (https://github.com/OWNER/NAME)."""
    if not isinstance(url, str):
        raise ValueError(f"repository must be a string, got {url!r}")
    try:
        course_colab.colab_url({"repository_url": url}, "x")
    except ValueError:
        raise ValueError(f"repository must be https://github.com/OWNER/NAME, got {url!r}") from None
    return url.rstrip("/")


def pages_url(repository: str) -> str:
    """The GitHub Pages address of ``repository``'s book: https://owner.github.io/name/."""
    owner, name = check_repository(repository).removeprefix("https://github.com/").split("/")
    return f"https://{owner.lower()}.github.io/{name}/"


def _rewrite_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise ValueError(f"{path.name}: expected one line {old.strip()!r}")
    path.write_text(text.replace(old, new))


def set_repository(url: str) -> bool:
    """Point the book at the repository ``url``; True if anything changed.

    Rewrites ``_config.yml``'s ``repository.url`` and ``html.baseurl`` (the repository's GitHub
    Pages site, where .github/workflows/book.yml publishes the book) and, if present,
    ``CITATION.cff``'s ``repository-code`` and ``url``.
    """
    url = check_repository(url)
    book = pages_url(url)
    config = _config()
    old_url, old_book = config["repository"]["url"], str(config["html"]["baseurl"])
    changed = (url, book) != (old_url, old_book)
    if url != old_url:
        _rewrite_line(CONFIG, f"  url: {old_url}\n", f"  url: {url}\n")
    if book != old_book:
        _rewrite_line(CONFIG, f"  baseurl: {old_book}\n", f"  baseurl: {book}\n")
    if _config()["repository"]["url"] != url or _config()["html"]["baseurl"] != book:
        raise RuntimeError("_config.yml: repository.url or html.baseurl was not rewritten")
    if CITATION.is_file():
        citation = yaml.safe_load(CITATION.read_text())
        for key, value in (("repository-code", url), ("url", book)):
            if citation.get(key) != value:
                _rewrite_line(CITATION, f"{key}: {citation.get(key)}\n", f"{key}: {value}\n")
                changed = True
    return changed


# --- the release the editions install --------------------------------------------------------

def version() -> str:
    """The companion's version, from ``pyproject.toml``: the book's edition, e.g. 2026.1."""
    return str(tomllib.loads(PYPROJECT.read_text())["project"]["version"])


def release_tag(version_: str | None = None) -> str:
    """The git tag of a release (``v`` + version): what every edition's setup cell installs."""
    return f"v{version_ or version()}"


# --- the setup cell ----------------------------------------------------------------------------

SETUP_TITLE = "Setup: run this cell first (on Colab it installs the companion package)"
SETUP_PREAMBLE = '''\
import subprocess
import sys

REPOSITORY = "{repository}"
RELEASE = "{release}"  # the book's edition this notebook belongs to
BOOK = "{book}"
if "google.colab" in sys.modules:
    # Colab has TensorFlow, Keras and PyTorch already: only the companion is installed.
    package = f"companion @ git+{{REPOSITORY}}@{{RELEASE}}"
    pip = [sys.executable, "-m", "pip", "install", "-q", package]
    install = subprocess.run(pip, capture_output=True, text=True)
    if install.returncode != 0:

        class SetupStopped(Exception):
            def _render_traceback_(self):  # IPython shows this line, not a traceback
                return [str(self)]

        print("The companion package could not be installed: pip failed "
              "(print(install.stderr) shows why).")
        print(f"Tried: pip install \\"{{package}}\\"")
        print(f"What to do: see {{BOOK}}book/troubleshooting.html#on-colab")
        raise SetupStopped("Setup stopped: the cells below need the companion.")
'''
TROUBLESHOOTING = "book/troubleshooting.html#on-colab"  # the page the failure message links


def colab_advice(book: str) -> str:
    """What a reader in Colab should know first: keeping a copy, and the runtime to pick."""
    return ("**In Colab:** *File > Save a copy in Drive* before you change anything: the notebook "
            "opened from GitHub is not saved. The course needs only a CPU runtime (*Runtime > "
            "Change runtime type*). On a GPU the cells run too, but numbers can differ from the "
            "book's in their last digits, and an operation without a deterministic GPU version "
            "stops its cell: see [the troubleshooting page]"
            f"({book}{TROUBLESHOOTING}).")


def check_cell_source(feedback, exercise_id: str) -> str:
    """The student edition's check: ``check("NN.k", answer, <the chapter's objects>);``.

    The chapter's objects are those the exercise's judge recomputes the answer from
    (``companion.feedback.EXERCISES[exercise_id].uses``), passed by name.
    """
    uses = feedback.EXERCISES[exercise_id].uses if feedback is not None else ()
    arguments = [f'"{exercise_id}"', "answer", *(f"{name}={name}" for name in uses)]
    call = f"check({', '.join(arguments)})"
    if len(call) >= 88:  # one argument a line, as a formatter writes it
        call = "check(\n" + "".join(f"    {argument},\n" for argument in arguments) + ")"
    # The semicolon: check() prints its verdict and returns a bool the cell need not show.
    return f"from companion.feedback import check\n\n{call};"


def setup_cell_source(repository: str, book_setup: str, *, release: str | None = None,
                      book: str | None = None) -> str:
    """The first code cell of an edition: the Colab install, then the book's setup cell.

    ``book_setup`` is the chapter's own setup cell, which only imports and seeds the companion
    (tests/test_book.py keeps installs and URLs out of it), so it follows the install as it is.
    On Colab the cell installs the companion at ``release`` (default: :func:`release_tag`), the
    tag this edition was generated for, so a copy saved to Drive keeps working as it is.
    """
    repository = check_repository(repository)
    if "import companion" not in book_setup and "from companion" not in book_setup:
        raise ValueError("the chapter's first code cell must be the setup cell, which imports "
                         f"the companion; got:\n{book_setup}")
    preamble = SETUP_PREAMBLE.format(repository=repository, release=release or release_tag(),
                                     book=book or book_url())
    return preamble + "\n" + book_setup.strip("\n")


# --- Markdown from the document tree -------------------------------------------------------------

class UnsupportedNode(ValueError):
    """A node type the writer does not render: extend it rather than let MyST through."""


@dataclass
class Counts:
    """How many MyST constructs an edition rendered, by kind."""

    values: dict = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.values[kind] = self.values.get(kind, 0) + n


_SPECIAL = re.compile(r"([\\`*\[\]$])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_ADMONITION_TITLES = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important",
                      "warning": "Warning", "caution": "Caution", "attention": "Attention",
                      "danger": "Danger", "error": "Error", "seealso": "See also"}


def escape(text: str) -> str:
    """Plain text as Markdown that shows it unchanged (no emphasis, link, math or tag)."""
    text = _SPECIAL.sub(r"\\\1", text)
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)
    return text.replace("<", "&lt;")


def code_span(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fenced(text: str, language: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _prefix(text: str, first: str, rest: str) -> str:
    lines = text.split("\n")
    return "\n".join([first + lines[0]] + [(rest + line) if line else "" for line in lines[1:]])


class MarkdownWriter:
    """Render the body nodes of a resolved Sphinx document tree as Jupyter Markdown.

    ``page_url`` is the published page of the document (for links to a section of it);
    ``counts`` records what was rendered; ``student`` drops the link to the student edition.
    """

    def __init__(self, page_url: str, counts: Counts, *, student: bool = False):
        self.page_url, self.counts, self.student = page_url, counts, student

    # blocks
    def blocks(self, children) -> str:
        parts = [self.block(child) for child in children]
        return "\n\n".join(part for part in parts if part)

    def block(self, node) -> str:
        method = getattr(self, f"block_{type(node).__name__}", None)
        if method is None:
            raise UnsupportedNode(f"no Markdown for a {type(node).__name__} node: "
                                  f"{node.astext()[:80]!r}")
        return method(node)

    def block_paragraph(self, node) -> str:
        if self.student and any(course_colab.ROLE in n.get("classes", [])
                                for n in node.findall(nodes.reference)):
            return ""  # "open the student version": the reader is in it
        return self.inlines(node.children).strip()

    def block_bullet_list(self, node) -> str:
        return "\n".join(_prefix(self.blocks(item.children), "- ", "  ") for item in node.children)

    def block_enumerated_list(self, node) -> str:
        start = int(node.get("start", 1))
        items = []
        for number, item in enumerate(node.children, start):
            marker = f"{number}. "
            items.append(_prefix(self.blocks(item.children), marker, " " * len(marker)))
        return "\n".join(items)

    def block_definition_list(self, node) -> str:
        items = []
        for item in node.children:
            term = next(c for c in item.children if isinstance(c, nodes.term))
            definition = next(c for c in item.children if isinstance(c, nodes.definition))
            items.append(f"**{self.inlines(term.children)}**  \n{self.blocks(definition.children)}")
        return "\n\n".join(items)

    def block_literal_block(self, node) -> str:
        language = node.get("language", "")
        if language in ("default", "none", "text", "myst-ansi"):
            language = ""
        return fenced(node.astext(), language)

    def block_math_block(self, node) -> str:
        self.counts.add("math blocks")
        latex = node.astext().strip()
        if node.get("nowrap"):  # an amsmath environment (\begin{align}...): MathJax reads it as is
            return latex
        return f"$$\n{latex}\n$$"

    def block_block_quote(self, node) -> str:
        return _prefix(self.blocks(node.children), "> ", "> ").replace("\n\n", "\n>\n")

    def block_admonition(self, node) -> str:
        children = list(node.children)
        if children and isinstance(children[0], nodes.title):
            title = self.inlines(children.pop(0).children).strip()
        else:
            kinds = [c for c in node.get("classes", []) if c in _ADMONITION_TITLES]
            title = _ADMONITION_TITLES.get(type(node).__name__) or (
                _ADMONITION_TITLES[kinds[0]] if kinds else "Note")
        self.counts.add("admonitions")
        body = self.blocks(children)
        return _prefix(f"**{title}**\n\n{body}", "> ", "> ").replace("\n\n", "\n>\n")

    def block_container(self, node) -> str:
        if node.get("design_component") == "dropdown":
            return self.details(node)
        raise UnsupportedNode(f"no Markdown for a container {node.attributes!r}")

    def details(self, node) -> str:
        children = list(node.children)
        title = ""
        if children and isinstance(children[0], nodes.rubric):
            title = self.html_inlines(children.pop(0).children).strip()
        self.counts.add("dropdowns")
        # A blank line after <summary> lets Jupyter and Colab read the body as Markdown.
        return f"<details>\n<summary>{title}</summary>\n\n{self.blocks(children)}\n\n</details>"

    def block_table(self, node) -> str:
        rows = []
        for section in node.findall(lambda n: isinstance(n, (nodes.thead, nodes.tbody))):
            for row in section.children:
                cells = [self.blocks(entry.children).replace("\n", " ").replace("|", r"\|")
                         for entry in row.children]
                rows.append(cells)
        if not rows:
            return ""
        self.counts.add("tables")
        width = max(len(row) for row in rows)
        lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * width)
        return "\n".join(lines)

    def block_target(self, node) -> str:
        return ""  # a label: its references are already links to the published book

    def block_comment(self, node) -> str:
        return ""

    def block_raw(self, node) -> str:
        if node.get("format") != "html" or "<script" in node.astext():
            return ""  # the theme's scripts (thebe, kernel name): the book's, not the text's
        return node.astext()

    def block_transition(self, node) -> str:
        return "---"

    # inline
    def inlines(self, children) -> str:
        return "".join(self.inline(child) for child in children)

    def inline(self, node) -> str:
        if isinstance(node, nodes.Text):
            # Source line breaks are kept; their indentation is the enclosing block's business.
            return "\n".join(escape(line.lstrip()) if i else escape(line)
                             for i, line in enumerate(str(node).split("\n")))
        method = getattr(self, f"inline_{type(node).__name__}", None)
        if method is None:
            raise UnsupportedNode(f"no Markdown for an inline {type(node).__name__}: "
                                  f"{node.astext()[:80]!r}")
        return method(node)

    def inline_emphasis(self, node) -> str:
        return f"*{self.inlines(node.children)}*"

    def inline_strong(self, node) -> str:
        return f"**{self.inlines(node.children)}**"

    def inline_literal(self, node) -> str:
        return code_span(node.astext())

    def inline_math(self, node) -> str:
        self.counts.add("inline math")
        return f"${node.astext().strip()}$"

    def inline_inline(self, node) -> str:
        if "pasted-text" in node.get("classes", []):
            self.counts.add("glued values")
        return self.inlines(node.children)

    def inline_reference(self, node) -> str:
        text = self.inlines(node.children)
        url = self.reference_url(node)
        return f"[{text}]({url})"

    def reference_url(self, node) -> str:
        classes = {c for child in node.findall(nodes.inline) for c in child.get("classes", [])}
        if "std-term" in classes:
            self.counts.add("glossary terms")
        elif course_colab.ROLE in node.get("classes", []):
            self.counts.add("student-edition links")
        elif node.get("internal") or node.get("refid"):
            self.counts.add("cross-references")
        if node.get("refuri"):
            return node["refuri"].replace(" ", "%20")
        if node.get("refid"):
            return f"{self.page_url}#{node['refid']}"
        raise UnsupportedNode(f"a reference with no target: {node.astext()!r}")

    def inline_target(self, node) -> str:
        return ""

    def inline_subscript(self, node) -> str:
        return f"<sub>{html.escape(node.astext())}</sub>"

    def inline_superscript(self, node) -> str:
        return f"<sup>{html.escape(node.astext())}</sup>"

    # inline, as HTML (a <summary> is HTML, where Markdown is not read)
    def html_inlines(self, children) -> str:
        out = []
        for node in children:
            if isinstance(node, nodes.Text):
                out.append(html.escape(str(node).replace("\n", " "), quote=False))
            elif isinstance(node, nodes.literal):
                out.append(f"<code>{html.escape(node.astext(), quote=False)}</code>")
            elif isinstance(node, nodes.emphasis):
                out.append(f"<em>{self.html_inlines(node.children)}</em>")
            elif isinstance(node, nodes.strong):
                out.append(f"<strong>{self.html_inlines(node.children)}</strong>")
            elif isinstance(node, nodes.math):
                self.counts.add("inline math")
                out.append(f"${html.escape(node.astext(), quote=False)}$")
            elif isinstance(node, nodes.inline):
                if "pasted-text" in node.get("classes", []):
                    self.counts.add("glued values")
                out.append(self.html_inlines(node.children))
            elif isinstance(node, nodes.reference):
                url = html.escape(self.reference_url(node))
                out.append(f'<a href="{url}">{self.html_inlines(node.children)}</a>')
            else:
                raise UnsupportedNode(f"no HTML for an inline {type(node).__name__} in a title")
        return "".join(out)


# --- notebooks from the document tree -------------------------------------------------------------

@dataclass
class Chapter:
    """What the Sphinx pass gives for one chapter: its resolved tree and its notebook."""

    docname: str
    doctree: nodes.document
    notebook: nbformat.NotebookNode
    page_url: str


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def _exercise_number(node) -> int | None:
    """k for an admonition titled "Exercise k", else None."""
    if not isinstance(node, nodes.admonition) or not node.children:
        return None
    title = node.children[0]
    if not isinstance(title, nodes.title):
        return None
    words = title.astext().split()
    if len(words) == 2 and words[0] == "Exercise" and words[1].isdigit():
        return int(words[1])
    return None


def _clean_outputs(outputs) -> list:
    """The stored outputs as a reader sees them: no glue records, no execution counts."""
    cleaned = []
    for output in copy.deepcopy(outputs):
        if "data" in output:
            output["data"] = {k: v for k, v in output["data"].items()
                              if not k.startswith("application/papermill.record")}
            if not output["data"]:
                continue
        if output.get("output_type") == "execute_result":
            output["execution_count"] = None
        cleaned.append(output)
    return cleaned


def _statement_names(source: str) -> tuple[set, set]:
    """Module-level names code binds, and module-level names it reads (in functions too)."""
    table = symtable.symtable(source, "cell", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    read = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    nested = list(table.get_children())
    while nested:  # functions, classes, comprehensions: what they read from the module
        child = nested.pop()
        read |= {s.get_name() for s in child.get_symbols() if s.is_referenced() and s.is_global()}
        nested.extend(child.get_children())
    return bound, read


def _names(source: str) -> tuple[set, set]:
    """Names a cell binds, and names it reads before binding them itself.

    Statement by statement, so ``p = f(x)`` then ``g(p)`` reads ``x`` only. Within one
    statement a name it binds counts as its own (``for p in ...: g(p)``), except for ``x += 1``.
    """
    try:
        statements = ast.parse(source).body
    except SyntaxError:  # IPython magics: treated as binding and reading nothing
        return set(), set()
    bound, external = set(), set()
    for statement in statements:
        own_bound, own_read = _statement_names(ast.unparse(statement))
        local = set() if isinstance(statement, ast.AugAssign) else own_bound
        external |= own_read - bound - local
        bound |= own_bound
    return bound, external


def needed_removed_cells(notebook, kept: set[int]) -> set[int]:
    """Indices of removed code cells that a kept cell needs (it reads a name only they bind).

    The book removes bookkeeping cells (glue), but a removed cell that also defines something
    a later cell uses must stay in an edition, or the notebook stops there on Colab.
    """
    needed, bound_by = set(), {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        bound, read = _names(cell.source)
        if index in kept or index in needed:
            for name in read:
                source = bound_by.get(name)
                if source is not None and source not in kept:
                    needed.add(source)
        for name in bound:
            bound_by[name] = index
    return needed


def solution_exercises(notebook) -> dict[int, int]:
    """Index of each solution cell -> the number k of the "Exercise k" it follows."""
    exercises, current = {}, None
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            found = re.findall(r"^[`:]{3,}\{admonition\} Exercise (\d+)\s*$", cell.source, re.M)
            current = int(found[-1]) if found else current
        elif SOLUTION_TAG in _tags(cell) and current is not None:
            exercises[index] = current
    return exercises


def check_names_needed(notebook, kept: set[int], checks: dict[int, str], docname: str) -> set[int]:
    """Removed cells the student edition's checks need, which solution cells stand in for.

    ``checks`` maps a solution cell's index to its check cell's source. The check reads the
    chapter's objects by name, so each must be bound by a cell of the edition: a removed
    cell that binds one is kept (returned), and a name that only a solution binds stops the run.
    """
    stand_in = copy.deepcopy(notebook)
    for index, source in checks.items():
        stand_in.cells[index].source = source
    solutions = set(checks)
    needed = needed_removed_cells(stand_in, (kept - solutions) | solutions)
    bound = set()
    for index, cell in enumerate(notebook.cells):
        if index in checks:
            missing = _names(checks[index])[1] - bound - {"answer"} - set(dir(builtins))
            if missing:
                raise ValueError(f"{docname}: the check after cell {index} takes "
                                 f"{sorted(missing)}, which no cell of the student edition "
                                 "before it defines")
        elif cell.cell_type == "code" and (index in kept or index in needed):
            bound |= _names(cell.source)[0]
    return needed


class EditionWriter:
    """Turn one chapter into its Colab edition or its student edition."""

    def __init__(self, chapter: Chapter, *, repository: str, student: bool, feedback=None):
        self.chapter, self.student, self.repository = chapter, student, repository
        self.feedback = feedback
        self.counts = Counts()
        self.markdown = MarkdownWriter(chapter.page_url, self.counts, student=student)
        self.cells: list = []
        self.buffer: list[str] = []
        self.exercise: int | None = None  # the exercise whose solution cells come next
        self.answered: set[int] = set()
        self.kept = {n["cell_index"] for n in chapter.doctree.findall(nodes.container)
                     if n.get("nb_element") == "cell_code"}
        solutions = {i for i, c in enumerate(chapter.notebook.cells) if SOLUTION_TAG in _tags(c)}
        needed = needed_removed_cells(chapter.notebook, self.kept - solutions if student
                                      else self.kept)
        if student and needed & solutions:
            raise ValueError(f"{chapter.docname}: a cell after an exercise uses what only the "
                             f"worked solution (cell {sorted(needed & solutions)}) defines, so "
                             "the student edition, which has no solutions, would fail there")
        if student:  # the check cells read the chapter's objects the judges recompute from
            checks = {index: check_cell_source(feedback, f"{self.number}.{k}")
                      for index, k in solution_exercises(chapter.notebook).items()}
            needed |= check_names_needed(chapter.notebook, self.kept, checks, chapter.docname)
        self.rescued = sorted(needed - solutions)
        self.setup_done = False

    @property
    def number(self) -> str:
        return PurePosixPath(self.chapter.docname).name[:2]

    def flush(self) -> None:
        text = "\n\n".join(part for part in self.buffer if part).strip()
        if text:
            self.cells.append(nbformat.v4.new_markdown_cell(text))
        self.buffer = []

    def walk(self, node, depth: int) -> None:
        for child in node.children:
            if isinstance(child, nodes.section):
                self.flush()
                title = child.children[0]
                self.buffer.append("#" * depth + " " + self.markdown.inlines(title.children))
                if depth == 1:
                    self.buffer.append(self.header())
                self.exercise = None
                self.walk(child, depth + 1)
            elif isinstance(child, nodes.title):
                continue  # written with its section
            elif isinstance(child, nodes.container) and child.get("nb_element") == "cell_code":
                self.code_cell(child["cell_index"])
            else:
                number = _exercise_number(child)
                if number is not None or isinstance(child, nodes.admonition):
                    self.exercise = number
                self.buffer.append(self.markdown.block(child))

    def header(self) -> str:
        config = self.chapter
        name = PurePosixPath(config.docname).name
        if self.student:
            theme = {"repository_url": self.repository, **_theme_options()}
            colab = course_colab.colab_url(theme, f"{EDITIONS.relative_to(ROOT)}/{name}.ipynb")
            about = ("*The student edition of [this chapter of the book]"
                     f"({config.page_url}): each exercise is followed by a cell for your "
                     "`answer` and a cell that checks it. Run the first code cell before any "
                     "other. The worked solutions are in the book and in the "
                     f"[Colab edition]({colab}).*")
        else:
            about = (f"*The Colab edition of [this chapter of the book]({config.page_url}), "
                     "with the book's outputs. Run the first code cell before any other: on "
                     "Colab it installs the course's companion package.*")
        return about + "\n\n" + colab_advice(book_url())

    def code_cell(self, index: int) -> None:
        for rescued in [i for i in self.rescued if i < index]:
            self.rescued.remove(rescued)
            self.flush()
            cell = self.chapter.notebook.cells[rescued]
            self.cells.append(self.hidden(cell.source, "Bookkeeping the book hides"))
            self.counts.add("removed cells kept (a later cell needs them)")
        self.flush()
        original = self.chapter.notebook.cells[index]
        tags = _tags(original)
        if not self.setup_done:
            self.setup_done = True
            source = setup_cell_source(self.repository, original.source, book=book_url())
            # Collapsed to its title, as the book keeps it out of the way; it runs the same.
            cell = self.hidden(source, SETUP_TITLE)
            cell.metadata["tags"] = ["setup"]
            self.cells.append(cell)
            return
        if SOLUTION_TAG in tags:
            self.solution(original)
            return
        if "hide-cell" in tags or "hide-input" in tags or "remove-input" in tags:
            cell = self.hidden(original.source, "Code hidden in the book")
        else:
            cell = nbformat.v4.new_code_cell(original.source)
        if not self.student and not NO_OUTPUT_TAGS & tags:
            cell.outputs = _clean_outputs(original.get("outputs", []))
        self.cells.append(cell)

    def hidden(self, source: str, title: str):
        """A code cell Colab shows collapsed, as a form with a title (JupyterLab: source hidden)."""
        cell = nbformat.v4.new_code_cell(f"# @title {title}\n{source}")
        cell.metadata["cellView"] = "form"
        cell.metadata["jupyter"] = {"source_hidden": True}
        return cell

    def solution(self, original) -> None:
        if self.exercise is None:
            raise ValueError(f"{self.chapter.docname}: a cell tagged {SOLUTION_TAG!r} that "
                             "follows no 'Exercise k' admonition")
        self.counts.add("solutions")
        if not self.student:
            cell = self.hidden(original.source, f"Solution to exercise {self.exercise}")
            self.cells.append(cell)
            return
        if self.exercise in self.answered:
            return  # a second cell of the same worked solution: the answer cell stands for all
        self.answered.add(self.exercise)
        exercise_id = f"{self.number}.{self.exercise}"
        asks = self.asks(exercise_id)
        answer = nbformat.v4.new_code_cell(f"# Your solution here\nanswer = ...  # {asks}")
        answer.metadata["tags"] = ["answer"]
        check = nbformat.v4.new_code_cell(check_cell_source(self.feedback, exercise_id))
        check.metadata["tags"] = ["feedback"]
        self.cells.extend([answer, check])

    def asks(self, exercise_id: str) -> str:
        if self.feedback is None:
            return "what the exercise asks for (companion.feedback is not written yet)"
        exercise = self.feedback.EXERCISES.get(exercise_id)
        if exercise is None:
            raise ValueError(f"companion.feedback.EXERCISES has no exercise {exercise_id!r} "
                             f"({self.chapter.docname}); known: {sorted(self.feedback.EXERCISES)}")
        return exercise.asks

    def notebook(self) -> nbformat.NotebookNode:
        self.walk(self.chapter.doctree, 1)
        self.flush()
        if not self.setup_done:
            raise ValueError(f"{self.chapter.docname}: no code cell, so no setup cell")
        if self.rescued:
            raise ValueError(f"{self.chapter.docname}: removed cells {self.rescued} are needed "
                             "but come after the last code cell")
        notebook = nbformat.v4.new_notebook()
        notebook.metadata = {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "colab": {"provenance": [], "toc_visible": True},
        }
        notebook.cells = self.cells
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"cell-{index:03d}"  # stable: regenerating changes nothing
        return notebook


# --- the Sphinx pass ------------------------------------------------------------------------------

def _theme_options() -> dict:
    config = _config()
    return {"repository_branch": config["repository"].get("branch", "main"),
            "path_to_docs": config["repository"].get("path_to_book", ""),
            "launch_buttons": config.get("launch_buttons", {})}


def book_url(config: dict | None = None) -> str:
    config = config or _config()
    url = str((config.get("html") or {}).get("baseurl") or "")
    if not url.startswith("https://"):
        raise ValueError(f"_config.yml: html.baseurl must be the published book's https URL, "
                         f"got {url!r}")
    return url.rstrip("/") + "/"


class EditionsBuilder(Builder):
    """Reads the book like the HTML build and keeps each chapter's resolved document tree."""

    name = BUILDER
    format = ""
    epilog = ""
    chapters: dict = {}

    def init(self) -> None:
        self.base = book_url()
        self.chapters = {}

    def get_outdated_docs(self):
        return self.env.found_docs

    def get_target_uri(self, docname: str, typ: str | None = None) -> str:
        return f"{self.base}{docname}.html"

    def get_relative_uri(self, from_: str, to: str, typ: str | None = None) -> str:
        return self.get_target_uri(to)  # every link leaves the notebook for the book

    def prepare_writing(self, docnames) -> None:
        pass

    def write_doc(self, docname: str, doctree) -> None:
        if PurePosixPath(docname).match("book/[0-9][0-9]_*"):
            self.chapters[docname] = doctree

    def finish(self) -> None:
        pass


def setup(app):
    """Sphinx extension entry point: registers the builder (used by read_chapters only)."""
    app.add_builder(EditionsBuilder)
    return {"version": "1.0", "parallel_read_safe": True}


def read_chapters(repository: str) -> dict[str, Chapter]:
    """Every chapter's resolved document tree, from a Sphinx pass over the whole book."""
    from jupyter_book.config import get_final_config
    from sphinx.application import Sphinx
    from sphinx.util.console import nocolor
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    sphinx_config, _ = get_final_config(user_yaml=CONFIG, sourcedir=ROOT,
                                        cli_config={"latex_individualpages": False})
    sphinx_config["extensions"] = [*sphinx_config["extensions"], "make_editions"]
    # Hidden folders (other virtual environments) and the editions are no part of the book.
    sphinx_config["exclude_patterns"] = [*sphinx_config.get("exclude_patterns", []),
                                         ".*", ".*/**", "colab", "colab/**"]
    sphinx_config["html_theme_options"] = {**sphinx_config.get("html_theme_options", {}),
                                           "repository_url": repository}
    # The stored outputs are taken from the notebooks; myst-nb needs only a text to choose.
    sphinx_config["nb_mime_priority_overrides"] = [
        (BUILDER, mime, rank) for rank, mime in enumerate(
            ["application/vnd.jupyter.widget-view+json", "text/html", "image/svg+xml",
             "image/png", "image/jpeg", "text/markdown", "text/latex", "text/plain"])]
    sys.modules.setdefault("make_editions", sys.modules[__name__])
    warnings = io.StringIO()
    nocolor()
    with tempfile.TemporaryDirectory() as tmp, patch_docutils(None), docutils_namespace():
        app = Sphinx(str(ROOT), None, f"{tmp}/out", f"{tmp}/doctrees", BUILDER,
                     confoverrides=sphinx_config, status=None, warning=warnings, freshenv=True)
        app.build(force_all=True)
        chapters = dict(app.builder.chapters)
    # Shown, not fatal: the strict book build (make test-book) is where a warning fails; a
    # chapter's unresolved reference cannot slip through, as the writer refuses a link without
    # a target.
    for line in warnings.getvalue().splitlines():
        if line.strip():
            print(f"(Sphinx) {line}", file=sys.stderr)
    base = book_url()
    return {docname: Chapter(docname, doctree,
                             nbformat.read(ROOT / f"{docname}.ipynb", as_version=4),
                             f"{base}{docname}.html")
            for docname, doctree in sorted(chapters.items())}


# --- writing and checking -------------------------------------------------------------------------

def inputs_sha256(docname: str) -> str:
    """SHA-256 over the chapter's notebook, the shared inputs (SHARED_INPUTS) and the release."""
    digest = hashlib.sha256(f"release {release_tag()}\0".encode())
    for path in [f"{docname}.ipynb", *SHARED_INPUTS]:
        file = ROOT / path
        digest.update(path.encode() + b"\0")
        digest.update(file.read_bytes() if file.is_file() else b"(absent)")
        digest.update(b"\0")
    return digest.hexdigest()


def _feedback_module():
    try:
        import companion.feedback as feedback
    except ModuleNotFoundError as error:
        if error.name != "companion.feedback":
            raise
        return None
    return feedback


def has_exercises(notebook) -> bool:
    return any(SOLUTION_TAG in _tags(cell) for cell in notebook.cells)


def render(notebook: nbformat.NotebookNode) -> str:
    nbformat.validate(notebook)
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def editions(repository: str | None = None) -> tuple[dict[Path, str], dict[Path, Counts]]:
    """The text of every edition, by path, and what each rendered."""
    repository = check_repository(repository or _config()["repository"]["url"])
    feedback = _feedback_module()
    texts, counts = {}, {}
    for docname, chapter in read_chapters(repository).items():
        name = PurePosixPath(docname).name
        kinds = [(EDITIONS / f"{name}.ipynb", False)]
        if has_exercises(chapter.notebook):
            kinds.append((STUDENT_EDITIONS / f"{name}.ipynb", True))
        for path, student in kinds:
            writer = EditionWriter(chapter, repository=repository, student=student,
                                   feedback=feedback)
            notebook = writer.notebook()
            notebook.metadata["course_edition"] = {
                "edition": "student" if student else "colab",
                "source": f"{docname}.ipynb",
                "inputs_sha256": inputs_sha256(docname),
                "generator": "tools/make_editions.py (make editions)",
            }
            texts[path] = render(notebook)
            counts[path] = writer.counts
    return texts, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if an edition in colab/ differs from what would be written")
    parser.add_argument("--repository", help="rewrite repository.url and html.baseurl in "
                        "_config.yml (and CITATION.cff) first, for a fork: "
                        "https://github.com/OWNER/NAME")
    parser.add_argument("--counts", action="store_true", help="print what each edition rendered")
    args = parser.parse_args(argv)
    if args.repository:
        if args.check:
            parser.error("--check compares with _config.yml's repository; do not combine them")
        if set_repository(args.repository):
            print(f"_config.yml: repository.url = {check_repository(args.repository)}, "
                  f"html.baseurl = {pages_url(args.repository)}")
    texts, counts = editions()
    existing = set(EDITIONS.glob("*.ipynb")) | set(STUDENT_EDITIONS.glob("*.ipynb"))
    stale = sorted(p for p, text in texts.items()
                   if not p.is_file() or p.read_text() != text)
    orphans = sorted(existing - set(texts))
    if args.counts:
        for path, count in counts.items():
            print(path.relative_to(ROOT), json.dumps(count.values, sort_keys=True))
    if args.check:
        if stale or orphans:
            print("out of date (run `make editions`):",
                  *[p.relative_to(ROOT) for p in stale + orphans], sep="\n  ")
            return 1
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[path])
        print(f"wrote {path.relative_to(ROOT)}")
    for orphan in orphans:
        orphan.unlink()
        print(f"removed {orphan.relative_to(ROOT)} (no chapter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
