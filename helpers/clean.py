"""Cleaning Huatuo rows before sampling: strip whitespace, drop what cannot train, count every drop by reason (notebook 02)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from helpers.chatfmt import SYSTEM_PROMPT, to_chat
from helpers.tokens import count_many_chats, encoding_for_model, token_limit

# Drop reasons, in the order they are checked (a row is counted under the first that applies).
EMPTY_QUESTION = "问题为空"
TEMPLATE_ONLY = "空的问诊表单（只有“患者性别:”“问题描述:”之类的标签）"
EMPTY_ANSWER = "答案为空"
EXACT_DUPLICATE = "完全重复（问题和答案都相同）"
DUPLICATE_QUESTION = "问题重复（答案不同，保留第一条）"
OVER_LIMIT = "超过模型的单条词元上限"
REASONS = (EMPTY_QUESTION, TEMPLATE_ONLY, EMPTY_ANSWER, EXACT_DUPLICATE, DUPLICATE_QUESTION, OVER_LIMIT)

# The labels of the consultation forms some questions come in (as found in the real test set, see notebook 01);
# a question that is nothing but these labels has no content.
FORM_LABELS = ("患者性别", "患者年龄", "问题描述", "病情描述（主要症状、发病时间）", "病情描述", "主要症状", "发病时间",
               "化验检查结果", "化验、检查结果", "曾经治疗情况和效果", "想得到怎样的帮助")
_LABELS = "|".join(map(re.escape, sorted(FORM_LABELS, key=len, reverse=True)))
TEMPLATE_LABELS = re.compile(rf"({_LABELS})\s*[:：]?|[\s:：]")
FORM_LABEL = re.compile(rf"({_LABELS})\s*[:：]")  # a question written in a consultation form (with or without content)
EMPTY_DESCRIPTION = re.compile(r"问题描述\s*[:：]?\s*$")  # the form was filled in up to the question itself, which is empty


@dataclass(frozen=True)
class Dropped:
    """A row that was left out: its position in the input, the reason, and the row as it came in."""

    index: int
    reason: str
    row: dict[str, str]


@dataclass
class CleanResult:
    """The rows kept (stripped, in input order) and every row dropped, with its reason."""

    rows: list[dict[str, str]]
    dropped: list[Dropped]
    n_in: int
    n_stripped: int  # rows kept whose question or answer had leading/trailing whitespace
    token_limit: int | None
    encoding: str
    token_counts: list[int] = field(default_factory=list)  # chat tokens of each kept row (with the system prompt)

    def counts(self) -> dict[str, int]:
        """Rows dropped per reason, every reason listed (zeros included), in checking order."""
        out = {reason: 0 for reason in REASONS}
        for d in self.dropped:
            out[d.reason] += 1
        return out

    def summary(self) -> str:
        """A few lines: in, dropped per reason, kept."""
        lines = [f"读入 {self.n_in} 条"]
        lines += [f"  去掉 {n:>3} 条：{reason}" for reason, n in self.counts().items()]
        lines.append(f"保留 {len(self.rows)} 条（其中 {self.n_stripped} 条去掉了首尾空白）")
        return "\n".join(lines)


def is_template_only(question: str) -> bool:
    """True for a consultation form without a question: '患者性别:患者年龄:问题描述:' (maybe with sex and age filled in), or only labels."""
    return bool(question.strip()) and (not TEMPLATE_LABELS.sub("", question) or bool(EMPTY_DESCRIPTION.search(question)))


def clean_rows(rows: Sequence[dict[str, str]], model: str, max_tokens: int | None = None,
               system_prompt: str = SYSTEM_PROMPT) -> CleanResult:
    """Strip whitespace; drop empty, template-only, duplicate and over-long rows (by the model's limit), counting each."""
    limit = max_tokens or token_limit(model)
    encoding = encoding_for_model(model).encoding
    kept: list[tuple[int, dict[str, str]]] = []
    dropped: list[Dropped] = []
    pairs: set[tuple[str, str]] = set()
    questions: set[str] = set()
    n_stripped = 0
    for i, row in enumerate(rows):
        q, a = row["questions"].strip(), row["answers"].strip()
        reason = (EMPTY_QUESTION if not q else TEMPLATE_ONLY if is_template_only(q) else EMPTY_ANSWER if not a
                  else EXACT_DUPLICATE if (q, a) in pairs else DUPLICATE_QUESTION if q in questions else None)
        if reason:
            dropped.append(Dropped(i, reason, dict(row)))
            continue
        pairs.add((q, a))
        questions.add(q)
        n_stripped += (q, a) != (row["questions"], row["answers"])
        kept.append((i, {"questions": q, "answers": a}))
    counts = count_many_chats((to_chat(r, system_prompt)["messages"] for _, r in kept), encoding)
    result = CleanResult([], dropped, len(rows), n_stripped, limit, encoding)
    for (i, r), tokens in zip(kept, counts):
        if limit and tokens > limit:
            dropped.append(Dropped(i, OVER_LIMIT, dict(rows[i])))
            result.n_stripped -= (r["questions"], r["answers"]) != (rows[i]["questions"], rows[i]["answers"])
        else:
            result.rows.append(r)
            result.token_counts.append(tokens)
    dropped.sort(key=lambda d: d.index)
    return result
