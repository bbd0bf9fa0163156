"""LoRA fine-tuning on chat (supervised) or preference (DPO) JSONL files, the way OpenAI's fine-tuning jobs train
(but on this machine).

Runs in the worker process that the API half spawns and needs nothing from the server: `train(spec, on_event,
should_stop)` reads the training file (OpenAI chat format, one `{"messages": [...]}` per line, optional `weight`
0/1 on assistant messages; or, for `TrainSpec.method="dpo"`, OpenAI's preference format), trains a LoRA adapter
on the base model and reports events as plain dicts. This module is the loop (batches, micro-batches, optimiser,
validation, checkpoints, resumable state) and its building blocks; what a step computes, the objective of each
method, is objectives.py (DPO: `objectives.dpo_loss`).

How it trains (see benchmarks/README.md for the measurements behind the defaults):
- Each conversation is rendered with the model's own chat template, message by message, so the tokens are the
  ones the model sees when it answers; the loss covers only the assistant messages (their content and the
  end-of-turn token) whose `weight` is not 0. Logits are computed only at those positions, which saves the
  49152-wide output layer on every prompt token.
- Tool-calling examples (OpenAI's `tools`, assistant `tool_calls`, `tool` messages) are rendered with the same
  template where it renders tools (models.supports_tools, e.g. Qwen2.5's); the loss covers the calls the assistant
  makes in the template's syntax. Every line is checked with the validator's rules first (helpers/validate.py).
- Examples longer than the model's `max_seq_len` (1024 tokens for SmolLM2: ~580 Chinese characters of question
  plus answer, longer than almost every Huatuo QA pair) are cut at the end; how many were cut, and any left with
  no assistant token to learn from (skipped), is reported in a `message` event, never dropped silently.
- Batches are grouped by length (shuffled mega-batches of 8 batches, sorted inside, batch order shuffled) and
  padded only to the longest row of the batch; a batch with more than `MAX_BATCH_TOKENS` tokens is split into
  micro-batches whose gradients are accumulated, so one optimiser step always sees `batch_size` examples.
- Memory (issue 17; benchmarks/bench_memory.py): the output layer and the loss run a slice of `HEAD_ROWS`
  vocabulary rows at a time with an online softmax and hand the gradient back without ever building positions x
  vocabulary logits (`head_loss`), and each transformer block's activations are recomputed in the backward pass
  instead of kept (`TrainSpec.gradient_checkpointing`, on by default; the shared prefix's cache is read-only, so the
  replay sees what the first pass saw). Both compute the same numbers (tests/test_engine_trainer.py); checkpointing
  costs one more forward pass of the blocks.
- bfloat16: where the CPU has native bf16 (AVX512-BF16/AMX) or on a CUDA GPU, the frozen base weights are stored
  in bf16 and the forward/backward runs under bf16 autocast; the LoRA weights and the optimiser stay float32.
  Without native bf16 the trainer computes in float32 (bf16 emulation is slower than float32), but the frozen base
  is still stored in bf16 and each layer is widened to float32 as it runs (`upcast_base_layers`: half the memory,
  the weights a native-bf16 CPU trains on); `TrainSpec.base_weights="fp32"` keeps the float32 weights instead.
- Validation (when a validation file is given) runs without gradients over the whole validation set before
  training and at the end of every epoch (`full_valid_*` in that step's `metrics` event and checkpoint), and on
  a fixed subset of its first 8 examples every `eval_every` steps and at epoch ends (`valid_*`), like OpenAI's
  per-step `valid_loss` on a batch: two series, never mixed in one curve. With 100/20 rows this costs ~5% of the training time.
- Rows of a batch that start with the same tokens (the shared system prompt) run that prefix once: its keys
  and values are computed for one row and repeated for the others (gradients flow through it).
- One checkpoint (the adapter) per epoch in `output_dir/checkpoints/step-N`, the final adapter in
  `output_dir/adapter`. `should_stop()` is checked before every step and during validation; when it returns
  True, `train` returns early with `cancelled=True` (nothing is half-written: adapters are saved atomically).
- Seeded: the same spec gives the same losses and weights on the same CPU (LoRA init and data order seeded).
- Resumable: `output_dir/training_state.pt` (LoRA weights, optimiser, step, epoch and position in it, the data
  order's RNG state, torch's RNG state, the metrics sent so far, checkpoints, token counts) is written
  atomically before the first step, after every checkpoint, at least every `state_every_seconds`, and when
  `should_stop()` stops the run between steps. `TrainSpec(resume=True)` continues from it: the same batches in
  the same order, a `resumed` event with the step and the metrics so far, then the steps after it; the
  continued run computes what the uninterrupted one would have (see benchmarks/README.md, "Resume").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from helpers.localapi import models

IGNORE = -100
MAX_BATCH_TOKENS = 1024  # tokens per micro-batch (padded); bounds memory, gradients are accumulated (bench_memory.py)
HEAD_ROWS = 8192  # vocabulary rows the output layer scores at once (trainer.head_loss; 8,192 x 896 weights: 29 MB)
HEAD_LOGITS = 8 * 1024 * 1024  # at most this many float32 logits at once (32 MB): fewer rows when positions are many
DEFAULT_N_EPOCHS = 3
DEFAULT_LORA_RANK = 16
DEFAULT_LORA_ALPHA_RATIO = 2.0  # lora_alpha = ratio * rank
DEFAULT_LEARNING_RATE = models.DEFAULT_LEARNING_RATE  # each model's own: ModelSpec.learning_rate (benchmarks/README.md)
DEFAULT_BATCH_SIZE = 4
WARMUP_FRACTION = 0.06
VALID_BATCH = 8  # validation examples scored at intermediate evaluations (all of them at epoch ends)
LORA_TARGETS = "all-linear"


class TrainDataError(ValueError):
    """A training or validation file cannot be used; the message names the file, line and problem."""


class ResumeStateError(RuntimeError):
    """The saved training state of a run is missing, corrupt or from another run, so it cannot continue."""


STATE_FILE = "training_state.pt"
STATE_FORMAT = 1


@dataclass
class TrainSpec:
    """Everything one training run needs (the API half fills it from a fine-tuning job)."""

    base_model: str
    train_path: Path
    valid_path: Path | None
    output_dir: Path
    n_epochs: int = DEFAULT_N_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate_multiplier: float = 1.0
    seed: int = 42
    cache_dir: Path = Path("data/work/localapi/models")
    lora_rank: int = DEFAULT_LORA_RANK
    learning_rate: float | None = None  # base rate, multiplied by learning_rate_multiplier; None: the model's own
    max_seq_len: int | None = None  # None: the model's spec (1024 for SmolLM2)
    eval_every: int | None = None  # steps between validations; None: twice per epoch
    precision: str = "auto"  # "auto" (bf16 where native), "bf16", "fp32"
    grouping: str = "length"  # "length" (grouped batches) or "random" (plain shuffled batches, for baselines)
    save_checkpoints: bool = True
    train_name: str | None = None  # how errors name the files (the server: file id and filename, never a path)
    valid_name: str | None = None
    init_adapter: Path | None = None  # continue training this LoRA adapter (a fine-tuned model or checkpoint) instead of a new one
    resume: bool = False  # continue from output_dir/training_state.pt (ResumeStateError when unusable)
    state_every_seconds: float = 30.0  # save the training state at least this often (and at every checkpoint)
    gradient_checkpointing: bool = True  # recompute each block's activations in the backward pass (memory for time)
    micro_batch_tokens: int = MAX_BATCH_TOKENS  # padded tokens per micro-batch, in training and validation
    method: str = "supervised"  # the job's method.type: "supervised" (chat files) or "dpo" (preference files)
    beta: float | None = None  # DPO's beta; None: objectives.DEFAULT_BETA
    base_weights: str = "auto"  # the frozen base's storage: "auto"/"bf16" (bf16; computed in float32 where the CPU has
    # no native bf16, each layer widened as it runs: upcast_base_layers) or "fp32" (float32 where training computes in
    # float32: the exact float32 weights, twice the memory); LOCALAPI_TRAIN_BASE_WEIGHTS

    def __post_init__(self) -> None:
        self.train_path = Path(self.train_path)
        self.valid_path = Path(self.valid_path) if self.valid_path else None
        self.output_dir = Path(self.output_dir)
        self.cache_dir = Path(self.cache_dir)
        self.init_adapter = Path(self.init_adapter) if self.init_adapter else None
        if self.seed is None:
            self.seed = 42
        if self.learning_rate is None:
            self.learning_rate = base_learning_rate(self.base_model, self.method)


def base_learning_rate(base_model: str, method: str = "supervised") -> float:
    """The peak learning rate of a `learning_rate_multiplier` of 1: the model's own LoRA rate, a tenth of it for DPO
    (objectives.DPO_LEARNING_RATE_FACTOR: preference steps move a model further than supervised ones)."""
    rate = models.get_spec(base_model).learning_rate
    if method == "dpo":
        from helpers.localapi.objectives import DPO_LEARNING_RATE_FACTOR

        rate *= DPO_LEARNING_RATE_FACTOR
    return rate


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    trained_tokens: int  # tokens the model processed in training, all epochs (prompt + answer, no padding)
    adapter_dir: Path | None  # the final adapter (None when stopped before the end)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # {epoch, step, path, metrics}
    cancelled: bool = False
    steps: int = 0
    total_steps: int = 0
    n_examples: int = 0
    assistant_tokens: int = 0  # of trained_tokens, those the loss was computed on
    initial_valid_loss: float | None = None
    final_valid_loss: float | None = None
    seconds: float = 0.0
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Example:
    """One tokenised conversation: inputs and next-token targets (IGNORE where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]  # labels[t] is the token at t, or IGNORE; the loss at position t predicts labels[t+1]
    truncated: bool = False
    full_length: int = 0  # tokens before the cut at max_len

    @property
    def n_trainable(self) -> int:
        """Tokens the loss is computed on (assistant tokens after the first position)."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def resolve_hyperparameters(base_model: str, n_examples: int, n_epochs: int | str = "auto",
                            batch_size: int | str = "auto", lr_mult: float | str = "auto",
                            method: str = "supervised", beta: float | str = "auto") -> dict[str, Any]:
    """Concrete values for OpenAI's 'auto' hyperparameters, plus the LoRA settings the run will use.

    n_epochs auto: OpenAI's rule (helpers.pricing.default_epochs): 3; for fewer than 100/3 examples
    min(25, 100 // n); for more than 25,000/3 examples max(1, 25000 // n).
    batch_size auto: 4 for up to 400 examples, then ~1% of them, at most 32 (on CPU a step of 4 rows of a few
    hundred tokens is about as efficient per token as a larger one, and 100 rows x 3 epochs give 75 updates).
    learning_rate_multiplier auto: 1.0, i.e. the model's own base rate (ModelSpec.learning_rate, chosen by the full
    validation loss on the real data: benchmarks/README.md); for DPO a tenth of it (`base_learning_rate`).
    DPO (`method="dpo"`, n_examples counting pairs) resolves n_epochs and batch_size by the same rules, and
    beta auto to objectives.DEFAULT_BETA (0.1); the result then also has `beta`.
    """
    from helpers.pricing import default_epochs  # the same rule the course's cost estimate uses (notebook 03)

    model_spec = models.get_spec(base_model)
    n = max(int(n_examples), 1)
    epochs = int(n_epochs) if n_epochs != "auto" else default_epochs(n)
    if batch_size == "auto":
        bs = DEFAULT_BATCH_SIZE if n <= 400 else min(32, max(DEFAULT_BATCH_SIZE, n // 100))
    else:
        bs = int(batch_size)
    mult = 1.0 if lr_mult == "auto" else float(lr_mult)
    if epochs < 1 or bs < 1 or not mult > 0:
        raise ValueError(f"hyperparameters must be positive (n_epochs={epochs}, batch_size={bs}, learning_rate_multiplier={mult})")
    bs = min(bs, n)
    resolved = {"n_epochs": epochs, "batch_size": bs, "learning_rate_multiplier": mult,
                "learning_rate": base_learning_rate(model_spec.id, method) * mult, "lora_rank": DEFAULT_LORA_RANK,
                "lora_alpha": DEFAULT_LORA_ALPHA_RATIO * DEFAULT_LORA_RANK}
    if method == "dpo":
        from helpers.localapi.objectives import DEFAULT_BETA

        resolved["beta"] = DEFAULT_BETA if beta == "auto" else float(beta)
    return resolved


# ---- data ---------------------------------------------------------------------------------------

@dataclass
class Conversation:
    """One training example of a file: its messages and the tools it declares."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    line: int = 0  # 1-based line in its file


def read_chat_jsonl(path: Path, name: str | None = None) -> list[Conversation]:
    """The examples of an OpenAI chat fine-tuning file; TrainDataError names the first bad line.

    Each line is checked by the workbook's validator (helpers/validate.py, the same rules and 1-based message
    numbers as `python -m helpers.validate` and the server's validation). `name` is how errors call the file
    (the server passes the uploaded file's id and filename, never its path on disk).
    """
    from helpers.validate import check_example

    return [Conversation(row["messages"], row.get("tools"), n) for n, row in checked_rows(path, name, check_example)]


def checked_rows(path: Path, name: str | None, check: Callable[[Any], list[tuple[str, ...]]]) -> list[tuple[int, Any]]:
    """(line, parsed row) of every non-blank line of a JSONL file; TrainDataError names the first line `check` rejects."""
    path = Path(path)
    name = name or path.name
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise TrainDataError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TrainDataError(f"{name}: cannot read ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainDataError(f"{name}:{lineno}: invalid JSON ({exc.msg})") from None
        problems = check(row)
        if problems:
            raise TrainDataError(f"{name}:{lineno}: {problems[0][1]}")
        rows.append((lineno, row))
    if not rows:
        raise TrainDataError(f"{name}: no examples")
    return rows


def encode_example(tokenizer: Any, messages: list[dict[str, Any]], max_len: int, stop_ids: set[int],
                   tools: list[dict[str, Any]] | None = None) -> Example:
    """Tokenise a conversation with the chat template; label assistant turns with weight != 0 (content or tool calls).

    The text is rendered at each assistant turn: the prompt up to it (with the generation prompt) and the
    conversation including it; each must extend the previous rendering, so the template's tokens are the ones the
    model sees when it answers (this also holds for templates that group consecutive tool results into one turn).
    """
    if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
        if not models.supports_tools(tokenizer):
            raise TrainDataError("this model's chat template cannot render tools or tool calls")
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""

    def add(text: str, learn: bool) -> None:
        part = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids.extend(part)
        if not learn:
            labels.extend([IGNORE] * len(part))
            return
        # learn the content and the end-of-turn token, not the template's trailing newline
        last = max((i for i, t in enumerate(part) if t in stop_ids), default=len(part) - 1)
        labels.extend(part[: last + 1] + [IGNORE] * (len(part) - last - 1))

    for k, message in enumerate(messages):
        if message["role"] != "assistant" or k == 0:
            continue
        header = models.render_chat(tokenizer, messages[:k], True, tools)
        upto = models.render_chat(tokenizer, messages[: k + 1], False, tools)
        if not header.startswith(rendered) or not upto.startswith(header):
            raise TrainDataError("the chat template's generation prompt does not prefix the assistant turn; cannot mask prompts")
        add(header[len(rendered):], False)
        add(upto[len(header):], message.get("weight", 1) != 0)
        rendered = upto
    full = models.render_chat(tokenizer, messages, False, tools)
    if not full.startswith(rendered):
        raise TrainDataError("the chat template does not render conversations incrementally; cannot mask prompts")
    add(full[len(rendered):], False)
    return Example(ids[:max_len], labels[:max_len], len(ids) > max_len, len(ids))


def encode_file(path: Path, tokenizer: Any, max_len: int, stop_ids: set[int],
                name: str | None = None) -> tuple[list[Example], dict[str, int]]:
    """Tokenised examples of a file and counts of what was cut or skipped."""
    examples, stats = [], {"examples": 0, "truncated": 0, "skipped_no_trainable_tokens": 0}
    for conversation in read_chat_jsonl(path, name):
        stats["examples"] += 1
        try:
            ex = encode_example(tokenizer, conversation.messages, max_len, stop_ids, conversation.tools)
        except TrainDataError as exc:
            raise TrainDataError(f"{name or Path(path).name}:{conversation.line}: {exc}") from None
        stats["truncated"] += ex.truncated
        if ex.n_trainable == 0:
            stats["skipped_no_trainable_tokens"] += 1
            continue
        examples.append(ex)
    return examples, stats


@dataclass
class Pair:
    """One preference example tokenised: the same input with the preferred and the non-preferred answer."""

    chosen: Example
    rejected: Example
    line: int = 0
    reference: tuple[float, float] | None = None  # the reference's log-probabilities of (chosen, rejected) (DPO)


def encode_preference_file(path: Path, tokenizer: Any, max_len: int, stop_ids: set[int],
                           name: str | None = None) -> tuple[list[Pair], dict[str, int]]:
    """Tokenised pairs of an OpenAI preference (DPO) file and counts of what was cut or skipped.

    Each line is checked by the validator's preference rules; each side is the input's messages followed by one
    output, rendered with the chat template like a chat example whose only learned turn is that output (earlier
    assistant turns of the input are context). A pair with a side cut to no answer token is skipped.
    """
    from helpers.validate import check_preference_example, preference_sides

    pairs, stats = [], {"examples": 0, "truncated": 0, "skipped_no_trainable_tokens": 0}
    for line, row in checked_rows(path, name, check_preference_example):
        stats["examples"] += 1
        try:
            sides = [encode_example(tokenizer, side["messages"], max_len, stop_ids, side.get("tools"))
                     for side in preference_sides(row)]
        except TrainDataError as exc:
            raise TrainDataError(f"{name or Path(path).name}:{line}: {exc}") from None
        stats["truncated"] += any(side.truncated for side in sides)
        if any(side.n_trainable == 0 for side in sides):
            stats["skipped_no_trainable_tokens"] += 1
            continue
        pairs.append(Pair(sides[0], sides[1], line))
    return pairs, stats


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random, mega: int = 8) -> list[list[int]]:
    """Batches of similar length: shuffle, sort inside mega-batches of `mega` batches, shuffle the batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * mega
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Plain shuffled batches (the naive baseline: padded to the longest row of a random batch)."""
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def micro_batches(batch: list[int], lengths: list[int], max_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
    """Split a batch (longest first) so that rows x longest row stays under max_tokens."""
    rows = sorted(batch, key=lambda i: lengths[i], reverse=True)
    out: list[list[int]] = []
    for i in rows:
        if out and lengths[out[-1][0]] * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def collate(examples: list[Example], pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, and targets shifted for next-token prediction."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        mask[r, :n] = 1
        targets[r, : n - 1] = torch.tensor(e.labels[1:])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "targets": targets.to(device),
            "tokens": int(mask.sum()), "padded": int(ids.numel())}


# ---- model --------------------------------------------------------------------------------------

def choose_precision(requested: str, device: str) -> str:
    """'bf16' or 'fp32': auto picks bf16 on CUDA with bf16 and on CPUs with native bf16 instructions."""
    import torch

    if requested in {"bf16", "fp32"}:
        return requested
    if requested != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, not {requested!r}")
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if models.cpu_supports_bf16() else "fp32"


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device, or nothing."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)


def add_lora(model: Any, rank: int, seed: int, precision: str, init_adapter: Path | None = None) -> Any:
    """Wrap a base model with a seeded LoRA adapter on all linear layers (or the trainable adapter saved in
    `init_adapter`, to continue a fine-tuned model); the base is frozen (bf16 if chosen)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    if precision == "bf16":
        model.to(torch.bfloat16)
    torch.manual_seed(seed)
    if init_adapter is not None:
        if not (Path(init_adapter) / "adapter_config.json").is_file():
            raise TrainDataError("the adapter of the fine-tuned model to continue from is missing; fine-tune it again")
        peft_model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        config = LoraConfig(r=rank, lora_alpha=DEFAULT_LORA_ALPHA_RATIO * rank, lora_dropout=0.0,
                            target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)  # keeps the adapter weights in float32
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return peft_model


@lru_cache(maxsize=1)
def _upcast_linear_class() -> Any:
    """nn.Linear whose frozen weights, stored in bf16, are widened to the input's dtype for each call (built on first
    use). The widened copy goes into a buffer that every layer of the same shape shares (`scratch`, one per model)
    and is used at once, in the forward pass and again in the backward pass, never kept: a fresh float32 copy per
    call cost 8x the time (each one newly mapped memory: benchmarks/README.md), and a kept copy per layer would
    hold float32 weights until the backward pass (the shared prefix runs without checkpointing)."""
    import torch

    def widened(weight: Any, dtype: Any, scratch: dict) -> Any:
        key = (tuple(weight.shape), dtype)
        if key not in scratch:
            scratch[key] = torch.empty(weight.shape, dtype=dtype, device=weight.device)
        return scratch[key].copy_(weight)

    class UpcastLinearFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, bias: Any, scratch: dict) -> Any:
            ctx.save_for_backward(weight)  # the bf16 weight itself: no copy
            ctx.scratch = scratch
            bias = None if bias is None else bias.to(x.dtype)
            return torch.nn.functional.linear(x, widened(weight, x.dtype, scratch), bias)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (weight,) = ctx.saved_tensors  # frozen: the input's gradient only
            return grad @ widened(weight, grad.dtype, ctx.scratch), None, None, None

    class UpcastLinear(torch.nn.Linear):
        scratch: dict  # the model's widening buffers, one per weight shape (upcast_base_layers sets it)

        def forward(self, x: Any) -> Any:
            return UpcastLinearFunction.apply(x, self.weight, self.bias, self.scratch)

    return UpcastLinear


def widens_base(precision: str, base_weights: str) -> bool:
    """True when the frozen base is stored in bf16 but training computes in float32 (TrainSpec.base_weights)."""
    return precision == "fp32" and base_weights != "fp32"


def upcast_base_layers(model: Any) -> int:
    """Compute in float32 on a base stored in bf16: every frozen linear layer widens its weights as it runs (into a
    buffer per weight shape, one layer at a time), the embedding's output is widened, and the output layer is
    widened a slice at a time by `head_loss`. Half the memory of a float32 base, at the cost of the conversions;
    the weights are the bf16 ones (as on a CPU with native bf16). Returns how many layers were switched."""
    import torch

    upcast = _upcast_linear_class()
    scratch: dict = {}  # this model's widening buffers, shared by its layers of the same shape
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not module.weight.requires_grad and module.weight.dtype == torch.bfloat16:
            module.__class__ = upcast
            module.scratch = scratch
            count += 1
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.get_input_embeddings().register_forward_hook(lambda _m, _args, out: out.float())
    return count


def lora_line(model: Any, rank: int) -> str:
    """The job's event that says how small LoRA's share of the model is: trainable against all parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (f"LoRA r={rank}, alpha={DEFAULT_LORA_ALPHA_RATIO * rank:g}: {trainable:,} trainable parameters of {total:,} "
            f"({100 * trainable / total:.2f}%); the base model's {total - trainable:,} are frozen")


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body and the output layer of a (peft-wrapped) causal LM."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


def shared_prefix_length(batch: dict[str, Any], minimum: int = 16) -> int:
    """Length of the token prefix all rows share with no loss inside it (e.g. the system prompt), or 0."""
    ids, targets = batch["input_ids"], batch["targets"]
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0)
    n = int(same.long().cumprod(0).sum())
    lengths = batch["attention_mask"].sum(dim=1)
    n = min(n, int(lengths.min()) - 1)  # every row keeps at least one token of its own
    labelled = (targets != IGNORE).any(dim=0).nonzero()
    if len(labelled):
        n = min(n, int(labelled[0]))  # hidden states at labelled positions come from the second pass
    return n if n >= minimum else 0


@lru_cache(maxsize=1)
def _head_loss_function() -> Any:
    """The autograd function behind `head_loss` (built on first use: torch is imported lazily in this module)."""
    import torch

    class HeadLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, dtype: Any, rows: int) -> Any:
            n, vocab = hidden.shape[0], weight.shape[0]
            h = hidden.to(dtype)
            running_max = torch.full((n,), float("-inf"), dtype=torch.float32, device=hidden.device)
            sum_exp = torch.zeros(n, dtype=torch.float32, device=hidden.device)
            best = torch.zeros(n, dtype=torch.long, device=hidden.device)  # argmax so far (the first one on ties)
            target_logit = torch.zeros(n, dtype=torch.float32, device=hidden.device)
            acc = torch.zeros_like(hidden, dtype=torch.float32) if ctx.needs_input_grad[0] else None
            step = max(1, min(rows, HEAD_LOGITS // max(n, 1)))
            # One buffer for every slice's logits, and one to widen a head stored narrower than `dtype` into: fresh
            # tensors of this size are newly mapped memory each time (the worker maps blocks over 4 MiB: heap.py).
            scores = torch.empty(n * min(step, vocab), dtype=torch.float32, device=hidden.device)
            buffer = None if weight.dtype == dtype else weight.new_empty((min(step, vocab), weight.shape[1]), dtype=dtype)
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                for start in range(0, vocab, step):
                    w = weight[start:start + step]  # a slice of the vocabulary
                    if buffer is not None:
                        w = buffer[:len(w)].copy_(w)
                    logits = scores[:n * len(w)].view(n, len(w))
                    if dtype == torch.float32:
                        torch.matmul(h, w.t(), out=logits)
                    else:
                        logits.copy_(h @ w.t())
                    if bias is not None:
                        logits.add_(bias[start:start + len(w)].to(dtype).float())
                    inside = (targets >= start) & (targets < start + len(w))
                    if inside.any():
                        where = inside.nonzero().squeeze(1)
                        target_logit[where] = logits[where, targets[where] - start]
                    slice_max, slice_arg = logits.max(dim=-1)
                    best = torch.where(slice_max > running_max, slice_arg + start, best)
                    new_max = torch.maximum(running_max, slice_max)
                    rescale = torch.exp(running_max - new_max)  # 0 for the first slice (exp(-inf))
                    e = logits.sub_(new_max[:, None]).exp_()  # in place of the logits
                    sum_exp = sum_exp * rescale + e.sum(dim=-1)
                    if acc is not None:  # sum over the vocabulary of exp(logit - max) * W, rescaled as the max grows
                        acc.mul_(rescale[:, None])
                        if dtype == torch.float32:
                            acc.addmm_(e, w)
                        else:
                            acc.add_((e.to(dtype) @ w).float())
                    running_max = new_max
                lse = running_max + sum_exp.log()
                total = (lse - target_logit).sum()
                correct = (best == targets).sum()
                grad = None
                if acc is not None:  # (softmax - one-hot) @ W: the loss's gradient with respect to the hidden states
                    grad = (acc / sum_exp[:, None] - weight[targets].float()).to(hidden.dtype)
            ctx.mark_non_differentiable(correct)
            ctx.save_for_backward(grad if grad is not None else hidden.new_empty(0))
            return total, correct

        @staticmethod
        def backward(ctx: Any, grad_total: Any, _grad_correct: Any) -> Any:
            (grad,) = ctx.saved_tensors
            return grad * grad_total.to(grad.dtype), None, None, None, None, None

    return HeadLoss


def head_loss(hidden: Any, head: Any, targets: Any, dtype: Any, rows: int = HEAD_ROWS) -> tuple[Any, int]:
    """Summed cross-entropy of the output layer at `hidden` (positions x hidden) against `targets`, and the number
    of correct argmax predictions, a slice of the vocabulary at a time.

    No positions x vocabulary logits are ever built (151,936 wide for Qwen): each slice of `rows` output rows
    (fewer when there are many positions: at most HEAD_LOGITS logits at once) is scored for every position, and the
    softmax is accumulated online, as flash attention does: a running maximum, the sum of exponentials rescaled when
    the maximum grows, and the exponentials times the slice's weights, which give the loss's gradient with respect
    to the hidden states ((softmax - one-hot) @ W) in the same pass. The backward pass only hands that gradient
    back. The output layer is frozen (LoRA does not adapt it), so no weight gradient is needed, and a layer stored
    narrower than `dtype` (a bf16 base computed in float32) is widened a slice at a time. Same value and gradient as
    `F.cross_entropy(head(hidden), reduction="sum")`, up to float32 rounding (tests/test_engine_trainer.py).
    """
    loss, correct = _head_loss_function().apply(hidden, head.weight, head.bias, targets, dtype, rows)
    return loss, int(correct)


@lru_cache(maxsize=1)
def _prefix_cache_class() -> Any:
    """A transformers DynamicCache that, once `.frozen` is set, returns prefix + new keys/values without storing them.

    Frozen, the cache is read-only, so a checkpointed layer recomputed in the backward pass sees exactly the cache
    it saw in the forward pass (a cache that appends would hold the new tokens twice on the replay). Built on first
    use: torch and transformers are imported lazily in this module.
    """
    import torch
    from transformers import DynamicCache

    class PrefixCache(DynamicCache):
        frozen = False

        def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
            if not self.frozen:
                return super().update(key_states, value_states, layer_idx, *args, **kwargs)
            layer = self.layers[layer_idx]
            return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    return PrefixCache


def set_checkpointing(model: Any, enabled: bool) -> None:
    """Recompute each transformer block's activations in the backward pass instead of keeping them (memory for time)."""
    decoder, _ = _decoder_and_head(model)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if enabled:
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        for layer in decoder.layers:
            layer._can_checkpoint_with_cache = True  # our training cache is frozen (read-only) in checkpointed passes
    elif getattr(decoder, "gradient_checkpointing", False):
        inner.activation_checkpointing_disable()



@contextlib.contextmanager
def _checkpointing_paused(decoder: Any) -> Iterator[None]:
    """Run the blocks without checkpointing (the shared-prefix pass writes the cache, so it must not be replayed)."""
    modules = [m for m in (decoder, *decoder.layers) if getattr(m, "gradient_checkpointing", False)]
    for module in modules:
        module.gradient_checkpointing = False
    try:
        yield
    finally:
        for module in modules:
            module.gradient_checkpointing = True


def forward_hidden(model: Any, batch: dict[str, Any], device: str, precision: str,
                   share_prefix: bool = True) -> tuple[Any, Any]:
    """The last hidden states of a micro-batch and the targets aligned with them (after a shared prefix).

    When every row starts with the same tokens (the system prompt of a training file usually is identical),
    that prefix runs once and its keys/values are repeated for the batch; the rest of each row attends to them
    through a frozen KV cache, and gradients flow back through the shared pass.
    """
    import torch

    decoder, _ = _decoder_and_head(model)
    prefix = shared_prefix_length(batch) if share_prefix else 0
    ids, mask, targets = batch["input_ids"], batch["attention_mask"], batch["targets"]
    with autocast(device, precision):
        if prefix:
            cache = _prefix_cache_class()(config=getattr(decoder, "config", None))
            with _checkpointing_paused(decoder):
                decoder(input_ids=ids[:1, :prefix], past_key_values=cache, use_cache=True)
            cache.batch_repeat_interleave(ids.shape[0])
            cache.frozen = True
            positions = torch.arange(prefix, ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)
            hidden = decoder(input_ids=ids[:, prefix:], attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=False).last_hidden_state  # the cache is only read
            targets = targets[:, prefix:]
        else:
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return hidden, targets


def batch_loss(model: Any, batch: dict[str, Any], device: str, precision: str,
               share_prefix: bool = True, fused_head: bool = True) -> tuple[Any, int, int]:
    """(sum of token losses, correct predictions, labelled tokens) for one micro-batch; logits only where labelled.

    The blocks run once per micro-batch (`forward_hidden`, a shared prefix once). The output layer and the loss run
    a chunk of positions at a time (`head_loss`; `fused_head=False`: all labelled positions at once, the old way).
    """
    import torch
    import torch.nn.functional as F

    _, head = _decoder_and_head(model)
    hidden, targets = forward_hidden(model, batch, device, precision, share_prefix)
    where = targets != IGNORE
    chosen = targets[where]
    if fused_head:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        loss, correct = head_loss(hidden[where], head, chosen, dtype)
        return loss, correct, int(chosen.numel())
    with autocast(device, precision):
        logits = head(hidden[where]).float()
    loss = F.cross_entropy(logits, chosen, reduction="sum")
    with torch.no_grad():
        correct = int((logits.argmax(-1) == chosen).sum())
    return loss, correct, int(chosen.numel())


def sequence_logps(model: Any, batch: dict[str, Any], device: str, precision: str) -> Any:
    """Each row's log-probability of its labelled tokens (an answer), summed: a float32 tensor, one value per row."""
    import torch

    _, head = _decoder_and_head(model)
    hidden, targets = forward_hidden(model, batch, device, precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    logps = []
    for row in range(targets.shape[0]):
        where = targets[row] != IGNORE
        nll, _ = head_loss(hidden[row][where], head, targets[row][where], dtype)
        logps.append(-nll)
    return torch.stack(logps)


def evaluate(model: Any, examples: list[Example], pad_id: int, device: str, precision: str,
             should_stop: Callable[[], bool], max_tokens: int = MAX_BATCH_TOKENS) -> tuple[float, float] | None:
    """Mean token loss and accuracy over chat examples (no gradients); None when stopped."""
    from helpers.localapi import objectives

    objective = objectives.Supervised()
    tally = score(objective, model, examples, objectives.Env(device, precision, pad_id, max_tokens), should_stop)
    if tally is None:
        return None
    metrics = objective.metrics(tally)
    return metrics["loss"], metrics["mean_token_accuracy"]


def evaluation_groups(objective: Any, items: list, max_tokens: int) -> list[list[int]]:
    """The micro-batches a set is scored in: longest first, under the token budget."""
    sizes = [objective.size(x) for x in items]
    order = sorted(range(len(items)), key=lambda i: sizes[i], reverse=True)
    return micro_batches(order, sizes, max_tokens)


def score(objective: Any, model: Any, items: list, env: Any, should_stop: Callable[[], bool]) -> Any:
    """The objective's tally over a set (no gradients), or None when stopped."""
    import torch

    from helpers.localapi.objectives import Tally

    total = Tally()
    model.eval()
    with torch.no_grad():
        for group in evaluation_groups(objective, items, env.micro_batch_tokens):
            if should_stop():
                return None
            _, tally = objective.loss(model, [items[i] for i in group], env)
            total.add(tally)
    model.train()
    return total


def save_adapter(model: Any, target: Path, meta: dict[str, Any]) -> Path:
    """Save the LoRA adapter (+ train_meta.json) atomically to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(tmp)
    (tmp / "train_meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first ~6% of steps, then linear decay to zero."""
    warm = max(1, round(total * WARMUP_FRACTION))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * max(0.0, (total - step) / max(1, total - warm))


# ---- resumable state -----------------------------------------------------------------------------

@dataclass
class Position:
    """Where a run stands between two steps: steps done, the epoch, the next batch in it, the epoch's RNG state."""

    step: int
    epoch: int
    batch_index: int
    epoch_rng: Any  # random.Random.getstate() at the start of the epoch (regenerates its batch order)


def run_fingerprint(spec: TrainSpec, lengths: list[int], batch_size: int, total_steps: int) -> dict[str, Any]:
    """What must match between a saved state and the run that resumes it."""
    return {"base_model": spec.base_model, "seed": spec.seed, "batch_size": batch_size, "total_steps": total_steps,
            "n_epochs": spec.n_epochs, "lengths": lengths, "lora_rank": spec.lora_rank, "grouping": spec.grouping}


def save_state(path: Path, model: Any, optimizer: Any, position: Position, result: TrainResult,
               history: list[dict], fingerprint: dict[str, Any], objective_state: dict[str, Any] | None = None) -> None:
    """Write everything needed to continue the run, atomically (a temporary file, fsync, rename)."""
    import torch

    state = {
        "format": STATE_FORMAT, "fingerprint": fingerprint,
        "position": {"step": position.step, "epoch": position.epoch, "batch_index": position.batch_index,
                     "epoch_rng": [position.epoch_rng[0], list(position.epoch_rng[1]), position.epoch_rng[2]]},
        "lora": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
        "history": history,
        "result": {"trained_tokens": result.trained_tokens, "assistant_tokens": result.assistant_tokens,
                   "initial_valid_loss": result.initial_valid_loss, "final_valid_loss": result.final_valid_loss,
                   "checkpoints": result.checkpoints},
        "objective": objective_state or {},  # DPO: the reference log-probabilities of every pair
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The saved state of this run; ResumeStateError (without the path) when it is missing, corrupt or foreign."""
    import torch

    if not path.exists():
        raise ResumeStateError("the saved training state of this job is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        position = state["position"]
        ok = state["format"] == STATE_FORMAT and isinstance(state["lora"], dict) and int(position["step"]) >= 0
    except Exception as exc:
        raise ResumeStateError(f"the saved training state of this job is corrupt ({type(exc).__name__})") from None
    if not ok:
        raise ResumeStateError("the saved training state of this job is corrupt (unknown format)")
    if state["fingerprint"] != fingerprint:
        raise ResumeStateError("the saved training state belongs to a different run (data, model or "
                               "hyperparameters changed)")
    return state


def restore_state(state: dict[str, Any], model: Any, optimizer: Any, result: TrainResult) -> Position:
    """Put the saved weights, optimiser, RNG and counters back; the position to continue from."""
    import torch

    params = dict(model.named_parameters())
    try:
        with torch.no_grad():
            for name, value in state["lora"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ResumeStateError(f"the saved training state of this job does not fit the model ({type(exc).__name__})") from None
    for key, value in state["result"].items():
        setattr(result, key, value)
    p = state["position"]
    rng_state = (p["epoch_rng"][0], tuple(p["epoch_rng"][1]), p["epoch_rng"][2])
    result.steps = int(p["step"])
    return Position(int(p["step"]), int(p["epoch"]), int(p["batch_index"]), rng_state)


# ---- training loop ------------------------------------------------------------------------------

@dataclass
class Run:
    """The live parts of one training run that its steps share."""

    spec: TrainSpec
    objective: Any  # objectives.Supervised or objectives.Dpo: what a micro-batch costs
    env: Any  # objectives.Env
    model: Any
    optimizer: Any
    train_set: list  # Example (supervised) or Pair (DPO)
    valid_set: list
    sizes: list[int]  # padded tokens each training item adds to a micro-batch
    batch_size: int
    total_steps: int
    peak_lr: float
    result: TrainResult
    should_stop: Callable[[], bool]


def train(spec: TrainSpec, on_event: Callable[[dict], None], should_stop: Callable[[], bool]) -> TrainResult:
    """Fine-tune a LoRA adapter on spec.train_path with the job's objective; report metrics/checkpoint/message
    events; return the result."""
    started = time.time()
    def say(text: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        on_event({"type": "message", "level": level, "message": text, **({"data": data} if data else {})})

    run = start_run(spec, say, should_stop)
    result, objective = run.result, run.objective
    steps_per_epoch = math.ceil(len(run.train_set) / run.batch_size)
    eval_every = spec.eval_every or max(1, math.ceil(steps_per_epoch / 2))
    rng = random.Random(spec.seed)
    state_path = spec.output_dir / STATE_FILE
    fingerprint = {**run_fingerprint(spec, run.sizes, run.batch_size, run.total_steps), **objective.fingerprint()}
    history: list[dict[str, Any]] = []  # the metrics events sent so far: the rows of the result file
    if spec.resume:
        state = load_state(state_path, fingerprint)
        position = restore_state(state, run.model, run.optimizer, result)
        objective.load_state(state.get("objective") or {}, run.train_set, run.valid_set)
        history = list(state["history"])
        on_event({"type": "resumed", "step": position.step, "metrics": [dict(m) for m in history],
                  "checkpoints": [dict(c) for c in result.checkpoints]})
    else:
        position = Position(0, 1, 0, rng.getstate())
        if not score_start(run, epoch_batches(spec, run.sizes, run.batch_size, _copy_rng(rng)), say):
            return _stopped(result, started)
    rng.setstate(position.epoch_rng)

    def keep(pos: Position) -> None:
        nonlocal saved_at, last_save
        save_state(state_path, run.model, run.optimizer, pos, result, history, fingerprint,
                   objective.state(run.train_set, run.valid_set))
        saved_at, last_save = pos.step, time.monotonic()

    saved_at, last_save = -1, time.monotonic()
    if not spec.resume:
        keep(position)  # a job that was started can always resume, even before its first step ends
    saved_at = position.step
    step = position.step
    for epoch in range(position.epoch, spec.n_epochs + 1):
        epoch_rng = rng.getstate()
        batches = epoch_batches(spec, run.sizes, run.batch_size, rng)
        start = position.batch_index if epoch == position.epoch else 0
        for index in range(start, len(batches)):
            if should_stop():
                if saved_at != step:
                    keep(Position(step, epoch, index, epoch_rng))
                return _stopped(result, started)
            tally = train_step(run, batches[index], step)
            step += 1
            result.steps = step
            event: dict[str, Any] = {"type": "metrics", "step": step, "total_steps": run.total_steps, "epoch": epoch,
                                     **prefixed("train", objective.metrics(tally))}
            epoch_end = index == len(batches) - 1
            if run.valid_set and (step % eval_every == 0 or epoch_end):
                scores = validation_metrics(run, epoch_end)
                if scores is None:
                    return _stopped(result, started)
                event.update(scores)
            history.append({k: v for k, v in event.items() if k != "type"})
            on_event(event)
            if not epoch_end and time.monotonic() - last_save >= spec.state_every_seconds:
                keep(Position(step, epoch, index + 1, epoch_rng))
        if spec.save_checkpoints:
            metrics = {k: event[k] for k in event if k not in {"type", "step", "total_steps", "epoch"}}
            on_event({"type": "checkpoint", **save_checkpoint(run, epoch, step, metrics)})
        keep(Position(step, epoch + 1, 0, rng.getstate()))
    result.adapter_dir = save_adapter(run.model, spec.output_dir / "adapter",
                                      {"base_model": spec.base_model, "epoch": spec.n_epochs, "step": step,
                                       "hyperparameters": result.hyperparameters,
                                       "trained_tokens": result.trained_tokens})
    result.seconds = time.time() - started
    say(f"trained {result.trained_tokens} tokens in {result.seconds:.0f} s "
        f"({result.trained_tokens / max(result.seconds, 1e-9):.0f} tokens/s)")
    return result


def start_run(spec: TrainSpec, say: Callable[..., None], should_stop: Callable[[], bool]) -> Run:
    """Load the model and the data, wrap the model with its trainable adapter, build the optimiser."""
    import torch

    from helpers.localapi import objectives

    objective = objectives.for_method(spec.method, spec.beta)
    precision = choose_precision(spec.precision, models.default_device())
    # loaded straight in bf16 when training in bf16: converting a float32 copy afterwards held both at once (~4 GB)
    widened = widens_base(precision, spec.base_weights)
    loaded = models.load_model(spec.base_model, spec.cache_dir,
                               dtype="bfloat16" if precision == "bf16" or widened else "float32")
    tok, device = loaded.tokenizer, loaded.device
    max_len = spec.max_seq_len or loaded.spec.max_seq_len
    train_set, valid_set = read_sets(spec, objective, tok, max_len, loaded.stop_ids, say)
    model = add_lora(loaded.model, spec.lora_rank, spec.seed, precision, spec.init_adapter)
    if widened:
        upcast_base_layers(model)
    set_checkpointing(model, spec.gradient_checkpointing)
    model.train()
    peak_lr = spec.learning_rate * spec.learning_rate_multiplier
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=peak_lr, weight_decay=0.0)
    sizes = [objective.size(x) for x in train_set]
    batch_size = max(1, min(spec.batch_size, len(train_set)))
    total_steps = math.ceil(len(train_set) / batch_size) * spec.n_epochs
    hyper = {"n_epochs": spec.n_epochs, "batch_size": batch_size, "learning_rate": peak_lr, "lora_rank": spec.lora_rank,
             "lora_alpha": DEFAULT_LORA_ALPHA_RATIO * spec.lora_rank, "precision": precision, "max_seq_len": max_len,
             "grouping": spec.grouping, "device": device, "seed": spec.seed, **objective.fingerprint()}
    if widened:
        hyper["base_weights"] = "bf16"
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(loaded.stop_ids))
    items = "examples" if objective.name == "supervised" else f"preference pairs (DPO, beta {objective.beta:g})"
    say(f"training {spec.base_model} with LoRA r={spec.lora_rank} on {len(train_set)} {items} "
        f"({sum(len(e.input_ids) for e in _sequences(train_set))} tokens), {len(valid_set)} validation {items.split(' (')[0]}; "
        f"{total_steps} steps, batch {batch_size}, lr {peak_lr:g}, {precision} on {device}")
    say(lora_line(model, spec.lora_rank))
    if widened:
        say("the base model's weights are kept in bf16 and widened to float32 one layer at a time: half the memory "
            "of float32 weights (LOCALAPI_TRAIN_BASE_WEIGHTS=fp32 keeps them in float32)")
    if spec.init_adapter is not None:
        say("continuing from the fine-tuned model's LoRA adapter (its weights are the starting point, not a new adapter)")
    result = TrainResult(trained_tokens=0, adapter_dir=None, total_steps=total_steps, n_examples=len(train_set),
                         hyperparameters=hyper)
    return Run(spec, objective, objectives.Env(device, precision, pad_id, spec.micro_batch_tokens), model, optimizer,
               train_set, valid_set, sizes, batch_size, total_steps, peak_lr, result, should_stop)


def read_sets(spec: TrainSpec, objective: Any, tok: Any, max_len: int, stop_ids: set[int],
              say: Callable[..., None]) -> tuple[list, list]:
    """The tokenised training and validation items (chat examples, or preference pairs for DPO), cuts reported."""
    encode = encode_preference_file if objective.name == "dpo" else encode_file
    train_name = spec.train_name or spec.train_path.name
    train_set, stats = encode(spec.train_path, tok, max_len, stop_ids, train_name)
    valid_set, vstats = (encode(spec.valid_path, tok, max_len, stop_ids, spec.valid_name or spec.valid_path.name)
                         if spec.valid_path else ([], None))
    what = "examples" if objective.name == "supervised" else "pairs"
    for name, s in (("training", stats), ("validation", vstats)):
        if s and (s["truncated"] or s["skipped_no_trainable_tokens"]):
            say(f"{name} file: {s['truncated']} of {s['examples']} {what} cut to {max_len} tokens; "
                f"{s['skipped_no_trainable_tokens']} skipped (no assistant token left to learn from)", "warn")
    if not train_set:
        raise TrainDataError(f"{train_name}: no example has an assistant token to learn from")
    return train_set, valid_set


def _sequences(items: list) -> Iterator[Example]:
    """The token sequences of training items: an example, or both sides of a pair."""
    for item in items:
        if isinstance(item, Pair):
            yield item.chosen
            yield item.rejected
        else:
            yield item


def _copy_rng(rng: random.Random) -> random.Random:
    """A generator in the same state (to look at the first epoch's batches without consuming them)."""
    copy = random.Random()
    copy.setstate(rng.getstate())
    return copy


def epoch_batches(spec: TrainSpec, sizes: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch's batches of item indices, in training order."""
    if spec.grouping == "length":
        return length_grouped_batches(sizes, batch_size, rng)
    return random_batches(len(sizes), batch_size, rng)


def score_start(run: Run, first_epoch: list[list[int]], say: Callable[..., None]) -> bool:
    """Before the first step: DPO's reference log-probabilities, then the validation loss; False when stopped.

    The reference scores the training pairs in the micro-batches of the first epoch, the validation pairs in those
    of a validation pass: the same arithmetic as the policy's first scores, so the first loss is ln 2 exactly.
    """
    objective, env, result = run.objective, run.env, run.result
    if objective.name == "dpo":
        groups = [g for batch in first_epoch for g in micro_batches(batch, run.sizes, env.micro_batch_tokens)]
        if not objective.score_reference(run.model, run.train_set, groups, env, run.should_stop):
            return False
        valid_groups = evaluation_groups(objective, run.valid_set, env.micro_batch_tokens)
        if not objective.score_reference(run.model, run.valid_set, valid_groups, env, run.should_stop):
            return False
        say(f"reference: the model this job starts from, frozen; log-probabilities of the {len(run.train_set)} "
            f"training and {len(run.valid_set)} validation pairs computed once")
        if run.valid_set:
            result.initial_valid_loss = objective.metrics(objective.reference_tally(run.valid_set))["loss"]
            say(f"validation loss before training: {result.initial_valid_loss:.4f} (the policy is the reference: ln 2)",
                data={"step": 0, "full_valid_loss": result.initial_valid_loss})
        return True
    if run.valid_set:
        tally = score(objective, run.model, run.valid_set, env, run.should_stop)
        if tally is None:
            return False
        first = objective.metrics(tally)
        result.initial_valid_loss = first["loss"]
        say(f"validation loss before training: {first['loss']:.4f} (token accuracy {first['mean_token_accuracy']:.3f})",
            data={"step": 0, "full_valid_loss": first["loss"], "full_valid_mean_token_accuracy": first["mean_token_accuracy"]})
    return True


def train_step(run: Run, batch: list[int], step: int) -> Any:
    """One optimiser step on a batch (micro-batches' gradients accumulated): the objective's tally of the batch."""
    import torch

    from helpers.localapi.objectives import Tally

    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(step, run.total_steps, run.peak_lr)
    denominator = sum(run.objective.weight(run.train_set[i]) for i in batch)  # labelled tokens, or pairs
    total = Tally()
    run.optimizer.zero_grad(set_to_none=True)
    for group in micro_batches(batch, run.sizes, run.env.micro_batch_tokens):
        loss, tally = run.objective.loss(run.model, [run.train_set[i] for i in group], run.env)
        (loss / denominator).backward()
        total.add(tally)
        run.result.trained_tokens += tally.tokens
        run.result.assistant_tokens += tally.labelled
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    run.optimizer.step()
    return total


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """`loss` -> `train_loss`, `valid_loss`, `full_valid_loss` (the names of OpenAI's metrics)."""
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def validation_metrics(run: Run, epoch_end: bool) -> dict[str, float] | None:
    """`valid_*` on the fixed first VALID_BATCH items (one series) and, at epoch ends, `full_valid_*`; None when stopped."""
    objective = run.objective
    subset = run.valid_set[:VALID_BATCH]  # between epoch ends: a fixed small subset, so the curve stays cheap
    tally = score(objective, run.model, subset, run.env, run.should_stop)
    if tally is None:
        return None
    out = prefixed("valid", objective.metrics(tally))
    if epoch_end:
        if len(subset) != len(run.valid_set):
            tally = score(objective, run.model, run.valid_set, run.env, run.should_stop)
            if tally is None:
                return None
        full = objective.metrics(tally)
        out.update(prefixed("full_valid", full))
        run.result.final_valid_loss = full["loss"]
    return out


def save_checkpoint(run: Run, epoch: int, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """Save the adapter at an epoch's end under checkpoints/step-N; the checkpoint record (also kept in the result)."""
    spec = run.spec
    path = save_adapter(run.model, spec.output_dir / "checkpoints" / f"step-{step}",
                        {"base_model": spec.base_model, "epoch": epoch, "step": step, "metrics": metrics,
                         "hyperparameters": run.result.hyperparameters})
    checkpoint = {"epoch": epoch, "step": step, "path": str(path), "metrics": metrics}
    run.result.checkpoints.append(checkpoint)
    return checkpoint


def _stopped(result: TrainResult, started: float) -> TrainResult:
    """The result of a run stopped by should_stop()."""
    result.cancelled = True
    result.seconds = time.time() - started
    return result


def result_dict(result: TrainResult) -> dict[str, Any]:
    """A JSON-friendly dict of a TrainResult."""
    data = asdict(result)
    data["adapter_dir"] = str(result.adapter_dir) if result.adapter_dir else None
    return data


def main_cli(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience for manual runs
    """`python -m helpers.localapi.trainer TRAIN.jsonl OUT [VALID.jsonl]`: train the default model, print events."""
    import argparse

    parser = argparse.ArgumentParser(description=main_cli.__doc__)
    parser.add_argument("train_path", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("valid_path", type=Path, nargs="?")
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--epochs", type=int, default=DEFAULT_N_EPOCHS)
    parser.add_argument("--cache-dir", type=Path, default=Path("data/work/localapi/models"))
    args = parser.parse_args(argv)
    spec = TrainSpec(args.model, args.train_path, args.valid_path, args.output_dir, n_epochs=args.epochs,
                     cache_dir=args.cache_dir)
    result = train(spec, lambda e: print(json.dumps(e, ensure_ascii=False), flush=True), lambda: False)
    print(json.dumps(result_dict(result), ensure_ascii=False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_cli())
