"""Generation speed of the batching Generator vs `model.generate` one question at a time, in the same run.

    .venv/bin/python benchmarks/bench_generate.py [--adapter DIR] [--n 50] [--baseline-n 10] [--max-tokens 128]

Answers the held-out questions of the benchmark split (greedy, the training system prompt):
1. naive baseline: the float32 model, `model.generate` for one question after another (`--baseline-n` of them);
2. ours, as the server sees notebook 07: `--workers` threads (default 8, like helpers.evaluation) each sending one
   request at a time to one shared Generator, which batches whatever is waiting (bf16 weights where native),
   once with continuous batching (the server's way: requests join a running batch) and once with static batches
   (a batch takes no new rows once it runs), in the same run;
3. ours, everything at once: all `--n` questions submitted together (batches of DEFAULT_MAX_BATCH rows).
tokens/s counts generated tokens (usage.completion_tokens; for the baseline, new tokens before end-of-turn).
With `--adapter` the fine-tuned model answers (shorter, in the reference style), otherwise the base model.
Prints ratios against the baseline of this run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine_data import make_split, question_messages

from helpers.config import REPO_ROOT
from helpers.localapi import generate as G
from helpers.localapi import models as M


def naive(view: M.LoadedModel, conversations: list[list[dict]], max_tokens: int) -> tuple[int, float]:
    """(generated tokens, seconds) for model.generate one conversation at a time."""
    import torch

    stop = sorted(view.stop_ids)
    tokens, started = 0, time.perf_counter()
    for messages in conversations:
        prompt = M.encode_prompt(view.tokenizer, messages)
        with torch.no_grad():
            out = view.model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False,
                                      eos_token_id=stop, pad_token_id=view.tokenizer.pad_token_id)
        new = out[0][len(prompt):].tolist()
        tokens += len([t for t in new if t not in stop])
    return tokens, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=M.DEFAULT_MODEL)
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--baseline-n", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 keeps the "
                        "comparison fair on a machine crowded by other jobs")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    split = make_split(Path(tempfile.mkdtemp(prefix="bench-gen-")) / "data", n_heldout=args.n)
    conversations = [question_messages(split, row["questions"]) for row in split.heldout]
    plain = M.load_model(args.model, args.cache_dir, args.adapter)  # float32, like a first tutorial would
    pool = M.ModelPool(args.cache_dir)
    view = pool.get(args.model, args.adapter)
    print(f"model {args.model}{' + ' + str(args.adapter) if args.adapter else ''}; max_tokens {args.max_tokens}; "
          f"pool weights {view.model.dtype}", flush=True)
    generator = G.Generator(pool)
    generator.complete(view, conversations[0], max_tokens=4, temperature=0)  # warm-up

    tokens, seconds = naive(plain, conversations[: args.baseline_n], args.max_tokens)
    base_rate = tokens / seconds
    print(f"naive model.generate, one at a time ({args.baseline_n} questions): {tokens} tokens in {seconds:.1f} s = "
          f"{base_rate:.1f} tokens/s  1.00x", flush=True)

    static = G.Generator(pool, continuous=False)
    for name, gen in (("continuous batching", generator), ("static batches", static)):
        def one(messages: list[dict], gen: G.Generator = gen) -> int:
            return gen.complete(view, messages, max_tokens=args.max_tokens, temperature=0)[0].usage.completion_tokens

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.workers) as threads:
            tokens = sum(threads.map(one, conversations))
        seconds = time.perf_counter() - started
        print(f"Generator, {args.workers} concurrent clients, {name} ({args.n} questions): {tokens} tokens in "
              f"{seconds:.1f} s = {tokens / seconds:.1f} tokens/s  {tokens / seconds / base_rate:.2f}x", flush=True)
    static.close()

    started = time.perf_counter()
    choices = generator.complete_many(view, conversations, max_tokens=args.max_tokens, temperature=0)
    seconds = time.perf_counter() - started
    tokens = sum(c[0].usage.completion_tokens for c in choices)
    print(f"Generator, all {args.n} at once (batches of {generator.max_batch}): {tokens} tokens in {seconds:.1f} s = "
          f"{tokens / seconds:.1f} tokens/s  {tokens / seconds / base_rate:.2f}x", flush=True)
    generator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
