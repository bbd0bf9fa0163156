"""Compare the base model and the fine-tuned model on held-out questions, measured and cached.

Three arms answer the same questions:

1. the base model with the short system prompt used for training,
2. the base model with a long few-shot prompt (the "why not just prompt better?" alternative),
3. the fine-tuned model with the short system prompt.

Requests run concurrently in a bounded thread pool; the SDK retries 429/5xx answers (honouring
`retry-after`); every answer is cached on disk under a hash of the request, so re-running the
comparison sends nothing that was already answered.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from openai import OpenAI

from helpers.config import Config
from helpers.data import DataError, read_jsonl
from helpers.files import write_json_atomic, write_text_atomic
from helpers.metrics import score_answers

CACHE_DIR_NAME = "eval_cache"

# Huatuo-26M paper (Li et al., 2023, arXiv:2305.01526), Table 7, test set of Huatuo-26M: the two rows we cite.
PAPER_TABLE7 = pd.DataFrame(
    [
        {"arm": "论文 Table 7: ChatGPT (API, 未微调)", "BLEU-1": 18.44, "ROUGE-L": 12.46},
        {"arm": "论文 Table 7: T5 (微调)", "BLEU-1": 26.63, "ROUGE-L": 24.85},
    ]
).set_index("arm")

# The walkthrough's example question (its spelling kept as published).
WALKTHROUGH_QUESTION = "我在体检是正常的，但是去献血医生最是说我的血压高，不能献。血压是130、80这是为什么呢？"


# Inference prices of the *base* models (USD per 1M input, output tokens): pricing.PRICES holds the fine-tuning
# rows (training and fine-tuned inference); these are what the same model costs without fine-tuning.
BASE_INFERENCE_PRICES: dict[str, tuple[float, float, str]] = {
    "gpt-3.5-turbo-0613": (1.50, 2.00, "2023-08-22, OpenAI pricing page (4K context), the walkthrough's date"),
    "gpt-3.5-turbo-0125": (0.50, 1.50, "2025-06, openai.com/api/pricing"),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60, "2025-06, openai.com/api/pricing"),
    "gpt-4o-2024-08-06": (2.50, 10.00, "2025-06, openai.com/api/pricing"),
    "gpt-4.1-nano-2025-04-14": (0.10, 0.40, "2025-06, openai.com/api/pricing"),
    "gpt-4.1-mini-2025-04-14": (0.40, 1.60, "2025-06, openai.com/api/pricing"),
    "gpt-4.1-2025-04-14": (2.00, 8.00, "2025-06, openai.com/api/pricing"),
}
# The local model costs nothing; its token counts are priced as if they were the walkthrough's model's.
REFERENCE_PRICE_MODEL = "gpt-3.5-turbo-0613"


class EvaluationError(RuntimeError):
    """Some requests of the comparison failed even after the SDK's retries, or its inputs are missing."""


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a missing file or a bad line raises EvaluationError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path} does not exist: run notebooks 02 and 03 first")
    try:
        return read_jsonl(path)
    except DataError as exc:
        raise EvaluationError(str(exc)) from None


def training_system_prompt(train_path: Path) -> str:
    """The system prompt the model was fine-tuned with: the first example's system message."""
    rows = load_rows(train_path)
    for n, row in enumerate(rows, start=1):
        for message in row.get("messages", []):
            if message.get("role") == "system":
                return message["content"]
        raise EvaluationError(f"{train_path}:{n}: the first example has no system message")
    raise EvaluationError(f"{train_path} has no examples")


@dataclass(frozen=True)
class Arm:
    """One way of asking: a model, a system prompt and optional few-shot (question, answer) pairs."""

    name: str
    model: str
    system_prompt: str
    examples: tuple[tuple[str, str], ...] = ()

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages this arm sends for one question."""
        msgs = [{"role": "system", "content": self.system_prompt}]
        for q, a in self.examples:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": question}]


def few_shot_examples(rows: Sequence[dict[str, str]], k: int = 3, max_answer_chars: int = 300) -> tuple[tuple[str, str], ...]:
    """The first k training rows (Huatuo schema) as few-shot pairs, long answers cut at max_answer_chars."""
    if len(rows) < k:
        raise EvaluationError(f"need {k} training rows for the few-shot prompt, got {len(rows)}")
    return tuple((r["questions"], r["answers"][:max_answer_chars]) for r in rows[:k])


def arm_prices(cfg: Config, arms: Sequence[Arm]) -> tuple[dict[str, tuple[float, float]], str]:
    """USD per 1M (input, output) tokens for each arm, and the model whose prices they are.

    Remote: the configured base model's prices (base arms) and its fine-tuned price row (fine-tuned arm).
    Local: the walkthrough's gpt-3.5-turbo-0613 prices, so its "6-8x" claim can be checked on our token counts.
    """
    from helpers.pricing import price_for

    model = REFERENCE_PRICE_MODEL if cfg.is_local else cfg.base_model
    base = next((v for k, v in BASE_INFERENCE_PRICES.items() if k == model or k.startswith(model + "-")), None)
    if base is None:
        raise EvaluationError(f"no base inference price for {model!r}: add a dated row to evaluation.BASE_INFERENCE_PRICES")
    tuned = price_for(model)
    return {arm.name: ((tuned.input, tuned.output) if arm.model.startswith("ft:") else base[:2]) for arm in arms}, model


def make_arms(base_model: str, fine_tuned_model: str, system_prompt: str, examples: tuple[tuple[str, str], ...]) -> list[Arm]:
    """The three arms of the comparison, in display order."""
    return [
        Arm("base + system prompt", base_model, system_prompt),
        Arm("base + few-shot prompt", base_model, system_prompt, examples),
        Arm("fine-tuned + system prompt", fine_tuned_model, system_prompt),
    ]


@dataclass
class Answer:
    """One arm's answer to one question, with the usage the API reported."""

    arm: str
    index: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    cached: bool


class ResponseCache:
    """Chat answers on disk, one JSON file per request hash."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """A stable hash of everything that determines the answer."""
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer, or None."""
        path = self.folder / f"{key}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store an answer atomically."""
        write_json_atomic(self.folder / f"{key}.json", value, indent=None)


def ask(client: OpenAI, cache: ResponseCache | None, base_url: str, model: str, messages: list[dict[str, str]],
        max_tokens: int, temperature: float = 0.0, seed: int = 42) -> tuple[dict[str, Any], bool]:
    """One chat completion, from the cache when the same request was answered before; returns (record, cached)."""
    request = {"base_url": base_url, "model": model, "messages": messages, "max_tokens": max_tokens,
               "temperature": temperature, "seed": seed}
    key = ResponseCache.key(request)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    resp = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                          temperature=temperature, seed=seed)
    choice = resp.choices[0]
    record = {"text": choice.message.content or "", "finish_reason": choice.finish_reason or "",
              "prompt_tokens": resp.usage.prompt_tokens if resp.usage else 0,
              "completion_tokens": resp.usage.completion_tokens if resp.usage else 0}
    if cache is not None:
        cache.put(key, record)
    return record, False


def run_arms(client: OpenAI, arms: Sequence[Arm], questions: Sequence[str], *, base_url: str, cache: ResponseCache | None,
             max_tokens: int = 128, workers: int = 8, seed: int = 42,
             on_done: Callable[[int, int], None] | None = None) -> list[Answer]:
    """Every arm on every question through a pool of `workers` threads; raise EvaluationError listing failures."""
    tasks = [(arm, i, q) for arm in arms for i, q in enumerate(questions)]
    done = 0
    lock = threading.Lock()

    def work(task: tuple[Arm, int, str]) -> Answer | Exception:
        nonlocal done
        arm, i, q = task
        try:
            record, cached = ask(client, cache, base_url, arm.model, arm.messages(q), max_tokens, seed=seed)
            result: Answer | Exception = Answer(arm.name, i, record["text"], record["prompt_tokens"],
                                                record["completion_tokens"], record["finish_reason"], cached)
        except Exception as exc:  # collected and reported together below
            result = exc
        with lock:
            done += 1
            if on_done:
                on_done(done, len(tasks))
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, tasks))
    failures = [(t, r) for t, r in zip(tasks, results) if isinstance(r, Exception)]
    if failures:
        (arm, i, _), first = failures[0]
        raise EvaluationError(f"{len(failures)} of {len(tasks)} requests failed (first: arm '{arm.name}', question {i}: "
                              f"{type(first).__name__}: {first}). Answers that arrived are cached; re-run to retry the rest.")
    return [r for r in results if isinstance(r, Answer)]


def side_by_side(answers: Sequence[Answer], questions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """One row per question: the question, the doctor's answer and each arm's answer."""
    frame = pd.DataFrame({"question": list(questions), "reference": list(references)})
    for arm in dict.fromkeys(a.arm for a in answers):
        texts = {a.index: a.text for a in answers if a.arm == arm}
        frame[arm] = [texts.get(i, "") for i in range(len(questions))]
    return frame


def arm_metrics(answers: Sequence[Answer], references: Sequence[str],
                prices: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Per arm: the Huatuo-26M metrics, mean prompt/completion tokens and (given per-1M prices) cost per 1,000 requests."""
    rows = []
    for arm in dict.fromkeys(a.arm for a in answers):
        mine = sorted((a for a in answers if a.arm == arm), key=lambda a: a.index)
        refs = [references[a.index] for a in mine]
        row: dict[str, Any] = {"arm": arm, **score_answers([a.text for a in mine], refs).as_dict()}
        row["prompt tokens"] = sum(a.prompt_tokens for a in mine) / len(mine)
        row["completion tokens"] = sum(a.completion_tokens for a in mine) / len(mine)
        row["cut at max_tokens"] = sum(a.finish_reason == "length" for a in mine)
        if prices and arm in prices:
            inp, out = prices[arm]
            row["USD / 1k requests"] = 1000 * (row["prompt tokens"] * inp + row["completion tokens"] * out) / 1_000_000
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")


def claims_check(metrics: pd.DataFrame, few_shot_arm: str = "base + few-shot prompt",
                 tuned_arm: str = "fine-tuned + system prompt", base_arm: str = "base + system prompt") -> pd.DataFrame:
    """The walkthrough's two claims, measured: prompt size saved, and the per-request price ratio."""
    rows = [{"claim": "prompt tokens: fine-tuned + short prompt vs few-shot prompt",
             "measured": f"{100 * (1 - metrics.loc[tuned_arm, 'prompt tokens'] / metrics.loc[few_shot_arm, 'prompt tokens']):.0f}% smaller",
             "walkthrough says": "up to 90% smaller"}]
    if "USD / 1k requests" in metrics.columns:
        cost = metrics["USD / 1k requests"]
        rows.append({"claim": "cost per request: fine-tuned vs base, same short prompt",
                     "measured": f"{cost[tuned_arm] / cost[base_arm]:.1f}×", "walkthrough says": "6–8× the price"})
        rows.append({"claim": "cost per request: fine-tuned + short prompt vs base + few-shot prompt",
                     "measured": f"{cost[tuned_arm] / cost[few_shot_arm]:.1f}×", "walkthrough says": "(not discussed)"})
    return pd.DataFrame(rows).set_index("claim")


def save_comparison(work_dir: Path, metrics: pd.DataFrame, table: pd.DataFrame) -> list[Path]:
    """Write the metrics and the side-by-side answers as UTF-8 CSV into the work folder (the course report reads them)."""
    paths = []
    for frame, name, keep_index in [(metrics, "compare_metrics.csv", True), (table, "compare_answers.csv", False)]:
        paths.append(write_text_atomic(Path(work_dir) / name, frame.to_csv(index=keep_index)))
    return paths


def with_paper_rows(metrics: pd.DataFrame, columns: Sequence[str] = ("BLEU-1", "ROUGE-L")) -> pd.DataFrame:
    """Our arms' BLEU-1 and ROUGE-L next to the two cited rows of the paper's Table 7."""
    return pd.concat([metrics[list(columns)].round(2), PAPER_TABLE7[list(columns)]])
