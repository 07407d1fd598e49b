"""Put a computed number into the book's prose, so text and results cannot drift apart.

In the book build, ``glue(name, value)`` records ``value`` for ``{glue:text}`name``` roles
(``myst_nb.glue``). Where ``myst_nb`` is not installed (for example on Colab, where only the
companion is installed) it does nothing unless ``display=True``, in which case it shows the value.

>>> glue("answer", 42)                                          # doctest: +SKIP
"""

from __future__ import annotations

from companion import _validation as check

__all__ = ["glue"]


def glue(name: str, value, *, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the book (and show it if ``display``)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    display = check.boolean("display", display)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)
