"""companion.training_log: the per-epoch history and the per-step records both loops return."""

import numpy as np
import pytest
from conftest import (INPUT_SETTINGS, Case, Expect, classify, close, numbers_valid_and_invalid,
                      objects_valid_and_invalid)
from hypothesis import given
from hypothesis import strategies as st

from companion.training_log import BatchRecord, TrainingLog


def test_training_log_series_and_history(two_epoch_log):
    log = two_epoch_log
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


def test_add_batch_keeps_the_logged_keys_as_python_numbers():
    log = TrainingLog(keys=["loss"])
    log.add_batch(epoch=np.int64(0), step=np.int64(0), size=np.int64(32),
                  batch={"loss": np.float32(0.5), "lr": 0.1}, running={"loss": np.float64(0.5), "lr": 0.1})
    log.end_epoch({"loss": np.float32(0.5)})
    assert log.keys == ("loss",) and log.history == {"loss": [0.5]}
    assert log.batches == [BatchRecord(epoch=0, step=0, size=32, batch={"loss": 0.5}, running={"loss": 0.5})]
    record = log.batches[0]
    assert type(record.size) is int and type(record.batch["loss"]) is float  # JSON-ready, no NumPy scalars
    assert type(log.history["loss"][0]) is float


def test_add_batch_stores_a_copy_in_the_order_of_the_keys():
    log = TrainingLog(keys=("loss", "mse"))
    as_logged = {"loss": 0.5, "mse": 0.25}  # the loops' dicts: floats, keys in order
    reordered = {"mse": 0.25, "loss": 0.5}
    log.add_batch(epoch=0, step=0, size=4, batch=as_logged, running=reordered)
    as_logged["loss"] = 9.0  # the record is the caller's dict as it was, not the dict itself
    record = log.batches[0]
    assert record.batch == {"loss": 0.5, "mse": 0.25} and list(record.running) == ["loss", "mse"]
    log.add_batch(epoch=0, step=1, size=4, batch={"loss": 1, "mse": np.float32(1)}, running=reordered)
    assert log.batches[1].batch == {"loss": 1.0, "mse": 1.0}  # not floats: converted one by one
    assert type(log.batches[1].batch["loss"]) is float


# --- every input, valid or not (issue 15) -----------------------------------------------------------

KEYS = objects_valid_and_invalid(
    valid={"tuple": ("loss", "mse"), "list": ["loss", "mse"], "one": ("loss",), "no keys": ()},
    invalid={"a str": "loss", "duplicate": ("loss", "loss"), "int": (1,), "empty name": ("",), "None": None, "3": 3})


def _number_cases():
    import torch

    return objects_valid_and_invalid(
        valid={"float": 1.5, "float32": np.float32(0.5), "int": 2, "0-d array": np.array(0.25), "nan": float("nan"),
               "inf": float("inf"), "tensor": torch.tensor(0.75, requires_grad=True) * 1, "(1,) array": np.array([3.0])},
        invalid={"str": "1.5", "None": None, "bool": True, "two numbers": np.array([1.0, 2.0]), "list": [], "complex": 1j})


@st.composite
def logged_values(draw):
    """A Case of a dict of logged numbers: {"loss": ..., "mse": ...}, maybe not a dict, or short of a key."""
    shape = draw(st.sampled_from(["dict", "dict", "dict", "missing mse", "list", "None"]))
    loss, mse = draw(_number_cases()), draw(_number_cases())
    value = {"dict": {"loss": loss.value, "mse": mse.value}, "missing mse": {"loss": loss.value},
             "list": [loss.value, mse.value], "None": None}[shape]
    good = shape == "dict" and loss.kind.startswith("valid") and mse.kind.startswith("valid")
    as_float = lambda v: float(v.detach()) if hasattr(v, "detach") else float(np.reshape(v, ()))  # noqa: E731
    reference = {"loss": as_float(loss.value), "mse": as_float(mse.value)} if good else None
    return Case(value, f"{'valid' if good else 'bad'}: {shape} of {loss.kind}, {mse.kind}", reference)


@INPUT_SETTINGS
@given(keys=KEYS)
def test_inputs_training_log(keys):
    def expected():
        e = Expect()
        names = e.object("keys", keys)
        e.done()
        return tuple(names), {k: [] for k in names}

    classify("training_log.TrainingLog", lambda: (lambda log: (log.keys, log.history))(TrainingLog(keys=keys.value)),
             expected, agree=lambda result, want: result == want)


@INPUT_SETTINGS
@given(epoch=numbers_valid_and_invalid(1), step=numbers_valid_and_invalid(0), size=numbers_valid_and_invalid(32),
       batch=logged_values(), running=logged_values())
def test_inputs_add_batch(epoch, step, size, batch, running):
    log = TrainingLog(keys=("loss", "mse"))

    def expected():
        e = Expect()
        record = (e.count("epoch", epoch, minimum=0), e.count("step", step, minimum=0), e.count("size", size),
                  e.object("batch", batch), e.object("running", running))
        e.done()
        return BatchRecord(*record)

    def agree(result, want):  # NaN == NaN here, and every number a Python float or int
        plain = all(type(v) is float for d in (result.batch, result.running) for v in d.values())
        return plain and close(result.batch, want.batch) and close(result.running, want.running) and (
            result.epoch, result.step, result.size) == (want.epoch, want.step, want.size)

    classify("training_log.TrainingLog.add_batch",
             lambda: (log.add_batch(epoch=epoch.value, step=step.value, size=size.value, batch=batch.value,
                                    running=running.value), log.batches[-1])[1], expected, agree=agree)


@INPUT_SETTINGS
@given(values=logged_values())
def test_inputs_end_epoch(values):
    log = TrainingLog(keys=("loss", "mse"))

    def expected():
        e = Expect()
        numbers = e.object("values", values)
        e.done()
        return {k: [v] for k, v in numbers.items()}

    classify("training_log.TrainingLog.end_epoch", lambda: (log.end_epoch(values.value), log.history)[1], expected)


@INPUT_SETTINGS
@given(key=objects_valid_and_invalid(valid={"loss": "loss", "mse": "mse"}, invalid={"other": "acc", "None": None,
                                                                                    "list": ["loss"]}),
       kind=objects_valid_and_invalid(valid={"batch": "batch", "running": "running"}, invalid={"epoch": "epoch", "3": 3}),
       epoch=st.one_of(st.just(Case(None, "None", None)), numbers_valid_and_invalid(1, huge=2)))
def test_inputs_series_and_sizes(two_epoch_log, key, kind, epoch):
    records = [r for r in two_epoch_log.batches if epoch.value is None or r.epoch == epoch.reference]

    def expected_series():
        e = Expect()
        k, which = e.object("key", key), e.object("kind", kind)
        e.count("epoch", epoch, minimum=0, optional=True)
        e.done()
        e.need(records, "epoch")
        e.done()
        return np.array([getattr(r, which)[k] for r in records])

    def expected_sizes():
        e = Expect()
        e.count("epoch", epoch, minimum=0, optional=True)
        e.need(records, "epoch")
        e.done()
        return np.array([r.size for r in records])

    classify("training_log.TrainingLog.series",
             lambda: two_epoch_log.series(key.value, kind=kind.value, epoch=epoch.value), expected_series)
    classify("training_log.TrainingLog.sizes", lambda: two_epoch_log.sizes(epoch=epoch.value), expected_sizes,
             agree=lambda result, want: result.dtype == np.int64 and np.array_equal(result, want))
