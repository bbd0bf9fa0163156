"""The sweep notebook 06 teaches from is the one benchmarks/README.md records (no drift between the two)."""

from __future__ import annotations

from pathlib import Path

from helpers.sweep import SWEEP, sweep_table

README = Path(__file__).resolve().parent.parent / "benchmarks" / "README.md"


def test_every_sweep_row_is_in_the_benchmark_readme() -> None:
    text = README.read_text(encoding="utf-8").replace("**", "")
    for run in SWEEP:
        row = " | ".join(f"{x:.3f}" for x in (run.before, *run.epochs))
        assert row in text, f"lr {run.learning_rate:g}: {row!r} is not in benchmarks/README.md"


def test_table_marks_the_lowest_epoch() -> None:
    table = sweep_table()
    assert list(table.index) == ["1e-3", "5e-4", "2e-4", "1e-4"]
    assert table.loc["2e-4", "最低点"] == "第 2 轮（3.790）" and table.loc["1e-3", "最低点"] == "第 1 轮（4.040）"
    assert table.loc["2e-4", "比训练前低"] == "0.525"
