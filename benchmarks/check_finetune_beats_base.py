"""Check: fine-tuning lowers the held-out loss of the reference answers; ROUGE-L with 95% bootstrap intervals.

    HUATUO_PATH=... .venv/bin/python benchmarks/check_finetune_beats_base.py --model qwen2.5-coder-0.5b-instruct \
        [--adapter DIR] [--n 50] [--generate 50] [--max-tokens 200] [--frequency-penalty 0] [--threads 1]

On the course's split of the data (`engine_data.make_split`: 100 training rows, 20 validation rows, `--n` held-out
rows), trains the default job (3 epochs, the model's own `auto` learning rate) unless `--adapter` names an adapter
already trained on the same split. Then:

1. what training optimises: the mean token loss of the held-out *reference answers* (teacher-forced, the training
   system prompt, assistant tokens only, as the trainer's validation loss), base model vs fine-tuned model;
   **exit status 1 unless the fine-tuned loss is lower**;
2. what a reader sees (unless `--generate 0`): greedy answers to the first `--generate` held-out questions from both (same system prompt and
   `--max-tokens`), character-level ROUGE-L against the references (`helpers.metrics.rouge_l`), each mean with a
   95% percentile bootstrap interval over questions, and the paired difference fine-tuned - base with its
   interval; the generation wall time of each arm; the share of CJK ideographs in the answers and the share stuck
   repeating a phrase (`helpers.metrics.readability`, `is_stuck`); `--frequency-penalty` is passed to both arms.
Slow (minutes): not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from engine_data import data_path, make_split, question_messages

from helpers.chatfmt import to_chat
from helpers.config import DEFAULT_LOCAL_MODEL, REPO_ROOT
from helpers.localapi import generate as G
from helpers.localapi import models as M
from helpers.localapi import trainer as T
from helpers.metrics import is_stuck, readability, rouge_l

RESAMPLES = 2000


def bootstrap_ci(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over items (seeded, so reruns print the same interval)."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def heldout_losses(model_id: str, adapter: Path, rows: list[dict[str, str]], cache_dir: Path) -> dict[str, float]:
    """Mean token loss of the reference answers, base (adapter disabled) and fine-tuned, like the trainer's validation."""
    loaded = M.load_model(model_id, cache_dir, adapter)
    folder = Path(tempfile.mkdtemp(prefix="check-heldout-"))
    path = folder / "heldout_chat.jsonl"
    path.write_text("".join(json.dumps(to_chat(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    examples, _ = T.encode_file(path, loaded.tokenizer, loaded.spec.max_seq_len, loaded.stop_ids)
    precision = T.choose_precision("auto", loaded.device)
    pad_id = loaded.tokenizer.pad_token_id
    never = lambda: False  # noqa: E731
    tuned = T.evaluate(loaded.model, examples, pad_id, loaded.device, precision, never)
    with loaded.model.disable_adapter():
        base = T.evaluate(loaded.model, examples, pad_id, loaded.device, precision, never)
    loaded.model.eval()
    return {"base": base[0], "fine-tuned": tuned[0], "base_accuracy": base[1], "fine-tuned_accuracy": tuned[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_LOCAL_MODEL, help="default: the course's model")
    parser.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI's frequency_penalty for both arms")
    parser.add_argument("--adapter", type=Path, help="a trained adapter to evaluate instead of training one")
    parser.add_argument("--n", type=int, default=50, help="held-out questions")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--generate", type=int, default=None, help="answer the first N held-out questions "
                        "(default: all --n; 0: only the held-out loss)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="check-finetune-"))
    split = make_split(work / "data", n_heldout=args.n)
    print(f"model {args.model}; data {data_path().name}; {args.n} held-out questions", flush=True)
    adapter = args.adapter
    if adapter is None:
        started = time.perf_counter()
        events: list[dict] = []
        result = T.train(T.TrainSpec(args.model, split.train_path, split.valid_path, work / "job", n_epochs=3,
                                     cache_dir=args.cache_dir), events.append, lambda: False)
        adapter = result.adapter_dir
        print(f"trained {adapter} in {time.perf_counter() - started:.0f} s (lr {result.hyperparameters['learning_rate']:g}); "
              f"full validation loss {result.initial_valid_loss:.3f} -> {result.final_valid_loss:.3f}", flush=True)

    started = time.perf_counter()
    losses = heldout_losses(args.model, adapter, split.heldout, args.cache_dir)
    print(f"held-out loss of the reference answers: base {losses['base']:.4f} (token accuracy "
          f"{losses['base_accuracy']:.3f}), fine-tuned {losses['fine-tuned']:.4f} ({losses['fine-tuned_accuracy']:.3f}) "
          f"[{time.perf_counter() - started:.0f} s]", flush=True)

    n_generate = args.n if args.generate is None else min(args.generate, args.n)
    if n_generate:
        pool = M.ModelPool(args.cache_dir)
        generator = G.Generator(pool)
        asked = split.heldout[:n_generate]
        conversations = [question_messages(split, row["questions"]) for row in asked]
        references = [row["answers"] for row in asked]
        scores, answers = {}, {}
        for name, view in (("base", pool.get(args.model)), ("fine-tuned", pool.get(args.model, adapter))):
            started = time.perf_counter()
            choices = generator.complete_many(view, conversations, max_tokens=args.max_tokens, temperature=0,
                                              frequency_penalty=args.frequency_penalty)
            seconds = time.perf_counter() - started
            answers[name] = [c[0].text for c in choices]
            scores[name] = [rouge_l(a, r) for a, r in zip(answers[name], references)]
            tokens = sum(c[0].usage.completion_tokens for c in choices)
            cut = sum(c[0].finish_reason == "length" for c in choices)
            low, high = bootstrap_ci(scores[name])
            print(f"{name:>10}: ROUGE-L {100 * statistics.mean(scores[name]):.2f} (95% CI {100 * low:.2f}-{100 * high:.2f}) "
                  f"over {len(references)} questions; {tokens} tokens in {seconds:.0f} s ({tokens / seconds:.1f} tokens/s); "
                  f"cut at max_tokens {cut}/{len(references)}; CJK share {readability(answers[name]).cjk_share:.2f}; "
                  f"stuck in a loop {sum(map(is_stuck, answers[name]))}/{len(references)}", flush=True)
        generator.close()
        diff = [t - b for t, b in zip(scores["fine-tuned"], scores["base"])]
        low, high = bootstrap_ci(diff)
        wins = sum(d > 0 for d in diff)
        print(f"ROUGE-L fine-tuned - base: {100 * statistics.mean(diff):+.2f} (95% CI {100 * low:+.2f} to {100 * high:+.2f}); "
              f"fine-tuned higher on {wins}/{len(diff)} questions", flush=True)
        for i in range(min(3, len(references))):
            print(f"\nQ: {asked[i]['questions']}\nreference : {references[i][:200]}")
            for name in answers:
                print(f"{name:<10}: {answers[name][i][:200]}")

    if losses["fine-tuned"] >= losses["base"]:
        print("\nFAIL: fine-tuning did not lower the held-out loss of the reference answers")
        return 1
    print(f"\nOK: fine-tuning lowered the held-out loss of the reference answers "
          f"({losses['base']:.4f} -> {losses['fine-tuned']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
