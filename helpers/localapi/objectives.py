"""What a training step computes: the objective of each fine-tuning method (`method.type` of a job).

The training loop (trainer.train) is the same for every method: batches, micro-batches, gradient accumulation,
the optimiser, validation, checkpoints, the resumable state. An objective says what one micro-batch costs:

- `Supervised`: the cross-entropy of the assistant tokens (trainer.batch_loss), averaged over the labelled
  tokens of a batch; metrics `loss` and `mean_token_accuracy` (OpenAI's supervised metrics).
- `Dpo`: Direct Preference Optimization (Rafailov et al., 2023) on pairs of answers to the same input. For each
  pair it sums the log-probabilities of the preferred and the non-preferred answer's tokens under the model being
  trained (the policy) and under the frozen reference, and `dpo_loss` turns the four numbers into
  -log sigmoid(beta * ((policy_c - ref_c) - (policy_r - ref_r))), averaged over the pairs of a batch.
  The reference is the model the job starts from (the base, or the base with the fine-tuned model's adapter): the
  policy starts as a copy of it, so before the first update both give the same log-probabilities and the loss is
  exactly ln 2. No second copy of the model is kept: the reference's log-probabilities of every pair are computed
  once, before the first step, with the same micro-batches as the first epoch (so the first step's loss is ln 2 to
  the last digit), and kept in the resumable training state. Metrics: `loss`, `accuracy` (the share of pairs whose
  preferred answer has the larger implicit reward beta * (policy - ref)) and `reward_margin` (its mean difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from helpers.localapi import trainer

DEFAULT_BETA = 0.1  # `beta: "auto"`: OpenAI publishes no value; the DPO paper's and TRL's default (docs/ARCHITECTURE.md)
DPO_LEARNING_RATE_FACTOR = 0.1  # DPO's base rate = the model's supervised LoRA rate x this (docs/ARCHITECTURE.md)


@dataclass
class Tally:
    """Sums over the items of a batch or a validation set; the objective turns them into metrics."""

    loss: float = 0.0
    correct: float = 0.0  # tokens predicted right (supervised) or pairs ranked right (DPO)
    margin: float = 0.0  # DPO: summed reward margins
    count: int = 0  # what the loss is averaged over: labelled tokens (supervised) or pairs (DPO)
    tokens: int = 0  # tokens processed, without padding
    labelled: int = 0  # of them, the tokens whose log-probability was scored

    def add(self, other: "Tally") -> None:
        """Add another micro-batch's sums."""
        self.loss += other.loss
        self.correct += other.correct
        self.margin += other.margin
        self.count += other.count
        self.tokens += other.tokens
        self.labelled += other.labelled


@dataclass
class Env:
    """Where a run computes: device, precision, padding token, micro-batch budget."""

    device: str
    precision: str
    pad_id: int
    micro_batch_tokens: int = trainer.MAX_BATCH_TOKENS


@dataclass
class Supervised:
    """Next-token cross-entropy on the assistant tokens of chat examples (trainer.Example)."""

    name: str = "supervised"

    def size(self, item: trainer.Example) -> int:
        """Padded tokens the item adds to a micro-batch (its length)."""
        return len(item.input_ids)

    def weight(self, item: trainer.Example) -> int:
        """What the item adds to a batch's denominator: its labelled tokens."""
        return item.n_trainable

    def loss(self, model: Any, items: list[trainer.Example], env: Env) -> tuple[Any, Tally]:
        """The summed token loss of a micro-batch (a tensor, for backward) and its tally."""
        tensors = trainer.collate(items, env.pad_id, env.device)
        loss, correct, n = trainer.batch_loss(model, tensors, env.device, env.precision)
        return loss, Tally(float(loss.detach()), correct, 0.0, n, tensors["tokens"], n)

    def metrics(self, tally: Tally) -> dict[str, float]:
        """OpenAI's supervised metrics (prefixed train_/valid_/full_valid_ by the loop)."""
        return {"loss": tally.loss / max(tally.count, 1), "mean_token_accuracy": tally.correct / max(tally.count, 1)}

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state of this objective must match (nothing beyond the run's own fingerprint)."""
        return {}

    def state(self, train_items: list, valid_items: list) -> dict[str, Any]:
        """What the resumable state must keep for this objective (nothing)."""
        return {}

    def load_state(self, state: dict[str, Any], train_items: list, valid_items: list) -> None:
        """Restore `state()` (nothing to restore)."""


def dpo_loss(policy_chosen: Any, policy_rejected: Any, reference_chosen: Any, reference_rejected: Any,
             beta: float) -> tuple[Any, Any]:
    """DPO's loss per pair and its reward margin beta * ((pi_c - ref_c) - (pi_r - ref_r)) (log-probabilities summed
    over each answer's tokens): the loss is -log sigmoid(margin), ln 2 when the policy is the reference."""
    import torch.nn.functional as F

    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin), margin.detach()


@dataclass
class Dpo:
    """Direct Preference Optimization against the frozen reference (the model the job starts from)."""

    beta: float = DEFAULT_BETA
    name: str = "dpo"

    def size(self, item: trainer.Pair) -> int:
        """Padded tokens a pair adds to a micro-batch: two rows (chosen, rejected) as wide as the longer one."""
        return 2 * max(len(item.chosen.input_ids), len(item.rejected.input_ids))

    def weight(self, item: trainer.Pair) -> int:
        """A pair counts once in a batch's mean."""
        return 1

    def loss(self, model: Any, items: list[trainer.Pair], env: Env) -> tuple[Any, Tally]:
        """The summed DPO loss of a micro-batch of pairs (a tensor, for backward) and its tally."""
        import torch

        logps, tensors = self._logps(model, items, env)
        n = len(items)
        reference = torch.tensor([p.reference for p in items], dtype=logps.dtype, device=logps.device)
        losses, margins = dpo_loss(logps[:n], logps[n:], reference[:, 0], reference[:, 1], self.beta)
        loss = losses.sum()
        labelled = sum(p.chosen.n_trainable + p.rejected.n_trainable for p in items)
        return loss, Tally(float(loss.detach()), float((margins > 0).sum()), float(margins.sum()), n,
                           tensors["tokens"], labelled)

    def metrics(self, tally: Tally) -> dict[str, float]:
        """DPO's metrics: mean loss, the share of pairs ranked right, the mean reward margin."""
        n = max(tally.count, 1)
        return {"loss": tally.loss / n, "accuracy": tally.correct / n, "reward_margin": tally.margin / n}

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state of this objective must match."""
        return {"method": self.name, "beta": self.beta}

    def state(self, train_items: list[trainer.Pair], valid_items: list[trainer.Pair]) -> dict[str, Any]:
        """The reference log-probabilities of every pair (computed once, at the run's start)."""
        return {"reference": {"train": [list(p.reference) for p in train_items],
                              "valid": [list(p.reference) for p in valid_items]}}

    def load_state(self, state: dict[str, Any], train_items: list[trainer.Pair], valid_items: list[trainer.Pair]) -> None:
        """Put the saved reference log-probabilities back on the pairs."""
        saved = state.get("reference") or {}
        for items, key in ((train_items, "train"), (valid_items, "valid")):
            values = saved.get(key) or []
            if len(values) != len(items):
                raise trainer.ResumeStateError("the saved training state of this job has no reference "
                                               "log-probabilities for its preference pairs")
            for pair, value in zip(items, values):
                pair.reference = (float(value[0]), float(value[1]))

    def _logps(self, model: Any, items: list[trainer.Pair], env: Env) -> tuple[Any, dict[str, Any]]:
        """Summed answer log-probabilities of the chosen rows, then the rejected rows, of a micro-batch."""
        tensors = trainer.collate([p.chosen for p in items] + [p.rejected for p in items], env.pad_id, env.device)
        return trainer.sequence_logps(model, tensors, env.device, env.precision), tensors

    def score_reference(self, model: Any, items: list[trainer.Pair], groups: list[list[int]], env: Env,
                        should_stop: Callable[[], bool]) -> bool:
        """Set each pair's reference log-probabilities with the model as it is now (the run's start), one
        micro-batch of `groups` at a time, without gradients; False when stopped."""
        import torch

        with torch.no_grad():
            for group in groups:
                if should_stop():
                    return False
                logps, _ = self._logps(model, [items[i] for i in group], env)
                values = logps.tolist()
                for k, i in enumerate(group):
                    items[i].reference = (values[k], values[k + len(group)])
        return True

    def reference_tally(self, items: list[trainer.Pair]) -> Tally:
        """The tally of the reference scored against itself (the run's start): loss ln 2 per pair, margin 0."""
        import torch

        reference = torch.tensor([p.reference for p in items], dtype=torch.float32)
        losses, margins = dpo_loss(reference[:, 0], reference[:, 1], reference[:, 0], reference[:, 1], self.beta)
        return Tally(float(losses.sum()), float((margins > 0).sum()), float(margins.sum()), len(items))


def for_method(method: str, beta: float | None = None) -> Supervised | Dpo:
    """The objective of a job's `method.type`."""
    if method == "supervised":
        return Supervised()
    if method == "dpo":
        value = DEFAULT_BETA if beta is None else float(beta)
        if not 0 < value <= 2 or math.isnan(value):
            raise ValueError(f"beta must be in (0, 2], not {value}")
        return Dpo(value)
    raise ValueError(f"unknown fine-tuning method {method!r} (supervised or dpo)")


