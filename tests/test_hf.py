"""companion.hf: what the Hugging Face Trainer logs as ``loss``, and the callback that explains it.

The models are tiny and randomly initialised from a config (no download): a Llama (its forward
takes ``**kwargs``, so the Trainer passes ``num_items_in_batch``: the rule after the fix of
transformers#34191), a GPT-2 (the same, but the Trainer counts one label per row too many),
and a model of our own whose forward takes no ``**kwargs`` (the rule before the fix). The
sequences have different lengths, so micro-batches hold different numbers of tokens: the case
where the rules disagree. Each logged number is first recomputed here from what the training
forward passes computed, recorded by a hook of the test's own; then each part the callback
reports is checked against a computation of its own: closed forms at lr = 0, and, with lr > 0
and dropout, every micro-batch's loss at its step's weights and at the window's last weights.
"""

from __future__ import annotations

import copy
import tempfile

import numpy as np
import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip "
                                   "install 'companion[hf]'")
import torch  # noqa: E402  (after the skip: the extra brings PyTorch)

from companion import hf  # noqa: E402
from companion.reconcile import TOLERANCE, ReconciliationError  # noqa: E402

pytestmark = pytest.mark.hf
VOCAB, BATCH, ACCUMULATE = 32, 3, 2
# Weights drawn wider than the usual 0.02, so that the tokens' losses differ at initialisation
# and the Trainer's rules tell apart even at lr = 0.
SCALE = 0.5


@pytest.fixture(autouse=True, scope="module")
def quiet_and_single_threaded():
    # Tiny matrices: one thread is many times faster than two on a busy 2-core machine.
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


class TinyConfig(transformers.PretrainedConfig):
    model_type = "companion-tiny-lm"

    def __init__(self, vocab_size=VOCAB, hidden=8, dropout=0.0, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.hidden, self.dropout = vocab_size, hidden, dropout
        self.initializer_range = initializer_range


class TinyLM(transformers.PreTrainedModel):
    """A causal LM whose forward takes no ``**kwargs``: the Trainer cannot pass it
    ``num_items_in_batch``, so its loss is a mean over each micro-batch's own tokens."""

    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.drop = torch.nn.Dropout(config.dropout)
        self.head = torch.nn.Linear(config.hidden, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.drop(self.embed(input_ids)))
        loss = None if labels is None else hf.causal_lm_loss(logits, labels)
        return {"loss": loss, "logits": logits}


def model(kind: str, dropout: float = 0.0):
    torch.manual_seed(0)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
            attention_dropout=dropout, initializer_range=SCALE))
    if kind == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
            eos_token_id=0, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
            initializer_range=SCALE))
    return TinyLM(TinyConfig(dropout=dropout, initializer_range=SCALE))


def sequences(n: int = 22, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 13, (n,), generator=g).tolist()
    return [{"input_ids": torch.randint(0, VOCAB, (k,), generator=g)} for k in lengths]


def collate(rows):
    """Pad to the longest row; padding is labelled -100, so no loss counts it."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = row["input_ids"], row["input_ids"], 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Record(transformers.TrainerCallback):
    """The test's own record of every training micro-batch, independent of the companion: its
    optimizer step, inputs, token-loss sum (float64), predicted tokens, the model's loss, the
    num_items_in_batch it was given, and the weights each optimizer step started from."""

    def __init__(self, net):
        self.net, self.micro, self.weights = net, [], []
        net.register_forward_hook(self.forward, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self.weights.append(copy.deepcopy(self.net.state_dict()))

    def forward(self, module, args, kwargs, output):
        if not module.training or kwargs.get("labels") is None or getattr(self, "off", False):
            return
        labels = kwargs["labels"]
        items = kwargs.get("num_items_in_batch")
        self.micro.append({
            "step": len(self.weights) - 1, "labels": labels,
            "inputs": {k: v for k, v in kwargs.items() if k in ("input_ids", "attention_mask")},
            "sum": token_losses(output["logits"], labels).sum().item(),
            "tokens": int((labels[..., 1:] != -100).sum()), "loss": float(output["loss"]),
            "items": None if items is None else float(items)})

    def at(self, weights, micro, *, train=False):
        """A micro-batch's token-loss sum at ``weights``, inference mode unless ``train``."""
        net = copy.deepcopy(self.net)
        net.load_state_dict(weights)
        net.train(train)
        with torch.no_grad():
            return token_losses(net(**micro["inputs"])["logits"], micro["labels"]).sum().item()


def token_losses(logits, labels):
    kept = labels[..., 1:] != -100
    logits = logits.detach()[..., :-1, :][kept].double()
    return torch.nn.functional.cross_entropy(logits, labels[..., 1:][kept], reduction="none")


def train(kind, *, lr=0.0, dropout=0.0, explain=True, logging_steps=2, epochs=2, **settings):
    net = model(kind, dropout)
    with tempfile.TemporaryDirectory() as folder:
        args = transformers.TrainingArguments(
            output_dir=folder, per_device_train_batch_size=BATCH,
            gradient_accumulation_steps=ACCUMULATE, logging_steps=logging_steps,
            num_train_epochs=epochs, learning_rate=lr, report_to=[], use_cpu=True,
            save_strategy="no", disable_tqdm=True, seed=0, **settings)
        trainer = transformers.Trainer(model=net, args=args, train_dataset=sequences(),
                                       data_collator=collate)
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        record = Record(net)
        trainer.add_callback(record)
        explained = hf.Explain(trainer) if explain else None
        trainer.train()
    logged = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history
              if "loss" in entry]
    return trainer, explained, record, logged


def windows(record, logged):
    """The micro-batches each logged loss averages over, grouped by optimizer step."""
    start = 0
    for step, value in logged:
        yield value, step - start, [[m for m in record.micro if m["step"] == s]
                                    for s in range(start, step)]
        start = step


def within(value, expected, scale=1.0):
    return abs(value - expected) <= TOLERANCE * max(1.0, abs(scale))


# --- what the Trainer logs (no companion involved) -------------------------------------------

RULES = {
    # after the fix: each optimizer step's token-loss sum over the step's predicted tokens
    "llama": lambda step: sum(m["sum"] for m in step) / sum(m["tokens"] for m in step),
    # the same sum over the Trainer's count, which has one label per row more
    "gpt2": lambda step: sum(m["sum"] for m in step) / sum(m["tokens"] + len(m["labels"])
                                                           for m in step),
    # before the fix: the plain mean of the micro-batch means
    "tiny": lambda step: np.mean([m["sum"] / m["tokens"] for m in step]),
}


@pytest.mark.parametrize("kind", sorted(RULES))
def test_the_trainer_logs_a_mean_over_optimizer_steps_by_its_rule(kind):
    trainer, _, record, logged = train(kind, explain=False)
    assert trainer.model_accepts_loss_kwargs == (kind != "tiny")
    assert len(logged) == 4  # 22 rows: 4 optimizer steps of 2 micro-batches per epoch
    others = {k: rule for k, rule in RULES.items() if k != kind}
    for value, optimizer_steps, steps in windows(record, logged):
        assert within(value, sum(RULES[kind](step) for step in steps) / optimizer_steps)
        token_mean = (sum(m["sum"] for step in steps for m in step)
                      / sum(m["tokens"] for step in steps for m in step))
        assert not within(value, token_mean)  # no rule is the window's per-token mean
    # the rules differ here: the micro-batches hold different numbers of tokens
    value, optimizer_steps, steps = next(windows(record, logged))
    for rule in others.values():
        assert not within(value, sum(rule(step) for step in steps) / optimizer_steps)
    if kind == "gpt2":  # the Trainer's count, as the model received it: one per row too many
        assert all(m["items"] == sum(n["tokens"] + len(n["labels"]) for n in record.micro
                                     if n["step"] == m["step"]) for m in record.micro)


# --- the callback ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(RULES))
def test_at_lr_0_the_gap_is_the_averaging_rule_in_closed_form(kind):
    trainer, explain, record, logged = train(kind, lr=0.0)
    r = explain.result()
    assert [w.logged for w in r.epochs] == [value for _, value in logged]
    for explained, (value, optimizer_steps, steps) in zip(r.epochs, windows(record, logged)):
        micro = [m for step in steps for m in step]
        token_mean = sum(m["sum"] for m in micro) / sum(m["tokens"] for m in micro)
        # Closed form: no weight moved, no dropout: evaluated is the window's per-token mean,
        # and the averaging rule is all of the gap.
        assert within(explained.evaluated, token_mean)
        assert within(explained.parts["averaging rule"], value - token_mean)
        assert abs(explained.parts["averaging rule"]) > 1e-4
        others = {k: v for k, v in explained.parts.items() if k != "averaging rule"}
        assert all(abs(v) <= TOLERANCE for v in others.values()), others
        assert abs(explained.residual) <= TOLERANCE * max(1, abs(explained.logged))
    assert ("num_items_in_batch counted" in " ".join(r.notes)) == (kind == "gpt2")
    if kind == "gpt2":  # the count's share of the last window's averaging rule, by hand
        value, optimizer_steps, steps = list(windows(record, logged))[-1]
        share = sum(sum(m["sum"] for m in step) / sum(m["items"] for m in step[:1])
                    - sum(m["sum"] for m in step) / sum(m["tokens"] for m in step)
                    for step in steps) / optimizer_steps
        assert f"{share:+.4f} of the averaging rule's part" in r.notes[0]
    assert ("transformers#34191" in r.average) == (kind == "tiny")


@pytest.mark.parametrize("kind", ["gpt2", "tiny"])
def test_each_part_matches_a_computation_from_the_micro_batches_record(kind):
    trainer, explain, record, logged = train(kind, lr=0.05, dropout=0.2)
    r = explain.result()
    for explained, (value, _, steps) in zip(r.epochs, windows(record, logged)):
        micro = [m for step in steps for m in step]
        tokens = np.array([m["tokens"] for m in micro], dtype=float)
        share = tokens / tokens.sum()
        last = micro[-1]["step"] + 1  # the window ends where the next step begins
        end = record.weights[last] if last < len(record.weights) else trainer.model.state_dict()
        trained = np.array([m["sum"] for m in micro]) / tokens
        at_start = np.array([record.at(record.weights[m["step"]], m) for m in micro]) / tokens
        at_end = np.array([record.at(end, m) for m in micro]) / tokens
        assert within(explained.parts["averaging rule"], value - share @ trained)
        assert within(explained.parts["training-mode layers"], share @ (trained - at_start))
        assert within(explained.parts["weights moved during the epoch"], share @ (at_start - at_end))
        assert within(explained.evaluated, share @ at_end)
        assert abs(explained.residual) <= TOLERANCE * max(1, abs(explained.logged))
    assert abs(r.parts["training-mode layers"]) > 1e-4  # dropout is on
    assert abs(r.parts["weights moved during the epoch"]) > 1e-4


def test_the_callback_changes_nothing_in_training():
    _, _, _, plain = train("gpt2", lr=0.05, dropout=0.2, explain=False)
    _, _, _, explained = train("gpt2", lr=0.05, dropout=0.2)
    assert plain == explained


def test_a_window_of_one_step_and_logging_at_each_step():
    _, explain, record, logged = train("llama", lr=0.05, logging_steps=1, epochs=1)
    r = explain.result()
    assert len(r.epochs) == 4
    for explained, (value, optimizer_steps, steps) in zip(r.epochs, windows(record, logged)):
        assert optimizer_steps == 1
        assert abs(explained.residual) <= TOLERANCE * max(1, abs(value))


# --- refusals, by name, before training ---------------------------------------------------------


@pytest.mark.parametrize("setting, name", [
    ({"label_smoothing_factor": 0.1}, "label_smoothing_factor"),
    ({"bf16": True}, "bf16"),
])
def test_refuses_what_it_cannot_replay_before_training(setting, name):
    with pytest.raises(ValueError, match=name):
        train("tiny", **setting)


def test_refuses_a_loss_computed_outside_the_model():
    net = model("tiny")
    with tempfile.TemporaryDirectory() as folder:
        args = transformers.TrainingArguments(output_dir=folder, report_to=[], use_cpu=True)
        trainer = transformers.Trainer(model=net, args=args, train_dataset=sequences(),
                                       data_collator=collate,
                                       compute_loss_func=lambda out, labels, **kw: out["loss"])
    with pytest.raises(ValueError, match="compute_loss_func"):
        hf.Explain(trainer)


@pytest.mark.parametrize("kwargs, name, error", [
    ({"trainer": "trainer"}, "trainer", TypeError),
    ({"loss_fn": 1}, "loss_fn", TypeError),
    ({"denominator": None}, "denominator", TypeError),
])
def test_bad_arguments_are_refused_by_name(kwargs, name, error):
    with tempfile.TemporaryDirectory() as folder:
        args = transformers.TrainingArguments(output_dir=folder, report_to=[], use_cpu=True)
        trainer = transformers.Trainer(model=model("tiny"), args=args)
    arguments = {"trainer": trainer, **kwargs}
    with pytest.raises(error, match=name):
        hf.Explain(arguments.pop("trainer"), **arguments)


def test_result_before_a_log_says_what_to_do():
    with tempfile.TemporaryDirectory() as folder:
        args = transformers.TrainingArguments(output_dir=folder, report_to=[], use_cpu=True)
        trainer = transformers.Trainer(model=model("tiny"), args=args)
    with pytest.raises(RuntimeError, match="after trainer.train"):
        hf.Explain(trainer).result()


def test_a_trainer_that_reports_another_loss_leaves_a_residual_that_is_named():
    class Doubled(transformers.Trainer):  # logs twice the loss it trains on
        def training_step(self, *args, **kwargs):
            return 2 * super().training_step(*args, **kwargs)

    net = model("tiny")
    with tempfile.TemporaryDirectory() as folder:
        args = transformers.TrainingArguments(
            output_dir=folder, per_device_train_batch_size=BATCH, logging_steps=2,
            num_train_epochs=1, report_to=[], use_cpu=True, save_strategy="no",
            disable_tqdm=True)
        trainer = Doubled(model=net, args=args, train_dataset=sequences(), data_collator=collate)
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        explain = hf.Explain(trainer)
        trainer.train()
    with pytest.raises(ReconciliationError, match="could not reconcile"):
        explain.result()


def test_the_causal_lm_loss_is_the_models_own():
    net = model("llama")
    batch = collate(sequences(3))
    with torch.no_grad():
        out = net(**batch)
    assert within(float(hf.causal_lm_loss(out["logits"], batch["labels"])), float(out["loss"]))
    assert float(hf.causal_lm_tokens(out["logits"], batch["labels"])) == float(
        (batch["labels"][:, 1:] != -100).sum())
