"""Sphinx extension: links to a chapter's Colab editions, built from ``_config.yml`` alone.

``tools/make_editions.py`` writes two notebooks per chapter ``book/NN_name``: the Colab
edition ``<path_to_book>/book/NN_name.ipynb`` (what the launch button opens: the theme joins
``repository.path_to_book`` and the page name) and the student edition
``<path_to_book>/exercises/NN_name.ipynb``. A chapter links to its student edition with

    {student-edition}`Open the student version in Colab`

so that no chapter types the repository's URL: it is read from ``repository.url`` and
``repository.branch`` (the release tag of the book's edition) when the book is built, like the
launch buttons. The teachers' page lists every chapter's two editions with

    ```{colab-editions}
    ```

a table built the same way: a chapter is a document ``book/NN_name``, its student edition is
linked when ``make editions`` wrote one (the chapter has exercises).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective

EDITION_FOLDER = "book"  # the Colab editions, under path_to_book
STUDENT_FOLDER = "exercises"  # beside the Colab editions' book/ folder, under path_to_book
ROLE = "student-edition"
DIRECTIVE = "colab-editions"
CHAPTER = re.compile(r"book/[0-9][0-9]_[^/]+")


def colab_url(theme_options: dict, path: str) -> str:
    """The URL that opens ``path`` (a file of the repository) in Colab.

    ``theme_options`` is the book's ``html_theme_options``, where Jupyter Book puts
    ``repository.url`` (``repository_url``), ``repository.branch`` and the launch buttons'
    ``colab_url``. Only GitHub repositories can be opened in Colab this way.
    """
    url = str(theme_options.get("repository_url") or "").rstrip("/")
    prefix = "https://github.com/"
    parts = url.removeprefix(prefix).split("/")
    if not url.startswith(prefix) or len(parts) != 2 or not all(parts):
        raise ValueError(f"repository.url must be https://github.com/OWNER/NAME, got {url!r}")
    branch = theme_options.get("repository_branch") or "main"
    colab = (theme_options.get("launch_buttons") or {}).get("colab_url")
    colab = str(colab or "https://colab.research.google.com").rstrip("/")
    return f"{colab}/github/{parts[0]}/{parts[1]}/blob/{branch}/{path.lstrip('/')}"


def student_edition_path(theme_options: dict, docname: str) -> str:
    """The repository path of the student edition of the chapter ``docname`` (book/NN_name)."""
    folder = str(theme_options.get("path_to_docs") or "").strip("/")
    name = PurePosixPath(docname).name
    return str(PurePosixPath(folder, STUDENT_FOLDER, f"{name}.ipynb"))


def colab_edition_path(theme_options: dict, docname: str) -> str:
    """The repository path of the Colab edition of ``docname``: what the launch button opens."""
    folder = str(theme_options.get("path_to_docs") or "").strip("/")
    return str(PurePosixPath(folder, EDITION_FOLDER, f"{PurePosixPath(docname).name}.ipynb"))


def _student_edition_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    theme_options = env.config.html_theme_options
    try:
        url = colab_url(theme_options, student_edition_path(theme_options, env.docname))
    except ValueError as error:
        message = inliner.reporter.error(str(error), line=lineno)
        return [inliner.problematic(rawtext, rawtext, message)], [message]
    # The class lets tools/make_editions.py recognise the link (a student edition drops it).
    node = nodes.reference(rawtext, text, refuri=url, classes=[ROLE])
    return [node], []


def _link(text: str, url: str) -> nodes.paragraph:
    return nodes.paragraph("", "", nodes.reference("", text, refuri=url, classes=[DIRECTIVE]))


class ColabEditions(SphinxDirective):
    """A table of every chapter with the Colab links of its two editions."""

    has_content = False

    def run(self):
        theme_options = self.env.config.html_theme_options
        chapters = sorted(d for d in self.env.found_docs if CHAPTER.fullmatch(d))
        if not chapters:
            raise self.error("no chapter (a document book/NN_name) to list")
        head = ["Chapter", "Colab edition: the chapter, its outputs and solutions",
                "Student edition: an answer cell and a check after each exercise"]
        rows = []
        for docname in chapters:
            title = addnodes.pending_xref("", nodes.inline("", docname), refdomain="std",
                                          reftype="doc", reftarget=f"/{docname}",
                                          refexplicit=False, refdoc=self.env.docname)
            student = student_edition_path(theme_options, docname)
            try:
                book = colab_url(theme_options, colab_edition_path(theme_options, docname))
                exercises = colab_url(theme_options, student)
            except ValueError as error:
                raise self.error(str(error)) from None
            written = (Path(self.env.srcdir) / student).is_file()
            rows.append([nodes.paragraph("", "", title), _link("Open in Colab", book),
                         _link("Open in Colab", exercises) if written
                         else nodes.paragraph("", "(no exercises)")])
        branch = theme_options.get("repository_branch") or "main"
        note = nodes.paragraph("", "", nodes.Text("Every link opens the notebooks of "),
                               nodes.literal("", branch),
                               nodes.Text(" (a git tag of the repository: the edition's)."))
        return [note, _table(head, rows)]


def _table(head: list[str], rows: list[list]) -> nodes.table:
    group = nodes.tgroup(cols=len(head))
    group += [nodes.colspec(colwidth=1) for _ in head]
    group += nodes.thead("", nodes.row("", *[nodes.entry("", nodes.paragraph("", h))
                                               for h in head]))
    group += nodes.tbody("", *[nodes.row("", *[nodes.entry("", cell) for cell in row])
                               for row in rows])
    table = nodes.table("", group, classes=[DIRECTIVE])
    return table


def setup(app):
    app.add_role(ROLE, _student_edition_role)
    app.add_directive(DIRECTIVE, ColabEditions)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
