"""companion.lightning: what PyTorch Lightning logs, and the callback that explains it.

Every number Lightning logs is first recomputed here from the values each step logged, recorded
by the module itself (not by the companion); then each part the callback reports is checked
against a computation of its own: closed forms at lr = 0, and, with lr > 0 and dropout, each
step's loss at its own weights and at the epoch's last ones, from weights the module saved.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings

import numpy as np
import pytest

pl = pytest.importorskip("pytorch_lightning", reason="the lightning extra is not installed: "
                         "pip install 'companion[lightning]'")
import torch  # noqa: E402  (after the skip: the extra brings PyTorch)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from companion import lightning  # noqa: E402
from companion.reconcile import TOLERANCE, ReconciliationError  # noqa: E402

pytestmark = pytest.mark.lightning

for _name in ("pytorch_lightning", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)


class Tiny(pl.LightningModule):
    """A two-layer regression whose steps write down what they log, their batch and the
    weights they started from: the independent record the tests check against.

    ``shards``: each process trains on its own slice of 11 samples (5 and 6), without
    DistributedSampler; ``record``: a file each process appends its steps to (DDP)."""

    def __init__(self, *, lr=0.1, dropout=0.0, sync=False, shards=False, record=None,
                 batch_size=4, train=10, accumulate=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                       torch.nn.Dropout(dropout), torch.nn.Linear(8, 1))
        self.lr, self.sync, self.shards, self.record = lr, sync, shards, record
        self.batch_size, self.train_size = batch_size, train
        self.steps, self.val_steps = [], []

    def forward(self, x):
        return self.net(x)

    def train_dataloader(self):
        x, y = data(self.train_size, seed=1)
        if self.shards:
            part = slice(0, 5) if self.global_rank == 0 else slice(5, 11)
            x, y = x[part], y[part]
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=not self.shards)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*data(7, seed=2)), batch_size=3)

    def on_train_batch_start(self, batch, batch_idx):
        self._weights = copy.deepcopy(self.net.state_dict())

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True, sync_dist=self.sync)
        self.steps.append({"epoch": self.current_epoch, "size": len(x), "loss": loss.item(),
                           "x": x, "y": y, "weights": self._weights})
        if self.record:
            with open(self.record, "a") as file:
                file.write(json.dumps({"rank": self.global_rank, "epoch": self.current_epoch,
                                       "size": len(x), "loss": loss.item()}) + "\n")
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss, sync_dist=self.sync)
        if not self.trainer.sanity_checking:
            self.val_steps.append({"epoch": self.current_epoch, "size": len(x),
                                   "loss": loss.item()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def trainer(callbacks=(), **kwargs):
    settings = dict(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0)
    return pl.Trainer(callbacks=list(callbacks), **{**settings, **kwargs})


def fit(module, callbacks=(), **kwargs):
    run = trainer(callbacks, **kwargs)
    with warnings.catch_warnings():  # "no workers in the DataLoader" and the like
        warnings.simplefilter("ignore")
        run.fit(module)
    return run


def within(value, expected, scale=1.0):
    return abs(value - expected) <= TOLERANCE * max(1.0, abs(scale))


def mse(net, weights, x, y, *, train=False):
    """The loss of ``net`` with ``weights`` on one batch, in float64 arithmetic at the end."""
    net = copy.deepcopy(net)
    net.load_state_dict(weights)
    net.train(train)
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(net(x), y))


# --- what Lightning logs (no companion involved) ----------------------------------------------


def test_lightning_logs_the_batch_size_weighted_mean_of_the_steps():
    module = Tiny(lr=0.1)
    run = fit(module)
    for epoch in range(2):
        steps = [s for s in module.steps if s["epoch"] == epoch]
        sizes = np.array([s["size"] for s in steps])
        losses = np.array([s["loss"] for s in steps])
        assert sizes.tolist() == [4, 4, 2]
        weighted = sizes @ losses / sizes.sum()
        assert not within(weighted, losses.mean())  # the last, smaller batch counts less
    assert within(float(run.callback_metrics["train_loss"]), weighted)


# --- the callback, one process ------------------------------------------------------------------


def test_at_lr_0_without_dropout_every_part_is_zero_and_logged_is_the_data_loss():
    module = Tiny(lr=0.0)
    explain = lightning.Explain(torch.nn.functional.mse_loss)
    fit(module, [explain])
    r = explain.result()
    x, y = data(10, seed=1)
    weights = module.steps[0]["weights"]
    # Closed form: the weights never move and nothing acts only in training, so the logged
    # loss is the mean loss over the data at the first weights.
    assert within(r.evaluated, mse(module.net, weights, x, y))
    assert within(r.logged, r.evaluated)
    assert all(abs(value) <= TOLERANCE for value in r.parts.values()), r.parts
    assert "averaging rule" not in r.parts  # per-sample means weighted by size: per sample
    assert abs(r.residual) <= TOLERANCE * max(1, abs(r.logged))
    # val_loss: the mean over the 7 validation samples at the same weights
    assert within(r.validation.val_loss, mse(module.net, weights, *data(7, seed=2)))
    assert within(r.validation.parts["training vs validation data"], r.logged - r.validation.val_loss)


def test_each_part_matches_a_computation_from_the_steps_own_record():
    module = Tiny(lr=0.1, dropout=0.3)
    explain = lightning.Explain(torch.nn.functional.mse_loss)
    run = fit(module, [explain])
    r = explain.result()
    assert [e.logged for e in r.epochs] == r.history.history["loss"]
    for epoch, explained in enumerate(r.epochs):
        steps = [s for s in module.steps if s["epoch"] == epoch]
        # The epoch's last weights: where the next epoch began, or the trained ones.
        following = [s["weights"] for s in module.steps if s["epoch"] == epoch + 1]
        end = following[0] if following else module.net.state_dict()
        share = np.array([s["size"] for s in steps]) / sum(s["size"] for s in steps)
        logged = np.array([s["loss"] for s in steps])
        at_start = np.array([mse(module.net, s["weights"], s["x"], s["y"]) for s in steps])
        at_end = np.array([mse(module.net, end, s["x"], s["y"]) for s in steps])
        assert within(explained.logged, share @ logged)  # Lightning's rule, by hand
        assert within(explained.parts["training-mode layers"], share @ (logged - at_start))
        assert within(explained.parts["weights moved during the epoch"], share @ (at_start - at_end))
        assert within(explained.evaluated, share @ at_end)
        assert abs(explained.residual) <= TOLERANCE * max(1, abs(explained.logged))
        assert abs(explained.parts["training-mode layers"]) > 1e-3  # dropout is on
        # val_loss: the size-weighted mean of the validation batches at the epoch's end
        val = [s for s in module.val_steps if s["epoch"] == epoch]
        expected = sum(s["size"] * s["loss"] for s in val) / sum(s["size"] for s in val)
        assert within(explained.validation.val_loss, expected)
        assert abs(explained.validation.residual) <= TOLERANCE * max(1, abs(expected))
    assert within(r.logged, float(run.callback_metrics["train_loss"]))
    assert within(r.validation.val_loss, float(run.callback_metrics["val_loss"]))


def test_the_callback_changes_nothing_in_training():
    plain, explained = Tiny(lr=0.1, dropout=0.3), Tiny(lr=0.1, dropout=0.3)
    torch.manual_seed(5)
    fit(plain)
    torch.manual_seed(5)
    fit(explained, [lightning.Explain(torch.nn.functional.mse_loss)])
    assert [s["loss"] for s in plain.steps] == [s["loss"] for s in explained.steps]


def test_gradient_accumulation_logs_the_undivided_loss():
    module = Tiny(lr=0.1, dropout=0.3)
    explain = lightning.Explain(torch.nn.functional.mse_loss)
    fit(module, [explain], accumulate_grad_batches=2)
    r = explain.result()
    steps = [s for s in module.steps if s["epoch"] == 1]
    assert within(r.logged, sum(s["size"] * s["loss"] for s in steps) / 10)
    assert [s.reported for s in r.steps] == pytest.approx([s["loss"] for s in steps], rel=1e-6)
    assert abs(r.residual) <= TOLERANCE * max(1, abs(r.logged))


# --- DDP: two processes on gloo -----------------------------------------------------------------


def ddp(tmp_path, **module_kwargs):
    """A two-process DDP run (forked: no second import of PyTorch), its explanation, and what
    each process's steps wrote down."""
    record = tmp_path / "steps.jsonl"
    explain = lightning.Explain(torch.nn.functional.mse_loss)
    run = fit(Tiny(record=str(record), **module_kwargs), [explain], devices=2,
              strategy="ddp_fork", use_distributed_sampler=not module_kwargs.get("shards"))
    steps = [json.loads(line) for line in record.read_text().splitlines()]
    return run, explain.result(), steps


def by_rank(steps, epoch):
    ranks = [[s for s in steps if s["rank"] == rank and s["epoch"] == epoch] for rank in (0, 1)]
    return [(np.array([s["size"] for s in r]), np.array([s["loss"] for s in r])) for r in ranks]


@pytest.mark.parametrize("sync", [True, False], ids=["sync_dist", "no sync_dist"])
def test_ddp_on_gloo_at_lr_0_closed_forms(tmp_path, sync):
    # Shards of 5 and 6 samples in batches of 2: 11 samples, which 2 processes do not divide.
    run, r, steps = ddp(tmp_path, lr=0.0, sync=sync, shards=True, batch_size=2, train=11)
    (n0, v0), (n1, v1) = by_rank(steps, epoch=1)
    sizes, values = np.concatenate([n0, n1]), np.concatenate([v0, v1])
    per_sample = sizes @ values / sizes.sum()
    if sync:  # both sums averaged over 2 processes, the count in integers: 11/2 -> 5
        expected = sizes @ values / 2 / 5
    else:  # rank 0 logs its own batches
        expected = n0 @ v0 / n0.sum()
    assert within(float(run.callback_metrics["train_loss"]), expected)  # Lightning, by hand
    assert within(r.logged, expected)
    # lr = 0, no dropout: the whole gap is the averaging rule, logged minus the per-sample mean
    assert within(r.evaluated, per_sample)
    assert within(r.parts["averaging rule"], expected - per_sample)
    assert abs(r.parts["averaging rule"]) > 1e-3
    others = {k: v for k, v in r.parts.items() if k != "averaging rule"}
    assert all(abs(value) <= TOLERANCE for value in others.values()), others
    assert abs(r.residual) <= TOLERANCE * max(1, abs(r.logged))
    assert ("21859" in r.average) == sync and ("rank 0" in r.average) == (not sync)


def test_ddp_with_distributed_sampler_dropout_and_validation(tmp_path):
    run, r, steps = ddp(tmp_path, lr=0.1, dropout=0.3, sync=True, batch_size=2, train=11)
    for epoch, explained in enumerate(r.epochs):
        (n0, v0), (n1, v1) = by_rank(steps, epoch)
        sizes, values = np.concatenate([n0, n1]), np.concatenate([v0, v1])
        assert sizes.sum() == 12  # 11 samples, one repeated by DistributedSampler
        assert within(explained.logged, sizes @ values / 12)
        assert abs(explained.residual) <= TOLERANCE * max(1, abs(explained.logged))
        assert abs(explained.validation.residual) <= TOLERANCE * max(1, abs(explained.logged))
        assert any("repeated 1 sample" in note for note in explained.notes)
    assert within(r.validation.val_loss, float(run.callback_metrics["val_loss"]))


# --- refusals, by name, before training ----------------------------------------------------------


@pytest.mark.parametrize("setting, name", [
    ({"precision": "bf16-mixed"}, "precision"),
    ({"val_check_interval": 0.5}, "val_check_interval"),
    ({"val_check_interval": 2}, "val_check_interval"),  # every 2 training batches
])
def test_refuses_what_it_cannot_replay_before_training(setting, name):
    module = Tiny()
    with pytest.raises(ValueError, match=name):
        fit(module, [lightning.Explain(torch.nn.functional.mse_loss)], **setting)
    assert module.steps == []


def test_refuses_manual_optimization_before_training():
    module = Tiny()
    module.automatic_optimization = False
    with pytest.raises(ValueError, match="automatic_optimization"):
        fit(module, [lightning.Explain(torch.nn.functional.mse_loss)])
    assert module.steps == []


def test_a_name_that_was_not_logged_is_refused_by_name():
    with pytest.raises(KeyError, match="'loss'"):
        fit(Tiny(), [lightning.Explain(torch.nn.functional.mse_loss, logged="loss")])


def test_a_batch_that_is_no_pair_needs_split():
    explain = lightning.Explain(torch.nn.functional.mse_loss)
    with pytest.raises(TypeError, match="split"):
        explain.split({"x": torch.ones(2, 3)})
    explain = lightning.Explain(torch.nn.functional.mse_loss, split=lambda b: (b["x"], b["y"]))
    assert explain.split({"x": 1, "y": 2}) == (1, 2)


@pytest.mark.parametrize("kwargs, name", [
    ({"loss_fn": 3}, "loss_fn"), ({"logged": ""}, "logged"), ({"val_logged": 2}, "val_logged"),
    ({"split": "x"}, "split"), ({"forward": 1}, "forward"), ({"criterion": []}, "criterion"),
])
def test_bad_arguments_are_refused_by_name(kwargs, name):
    arguments = {"loss_fn": torch.nn.functional.mse_loss, **kwargs}
    with pytest.raises(TypeError, match=name):
        lightning.Explain(**arguments)


def test_result_before_fit_says_what_to_do():
    with pytest.raises(RuntimeError, match="after trainer.fit"):
        lightning.Explain(torch.nn.functional.mse_loss).result()


def test_a_loss_the_steps_did_not_log_leaves_a_residual_that_is_named():
    class Scaled(Tiny):  # logs twice the loss it trains on
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", 2 * loss, on_epoch=True)
            return loss

    explain = lightning.Explain(torch.nn.functional.mse_loss)
    fit(Scaled(), [explain])
    with pytest.raises(ReconciliationError, match="could not reconcile"):
        explain.result()


# --- Lightning's rule as an averaging rule ------------------------------------------------------


def test_lightning_average_is_each_of_lightnings_rules():
    values, sizes = [1.0, 3.0, 2.0, 4.0], [2, 1, 2, 2]  # rank 0: 2 steps, rank 1: 2 steps
    per_sample = (2 * 1 + 3 + 2 * 2 + 2 * 4) / 7
    assert lightning.lightning_average([sizes], sync=True)(values, sizes) == pytest.approx(per_sample)
    rule = lightning.lightning_average([[2, 1], [2, 2]], sync=True)
    assert rule(values, sizes) == pytest.approx(per_sample * 7 / 2 / 3)  # floor(7 / 2) = 3
    rule = lightning.lightning_average([[2, 1], [2, 2]], sync=False)
    assert rule(values, sizes) == pytest.approx((2 * 1 + 3) / 3)
    even = lightning.lightning_average([[2, 2], [2, 2]], sync=True)
    assert even.name == "weighted by batch size"
    assert not math.isnan(even([1.0] * 4, [2] * 4))


@pytest.mark.parametrize("batch_sizes", [[], [[]], [[0]], "ab", [[1.5]]])
def test_lightning_average_refuses_bad_batch_sizes(batch_sizes):
    with pytest.raises((TypeError, ValueError), match="batch_sizes"):
        lightning.lightning_average(batch_sizes, sync=True)
