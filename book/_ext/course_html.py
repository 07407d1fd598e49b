"""Sphinx extension: small fixes to the HTML pages of Jupyter Book 1.x.

Jupyter Book 1.0.4 registers sphinx-thebe's and sphinx-togglebutton's inline scripts twice, so
every page declared ``const THEBE_JS_URL`` twice and the browser logged a SyntaxError (the
browser test in ``tests/rendered`` caught it). This removes repeated script entries from each
page's context before it is rendered, keeping the first of each.
"""

from __future__ import annotations


def _script_key(script) -> tuple:
    # The repeats differ only in their priority (their position on the page) and in whether an
    # inline script's missing file name is None or "".
    attributes = tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items()))
    return (str(getattr(script, "filename", script) or ""), attributes)


def _drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
