"""Benchmark: the comparison step's concurrency (notebook 07).

Starts the local server with the tiny model and 1 s of injected latency on every API request
(`LOCALAPI_LATENCY=1`), in a private work folder on a free port, then sends the same 50 chat
requests twice through `helpers.evaluation.run_arms` without the cache: once one at a time
(pool of 1, the baseline) and once with the bounded pool of 8. Prints both times and the ratio;
the target is at least 6×.

    .venv/bin/python benchmarks/bench_compare.py [--requests 50] [--workers 8] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from helpers import evaluation
from helpers.client import make_client
from helpers.config import load_config
from helpers.net import free_port

TARGET = 6.0


def timed_run(client, arm: evaluation.Arm, questions: list[str], base_url: str, workers: int, max_tokens: int) -> float:
    """Seconds for all questions through a pool of `workers`, without the cache."""
    start = time.perf_counter()
    evaluation.run_arms(client, [arm], questions, base_url=base_url, cache=None, workers=workers, max_tokens=max_tokens)
    return time.perf_counter() - start


def main() -> int:
    """Run the benchmark and print the ratio; exit 1 if it is below the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    os.environ.update({"WORKBOOK_WORK_DIR": str(root / "work"), "LOCALAPI_PORT": str(free_port()), "FINETUNE_BACKEND": "local",
                       "FINETUNE_BASE_MODEL": "tiny-test", "LOCALAPI_LATENCY": str(args.latency)})
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LOCALAPI_FAULTS", "LOCALAPI_KEY"):
        os.environ.pop(name, None)
    cfg = load_config()
    from helpers.local_backend import ensure_server, stop_server

    ensure_server(cfg)
    try:
        client = make_client(cfg)
        arm = evaluation.Arm("base", cfg.base_model, "你是一名医生。")
        questions = [f"第{i}个问题：头疼怎么办？" for i in range(args.requests)]
        timed_run(client, arm, questions[:2], cfg.base_url, 2, args.max_tokens)  # warm-up: model load
        sequential = timed_run(client, arm, questions, cfg.base_url, 1, args.max_tokens)
        pooled = timed_run(client, arm, questions, cfg.base_url, args.workers, args.max_tokens)
    finally:
        stop_server(cfg)
    ratio = sequential / pooled
    print(f"{args.requests} requests, {args.latency:.1f} s injected latency each, max_tokens={args.max_tokens}")
    print(f"one at a time      : {sequential:6.1f} s")
    print(f"pool of {args.workers:<2}         : {pooled:6.1f} s")
    print(f"speed-up           : {ratio:.1f}x (target >= {TARGET:.0f}x) {'OK' if ratio >= TARGET else 'BELOW TARGET'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
