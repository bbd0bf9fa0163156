"""Check: the fine-tuned default model beats its base on held-out questions (character-level ROUGE-L).

    .venv/bin/python benchmarks/check_finetune_beats_base.py [--adapter DIR] [--n 50] [--model smollm2-135m-instruct]

Trains the default job (100 Huatuo-style rows x 3 epochs, trainer defaults) unless `--adapter` names an
adapter already trained on the same split, then answers the held-out questions greedily with the base model
and with the fine-tuned model (same system prompt, same max_tokens), and scores both against the reference
answers with the workbook's character-level ROUGE-L (`helpers.metrics`). Exit status 1 when the fine-tuned
model does not score higher than the base (mean over questions), 0 when it does. Slow (minutes): not part
of `make test`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from engine_data import make_split, question_messages

from helpers.config import REPO_ROOT
from helpers.localapi import generate as G
from helpers.localapi import models as M
from helpers.localapi import trainer as T
from helpers.metrics import rouge_l


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=M.DEFAULT_MODEL)
    parser.add_argument("--adapter", type=Path, help="a trained adapter to evaluate instead of training one")
    parser.add_argument("--n", type=int, default=50, help="held-out questions")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="check-rouge-"))
    split = make_split(work / "data", n_heldout=args.n)
    adapter = args.adapter
    if adapter is None:
        started = time.perf_counter()
        events: list[dict] = []
        result = T.train(T.TrainSpec(args.model, split.train_path, split.valid_path, work / "job", n_epochs=3,
                                     cache_dir=args.cache_dir), events.append, lambda: False)
        adapter = result.adapter_dir
        print(f"trained {adapter} in {time.perf_counter() - started:.0f} s; validation loss "
              f"{result.initial_valid_loss:.3f} -> {result.final_valid_loss:.3f}", flush=True)

    pool = M.ModelPool(args.cache_dir)
    generator = G.Generator(pool)
    conversations = [question_messages(split, row["questions"]) for row in split.heldout]
    references = [row["answers"] for row in split.heldout]
    scores = {}
    answers = {}
    for name, view in (("base", pool.get(args.model)), ("fine-tuned", pool.get(args.model, adapter))):
        started = time.perf_counter()
        choices = generator.complete_many(view, conversations, max_tokens=args.max_tokens, temperature=0)
        answers[name] = [c[0].text for c in choices]
        scores[name] = [rouge_l(a, r) for a, r in zip(answers[name], references)]
        print(f"{name:>10}: ROUGE-L {statistics.mean(scores[name]):.4f} over {len(references)} held-out questions "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    generator.close()
    for i in range(min(3, len(references))):
        print(f"\nQ: {split.heldout[i]['questions']}\nreference : {references[i]}")
        for name in answers:
            print(f"{name:<10}: {answers[name][i][:200]}")
    wins = sum(t > b for t, b in zip(scores["fine-tuned"], scores["base"]))
    base, tuned = statistics.mean(scores["base"]), statistics.mean(scores["fine-tuned"])
    print(f"\nfine-tuned {tuned:.4f} vs base {base:.4f} (x{tuned / max(base, 1e-9):.2f}); "
          f"fine-tuned better on {wins}/{len(references)} questions")
    if tuned <= base:
        print("FAIL: the fine-tuned model does not beat its base on ROUGE-L")
        return 1
    print("OK: the fine-tuned model beats its base on ROUGE-L")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
