"""companion.training_log: the per-epoch history and the per-step records both loops return."""

import numpy as np
import pytest

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
