"""The measured learning-rate sweep that chose the course's defaults (notebook 06's hyperparameter lesson).

Each row is a 3-epoch job on the course's data (the real Huatuo-26M test set, cleaned and split as notebook 02
does: 100 training rows, 20 validation rows, seed 42) with Qwen2.5-Coder-0.5B-Instruct, LoRA r 16, batch 4,
measured by `benchmarks/sweep_lr.py` and written up in `benchmarks/README.md` ("Learning rate and epochs");
`tests/test_sweep.py` holds the two in agreement. These are past measurements with their provenance, not
something a notebook run recomputes (a sweep takes four training jobs).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SWEEP_COMMAND = ("HUATUO_PATH=data/huatuo26M_test_datasets.jsonl python benchmarks/sweep_lr.py "
                 "--model qwen2.5-coder-0.5b-instruct --lrs LR")
SWEEP_MACHINE = "AMD EPYC（Zen 4，2 核，原生 bf16：AVX512-BF16），训练用 bf16"


@dataclass(frozen=True)
class SweepRun:
    """One learning rate's 3-epoch job: full validation loss before training and after each epoch."""

    learning_rate: float
    before: float
    epochs: tuple[float, float, float]
    measured: str  # when, and under what load

    @property
    def best_epoch(self) -> int:
        """The epoch (1-based) whose full validation loss is lowest."""
        return min(range(len(self.epochs)), key=lambda i: self.epochs[i]) + 1


SWEEP: tuple[SweepRun, ...] = (
    SweepRun(1e-3, 4.315, (4.040, 4.112, 4.574), "2026-12-01，另一次会话，机器空闲"),
    SweepRun(5e-4, 4.315, (3.846, 3.912, 4.223), "2026-12-01 22:23–23:20，机器繁忙（单线程）"),
    SweepRun(2e-4, 4.315, (3.801, 3.790, 3.859), "2026-12-02 02:32–02:43，机器基本空闲"),
    SweepRun(1e-4, 4.315, (3.819, 3.777, 3.779), "2026-12-02 05:23–05:32，机器空闲"),
)


def sweep_table(runs: tuple[SweepRun, ...] = SWEEP) -> pd.DataFrame:
    """The sweep as notebook 06 shows it: one row per peak learning rate, the loss after each epoch, the lowest point."""
    rows = []
    for run in runs:
        rows.append({"峰值学习率": f"{run.learning_rate:.0e}".replace("e-0", "e-"), "训练前": f"{run.before:.3f}",
                     **{f"第 {i} 轮末": f"{loss:.3f}" for i, loss in enumerate(run.epochs, 1)},
                     "最低点": f"第 {run.best_epoch} 轮（{min(run.epochs):.3f}）",
                     "比训练前低": f"{run.before - min(run.epochs):.3f}", "测量时间": run.measured})
    return pd.DataFrame(rows).set_index("峰值学习率")
