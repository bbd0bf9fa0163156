"""Notebook 09: preference pairs for DPO, built from the training questions only, and the DPO job's plan.

A pair is OpenAI's preference format (one JSONL line): `input.messages` (the training system prompt and one
training question), `preferred_output` (the doctor's answer) and `non_preferred_output` (the supervised model's
own answer to the same question, decoded the way it answers when nothing holds it back: greedy, no frequency
penalty). What cannot be a pair is counted and shown, never dropped silently: an empty model answer, or one that
is the doctor's answer itself (the API rejects identical sides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from helpers.config import Config
from helpers.evaluation import Answer
from helpers.metrics import repeated_phrase
from helpers.workflow import JobPlan, Upload

DPO_SUFFIX = "huatuo-dpo"
DPO_ARM = "微调 + DPO 模型 + 系统提示"

PLAN_LABELS = {
    "model": "起点：第 06 节微调出的模型（它也是 DPO 的参考模型）",
    "training_file": "偏好对训练文件（本节上传）",
    "validation_file": "偏好对验证文件（本节上传）",
    "method.type": "方法：dpo 是直接偏好优化",
}


class PreferenceError(ValueError):
    """Pairs that cannot be built as asked (a held-out question among them, answers that do not match the rows)."""


@dataclass
class Pairs:
    """The preference pairs built from some training rows, and the rows that could not become a pair."""

    examples: list[dict[str, Any]]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row number, 1-based; why)

    def summary(self) -> str:
        """One line in Chinese: how many pairs, how many rows skipped and why."""
        text = f"{len(self.examples)} 个偏好对"
        if self.skipped:
            reasons = "；".join(f"第 {row} 行：{why}" for row, why in self.skipped)
            text += f"，跳过 {len(self.skipped)} 行（{reasons}）"
        return text + "。"


def preference_example(system_prompt: str, question: str, preferred: str, non_preferred: str) -> dict[str, Any]:
    """One line of OpenAI's preference format: the prompt, the preferred and the non-preferred assistant answer."""
    return {
        "input": {"messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": non_preferred}],
    }


def build_pairs(rows: Sequence[dict[str, str]], answers: Sequence[Answer], system_prompt: str,
                heldout: Sequence[dict[str, str]] = ()) -> Pairs:
    """Pairs from rows (Huatuo schema) and the model's answers to their questions (answer i to row i): the doctor's
    answer preferred, the model's not. Raises PreferenceError when a row's question is a held-out question."""
    if len(answers) != len(rows):
        raise PreferenceError(f"{len(answers)} model answers for {len(rows)} rows: answer every row's question first")
    leaked = {r["questions"].strip() for r in rows} & {r["questions"].strip() for r in heldout}
    if leaked:
        raise PreferenceError(f"{len(leaked)} of these questions are held-out questions (for example "
                              f"{sorted(leaked)[0][:30]!r}): pairs must come from the training rows only")
    pairs = Pairs([])
    for n, (row, answer) in enumerate(zip(rows, sorted(answers, key=lambda a: a.index)), 1):
        text = answer.text.strip()
        if not text:
            pairs.skipped.append((n, "模型的回答是空的"))
        elif text == row["answers"].strip():
            pairs.skipped.append((n, "模型的回答和医生的一字不差，没有可比的两面"))
        else:
            pairs.examples.append(preference_example(system_prompt, row["questions"], row["answers"], answer.text))
    return pairs


def pair_table(pairs: Pairs, n: int = 3, max_chars: int = 160) -> pd.DataFrame:
    """The first n pairs as a table: question, preferred (doctor) and non-preferred (model) answer, cut at max_chars."""
    def cut(text: str) -> str:
        return text if len(text) <= max_chars else text[:max_chars] + "……"

    rows = [{"问题": ex["input"]["messages"][-1]["content"], "偏好的回答（医生）": cut(ex["preferred_output"][0]["content"]),
             "不偏好的回答（监督微调模型自己写的）": cut(ex["non_preferred_output"][0]["content"])}
            for ex in pairs.examples[:n]]
    return pd.DataFrame(rows)


def habit_counts(answers: Sequence[Answer]) -> dict[str, int]:
    """How many answers loop (metrics.repeated_phrase) and how many were cut at max_tokens."""
    return {"回答数": len(answers), "陷入重复": sum(bool(repeated_phrase(a.text)) for a in answers),
            "被截断": sum(a.finish_reason == "length" for a in answers)}


def plan_dpo_job(cfg: Config, start_model: str, train: Upload, valid: Upload | None, *, beta: float | str = "auto",
                 n_epochs: int | str = 1, batch_size: int | str = "auto", learning_rate_multiplier: float | str = "auto",
                 suffix: str = DPO_SUFFIX) -> JobPlan:
    """Notebook 09: the DPO job on top of `start_model` (the supervised model of 06), with its run identity."""
    return JobPlan(model=start_model, training_file=train.file_id, validation_file=valid.file_id if valid else None,
                   n_epochs=n_epochs, batch_size=batch_size, learning_rate_multiplier=learning_rate_multiplier,
                   seed=cfg.seed, suffix=suffix, train_sha256=train.sha256, valid_sha256=valid.sha256 if valid else None,
                   method="dpo", beta=beta)


def first_step(results: pd.DataFrame) -> dict[str, float]:
    """The first training step's DPO loss, accuracy and reward margin, and ln 2 to compare the loss with."""
    import math

    first = results.sort_values("step").iloc[0]
    return {"step": int(first["step"]), "train_loss": float(first["train_loss"]), "ln2": math.log(2),
            "train_accuracy": float(first["train_accuracy"]), "train_reward_margin": float(first["train_reward_margin"])}
