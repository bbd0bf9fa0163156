"""The course's memory check: what this machine has free against what the course needs, and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import course, memory
from helpers.config import load_config
from helpers.localapi import models


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:  1000 kB\nMemAvailable:    3145728 kB\n", encoding="ascii")
    assert memory.available_gb(meminfo) == pytest.approx(3.0)
    meminfo.write_text("MemTotal: 1 kB\n", encoding="ascii")  # an old kernel without MemAvailable
    assert memory.available_gb(meminfo) is None
    assert memory.available_gb(tmp_path / "missing") is None  # not Linux


def test_too_little_memory_says_what_to_do_in_both_languages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # a CPU without native bf16: training computes in float32
    short = memory.check(models.QWEN_MODEL, available=2.5, native_bf16=False)
    assert not short.enough and short.needed_gb == memory.COURSE_PEAK_GB[(models.QWEN_MODEL, False)]
    assert memory.needed_gb(models.QWEN_MODEL, native_bf16=True) <= short.needed_gb  # never more (08 is float32 on both)
    text = memory.advice(short)
    assert "2.5 GB" in text and f"{short.needed_gb:.1f} GB" in text and models.QWEN_MODEL in text
    assert f"FINETUNE_BASE_MODEL={models.DEFAULT_MODEL}" in text and "WORKBOOK_SKIP_MEMORY_CHECK=1" in text
    assert "内存不够" in text and "Not enough memory" in text
    assert "LOCALAPI_TRAIN_BASE_WEIGHTS" not in text  # the bf16 base is the default: nothing smaller to set
    assert memory.check(models.QWEN_MODEL, available=64.0).enough
    assert memory.check("someone/unmeasured-model", available=4.0).needed_gb == memory.UNMEASURED_PEAK_GB
    smallest = memory.advice(memory.check(models.DEFAULT_MODEL, available=0.5))
    assert "FINETUNE_BASE_MODEL" not in smallest  # no smaller model to suggest


def test_course_stops_before_any_notebook_when_memory_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "WORKBOOK_SKIP_MEMORY_CHECK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))
    cfg = load_config(env_file=tmp_path / "none.env")
    monkeypatch.setattr(memory, "available_gb", lambda meminfo=None: 1.0)
    started: list[str] = []
    monkeypatch.setattr(course, "execute_notebook", lambda path, *a, **k: started.append(path.name))
    with pytest.raises(course.CourseError, match="内存不够") as info:
        course.run_course(cfg)
    assert started == [] and "1.0 GB" in str(info.value)
    assert "memory: 1.0 GB available" in capsys.readouterr().out
