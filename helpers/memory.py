"""How much memory the course needs on the local backend, and whether this machine has it free (`make course`).

The figures are the peaks of the course's processes together (the notebooks' kernel, the local server and its
training worker), from `benchmarks/bench_memory.py`, rounded up; benchmarks/README.md has the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.localapi import models

GB = 1024 ** 3
# Peak resident memory of the course's processes together on the local backend, by base model and by the trainer's
# path on this CPU: True where it has native bf16 (AVX512-BF16 or AMX: the trainer computes in bf16), False where
# it computes in float32 (most laptops). benchmarks/README.md ("Memory") has the measurements behind each figure.
COURSE_PEAK_GB = {
    # not measured with native bf16 since the server frees its models before training and exports (2026-12-07);
    # before 08 the bf16 course measured 5.20 GB on a Xeon with AMX (2026-12-06); 08 works in float32 everywhere
    (models.QWEN_MODEL, True): 4.0,
    (models.QWEN_MODEL, False): 4.0,  # AVX2-only emulation on AMD EPYC, one course run 2026-12-07 17:58-18:32:
    # 3.98 GB (01-05 1.33, 06 3.96, 07 3.98, 08 3.87, 09 3.98); 07 again with oneDNN's cache bounded 3.73 GB
    (models.DEFAULT_MODEL, True): 2.0,  # not measured: a quarter of Qwen's weights, the same processes around them
    (models.DEFAULT_MODEL, False): 2.5,  # not measured (as above)
    (models.TINY_MODEL, True): 1.5,
    (models.TINY_MODEL, False): 1.5,
}
UNMEASURED_PEAK_GB = 8.0  # models listed in LOCALAPI_EXTRA_MODELS: not measured, assume a generous figure


@dataclass
class MemoryCheck:
    """What the course needs and what the machine has free, in GB (available is None where it cannot be read)."""

    model: str
    needed_gb: float
    available_gb: float | None

    @property
    def enough(self) -> bool:
        """True when the free memory covers the course's peak (or cannot be read: then we do not guess)."""
        return self.available_gb is None or self.available_gb >= self.needed_gb


def available_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Memory the system can give to new work without swapping (Linux's MemAvailable), in GB; None elsewhere."""
    try:
        for line in meminfo.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GB
    except (OSError, ValueError, IndexError):
        return None
    return None


def needed_gb(model: str, native_bf16: bool | None = None) -> float:
    """The course's peak memory on the local backend for `model` on this CPU (or on one with/without native bf16)."""
    native = models.cpu_supports_bf16() if native_bf16 is None else native_bf16
    return COURSE_PEAK_GB.get((model, native), UNMEASURED_PEAK_GB)


def check(model: str, available: float | None = None, native_bf16: bool | None = None) -> MemoryCheck:
    """The course's need for `model` against the machine's free memory (read now unless given)."""
    free = available_gb() if available is None else available
    return MemoryCheck(model, needed_gb(model, native_bf16), free)


def advice(result: MemoryCheck) -> str:
    """What to do when there is too little memory free, in plain words (Chinese, then English)."""
    smaller = models.DEFAULT_MODEL if result.model != models.DEFAULT_MODEL else None
    lines = [
        f"内存不够：本机现在只有 {result.available_gb:.1f} GB 可用内存，用 {result.model} 在本机训练和生成，"
        f"整个课程的进程合计最多要 {result.needed_gb:.1f} GB。",
        "可以这样做：关掉浏览器标签页、IDE 等占内存的程序后再运行；",
    ]
    if smaller:
        lines.append(f"  或者换一个更小的模型：FINETUNE_BASE_MODEL={smaller}（约 {needed_gb(smaller):.1f} GB，"
                     "但它几乎不会写中文）；")
    lines += [
        "  或者改用远程后端（README「换成 OpenAI」一节）；",
        "  确定要继续（会用到交换空间，慢很多），设置 WORKBOOK_SKIP_MEMORY_CHECK=1。",
        f"Not enough memory: {result.available_gb:.1f} GB available, the course on {result.model} needs up to "
        f"{result.needed_gb:.1f} GB for its processes together. Close other programs, "
        + (f"use FINETUNE_BASE_MODEL={smaller}, " if smaller else "")
        + "or the remote backend; WORKBOOK_SKIP_MEMORY_CHECK=1 runs anyway (slowly, swapping).",
    ]
    return "\n".join(lines)
