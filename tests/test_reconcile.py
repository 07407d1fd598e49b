"""companion.reconcile: the chain of parts, the results, and what they print and save.

The frameworks' tests (test_reconcile_keras.py, test_reconcile_torch.py) check each part
against an independent computation; here the arithmetic is checked on steps whose every term
is known.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from companion import reconcile
from companion.reconcile import (AVERAGES, Reconciliation, Step, decompose, decompose_metric,
                                 moving_average, validation_gap)


def steps_by_hand():
    """Three steps of 4, 4 and 2 samples, each term chosen so each part is a known number."""
    return [Step(size=4, reported=2.0, penalty=0.5, weighted=1.5, train=1.2, criterion=1.1,
                 inference=1.0, inference_end=0.8, final=0.7),
            Step(size=4, reported=1.6, penalty=0.4, weighted=1.2, train=1.0, criterion=0.9,
                 inference=0.9, inference_end=0.6, final=0.6),
            Step(size=2, reported=3.0, penalty=0.5, weighted=2.5, train=2.0, criterion=2.0,
                 inference=1.5, inference_end=1.5, final=1.2)]


def test_each_part_is_its_shares_times_its_terms():
    steps = steps_by_hand()
    share = np.array([0.4, 0.4, 0.2])
    logged = float(np.mean([2.0, 1.6, 3.0]))  # a plain mean of batch means
    evaluated = float(share @ [0.7, 0.6, 1.2])
    r = decompose(steps, logged=logged, evaluated=evaluated, average="mean",
                  criterion_differs=True)
    assert list(r.parts) == list(reconcile.PARTS)  # the chain's order
    expected = {"averaging rule": logged - share @ [2.0, 1.6, 3.0],
                "penalty": share @ [0.5, 0.4, 0.5],
                "sample weighting": share @ [0.3, 0.2, 0.5],
                "training loss vs criterion": share @ [0.1, 0.1, 0.0],
                "training-mode layers": share @ [0.1, 0.0, 0.5],
                "weights moved during the epoch": share @ [0.2, 0.3, 0.0],
                "moving statistics": share @ [0.1, 0.0, 0.3]}
    for part, value in expected.items():
        assert math.isclose(r.parts[part], value, abs_tol=1e-12), part
    assert abs(r.residual) < 1e-12


def test_the_residual_sees_each_of_its_three_checks():
    steps = steps_by_hand()
    evaluated = float(np.array([0.4, 0.4, 0.2]) @ [0.7, 0.6, 1.2])
    good = decompose(steps, logged=float(np.mean([2.0, 1.6, 3.0])), evaluated=evaluated,
                     average="mean", criterion_differs=True)
    # A logged number the rule does not give, a step whose loss is not penalty + weighted,
    # an evaluation over other data: each leaves its own size in the residual.
    off_rule = decompose(steps, logged=good.logged + 0.01, evaluated=evaluated,
                         average="mean", criterion_differs=True)
    off_step = decompose([steps[0], Step(**{**steps[1].__dict__, "reported": 1.7}), steps[2]],
                         logged=good.logged, evaluated=evaluated, average="mean",
                         criterion_differs=True)
    off_data = decompose(steps, logged=good.logged, evaluated=evaluated + 0.03,
                         average="mean", criterion_differs=True)
    assert math.isclose(off_rule.residual, 0.01, abs_tol=1e-12)
    assert math.isclose(off_step.residual, 0.4 * 0.1 - 0.1 / 3, abs_tol=1e-12)
    assert math.isclose(off_data.residual, -0.03, abs_tol=1e-12)
    for result in (off_rule, off_step, off_data):
        with pytest.raises(reconcile.ReconciliationError):
            reconcile.check_residuals(result)
    reconcile.check_residuals(good)


def test_the_errors_name_what_disagrees():
    steps = steps_by_hand()
    evaluated = float(np.array([0.4, 0.4, 0.2]) @ [0.7, 0.6, 1.2])
    wrong_rule = decompose(steps, logged=float(np.mean([2.0, 1.6, 3.0])), evaluated=evaluated,
                           average="size-weighted", criterion_differs=True)
    with pytest.raises(reconcile.ReconciliationError, match="average='mean'"):
        reconcile.check_residuals(wrong_rule)
    bad_step = [steps[0], Step(**{**steps[1].__dict__, "reported": 1.7}), steps[2]]
    with pytest.raises(reconcile.ReconciliationError, match="at step 1"):
        reconcile.check_residuals(decompose(bad_step, logged=float(np.mean([2.0, 1.7, 3.0])),
                                            evaluated=evaluated, average="mean"))


def test_parts_appear_when_the_run_can_have_them():
    core = [Step(size=2, reported=1.0, weighted=1.0, train=1.0, criterion=1.0, inference=0.9)]
    r = decompose(core, logged=1.0, evaluated=0.8)
    assert list(r.parts) == list(reconcile.CORE_PARTS)
    assert r.parts["weights moved during the epoch"] == pytest.approx(0.1)


def test_averaging_rules():
    values, sizes = np.array([1.0, 2.0, 4.0]), np.array([2, 2, 1])
    assert AVERAGES["mean"](values, sizes) == pytest.approx(7 / 3)
    assert AVERAGES["size-weighted"](values, sizes) == pytest.approx(10 / 5)
    assert AVERAGES["last"](values, sizes) == 4.0
    assert moving_average(0.5)(values, sizes) == pytest.approx(0.5 * (0.5 * 1 + 0.5 * 2) + 2)
    with pytest.raises(ValueError, match="average"):
        reconcile.average_rule("median")


def test_metric_and_validation_chains():
    metric = decompose_metric({"logged": 0.9, "weighted": 0.9, "train": 0.85, "inference": 0.8,
                               "inference_end": 0.7, "evaluated": 0.7}, name="acc", epoch=0)
    assert metric.parts == pytest.approx({"sample weighting": 0.05,
                                          "training-mode layers": 0.05,
                                          "weights moved during the epoch": 0.1})
    steps = steps_by_hand()
    share = np.array([0.4, 0.4, 0.2])
    training = decompose(steps, logged=float(share @ [2.0, 1.6, 3.0]),
                         evaluated=float(share @ [0.7, 0.6, 1.2]), criterion_differs=True)
    val_steps = [Step(size=5, reported=1.3, penalty=0.3, weighted=1.0, train=1.0,
                      criterion=1.0, inference=1.0)]
    validation = decompose(val_steps, logged=1.3, evaluated=1.0, name="val_loss",
                           fixed_weights=True)
    gap = validation_gap(training, validation)
    assert gap.parts["penalty"] == pytest.approx(training.parts["penalty"] - 0.3)
    assert gap.parts[reconcile.DATA_PART] == pytest.approx(training.evaluated - 1.0)
    assert sum(gap.parts.values()) + gap.residual == pytest.approx(gap.loss - gap.val_loss)


def test_the_table_prints_the_residual_against_the_tolerance():
    r = decompose(steps_by_hand(), logged=float(np.mean([2.0, 1.6, 3.0])),
                  evaluated=float(np.array([0.4, 0.4, 0.2]) @ [0.7, 0.6, 1.2]),
                  average="mean", criterion_differs=True)
    text = str(r)
    assert "below 1e-06 x max(1, |logged|) (float rounding)" in text
    assert "e-1" not in text  # never the residual's own size
    assert max(len(line) for line in text.splitlines()) <= 88
    for part, value in r.parts.items():
        assert f"{part:<32}{value:+.4f}" in text


def test_to_dict_round_trips_through_json():
    steps = steps_by_hand()
    share = np.array([0.4, 0.4, 0.2])
    epoch = decompose(steps, logged=float(share @ [2.0, 1.6, 3.0]),
                      evaluated=float(share @ [0.7, 0.6, 1.2]),
                      history=reconcile.History({"loss": [1.0, 2.0]}), epoch=1)
    val = decompose([Step(size=5, reported=1.3, weighted=1.3, train=1.3, criterion=1.3,
                          inference=1.3)], logged=1.3, evaluated=1.3, fixed_weights=True,
                    name="val_loss", epoch=1)
    from dataclasses import replace
    epoch = replace(epoch, validation=validation_gap(epoch, val))
    r = replace(epoch, epochs=(epoch,))
    data = json.loads(json.dumps(r.to_dict()))
    back = Reconciliation.from_dict(data)
    assert back.to_dict() == r.to_dict()
    assert back.parts == r.parts and back.residual == r.residual
    assert [s.replayed for s in back.steps] == [s.replayed for s in r.steps]
    assert back.history.history == {"loss": [1.0, 2.0]}
    assert back.validation.parts == r.validation.parts
    with pytest.raises(ValueError, match="keys"):
        Reconciliation.from_dict({"logged": 1.0})


def test_plot_draws_the_waterfall():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = steps_by_hand()
    share = np.array([0.4, 0.4, 0.2])
    r = decompose(steps, logged=float(np.mean([2.0, 1.6, 3.0])),
                  evaluated=float(share @ [0.7, 0.6, 1.2]), average="mean",
                  criterion_differs=True)
    ax = r.plot(xlabel="loss (MSE)")
    bars = ax.patches
    assert len(bars) == len(r.parts) + 2  # evaluated, each part, logged
    # Each part's bar starts where the previous one ended; the last ends at logged.
    ends = [bar.get_x() + bar.get_width() for bar in bars[:-1]]
    assert all(math.isclose(bars[k + 1].get_x(), ends[k], abs_tol=1e-12)
               for k in range(len(bars) - 2))
    assert math.isclose(ends[-1], r.logged - r.residual, abs_tol=1e-9)
    assert math.isclose(bars[-1].get_width(), r.logged)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "evaluated" and labels[-1] == "logged"
    assert labels[1] == max(r.parts, key=lambda p: abs(r.parts[p]))
    assert ax.get_xlabel() == "loss (MSE)" and ax.get_title()
    with pytest.raises(TypeError, match="result"):
        from companion.plotting import plot_reconciliation

        plot_reconciliation("r")
    plt.close("all")
