"""companion.checkpoints: exact resume, atomic writes, and loads that never unpickle."""

import io
import os
import pickle
import random

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


@pytest.fixture(autouse=True)
def _seed():
    companion.seed_everything(0)  # also switches the frameworks' deterministic kernels on


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


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


# --- PyTorch ------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
from companion import torch_loop  # noqa: E402


def torch_run(seed=0):
    torch.manual_seed(seed)
    model = models.torch_mlp(X.shape[1], hidden=(16,), dropout=0.2)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


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

    results = {}
    for variant in ("full", "no rng", "weights only"):
        # A different seed: the fresh objects start elsewhere and the torch RNG is elsewhere too.
        model, optimizer = torch_run(seed=123)
        if variant == "weights only":
            model.load_state_dict(torch.load(path, weights_only=True)["model"])
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
    state = torch.load(path, weights_only=True)  # the strict loader accepts every byte of it
    assert set(state) == {"format", "model", "optimizer", "rng", "extra"}
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert state["extra"] == {"epoch": 1, "note": "after warm-up", "history": [0.9, 0.8]}
    assert state["optimizer"]["state"][0]["step"] == 14


def test_a_malicious_pickle_is_refused_not_executed(tmp_path):
    model, optimizer = torch_run()
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "companion.checkpoints/torch/1", "model": Payload(marker)}, evil)

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
    monkeypatch.setattr(torch, "save", crashing)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoints.save_training_state(path, model=model, optimizer=optimizer, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind

    fresh, fresh_opt = torch_run(seed=5)
    assert checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt) == {"epoch": 0}
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())

    # The same crash writing straight to the target destroys the only copy.
    with open(path, "wb") as file, pytest.raises(OSError):
        crashing({"model": model.state_dict()}, file)
    with pytest.raises(Exception):
        checkpoints.load_training_state(path, model=fresh, optimizer=fresh_opt)


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
    with pytest.raises(TypeError, match="restore_rng must be True or False"):
        checkpoints.load_training_state(good, model=model, optimizer=optimizer, restore_rng="yes")
    with pytest.raises(FileNotFoundError, match="path must be an existing file"):
        checkpoints.load_training_state(tmp_path / "missing.pt", model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="not a training state"):
        checkpoints.load_training_state(tmp_path / "weights.pt", model=model, optimizer=optimizer)


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


def keras_run():
    model = models.keras_mlp(X.shape[1], hidden=(16,), dropout=0.2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def keras_fit(model, epochs):
    return model.fit(X, Y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0).history["loss"]


def keras_equal(a, b) -> bool:
    return all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a.variables, b.variables))


def seed_states(model):
    return [v for v in model.variables if "seed_generator" in v.path]


def test_keras_resume_is_bit_identical_with_the_seed_state(tmp_path):
    straight = keras_run()
    straight_loss = keras_fit(straight, epochs=2)
    first = keras_run()
    keras_fit(first, epochs=1)
    path = checkpoints.save_keras_training_state(tmp_path / "state.npz", model=first,
                                                 optimizer=first.optimizer, epoch=1)

    resumed = keras_run()
    extra = checkpoints.load_keras_training_state(path, model=resumed, optimizer=resumed.optimizer)
    assert extra == {"epoch": 1}
    assert int(resumed.optimizer.iterations.numpy()) == 14
    resumed_loss = keras_fit(resumed, epochs=1)
    assert resumed_loss[0] == straight_loss[1]
    assert keras_equal(straight, resumed)
    assert all(np.array_equal(u.numpy(), v.numpy())
               for u, v in zip(straight.optimizer.variables, resumed.optimizer.variables))

    # Without the dropout seed state (what .keras and .weights.h5 files restore) it diverges.
    partial = keras_run()
    checkpoints.load_keras_training_state(path, model=partial, optimizer=partial.optimizer)
    [seed_state] = seed_states(partial)
    seed_state.assign(np.zeros_like(seed_state.numpy()))
    keras_fit(partial, epochs=1)
    assert not keras_equal(straight, partial)


def test_keras_extra_values_round_trip(tmp_path):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    path = checkpoints.save_keras_training_state(tmp_path / "s.npz", model=model, optimizer=model.optimizer,
                                                 epoch=2, lr=0.5, best=True, note="ok",
                                                 losses=np.array([0.9, 0.8]))
    extra = checkpoints.load_keras_training_state(path, model=model, optimizer=model.optimizer)
    losses = extra.pop("losses")
    assert extra == {"epoch": 2, "lr": 0.5, "best": True, "note": "ok"}
    assert type(extra["epoch"]) is int and type(extra["best"]) is bool
    np.testing.assert_array_equal(losses, [0.9, 0.8])


def test_a_pickled_npz_is_refused_not_executed(tmp_path):
    model = keras_run()
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.array("companion.checkpoints/keras/1"),
             payload=np.array([Payload(marker)], dtype=object))
    with pytest.raises(ValueError, match="refused to load"):
        checkpoints.load_keras_training_state(evil, model=model, optimizer=model.optimizer)
    assert not marker.exists()
    np.load(evil, allow_pickle=True)["payload"]  # the payload is live when pickle is allowed
    assert marker.is_dir()


def test_a_crash_during_a_keras_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = keras_run()
    model.optimizer.build(model.trainable_variables)
    path = checkpoints.save_keras_training_state(tmp_path / "last.npz", model=model,
                                                 optimizer=model.optimizer, epoch=0)
    saved = [v.numpy().copy() for v in model.variables]
    for variable in model.trainable_variables:
        variable.assign(variable.numpy() + 1.0)

    monkeypatch.setattr(np, "savez", half_then_crash(np.savez))
    with pytest.raises(OSError, match="simulated crash"):
        checkpoints.save_keras_training_state(path, model=model, optimizer=model.optimizer, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]
    assert checkpoints.load_keras_training_state(path, model=model, optimizer=model.optimizer) == {"epoch": 0}
    assert all(np.array_equal(s, v.numpy()) for s, v in zip(saved, model.variables))


def test_keras_bad_input(tmp_path):
    model = keras_run()
    with pytest.raises(ValueError, match="optimizer must have been built"):
        checkpoints.save_keras_training_state(tmp_path / "s.npz", model=model, optimizer=model.optimizer)
    model.optimizer.build(model.trainable_variables)
    good = checkpoints.save_keras_training_state(tmp_path / "s.npz", model=model, optimizer=model.optimizer)
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        checkpoints.save_keras_training_state(good, model=None, optimizer=model.optimizer)
    with pytest.raises(TypeError, match=r"optimizer must be a keras\.Optimizer"):
        checkpoints.load_keras_training_state(good, model=model, optimizer="adam")
    with pytest.raises(TypeError, match="extra value history="):
        checkpoints.save_keras_training_state(good, model=model, optimizer=model.optimizer, history=[1, 2])
    with pytest.raises(TypeError, match="path must be a str"):
        checkpoints.load_keras_training_state(None, model=model, optimizer=model.optimizer)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a training state"):
        checkpoints.load_keras_training_state(tmp_path / "plain.npy", model=model, optimizer=model.optimizer)

    wider = models.keras_mlp(X.shape[1], hidden=(32,), dropout=0.2, seed=0)
    wider_opt = keras.optimizers.Adam(0.01)
    before = [v.numpy().copy() for v in wider.variables]
    with pytest.raises(ValueError, match=r"has shape \(10, 32\)"):
        checkpoints.load_keras_training_state(good, model=wider, optimizer=wider_opt)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, wider.variables))
