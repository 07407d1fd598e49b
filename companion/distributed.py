"""Data-parallel training on one CPU machine: two replicas in TensorFlow and in PyTorch.

:func:`start_demos` trains the same small network on the same data several ways in each
framework, in the background, and compares every way with single-process training on the whole
global batch:

* TensorFlow: ``tf.distribute.MirroredStrategy`` over two *logical* CPU devices. The Keras
  optimizer **sums** the replicas' gradients, so each replica must divide its loss by the
  *global* batch size (``tf.nn.compute_average_loss``); a per-replica ``tf.reduce_mean``
  doubles the step, and a Keras loss object (which divides its local mean by the number of
  replicas) is exact only when the shards are equal.
* PyTorch: ``DistributedDataParallel`` with the gloo backend in two processes talking over
  loopback. DDP **averages** the ranks' gradients, so the per-rank mean loss is exact for equal
  shards and biased for unequal ones; dividing the local sum by the global count (times the
  number of ranks, which DDP divides by) is exact for both.

The data are 23 samples in global batches of 8: steps of 8, 8 and 7 samples, each split into
two contiguous shards (:func:`shard_sizes`), so the last step has unequal shards of 4 and 3.
Every method is scored against the reference for each step taken from the reference's weights:
``"steps"``, the relative error of the update, ``max|dw - dw_ref| / max|dw_ref|``, and
``"scales"``, its length along ``dw_ref`` (1.0 when right); and after a whole epoch,
``"epoch"``, the relative error of the distance travelled.

Each demo runs in fresh subprocesses (TensorFlow fixes its devices when it first uses them;
DDP needs one process per rank) with a timeout, and returns plain numbers. Most of their time
goes into importing the frameworks, so a notebook starts them early and reads the result later:

>>> running = start_demos(timeout=240)                                      # doctest: +SKIP
>>> demos = running.result()                                                # doctest: +SKIP
>>> demos["torch"]["methods"]["global_count"]["epoch"] < 1e-5              # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from companion import _validation as check

__all__ = ["start_demos", "shard_sizes"]

SAMPLES, FEATURES, HIDDEN = 23, 3, 4
GLOBAL_BATCH, REPLICAS, LEARNING_RATE = 8, 2, 0.1
_FRAMEWORKS = ("tensorflow", "torch")
_TF_METHODS = ("compute_average_loss", "keras_loss", "local_reduce_mean")
_TORCH_METHODS = ("global_count", "local_mean")


def shard_sizes() -> list[list[int]]:
    """How many samples each replica gets at each step of the demos' epoch.

    >>> shard_sizes()
    [[4, 4], [4, 4], [4, 3]]
    """
    return [[len(shard) for shard in np.array_split(idx, REPLICAS)] for idx in _global_batches()]


def start_demos(*, timeout: float = 120.0, frameworks=_FRAMEWORKS) -> _DemoRun:
    """Start the demos of ``frameworks`` in the background; ``.result()`` waits for them.

    ``.result()`` returns ``{framework: result}``, each result ``{"replicas", "shard_sizes",
    "methods": {name: {"steps", "scales", "epoch"}}}``. TensorFlow's methods are
    ``"compute_average_loss"``, ``"keras_loss"`` and ``"local_reduce_mean"``, and its result
    also holds ``"tf_data_shard_sizes"``: how ``experimental_distribute_dataset`` splits the same
    batches. PyTorch's are ``"global_count"`` and ``"local_mean"``; its processes meet at a free
    port on 127.0.0.1. ``timeout`` (seconds) counts from the start.

    >>> running = start_demos(frameworks=["torch"])                 # doctest: +SKIP
    >>> running.result()["torch"]["methods"]["local_mean"]["steps"]  # doctest: +SKIP
    [2.1e-08, 1.1e-07, 0.082...]
    """
    timeout = check.positive_number("timeout", timeout)
    frameworks = check.sequence("frameworks", frameworks)
    if not frameworks or any(name not in _FRAMEWORKS for name in frameworks):
        raise ValueError(f"frameworks must be a non-empty sequence of {_FRAMEWORKS}, got {frameworks!r}")
    # One thread per process: the replicas share two cores, and a fixed thread count keeps the
    # summation order (and so the last digits) the same on every machine.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3",
               TF_ENABLE_ONEDNN_OPTS="0", PYTHONHASHSEED="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's own connections on the loopback interface
    module = [sys.executable, "-m", "companion.distributed"]
    commands = {"tensorflow": [module + ["tf"]],
                "torch": [module + ["torch", str(rank), str(REPLICAS)] for rank in range(REPLICAS)]}
    chosen = {name: commands[name] for name in _FRAMEWORKS if name in frameworks}
    return _DemoRun(chosen, env, timeout)


class _DemoRun:
    """Demo processes running in the background (see :func:`start_demos`)."""

    def __init__(self, commands: dict[str, list[list[str]]], env: dict, timeout: float):
        self._names = list(commands)
        self._counts = [len(c) for c in commands.values()]
        self._processes = _Processes([c for group in commands.values() for c in group], env, timeout)
        self._result = None

    def result(self) -> dict:
        """Wait for the demos (until the timeout) and return ``{framework: result}``."""
        if self._result is None:
            outputs = self._processes.wait()
            # The first process of each demo (TensorFlow's only one, PyTorch's rank 0) prints it.
            firsts = np.cumsum([0] + self._counts)[:-1]
            self._result = {name: _parse(*outputs[first], name) for name, first in zip(self._names, firsts)}
        return self._result


# --- the parent's side: processes, timeouts, results ---------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))  # port 0: the kernel picks one that is free now
        return probe.getsockname()[1]


class _Processes:
    """Commands started at once; ``wait()`` collects them, killing all on timeout or failure."""

    def __init__(self, commands: list[list[str]], env: dict | None, timeout: float):
        self.commands, self.timeout = commands, timeout
        self.deadline = time.monotonic() + timeout
        self.processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for command in commands
        ]

    def wait(self) -> list[tuple[str, str]]:
        outputs = []
        try:
            for process, command in zip(self.processes, self.commands):
                name = " ".join(command[2:])
                try:
                    out, err = process.communicate(timeout=max(0.1, self.deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"{name} did not finish within {self.timeout:g} s") from None
                if process.returncode != 0:
                    raise RuntimeError(f"{name} failed with exit status {process.returncode}:\n{err[-2000:]}")
                outputs.append((out, err))
        finally:
            for process in self.processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        return outputs


def _run(commands: list[list[str]], env: dict | None, timeout: float) -> list[tuple[str, str]]:
    """Run every command at once and return their (stdout, stderr), or raise RuntimeError."""
    return _Processes(commands, env, timeout).wait()


def _parse(out: str, err: str, name: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the {name} demo printed no result; its stderr ends with:\n{err[-2000:]}")
    return json.loads(lines[-1])


# --- the children's side: the same experiment in each framework ----------------------------


def _data() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic ``y = x @ w + noise``: float32 ``x`` (SAMPLES, FEATURES) and ``y`` (SAMPLES, 1)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(SAMPLES, FEATURES))
    w = rng.normal(size=(FEATURES, 1))
    y = x @ w + 0.5 * rng.normal(size=(SAMPLES, 1))
    return x.astype(np.float32), y.astype(np.float32)


def _global_batches() -> list[np.ndarray]:
    """The sample indices of each step's global batch."""
    from companion.batching import batches

    return [np.arange(SAMPLES)[step] for step in batches(SAMPLES, GLOBAL_BATCH)]


def _scores(methods: tuple[str, ...], train_step, get_weights, set_weights) -> dict:
    """Per-step update errors and scales from the reference weights, and the error after an epoch.

    A step's error is ``max|dw - dw_ref| / max|dw_ref|`` and its scale the length of ``dw``
    along ``dw_ref`` (2.0: the update points the right way but is twice as long).

    ``train_step(method, idx)`` makes one step on the global batch ``idx`` (method ``None``: the
    single-process reference); weights are lists of arrays.
    """
    start = get_weights()
    reference = [start]
    for idx in _global_batches():
        train_step(None, idx)
        reference.append(get_weights())

    def flat(weights, origin):
        return np.concatenate([(np.asarray(w, np.float64) - o).ravel() for w, o in zip(weights, origin)])

    def error(update, reference_update):
        return float(np.max(np.abs(update - reference_update)) / np.max(np.abs(reference_update)))

    scores = {}
    for method in methods:
        steps, scales = [], []
        for before, after, idx in zip(reference, reference[1:], _global_batches()):
            set_weights(before)
            train_step(method, idx)
            update, reference_update = flat(get_weights(), before), flat(after, before)
            steps.append(error(update, reference_update))
            scales.append(float(update @ reference_update / (reference_update @ reference_update)))
        set_weights(start)
        for idx in _global_batches():
            train_step(method, idx)
        epoch = error(flat(get_weights(), start), flat(reference[-1], start))
        scores[method] = {"steps": steps, "scales": scales, "epoch": epoch}
    set_weights(start)
    return scores


def _tf_child() -> dict:
    import companion  # noqa: F401  (importing it quiets TensorFlow's start-up logging)
    import tensorflow as tf

    # Must come before TensorFlow touches its devices: afterwards the split is refused.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
    import keras

    # Not companion.seed_everything: it would import PyTorch too, seconds for nothing here.
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()

    from companion import models

    x, y = _data()
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    with strategy.scope():
        model = models.keras_mlp(FEATURES, hidden=(HIDDEN,), seed=0)
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        keras_loss = keras.losses.MeanSquaredError()
    # The reference lives outside the strategy: a plain model on one device, the whole batch.
    single = models.keras_mlp(FEATURES, hidden=(HIDDEN,), seed=0)
    single_optimizer = keras.optimizers.SGD(LEARNING_RATE)

    # The steps run eagerly: a handful of tiny steps take less time than tracing them would.
    def replica_step(method, x_shard, y_shard, global_size):
        with tf.GradientTape() as tape:
            prediction = model(x_shard, training=True)
            per_example = tf.reduce_mean(tf.square(prediction - y_shard), axis=-1)
            if method == "compute_average_loss":  # local sum / global batch size
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_size)
            elif method == "keras_loss":  # local mean / number of replicas
                loss = keras_loss(y_shard, prediction)
            else:  # local mean: the replicas' gradients are then summed
                loss = tf.reduce_mean(per_example)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    def single_step(x_batch, y_batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(single(x_batch, training=True) - y_batch))
        gradients = tape.gradient(loss, single.trainable_variables)
        single_optimizer.apply_gradients(zip(gradients, single.trainable_variables))

    def train_step(method, idx):
        if method is None:
            single.set_weights(model.get_weights())
            single_step(tf.constant(x[idx]), tf.constant(y[idx]))
            model.set_weights(single.get_weights())
            return
        shards = np.array_split(idx, REPLICAS)

        def shard(context):
            own = shards[context.replica_id_in_sync_group]
            return tf.constant(x[own]), tf.constant(y[own])

        x_shards, y_shards = strategy.experimental_distribute_values_from_function(shard)
        strategy.run(replica_step, args=(method, x_shards, y_shards, len(idx)))

    methods = _scores(_TF_METHODS, train_step, model.get_weights, model.set_weights)
    # How tf.distribute itself splits the same global batches: the demo's split is the same.
    batches = strategy.experimental_distribute_dataset(tf.data.Dataset.range(SAMPLES).batch(GLOBAL_BATCH))
    tf_data_shard_sizes = [[int(t.shape[0]) for t in strategy.experimental_local_results(b)] for b in batches]
    return {"replicas": strategy.num_replicas_in_sync, "shard_sizes": shard_sizes(),
            "tf_data_shard_sizes": tf_data_shard_sizes, "methods": methods}


def _torch_child(rank: int, world_size: int) -> dict | None:
    import datetime

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from companion import models

    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        x, y = (torch.from_numpy(a) for a in _data())
        model = models.torch_mlp(FEATURES, hidden=(HIDDEN,))
        # DDP broadcasts rank 0's weights at construction; it wraps the same parameters.
        replica = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

        def train_step(method, idx):
            own = np.array_split(idx, world_size)[rank] if method else idx
            network = replica if method else model  # the reference runs without DDP, everywhere
            per_example = ((network(x[own]) - y[own]) ** 2).mean(dim=1)
            if method == "global_count":  # DDP divides the summed gradient by world_size
                loss = per_example.sum() * world_size / len(idx)
            else:  # the usual per-rank mean (and the reference's mean over the global batch)
                loss = per_example.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def get_weights():
            return [p.detach().numpy().copy() for p in model.parameters()]

        def set_weights(weights):
            with torch.no_grad():
                for p, w in zip(model.parameters(), weights):
                    p.copy_(torch.from_numpy(w))

        methods = _scores(_TORCH_METHODS, train_step, get_weights, set_weights)
        dist.barrier()
        return {"replicas": world_size, "shard_sizes": shard_sizes(), "methods": methods} if rank == 0 else None
    finally:
        dist.destroy_process_group()


def _main(argv: list[str]) -> int:
    if argv[:1] == ["tf"]:
        result = _tf_child()
    elif argv[:1] == ["torch"] and len(argv) == 3:
        result = _torch_child(check.non_negative_int("rank", int(argv[1])), check.positive_int("world_size", int(argv[2])))
    else:
        raise SystemExit("usage: python -m companion.distributed tf | torch RANK WORLD_SIZE")
    if result is not None:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
