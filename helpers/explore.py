"""Looking at the raw rows before cleaning (taught in notebook 01): lengths in characters and tokens, and a census of quirks."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from helpers.clean import FORM_LABEL, is_template_only
from helpers.tokens import count_unique_texts

LONG_ANSWER_CHARS = 1000  # longer than almost every forum answer: encyclopedia text
SHORT_ANSWER_CHARS = 10  # a term, not an answer: '脓毒症'
QUESTION_CUT_CHARS = 255  # the source site cut long questions at this length, mid-sentence
# Section labels some source sites open their answers with ('病情分析：…指导意见：…'): a template the model will learn.
ANSWER_LABEL = re.compile(r"^(病情分析|问题分析|病例分析|指导意见|意见建议|健康指导|心理分析)\s*[:：]")


def length_table(rows: Sequence[dict[str, str]], encoding: str = "o200k_base") -> pd.DataFrame:
    """One row per input row: question/answer length in characters and in tokens of `encoding`."""
    questions = [r["questions"] for r in rows]
    answers = [r["answers"] for r in rows]
    return pd.DataFrame({
        "q_chars": [len(q) for q in questions],
        "a_chars": [len(a) for a in answers],
        "q_tokens": count_unique_texts(questions, encoding),
        "a_tokens": count_unique_texts(answers, encoding),
    })


def quirk_census(rows: Sequence[dict[str, str]]) -> dict[str, int]:
    """How many rows show each quirk of the raw data (a row may show several); nothing is removed here."""
    stripped = [(r["questions"].strip(), r["answers"].strip()) for r in rows]
    pair_counts = Counter(stripped)
    question_counts = Counter(q for q, _ in stripped)
    half_width = sum(any(ch in r["questions"] + r["answers"] for ch in ",?!") for r in rows)
    return {
        "行数": len(rows),
        "不同的问题": len(question_counts),
        "完全重复的多余行": sum(n - 1 for n in pair_counts.values()),
        "问题相同、答案不同的多余行": sum(n - 1 for n in question_counts.values()) - sum(n - 1 for n in pair_counts.values()),
        "首尾有空白": sum((q, a) != (r["questions"], r["answers"]) for (q, a), r in zip(stripped, rows)),
        "问题为空": sum(not q for q, _ in stripped),
        "问诊表单格式的问题": sum(bool(FORM_LABEL.search(q)) for q, _ in stripped),
        "空的问诊表单": sum(is_template_only(q) for q, _ in stripped),
        "答案为空": sum(not a for _, a in stripped),
        f"答案不到 {SHORT_ANSWER_CHARS} 字": sum(0 < len(a) < SHORT_ANSWER_CHARS for _, a in stripped),
        f"答案超过 {LONG_ANSWER_CHARS:,} 字": sum(len(a) > LONG_ANSWER_CHARS for _, a in stripped),
        f"问题正好 {QUESTION_CUT_CHARS} 字（被来源截断）": sum(len(q) == QUESTION_CUT_CHARS for q, _ in stripped),
        "答案以“病情分析：”之类的标签开头": sum(bool(ANSWER_LABEL.match(a)) for _, a in stripped),
        "含半角标点 , ? !": half_width,
    }


def repeated_questions(rows: Sequence[dict[str, str]]) -> dict[str, list[int]]:
    """Questions (stripped) that occur more than once, with the row indexes where they occur, in file order."""
    where: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        where.setdefault(r["questions"].strip(), []).append(i)
    return {q: idx for q, idx in where.items() if len(idx) > 1}


def count_containing(rows: Sequence[dict[str, str]], words: Sequence[str]) -> dict[str, int]:
    """For each word, how many rows contain it in the question or the answer."""
    return {w: sum(w in r["questions"] or w in r["answers"] for r in rows) for w in words}


def longest(rows: Sequence[dict[str, str]], n: int = 5, key: str = "answers") -> list[tuple[int, int, str]]:
    """The n rows with the longest `key`: (row index, length in characters, the question's first 30 characters)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][key]), i))[:n]
    return [(i, len(rows[i][key]), rows[i]["questions"].strip()[:30]) for i in order]


def seeded_examples(rows: Sequence[dict[str, str]], k: int, seed: int) -> list[dict[str, str]]:
    """k rows picked with a seeded generator: the same rows on every run."""
    return random.Random(seed).sample(list(rows), k)
