"""Notebook 07's generation, the engine before issue 17 against today's, side by side in one run on the same questions.

    .venv/bin/python benchmarks/bench_answers.py --adapter DIR [--n 50] [--isa avx2] [--order before,now]
        [--workers 8] [--frequency-penalty 0.5]

Sends one Generator what notebook 07 sends the server, from `--workers` client threads (07's `workers`: 8 before,
16 now), greedy, seed 42:
1. token counts: the empty message and the 100 training answers as one-token requests (how `text_token_counts`
   counted before the server answered `/v1/responses/input_tokens`; it now counts without generating);
2. answers: the three arms (`evaluation.make_arms`: base + system prompt, base + 3 few-shot examples, fine-tuned
   = base + `--adapter`) on the first `--n` held-out questions, arm after arm as `run_arms` orders them, with
   `max_tokens` = the 90th percentile of the training answers' token counts (`token_budget`, as 07 computes it).
The split is the course's (`engine_data`: 100 / 20 / 50 rows, seed 42); `--adapter` should be trained on it
(for example `check_finetune_beats_base.py`'s, or a job's `adapter/`).

Variants, each with a fresh model pool in this process, one after the other:
- before: the generator before issue 17: plain linear layers, every prefill padded to its longest prompt, no prefix cache;
- now: today's defaults (`prepack.py`, `generate.length_groups`, `generate.PrefixCache`).
A variant written `NAME/W` sends from W client threads instead of `--workers` (`--order now/8,now/16`: 07's old and
new `workers`). `--frequency-penalty` is sent with every answer (07 sends 0.5 since its decoding lesson; default 0).
Prints per phase the wall time, prompt and completion tokens, completion tokens per second and the ratio against
`before`, and how many answers are identical in both. `--isa avx2` re-runs itself with PyTorch held to AVX2
kernels (float32, what a CPU without native bf16 gets; `bench_memory.py` explains the emulation).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_memory import AVX2_ENV, kernels_text, cpu_line
from engine_data import load_rows, make_split

from helpers import evaluation
from helpers.chatfmt import SYSTEM_PROMPT
from helpers.config import REPO_ROOT
from helpers.localapi import generate as G
from helpers.localapi import models as M
from helpers.split import split_rows

VARIANTS = {
    "before": dict(prepack=False, prefix_cache=False, prefill_slack=float("inf")),
    "now": dict(prepack=True, prefix_cache=True, prefill_slack=G.PREFILL_SLACK),
}


def timed(generator: G.Generator, jobs: list[tuple[M.LoadedModel, list[dict]]], max_tokens: int,
          workers: int, frequency_penalty: float = 0.0) -> tuple[float, list[G.Choice]]:
    """(seconds, first choices) for the jobs sent from `workers` threads, one request at a time each."""
    def ask(job: tuple[M.LoadedModel, list[dict]]) -> G.Choice:
        view, messages = job
        return generator.complete(view, messages, max_tokens=max_tokens, temperature=0, seed=42,
                                  frequency_penalty=frequency_penalty)[0]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        choices = list(pool.map(ask, jobs))
    return time.perf_counter() - started, choices


def run_variant(spec: str, args: argparse.Namespace, train: list[dict], questions: list[str]) -> dict:
    """Both phases with one variant's pool and generator (`NAME` or `NAME/WORKERS`); prints a line per phase."""
    variant, _, threads = spec.partition("/")
    settings, workers = VARIANTS[variant], int(threads) if threads else args.workers
    pool = M.ModelPool(args.cache_dir, prepack=settings["prepack"])
    generator = G.Generator(pool, prefix_cache=settings["prefix_cache"], prefill_slack=settings["prefill_slack"])
    base, tuned = pool.get(args.model), pool.get(args.model, args.adapter)
    generator.complete(base, [{"role": "user", "content": "你好"}], max_tokens=2, temperature=0)  # warm-up
    result = {}
    texts = ["", *(row["answers"] for row in train)]
    seconds, choices = timed(generator, [(base, [{"role": "user", "content": t}]) for t in texts], 1, workers)
    counts = [max(c.usage.prompt_tokens - choices[0].usage.prompt_tokens, 0) for c in choices[1:]]
    budget = evaluation.token_budget(counts, quantile=0.9, cap=512)
    result["token counts"] = (seconds, choices)
    arms = evaluation.make_arms(args.model, "fine-tuned", SYSTEM_PROMPT, evaluation.few_shot_examples(train))
    jobs = [(tuned if arm.model == "fine-tuned" else base, arm.messages(q)) for arm in arms for q in questions]
    seconds, choices = timed(generator, jobs, budget, workers, args.frequency_penalty)
    result["answers"] = (seconds, choices)
    for phase, (seconds, choices) in result.items():
        prompt = sum(c.usage.prompt_tokens for c in choices)
        completion = sum(c.usage.completion_tokens for c in choices)
        print(f"  {spec:7s} {phase:12s} {len(choices):3d} requests, {prompt:6d} prompt + {completion:5d} completion "
              f"tokens in {seconds:6.1f} s = {completion / seconds:5.1f} completion tokens/s", flush=True)
    print(f"  {spec:7s} max_tokens {budget}; prefix tokens reused {generator.prefixes.tokens_reused if generator.prefixes else 0}; "
          f"largest batch {generator.largest_batch}", flush=True)
    generator.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=M.QWEN_MODEL)
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--n", type=int, default=50, help="held-out questions per arm (07: 50)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--frequency-penalty", type=float, default=0.0)
    parser.add_argument("--order", default="before,now")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    args = parser.parse_args()
    if args.isa == "avx2" and os.environ.get("ATEN_CPU_CAPABILITY") != AVX2_ENV["ATEN_CPU_CAPABILITY"]:
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, **AVX2_ENV))

    work = Path(tempfile.mkdtemp(prefix="bench-answers-"))
    split = make_split(work / "data")
    train = split_rows(load_rows(), 100, 20, 50, 42).train
    questions = [row["questions"] for row in split.heldout[: args.n]]
    print(cpu_line(), flush=True)
    print(f"kernels: {kernels_text(args)}; weights {M.resolve_dtype('auto', 'cpu')}; model {args.model} + {args.adapter.name}; "
          f"{len(questions)} questions x 3 arms, frequency_penalty {args.frequency_penalty}", flush=True)
    results = {name: run_variant(name, args, train, questions) for name in args.order.split(",")}
    first = args.order.split(",")[0]
    for name in results:
        for phase in results[name]:
            seconds, choices = results[name][phase]
            base_seconds, base_choices = results[first][phase]
            same = sum(a.text == b.text for a, b in zip(choices, base_choices))
            rate = sum(c.usage.completion_tokens for c in choices) / seconds
            base_rate = sum(c.usage.completion_tokens for c in base_choices) / base_seconds
            print(f"{name:7s} {phase:12s} {seconds:6.1f} s  {rate:5.1f} tokens/s  {rate / base_rate:4.2f}x  "
                  f"wall {base_seconds / seconds:4.2f}x  identical answers {same}/{len(choices)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
