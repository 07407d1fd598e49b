"""Sphinx extension: links to a chapter's Colab editions, built from ``_config.yml`` alone.

``tools/make_editions.py`` writes two notebooks per chapter ``book/NN_name``: the Colab
edition ``<path_to_book>/book/NN_name.ipynb`` (what the launch button opens: the theme joins
``repository.path_to_book`` and the page name) and the student edition
``<path_to_book>/exercises/NN_name.ipynb``. A chapter links to its student edition with

    {student-edition}`Open the student version in Colab`

so that no chapter types the repository's URL: it is read from ``repository.url`` and
``repository.branch`` when the book is built, like the launch buttons.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from docutils import nodes

STUDENT_FOLDER = "exercises"  # beside the Colab editions' book/ folder, under path_to_book
ROLE = "student-edition"


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


def setup(app):
    app.add_role(ROLE, _student_edition_role)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
