"""Put a computed number into the book's prose, so text and results cannot drift apart.

In the book build, ``glue(name, value)`` records ``value`` for ``{glue:text}`name``` roles
(``myst_nb.glue``). Where ``myst_nb`` is not installed (for example on Colab, where only the
companion is installed) it does nothing unless ``display=True``, in which case it shows the value.

>>> glue("answer", 42)                                          # doctest: +SKIP

``glue_reading_time("01_loss_vs_metric.md")`` glues the reading time a chapter shows at its
top, computed from its source by ``core_size`` (the rule ``tests/test_book.py`` checks).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from pathlib import Path

from companion import _validation as check

__all__ = ["core_size", "exact_minutes", "glue", "glue_reading_time", "reading_minutes"]

# A learner's pace, not a skimmer's: prose at 150 words a minute (explanatory text with formulas,
# read to be understood), code at 10 seconds a line (6 lines a minute, the pace of a careful code
# review, 200 to 400 lines an hour). Two careful readers took 35 to 50 minutes over chapters
# that the former pace (200 words and 15 lines a minute) put at 15 to 25; this one puts the
# same chapters at 33 to 54. Outputs and figures are not counted: the readers' times include them.
WORDS_PER_MINUTE, SECONDS_PER_CODE_LINE = 150, 10
OFF_PAGE = {"remove-cell", "remove-input", "hide-input", "hide-cell"}  # not read in passing
CODE_FENCE = re.compile(r"^```(?:python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHOWN_SOURCE = re.compile(r"^show_source\((\w+)\.(\w+)\)$", re.MULTILINE)


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


def _count_lines(text: str) -> int:
    return len([line for line in text.splitlines() if line.strip()])


def core_size(source) -> tuple[int, int]:
    """Words of prose and lines of code a reader meets before ``## Exercises`` (the core).

    ``source`` is a chapter's jupytext Markdown file. Words: the markdown, less its code blocks,
    directive fences and option lines, counting tokens that hold a letter or digit. Code lines:
    the non-blank lines of every code cell on the page (not removed, not collapsed), of code
    blocks in the markdown, and of companion functions shown with ``show_source(module.name)``.
    """
    import jupytext

    path = check.file_path("source", source, for_writing=False)
    words = lines = 0
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "markdown":
            text = re.split(r"^## Exercises", cell.source, flags=re.MULTILINE)[0]
            lines += sum(_count_lines(block) for block in CODE_FENCE.findall(text))
            text = CODE_FENCE.sub("", text)
            text = re.sub(r"^(```|:::).*$|^:\w+:.*$", "", text, flags=re.MULTILINE)
            words += len([word for word in text.split() if re.search(r"\w", word)])
            if re.search(r"^## Exercises", cell.source, re.MULTILINE):
                break
        elif not OFF_PAGE & set(cell.metadata.get("tags", [])):
            lines += _count_lines(cell.source)
            for module, name in SHOWN_SOURCE.findall(cell.source):
                shown = getattr(importlib.import_module(f"companion.{module}"), name)
                lines += _count_lines(inspect.getsource(shown))
    return words, lines


def exact_minutes(words: int, lines: int) -> float:
    """Minutes to read ``words`` of prose and ``lines`` of code at a learner's pace."""
    words, lines = check.non_negative_int("words", words), check.non_negative_int("lines", lines)
    return words / WORDS_PER_MINUTE + lines * SECONDS_PER_CODE_LINE / 60


def reading_minutes(words: int, lines: int) -> int:
    """The reading time of ``words`` of prose and ``lines`` of code, rounded up to 5 minutes.

    Rounded up, so that a page never promises less time than it takes.
    """
    return max(5, 5 * math.ceil(exact_minutes(words, lines) / 5 - 1e-9))


def glue_reading_time(source) -> None:
    """Glue ``core_words``, ``core_code_lines`` and ``reading_minutes`` for a chapter.

    ``source`` is the chapter's ``.md`` name; it is looked up next to the running notebook and
    in ``book/``. Where it is absent (Colab runs the notebook alone) nothing is glued.
    """
    if not isinstance(source, str) or not source.endswith(".md"):
        raise ValueError(f"source must be a chapter's .md file name, got {source!r}")
    name = Path(source)
    for candidate in (Path(name.name), Path("book") / name.name, Path("../book") / name.name):
        if candidate.is_file():
            words, lines = core_size(candidate)
            glue("core_words", words)
            glue("core_code_lines", lines)
            glue("reading_minutes", reading_minutes(words, lines))
            return
