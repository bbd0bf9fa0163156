"""LoRA supervised fine-tuning on chat JSONL files, the way OpenAI's fine-tuning jobs train (but on this machine).

Runs in the worker process that the API half spawns and needs nothing from the server: `train(spec, on_event,
should_stop)` reads the training file (OpenAI chat format, one `{"messages": [...]}` per line, optional `weight`
0/1 on assistant messages), trains a LoRA adapter on the base model and reports events as plain dicts.

How it trains (see benchmarks/README.md for the measurements behind the defaults):
- Each conversation is rendered with the model's own chat template, message by message, so the tokens are the
  ones the model sees when it answers; the loss covers only the assistant messages (their content and the
  end-of-turn token) whose `weight` is not 0. Logits are computed only at those positions, which saves the
  49152-wide output layer on every prompt token.
- Examples longer than the model's `max_seq_len` (1024 tokens for SmolLM2: ~580 Chinese characters of question
  plus answer, longer than almost every Huatuo QA pair) are cut at the end; how many were cut, and any left with
  no assistant token to learn from (skipped), is reported in a `message` event, never dropped silently.
- Batches are grouped by length (shuffled mega-batches of 8 batches, sorted inside, batch order shuffled) and
  padded only to the longest row of the batch; a batch with more than `MAX_BATCH_TOKENS` tokens is split into
  micro-batches whose gradients are accumulated, so one optimiser step always sees `batch_size` examples.
- bfloat16: where the CPU has native bf16 (AVX512-BF16/AMX) or on a CUDA GPU, the frozen base weights are stored
  in bf16 and the forward/backward runs under bf16 autocast; the LoRA weights and the optimiser stay float32.
  Without native bf16 the trainer uses float32 (bf16 emulation is slower than float32).
- Validation (when a validation file is given) runs without gradients over the whole validation set before
  training and at the end of every epoch (`valid_*` and `full_valid_*` in that step's `metrics` event), and on
  a fixed subset of its first 8 examples every `eval_every` steps (default: twice per epoch; `valid_*` only),
  like OpenAI's per-step `valid_loss` on a batch. With 100/20 rows this costs ~5% of the training time.
- Rows of a batch that start with the same tokens (the shared system prompt) run that prefix once: its keys
  and values are computed for one row and repeated for the others (gradients flow through it).
- One checkpoint (the adapter) per epoch in `output_dir/checkpoints/step-N`, the final adapter in
  `output_dir/adapter`. `should_stop()` is checked before every step and during validation; when it returns
  True, `train` returns early with `cancelled=True` (nothing is half-written: adapters are saved atomically).
- Seeded: the same spec gives the same losses and weights on the same CPU (LoRA init and data order seeded).
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
from pathlib import Path
from typing import Any, Callable, Iterator

from helpers.localapi import models

IGNORE = -100
MAX_BATCH_TOKENS = 4096  # tokens per micro-batch (padded); bounds memory, gradients are accumulated
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

    def __post_init__(self) -> None:
        self.train_path = Path(self.train_path)
        self.valid_path = Path(self.valid_path) if self.valid_path else None
        self.output_dir = Path(self.output_dir)
        self.cache_dir = Path(self.cache_dir)
        if self.seed is None:
            self.seed = 42
        if self.learning_rate is None:
            self.learning_rate = models.get_spec(self.base_model).learning_rate


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

    @property
    def n_trainable(self) -> int:
        """Tokens the loss is computed on (assistant tokens after the first position)."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def resolve_hyperparameters(base_model: str, n_examples: int, n_epochs: int | str = "auto",
                            batch_size: int | str = "auto", lr_mult: float | str = "auto") -> dict[str, Any]:
    """Concrete values for OpenAI's 'auto' hyperparameters, plus the LoRA settings the run will use.

    n_epochs auto: 3, raised so that small files still see ~100 examples in total (at most 10 epochs).
    batch_size auto: 4 for up to 400 examples, then ~1% of them, at most 32 (on CPU a step of 4 rows of a few
    hundred tokens is about as efficient per token as a larger one, and 100 rows x 3 epochs give 75 updates).
    learning_rate_multiplier auto: 1.0, i.e. the model's own base rate (ModelSpec.learning_rate, chosen by the full
    validation loss on the real data: benchmarks/README.md).
    """
    model_spec = models.get_spec(base_model)
    n = max(int(n_examples), 1)
    epochs = int(n_epochs) if n_epochs != "auto" else max(DEFAULT_N_EPOCHS, min(10, math.ceil(100 / n)))
    if batch_size == "auto":
        bs = DEFAULT_BATCH_SIZE if n <= 400 else min(32, max(DEFAULT_BATCH_SIZE, n // 100))
    else:
        bs = int(batch_size)
    mult = 1.0 if lr_mult == "auto" else float(lr_mult)
    if epochs < 1 or bs < 1 or not mult > 0:
        raise ValueError(f"hyperparameters must be positive (n_epochs={epochs}, batch_size={bs}, learning_rate_multiplier={mult})")
    bs = min(bs, n)
    return {"n_epochs": epochs, "batch_size": bs, "learning_rate_multiplier": mult,
            "learning_rate": model_spec.learning_rate * mult, "lora_rank": DEFAULT_LORA_RANK,
            "lora_alpha": DEFAULT_LORA_ALPHA_RATIO * DEFAULT_LORA_RANK}


# ---- data ---------------------------------------------------------------------------------------

def read_chat_jsonl(path: Path) -> list[list[dict[str, Any]]]:
    """The conversations of an OpenAI chat fine-tuning file; TrainDataError names the first bad line."""
    path = Path(path)
    conversations = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise TrainDataError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise TrainDataError(f"{path}: cannot read ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainDataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise TrainDataError(f"{path}:{lineno}: expected an object with a non-empty 'messages' list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in {"system", "user", "assistant"}:
                raise TrainDataError(f"{path}:{lineno}: message {i} needs a role of system, user or assistant")
            if not isinstance(m.get("content"), str):
                raise TrainDataError(f"{path}:{lineno}: message {i} needs text 'content'")
            if m.get("weight", 1) not in (0, 1):
                raise TrainDataError(f"{path}:{lineno}: message {i} has weight {m.get('weight')!r}; only 0 and 1 are allowed")
        if not any(m["role"] == "assistant" for m in messages):
            raise TrainDataError(f"{path}:{lineno}: no assistant message to learn from")
        conversations.append(messages)
    if not conversations:
        raise TrainDataError(f"{path}: no examples")
    return conversations


def encode_example(tokenizer: Any, messages: list[dict[str, Any]], max_len: int, stop_ids: set[int]) -> Example:
    """Tokenise a conversation message by message with the chat template; label assistant turns with weight != 0."""
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for k, message in enumerate(messages):
        upto = models.render_chat(tokenizer, messages[: k + 1], False)
        if not upto.startswith(rendered):
            raise TrainDataError("the chat template does not render conversations incrementally; cannot mask prompts")
        if message["role"] == "assistant" and k > 0:
            header = models.render_chat(tokenizer, messages[:k], True) if k else ""
            if not header.startswith(rendered) or not upto.startswith(header):
                raise TrainDataError("the chat template's generation prompt does not prefix the assistant turn")
            head_ids = tokenizer(header[len(rendered):], add_special_tokens=False)["input_ids"]
            body_ids = tokenizer(upto[len(header):], add_special_tokens=False)["input_ids"]
            ids += head_ids + body_ids
            labels += [IGNORE] * len(head_ids)
            if message.get("weight", 1) == 0:
                labels += [IGNORE] * len(body_ids)
            else:
                # learn the content and the end-of-turn token, not the template's trailing newline
                last = max((i for i, t in enumerate(body_ids) if t in stop_ids), default=len(body_ids) - 1)
                labels += body_ids[: last + 1] + [IGNORE] * (len(body_ids) - last - 1)
        else:
            part = tokenizer(upto[len(rendered):], add_special_tokens=False)["input_ids"]
            ids += part
            labels += [IGNORE] * len(part)
        rendered = upto
    truncated = len(ids) > max_len
    return Example(ids[:max_len], labels[:max_len], truncated)


def encode_file(path: Path, tokenizer: Any, max_len: int, stop_ids: set[int]) -> tuple[list[Example], dict[str, int]]:
    """Tokenised examples of a file and counts of what was cut or skipped."""
    examples, stats = [], {"examples": 0, "truncated": 0, "skipped_no_trainable_tokens": 0}
    for messages in read_chat_jsonl(path):
        stats["examples"] += 1
        ex = encode_example(tokenizer, messages, max_len, stop_ids)
        stats["truncated"] += ex.truncated
        if ex.n_trainable == 0:
            stats["skipped_no_trainable_tokens"] += 1
            continue
        examples.append(ex)
    return examples, stats


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


def add_lora(model: Any, rank: int, seed: int, precision: str) -> Any:
    """Wrap a base model with a seeded LoRA adapter on all linear layers; the base is frozen (bf16 if chosen)."""
    import torch
    from peft import LoraConfig, get_peft_model

    if precision == "bf16":
        model.to(torch.bfloat16)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=DEFAULT_LORA_ALPHA_RATIO * rank, lora_dropout=0.0,
                        target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)  # keeps the adapter weights in float32
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return peft_model


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


def batch_loss(model: Any, batch: dict[str, Any], device: str, precision: str,
               share_prefix: bool = True) -> tuple[Any, int, int]:
    """(sum of token losses, correct predictions, labelled tokens) for one micro-batch; logits only where labelled.

    When every row starts with the same tokens (the system prompt of a training file usually is identical),
    that prefix runs once and its keys/values are repeated for the batch; the rest of each row attends to them
    through the KV cache, and gradients flow back through the shared pass.
    """
    import torch
    import torch.nn.functional as F

    decoder, head = _decoder_and_head(model)
    prefix = shared_prefix_length(batch) if share_prefix else 0
    ids, mask, targets = batch["input_ids"], batch["attention_mask"], batch["targets"]
    with autocast(device, precision):
        if prefix:
            from transformers import DynamicCache

            cache = DynamicCache(config=getattr(decoder, "config", None))
            decoder(input_ids=ids[:1, :prefix], past_key_values=cache, use_cache=True)
            cache.batch_repeat_interleave(ids.shape[0])
            positions = torch.arange(prefix, ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)
            hidden = decoder(input_ids=ids[:, prefix:], attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True).last_hidden_state
            targets = targets[:, prefix:]
        else:
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        where = targets != IGNORE
        logits = head(hidden[where]).float()
    chosen = targets[where]
    loss = F.cross_entropy(logits, chosen, reduction="sum")
    with torch.no_grad():
        correct = int((logits.argmax(-1) == chosen).sum())
    return loss, correct, int(chosen.numel())


def evaluate(model: Any, examples: list[Example], pad_id: int, device: str, precision: str,
             should_stop: Callable[[], bool]) -> tuple[float, float] | None:
    """Mean token loss and accuracy over examples (no gradients); None when stopped."""
    import torch

    lengths = [len(e.input_ids) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: lengths[i], reverse=True)
    total, correct, count = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for group in micro_batches(order, lengths, MAX_BATCH_TOKENS * 2):
            if should_stop():
                return None
            loss, c, n = batch_loss(model, collate([examples[i] for i in group], pad_id, device), device, precision)
            total, correct, count = total + float(loss), correct + c, count + n
    model.train()
    return total / max(count, 1), correct / max(count, 1)


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


# ---- training loop ------------------------------------------------------------------------------

def train(spec: TrainSpec, on_event: Callable[[dict], None], should_stop: Callable[[], bool]) -> TrainResult:
    """Fine-tune a LoRA adapter on spec.train_path; report metrics/checkpoint/message events; return the result."""
    import torch

    started = time.time()
    say = lambda text, level="info": on_event({"type": "message", "level": level, "message": text})  # noqa: E731
    loaded = models.load_model(spec.base_model, spec.cache_dir)
    tok, device = loaded.tokenizer, loaded.device
    max_len = spec.max_seq_len or loaded.spec.max_seq_len
    stop_ids = loaded.stop_ids
    train_set, stats = encode_file(spec.train_path, tok, max_len, stop_ids)
    valid_set, vstats = encode_file(spec.valid_path, tok, max_len, stop_ids) if spec.valid_path else ([], None)
    for name, s in (("training", stats), ("validation", vstats)):
        if s and (s["truncated"] or s["skipped_no_trainable_tokens"]):
            say(f"{name} file: {s['truncated']} of {s['examples']} examples cut to {max_len} tokens; "
                f"{s['skipped_no_trainable_tokens']} skipped (no assistant token left to learn from)", "warn")
    if not train_set:
        raise TrainDataError(f"{spec.train_path}: no example has an assistant token to learn from")

    precision = choose_precision(spec.precision, device)
    model = add_lora(loaded.model, spec.lora_rank, spec.seed, precision)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    peak_lr = spec.learning_rate * spec.learning_rate_multiplier
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.0)
    rng = random.Random(spec.seed)
    lengths = [len(e.input_ids) for e in train_set]
    batch_size = max(1, min(spec.batch_size, len(train_set)))
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total_steps = steps_per_epoch * spec.n_epochs
    eval_every = spec.eval_every or max(1, math.ceil(steps_per_epoch / 2))
    valid_batch = valid_set[:VALID_BATCH]  # between epoch ends: a fixed small subset, so the curve stays cheap
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(stop_ids))
    hyper = {"n_epochs": spec.n_epochs, "batch_size": batch_size, "learning_rate": peak_lr, "lora_rank": spec.lora_rank,
             "lora_alpha": DEFAULT_LORA_ALPHA_RATIO * spec.lora_rank, "precision": precision, "max_seq_len": max_len,
             "grouping": spec.grouping, "device": device, "seed": spec.seed}
    say(f"training {spec.base_model} with LoRA r={spec.lora_rank} on {len(train_set)} examples "
        f"({sum(lengths)} tokens), {len(valid_set)} validation examples; {total_steps} steps, "
        f"batch {batch_size}, lr {peak_lr:g}, {precision} on {device}")

    result = TrainResult(trained_tokens=0, adapter_dir=None, total_steps=total_steps, n_examples=len(train_set),
                         hyperparameters=hyper)
    if valid_set:
        first = evaluate(model, valid_set, pad_id, device, precision, should_stop)
        if first is None:
            return _stopped(result, started)
        result.initial_valid_loss = first[0]
        say(f"validation loss before training: {first[0]:.4f} (token accuracy {first[1]:.3f})")

    step = 0
    for epoch in range(1, spec.n_epochs + 1):
        if spec.grouping == "length":
            batches = length_grouped_batches(lengths, batch_size, rng)
        else:
            batches = random_batches(len(train_set), batch_size, rng)
        for batch in batches:
            if should_stop():
                return _stopped(result, started)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, peak_lr)
            n_labels = sum(train_set[i].n_trainable for i in batch)
            loss_sum, correct = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            for group in micro_batches(batch, lengths):
                tensors = collate([train_set[i] for i in group], pad_id, device)
                loss, c, n = batch_loss(model, tensors, device, precision)
                (loss / n_labels).backward()
                loss_sum, correct = loss_sum + float(loss.detach()), correct + c
                result.trained_tokens += tensors["tokens"]
                result.assistant_tokens += n
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            result.steps = step
            event: dict[str, Any] = {"type": "metrics", "step": step, "total_steps": total_steps, "epoch": epoch,
                                     "train_loss": loss_sum / n_labels, "train_mean_token_accuracy": correct / n_labels}
            epoch_end = batch is batches[-1]
            if valid_set and (step % eval_every == 0 or epoch_end):
                scores = evaluate(model, valid_set if epoch_end else valid_batch, pad_id, device, precision, should_stop)
                if scores is None:
                    return _stopped(result, started)
                event["valid_loss"], event["valid_mean_token_accuracy"] = scores
                if epoch_end:
                    event["full_valid_loss"], event["full_valid_mean_token_accuracy"] = scores
                    result.final_valid_loss = scores[0]
            on_event(event)
        metrics = {k: event[k] for k in event if k not in {"type", "step", "total_steps", "epoch"}}
        if spec.save_checkpoints:
            path = save_adapter(model, spec.output_dir / "checkpoints" / f"step-{step}",
                                {"base_model": spec.base_model, "epoch": epoch, "step": step, "metrics": metrics,
                                 "hyperparameters": hyper})
            checkpoint = {"epoch": epoch, "step": step, "path": str(path), "metrics": metrics}
            result.checkpoints.append(checkpoint)
            on_event({"type": "checkpoint", **checkpoint})
    result.adapter_dir = save_adapter(model, spec.output_dir / "adapter",
                                      {"base_model": spec.base_model, "epoch": spec.n_epochs, "step": step,
                                       "hyperparameters": hyper, "trained_tokens": result.trained_tokens})
    result.seconds = time.time() - started
    say(f"trained {result.trained_tokens} tokens in {result.seconds:.0f} s "
        f"({result.trained_tokens / max(result.seconds, 1e-9):.0f} tokens/s)")
    return result


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
