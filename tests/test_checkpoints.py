"""companion.checkpoints: exact resume, checksummed atomic writes, all-or-nothing loads that
never unpickle, and bounded work on hostile files."""

import collections
import copy
import enum
import hashlib
import io
import os
import pickle
import random
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import BAD_INPUT_SETTINGS, assert_rejected
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

import companion
from companion import checkpoints, models
from companion.data import load_diabetes

X, Y = load_diabetes()
BATCH = 32  # 442 = 13 * 32 + 26: the short last batch is part of every epoch
STEPS = 14  # optimizer steps per epoch
CHECKSUM_PREFIX = b"\ncompanion.checkpoints sha256="
CHECKSUM_LENGTH = len(CHECKSUM_PREFIX) + 64 + 1


@pytest.fixture(autouse=True)
def _seed():
    companion.seed_everything(0)  # also switches the frameworks' deterministic kernels on


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class Mode(enum.IntEnum):
    TRAIN = 1


class Name(str):
    pass


Point = collections.namedtuple("Point", "x y")


def half_then_crash(real_save):
    """A stand-in for a save that dies part-way: it writes half of the real bytes, then raises."""

    def save(obj_or_file, file_or_none=None, /, **arrays):
        buffer = io.BytesIO()
        if arrays:  # np.savez(file, **arrays)
            real_save(buffer, **arrays)
            file = obj_or_file
        else:  # torch.save(obj, file)
            real_save(obj_or_file, buffer)
            file = file_or_none
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        raise OSError("simulated crash in the middle of a save")

    return save


def with_checksum(path):
    """Give a hand-made file the checksum line the saving functions write. Anyone can: a
    checksum detects damage, not intent, so the loaders' other checks must hold on their own."""
    data = path.read_bytes()
    path.write_bytes(data + CHECKSUM_PREFIX + hashlib.sha256(data).hexdigest().encode() + b"\n")
    return path


def payload_members(path):
    """{member name: bytes} of a checkpoint's archive (everything before its checksum line)."""
    archive = zipfile.ZipFile(io.BytesIO(path.read_bytes()[:-CHECKSUM_LENGTH]))
    return {info.filename: archive.read(info) for info in archive.infolist()}


def write_archive(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return with_checksum(path)


def byte_in_every_region(path):
    """(region, offset) pairs: a byte inside each member's local header and data, the
    central directory, its end record, and the checksum line."""
    data = path.read_bytes()
    payload = data[:-CHECKSUM_LENGTH]
    archive = zipfile.ZipFile(io.BytesIO(payload))
    places = []
    for info in archive.infolist():
        start = info.header_offset
        name_length = int.from_bytes(payload[start + 26:start + 28], "little")
        extra_length = int.from_bytes(payload[start + 28:start + 30], "little")
        data_start = start + 30 + name_length + extra_length
        places.append((f"{info.filename}: local header", start + 14))  # its CRC-32
        places.append((f"{info.filename}: data", data_start + info.file_size // 2))
    end_record = payload.rindex(b"PK\x05\x06")
    places += [("central directory", archive.start_dir + 20), ("end record", end_record + 10),
               ("checksum line: text", len(payload) + 5),
               ("checksum line: digest", len(payload) + len(CHECKSUM_PREFIX) + 7),
               ("checksum line: newline", len(data) - 1)]
    return places


def assert_every_damage_refused(path, load):
    """A bit flipped in any region, or the file cut short anywhere: refused, naming the file."""
    good = path.read_bytes()
    damaged = [(f"bit flipped in {region}", good[:at] + bytes([good[at] ^ 0x04]) + good[at + 1:])
               for region, at in byte_in_every_region(path)]
    cuts = (0, 1, 30, len(good) // 2, len(good) - CHECKSUM_LENGTH, len(good) - 1)
    damaged += [(f"truncated to {n} bytes", good[:n]) for n in cuts]
    assert len(damaged) >= 20
    for how, data in damaged:
        path.write_bytes(data)
        with pytest.raises(ValueError, match="refused to load") as error:
            load(path)
        assert str(path) in str(error.value), how
    path.write_bytes(good)
    load(path)


def stale_temporaries(folder, target):
    """Temporaries of ``target`` as a killed save leaves them, and others that must stay."""
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()  # its pid now belongs to no process
    host = socket.gethostname()
    names = {"dead": f".{target}.tmp-{host}-{ended.pid}-0badcafe",
             "old": f".{target}.tmp-otherhost-1-0badcafe",
             "alive": f".{target}.tmp-{host}-{os.getpid()}-0badcafe",  # a save still running
             "elsewhere": f".{target}.tmp-otherhost-{ended.pid}-0badcafe",
             "other target": f".other{target}.tmp-{host}-{ended.pid}-0badcafe"}
    for name in names.values():
        (folder / name).write_bytes(b"half a checkpoint")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(folder / names["old"], (two_days_ago, two_days_ago))
    return names


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


# --- PyTorch ------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
from companion import torch_loop  # noqa: E402


def torch_run(seed=0, hidden=(16,), optimizer=None):
    torch.manual_seed(seed)
    model = models.torch_mlp(X.shape[1], hidden=hidden, dropout=0.2)
    return model, (optimizer or torch.optim.Adam)(model.parameters(), lr=0.01)


def torch_train(model, optimizer, epochs):
    return torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                            batch_size=BATCH, epochs=epochs)


def torch_equal(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_torch_resume_is_bit_identical_and_needs_every_part(tmp_path):
    straight, straight_opt = torch_run()
    torch_train(straight, straight_opt, epochs=2)

    first, first_opt = torch_run()
    torch_train(first, first_opt, epochs=1)
    path = checkpoints.save_training_state(tmp_path / "state.pt", model=first, optimizer=first_opt,
                                           epoch=1, step=14)
    torch.save(first.state_dict(), tmp_path / "weights.pt")

    results = {}
    for variant in ("full", "no rng", "weights only"):
        # A different seed: the fresh objects start elsewhere and the torch RNG is elsewhere too.
        model, optimizer = torch_run(seed=123)
        if variant == "weights only":
            model.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
            extra = None
        else:
            extra = checkpoints.load_training_state(path, model=model, optimizer=optimizer,
                                                    restore_rng=variant == "full")
        torch_train(model, optimizer, epochs=1)
        results[variant] = torch_equal(straight, model)
        if variant == "full":
            assert extra == {"epoch": 1, "step": 14}
            for p, q in zip(straight_opt.state_dict()["state"].values(), optimizer.state_dict()["state"].values()):
                assert all(torch.equal(p[k], q[k]) for k in p)
    # Bit-identical only with the optimizer *and* the RNG (the dropout masks) restored.
    assert results == {"full": True, "no rng": False, "weights only": False}


def test_torch_restores_python_numpy_and_torch_generators(tmp_path):
    model, optimizer = torch_run()
    checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], random.gauss(0, 1))
    # Normals come in pairs: after an odd number of them Python's state caches the second one,
    # and the load must clear that cache too.
    random.gauss(0, 1), random.gauss(0, 1)
    checkpoints.load_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], random.gauss(0, 1))
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_torch_file_is_plain_tensors_and_numbers(tmp_path):
    model, optimizer = torch_run()
    torch_train(model, optimizer, epochs=1)
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer, epoch=1,
                                           note="after warm-up", history=[0.9, 0.8])
    # The strict loader accepts every byte of it, and ignores the checksum line after it.
    state = torch.load(path, weights_only=True)
    assert set(state) == {"format", "model", "parameters", "optimizer_class", "optimizer",
                          "scheduler_class", "scheduler", "generators", "rng", "extra"}
    assert state["parameters"] == [["0.weight", "0.bias", "3.weight", "3.bias"]]
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert state["extra"] == {"epoch": 1, "note": "after warm-up", "history": [0.9, 0.8]}
    assert state["optimizer"]["state"][0]["step"] == 14
    assert state["optimizer_class"] == "torch.optim.adam.Adam"
    data = path.read_bytes()
    assert data[-CHECKSUM_LENGTH:] == (CHECKSUM_PREFIX + hashlib.sha256(data[:-CHECKSUM_LENGTH])
                                       .hexdigest().encode() + b"\n")


TORCH_EXTRA = {  # what save_training_state accepts, and what load returns for it
    "none": (None, None), "flag": (True, True), "epoch": (3, 3), "big": (2**70, 2**70),
    "lr": (0.5, 0.5), "note": ("ok", "ok"), "inf": (float("inf"), float("inf")),
    "best": (np.float64(0.25), 0.25), "count": (np.int64(7), 7), "done": (np.bool_(True), True),
    "half": (np.float32(0.1), float(np.float32(0.1))), "label": (np.str_("run"), "run"),
    "history": ([0.9, np.float64(0.8)], [0.9, 0.8]), "pair": ((1, "a"), (1, "a")),
    "ordered": (collections.OrderedDict(a=1), collections.OrderedDict(a=1)),
    "nested": ({"losses": [0.5, {"min": np.float64(0.5)}], 3: "int key"},
               {"losses": [0.5, {"min": 0.5}], 3: "int key"}),
}
TORCH_REFUSED = {
    "mode": Mode.TRAIN, "name": Name("x"), "point": Point(1, 2),
    "counts": collections.defaultdict(int), "deep": {"a": [collections.defaultdict(int)]},
    "array": np.zeros(2), "thing": object(), "keys": {1.5: 2}, "seen": {1, 2}, "z": 1j,
    "raw": b"\x00", "when": np.datetime64("2025-01-01"),
}


def assert_same(a, b):
    """Equal, of the same type, all the way down (tensors bit for bit)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same(u, v)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    else:
        assert a == b


def test_every_extra_value_save_accepts_loads_back(tmp_path):
    model, optimizer = torch_run()
    given_values = {name: value for name, (value, _) in TORCH_EXTRA.items()}
    given_values.update(tensor=torch.arange(3.0), weight=torch.nn.Parameter(torch.ones(2)))
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer,
                                           **given_values)
    extra = checkpoints.load_training_state(path, model=model, optimizer=optimizer)
    assert_same(extra.pop("tensor"), torch.arange(3.0))
    assert_same(extra.pop("weight"), torch.ones(2))  # a Parameter comes back a plain tensor
    assert_same(extra, {name: loaded for name, (_, loaded) in TORCH_EXTRA.items()})


@pytest.mark.parametrize("name", sorted(TORCH_REFUSED))
def test_an_extra_value_a_load_could_not_rebuild_is_refused_at_save(tmp_path, name):
    model, optimizer = torch_run()
    with pytest.raises(TypeError, match=f"extra value {name}=.*(pass|keys must)"):
        checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer,
                                        **{name: TORCH_REFUSED[name]})
    assert list(tmp_path.iterdir()) == []


def custom_train(model, optimizer, epochs, *, scheduler=None, loader=None, order_rng=None):
    """A plain PyTorch loop whose batches come from ``loader``, from a permutation drawn from
    ``order_rng`` every epoch, or in order; ``scheduler`` steps after every optimizer step."""
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(epochs):
        order = order_rng.permutation(len(X)) if order_rng is not None else np.arange(len(X))
        batches = loader or [(x[order[s:s + BATCH]], y[order[s:s + BATCH]])
                             for s in range(0, len(X), BATCH)]
        for xb, yb in batches:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(xb), yb).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()


def resumable_run(case, seed):
    """(model, optimizer, what the loop needs, what save and load need) for one resume case."""
    model, optimizer = torch_run(seed=seed)
    if case == "OneCycleLR":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05,
                                                        total_steps=4 * STEPS)
        return model, optimizer, {"scheduler": scheduler}, {"scheduler": scheduler}
    if case == "DataLoader(shuffle=True, generator=g)":
        generator = torch.Generator().manual_seed(seed)
        data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
        loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True,
                                             generator=generator)
        return model, optimizer, {"loader": loader}, {"generators": [generator]}
    order_rng = np.random.default_rng(seed)  # "numpy.random.Generator"
    return model, optimizer, {"order_rng": order_rng}, {"generators": {"order": order_rng}}


ONE_CYCLE_NEEDS = pytest.mark.needs_version(
    "torch", "2.4", reason="OneCycleLR's state holds a function before PyTorch 2.4 "
    "(pytorch/pytorch#123775), which save_training_state refuses")


@pytest.mark.parametrize("case", [pytest.param("OneCycleLR", marks=ONE_CYCLE_NEEDS),
                                  "DataLoader(shuffle=True, generator=g)", "numpy.random.Generator"])
def test_torch_resume_with_a_scheduler_or_generators_is_bit_identical(tmp_path, case):
    straight, straight_opt, loop, _ = resumable_run(case, seed=0)
    custom_train(straight, straight_opt, 4, **loop)

    first, first_opt, loop, parts = resumable_run(case, seed=0)
    custom_train(first, first_opt, 2, **loop)
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=first, optimizer=first_opt,
                                           epoch=2, **parts)
    # Fresh objects from another seed: weights, generators and schedule all start elsewhere.
    resumed, resumed_opt, loop, parts = resumable_run(case, seed=123)
    checkpoints.load_training_state(path, model=resumed, optimizer=resumed_opt, **parts)
    custom_train(resumed, resumed_opt, 2, **loop)
    assert torch_equal(straight, resumed)


@ONE_CYCLE_NEEDS
def test_a_scheduler_or_generator_missing_on_either_side_is_refused(tmp_path):
    model, optimizer, _, parts = resumable_run("OneCycleLR", seed=0)
    with pytest.raises(ValueError, match="pass it as scheduler="):
        checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer)
    with_scheduler = checkpoints.save_training_state(tmp_path / "s.pt", model=model,
                                                     optimizer=optimizer, **parts)
    plain_model, plain_opt = torch_run()
    plain = checkpoints.save_training_state(tmp_path / "plain.pt", model=plain_model,
                                            optimizer=plain_opt, generators=[torch.Generator()])
    fresh, fresh_opt = torch_run(seed=1)
    step_lr = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=3)
    cases = [(with_scheduler, {}, "holds a learning-rate scheduler's state"),
             (with_scheduler, {"scheduler": step_lr}, r"OneCycleLR, but scheduler is a .*StepLR"),
             (plain, {"scheduler": step_lr, "generators": [torch.Generator()]},
              "holds no scheduler state"),
             (plain, {}, r"generators \['0'\], but generators= has \[\]"),
             (plain, {"generators": [np.random.default_rng(0)]}, "is a numpy generator")]
    for path, parts, message in cases:
        with pytest.raises(ValueError, match=message):
            checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt, **parts)


def torch_snapshot(model, optimizer):
    return (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
            torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


def assert_torch_unchanged(before, after):
    (weights, opt, rng, np_rng, py_rng), (weights2, opt2, rng2, np_rng2, py_rng2) = before, after
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)
    assert opt["param_groups"] == opt2["param_groups"]
    assert opt["state"].keys() == opt2["state"].keys()
    for index, state in opt["state"].items():
        # older PyTorch (2.2 does) keeps a None momentum_buffer when SGD has no momentum
        assert all(torch.equal(value, opt2["state"][index][key]) if value is not None
                   else opt2["state"][index][key] is None for key, value in state.items())
    assert torch.equal(rng, rng2) and np.array_equal(np_rng, np_rng2) and py_rng == py_rng2


def two_groups(parameters, lr):
    weights, biases = [], []
    for parameter in parameters:
        (weights if parameter.dim() > 1 else biases).append(parameter)
    return torch.optim.Adam([{"params": weights}, {"params": biases}], lr=lr)


@pytest.mark.parametrize("target, message", [
    ("two parameter groups", "optimizer has 2 parameter groups but the checkpoint's has 1"),
    ("AdamW", r"torch\.optim\.adam\.Adam, but optimizer is a torch\.optim\.adamw\.AdamW"),
    ("SGD", r"torch\.optim\.adam\.Adam, but optimizer is a torch\.optim\.sgd\.SGD"),
    ("wider model", r"model's 0\.weight has shape \(32, 10\)"),
    ("damaged file", "SHA-256"),
])
def test_a_refused_torch_load_changes_nothing(tmp_path, target, message):
    saved, saved_opt = torch_run()
    torch_train(saved, saved_opt, epochs=1)
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=saved, optimizer=saved_opt)
    kind = {"two parameter groups": two_groups, "AdamW": torch.optim.AdamW,
            "SGD": torch.optim.SGD}.get(target, torch.optim.Adam)
    model, optimizer = torch_run(seed=5, hidden=(32,) if target == "wider model" else (16,),
                                 optimizer=kind)
    torch_train(model, optimizer, epochs=1)  # state of its own, for the load to overwrite
    if target == "damaged file":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    torch.rand(1), np.random.rand(), random.random()  # every generator elsewhere than saved
    before = torch_snapshot(model, optimizer)
    with pytest.raises(ValueError, match=message):
        checkpoints.load_training_state(path, model=model, optimizer=optimizer)
    assert_torch_unchanged(before, torch_snapshot(model, optimizer))


def test_a_damaged_or_truncated_torch_file_is_refused_naming_it(tmp_path):
    model, optimizer = torch_run()
    torch_train(model, optimizer, epochs=1)
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer,
                                           epoch=1)
    # The case that used to load silently: a bit flipped inside a tensor's bytes.
    weight = model.state_dict()["0.weight"].numpy().tobytes()
    data = path.read_bytes()
    at = data.index(weight) + 5
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:])
    with pytest.raises(ValueError, match="do not match the SHA-256"):
        checkpoints.load_training_state(path, model=model, optimizer=optimizer)
    path.write_bytes(data)
    assert_every_damage_refused(path, lambda p: checkpoints.load_training_state(
        p, model=model, optimizer=optimizer))


def test_a_malicious_pickle_is_refused_not_executed(tmp_path):
    model, optimizer = torch_run()
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "companion.checkpoints/torch/3", "model": Payload(marker)}, evil)
    with pytest.raises(ValueError, match="not a training state"):  # no checksum line
        checkpoints.load_training_state(evil, model=model, optimizer=optimizer)

    with_checksum(evil)  # with a valid checksum the weights-only unpickler still refuses it
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        checkpoints.load_training_state(evil, model=model, optimizer=optimizer)
    assert not marker.exists()

    # The payload is live: a full unpickle of the same file runs it.
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


@pytest.mark.skipif(Version(torch.__version__).release < (2, 6),
                    reason="torch.load defaulted to weights_only=False before PyTorch 2.6")
def test_torch_load_refuses_a_pickle_by_default(tmp_path, monkeypatch):
    """The book states that torch.load defaults to weights_only=True since PyTorch 2.6."""
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    marker = tmp_path / "code-ran"
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match=r"In PyTorch 2\.6, we changed the default"):
        torch.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_crash_during_a_torch_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = torch_run()
    path = checkpoints.save_training_state(tmp_path / "last.pt", model=model, optimizer=optimizer, epoch=0)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    torch_train(model, optimizer, epochs=1)

    crashing = half_then_crash(torch.save)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", crashing)
        with pytest.raises(OSError, match="simulated crash"):
            checkpoints.save_training_state(path, model=model, optimizer=optimizer, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind

    # A crash while the temporary file is being written: it is removed too.
    def failing_fsync(handle):
        raise OSError("simulated full disk")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="simulated full disk"):
            checkpoints.save_training_state(path, model=model, optimizer=optimizer, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]

    fresh, fresh_opt = torch_run(seed=5)
    assert checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt) == {"epoch": 0}
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())

    # The same crash writing straight to the target destroys the only copy.
    with open(path, "wb") as file, pytest.raises(OSError):
        crashing({"model": model.state_dict()}, file)
    with pytest.raises(ValueError, match="truncated or damaged"):
        checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt)


def test_stale_temporaries_go_and_files_get_open_s_permissions(tmp_path):
    model, optimizer = torch_run()
    names = stale_temporaries(tmp_path, "last.pt")
    path = checkpoints.save_training_state(tmp_path / "last.pt", model=model, optimizer=optimizer)
    kept = {names["alive"], names["elsewhere"], names["other target"]}
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt"} | kept

    (tmp_path / names["dead"]).write_bytes(b"half a checkpoint")  # a load clears them as well
    checkpoints.load_training_state(path, model=model, optimizer=optimizer)
    assert not (tmp_path / names["dead"]).exists()

    previous = os.umask(0o027)
    try:
        for umask in (0o027, 0o002):
            os.umask(umask)
            with open(tmp_path / f"by-open-{umask:o}", "wb"):
                pass
            saved = checkpoints.save_training_state(tmp_path / f"by-save-{umask:o}.pt",
                                                    model=model, optimizer=optimizer)
            assert mode_of(saved) == mode_of(tmp_path / f"by-open-{umask:o}") == 0o666 & ~umask
    finally:
        os.umask(previous)


def test_torch_bad_input(tmp_path):
    model, optimizer = torch_run()
    other, other_opt = torch_run()
    good = checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(TypeError, match="path must be a str"):
        checkpoints.save_training_state(3, model=model, optimizer=optimizer)
    with pytest.raises(FileNotFoundError, match="existing folder"):
        checkpoints.save_training_state(tmp_path / "nope" / "s.pt", model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="must name a file"):
        checkpoints.save_training_state(tmp_path, model=model, optimizer=optimizer)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        checkpoints.save_training_state(good, model="net", optimizer=optimizer)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        checkpoints.save_training_state(good, model=model, optimizer=None)
    with pytest.raises(ValueError, match="belong to another model"):
        checkpoints.save_training_state(good, model=model, optimizer=other_opt)
    with pytest.raises(TypeError, match="extra value note="):
        checkpoints.save_training_state(good, model=model, optimizer=optimizer, note=object())
    with pytest.raises(TypeError, match="scheduler must be a torch.optim.lr_scheduler.LRScheduler"):
        checkpoints.save_training_state(good, model=model, optimizer=optimizer, scheduler="cosine")
    other_scheduler = torch.optim.lr_scheduler.StepLR(other_opt, step_size=2)
    with pytest.raises(ValueError, match="scheduler must drive optimizer"):
        checkpoints.load_training_state(good, model=model, optimizer=optimizer,
                                        scheduler=other_scheduler)
    with pytest.raises(TypeError, match="generators must be a list or dict"):
        checkpoints.save_training_state(good, model=model, optimizer=optimizer,
                                        generators=torch.Generator())
    with pytest.raises(TypeError, match=r"generators\['1'\] must be a torch.Generator"):
        checkpoints.save_training_state(good, model=model, optimizer=optimizer,
                                        generators=[torch.Generator(), 7])
    with pytest.raises(TypeError, match="restore_rng must be True or False"):
        checkpoints.load_training_state(good, model=model, optimizer=optimizer, restore_rng="yes")
    with pytest.raises(FileNotFoundError, match="path must be an existing file"):
        checkpoints.load_training_state(tmp_path / "missing.pt", model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="not a training state"):
        checkpoints.load_training_state(tmp_path / "weights.pt", model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="not a training state"):
        checkpoints.load_training_state(with_checksum(tmp_path / "weights.pt"), model=model,
                                        optimizer=optimizer)


# --- crafted files: every check before any write (issue 24) -----------------------------------------
#
# Each file below was written by save_training_state, then changed and given a fresh checksum line
# (anyone can compute one). The load must refuse it with a ValueError naming the file and what is
# wrong, and leave the model, the optimizer, the scheduler and every generator as they were.


def rewritten(path, change):
    """``path`` unpickled (weights only), changed by ``change(state)``, saved with its checksum."""
    state = torch.load(io.BytesIO(path.read_bytes()[:-CHECKSUM_LENGTH]), weights_only=True)
    change(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    return with_checksum(path)


def first_state(state):
    return state["optimizer"]["state"][0]


def group(state, index=0):
    return state["optimizer"]["param_groups"][index]


def swap_groups(state):
    groups = state["optimizer"]["param_groups"]
    groups[0], groups[1] = groups[1], groups[0]


CRAFTED = {  # what is changed: (the change, what the refusal says)
    "optimizer state a list": (
        lambda s: s["optimizer"].update(state=list(s["optimizer"]["state"].values())),
        "per-parameter state is a list, not a dict"),
    "optimizer state missing": (lambda s: s["optimizer"].pop("state"),
                                r"its optimizer state lacks \['state'\]"),
    "rng missing": (lambda s: s.pop("rng"), r"the file lacks \['rng'\]"),
    "exp_avg missing": (lambda s: first_state(s).pop("exp_avg"),
                        r"state for 0\.weight lacks \['exp_avg'\], which a step of Adam keeps"),
    "exp_avg of the wrong shape": (lambda s: first_state(s).update(exp_avg=torch.zeros(3)),
                                   r"'exp_avg' of shape \(3,\), but Adam keeps shape \(16, 10\)"),
    "exp_avg of integers": (lambda s: first_state(s).update(exp_avg=first_state(s)["exp_avg"].long()),
                            "'exp_avg' of dtype torch.int64, but Adam keeps torch.float32"),
    "lr='fast'": (lambda s: group(s).update(lr="fast"),
                  r"group 0 has lr='fast', but Adam's lr is a number"),
    "lr=-1": (lambda s: group(s).update(lr=-1.0), "Adam refuses .*Invalid learning rate"),
    "betas missing": (lambda s: group(s).pop("betas"), r"group 0 lacks \['betas'\]"),
    "betas of three": (lambda s: group(s).update(betas=(0.9, 0.99, 0.9)), "betas=.*is a sequence"),
    "amsgrad without its state": (lambda s: group(s).update(amsgrad=True),
                                  r"lacks \['max_exp_avg_sq'\]"),
    "step=-5": (lambda s: [v.update(step=torch.tensor(-5.0)) for v in s["optimizer"]["state"].values()],
                r"step=tensor\(-5\.\), not a whole number >= 0"),
    "step=1.5": (lambda s: first_state(s).update(step=torch.tensor(1.5)), "not a whole number"),
    "state of no parameter": (lambda s: s["optimizer"]["state"].update({9: {"step": torch.tensor(1.0)}}),
                              r"parameters numbered \[9\], which no parameter group holds"),
    "parameters renumbered": (lambda s: group(s).update(params=[3, 2, 1, 0]),
                              r"numbers its parameters \[3, 2, 1, 0\]"),
    "parameter names reordered": (lambda s: s.update(parameters=[s["parameters"][0][::-1]]),
                                  r"group 0 holds \['0\.weight'.*but the checkpoint's held \['3\.bias'"),
    "model weight a string": (lambda s: s["model"].update({"0.weight": "w"}), "model's 0.weight has shape"),
    "extra a list": (lambda s: s.update(extra=[1]), "its extra values is a list, not a dict"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_torch_file_is_refused_whole_before_any_write(tmp_path, case):
    change, message = CRAFTED[case]
    saved, saved_opt = torch_run()
    torch_train(saved, saved_opt, epochs=1)
    path = rewritten(checkpoints.save_training_state(tmp_path / "s.pt", model=saved,
                                                     optimizer=saved_opt), change)
    model, optimizer = torch_run(seed=5)
    torch_train(model, optimizer, epochs=1)  # state of its own, for a load to overwrite
    torch.rand(1), np.random.rand(), random.random()
    before = torch_snapshot(model, optimizer)
    with pytest.raises(ValueError, match=message) as refusal:
        checkpoints.load_training_state(path, model=model, optimizer=optimizer)
    assert str(refusal.value).startswith(f"refused to load {str(path)!r}: ")
    assert_torch_unchanged(before, torch_snapshot(model, optimizer))


def step_lr_run(seed):
    model, optimizer = torch_run(seed=seed)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)


SCHEDULER_CRAFTED = {
    "scheduler state a list": (lambda s: s.update(scheduler=[1, 2]),
                               "its scheduler state is a list, not the dict"),
    "a value of another type": (lambda s: s["scheduler"].update(step_size="x"),
                                "step_size='x', but StepLR's step_size is a number"),
    "an optimizer key": (lambda s: s["scheduler"].update(optimizer=None),
                         r"has unexpected \['optimizer'\]"),  # __dict__.update would replace it
    "a key missing": (lambda s: s["scheduler"].pop("gamma"), r"lacks \['gamma'\]"),
    "last_epoch=-3": (lambda s: s["scheduler"].update(last_epoch=-3), "last_epoch=-3, not a whole"),
}


@pytest.mark.parametrize("case", sorted(SCHEDULER_CRAFTED))
def test_a_crafted_scheduler_state_is_refused_before_any_write(tmp_path, case):
    change, message = SCHEDULER_CRAFTED[case]
    saved, saved_opt, saved_scheduler = step_lr_run(seed=0)
    custom_train(saved, saved_opt, 1, scheduler=saved_scheduler)
    path = rewritten(checkpoints.save_training_state(tmp_path / "s.pt", model=saved, optimizer=saved_opt,
                                                     scheduler=saved_scheduler), change)
    model, optimizer, scheduler = step_lr_run(seed=5)
    custom_train(model, optimizer, 1, scheduler=scheduler)
    before, schedule = torch_snapshot(model, optimizer), copy.deepcopy(scheduler.state_dict())
    with pytest.raises(ValueError, match=message) as refusal:
        checkpoints.load_training_state(path, model=model, optimizer=optimizer, scheduler=scheduler)
    assert str(refusal.value).startswith(f"refused to load {str(path)!r}: ")
    assert_torch_unchanged(before, torch_snapshot(model, optimizer))
    assert scheduler.state_dict() == schedule and scheduler.optimizer is optimizer


def test_a_file_with_two_members_of_one_name_is_refused(tmp_path):
    # torch.load reads the first data.pkl of the archive, zipfile the last: which one counts
    # depends on the reader, so neither does.
    model, optimizer = torch_run()
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer)
    members = payload_members(path)
    pickled = next(name for name in members if name.endswith("data.pkl"))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(pickled, members[pickled])
    with_checksum(path)
    with pytest.raises(ValueError, match=r"holds the members \['archive/data\.pkl'\] more than once"):
        checkpoints.load_training_state(path, model=model, optimizer=optimizer)


def test_parameter_groups_of_the_same_sizes_in_another_order_are_refused(tmp_path):
    # Two groups of two parameters of the same shapes: the sizes agree, only the names tell.
    def run(order):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))
        groups = [{"params": list(model[0].parameters()), "lr": 0.01},
                  {"params": list(model[2].parameters()), "lr": 0.001}]
        return model, torch.optim.Adam(groups if order == "saved" else groups[::-1])

    x = torch.randn(16, 4)
    saved, saved_opt = run("saved")
    for _ in range(3):
        saved_opt.zero_grad()
        saved(x).square().mean().backward()
        saved_opt.step()
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=saved, optimizer=saved_opt)
    model, optimizer = run("swapped")
    before = torch_snapshot(model, optimizer)
    with pytest.raises(ValueError, match=r"group 0 holds \['2\.weight', '2\.bias'\], but the "
                                         r"checkpoint's held \['0\.weight', '0\.bias'\]"):
        checkpoints.load_training_state(path, model=model, optimizer=optimizer)
    assert_torch_unchanged(before, torch_snapshot(model, optimizer))
    # Loaded as torch does it, by position, each layer gets the other layer's Adam state.
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(saved_opt.state_dict())
    assert not torch.equal(optimizer.state[model[0].weight]["exp_avg"],
                           saved_opt.state[saved[0].weight]["exp_avg"])


OPTIMIZERS = {
    "Adam": lambda p: torch.optim.Adam(p, lr=0.01), "Adam(amsgrad)": lambda p: torch.optim.Adam(p, amsgrad=True),
    "AdamW": torch.optim.AdamW, "SGD": lambda p: torch.optim.SGD(p, lr=0.1),
    "SGD(momentum, nesterov)": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "RMSprop(centered)": lambda p: torch.optim.RMSprop(p, momentum=0.5, centered=True),
    "Adagrad": torch.optim.Adagrad, "NAdam": torch.optim.NAdam, "RAdam": torch.optim.RAdam,
    "Adamax": torch.optim.Adamax, "Adadelta": torch.optim.Adadelta, "ASGD": torch.optim.ASGD,
    "Rprop": torch.optim.Rprop, "Adafactor": getattr(torch.optim, "Adafactor", torch.optim.Adam),
    "LBFGS": lambda p: torch.optim.LBFGS(p, history_size=3, max_iter=4),
    "Adam(foreach, tensor lr)": lambda p: torch.optim.Adam(p, lr=torch.tensor(0.01), foreach=False),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_state_of_every_torch_optimizer_loads_and_resumes_exactly(tmp_path, name):
    # The checks refuse no file a save wrote: each optimizer of torch.optim, after 3 steps.
    x, y = torch.from_numpy(X[:64]), torch.from_numpy(Y[:64])

    def run():
        torch.manual_seed(0)
        model = models.torch_mlp(X.shape[1], hidden=(8,))
        return model, OPTIMIZERS[name](model.parameters())

    def steps(model, optimizer, n):
        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss
        for _ in range(n):
            optimizer.step(closure)

    straight, straight_opt = run()
    steps(straight, straight_opt, 5)
    first, first_opt = run()
    steps(first, first_opt, 3)
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=first, optimizer=first_opt)
    resumed, resumed_opt = run()
    checkpoints.load_training_state(path, model=resumed, optimizer=resumed_opt)
    steps(resumed, resumed_opt, 2)
    assert torch_equal(straight, resumed)


SCHEDULERS = {
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=1, factor=0.1),
    "SequentialLR": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.LinearLR(o, 0.1), torch.optim.lr_scheduler.ExponentialLR(o, 0.9)],
        milestones=[2]),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda epoch: 0.9**epoch),
    "CosineAnnealingWarmRestarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 3),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=2),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=ONE_CYCLE_NEEDS)
                                  if name == "OneCycleLR" else name for name in sorted(SCHEDULERS)])
def test_every_torch_scheduler_resumes_exactly(tmp_path, name):
    # ReduceLROnPlateau included: its patience counter and best value are its state_dict.
    x, y = torch.from_numpy(X[:64]), torch.from_numpy(Y[:64])

    def run():
        torch.manual_seed(0)
        model = models.torch_mlp(X.shape[1], hidden=(8,))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, optimizer, SCHEDULERS[name](optimizer)

    def epochs(model, optimizer, scheduler, n):
        for _ in range(n):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            # A plateau from the first epoch on: ReduceLROnPlateau reduces every other epoch.
            scheduler.step(1.0) if name == "ReduceLROnPlateau" else scheduler.step()

    straight = run()
    epochs(*straight, 8)
    first = run()
    epochs(*first, 4)
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=first[0], optimizer=first[1],
                                           scheduler=first[2])
    resumed = run()
    checkpoints.load_training_state(path, model=resumed[0], optimizer=resumed[1], scheduler=resumed[2])
    epochs(*resumed, 4)
    assert torch_equal(straight[0], resumed[0])
    assert resumed[1].param_groups[0]["lr"] == straight[1].param_groups[0]["lr"]


@pytest.fixture(scope="module")
def torch_model_and_optimizer():
    return torch_run()


@BAD_INPUT_SETTINGS
@given(path=st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=2), max_size=2)))
def test_checkpoint_functions_reject_bad_paths(torch_model_and_optimizer, path):
    model, optimizer = torch_model_and_optimizer
    assert_rejected(lambda: checkpoints.save_training_state(path, model=model, optimizer=optimizer), "path")
    assert_rejected(lambda: checkpoints.load_training_state(path, model=model, optimizer=optimizer), "path")


# --- Keras 3 ------------------------------------------------------------------------------------

keras = pytest.importorskip("keras")


def keras_run(optimizer=None, dropout=0.2, hidden=(16,)):
    model = models.keras_mlp(X.shape[1], hidden=hidden, dropout=dropout, seed=0)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01), loss="mse")
    return model


def keras_fit(model, epochs, initial_epoch=0, shuffle=False, x=X, y=Y):
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch,
                     shuffle=shuffle, verbose=0).history["loss"]


def keras_equal(a, b) -> bool:
    return all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a.variables, b.variables))


def keras_difference(a, b) -> float:
    return max(float(np.max(np.abs(u.numpy() - v.numpy())))
               for u, v in zip(a.variables, b.variables))


def seed_states(model):
    return [v for v in model.variables if "seed_generator" in v.path]


def keras_save(path, model, **kwargs):
    return checkpoints.save_keras_training_state(path, model=model, optimizer=model.optimizer,
                                                 **kwargs)


def keras_load(path, model, **kwargs):
    return checkpoints.load_keras_training_state(path, model=model, optimizer=model.optimizer,
                                                 **kwargs)


def test_keras_resume_is_bit_identical_with_the_seed_state(tmp_path):
    straight = keras_run()
    straight_loss = keras_fit(straight, epochs=2)
    first = keras_run()
    keras_fit(first, epochs=1)
    path = keras_save(tmp_path / "state.npz", first, epoch=1)

    resumed = keras_run()
    extra = keras_load(path, resumed)
    assert extra == {"epoch": 1}
    assert int(resumed.optimizer.iterations.numpy()) == 14
    resumed_loss = keras_fit(resumed, epochs=1)
    assert resumed_loss[0] == straight_loss[1]
    assert keras_equal(straight, resumed)
    assert all(np.array_equal(u.numpy(), v.numpy())
               for u, v in zip(straight.optimizer.variables, resumed.optimizer.variables))

    # Without the dropout seed state (what .keras and .weights.h5 files restore) it diverges.
    partial = keras_run()
    keras_load(path, partial)
    [seed_state] = seed_states(partial)
    seed_state.assign(np.zeros_like(seed_state.numpy()))
    keras_fit(partial, epochs=1)
    assert not keras_equal(straight, partial)


def test_keras_learning_rate_schedule_resumes_exactly(tmp_path):
    def scheduled():  # the schedule reads the optimizer's step, which the file holds
        schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=4 * STEPS)
        return keras_run(keras.optimizers.Adam(schedule))

    straight = scheduled()
    keras_fit(straight, epochs=4)
    first = scheduled()
    keras_fit(first, epochs=2)
    path = keras_save(tmp_path / "s.npz", first)
    resumed = scheduled()
    keras_load(path, resumed)
    keras_fit(resumed, epochs=4, initial_epoch=2)
    assert keras_equal(straight, resumed)
    assert float(resumed.optimizer.learning_rate) == float(straight.optimizer.learning_rate)


def test_keras_fit_shuffling_resumes_only_under_the_same_seed(tmp_path):
    """fit(shuffle=True) draws its order from TensorFlow's global seed, which no file holds."""
    straight = keras_run()  # keras_mlp(seed=0) sets the global seed to 0
    keras_fit(straight, epochs=4, shuffle=True)
    first = keras_run()
    keras_fit(first, epochs=2, shuffle=True)
    path = keras_save(tmp_path / "s.npz", first)
    differences = {}
    for seed in (0, 1):
        resumed = keras_run()
        keras_load(path, resumed)
        keras.utils.set_random_seed(seed)  # what a restarted script sets before fit
        keras_fit(resumed, epochs=4, initial_epoch=2, shuffle=True)
        differences[seed] = keras_difference(straight, resumed)
    assert differences[0] == 0.0 and differences[1] > 1e-3

    # Under a global seed fit draws one permutation and uses it in every epoch (Keras 3.15,
    # TensorFlow 2.21): with the weights frozen, both epochs log the same batch losses.
    frozen = keras_run(keras.optimizers.SGD(0.0), dropout=0.0)

    def batch_losses(epochs, shuffle):
        logged = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: logged.append(logs["loss"]))
        frozen.fit(X, Y, batch_size=BATCH, epochs=epochs, shuffle=shuffle, verbose=0,
                   callbacks=[record])
        return logged

    shuffled, in_order = batch_losses(epochs=2, shuffle=True), batch_losses(1, shuffle=False)
    assert shuffled[:STEPS] == shuffled[STEPS:] and shuffled[:STEPS] != in_order


def test_keras_resume_exact_under_any_seed_when_you_shuffle_from_a_saved_generator(tmp_path):
    def shuffled_fit(model, rng, epochs, initial_epoch=0):
        for epoch in range(initial_epoch, epochs):
            order = rng.permutation(len(X))
            keras_fit(model, epochs=epoch + 1, initial_epoch=epoch, x=X[order], y=Y[order])

    straight = keras_run()
    shuffled_fit(straight, np.random.default_rng(7), epochs=4)
    first, first_rng = keras_run(), np.random.default_rng(7)
    shuffled_fit(first, first_rng, epochs=2)
    path = keras_save(tmp_path / "s.npz", first, generators={"order": first_rng}, epoch=2)
    resumed, resumed_rng = keras_run(), np.random.default_rng(123)
    assert keras_load(path, resumed, generators={"order": resumed_rng}) == {"epoch": 2}
    keras.utils.set_random_seed(1)  # another global seed: it does not matter here
    shuffled_fit(resumed, resumed_rng, epochs=4, initial_epoch=2)
    assert keras_equal(straight, resumed)


KERAS_EXTRA = {  # what save_keras_training_state accepts, and what load returns for it
    "epoch": (2, 2), "lr": (0.5, 0.5), "best": (True, True), "note": ("ok", "ok"), "z": (1j, 1j),
    "best_loss": (np.float64(0.25), 0.25), "count": (np.int32(3), 3),
    "done": (np.bool_(False), False),
    "label": (np.str_("run"), "run"),
}
KERAS_REFUSED = {"mode": Mode.TRAIN, "name": Name("x"), "history": [1, 2], "big": 2**70,
                 "when": np.datetime64("2025-01-01"), "thing": object()}


def test_every_keras_extra_value_save_accepts_loads_back(tmp_path):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    arrays = {"losses": np.array([0.9, 0.8]), "names": np.array(["a", "bc"]),
              "empty": np.zeros((0, 3), dtype=np.float32), "grid": np.arange(6).reshape(2, 3).T}
    path = keras_save(tmp_path / "s.npz", model, **arrays,
                      **{name: value for name, (value, _) in KERAS_EXTRA.items()})
    extra = keras_load(path, model)
    for name, array in arrays.items():
        loaded = extra.pop(name)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
    assert extra == {name: loaded for name, (_, loaded) in KERAS_EXTRA.items()}
    assert all(type(extra[name]) is type(loaded) for name, (_, loaded) in KERAS_EXTRA.items())
    assert np.load(path)["extra.note"] == "ok"  # np.load ignores the checksum line


@pytest.mark.parametrize("name", sorted(KERAS_REFUSED))
def test_a_keras_extra_value_an_npz_cannot_hold_is_refused_at_save(tmp_path, name):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(TypeError, match=f"extra value {name}="):
        keras_save(tmp_path / "s.npz", model, **{name: KERAS_REFUSED[name]})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def keras_state_file(tmp_path_factory):
    """The training state of a Keras model after one epoch (trained once for all the tests)."""
    companion.seed_everything(0)
    saved = keras_run()
    keras_fit(saved, epochs=1)
    return keras_save(tmp_path_factory.mktemp("keras") / "one-epoch.npz", saved)


def keras_snapshot(model):
    return [v.numpy().copy() for v in model.variables + model.optimizer.variables]


@pytest.mark.parametrize("target, message", [
    ("Adamax", r"adam\.Adam, but optimizer is a keras\.src\.optimizers\.adamax\.Adamax"),
    ("AdamW", r"adam\.Adam, but optimizer is a keras\.src\.optimizers\.adamw\.AdamW"),
    ("SGD", r"adam\.Adam, but optimizer is a keras\.src\.optimizers\.sgd\.SGD"),
    ("wider model", r"has shape \(10, 32\)"),
    ("damaged file", "SHA-256"),
])
def test_a_refused_keras_load_changes_nothing(tmp_path, keras_state_file, target, message):
    path = tmp_path / "s.npz"
    path.write_bytes(keras_state_file.read_bytes())
    optimizer = getattr(keras.optimizers, target, keras.optimizers.Adam)(0.01)
    model = keras_run(optimizer, hidden=(32,) if target == "wider model" else (16,))
    model.optimizer.build(model.trainable_variables)
    for variable in model.variables + model.optimizer.variables:  # state of its own
        variable.assign(np.full(variable.shape, 3, dtype=variable.dtype))
    if target == "damaged file":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    before = keras_snapshot(model)
    with pytest.raises(ValueError, match=message):
        keras_load(path, model)
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_snapshot(model)))


def test_a_damaged_or_truncated_keras_file_is_refused_naming_it(tmp_path):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    path = keras_save(tmp_path / "s.npz", model, epoch=1)
    assert_every_damage_refused(path, lambda p: keras_load(p, model))


def test_a_crafted_npz_is_refused_before_its_declared_sizes_are_allocated(tmp_path):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    members = payload_members(keras_save(tmp_path / "s.npz", model))
    header = io.BytesIO()  # an .npy header declaring 10**9 float32 values (4 GB), 16 stored
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**9,)})
    huge = write_archive(tmp_path / "huge.npz",
                         {**members, "model.0.npy": header.getvalue() + bytes(16)})
    # A member compressed 1000 to 1: few bytes in the file, 8 MB once inflated.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (8 * 2**20,)})
    bomb = write_archive(tmp_path / "bomb.npz",
                         {**members, "extra.big.npy": header.getvalue() + bytes(8 * 2**20)},
                         compression=zipfile.ZIP_DEFLATED)
    assert huge.stat().st_size < 20_000 and bomb.stat().st_size < 30_000
    for path, message in ((huge, r"declares shape \(1000000000,\)"), (bomb, "compressed")):
        tracemalloc.start()
        started = time.perf_counter()
        with pytest.raises(ValueError, match=message):
            keras_load(path, model)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 * 2**20 and seconds < 1.0, (path.name, peak, seconds)


def test_a_pickled_npz_is_refused_not_executed(tmp_path):
    model = keras_run()
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.array("companion.checkpoints/keras/3"),
             **{"extra.payload": np.array([Payload(marker)], dtype=object)})
    with pytest.raises(ValueError, match="refused to load"):
        keras_load(evil, model)
    with_checksum(evil)
    with pytest.raises(ValueError, match="pickled objects"):
        keras_load(evil, model)
    assert not marker.exists()
    np.load(evil, allow_pickle=True)["extra.payload"]  # the payload is live when pickle is allowed
    assert marker.is_dir()


def test_a_crash_during_a_keras_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    path = keras_save(tmp_path / "last.npz", model, epoch=0)
    saved = [v.numpy().copy() for v in model.variables]
    for variable in model.trainable_variables:
        variable.assign(variable.numpy() + 1.0)

    monkeypatch.setattr(np, "savez", half_then_crash(np.savez))
    with pytest.raises(OSError, match="simulated crash"):
        keras_save(path, model, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]
    assert keras_load(path, model) == {"epoch": 0}
    assert all(np.array_equal(s, v.numpy()) for s, v in zip(saved, model.variables))


def test_keras_bad_input(tmp_path):
    model = keras_run()
    with pytest.raises(ValueError, match="optimizer must have been built"):
        keras_save(tmp_path / "s.npz", model)
    model.optimizer.build(model.trainable_variables)
    good = keras_save(tmp_path / "s.npz", model)
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        checkpoints.save_keras_training_state(good, model=None, optimizer=model.optimizer)
    with pytest.raises(TypeError, match=r"optimizer must be a keras\.Optimizer"):
        checkpoints.load_keras_training_state(good, model=model, optimizer="adam")
    with pytest.raises(TypeError, match="extra value history="):
        keras_save(good, model, history=[1, 2])
    with pytest.raises(TypeError, match=r"generators\['0'\] must be a numpy\.random\.Generator"):
        keras_save(good, model, generators=[torch.Generator()])
    with pytest.raises(ValueError, match=r"generators \[\], but generators= has \['0'\]"):
        keras_load(good, model, generators=[np.random.default_rng(0)])
    with pytest.raises(TypeError, match="path must be a str"):
        checkpoints.load_keras_training_state(None, model=model, optimizer=model.optimizer)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a training state"):
        keras_load(tmp_path / "plain.npy", model)

    wider = models.keras_mlp(X.shape[1], hidden=(32,), dropout=0.2, seed=0)
    wider_opt = keras.optimizers.Adam(0.01)
    before = [v.numpy().copy() for v in wider.variables]
    with pytest.raises(ValueError, match=r"has shape \(10, 32\)"):
        checkpoints.load_keras_training_state(good, model=wider, optimizer=wider_opt)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, wider.variables))
    assert not wider_opt.built  # refused before the optimizer was built


# --- Keras: every random state, the callbacks' state, EMA, crafted files (issue 24) -----------------


class Noise(keras.layers.Layer):
    """Draws from Keras' global seed generator: keras.random without a SeedGenerator of its own."""

    def call(self, inputs, training=False):
        return inputs + keras.random.normal(keras.ops.shape(inputs), stddev=0.1) if training else inputs


def noisy_run():
    keras.utils.set_random_seed(0)
    # A fresh process has no global seed generator. Newer Keras' set_random_seed drops it too;
    # Keras 3.2's keeps it, advanced by every earlier run: drop it here, as a new script would.
    from keras.src.backend.common import global_state
    global_state.set_global_attribute("global_seed_generator", None)
    model = keras.Sequential([keras.Input((X.shape[1],)), keras.layers.Dense(8, activation="tanh"),
                              Noise(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_keras_global_seed_generator_is_saved_and_restored(tmp_path):
    straight = noisy_run()
    keras_fit(straight, epochs=2)
    first = noisy_run()
    keras_fit(first, epochs=1)
    path = keras_save(tmp_path / "s.npz", first)
    assert "keras.global_seed_generator.npy" in payload_members(path)
    differences = {}
    for restored in (True, False):
        resumed = noisy_run()
        keras.utils.set_random_seed(1)  # a restarted script, another seed
        keras_load(path, resumed)
        if not restored:  # what the file held before issue 24: no global generator
            from keras.src.backend.common import global_state
            global_state.set_global_attribute("global_seed_generator", None)
        keras_fit(resumed, epochs=2, initial_epoch=1)
        differences[restored] = keras_difference(straight, resumed)
    assert differences[True] == 0.0 and differences[False] > 1e-4, differences


def plateau():
    # No epoch improves by 10: the learning rate is cut tenfold after every second epoch.
    return keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.1, patience=2, min_delta=10.0)


def early_stop():
    return keras.callbacks.EarlyStopping(monitor="loss", patience=3, min_delta=10.0,
                                         restore_best_weights=True)


@pytest.mark.parametrize("make", [plateau, early_stop], ids=["ReduceLROnPlateau", "EarlyStopping"])
def test_keras_callbacks_state_resumes_exactly(tmp_path, make):
    def fit(model, callback, epochs, initial_epoch=0):
        return model.fit(X, Y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch,
                         shuffle=False, verbose=0, callbacks=[callback]).history["loss"]

    straight = keras_run(dropout=0.0)
    straight_epochs = len(fit(straight, make(), epochs=8))
    first, callback = keras_run(dropout=0.0), make()
    fit(first, callback, epochs=2)
    path = keras_save(tmp_path / "s.npz", first, callbacks=[callback])
    outcomes = {}
    for restored in (True, False):
        resumed, again = keras_run(dropout=0.0), make()
        keras_load(path, resumed, callbacks=[again] if restored else [make()])
        epochs = 2 + len(fit(resumed, again, epochs=8, initial_epoch=2))
        outcomes[restored] = (epochs, float(resumed.optimizer.learning_rate.numpy()),
                              keras_difference(straight, resumed))
        assert "on_train_begin" not in vars(again)  # a later fit starts it afresh, as Keras does
    assert outcomes[True] == (straight_epochs, float(straight.optimizer.learning_rate.numpy()), 0.0)
    assert outcomes[False] != outcomes[True]  # fit() resets them: without the file's state it drifts


def test_keras_callbacks_are_checked(tmp_path):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(TypeError, match=r"callbacks\[0\] must be a keras.callbacks.ReduceLROnPlateau, "
                                        r"EarlyStopping or ModelCheckpoint.*got TerminateOnNaN"):
        keras_save(tmp_path / "s.npz", model, callbacks=[keras.callbacks.TerminateOnNaN()])
    path = keras_save(tmp_path / "s.npz", model, callbacks=[plateau()])
    for given, message in (([], r"callbacks \['ReduceLROnPlateau'\], but callbacks= has \[\]"),
                           ([early_stop()], r"but callbacks= has \['EarlyStopping'\]")):
        with pytest.raises(ValueError, match=message):
            keras_load(path, model, callbacks=given)
    wider = keras_run(hidden=(32,))
    stopped = early_stop()
    stopped.best_weights, stopped.best, stopped.wait = wider.get_weights(), 0.5, 1
    wider.optimizer.build(wider.trainable_variables)
    path = keras_save(tmp_path / "w.npz", wider, callbacks=[stopped])
    rewritten_npz(path, {"callbacks.0.wait.npy": np.array(1.5)})
    with pytest.raises(ValueError, match=r"its wait of callbacks\[0\] is 1\.5, not a whole number"):
        keras_load(path, wider, callbacks=[early_stop()])


def rewritten_npz(path, replaced: dict):
    """``path`` with some members replaced (arrays, or raw bytes), given a fresh checksum."""
    members = payload_members(path)
    for name, value in replaced.items():
        if isinstance(value, np.ndarray):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value)
            value = buffer.getvalue()
        members[name] = value
    return write_archive(path, members)


def test_a_keras_member_of_negative_shape_is_refused_before_any_write(tmp_path):
    # A header of shape (-2, -2) declares 4 values, which the member stores: only the shape is wrong.
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    path = keras_save(tmp_path / "s.npz", model, neg=np.zeros((2, 2), np.float32))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (-2, -2)})
    rewritten_npz(path, {"extra.neg.npy": header.getvalue() + bytes(16)})
    for variable in model.variables + model.optimizer.variables:
        variable.assign(np.full(variable.shape, 3, dtype=variable.dtype))
    before = keras_snapshot(model)
    with pytest.raises(ValueError, match=r"'extra\.neg\.npy' declares the shape \(-2, -2\)") as refusal:
        keras_load(path, model)
    assert str(refusal.value).startswith(f"refused to load {str(path)!r}: ")
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_snapshot(model)))


@pytest.mark.parametrize("name", ["", "\n", "tab\there"])
def test_a_keras_name_its_loader_would_refuse_is_refused_at_save(tmp_path, name):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="extra value names must be printable and not empty"):
        keras_save(tmp_path / "s.npz", model, **{name: 1.0})
    with pytest.raises(ValueError, match="generators names must be printable"):
        keras_save(tmp_path / "s.npz", model, generators={name: np.random.default_rng(0)})
    assert list(tmp_path.iterdir()) == []
    # Any other name comes back: the save reads its own archive's headers first.
    assert keras_load(keras_save(tmp_path / "s.npz", model, **{"a b/c.d": 1.0}), model) == {"a b/c.d": 1.0}


def test_keras_ema_resumes_exactly_when_saved_inside_fit(tmp_path):
    """With use_ema=True, fit() ends by copying the moving averages into the weights."""
    def run():
        return keras_run(keras.optimizers.Adam(0.01, use_ema=True))

    straight = run()
    keras_fit(straight, epochs=4)
    differences = {}
    # The recipe: save from inside the fit, at the end of epoch 2, and resume with one fit.
    first = run()
    saver = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: keras_save(
        tmp_path / "inside.npz", first, epoch=epoch + 1) if epoch == 1 else None)
    first.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[saver])
    resumed = run()
    assert keras_load(tmp_path / "inside.npz", resumed) == {"epoch": 2}
    keras_fit(resumed, epochs=4, initial_epoch=2)
    differences["saved inside fit, one fit"] = keras_difference(straight, resumed)
    # Saved after fit returned: the file holds the averages as the weights.
    first = run()
    keras_fit(first, epochs=2)
    resumed = run()
    keras_load(keras_save(tmp_path / "after.npz", first), resumed)
    keras_fit(resumed, epochs=4, initial_epoch=2)
    differences["saved after fit"] = keras_difference(straight, resumed)
    # One fit per epoch (the shuffling recipe): every fit ends on the averages.
    each = run()
    for epoch in range(4):
        keras_fit(each, epochs=epoch + 1, initial_epoch=epoch)
    differences["one fit per epoch"] = keras_difference(straight, each)
    assert differences["saved inside fit, one fit"] == 0.0, differences
    assert differences["saved after fit"] > 1e-3 and differences["one fit per epoch"] > 1e-3, differences


def test_the_checksum_proves_integrity_not_authenticity(tmp_path):
    # A file changed on purpose, its checksum recomputed (anyone can), loads: the checksum only
    # catches accidents. The same change without a new checksum is refused.
    model, optimizer = torch_run()
    path = checkpoints.save_training_state(tmp_path / "s.pt", model=model, optimizer=optimizer)
    planted = torch.full_like(model.state_dict()["0.weight"], 0.123)
    data = path.read_bytes()
    rewritten(path, lambda state: state["model"].update({"0.weight": planted}))
    tampered = path.read_bytes()
    path.write_bytes(tampered[:-CHECKSUM_LENGTH] + data[-CHECKSUM_LENGTH:])  # the old checksum
    fresh, fresh_opt = torch_run(seed=3)
    with pytest.raises(ValueError, match="do not match the SHA-256"):
        checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt)
    path.write_bytes(tampered)
    checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt)
    assert torch.equal(fresh.state_dict()["0.weight"], planted)
    assert "not authenticity" in checkpoints.__doc__ and "signature" in checkpoints.__doc__
