"""TrainingLog, batching, compare, data, glue and plotting: the small pieces the loops and chapters use."""

import math

import numpy as np
import pytest

from companion import batching, compare, data
from companion.glue import glue
from companion.training_log import TrainingLog


def make_log():
    log = TrainingLog(keys=("loss", "mse"))
    for epoch in range(2):
        for step, (size, value) in enumerate([(4, 2.0), (1, 5.0)]):
            log.add_batch(epoch=epoch, step=step, size=size, batch={"loss": value, "mse": value / 2},
                          running={"loss": value + epoch, "mse": value})
        log.end_epoch(log.batches[-1].running)
    return log


def test_training_log_series_and_history():
    log = make_log()
    assert log.history == {"loss": [5.0, 6.0], "mse": [5.0, 5.0]}
    assert log.series("loss").tolist() == [2.0, 5.0, 2.0, 5.0]
    assert log.series("loss", kind="running", epoch=1).tolist() == [3.0, 6.0]
    assert log.sizes(epoch=0).tolist() == [4, 1]
    with pytest.raises(KeyError, match="key must be one of"):
        log.series("accuracy")
    with pytest.raises(ValueError, match="kind"):
        log.series("loss", kind="epoch")
    with pytest.raises(ValueError, match="unique"):
        TrainingLog(keys=("loss", "loss"))


def test_add_steps_is_add_batch_for_a_whole_epoch():
    one_by_one = make_log()
    at_once = TrainingLog(keys=("loss", "mse"))
    for epoch in range(2):
        at_once.add_steps(epoch=epoch, sizes=np.array([4, 1]), batch={"loss": [2.0, 5.0], "mse": [1.0, 2.5]},
                          running={"loss": np.array([2.0 + epoch, 5.0 + epoch]), "mse": [2.0, 5.0]})
        at_once.end_epoch({"loss": 5.0 + epoch, "mse": 5.0})
    assert at_once.batches == one_by_one.batches
    assert at_once.history == one_by_one.history
    assert all(type(r.size) is int and type(r.batch["loss"]) is float for r in at_once.batches)
    # Steps added either way keep their order.
    at_once.add_batch(epoch=2, step=0, size=3, batch={"loss": 1.0, "mse": 1.0}, running={"loss": 1.0, "mse": 1.0})
    at_once.add_steps(epoch=3, sizes=[3], batch={"loss": [0.5], "mse": [0.5]}, running={"loss": [0.5], "mse": [0.5]})
    assert [(r.epoch, r.step) for r in at_once.batches] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0)]
    assert at_once.series("loss", epoch=3).tolist() == [0.5]


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(batch={"loss": [1.0]}), r"batch must be a dict with the keys \('loss', 'mse'\)"),
        (dict(running=[1.0, 2.0]), "running must be a dict"),
        (dict(batch={"loss": [1.0], "mse": [1.0, 2.0]}), r"batch\['loss'\] has 1 values for 2 steps"),
    ],
)
def test_add_steps_refuses_bad_input_by_name(kwargs, pattern):
    arguments = dict(epoch=0, sizes=[4, 1], batch={"loss": [1.0, 2.0], "mse": [1.0, 2.0]},
                     running={"loss": [1.0, 2.0], "mse": [1.0, 2.0]})
    arguments.update(kwargs)
    log = TrainingLog(keys=("loss", "mse"))
    with pytest.raises(ValueError, match=pattern):
        log.add_steps(**arguments)
    assert log.batches == []


def test_batch_indices_keep_the_short_last_batch():
    batches = batching.batch_indices(10, 4)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batching.number_of_batches(442, 32) == 14
    order = np.array([3, 1, 2, 0])
    assert [b.tolist() for b in batching.batch_indices(4, 3, order=order)] == [[3, 1, 2], [0]]
    with pytest.raises(ValueError, match="order must be a permutation"):
        batching.batch_indices(4, 3, order=np.array([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="batch_size"):
        batching.batch_indices(4, 0)
    with pytest.raises(TypeError, match="num_samples"):
        batching.batch_indices(4.0, 2)


def test_max_relative_difference_and_its_description():
    assert compare.max_relative_difference([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert compare.max_relative_difference([2.0], [2.5]) == pytest.approx(0.25)
    assert compare.max_relative_difference([0.0], [1e-3]) == pytest.approx(1e-3)  # absolute at 0
    assert compare.max_relative_difference({"a": [1.0], "b": [4.0]}, {"a": [1.0], "b": [5.0]}) == 0.25
    assert compare.describe_difference(0.0) == "zero (bit-identical)"
    assert compare.describe_difference(1.7e-7) == "at most 1e-06"
    assert compare.describe_difference(1e-7) == "at most 1e-07"
    assert compare.describe_difference(0.25) == "0.25"
    with pytest.raises(ValueError, match="same keys"):
        compare.max_relative_difference({"a": [1.0]}, {"b": [1.0]})
    with pytest.raises(ValueError, match="same shape"):
        compare.max_relative_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="a must be finite"):
        compare.max_relative_difference([math.nan], [1.0])
    with pytest.raises(ValueError, match="difference"):
        compare.describe_difference(-1.0)


def test_data_sets_are_offline_and_shaped():
    x, y = data.load_diabetes()
    assert x.shape == (442, 10) and y.shape == (442, 1) and x.dtype == y.dtype == np.float32
    assert abs(float(y.mean())) < 1e-6 and float(y.std()) == pytest.approx(1.0, rel=1e-5)
    _, raw = data.load_diabetes(standardize=False)
    assert float(raw.min()) == 25.0
    xs, ys = data.linear_regression_data(50, 2, noise=0.0, seed=1)
    assert xs.shape == (50, 2) and ys.shape == (50, 1)
    weights, *_ = np.linalg.lstsq(xs, ys, rcond=None)
    np.testing.assert_allclose(xs @ weights, ys, atol=1e-5)  # noise=0: exactly linear
    with pytest.raises(ValueError, match="noise"):
        data.linear_regression_data(noise=-1.0)
    with pytest.raises(TypeError, match="standardize"):
        data.load_diabetes(standardize="yes")


def test_glue_checks_its_name_and_runs_outside_a_notebook():
    glue("a_number", 1.5)  # no kernel: myst_nb's glue only records a display message
    with pytest.raises(ValueError, match="name"):
        glue("not a name", 1.0)


def test_plot_epoch_numbers_draws_every_series():
    import matplotlib

    matplotlib.use("Agg")
    from companion.plotting import plot_epoch_numbers

    ax = plot_epoch_numbers(make_log(), "loss", evaluations=[1.0, 2.0], ylabel="loss")
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["batch loss (this batch only)", "running epoch average",
                      "logged epoch loss (History)", "evaluated after the epoch"]
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss"
    with pytest.raises(ValueError, match="evaluations"):
        plot_epoch_numbers(make_log(), "loss", evaluations=[1.0])
    with pytest.raises(KeyError, match="key"):
        plot_epoch_numbers(make_log(), "accuracy")
