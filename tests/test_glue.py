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
