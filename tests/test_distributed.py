"""companion.distributed: real two-replica training (MirroredStrategy, DDP over gloo) on this CPU."""

import importlib.util
import subprocess
import sys
import time

import pytest
from conftest import BAD_INPUT_SETTINGS, assert_rejected
from hypothesis import given
from hypothesis import strategies as st

# The demos import TensorFlow in their own processes; this one only needs to know it is there.
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow is not installed", allow_module_level=True)
torch = pytest.importorskip("torch")

from companion import distributed  # noqa: E402

EXACT = 1e-5  # float32 rounding of a few small updates


@pytest.fixture(scope="module")
def running():
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch build has no gloo backend")
    # Both demos at once, in the background: each mostly waits on its framework's import.
    return distributed.start_demos(timeout=240)


@pytest.fixture(scope="module")
def results(running):
    return running.result()


def test_the_result_is_read_once_and_kept(running, results):
    assert running.result() is results
    assert sorted(results) == ["tensorflow", "torch"]
    assert all(p.poll() == 0 for p in running._processes.processes), "every process exited cleanly"


def test_shards_are_contiguous_halves_with_an_uneven_last_step():
    assert distributed.shard_sizes() == [[4, 4], [4, 4], [4, 3]]


@pytest.mark.needs_version("keras", "3.8", reason="the Keras optimizer sums the replicas' gradients "
                           "from 3.5 (keras-team/keras#19308), a Keras loss divides by the replicas "
                           "from 3.8 (keras-team/keras#20609); chapter 4 checks each version")
def test_mirrored_strategy_sums_replica_gradients(results):
    tf_result = results["tensorflow"]
    assert tf_result["replicas"] == 2
    assert tf_result["shard_sizes"] == [[4, 4], [4, 4], [4, 3]]
    assert tf_result["tf_data_shard_sizes"] == tf_result["shard_sizes"], "the demo splits as tf.distribute does"
    methods = tf_result["methods"]
    # Local sum / global batch size: exact at every step, even / uneven shards, and over the epoch.
    assert max(methods["compute_average_loss"]["steps"]) < EXACT
    assert methods["compute_average_loss"]["epoch"] < EXACT
    # A Keras loss divides its local mean by the number of replicas: exact only for equal shards.
    keras_steps = methods["keras_loss"]["steps"]
    assert max(keras_steps[:2]) < EXACT and keras_steps[2] > 1e-2
    assert methods["keras_loss"]["epoch"] > 1e-2
    # A plain local mean: the optimizer sums two means, so the step is twice as long.
    assert methods["local_reduce_mean"]["scales"][:2] == pytest.approx([2.0, 2.0], abs=1e-4)
    assert min(methods["local_reduce_mean"]["steps"]) > 0.9


def test_ddp_averages_rank_gradients(results):
    torch_result = results["torch"]
    assert torch_result["replicas"] == 2
    methods = torch_result["methods"]
    assert max(methods["global_count"]["steps"]) < EXACT
    assert methods["global_count"]["epoch"] < EXACT
    assert methods["global_count"]["scales"] == pytest.approx([1.0] * 3, abs=EXACT)
    # The per-rank mean: right for equal shards (DDP divides by 2), biased for 4 and 3 samples.
    local = methods["local_mean"]
    assert max(local["steps"][:2]) < EXACT and local["steps"][2] > 1e-2
    assert local["epoch"] > 1e-2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(timeout=0), ValueError, "timeout"),
        (dict(timeout=-1.0), ValueError, "timeout"),
        (dict(timeout=float("inf")), ValueError, "timeout"),
        (dict(timeout="60"), TypeError, "timeout"),
        (dict(timeout=True), TypeError, "timeout"),
        (dict(frameworks="torch"), TypeError, "frameworks"),
        (dict(frameworks=()), ValueError, "frameworks"),
        (dict(frameworks=("jax",)), ValueError, "frameworks"),
    ],
)
def test_bad_arguments_are_rejected_by_name_before_anything_starts(kwargs, error, match, monkeypatch):
    monkeypatch.setattr(distributed, "_Processes", None)  # starting a process would fail differently
    with pytest.raises(error, match=match):
        distributed.start_demos(**kwargs)


@BAD_INPUT_SETTINGS
@given(timeout=st.one_of(st.floats(max_value=0), st.just(float("nan")), st.text(max_size=2), st.none()))
def test_distributed_demos_reject_bad_timeouts(timeout, monkeypatch):
    monkeypatch.setattr(distributed, "_Processes", None)  # a wrongly accepted timeout starts nothing
    assert_rejected(lambda: distributed.start_demos(timeout=timeout), "timeout")


def test_a_hanging_process_is_killed_at_the_timeout():
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish within 0.5 s"):
        distributed._run([sleeper, sleeper], env=None, timeout=0.5)
    assert time.monotonic() - start < 10


def test_a_failing_process_reports_its_error():
    failing = [sys.executable, "-c", "raise SystemExit('no luck here')"]
    with pytest.raises(RuntimeError, match="exit status 1:\nno luck here"):
        distributed._run([failing], env=None, timeout=30)


def test_the_command_line_refuses_unknown_demos():
    result = subprocess.run([sys.executable, "-m", "companion.distributed", "jax"], capture_output=True, text=True)
    assert result.returncode != 0 and "usage" in result.stderr
