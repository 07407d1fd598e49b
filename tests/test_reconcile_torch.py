"""companion.reconcile_torch: the Recorder explains a PyTorch loop's logged number, part by
part, and explain_torch is the course's loop written with it.

Each part is checked against a computation of its own (closed forms at learning rate 0, the
model evaluated by hand at weights copied by hand), not only against the sum.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import assert_rejected

import companion  # noqa: F401  (quiets TensorFlow's start-up logging before it is imported)
from companion import reconcile
from companion.reconcile_torch import Recorder, explain_torch, moving_average

N, FEATURES = 200, 5  # 200 = 6 * 32 + 8: a short last batch
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, FEATURES)).astype(np.float32)
Y = (X @ RNG.normal(size=(FEATURES, 1)) + 0.3 * RNG.normal(size=(N, 1))).astype(np.float32)
LABELS = np.argmax(X[:, :3] + 0.5 * RNG.normal(size=(N, 3)), axis=1)  # 3 classes
WEIGHTS = RNG.uniform(0.2, 3.0, size=N)


def within_tolerance(result) -> bool:
    return abs(result.residual) <= 1e-6 * max(1.0, abs(result.logged))


def close(a, b, scale=1.0):
    return abs(a - b) <= 1e-6 * max(1.0, abs(scale))


def torch_model(*, dropout=0.0, batch_norm=False, classes=0, seed=1):
    import torch

    torch.manual_seed(seed)
    layers = [torch.nn.Linear(FEATURES, 16), torch.nn.ReLU()]
    if batch_norm:
        layers.append(torch.nn.BatchNorm1d(16))
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    layers.append(torch.nn.Linear(16, classes or 1))
    return torch.nn.Sequential(*layers)


def l2_penalty(model):
    return 0.01 * sum((p ** 2).sum() for name, p in model.named_parameters() if "weight" in name)


def readers_loop(model, *, recorder=None, epochs=2, lr=0.01, targets=Y, loss_fn=None,
                 seed=7, accumulate=1, clip=True, log_divided=False):
    """A loop as practitioners write it: a shuffled DataLoader, Adam, a scheduler, gradient
    clipping, optional accumulation (loss / k), and the plain mean of the step losses."""
    import torch

    loss_fn = loss_fn or torch.nn.MSELoss()
    data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(targets))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    torch.manual_seed(seed)
    printed = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for index, (inputs, target) in enumerate(loader):
            if recorder is not None:
                recorder.before(inputs, target)
            prediction = model(inputs)
            loss = loss_fn(prediction, target) / accumulate
            if recorder is not None:
                recorder.after(loss, prediction, divided_by=accumulate)
            loss.backward()
            if (index + 1) % accumulate == 0 or index + 1 == len(loader):
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
            total += loss.item() if log_divided else loss.item() * accumulate
            count += 1
        printed.append(total / count)
        if recorder is not None:
            recorder.end_epoch(printed[-1])
    return printed


def evaluate(model, loss_fn, x=X, y=Y):
    import torch

    model.eval()
    with torch.no_grad():
        value = float(loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y)))
    model.train()
    return value


# --- the reader's own loop ----------------------------------------------------------------------


def test_a_shuffled_dataloader_loop_is_explained_and_untouched(torch):
    # The case: a shuffled DataLoader loop that prints the plain mean of its batch
    # losses. The recorder must explain the printed number and leave training as it was.
    plain_model = torch_model(dropout=0.3)
    plain = readers_loop(plain_model)
    rng = torch.get_rng_state()
    model = torch_model(dropout=0.3)
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="mean")
    printed = readers_loop(model, recorder=recorder)
    assert printed == plain  # bit for bit: the recorder changed nothing
    assert torch.equal(torch.get_rng_state(), rng)
    for ours, theirs in zip(model.parameters(), plain_model.parameters()):
        assert torch.equal(ours, theirs)
    r = recorder.result()
    assert [e.logged for e in r.epochs] == printed
    for e in r.epochs:
        assert within_tolerance(e), e
        assert list(e.parts) == ["averaging rule", *reconcile.CORE_PARTS]
    # The averaging part, by hand: the plain mean of the step losses minus their mean
    # weighted by batch size (all from the loop's own step losses).
    steps = r.steps
    losses = np.array([s.reported for s in steps])
    sizes = np.array([s.size for s in steps], dtype=float)
    assert close(r.parts["averaging rule"], losses.mean() - sizes @ losses / sizes.sum())
    assert abs(r.parts["averaging rule"]) > 1e-4  # the short last batch counts too much
    # evaluated is the model after the last epoch, evaluated by hand.
    assert close(r.evaluated, evaluate(model, torch.nn.MSELoss()))
    assert abs(r.parts["training-mode layers"]) > 1e-3  # dropout


def test_each_epoch_is_measured_at_its_own_end(torch):
    # Defect: "weights moved" of an epoch but the last used the weights at the end of
    # training. Here epoch 0's evaluated is the model copied by hand after epoch 0.
    model = torch_model()
    snapshots = []
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="mean")
    original = recorder.end_epoch

    def end_epoch(logged, **kwargs):
        snapshots.append(copy.deepcopy(model))
        original(logged, **kwargs)

    recorder.end_epoch = end_epoch
    readers_loop(model, recorder=recorder, epochs=3, lr=0.05)
    r = recorder.result()
    for k, epoch in enumerate(r.epochs):
        assert close(epoch.evaluated, evaluate(snapshots[k], torch.nn.MSELoss()))
        inference = np.array([s.inference for s in epoch.steps])
        counts = np.array([s.count for s in epoch.steps])
        moved = counts @ inference / counts.sum() - epoch.evaluated
        assert close(epoch.parts["weights moved during the epoch"], moved)
    assert r.epochs[0].evaluated != r.epochs[2].evaluated


def test_a_replayed_forward_pass_equals_the_loops_own(torch):
    # A framework's callback may not see the prediction: the recorder replays the forward pass
    # with the random-number state the step started from (same dropout masks).
    def run(pass_prediction):
        model = torch_model(dropout=0.5)
        recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="mean")
        torch.manual_seed(3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        total = 0.0
        for start in range(0, N, 32):
            inputs, target = torch.from_numpy(X[start:start + 32]), torch.from_numpy(
                Y[start:start + 32])
            recorder.before(inputs, target)
            prediction = model(inputs)
            loss = torch.nn.functional.mse_loss(prediction, target)
            recorder.after(loss, prediction if pass_prediction else None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        recorder.end_epoch(total / 7)
        return recorder.result()

    seen, replayed = run(True), run(False)
    assert [s.train for s in seen.steps] == [s.train for s in replayed.steps]
    assert seen.parts == replayed.parts and within_tolerance(replayed)


def test_accumulation_and_its_division_are_an_averaging_part(torch):
    # A loop that divides its loss by the accumulation steps and logs the divided values:
    # the logged number is 1/k of the mean loss; the averaging part says so.
    k = 4
    model = torch_model()
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="mean")
    printed = readers_loop(model, recorder=recorder, epochs=1, accumulate=k, log_divided=True)
    r = recorder.result()
    assert within_tolerance(r) and r.logged == printed[0]
    undivided = np.array([s.reported * k for s in r.steps])
    sizes = np.array([s.size for s in r.steps], dtype=float)
    assert close(r.parts["averaging rule"], undivided.mean() / k - sizes @ undivided / N)
    assert r.parts["averaging rule"] < -0.5 * r.logged  # about (1/k - 1) of the loss


def test_a_wrong_averaging_rule_is_named_with_the_one_that_matches(torch):
    model = torch_model()
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="last")
    readers_loop(model, recorder=recorder, epochs=1)
    with pytest.raises(reconcile.ReconciliationError, match="average='mean'"):
        recorder.result()


def test_a_moving_average_is_an_averaging_rule(torch):
    model = torch_model()
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average=moving_average(0.9))
    readers_loop(model, epochs=1)  # warms nothing; the recorder's run follows
    model = torch_model()
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average=moving_average(0.9))
    import torch as t

    optimizer = t.optim.SGD(model.parameters(), lr=0.05)
    smoothed = None
    for start in range(0, N, 32):
        inputs, target = t.from_numpy(X[start:start + 32]), t.from_numpy(Y[start:start + 32])
        with recorder.step(inputs, target) as step:
            loss = t.nn.functional.mse_loss(model(inputs), target)
            step.record(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.9 * smoothed + 0.1 * loss.item()
    recorder.end_epoch(smoothed)
    r = recorder.result()
    assert within_tolerance(r) and "moving average" in r.average


# --- closed forms at learning rate 0 ------------------------------------------------------------


def test_parts_at_learning_rate_zero(torch):
    model = torch_model()
    with torch.no_grad():
        penalty = float(l2_penalty(model))
        per_sample = ((model(torch.from_numpy(X)) - torch.from_numpy(Y)) ** 2).double()
    per_sample = per_sample.mean(dim=1).numpy()
    r = explain_torch(model, X, Y, loss_fn=torch.nn.MSELoss(),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                      batch_size=32, epochs=2, penalty=l2_penalty, sample_weight=WEIGHTS)
    scale = r.logged
    assert close(r.parts["penalty"], penalty, scale)
    assert close(r.parts["sample weighting"],
                 np.mean(WEIGHTS * per_sample) - np.mean(per_sample), scale)
    assert r.parts["training-mode layers"] == 0
    assert close(r.parts["weights moved during the epoch"], 0.0)
    assert close(r.evaluated, np.mean(per_sample), scale)
    assert close(r.end_penalty, penalty, scale) and not r.evaluated_includes_penalty


def test_dropout_gap_at_learning_rate_zero(torch):
    model = torch_model(dropout=0.5)
    inference = evaluate(model, torch.nn.MSELoss())
    r = explain_torch(model, X, Y, loss_fn=torch.nn.MSELoss(),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.0), batch_size=32)
    assert r.parts["training-mode layers"] > 1e-2
    assert close(r.parts["training-mode layers"], r.logged - inference, r.logged)
    assert r.parts["penalty"] == r.parts["sample weighting"] == 0
    assert close(r.parts["weights moved during the epoch"], 0.0)


def test_class_weights_and_ignored_targets_are_the_losss_own(torch):
    # Defect: with CrossEntropyLoss(weight=...) unit sample weights gave "sample weighting"
    # +1.36 and changed training; ignore_index gave -0.19. Now unit weights are no weighting.
    labels = LABELS.copy()
    labels[::7] = -100  # ignored targets
    class_weights = torch.tensor([1.0, 4.0, 0.5])

    def run(sample_weight):
        model = torch_model(classes=3)
        loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=-100)
        r = explain_torch(model, X, labels, loss_fn=loss_fn, batch_size=32, epochs=2,
                          optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                          sample_weight=sample_weight)
        return r, [p.detach().clone() for p in model.parameters()], model

    plain, plain_weights, trained = run(None)
    unit, unit_weights, _ = run(np.ones(N))
    assert abs(unit.parts["sample weighting"]) <= 1e-6 * unit.logged
    for ours, theirs in zip(unit_weights, plain_weights):  # training unchanged (to rounding)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert close(unit.logged, plain.logged, plain.logged)
    # The loss's own denominator: the kept targets' class weights, counted by hand.
    kept = labels != -100
    counts = [float(class_weights[labels[s][kept[s]]].sum()) for s in
              (slice(i, i + 32) for i in range(0, N, 32))]
    np.testing.assert_allclose([s.count for s in plain.steps], counts, rtol=1e-6)
    # evaluated is the class-weighted mean over the kept targets, as the loss defines it.
    by_hand = evaluate(trained, torch.nn.CrossEntropyLoss(weight=class_weights), y=labels)
    assert close(plain.evaluated, by_hand, by_hand)
    assert within_tolerance(plain) and within_tolerance(unit)


def test_label_smoothing_is_its_own_part(torch):
    smoothed = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    model = torch_model(classes=3)
    with torch.no_grad():
        logits = model(torch.from_numpy(X))
        target = torch.from_numpy(LABELS)
        gap = float(smoothed(logits, target) - torch.nn.functional.cross_entropy(logits, target))
    r = explain_torch(model, X, LABELS, loss_fn=smoothed, batch_size=32,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    assert "training loss vs criterion" in r.parts
    assert close(r.parts["training loss vs criterion"], gap, r.logged) and abs(gap) > 1e-3
    assert "label smoothing" in r.criterion and within_tolerance(r)
    assert close(r.evaluated, float(torch.nn.functional.cross_entropy(logits, target)), 1.0)


def test_moving_statistics_are_their_own_part(torch):
    # At learning rate 0 the weights do not move; batch normalization's running statistics
    # still do. By hand: each step's statistics recorded, then the model at the epoch's end
    # evaluated on each batch with them and with the last ones.
    model = torch_model(batch_norm=True)
    bn = model[2]
    batches = [slice(i, i + 32) for i in range(0, N, 32)]
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss(), average="size-weighted")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    statistics, total = [], 0.0
    for s in batches:
        inputs, target = torch.from_numpy(X[s]), torch.from_numpy(Y[s])
        statistics.append((bn.running_mean.clone(), bn.running_var.clone()))
        recorder.before(inputs, target)
        loss = torch.nn.functional.mse_loss(model(inputs), target)
        recorder.after(loss, None)  # replayed: the batch statistics are the same
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
    recorder.end_epoch(total / N)
    r = recorder.result()
    assert list(r.parts)[-1] == "moving statistics"
    assert r.parts["weights moved during the epoch"] == 0  # same weights, same statistics
    last = (bn.running_mean.clone(), bn.running_var.clone())
    by_hand = []
    for s, (mean, var) in zip(batches, statistics):
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        with_step = evaluate(model, torch.nn.MSELoss(), X[s], Y[s])
        bn.running_mean.copy_(last[0])
        bn.running_var.copy_(last[1])
        by_hand.append((s.stop - s.start if s.stop <= N else N - s.start,
                        with_step - evaluate(model, torch.nn.MSELoss(), X[s], Y[s])))
    sizes = np.array([min(s.stop, N) - s.start for s in batches], dtype=float)
    expected = sizes @ np.array([gap for _, gap in by_hand]) / N
    assert close(r.parts["moving statistics"], expected, r.logged) and abs(expected) > 1e-3
    assert within_tolerance(r)


# --- explain_torch ------------------------------------------------------------------------------


def test_explain_torch_trains_exactly_as_torch_loop(torch):
    from companion import torch_loop
    from companion.metrics import MeanSquaredError

    def run(train):
        model = torch_model(batch_norm=True, dropout=0.3)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        torch.manual_seed(7)  # the dropout draws
        log = train(model, X, Y, loss_fn=torch.nn.MSELoss(), optimizer=optimizer, batch_size=32,
                    epochs=3, penalty=l2_penalty, metrics=[MeanSquaredError(name="mse")])
        return log, model, torch.get_rng_state()

    theirs, their_model, their_rng = run(torch_loop.train)
    r, model, rng = run(lambda *a, **k: explain_torch(*a, epoch=1, **k))
    assert r.history.history == theirs.history
    assert r.history.batches == theirs.batches
    for (name, ours), their in zip(model.state_dict().items(), their_model.state_dict().values()):
        assert torch.equal(ours, their), name
    assert torch.equal(rng, their_rng) and model.training == their_model.training
    assert r.epoch == 1 and len(r.epochs) == 3
    for epoch in r.epochs:
        assert within_tolerance(epoch) and within_tolerance(epoch.metrics["mse"])
        assert epoch.logged == theirs.history["loss"][epoch.epoch]
        assert "moving statistics" in epoch.parts


def test_explain_torch_leaves_the_random_numbers_to_training(torch):
    # A module that draws in inference mode too: the extra inference passes must not shift the
    # draws of the training steps that follow.
    from companion import torch_loop

    class AlwaysNoisy(torch.nn.Module):
        def forward(self, inputs):
            return inputs + 0.1 * torch.randn_like(inputs)

    def run(train):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), AlwaysNoisy(),
                                    torch.nn.Linear(8, 1))
        torch.manual_seed(7)
        log = train(model, X, Y, loss_fn=torch.nn.MSELoss(), batch_size=32, epochs=2,
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
        return log.history, [p.detach().clone() for p in model.parameters()]

    theirs, their_parameters = run(torch_loop.train)
    ours, parameters = run(lambda *a, **k: explain_torch(*a, epoch=0, **k).history)
    assert ours == theirs
    assert all(torch.equal(p, q) for p, q in zip(parameters, their_parameters))


def test_validation_gap(torch):
    x_val, y_val = X[:60] + 0.5, Y[:60]  # a shifted set: the data's part is real
    model = torch_model(dropout=0.3)
    r = explain_torch(model, X, Y, loss_fn=torch.nn.MSELoss(), batch_size=32, epochs=2,
                      optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
                      penalty=l2_penalty, validation_data=(x_val, y_val))
    gap = r.validation
    assert gap.val_loss == r.history.history["val_loss"][-1] and gap.loss == r.logged
    assert abs(gap.residual) <= 1e-6 * max(1.0, abs(gap.loss))
    by_hand = evaluate(model, torch.nn.MSELoss(), x_val, y_val)
    assert close(gap.validation.evaluated, by_hand, by_hand)
    assert close(gap.parts[reconcile.DATA_PART], r.evaluated - by_hand, by_hand)
    for part in ("training-mode layers", "weights moved during the epoch", "penalty"):
        assert gap.parts[part] == r.parts[part]  # the validation pass has none of these
    assert abs(gap.parts["training-mode layers"]) > 1e-3
    assert "val_loss" in str(gap) or "loss - val_loss" in str(gap)


# --- refusals -----------------------------------------------------------------------------------


def test_recorder_refuses_calls_out_of_order(torch):
    model = torch_model()
    recorder = Recorder(model, loss_fn=torch.nn.MSELoss())
    with pytest.raises(RuntimeError, match="before"):
        recorder.after(1.0)
    with pytest.raises(RuntimeError, match="end_epoch"):
        recorder.result()
    inputs, target = torch.from_numpy(X[:4]), torch.from_numpy(Y[:4])
    with pytest.raises(RuntimeError, match="record"):
        with recorder.step(inputs, target):
            pass
    assert_rejected(lambda: Recorder(model, loss_fn=torch.nn.MSELoss(reduction="sum")),
                    "reduction")
    assert_rejected(lambda: Recorder(model, loss_fn=torch.nn.MSELoss(), average="median"),
                    "average")
    assert_rejected(lambda: Recorder("model", loss_fn=torch.nn.MSELoss()), "model")


def test_explain_torch_refuses_bad_arguments(torch):
    model = torch_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def explain(**changes):
        arguments = dict(loss_fn=torch.nn.MSELoss(), optimizer=optimizer, batch_size=32)
        arguments.update(changes)
        return lambda: explain_torch(model, X, arguments.pop("y", Y), **arguments)

    assert_rejected(explain(loss_fn=torch.nn.MSELoss(reduction="sum")), "loss_fn")
    assert_rejected(explain(loss_fn=lambda p, t: ((p - t) ** 2).mean(), sample_weight=WEIGHTS),
                    "loss_fn")
    assert_rejected(explain(sample_weight=WEIGHTS[:3]), "sample_weight")
    assert_rejected(explain(y=Y[:, 0]), "y")  # (N,) against (N, 1) predictions would broadcast
    assert_rejected(explain(epochs=2, epoch=2), "epoch")
    assert_rejected(explain(epochs=0), "epochs")
    other = torch.optim.SGD(torch_model().parameters(), lr=0.1)
    assert_rejected(explain(optimizer=other), "optimizer")
    assert_rejected(explain(metrics=[lambda t, p: 0.0]), "metrics")
    assert_rejected(explain(validation_data=X), "validation_data")
