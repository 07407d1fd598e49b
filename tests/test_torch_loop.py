"""companion.torch_loop.train logs the Keras way, and matches a Keras run from the same weights."""

import copy

import numpy as np
import pytest

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
    log = torch_loop.train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                           batch_size=BATCH, epochs=2, metrics=[metrics.MeanAbsoluteError(name="mae")])
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
        (dict(x=np.array([["a"]] * len(Y))), TypeError, "x must hold numbers"),
        (dict(optimizer="sgd"), TypeError, "optimizer"),
        (dict(model=lambda t: t), TypeError, "model must be a torch.nn.Module"),
        (dict(metrics="mse"), TypeError, "metrics must be a sequence"),
        (dict(metrics=[3]), TypeError, "metrics must hold"),
        (dict(penalty=1.0), TypeError, "penalty"),
        (dict(seed=-1), ValueError, "seed"),
    ],
)
def test_bad_input_is_rejected_by_name(change, error, match):
    model, optimizer = fresh()
    arguments = dict(model=model, x=X, y=Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer,
                     batch_size=BATCH, epochs=1)
    arguments.update(change)
    with pytest.raises(error, match=match):
        torch_loop.train(**arguments)
