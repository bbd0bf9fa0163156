"""Training speed of the local trainer vs a naive baseline, measured in the same run, and the 100 x 3 wall time.

    .venv/bin/python benchmarks/bench_train.py [--model smollm2-135m-instruct] [--steps 10] [--ablate] [--skip-full]

Variants, each with its own copy of the model and the same LoRA (rank, targets, seed, learning rate):
- naive baseline: the textbook loop: float32, shuffled batches padded to the longest row of the batch,
  `model(input_ids, attention_mask, labels=...)` (logits for every position);
- ours: the trainer's own step (`trainer.batch_loss` on length-grouped micro-batches, bf16 where native,
  logits only on assistant tokens, shared system-prompt prefix run once);
- (--ablate) ours with one optimisation switched off at a time.
The variants take turns step by step (A B A B ...), so that load from other processes on this shared machine
hits all of them alike; tokens/s counts real (non-padding) tokens, per wall second and per CPU second.
Then (unless --skip-full) the full default job through `trainer.train`: 100 rows x 3 epochs with a 20-row
validation file, wall time from start to the final adapter (model load, validation and checkpoints included).
Target: ours >= 2.5x the baseline; the full job <= 5 minutes on an otherwise idle 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_data import make_split

from helpers.config import REPO_ROOT
from helpers.localapi import models as M
from helpers.localapi import trainer as T


@dataclass
class Variant:
    """One way of training, timed step by step."""

    name: str
    precision: str = "bf16"
    grouping: str = "length"
    share_prefix: bool = True
    naive: bool = False
    model: Any = None
    optimizer: Any = None
    batches: list[list[int]] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    cpu: float = 0.0


def setup(variant: Variant, model_id: str, cache: Path, examples: list[T.Example], batch_size: int, steps: int) -> None:
    """Load a fresh model copy with LoRA and lay out the variant's batches."""
    import torch

    precision = T.choose_precision(variant.precision, "cpu")
    variant.precision = precision
    variant.model = T.add_lora(M.load_model(model_id, cache).model, T.DEFAULT_LORA_RANK, 42, precision)
    variant.model.train()
    variant.optimizer = torch.optim.AdamW([p for p in variant.model.parameters() if p.requires_grad],
                                          lr=M.get_spec(model_id).learning_rate)
    rng = random.Random(42)
    lengths = [len(e.input_ids) for e in examples]
    while len(variant.batches) < steps:
        if variant.grouping == "length":
            variant.batches += T.length_grouped_batches(lengths, batch_size, rng)
        else:
            variant.batches += T.random_batches(len(examples), batch_size, rng)


def naive_step(variant: Variant, rows: list[T.Example], pad_id: int) -> int:
    """The textbook step: one padded batch, full logits, HF's own loss."""
    import torch

    width = max(len(e.input_ids) for e in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), T.IGNORE)
    for r, e in enumerate(rows):
        ids[r, :len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[r, :len(e.input_ids)] = 1
        labels[r, :len(e.labels)] = torch.tensor(e.labels)
    variant.model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    return int(mask.sum())


def our_step(variant: Variant, rows: list[T.Example], pad_id: int) -> int:
    """The trainer's step: micro-batches within the token budget, assistant-only logits, accumulated gradients."""
    lengths = [len(e.input_ids) for e in rows]
    n_labels = sum(e.n_trainable for e in rows)
    tokens = 0
    for group in T.micro_batches(list(range(len(rows))), lengths):
        batch = T.collate([rows[i] for i in group], pad_id, "cpu")
        loss, _, _ = T.batch_loss(variant.model, batch, "cpu", variant.precision, share_prefix=variant.share_prefix)
        (loss / n_labels).backward()
        tokens += batch["tokens"]
    return tokens


def time_variants(variants: list[Variant], examples: list[T.Example], pad_id: int, steps: int) -> None:
    """Run the variants' steps in turns, adding up tokens, wall and CPU seconds."""
    for step in range(steps):
        for v in variants:
            rows = [examples[i] for i in v.batches[step]]
            wall, cpu = time.perf_counter(), time.process_time()
            tokens = (naive_step if v.naive else our_step)(v, rows, pad_id)
            v.optimizer.step()
            v.optimizer.zero_grad(set_to_none=True)
            v.wall += time.perf_counter() - wall
            v.cpu += time.process_time() - cpu
            v.tokens += tokens
        print(f"  step {step + 1}/{steps}: " + ", ".join(f"{v.name} {v.tokens / v.wall:.0f}/{v.tokens / v.cpu:.0f}"
                                                       for v in variants) + " tokens per wall/CPU second", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=M.DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps timed for each variant")
    parser.add_argument("--batch-size", type=int, default=T.DEFAULT_BATCH_SIZE)
    parser.add_argument("--ablate", action="store_true", help="also time one optimisation at a time")
    parser.add_argument("--only", default="", help="comma-separated variants to time besides naive and ours "
                        "(ours-fp32, ours-random-batches, ours-no-prefix-sharing)")
    parser.add_argument("--skip-full", action="store_true", help="skip the 100 rows x 3 epochs run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 makes CPU "
                        "seconds comparable on a machine crowded by other jobs")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    split = make_split(work / "data")
    loaded = M.load_model(args.model, args.cache_dir)  # converts once, outside the timings
    examples, _ = T.encode_file(split.train_path, loaded.tokenizer, loaded.spec.max_seq_len, loaded.stop_ids)
    pad_id = loaded.tokenizer.pad_token_id
    del loaded
    print(f"model {args.model}, {len(examples)} examples, batch size {args.batch_size}, {args.steps} steps per "
          f"variant, bf16 native on this CPU: {M.cpu_supports_bf16()}", flush=True)
    variants = [Variant("naive", precision="fp32", grouping="random", share_prefix=False, naive=True),
                Variant("ours", precision="auto")]
    extra = [Variant("ours-fp32", precision="fp32"), Variant("ours-random-batches", grouping="random"),
             Variant("ours-no-prefix-sharing", share_prefix=False)]
    variants += [v for v in extra if args.ablate or v.name in args.only.split(",")]
    for v in variants:
        setup(v, args.model, args.cache_dir, examples, args.batch_size, args.steps)
    time_variants(variants, examples, pad_id, args.steps)
    base = variants[0]
    for v in variants:
        print(f"{v.name:<24} {v.precision:>5} {v.grouping:>6} batches: {v.tokens / v.wall:7.1f} tokens/s "
              f"({v.tokens / base.tokens * base.wall / v.wall:.2f}x), {v.tokens / v.cpu:7.1f} tokens/CPU-s "
              f"({v.tokens / base.tokens * base.cpu / v.cpu:.2f}x)", flush=True)
    for v in variants:
        v.model = v.optimizer = None
    if not args.skip_full:
        started = time.perf_counter()
        events: list[dict] = []
        result = T.train(T.TrainSpec(args.model, split.train_path, split.valid_path, work / "full", n_epochs=3,
                                     cache_dir=args.cache_dir), events.append, lambda: False)
        wall = time.perf_counter() - started
        valid = [e["valid_loss"] for e in events if e["type"] == "metrics" and "valid_loss" in e]
        print(f"100 rows x 3 epochs + 20-row validation: {wall:.0f} s wall ({wall / 60:.1f} min, target <= 5), "
              f"{result.trained_tokens} tokens, {result.steps} steps, "
              f"valid loss {result.initial_valid_loss:.3f} -> {valid[-1]:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
