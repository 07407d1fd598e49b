"""tools/colab_check.py: the comparison of a Colab run's printed numbers with the book's."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import colab_check  # noqa: E402


def compare(got: str, want: str) -> colab_check.Comparison:
    result = colab_check.Comparison()
    result.text("cell", got, want, colab_check.RTOL)
    return result


def test_identical_text_compares_every_number_and_finds_nothing():
    result = compare("loss 0.1234 after 5 epochs", "loss 0.1234 after 5 epochs")
    assert (result.compared, result.differ, result.problems) == (2, 0, [])


def test_a_difference_in_the_last_printed_digit_is_counted_not_failed():
    result = compare("loss 0.1235", "loss 0.1234")
    assert (result.differ, result.beyond_last_digit, result.problems) == (1, 0, [])
    assert result.largest_relative == pytest.approx(1e-4 / 0.1234)


def test_a_number_beyond_the_last_digit_and_the_tolerance_fails():
    result = compare("loss 0.2234", "loss 0.1234")
    assert result.beyond_last_digit == 1 and "0.2234 where the book has 0.1234" in result.problems[0]


def test_a_changed_word_or_verdict_fails_whatever_the_numbers():
    assert compare("holds in 9 of 10 runs", "holds in 9 of 10 runs").problems == []
    assert compare("fails in 9 of 10 runs", "holds in 9 of 10 runs").problems
    assert compare("loss 0.1 0.2", "loss 0.1").problems  # a number more is a different text


@pytest.mark.parametrize(("token", "unit"), [("3.14", 0.01), ("31", 1.0), ("1.2e-4", 1e-5)])
def test_one_unit_of_the_last_printed_digit(token, unit):
    assert colab_check._unit(token) == pytest.approx(unit)


def test_only_the_cuda_builds_known_warning_is_forgiven_on_stderr():
    cuda = ("/x/site-packages/torch/autograd/graph.py:1: UserWarning: CUDA initialization: "
            "Unexpected error from cudaGetDeviceCount(). Error 302\n  return Variable._execution\n")
    cell = nbformat.v4.new_code_cell("pass")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=cuda)]
    assert colab_check.stderr_of(cell) == ""
    cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="DeprecationWarning\n"))
    assert colab_check.stderr_of(cell) == "DeprecationWarning\n"


def test_cells_pair_by_source_even_where_the_edition_drops_or_rewrites_cells():
    book = [nbformat.v4.new_code_cell(s) for s in ("setup()", "glue('x', 1)", "a = 1", "print(a)")]
    edition = [nbformat.v4.new_code_cell(s) for s in ("install(); setup()", "a = 1", "print(a)")]
    pairs = colab_check.pair_cells(nbformat.v4.new_notebook(cells=edition),
                                   nbformat.v4.new_notebook(cells=book))
    assert [(index, mine.source, theirs.source) for index, mine, theirs in pairs] == [
        (1, "a = 1", "a = 1"), (2, "print(a)", "print(a)")]
