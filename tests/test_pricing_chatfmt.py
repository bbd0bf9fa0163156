"""Prices, the epoch rule, billed tokens, train_stats.json, and the chat format."""

from __future__ import annotations

import json

import pytest

from helpers import chatfmt, pricing, validate


def test_walkthrough_worked_example_is_2_40_dollars():
    billed = pricing.billed_tokens([100_000], n_epochs=3)
    assert billed == 300_000
    assert pricing.training_cost(billed, "gpt-3.5-turbo-0613") == pytest.approx(2.40)


def test_walkthrough_prices_per_1k():
    p = pricing.price_for("gpt-3.5-turbo-0613")
    assert (p.training / 1000, p.input / 1000, p.output / 1000) == (0.008, 0.012, 0.016)
    assert p.as_of == "2023-08-22"
    assert all(price.as_of for price in pricing.PRICES.values())


def test_price_lookup():
    assert pricing.price_for("gpt-4o-mini").model == "gpt-4o-mini-2024-07-18"
    assert pricing.price_for("ft:gpt-4o-mini-2024-07-18:org:x:abc").model == "gpt-4o-mini-2024-07-18"
    assert pricing.price_for("smollm2-135m-instruct").training == 0.0
    with pytest.raises(pricing.UnknownPrice, match="add a dated row"):
        pricing.price_for("gpt-4-0613")


@pytest.mark.parametrize("n, epochs", [(1, 25), (10, 10), (20, 5), (33, 3), (34, 3), (100, 3), (8_333, 3), (8_334, 2), (30_000, 1)])
def test_default_epochs(n, epochs):
    assert pricing.default_epochs(n) == epochs


def test_billed_tokens_cut_at_limit():
    assert pricing.billed_tokens([100, 5000, 200], n_epochs=2, limit=4096) == (100 + 4096 + 200) * 2


def test_train_stats_has_the_contract_keys(tmp_path):
    stats = pricing.train_stats([100, 200, 300], "gpt-4o-mini-2024-07-18", n_epochs=3, valid_token_counts=[50])
    for key in ("n_examples", "total_tokens", "n_epochs", "billed_tokens", "encoding", "model", "estimated_cost_usd"):
        assert key in stats
    assert (stats["n_examples"], stats["total_tokens"], stats["billed_tokens"], stats["encoding"]) == (3, 600, 1800, "o200k_base")
    assert stats["estimated_cost_usd"] == pytest.approx(1800 * 3.0 / 1e6, abs=1e-4)
    path = pricing.write_train_stats(tmp_path / "train_stats.json", stats)
    assert json.loads(path.read_text(encoding="utf-8")) == stats


def test_cost_table_recounts_per_encoding():
    convs = [chatfmt.to_chat({"questions": "我血压130/80，为什么不能献血？", "answers": "献血前紧张会让血压升高。"})["messages"]] * 10
    rows = {r["model"]: r for r in pricing.cost_table(convs, 3, ["gpt-3.5-turbo-0613", "gpt-4o-mini-2024-07-18"])}
    assert rows["gpt-3.5-turbo-0613"]["encoding"] == "cl100k_base"
    assert rows["gpt-3.5-turbo-0613"]["tokens"] > rows["gpt-4o-mini-2024-07-18"]["tokens"]


def test_chat_example_shape_and_prompt():
    ex = chatfmt.to_chat({"questions": "头疼", "answers": "休息"})
    assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"]
    assert ex["messages"][0]["content"] == chatfmt.SYSTEM_PROMPT
    assert "misspell" not in chatfmt.SYSTEM_PROMPT and "医生" in chatfmt.SYSTEM_PROMPT


def test_chat_file_is_valid_and_unescaped(tmp_path):
    rows = [{"questions": f"问题{i}", "answers": f"答案{i}"} for i in range(12)]
    path = tmp_path / "train.jsonl"
    assert chatfmt.build_chat_file(rows, path) == 12
    text = path.read_text(encoding="utf-8")
    assert "问题0" in text and "\\u" not in text
    assert validate.validate_file(path, model="gpt-4o-mini").ok


def test_notebook_03_tables_have_chinese_headers() -> None:
    rows = pricing.cost_table([[{"role": "user", "content": "头疼"}]], 2, ["gpt-4o-mini-2024-07-18"])
    frame = pricing.labelled(rows)
    assert "计费词元数（× 轮数）" in frame.columns and not any(c.isascii() for c in frame.columns)
    stats = pricing.train_stats([100, 200], "gpt-4o-mini-2024-07-18", 2, [50])
    table = pricing.stats_frame(stats)
    assert set(table["字段"]) == set(stats) and all(not label.isascii() for label in table["项目"])


def test_a_local_models_price_source_is_chinese_in_notebook_03() -> None:
    stats = pricing.train_stats([100, 200], "smollm2-135m-instruct", 2)
    table = pricing.stats_frame(stats).set_index("字段")
    assert table.loc["price_source", "值"] == "本地后端：在本机训练，不收费"
