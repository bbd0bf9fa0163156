"""Compare the base model and the fine-tuned model on held-out questions, measured and cached (taught in notebook 07).

Three arms answer the same questions:

1. the base model with the short system prompt used for training,
2. the base model with a long few-shot prompt (the "why not just prompt better?" alternative),
3. the fine-tuned model with the short system prompt.

Requests run concurrently in a bounded thread pool; the SDK retries 429/5xx answers (honouring
`retry-after`); every answer is cached on disk under a hash of the request, so re-running the
comparison sends nothing that was already answered. Notebook 07 makes one `client.chat.completions.create`
call per arm itself, in a cell, before `run_arms` sends the held-out set.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from openai import APIStatusError, OpenAI

from helpers.config import Config
from helpers.data import DataError, read_jsonl
from helpers import metrics as m
from helpers.files import write_json_atomic, write_text_atomic

CACHE_DIR_NAME = "eval_cache"
# Statuses of a provider without `/v1/responses/input_tokens` (or one that will not count for this model): count the
# tokens with one-token chat completions instead (`text_token_counts`).
NO_COUNT_ENDPOINT = (400, 404, 405, 422, 501)

# Huatuo-26M paper (Li et al., 2023, arXiv:2305.01526), Table 7, test set of Huatuo-26M: the two rows we cite.
PAPER_TABLE7 = pd.DataFrame(
    [
        {"组": "论文 Table 7: ChatGPT (API, 未微调)", "BLEU-1": 18.44, "ROUGE-L": 12.46},
        {"组": "论文 Table 7: T5 (微调)", "BLEU-1": 26.63, "ROUGE-L": 24.85},
    ]
).set_index("组")

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


# The arms' display names (Chinese labels in notebook 07's tables and in compare_metrics.csv).
BASE_ARM = "基础模型 + 系统提示"
FEW_SHOT_ARM = "基础模型 + 少样本提示"
TUNED_ARM = "微调模型 + 系统提示"
BEST_CHECKPOINT_ARM = "最佳检查点 + 系统提示"
REFERENCE_LABEL = "参考回答（医生）"
QUESTION_COLUMN = "问题"
ARM_INDEX = "组"


class EvaluationError(RuntimeError):
    """Some requests of the comparison failed even after the SDK's retries, or its inputs are missing."""


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (notebook 07 reads the held-out and training rows); a bad line raises EvaluationError naming it."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path} does not exist: run notebooks 02 and 03 first")
    try:
        return read_jsonl(path)
    except DataError as exc:
        raise EvaluationError(str(exc)) from None


def training_system_prompt(train_path: Path) -> str:
    """The system prompt the model was fine-tuned with: the first example's system message (notebook 07)."""
    rows = load_rows(train_path)
    for n, row in enumerate(rows, start=1):
        for message in row.get("messages", []):
            if message.get("role") == "system":
                return message["content"]
        raise EvaluationError(f"{train_path}:{n}: the first example has no system message")
    raise EvaluationError(f"{train_path} has no examples")


@dataclass(frozen=True)
class Arm:
    """One way of asking in notebook 07: a model, a system prompt and optional few-shot (question, answer) pairs."""

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
    """The first k training rows (Huatuo schema) as notebook 07's few-shot pairs, answers cut at max_answer_chars."""
    if len(rows) < k:
        raise EvaluationError(f"need {k} training rows for the few-shot prompt, got {len(rows)}")
    return tuple((r["questions"], r["answers"][:max_answer_chars]) for r in rows[:k])


def arm_prices(cfg: Config, arms: Sequence[Arm]) -> tuple[dict[str, tuple[float, float]], str]:
    """USD per 1M (input, output) tokens for each arm from the price table, and the model whose prices they are (notebook 07).

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


def make_arms(base_model: str, fine_tuned_model: str, system_prompt: str, examples: tuple[tuple[str, str], ...],
              best_checkpoint: str | None = None) -> list[Arm]:
    """The arms of notebook 07's comparison, in display order; the best checkpoint is a fourth arm when it is not
    the final model."""
    arms = [
        Arm(BASE_ARM, base_model, system_prompt),
        Arm(FEW_SHOT_ARM, base_model, system_prompt, examples),
        Arm(TUNED_ARM, fine_tuned_model, system_prompt),
    ]
    return arms + ([Arm(BEST_CHECKPOINT_ARM, best_checkpoint, system_prompt)] if best_checkpoint else [])


def decoding_table(by_penalty: dict[float, Sequence[Answer]]) -> pd.DataFrame:
    """Notebook 07's decoding step: for each frequency_penalty, how many answers loop, are cut, and one looping phrase."""
    rows = []
    for penalty, answers in by_penalty.items():
        loops = [m.repeated_phrase(a.text) for a in answers]
        example = next((phrase for phrase in loops if phrase), "")
        rows.append({"frequency_penalty": penalty, "回答数": len(answers), "陷入重复": sum(bool(x) for x in loops),
                     "被截断（finish_reason=length）": sum(a.finish_reason == "length" for a in answers),
                     "回答词元（平均）": round(sum(a.completion_tokens for a in answers) / len(answers), 1),
                     "重复的短语（举例）": example[:40]})
    return pd.DataFrame(rows).set_index("frequency_penalty")


def stage_arms(base_model: str, checkpoints: pd.DataFrame, system_prompt: str) -> list[Arm]:
    """Notebook 06: the base model and each checkpoint (oldest first) as arms with the same system prompt."""
    arms = [Arm("基础模型（训练前）", base_model, system_prompt)]
    for epoch, (step, model) in enumerate(zip(checkpoints["step"], checkpoints["model"]), 1):
        arms.append(Arm(f"第 {epoch} 轮末（第 {int(step)} 步）", model, system_prompt))
    return arms


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
    """Chat answers on disk, one JSON file per request hash (notebook 07 re-runs without sending anything twice)."""

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
        max_tokens: int, temperature: float = 0.0, seed: int = 42,
        frequency_penalty: float = 0.0) -> tuple[dict[str, Any], bool]:
    """One chat completion (the call notebook 07 shows in a cell), from the cache when asked before; returns (record, cached).

    A nonzero `frequency_penalty` (07's exercise against answers stuck in a loop) is sent and is part of the cache key.
    """
    extra = {"frequency_penalty": frequency_penalty} if frequency_penalty else {}
    request = {"base_url": base_url, "model": model, "messages": messages, "max_tokens": max_tokens,
               "temperature": temperature, "seed": seed, **extra}
    key = ResponseCache.key(request)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    resp = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                          temperature=temperature, seed=seed, **extra)
    choice = resp.choices[0]
    record = {"text": choice.message.content or "", "finish_reason": choice.finish_reason or "",
              "prompt_tokens": resp.usage.prompt_tokens if resp.usage else 0,
              "completion_tokens": resp.usage.completion_tokens if resp.usage else 0}
    if cache is not None:
        cache.put(key, record)
    return record, False


def text_token_counts(client: OpenAI, model: str, texts: Sequence[str], *, base_url: str, cache: ResponseCache | None,
                      workers: int = 16, seed: int = 42) -> list[int]:
    """Each text's length in the model's own tokens, counted by the API (notebook 07 sizes max_tokens).

    The client cannot load the server's tokenizer, but the API counts with it: `client.responses.input_tokens.count`
    reports the tokens of an input as the model reads it, without generating anything. A text as the user message,
    minus an empty user message, is the text's token count (the chat template's tokens cancel out). A provider
    without that endpoint (an OpenAI-compatible server answering one of `NO_COUNT_ENDPOINT`: 404, 400, ...) is asked the way every provider
    answers: a one-token chat completion per text, whose `usage.prompt_tokens` counts the same prompt (each such
    request generates a token, so it is cached like the answers).
    """
    def counted(text: str) -> int:
        return client.responses.input_tokens.count(model=model, input=[{"role": "user", "content": text}]).input_tokens

    def prompt_tokens(text: str) -> int:
        record, _ = ask(client, cache, base_url, model, [{"role": "user", "content": text}], max_tokens=1, seed=seed)
        return int(record["prompt_tokens"])

    count = counted
    try:
        empty = counted("")
    except APIStatusError as exc:
        if exc.status_code not in NO_COUNT_ENDPOINT:
            raise
        count, empty = prompt_tokens, prompt_tokens("")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        counts = list(pool.map(count, texts))
    return [max(c - empty, 0) for c in counts]


def token_budget(counts: Sequence[int], quantile: float = 0.9, cap: int = 512) -> int:
    """max_tokens for notebook 07: the given quantile of the reference answers' token counts, at most `cap`."""
    if not counts:
        raise EvaluationError("no reference answers to size max_tokens from")
    ranked = sorted(counts)
    return max(1, min(cap, ranked[min(len(ranked) - 1, math.ceil(quantile * len(ranked)) - 1)]))


def run_arms(client: OpenAI, arms: Sequence[Arm], questions: Sequence[str], *, base_url: str, cache: ResponseCache | None,
             max_tokens: int = 128, workers: int = 16, seed: int = 42, frequency_penalty: float = 0.0,
             on_done: Callable[[int, int], None] | None = None) -> list[Answer]:
    """Every arm on every question through a pool of `workers` threads (notebook 07); raise EvaluationError listing failures."""
    tasks = [(arm, i, q) for arm in arms for i, q in enumerate(questions)]
    done = 0
    lock = threading.Lock()

    def work(task: tuple[Arm, int, str]) -> Answer | Exception:
        nonlocal done
        arm, i, q = task
        try:
            record, cached = ask(client, cache, base_url, arm.model, arm.messages(q), max_tokens, seed=seed,
                                 frequency_penalty=frequency_penalty)
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
    """One row per question (notebook 07's table and flipper): the question, the doctor's answer and each arm's answer."""
    frame = pd.DataFrame({QUESTION_COLUMN: list(questions), REFERENCE_LABEL: list(references)})
    for arm in dict.fromkeys(a.arm for a in answers):
        texts = {a.index: a.text for a in answers if a.arm == arm}
        frame[arm] = [texts.get(i, "") for i in range(len(questions))]
    return frame


def arm_answers(answers: Sequence[Answer], arm: str) -> list[Answer]:
    """One arm's answers in question order."""
    return sorted((a for a in answers if a.arm == arm), key=lambda a: a.index)


def arm_names(answers: Sequence[Answer]) -> list[str]:
    """The arms present, in the order they were asked."""
    return list(dict.fromkeys(a.arm for a in answers))


def arm_metrics(answers: Sequence[Answer], references: Sequence[str],
                prices: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Per arm (notebook 07): the Huatuo-26M metrics, mean prompt/answer tokens, the share cut at max_tokens and
    (given per-1M prices from the price table) the cost per 1,000 requests computed from those prices."""
    rows = []
    for arm in arm_names(answers):
        mine = arm_answers(answers, arm)
        refs = [references[a.index] for a in mine]
        row: dict[str, Any] = {ARM_INDEX: arm, **m.score_answers([a.text for a in mine], refs).as_dict()}
        row["提示词元（平均）"] = sum(a.prompt_tokens for a in mine) / len(mine)
        row["回答词元（平均）"] = sum(a.completion_tokens for a in mine) / len(mine)
        row["被截断占比"] = sum(a.finish_reason == "length" for a in mine) / len(mine)
        if prices and arm in prices:
            inp, out = prices[arm]
            row[PRICED_COLUMN] = 1000 * (row["提示词元（平均）"] * inp + row["回答词元（平均）"] * out) / 1_000_000
        rows.append(row)
    return pd.DataFrame(rows).set_index(ARM_INDEX)


PRICED_COLUMN = "每千次请求美元（按价目表计算）"
INTERVAL_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "GLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Distinct-1", "Distinct-2")
# Distinct-n pools all answers of an arm: a resample with replacement repeats answers and so lowers it, which makes a
# bootstrap interval lie below the value itself. It is shown without an interval.
POOLED_METRICS = ("Distinct-1", "Distinct-2")


def metric_intervals(answers: Sequence[Answer], references: Sequence[str], *, resamples: int = m.BOOTSTRAP_RESAMPLES,
                     seed: int = m.BOOTSTRAP_SEED) -> pd.DataFrame:
    """Notebook 07's metric table: one row per (arm, metric) with the value and its 95% bootstrap interval over questions."""
    rows = []
    for arm in arm_names(answers):
        mine = arm_answers(answers, arm)
        stats = [m.answer_stats(a.text, references[a.index]) for a in mine]
        point = m.scores_from_stats(stats).as_dict()
        intervals = m.score_intervals(stats, resamples=resamples, seed=seed)
        for name in INTERVAL_METRICS:
            low, high = (math.nan, math.nan) if name in POOLED_METRICS else intervals[name]
            rows.append({ARM_INDEX: arm, "指标": name, "值": point[name], "95% 区间下限": low, "95% 区间上限": high})
    return pd.DataFrame(rows)


def interval_text(value: float, low: float, high: float, digits: int = 2) -> str:
    """'14.39 [12.10, 16.80]': a value with its interval, as notebook 07 prints it ('9.19（不给区间）' without one)."""
    if math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f}（不给区间）"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def metric_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """metric_intervals as a reader's table (notebook 07): metrics as rows, arms as columns, 'value [low, high]' cells."""
    cells = intervals.assign(text=[interval_text(v, lo, hi) for v, lo, hi in
                                   zip(intervals["值"], intervals["95% 区间下限"], intervals["95% 区间上限"])])
    table = cells.pivot(index="指标", columns=ARM_INDEX, values="text")
    return table.loc[list(dict.fromkeys(intervals["指标"])), list(dict.fromkeys(intervals[ARM_INDEX]))]


def paired_rouge_l(answers: Sequence[Answer], references: Sequence[str], tuned_arm: str = TUNED_ARM,
                   base_arms: Sequence[str] = (BASE_ARM, FEW_SHOT_ARM), *, resamples: int = m.BOOTSTRAP_RESAMPLES,
                   seed: int = m.BOOTSTRAP_SEED, label: str = "微调组") -> pd.DataFrame:
    """Notebook 07's paired comparison: the fine-tuned arm against each base arm, question by question, on ROUGE-L.

    A question is a win when the fine-tuned answer's ROUGE-L is higher, a tie when equal (counted as half a win).
    `label` names the first arm in the verdict (notebook 09 compares its DPO arm with the supervised one).
    """
    def per_question(arm: str) -> list[float]:
        return [100 * m.rouge_l(a.text, references[a.index]) for a in arm_answers(answers, arm)]

    tuned = per_question(tuned_arm)
    rows = []
    for base in base_arms:
        result = m.paired_comparison(tuned, per_question(base), resamples=resamples, seed=seed)
        rows.append({"对比": f"{tuned_arm} vs {base}", "题数": result.n, "胜": result.wins, "平": result.ties,
                     "负": result.losses, "胜率（平局算半）": result.win_rate,
                     "胜率 95% 区间": f"[{result.win_rate_ci[0]:.2f}, {result.win_rate_ci[1]:.2f}]",
                     "ROUGE-L 平均差": result.mean_difference,
                     "平均差 95% 区间": f"[{result.mean_difference_ci[0]:.2f}, {result.mean_difference_ci[1]:.2f}]",
                     "结论": verdict(result.win_rate_ci, label)})
    return pd.DataFrame(rows).set_index("对比")


def verdict(win_rate_ci: tuple[float, float], label: str = "微调组") -> str:
    """Notebook 07's reading of a win-rate interval: does it exclude 0.5 (no better, no worse)?"""
    low, high = win_rate_ci
    if low > 0.5:
        return f"区间不含 0.5：{label}更好，差别大于随机波动"
    if high < 0.5:
        return f"区间不含 0.5：{label}更差，差别大于随机波动"
    return "区间含 0.5：这些题分不出高下"


def _texts_by_group(answers: Sequence[Answer], references: Sequence[str]) -> dict[str, list[str]]:
    """The references (first) and each arm's answer texts, the rows of 07's style and readability tables."""
    groups = {REFERENCE_LABEL: list(references)}
    groups.update({arm: [a.text for a in arm_answers(answers, arm)] for arm in arm_names(answers)})
    return groups


def style_table(answers: Sequence[Answer], references: Sequence[str], *, resamples: int = m.BOOTSTRAP_RESAMPLES,
                seed: int = m.BOOTSTRAP_SEED) -> pd.DataFrame:
    """Notebook 07's style measures per arm and for the references themselves (first row), shares in percent."""
    rows = []
    for name, texts in _texts_by_group(answers, references).items():
        style = m.style_measures(texts, resamples=resamples, seed=seed)
        row: dict[str, Any] = {ARM_INDEX: name}
        for label, share, (low, high) in [("用 Markdown", style.markdown, style.markdown_ci),
                                           ("开头问候（你好/您好）", style.greeting, style.greeting_ci),
                                           ("结尾建议或祝福", style.closing, style.closing_ci),
                                           ("陷入重复", style.stuck, style.stuck_ci)]:
            row[f"{label} %"] = interval_text(100 * share, 100 * low, 100 * high, digits=0)
        row.update({"字数 P10": style.length_p10, "字数中位数": style.length_median, "字数 P90": style.length_p90})
        rows.append(row)
    return pd.DataFrame(rows).set_index(ARM_INDEX)


def readability_table(answers: Sequence[Answer], references: Sequence[str]) -> pd.DataFrame:
    """Notebook 07: per arm (and the references), how many answers are empty, one repeated character or contain
    U+FFFD, and the share of CJK ideographs among their non-space characters (all answers together, and the lowest)."""
    rows = []
    for name, texts in _texts_by_group(answers, references).items():
        r = m.readability(texts)
        rows.append({ARM_INDEX: name, "回答数": r.n, "空回答": r.empty, "只有一个字符": r.one_character,
                     "含 U+FFFD": r.replacement_character, "汉字占比 %": round(100 * r.cjk_share),
                     "单个回答最低汉字占比 %": round(100 * r.cjk_share_lowest)})
    return pd.DataFrame(rows).set_index(ARM_INDEX)


def claims_check(metrics: pd.DataFrame, few_shot_arm: str = FEW_SHOT_ARM,
                 tuned_arm: str = TUNED_ARM, base_arm: str = BASE_ARM) -> pd.DataFrame:
    """The walkthrough's two claims (notebook 07): prompt size saved (measured tokens) and the price ratio (price table)."""
    prompt = metrics["提示词元（平均）"]
    rows = [{"说法": "提示词元：微调模型 + 短提示 vs 少样本提示",
             "我们的数字": f"少 {100 * (1 - prompt[tuned_arm] / prompt[few_shot_arm]):.0f}%",
             "依据": "实测（API 报告的 prompt_tokens）", "原文": "最多少 90%"}]
    if PRICED_COLUMN in metrics.columns:
        cost = metrics[PRICED_COLUMN]
        rows.append({"说法": "每次请求费用：微调模型 vs 基础模型，同样的短提示",
                     "我们的数字": f"{cost[tuned_arm] / cost[base_arm]:.1f}×",
                     "依据": "按价目表计算（实测词元数 × 价目表单价）", "原文": "6–8 倍"})
        rows.append({"说法": "每次请求费用：微调模型 + 短提示 vs 基础模型 + 少样本提示",
                     "我们的数字": f"{cost[tuned_arm] / cost[few_shot_arm]:.1f}×",
                     "依据": "按价目表计算（实测词元数 × 价目表单价）", "原文": "（未讨论）"})
    return pd.DataFrame(rows).set_index("说法")


def cost_table(priced: pd.DataFrame, prices: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Notebook 07: per arm, the measured mean tokens, the unit prices and the dollars per 1,000 requests they give."""
    rows = []
    for arm, (inp, out) in prices.items():
        row = priced.loc[arm]
        rows.append({ARM_INDEX: arm, "提示词元（平均，实测）": round(row["提示词元（平均）"], 1),
                     "回答词元（平均，实测）": round(row["回答词元（平均）"], 1),
                     "输入单价（美元/1M 词元）": inp, "输出单价（美元/1M 词元）": out,
                     "每千次请求（美元，按价目表计算）": round(row[PRICED_COLUMN], 3)})
    return pd.DataFrame(rows).set_index(ARM_INDEX)


@dataclass(frozen=True)
class BreakEven:
    """Where fine-tuning starts to pay against a few-shot prompt (notebook 07), from measured tokens and a price table."""

    tuned_usd: float  # one fine-tuned request, as measured
    few_shot_usd: float  # one few-shot request, as measured
    few_shot_prompt_tokens: float  # the measured mean prompt of the few-shot arm
    break_even_prompt_tokens: float  # the few-shot prompt length at which both cost the same per request
    training_usd: float  # the one-off training cost (trained tokens x training price)
    requests_to_recover_training: float | None  # requests until the training cost is paid back; None: it never is

    def lines(self) -> list[str]:
        """The findings as sentences in Chinese."""
        out = [f"每次请求：微调模型 ${self.tuned_usd * 1000:.3f} / 千次，少样本提示 ${self.few_shot_usd * 1000:.3f} / 千次"
               f"（少样本提示平均 {self.few_shot_prompt_tokens:.0f} 个提示词元）。",
               f"盈亏平衡点：少样本提示长到约 {self.break_even_prompt_tokens:,.0f} 个词元时，两者每次请求一样贵；"
               "再长，微调模型每次请求更便宜。"]
        if self.requests_to_recover_training is None:
            out.append(f"按这次的长度，微调模型每次请求更贵，训练的 ${self.training_usd:.2f} 永远收不回来。")
        else:
            out.append(f"按这次的长度，每次请求省下的钱在约 {self.requests_to_recover_training:,.0f} 次请求后"
                       f"抵消训练的 ${self.training_usd:.2f}。")
        return out


def break_even(priced: pd.DataFrame, prices: dict[str, tuple[float, float]], *, trained_tokens: int,
               training_price: float, tuned_arm: str = TUNED_ARM, few_shot_arm: str = FEW_SHOT_ARM) -> BreakEven:
    """The few-shot prompt length at which fine-tuning becomes cheaper per request, and when training pays back."""
    tuned = priced.loc[tuned_arm, PRICED_COLUMN] / 1000
    few = priced.loc[few_shot_arm, PRICED_COLUMN] / 1000
    inp, out = prices[few_shot_arm]
    answer_usd = priced.loc[few_shot_arm, "回答词元（平均）"] * out / 1_000_000
    break_even_tokens = (tuned - answer_usd) / (inp / 1_000_000) if inp > 0 else math.inf
    training_usd = trained_tokens * training_price / 1_000_000
    saving = few - tuned
    return BreakEven(float(tuned), float(few), float(priced.loc[few_shot_arm, "提示词元（平均）"]), float(break_even_tokens),
                     training_usd, float(training_usd / saving) if saving > 0 else None)


def save_comparison(work_dir: Path, metrics: pd.DataFrame, table: pd.DataFrame) -> list[Path]:
    """Write notebook 07's metrics and side-by-side answers as UTF-8 CSV into the work folder (the course report reads them)."""
    paths = []
    for frame, name, keep_index in [(metrics, "compare_metrics.csv", True), (table, "compare_answers.csv", False)]:
        paths.append(write_text_atomic(Path(work_dir) / name, frame.to_csv(index=keep_index)))
    return paths


def with_paper_rows(metrics: pd.DataFrame, columns: Sequence[str] = ("BLEU-1", "ROUGE-L")) -> pd.DataFrame:
    """Our arms' BLEU-1 and ROUGE-L next to the two cited rows of the paper's Table 7 (notebook 07)."""
    return pd.concat([metrics[list(columns)].round(2), PAPER_TABLE7[list(columns)]])
