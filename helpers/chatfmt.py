"""Huatuo rows → OpenAI chat fine-tuning examples, with a system prompt written for this task."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from helpers.data import write_jsonl

# Short on purpose: it is sent (and billed) with every training example and every request afterwards.
SYSTEM_PROMPT = (
    "你是一名耐心、严谨的全科医生，在线回答患者的健康咨询。"
    "先根据描述分析可能的原因，再给出具体可行的建议；用药和检查须在医生指导下进行，出现危险信号时提醒及时就医。"
)

# What the original walkthrough sent with every medical example: OpenAI's demo prompt for a spelling-mistake bot.
WALKTHROUGH_SYSTEM_PROMPT = "You are an assistant that occasionally misspells words"


def to_chat(row: Mapping[str, str], system_prompt: str = SYSTEM_PROMPT) -> dict:
    """One Huatuo row as a chat example: system prompt, the patient's question, the doctor's answer."""
    return {
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": row["questions"]},
            {"role": "assistant", "content": row["answers"]},
        ]
    }


def build_chat_file(rows: Iterable[Mapping[str, str]], path: Path, system_prompt: str = SYSTEM_PROMPT) -> int:
    """Write rows as a chat JSONL (UTF-8, unescaped Chinese, atomic); return the number of examples."""
    return write_jsonl(path, (to_chat(r, system_prompt) for r in rows))
