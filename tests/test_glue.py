"""companion.glue: numbers for the book's prose, and a quiet no-op where myst_nb is absent."""

from __future__ import annotations

import sys

import pytest
from conftest import INPUT_SETTINGS, Expect, classify, numbers_valid_and_invalid, objects_valid_and_invalid
from hypothesis import given
from hypothesis import strategies as st

from companion.glue import glue


def test_glue_checks_its_name_and_runs_outside_a_notebook():
    glue("a_number", 1.5)  # no kernel: myst_nb's glue only records a display message
    with pytest.raises(ValueError, match="name"):
        glue("not a name", 1.0)


def test_without_myst_nb_the_value_is_shown_only_when_asked(monkeypatch, capsys):
    # Colab installs only the companion: there glue must not fail, and display=True shows the value.
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # `from myst_nb import glue` raises ImportError
    glue("quiet", 1.5)
    assert capsys.readouterr().out == ""
    glue("shown", 2.5, display=True)
    assert capsys.readouterr().out.strip() == "2.5"


# --- every input, valid or not (issue 15) -----------------------------------------------------------

NAMES = objects_valid_and_invalid(valid={"identifier": "mse_gap", "underscore": "_x1"},
                                  invalid={"space": "a b", "empty": "", "digit first": "1a", "int": 3, "None": None,
                                           "bytes": b"abc"})


@INPUT_SETTINGS
@given(name=NAMES, display=st.one_of(numbers_valid_and_invalid(False), numbers_valid_and_invalid(True)))
def test_inputs_glue(name, display, capsys):
    def expected():
        e = Expect()
        e.object("name", name), e.flag("display", display)
        e.done()

    classify("glue.glue", lambda: glue(name.value, 0.25, display=display.value), expected,
             agree=lambda result, want: result is None)
    capsys.readouterr()


# --- the reading time a chapter shows at its top (issue 14) -----------------------------------


CHAPTER = '''---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

Four words of prose.

```python
shown = 1
```

```{code-cell} ipython3
a = 1

b = 2
```

```{code-cell} ipython3
:tags: [remove-cell]

glue("x", 1)
```

```{code-cell} ipython3
show_source(glue.glue)
```

## Exercises

Not counted, nor is this:

```{code-cell} ipython3
c = 3
```
'''


def test_core_size_counts_prose_and_code_on_the_page_before_the_exercises(tmp_path):
    from companion.glue import core_size, glue as glue_function
    import inspect

    source = tmp_path / "99_chapter.md"
    source.write_text(CHAPTER)
    words, lines = core_size(source)
    listed = len([line for line in inspect.getsource(glue_function).splitlines() if line.strip()])
    # "A chapter" (2) + "Four words of prose." (4); code: 1 in the block, 2 in the cell, the
    # show_source line and the listing it shows; the removed cell and the exercises not at all.
    assert (words, lines) == (6, 1 + 2 + 1 + listed)


def test_reading_minutes_follow_a_learners_pace_rounded_up():
    from companion.glue import exact_minutes, reading_minutes

    assert exact_minutes(150, 0) == 1.0  # 150 words a minute
    assert exact_minutes(0, 6) == 1.0  # 6 lines of code a minute, 10 seconds a line
    assert exact_minutes(1500, 120) == 30.0
    assert reading_minutes(1500, 120) == 30  # a whole number of 5 minutes stays as it is
    assert reading_minutes(1500, 121) == 35  # rounded up: never less time than it takes
    assert reading_minutes(0, 0) == 5  # never "about 0 minutes"
    # The former pace (200 words, 15 lines a minute) said 25 minutes for 2,000 words and
    # 250 lines; careful readers took about twice as long, and so does this pace.
    assert reading_minutes(2000, 250) == 55


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None, True])
def test_exact_minutes_takes_counts_only(bad):
    from companion.glue import exact_minutes

    error = ValueError if bad == -1 else TypeError  # a wrong value, or a wrong type
    with pytest.raises(error, match="words"):
        exact_minutes(bad, 0)
    with pytest.raises(error, match="lines"):
        exact_minutes(0, bad)


def test_glue_reading_time_checks_its_argument_and_skips_a_missing_source(monkeypatch, tmp_path):
    from companion.glue import glue_reading_time

    with pytest.raises(ValueError, match="source"):
        glue_reading_time(3)
    with pytest.raises(ValueError, match="source"):
        glue_reading_time("chapter.ipynb")
    monkeypatch.chdir(tmp_path)
    glue_reading_time("99_absent.md")  # on Colab the source is not there: nothing is glued
