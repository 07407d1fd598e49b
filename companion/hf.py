"""Explain the ``loss`` the Hugging Face ``Trainer`` logged, at every logging step.

What the Trainer logs (transformers 5.25, read from its source, checked in
``tests/test_hf.py``). An optimizer step runs ``k`` micro-batches (``k`` =
``gradient_accumulation_steps``, fewer for an epoch's last step); for micro-batch ``m`` the
model returns ``loss_m`` and ``training_step`` reports

    l_m = loss_m                 if the model received num_items_in_batch = N: then
                                 loss_m = (sum of m's token losses) / N, N counted over the step
    l_m = loss_m / k             otherwise: loss_m is m's own mean over its tokens

The Trainer sums the ``l_m`` and, at a logging step, logs ``loss = sum / S``, ``S`` the
optimizer steps since the last log. So ``loss`` is a mean over optimizer steps of

* the step's token mean, ``sum_m token losses / N``, for a model whose ``forward`` takes
  ``**kwargs`` (the fix of transformers#34191, 4.46; trl#2175 reported the same gap);
* the plain mean of its micro-batches' means, each counting alike whatever its number of
  tokens, for a model whose ``forward`` takes no ``**kwargs``: the rule every model had up to
  transformers 4.45.

``N`` is the Trainer's count of labels other than -100 over the step's micro-batches:
``labels[..., 1:]`` for a model whose ``loss_type`` is ``"ForCausalLM"``, but every label when
``loss_type`` is None, which in 5.25 is the case of ``GPT2LMHeadModel`` (its class name has no
"ForCausalLM"): one label per row more than the loss averages over, so its ``loss`` and its
gradient are smaller by that ratio.

:class:`Explain` is a thin adapter: hooks on the model's forward pass feed a
:class:`companion.reconcile_torch.Recorder` with each training micro-batch (its inputs, labels,
logits and the loss the Trainer reports), and at each log it splits the logged ``loss`` with
:func:`companion.reconcile.decompose`, the Trainer's rule as the averaging rule. A "epoch" of
the result is a logging window: the steps one logged ``loss`` averages over.

>>> trainer = transformers.Trainer(model=model, args=args, train_dataset=data)  # doctest: +SKIP
>>> explain = Explain(trainer)      # refuses, by name, what it cannot replay  # doctest: +SKIP
>>> trainer.train()                                                          # doctest: +SKIP
>>> r = explain.result()            # the last logged loss; r.epochs[k], each  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import replace

from companion import _validation as check

__all__ = ["Explain", "causal_lm_loss", "causal_lm_tokens"]

IGNORE_INDEX = -100
# What a Trainer's model is called with besides its inputs.
_NOT_INPUTS = ("labels", "num_items_in_batch")


def __getattr__(name: str):
    # The callback subclasses transformers' TrainerCallback, so it is made on first use:
    # importing this module must not import PyTorch.
    if name == "Explain":
        import transformers

        cls = type("Explain", (_Explain, transformers.TrainerCallback),
                   {"__module__": __name__, "__doc__": _Explain.__doc__})
        globals()["Explain"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def causal_lm_loss(logits, labels):
    """A causal language model's loss: the mean next-token cross-entropy over the labels that
    are not -100, label ``t + 1`` predicted at position ``t``, in float32."""
    import torch

    return torch.nn.functional.cross_entropy(
        logits[..., :-1, :].reshape(-1, logits.shape[-1]).float(),
        labels[..., 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def causal_lm_tokens(logits, labels):
    """What :func:`causal_lm_loss` divides by: the predicted labels that are not -100."""
    return (labels[..., 1:] != IGNORE_INDEX).sum().float()


class _Explain:
    """Explains each ``loss`` a ``transformers.Trainer`` logs; attach it with
    ``Explain(trainer)`` before ``trainer.train()``.

    ``loss_fn(logits, labels)`` is the model's loss as a mean over what it averages
    (default :func:`causal_lm_loss`), ``denominator(logits, labels)`` that count (default
    :func:`causal_lm_tokens`): the shares a per-token mean gives each micro-batch. After
    training, :meth:`result` returns the :class:`~companion.reconcile.Reconciliation` of a
    logged ``loss``, every logged one in ``epochs``.
    """

    def __init__(self, trainer, *, loss_fn=causal_lm_loss, denominator=causal_lm_tokens):
        refuse_what_cannot_be_explained(trainer)
        from companion.reconcile_torch import Recorder

        check.function("loss_fn", loss_fn, "loss_fn(logits, labels)")
        check.function("denominator", denominator, "denominator(logits, labels)")
        self.trainer, self.model = trainer, trainer.model
        # One recorder a logging window: each window is explained once, when it is logged.
        self._new_recorder = lambda: Recorder(self.model, loss_fn=loss_fn,
                                              denominator=denominator, forward=_logits)
        self._recorder = self._new_recorder()
        self._windows = []  # one Reconciliation per logged loss
        self._counted = []  # per micro-batch of the window: (step, scaled, N, tokens)
        self._last_logged, self._busy = 0, False
        self._hooks = [self.model.register_forward_pre_hook(self._before, with_kwargs=True),
                       self.model.register_forward_hook(self._after, with_kwargs=True)]
        trainer.add_callback(self)

    # --- the model's forward pass: one training micro-batch ----------------------------------

    def _before(self, model, args, kwargs):
        if self._busy or not model.training or kwargs.get("labels") is None:
            return
        with self._own_passes():
            self._recorder.before(_inputs(kwargs), kwargs["labels"],
                                  size=len(kwargs["labels"]))

    def _after(self, model, args, kwargs, output):
        if self._busy or not model.training or kwargs.get("labels") is None:
            return
        items = kwargs.get("num_items_in_batch")
        scaled = getattr(self.trainer, "loss_is_scaled_for_ga", None)
        scaled = items is not None if scaled is None else scaled
        if scaled and items is None:
            raise ValueError("loss_is_scaled_for_ga=True, but the model received no "
                             "num_items_in_batch: the callback cannot tell what it divided by")
        steps = getattr(self.trainer, "current_gradient_accumulation_steps",
                        self.trainer.args.gradient_accumulation_steps)
        loss, logits = (output["loss"], output["logits"]) if isinstance(output, Mapping) \
            else output[:2]
        loss, logits, labels = loss.detach(), logits.detach(), kwargs["labels"]
        tokens = float(self._recorder.denominator(logits, labels))
        with self._own_passes():
            if scaled:  # loss_m = token-loss sum / N: times N / tokens, m's own mean
                self._recorder.after(loss, logits, divided_by=float(items) / tokens)
            else:  # training_step divides m's mean by the step's micro-batches
                self._recorder.after(loss / steps, logits, divided_by=steps)
        self._counted.append((self.trainer.state.global_step, scaled,
                              math.nan if items is None else float(items), tokens))

    @contextlib.contextmanager
    def _own_passes(self):
        # The recorder's own forward passes must not be taken for training micro-batches.
        self._busy = True
        try:
            yield
        finally:
            self._busy = False

    # --- the Trainer's hooks -----------------------------------------------------------------

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        optimizer_steps = state.global_step - self._last_logged
        self._last_logged = state.global_step
        with self._own_passes():
            self._recorder.end_epoch(logs["loss"])
            local = self._recorder.result(check_residuals_=False)
        self._recorder = self._new_recorder()
        self._windows.append(explain_window(
            local.steps, logged=logs["loss"], optimizer_steps=optimizer_steps,
            counted=self._counted, window=len(self._windows)))
        self._counted = []

    def on_train_end(self, args, state, control, **kwargs):
        for hook in self._hooks:
            hook.remove()

    # --- the result -------------------------------------------------------------------------

    def result(self, window: int = -1):
        """The :class:`~companion.reconcile.Reconciliation` of a logged ``loss`` (0-based,
        negative from the end), every logged one in ``epochs``; raises
        :class:`~companion.reconcile.ReconciliationError` if one's parts do not add up."""
        from companion.reconcile import History, check_residuals

        if not self._windows:
            raise RuntimeError("no loss was logged yet: call result() after trainer.train(), "
                               "with logging_steps no larger than the run")
        window = check.integer("window", window, minimum=-len(self._windows))
        if window >= len(self._windows):
            raise ValueError(f"window must be from {-len(self._windows)} to "
                             f"{len(self._windows) - 1}, got {window}")
        history = History({"loss": [w.logged for w in self._windows]})
        windows = tuple(replace(w, history=history) for w in self._windows)
        chosen = replace(windows[window], epochs=windows)
        check_residuals(chosen, what="the Trainer")
        return chosen


def explain_window(steps, *, logged: float, optimizer_steps: int, counted, window: int):
    """A logged ``loss`` split into parts: ``steps`` the window's micro-batches as the Recorder
    measured them, ``counted`` each one's ``(optimizer step, scaled, N, tokens)``."""
    from companion.reconcile import Average, decompose

    scaled = {c[1] for c in counted}
    if scaled == {True}:
        name = (f"as the mean over {optimizer_steps} optimizer step(s) of each step's token-loss "
                "sum divided by the Trainer's token count num_items_in_batch")
    else:
        name = (f"as the mean over {optimizer_steps} optimizer step(s) of each step's micro-batch "
                "means, every micro-batch counting alike whatever its tokens (the Trainer's "
                "rule for a model whose forward takes no **kwargs; every model's before "
                "transformers 4.46, transformers#34191)")
    rule = Average(name, lambda values, sizes: values.sum() / optimizer_steps)
    counts = [s.count for s in steps]
    evaluated = sum(c * (s.inference_end if math.isnan(s.final) else s.final)
                    for c, s in zip(counts, steps)) / sum(counts)
    return decompose(steps, logged=logged, evaluated=evaluated, average=rule, epoch=window,
                     notes=_count_notes(steps, counted, optimizer_steps))


def _count_notes(steps, counted, optimizer_steps: int) -> tuple[str, ...]:
    """Where the Trainer's token count ``N`` is not what the loss averages over (``t``), each
    step's logged value is ``t / N`` of its token mean: say how much of the averaging rule's
    part that is."""
    totals = {}  # optimizer step -> [N, t, sum of the reported values]
    for s, (step, scaled, items, tokens) in zip(steps, counted):
        if scaled:
            total = totals.setdefault(step, [items, 0.0, 0.0])
            total[1] += tokens
            total[2] += s.reported
    off = {step: v for step, v in totals.items() if v[0] != v[1]}
    if not off:
        return ()
    share = sum(value * (1 - n / t) for n, t, value in off.values()) / optimizer_steps
    return (f"num_items_in_batch counted {sum(v[0] for v in off.values()):g} labels where the "
            f"loss averages over {sum(v[1] for v in off.values()):g} predicted ones: it counts "
            "each row's first label, which a causal LM never predicts (transformers 5.25, a "
            "model whose loss_type is None, e.g. GPT2LMHeadModel), so each step logged t/N of "
            f"its token mean and its gradient was as much smaller; {share:+.4f} of the "
            "averaging rule's part comes from this count",)


def refuse_what_cannot_be_explained(trainer) -> None:
    """Raise, naming the setting, for a Trainer whose micro-batches cannot be replayed."""
    import transformers

    check.instance("trainer", trainer, transformers.Trainer)
    args = trainer.args
    if trainer.model is None:
        raise ValueError("trainer has no model (model_init builds it in train()): pass model=")
    if args.world_size > 1 or args.n_gpu > 1:
        raise ValueError(f"trainer runs {max(args.world_size, args.n_gpu)} processes or devices: "
                         "the callback explains a Trainer on one device")
    for setting in ("fp16", "bf16", "torch_compile"):
        if getattr(args, setting, False):
            raise ValueError(f"{setting}=True cannot be explained: the callback replays the model "
                             "in float32, uncompiled; train with the default settings")
    if getattr(args, "deepspeed", None) or getattr(args, "fsdp", None):
        raise ValueError("deepspeed and fsdp cannot be explained: the callback needs the whole "
                         "model in one process")
    if getattr(trainer, "compute_loss_func", None) is not None:
        raise ValueError("compute_loss_func cannot be explained: the Trainer's loss is not the "
                         "model's; pass the same function as loss_fn and train without it")
    if args.label_smoothing_factor:
        raise ValueError(f"label_smoothing_factor={args.label_smoothing_factor} cannot be "
                         "explained: the Trainer smooths the loss outside the model")


def _inputs(kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if k not in _NOT_INPUTS}


def _logits(model, inputs):
    output = model(**inputs)
    return output["logits"] if isinstance(output, Mapping) else output[0]
