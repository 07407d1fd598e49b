"""Sphinx extension: serve MathJax from the book itself instead of a CDN.

The book must render its formulas offline (and its browser test runs without a network), so
MathJax 3 is taken from the ``django-static-mathjax`` package (plain static files; Django is not
needed) and its ``es5`` build is copied to ``_static/mathjax`` of the HTML output. Without that
package, the build keeps Sphinx's default CDN address.
"""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path


def local_mathjax() -> Path | None:
    """The folder holding MathJax's ``tex-mml-chtml.js``, if the package is installed."""
    spec = find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-mml-chtml.js").is_file() else None


def _point_at_local_copy(app, config) -> None:
    if local_mathjax() is not None:
        config.mathjax_path = "mathjax/tex-mml-chtml.js"  # relative to _static


def _copy_mathjax(app, exception) -> None:
    source = local_mathjax()
    if exception is None and source is not None and app.builder.format == "html":
        shutil.copytree(source, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app):
    app.connect("config-inited", _point_at_local_copy)
    app.connect("build-finished", _copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
