"""Resume tolerance on a real model: a run stopped mid-epoch and resumed vs the same run uninterrupted (same seed).

    .venv/bin/python benchmarks/check_resume.py [--model smollm2-135m-instruct] [--rows 24] [--epochs 2] \
        [--stop-after 5] [--threads 0]

Trains `--rows` rows of the course's training split (the real data by default, see engine_data.py) three times
in all: once uninterrupted, once stopped after `--stop-after` steps (as a pause or a server shutdown stops it,
between two steps, leaving `training_state.pt`), then resumed from that state. Prints every step's training loss
of both runs, the largest difference, the difference of the final full validation loss and of the adapter
weights; exit 1 if the resumed run's step list is not the uninterrupted one's (a step trained twice or skipped).
The tests check the same with the tiny model and tolerance 0 (tests/test_engine_trainer.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from engine_data import make_split

from helpers.config import REPO_ROOT
from helpers.localapi import models as M
from helpers.localapi import trainer as T


def run(spec: T.TrainSpec, stop_after: int | None = None) -> tuple[T.TrainResult, list[dict]]:
    """One trainer run; with `stop_after`, stopped once that many steps are done."""
    events: list[dict] = []
    stop = (lambda: False) if stop_after is None else (lambda: sum(e["type"] == "metrics" for e in events) >= stop_after)
    return T.train(spec, events.append, stop), events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = REPO_ROOT / "data" / "work" / "localapi" / "models"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        split = make_split(tmp / "split")
        lines = split.train_path.read_text(encoding="utf-8").splitlines(keepends=True)[:args.rows]
        train = tmp / "train.jsonl"
        train.write_text("".join(lines), encoding="utf-8")
        spec = dict(base_model=args.model, train_path=train, valid_path=split.valid_path, n_epochs=args.epochs,
                    cache_dir=cache, state_every_seconds=0.0, save_checkpoints=False)
        print(f"{args.model}: {args.rows} rows x {args.epochs} epochs, stopped after step {args.stop_after}; "
              f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        started = time.perf_counter()
        whole, whole_events = run(T.TrainSpec(output_dir=tmp / "whole", **spec))
        stopped_spec = T.TrainSpec(output_dir=tmp / "resumed", **spec)
        _, first_events = run(stopped_spec, args.stop_after)
        resumed, second_events = run(T.TrainSpec(**{**vars(stopped_spec), "resume": True}))
        seconds = time.perf_counter() - started

        def losses(events: list[dict]) -> dict[int, float]:
            return {e["step"]: e["train_loss"] for e in events if e["type"] == "metrics"}

        a, first, second = losses(whole_events), losses(first_events), losses(second_events)
        b = {**first, **second}
        marker = [e["step"] for e in second_events if e["type"] == "resumed"]
        diffs = [abs(a[s] - b[s]) for s in a if s in b]
        wa = M.load_model(args.model, cache, whole.adapter_dir).model.state_dict()
        wb = M.load_model(args.model, cache, resumed.adapter_dir).model.state_dict()
        lora = [k for k in wa if "lora_" in k]
        weight_diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in lora)
        report = {
            "model": args.model, "rows": args.rows, "epochs": args.epochs, "steps": len(a),
            "stopped_after": sorted(first), "resumed_from": marker, "resumed_steps": sorted(second),
            "max_train_loss_diff": max(diffs), "final_train_loss": [a[max(a)], b[max(b)]],
            "final_valid_loss": [whole.final_valid_loss, resumed.final_valid_loss],
            "final_valid_loss_diff": abs((whole.final_valid_loss or 0) - (resumed.final_valid_loss or 0)),
            "max_lora_weight_diff": weight_diff, "bit_identical": weight_diff == 0.0,
            "precision": T.choose_precision("auto", "cpu"), "seconds": round(seconds, 1),
            "load_after": round(os.getloadavg()[0], 2), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for step in sorted(a):
            print(f"  step {step:>3}: uninterrupted {a[step]:.6f}  stopped/resumed {b.get(step, float('nan')):.6f}")
        print(json.dumps(report, ensure_ascii=False))
        ok = sorted(b) == sorted(a) and marker == [args.stop_after] and not set(first) & set(second)
        print("OK: one resume, every step once" if ok else "FAIL: the resumed run's steps differ from the uninterrupted run's")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
