"""Learning-rate / epoch sweep: full validation loss per epoch of the default job, for one local model.

    HUATUO_PATH=... .venv/bin/python benchmarks/sweep_lr.py --model qwen2.5-coder-0.5b-instruct --lrs 2e-4,5e-4 \
        [--epochs 3] [--threads 1] [--out sweep.jsonl]

Each learning rate is one run of `trainer.train` on the course's split (100 training rows, 20 validation rows,
seed 42, batch size 4, LoRA r 16, the trainer's warm-up and decay over all epochs). The trainer computes the full
validation loss before training and at the end of every epoch, so one 3-epoch run gives the epoch axis too
(note: the learning-rate schedule decays over the 3 epochs, so "after epoch 2 of 3" is not quite a 2-epoch job).
One JSON line per run goes to `--out` (appended), with the wall time of the whole run (model load, validation
and checkpoints included) the CPU seconds of this process (with
`--threads 1` about the wall time the run would take alone on one core) and the load average before and after; the per-epoch adapters stay in `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from engine_data import data_path, make_split

from helpers.config import REPO_ROOT
from helpers.localapi import models as M
from helpers.localapi import trainer as T


def one_run(model: str, lr: float, epochs: int, split_dir: Path, out_dir: Path, cache_dir: Path) -> dict:
    """Train once at `lr`; the full validation loss before training and after each epoch, and the timings."""
    split = make_split(split_dir)
    events: list[dict] = []
    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), time.process_time()
    result = T.train(T.TrainSpec(model, split.train_path, split.valid_path, out_dir, n_epochs=epochs,
                                 learning_rate=lr, cache_dir=cache_dir), events.append, lambda: False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    curve = [e["full_valid_loss"] for e in events if e["type"] == "metrics" and "full_valid_loss" in e]
    accuracy = [e["full_valid_mean_token_accuracy"] for e in events
                if e["type"] == "metrics" and "full_valid_mean_token_accuracy" in e]
    return {"model": model, "learning_rate": lr, "n_epochs": epochs, "data": data_path().name,
            "initial_valid_loss": result.initial_valid_loss, "full_valid_loss_per_epoch": curve,
            "full_valid_accuracy_per_epoch": accuracy, "train_seconds": round(result.seconds, 1),
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "trained_tokens": result.trained_tokens, "steps": result.steps,
            "checkpoints": [c["path"] for c in result.checkpoints], "adapter": str(result.adapter_dir),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=M.DEFAULT_MODEL)
    parser.add_argument("--lrs", default="2e-4,5e-4", help="comma-separated peak learning rates")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    parser.add_argument("--keep", type=Path, default=None, help="folder for the runs' adapters (default: a temp folder)")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    keep = args.keep or Path(tempfile.mkdtemp(prefix="sweep-"))
    for lr in (float(x) for x in args.lrs.split(",")):
        row = one_run(args.model, lr, args.epochs, keep / "data", keep / f"{M.safe_name(args.model)}-lr{lr:g}",
                      args.cache_dir)
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        curve = " -> ".join(f"{x:.3f}" for x in [row["initial_valid_loss"], *row["full_valid_loss_per_epoch"]])
        print(f"{args.model} lr {lr:g}: full validation loss {curve}; {row['wall_seconds']:.0f} s wall, "
              f"{row['cpu_seconds']:.0f} CPU s, "
              f"{row['trained_tokens']} tokens, load {row['load_before']} -> {row['load_after']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
