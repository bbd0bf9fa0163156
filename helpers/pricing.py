"""Fine-tuning cost estimate: a dated price table, OpenAI's default-epoch rule, billed tokens, train_stats.json."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.files import write_json_atomic
from helpers.tokens import base_model_id, count_many_chats, encoding_for_model, token_limit


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens for one model, and when/where that price was read."""

    model: str
    training: float
    input: float
    output: float
    as_of: str
    source: str


PRICE_PAGE = "openai.com/api/pricing (fine-tuning table)"
# Prices change: the date says when each row was read. Check the page before spending money.
PRICES: dict[str, Price] = {p.model: p for p in (
    # The original walkthrough (OpenAI's announcement of 2023-08-22): $0.008 / $0.012 / $0.016 per 1K tokens.
    Price("gpt-3.5-turbo-0613", 8.00, 12.00, 16.00, "2023-08-22", "OpenAI blog: GPT-3.5 Turbo fine-tuning and API updates"),
    Price("gpt-3.5-turbo-0125", 8.00, 3.00, 6.00, "2025-06", PRICE_PAGE),
    Price("gpt-4o-mini-2024-07-18", 3.00, 0.30, 1.20, "2025-06", PRICE_PAGE),
    Price("gpt-4o-2024-08-06", 25.00, 3.75, 15.00, "2025-06", PRICE_PAGE),
    Price("gpt-4.1-nano-2025-04-14", 1.50, 0.20, 0.80, "2025-06", PRICE_PAGE),
    Price("gpt-4.1-mini-2025-04-14", 5.00, 0.80, 3.20, "2025-06", PRICE_PAGE),
    Price("gpt-4.1-2025-04-14", 25.00, 3.00, 12.00, "2025-06", PRICE_PAGE),
)}
LOCAL_PRICE_SOURCE = "本地后端：在本机训练，不收费"  # shown in notebook 03 (stats_frame), so in Chinese

# OpenAI's default number of epochs for small and large sets (as in the Cookbook's data-preparation notebook).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


class UnknownPrice(KeyError):
    """No price is known for a model: add a dated row to pricing.PRICES."""


def price_for(model: str) -> Price:
    """The price row of a model (fine-tuned ids use their base; local models cost nothing); UnknownPrice otherwise."""
    base = base_model_id(model)
    if base in PRICES:
        return PRICES[base]
    if encoding_for_model(model).estimate:
        return Price(base, 0.0, 0.0, 0.0, "-", LOCAL_PRICE_SOURCE)
    for name, price in PRICES.items():  # an alias without date, e.g. gpt-4o-mini -> gpt-4o-mini-2024-07-18
        if name.startswith(base + "-") and name[len(base) + 1:len(base) + 2].isdigit():
            return price
    raise UnknownPrice(f"no price for {model!r}: add a dated row to helpers/pricing.py PRICES ({PRICE_PAGE})")


def default_epochs(n_examples: int) -> int:
    """OpenAI's default epochs: 3, raised for small sets (≥100 example passes), lowered for big ones (≤25,000)."""
    if n_examples <= 0:
        raise ValueError("n_examples must be positive")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def billed_tokens(token_counts: Iterable[int], n_epochs: int, limit: int | None = None) -> int:
    """Σ min(limit, tokens) × epochs: what a fine-tuning job is charged for (longer examples are cut at the limit)."""
    per_epoch = sum(min(limit, t) if limit else t for t in token_counts)
    return per_epoch * n_epochs


def training_cost(billed: int, model: str) -> float:
    """USD for training on `billed` tokens (already multiplied by the epochs)."""
    return billed * price_for(model).training / 1_000_000


def cost_table(conversations: list[list[dict[str, Any]]], n_epochs: int, models: Iterable[str]) -> list[dict[str, Any]]:
    """For each model: the same examples counted with its own encoding, billed tokens under its limit, training cost."""
    rows = []
    for model in models:
        counts = count_many_chats(conversations, encoding_for_model(model).encoding)
        price, limit = price_for(model), token_limit(model)
        billed = billed_tokens(counts, n_epochs, limit)
        rows.append({"model": model, "encoding": encoding_for_model(model).encoding, "tokens": sum(counts),
                     "billed_tokens": billed, "training_usd_per_1M": price.training,
                     "estimated_cost_usd": round(training_cost(billed, model), 4), "price_as_of": price.as_of})
    return rows


def train_stats(token_counts: list[int], model: str, n_epochs: int, valid_token_counts: list[int] | None = None) -> dict[str, Any]:
    """The contents of train_stats.json (CONTRACTS.md): counts, epochs, billed tokens, encoding, model, cost."""
    choice = encoding_for_model(model)
    limit = token_limit(model)
    billed = billed_tokens(token_counts, n_epochs, limit)
    price = price_for(model)
    stats = {
        "model": model,
        "encoding": choice.encoding,
        "encoding_is_estimate": choice.estimate,
        "n_examples": len(token_counts),
        "total_tokens": sum(token_counts),
        "max_tokens_per_example": max(token_counts, default=0),
        "token_limit": limit,
        "n_epochs": n_epochs,
        "n_epochs_openai_default": default_epochs(len(token_counts)) if token_counts else None,
        "billed_tokens": billed,
        "training_usd_per_1M": price.training,
        "price_as_of": price.as_of,
        "price_source": price.source,
        "estimated_cost_usd": round(training_cost(billed, model), 4),
    }
    if valid_token_counts is not None:
        stats["n_valid_examples"] = len(valid_token_counts)
        stats["valid_total_tokens"] = sum(valid_token_counts)
    return stats


# Chinese headers for what notebook 03 shows; the keys stay English (train_stats.json is a contract).
COLUMN_LABELS = {
    "model": "模型", "encoding": "编码", "tokens": "训练文件词元数", "billed_tokens": "计费词元数（× 轮数）",
    "training_usd_per_1M": "训练单价（美元/1M 词元）", "estimated_cost_usd": "预计费用（美元）", "price_as_of": "价格日期",
    "encoding_is_estimate": "只是估计（本地模型）", "n_examples": "训练样本数", "total_tokens": "训练文件词元数",
    "max_tokens_per_example": "最长一条的词元数", "token_limit": "单条上限", "n_epochs": "轮数",
    "n_epochs_openai_default": "OpenAI 的默认轮数", "price_source": "价格来源", "n_valid_examples": "验证样本数",
    "valid_total_tokens": "验证文件词元数",
}


def labelled(rows: list[dict[str, Any]]) -> "pd.DataFrame":
    """Notebook 03: cost_table's rows as a table with Chinese column headers."""
    import pandas as pd

    return pd.DataFrame(rows).rename(columns=COLUMN_LABELS)


def stats_frame(stats: dict[str, Any]) -> "pd.DataFrame":
    """Notebook 03: train_stats.json as a two-column table, each field named in Chinese beside its key."""
    import pandas as pd

    return pd.DataFrame([{"项目": COLUMN_LABELS.get(key, key), "字段": key, "值": str(value)} for key, value in stats.items()])


def write_train_stats(path: Path, stats: dict[str, Any]) -> Path:
    """Write train_stats.json atomically (UTF-8, indented)."""
    write_json_atomic(path, stats)
    return Path(path)
