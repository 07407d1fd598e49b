"""companion.torch_loop.train logs the Keras way, and matches a Keras run from the same weights."""

import copy
import functools

import numpy as np
import pytest
from conftest import (BAD_INPUT_SETTINGS, INPUT_SETTINGS, Case, Expect, arrays_valid_and_invalid, assert_rejected,
                      at_most_one_broken, bad_data_cases, classify, log_agrees, not_a_positive_int,
                      numbers_valid_and_invalid, objects_valid_and_invalid)
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import companion  # noqa: E402
from companion import metrics, models, torch_loop  # noqa: E402
from companion.data import load_diabetes  # noqa: E402

X, Y = load_diabetes()
BATCH = 32


@pytest.fixture(autouse=True)
def _seed():
    companion.seed_everything(0)


def fresh(lr=0.05, hidden=(8,)):
    model = models.torch_mlp(X.shape[1], hidden=hidden)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def test_matches_keras_from_the_same_weights():
    keras = pytest.importorskip("keras")
    from companion import tf_loop

    keras_model = models.keras_mlp(X.shape[1], hidden=(8,), l2=0.01, seed=1)
    torch_model, optimizer = fresh()
    models.copy_keras_weights_to_torch(keras_model, torch_model)
    keras_log = tf_loop.train(
        keras_model, X, Y, loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.SGD(0.05),
        batch_size=BATCH, epochs=3, metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    torch_log = torch_loop.train(
        torch_model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer, batch_size=BATCH,
        epochs=3, metrics=[metrics.MeanSquaredError(name="mse")], penalty=models.torch_l2_penalty(0.01),
    )
    for key in ("loss", "mse"):
        np.testing.assert_allclose(torch_log.history[key], keras_log.history[key], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(torch_log.series(key), keras_log.series(key), rtol=1e-5, err_msg=key)
    # The penalty is really in the loss: loss and mse differ by more than the tolerance.
    assert torch_log.history["loss"][0] - torch_log.history["mse"][0] > 1e-3


def test_batch_values_are_pre_update_and_epoch_is_size_weighted():
    model, optimizer = fresh(lr=0.1)
    start = copy.deepcopy(model)
    def mae(y_true, y_pred):
        return float((y_true - y_pred).abs().mean())

    log = torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                           batch_size=BATCH, epochs=2, metrics=[mae])
    with torch.no_grad():
        first = start(torch.from_numpy(X[:BATCH]))
    target = torch.from_numpy(Y[:BATCH])
    assert log.batches[0].batch["loss"] == pytest.approx(float(((first - target) ** 2).mean()), rel=1e-6)
    assert log.batches[0].batch["mae"] == pytest.approx(float((first - target).abs().mean()), rel=1e-6)
    assert log.sizes(epoch=1).tolist() == [32] * 13 + [26]
    for epoch in range(2):
        sizes = log.sizes(epoch=epoch)
        for key in ("loss", "mae"):
            weighted = np.sum(log.series(key, epoch=epoch) * sizes) / sizes.sum()
            assert log.history[key][epoch] == pytest.approx(weighted, rel=1e-6)
    # The weights moved, so the second epoch starts from a different loss than the first.
    assert log.batches[14].batch["loss"] != pytest.approx(log.batches[0].batch["loss"], rel=1e-3)


def test_callable_metric_and_tensor_input():
    def max_error(y_true, y_pred):
        return float((y_true - y_pred).abs().max())

    model, optimizer = fresh(lr=0.0)
    log = torch_loop.train(model, torch.from_numpy(X), torch.from_numpy(Y), loss_fn=torch.nn.MSELoss(),
                           optimizer=optimizer, batch_size=100, epochs=1, metrics=[max_error])
    assert list(log.history) == ["loss", "max_error"]
    with torch.no_grad():
        errors = (model(torch.from_numpy(X)) - torch.from_numpy(Y)).abs().numpy().ravel()
    batch_maxima = [errors[i : i + 100].max() for i in range(0, len(X), 100)]
    sizes = [100, 100, 100, 100, 42]
    assert log.history["max_error"][0] == pytest.approx(np.dot(batch_maxima, sizes) / len(X), rel=1e-6)


@pytest.mark.parametrize("accumulation_steps, shuffle", [(1, False), (3, True)])
def test_a_metric_object_and_a_callable_log_the_same_numbers(accumulation_steps, shuffle):
    # A metric object's value for a step is what the step added to its total over what it added
    # to its count; a callable's is its batch values weighted by size. For a per-sample mean
    # both are the mean over the step's samples.
    def squared_error(y_true, y_pred):
        return float(((y_true.double() - y_pred.double()) ** 2).mean())

    mse = metrics.MeanSquaredError(name="mse")
    model, optimizer = fresh(lr=0.1)
    log = torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer, batch_size=BATCH,
                           epochs=2, metrics=[mse, squared_error], shuffle=shuffle, seed=1,
                           accumulation_steps=accumulation_steps)
    for kind in ("batch", "running"):
        np.testing.assert_allclose(log.series("squared_error", kind=kind), log.series("mse", kind=kind),
                                   rtol=1e-12, err_msg=kind)
        # The loss and the MSE metric are the same function of the same predictions.
        np.testing.assert_allclose(log.series("loss", kind=kind), log.series("mse", kind=kind), rtol=1e-6)
    # The metric object ends holding the last epoch, reset at its start.
    assert mse.count == len(X)
    assert mse.result() == pytest.approx(log.history["mse"][-1], rel=1e-12)


def test_a_keras_metric_is_refused_rather_than_called(keras):
    model, optimizer = fresh()
    with pytest.raises(TypeError, match="Keras metric MeanSquaredError.*companion.metrics"):
        torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer, batch_size=BATCH,
                         epochs=1, metrics=[keras.metrics.MeanSquaredError()])


def test_an_optimizer_of_another_model_is_refused():
    model, _ = fresh()
    _, other_optimizer = fresh()
    with pytest.raises(ValueError, match="optimizer must update the model's parameters"):
        torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=other_optimizer,
                         batch_size=BATCH, epochs=1)


def test_the_shape_check_leaves_the_model_and_the_random_stream_as_they_were():
    # The loop predicts one sample in inference mode before training to compare shapes; that
    # draws no dropout mask, so a run with dropout is the same as without the check.
    torch.manual_seed(0)
    model = models.torch_mlp(X.shape[1], hidden=(8,), dropout=0.5)
    model.eval()
    torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(),
                     optimizer=torch.optim.SGD(model.parameters(), lr=0.0), batch_size=BATCH, epochs=0)
    assert not model.training  # no epoch ran, so the model keeps its mode
    after_check = torch.rand(3)
    torch.manual_seed(0)
    models.torch_mlp(X.shape[1], hidden=(8,), dropout=0.5)
    assert torch.equal(after_check, torch.rand(3))


def test_a_diverging_loss_is_reported_with_its_epoch_and_batch():
    model, optimizer = fresh(lr=1e3)
    with pytest.raises(ValueError, match=r"the loss is (nan|inf) in epoch \d+, step \d+"):
        torch_loop.train(model, X, Y * 1e30, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                         batch_size=BATCH, epochs=3)


def test_shuffle_is_reproducible_from_seed():
    runs = []
    for seed in (5, 5, 6):
        companion.seed_everything(0)
        model, optimizer = fresh()
        runs.append(torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                                     batch_size=BATCH, epochs=2, shuffle=True, seed=seed).history["loss"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_broadcasting_shapes_are_refused():
    model, optimizer = fresh()
    with pytest.raises(ValueError, match="would broadcast"):
        torch_loop.train(model, X, Y.ravel(), loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                         batch_size=BATCH, epochs=1)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(epochs=1.0), TypeError, "epochs"),
        (dict(y=Y[:10]), ValueError, "y must have one row per sample"),
        (dict(x=np.full_like(X, np.inf)), ValueError, "x must be finite"),
        (dict(x=np.array([["a"]] * len(Y))), TypeError, "x must hold real numbers"),
        (dict(metrics=[lambda t, p: 0.0, lambda t, p: 1.0]), ValueError, "distinct names"),
        (dict(optimizer="sgd"), TypeError, "optimizer"),
        (dict(model=lambda t: t), TypeError, "model must be a torch.nn.Module"),
        (dict(metrics="mse"), TypeError, "metrics must be a sequence"),
        (dict(metrics=[3]), TypeError, "metrics must hold"),
        (dict(penalty=1.0), TypeError, "penalty"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(accumulation_steps=0), ValueError, "accumulation_steps"),
        (dict(accumulation_steps=2.0), TypeError, "accumulation_steps"),
    ],
)
def test_bad_input_is_rejected_by_name(change, error, match):
    model, optimizer = fresh()
    arguments = dict(model=model, x=X, y=Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                     batch_size=BATCH, epochs=1)
    arguments.update(change)
    with pytest.raises(error, match=match):
        torch_loop.train(**arguments)


@pytest.fixture(scope="module")
def small_model_and_optimizer():
    model = models.torch_mlp(X.shape[1], hidden=(4,))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@BAD_INPUT_SETTINGS
@given(case=bad_data_cases(X, Y))
def test_bad_data_is_rejected_by_name(small_model_and_optimizer, case):
    model, optimizer = small_model_and_optimizer
    name, value = case
    arguments = dict(x=X, y=Y)
    arguments[name] = value
    assert_rejected(lambda: torch_loop.train(model, arguments["x"], arguments["y"], loss_fn=torch.nn.MSELoss(),
                                             optimizer=optimizer, batch_size=32, epochs=1), name)


@BAD_INPUT_SETTINGS
@given(name=st.sampled_from(["batch_size", "epochs"]), value=not_a_positive_int)
def test_bad_sizes_are_rejected_by_name(small_model_and_optimizer, name, value):
    if name == "epochs" and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return  # zero epochs is allowed: an empty log
    model, optimizer = small_model_and_optimizer
    common = dict(batch_size=32, epochs=1)
    common[name] = value
    assert_rejected(lambda: torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                                             **common), name)


# --- gradient accumulation ---------------------------------------------------------------------


def weights_after(x, y, *, batch_size, accumulation_steps, make_optimizer, epochs=2, hidden=(4,), penalty=None):
    """Train a fresh, seeded model; return its log and its final weights as NumPy arrays."""
    torch.manual_seed(3)
    model = models.torch_mlp(x.shape[1], hidden=hidden)
    log = torch_loop.train(model, x, y, loss_fn=torch.nn.MSELoss(), optimizer=make_optimizer(model),
                           metrics=[metrics.MeanSquaredError(name="mse")], penalty=penalty,
                           batch_size=batch_size, epochs=epochs, accumulation_steps=accumulation_steps)
    return log, [p.detach().numpy().copy() for p in model.parameters()]


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=0.01)


@pytest.mark.parametrize(
    "num_samples, batch_size, k, make_optimizer, l2",
    [
        (442, 32, 4, sgd, 0.0),  # 14 micro-batches: steps of 4, 4, 4 and 2, the last one short
        (442, 32, 4, sgd, 0.01),  # the penalty is counted once per step, not once per micro-batch
        (442, 32, 4, adam, 0.0),  # same gradient, so the same Adam update
        (37, 5, 3, sgd, 0.0),  # steps of 15, 15 and 7 = 5 + 2
        (10, 3, 5, sgd, 0.0),  # fewer micro-batches than k: one step of 3 + 3 + 3 + 1
        (7, 7, 2, sgd, 0.0),  # a single micro-batch
    ],
)
def test_accumulation_equals_one_batch_of_k_times_the_size(num_samples, batch_size, k, make_optimizer, l2):
    x, y = X[:num_samples], Y[:num_samples]
    penalty = models.torch_l2_penalty(l2) if l2 else None
    accumulated, w_accumulated = weights_after(x, y, batch_size=batch_size, accumulation_steps=k,
                                               make_optimizer=make_optimizer, penalty=penalty)
    large, w_large = weights_after(x, y, batch_size=k * batch_size, accumulation_steps=1,
                                   make_optimizer=make_optimizer, penalty=penalty)
    for a, b in zip(w_accumulated, w_large):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # One record per optimizer step, sized like the large batches, with the same numbers.
    assert accumulated.sizes().tolist() == large.sizes().tolist()
    for key in ("loss", "mse"):
        np.testing.assert_allclose(accumulated.history[key], large.history[key], rtol=1e-5, err_msg=key)
        for kind in ("batch", "running"):
            np.testing.assert_allclose(accumulated.series(key, kind=kind), large.series(key, kind=kind),
                                       rtol=1e-5, err_msg=f"{key} {kind}")


def test_accumulation_log_has_one_record_per_optimizer_step():
    log, _ = weights_after(X, Y, batch_size=32, accumulation_steps=4, make_optimizer=sgd, epochs=1)
    assert log.sizes().tolist() == [128, 128, 128, 58]
    assert [r.step for r in log.batches] == [0, 1, 2, 3]


def test_accumulation_changes_the_training_and_the_weighting_matters():
    """The equality above is not vacuous: k micro-steps differ, and so does dividing by k."""
    x, y = X[:37], Y[:37]
    _, w_large = weights_after(x, y, batch_size=15, accumulation_steps=1, make_optimizer=sgd)
    _, w_small = weights_after(x, y, batch_size=5, accumulation_steps=1, make_optimizer=sgd)
    assert max(np.max(np.abs(a - b)) for a, b in zip(w_large, w_small)) > 1e-3

    # The usual recipe, loss / k, weights the short micro-batch (2 samples) like a full one (5).
    torch.manual_seed(3)
    model = models.torch_mlp(x.shape[1], hidden=(4,))
    optimizer = sgd(model)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(2):
        for first in range(0, 37, 15):
            optimizer.zero_grad()
            for start in range(first, min(first + 15, 37), 5):
                loss = torch.nn.functional.mse_loss(model(xt[start : start + 5]), yt[start : start + 5])
                (loss / 3).backward()
            optimizer.step()
    w_naive = [p.detach().numpy() for p in model.parameters()]
    assert max(np.max(np.abs(a - b)) for a, b in zip(w_large, w_naive)) > 1e-4


@settings(max_examples=25, deadline=None)
@given(num_samples=st.integers(1, 40), batch_size=st.integers(1, 9), k=st.integers(1, 5))
def test_accumulation_equivalence_for_any_sizes(num_samples, batch_size, k):
    x, y = X[:num_samples], Y[:num_samples]
    _, w_accumulated = weights_after(x, y, batch_size=batch_size, accumulation_steps=k, make_optimizer=sgd)
    _, w_large = weights_after(x, y, batch_size=k * batch_size, accumulation_steps=1, make_optimizer=sgd)
    for a, b in zip(w_accumulated, w_large):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "prepare, loss_fn, match",
    [
        (lambda m: [p.requires_grad_(False) for p in m.parameters()], torch.nn.MSELoss(),
         "model must have a parameter with requires_grad=True"),
        (lambda m: None, torch.nn.MSELoss(reduction="none"), r"loss_fn must average over the batch"),
        (lambda m: None, torch.nn.MSELoss(reduction="sum"), r"reduction='sum'"),
    ],
)
def test_what_the_loop_cannot_train_is_refused_by_name(prepare, loss_fn, match):
    model, optimizer = fresh()
    prepare(model)
    with pytest.raises(ValueError, match=match):
        torch_loop.train(model, X, Y, loss_fn=loss_fn, optimizer=optimizer, batch_size=BATCH, epochs=1)


def test_a_float64_model_gets_float64_data():
    # The data take the float type of the model's weights, as they take its device.
    model32, optimizer32 = fresh()
    model64 = copy.deepcopy(model32).double()
    log32 = torch_loop.train(model32, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer32,
                             batch_size=BATCH, epochs=1)
    log64 = torch_loop.train(model64, X, Y, loss_fn=torch.nn.MSELoss(),
                             optimizer=torch.optim.SGD(model64.parameters(), lr=0.05),
                             batch_size=BATCH, epochs=1)
    assert next(model64.parameters()).dtype == torch.float64
    np.testing.assert_allclose(log64.history["loss"], log32.history["loss"], rtol=1e-5)
    assert log64.history["loss"] != log32.history["loss"]  # really computed in float64


# --- every input, valid or not (issue 15) -----------------------------------------------------------

DATA_X = np.random.default_rng(1).uniform(-2, 2, size=(5, 3))
DATA_Y = np.random.default_rng(2).uniform(-2, 2, size=(5, 1))


# What torch_loop does not do yet (companion/torch_loop.py is not changed here): it checks
# batch_size and accumulation_steps but keeps the values passed, so an np.int32 batch_size times
# a large accumulation_steps overflows int32 (NumPy 2 keeps the int32 type).


def _mean_squared_error(y_true, y_pred):  # a user's metric: it gets y as torch_loop holds it
    return float(((y_true.double() - y_pred.double()) ** 2).mean())


@functools.cache
def _arguments():
    return {
        "model": objects_valid_and_invalid(valid={"linear": "linear"}, invalid={"None": None, "a str": "a model"}),
        "loss_fn": objects_valid_and_invalid(valid={"MSELoss()": torch.nn.MSELoss()}, invalid={
            "reduction='none'": torch.nn.MSELoss(reduction="none"), "a str": "mse", "None": None}),
        "optimizer": objects_valid_and_invalid(valid={"SGD": "SGD"}, invalid={
            "of another model": "other", "a str": "sgd", "None": None}),
        "metrics": objects_valid_and_invalid(valid={"none": (), "mse": "mse", "a function": [_mean_squared_error]},
                                             invalid={"a str": "mse_", "twice the same name": "twice", "3": [3]}),
        "x": arrays_valid_and_invalid(DATA_X), "y": arrays_valid_and_invalid(DATA_Y),
        "batch_size": numbers_valid_and_invalid(2, huge=2**40), "epochs": numbers_valid_and_invalid(2, huge=3),
        "shuffle": numbers_valid_and_invalid(False), "seed": st.one_of(st.just(Case(None, "valid: None")),
                                                                        numbers_valid_and_invalid(3, huge=2**70)),
        "penalty": objects_valid_and_invalid(valid={"None": None, "L2": "l2"}, invalid={"a number": 0.01}),
        "accumulation_steps": numbers_valid_and_invalid(1, huge=2**40),
    }


def _metric_objects(value):
    named = {"mse": [metrics.MeanSquaredError(name="mse")], "mse_": "mse",
             "twice": [metrics.Mean(name="m"), metrics.Mean(name="m")]}
    return named.get(value, value) if isinstance(value, str) else value


@INPUT_SETTINGS
@given(data=st.data())
def test_inputs_train(data):
    cases = data.draw(at_most_one_broken(**_arguments()))
    c = dict(cases)
    values = {name: case.value for name, case in cases.items()}
    model = torch.nn.Linear(3, 1)
    values["model"] = model if values["model"] == "linear" else values["model"]
    values["optimizer"] = {"SGD": torch.optim.SGD(model.parameters(), lr=0.01),
                           "other": torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.01)}.get(
        values["optimizer"], values["optimizer"])
    values["metrics"] = _metric_objects(values["metrics"])
    values["penalty"] = models.torch_l2_penalty(0.01, hidden_only=False) if values["penalty"] == "l2" else \
        values["penalty"]

    def expected():
        e = Expect()
        for name in ("model", "loss_fn", "optimizer", "metrics", "penalty"):
            e.object(name, c[name])
        x, y = e.array("x", c["x"], ndim=(2,)), e.array("y", c["y"], ndim=range(1, 9))
        b, epochs = e.count("batch_size", c["batch_size"]), e.count("epochs", c["epochs"], minimum=0)
        e.count("accumulation_steps", c["accumulation_steps"])
        e.flag("shuffle", c["shuffle"]), e.count("seed", c["seed"], minimum=0, optional=True)
        e.done()
        e.need(x.shape[1] == 3 and c["x"].dtype.kind == "f", "x")  # floats for the float model
        e.need(np.abs(x).max() <= np.finfo(np.float32).max, "x")
        e.need(np.abs(y).max() <= np.finfo(np.float32).max, "y")
        e.need(len(y) == len(x) and y.shape[1:] == (1,), "y")  # MSELoss: shaped like the prediction
        e.done()
        step = b * c["accumulation_steps"].reference
        keys = ["loss", *(getattr(m, "name", None) or m.__name__ for m in values["metrics"])]
        return keys, [min(step, len(x) - start) for start in range(0, len(x), step)], epochs

    classify("torch_loop.train", lambda: torch_loop.train(**values), expected, agree=log_agrees)


def test_integer_x_for_a_float_model_is_refused_by_name():
    model = torch.nn.Linear(3, 1)
    with pytest.raises(TypeError, match=r"x has dtype torch.int64 and shape \(\d+, 3\), which the model cannot take"):
        torch_loop.train(model, np.ones((4, 3), dtype=np.int64), DATA_Y[:4], loss_fn=torch.nn.MSELoss(),
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.01), batch_size=2, epochs=1)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the int32 product wraps around
def test_an_int32_batch_size_times_many_accumulation_steps():
    model = torch.nn.Linear(3, 1)
    log = torch_loop.train(model, DATA_X, DATA_Y, loss_fn=torch.nn.MSELoss(), batch_size=np.int32(2),
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.01), epochs=1,
                           accumulation_steps=2**30)
    assert log.sizes().tolist() == [5]


# --- no copy to the host per step (issue 24) ---------------------------------------------------------
#
# On a GPU a copy to the host waits for every kernel queued before it: a loop that copies at every
# step stalls the device at every step. There is no GPU here, so HostReads counts every way a
# tensor's values reach the host (item, tolist, numpy, float(), bool(), and the operations that read
# a value on the device). The count must not grow with the number of steps: the loop reads an
# epoch's numbers once, after it.


def reads_in_one_epoch(batch_size, metric_list, accumulation_steps=1, classes=False):
    from conftest import HostReads

    torch.manual_seed(0)
    if classes:
        x, y = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32), np.arange(64) % 3
        model, loss_fn = torch.nn.Linear(6, 3), torch.nn.CrossEntropyLoss()
    else:
        x, y = X[:64], Y[:64]
        model, loss_fn = torch.nn.Linear(X.shape[1], 1), torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with HostReads() as reads:
        torch_loop.train(model, x, y, loss_fn=loss_fn, optimizer=optimizer, batch_size=batch_size,
                         epochs=1, metrics=metric_list(), accumulation_steps=accumulation_steps)
    return reads


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_the_loop_copies_nothing_to_the_host_per_step(accumulation_steps):
    def regression():
        return [metrics.MeanSquaredError(name="mse"),
                lambda y_true, y_pred: (y_true - y_pred).abs().mean()]  # a tensor: kept there too

    def classification():
        return [metrics.Accuracy(name="accuracy"), metrics.Accuracy(name="top2", top_k=2)]

    for metric_list, classes in ((regression, False), (classification, True)):
        # 8 steps, then 32 steps (with accumulation: 4, then 16 optimizer steps)
        few = reads_in_one_epoch(8, metric_list, accumulation_steps, classes)
        many = reads_in_one_epoch(2, metric_list, accumulation_steps, classes)
        assert few.calls == many.calls, (few.calls, many.calls)
        # one copy per dtype (losses, metric states, their checks) and one per result()
        assert few.total <= 8, few.calls


def test_the_count_sees_a_metric_that_copies_at_every_step():
    # A callable that returns a Python number is read at every step: the counter must see it.
    def metric_list():
        return [lambda y_true, y_pred: float((y_true - y_pred).abs().mean())]

    few, many = reads_in_one_epoch(8, metric_list), reads_in_one_epoch(2, metric_list)
    assert many.total - few.total == 32 - 8, (few.calls, many.calls)


def test_a_metric_s_bad_labels_are_raised_after_the_epoch():
    torch.manual_seed(0)
    x, y = np.ones((8, 3), np.float32), np.array([0, 1, 2, 5, 0, 1, 2, 0])  # 3 classes; 5 is none
    model = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"y_true must hold class indices from 0 to 2 .* got 1 other"):
        torch_loop.train(model, x, y, loss_fn=torch.nn.CrossEntropyLoss(ignore_index=5),
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batch_size=4,
                         epochs=1, metrics=[metrics.Accuracy()])


def test_a_callable_metric_must_return_one_number():
    model, optimizer = fresh()
    with pytest.raises(TypeError, match=r"metrics: the function 'per_sample' must return one number"):
        torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer, batch_size=BATCH,
                         epochs=1, metrics=[per_sample])


def per_sample(y_true, y_pred):
    return (y_true - y_pred).abs()
