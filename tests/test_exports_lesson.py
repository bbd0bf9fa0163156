"""Notebook 08's helpers (helpers/exports.py): export once, reuse, refuse a folder of another model, and the tables."""

from __future__ import annotations

import dataclasses
import json

import pytest

from helpers import exports
from helpers.config import load_config
from helpers.localapi import models as M


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "LOCALAPI_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    return load_config(tmp_path / "missing.env")


def test_export_once_exports_then_reuses_and_refuses_another_models_folder(cfg) -> None:
    calls = []

    def fake_export(model):
        def run(folder):
            calls.append(folder)
            folder.mkdir(parents=True)
            (folder / "training.json").write_text(json.dumps({"model": model}), encoding="utf-8")
            (folder / "adapter_model.safetensors").write_bytes(b"x" * 2_000_000)
        return run

    folder, reused = exports.export_once(cfg, "ft:a", "peft", fake_export("ft:a"))
    assert not reused and calls == [folder] and folder == cfg.work_dir / "exports" / "peft"
    again, reused = exports.export_once(cfg, "ft:a", "peft", fake_export("ft:a"))
    assert reused and again == folder and len(calls) == 1  # a re-run exports nothing
    assert exports.recorded_exports(cfg)["peft"]["model"] == "ft:a"
    with pytest.raises(exports.ExportCheckError, match="holds an export of ft:a, not of ft:b"):
        exports.export_once(cfg, "ft:b", "peft", fake_export("ft:b"))
    table = exports.files_table(folder)
    assert list(table["文件"])[0] == "adapter_model.safetensors" and table["大小（MB）"].iloc[0] == 2.0


def test_remote_backend_is_refused_in_chinese(cfg) -> None:
    exports.require_local(cfg)
    with pytest.raises(exports.ExportCheckError, match="OpenAI 不提供微调后模型的权重"):
        exports.require_local(dataclasses.replace(cfg, backend="remote"))


def test_tiny_model_has_no_gguf_and_prompts_use_the_template(cfg, engine_cache) -> None:
    tiny = dataclasses.replace(cfg, base_model="tiny-test")
    assert "没有 GGUF 文件" in exports.gguf_problem(tiny)
    tok = M.load_tokenizer("tiny-test", engine_cache)
    [prompt] = exports.chat_prompts(tok, "你是医生。", ["头疼怎么办？"])
    assert "你是医生。" in prompt and prompt.rstrip().endswith("assistant")
    assert exports.common_prefix_tokens(tok, "多休息，多喝水", "多休息，少熬夜") >= 1
    assert exports.common_prefix_tokens(tok, "多休息", "建议就医") == 0
    table = exports.opening_agreement(tok, ["q"], ["多休息"], ["多休息"], ["建议就医"])
    assert table.loc[0, "相同的开头词元（有适配器）"] >= 1 and table.loc[0, "相同的开头词元（无适配器）"] == 0


def test_parting_table_finds_the_first_differing_token_and_the_servers_odds(engine_cache) -> None:
    """08's table of where llama.cpp parts from the server: position, both tokens, the server's log-probabilities."""
    from helpers.localapi.toolcalls import logprob_entry

    tok = M.load_tokenizer("tiny-test", engine_cache)
    ids = tok("你好，考虑是胃炎", add_special_tokens=False)["input_ids"]
    other = tok("问题", add_special_tokens=False)["input_ids"][0]
    assert other != ids[2]
    # the server's answer as the API returns it; at the third token llama.cpp's choice is the server's runner-up
    server = [logprob_entry(tok, t, -0.1, [(t, -0.1), (other, -2.4)] if i == 2 else [(t, -0.1)])
              for i, t in enumerate(ids)]
    table = exports.parting_table(tok, ["同一题", "分开的题", "不在前几名"],
                                  [server, server, server], [ids, ids[:2] + [other] + ids[3:], ids[:2] + [ids[0]]])
    assert list(table["问题"]) == ["分开的题", "不在前几名"]  # the identical answer is left out
    parted = table.iloc[0]
    assert parted["分开的位置（第几个词元）"] == 3 and parted["相同的开头"] == tok.decode(ids[:2])
    assert parted["服务器接着写"] == tok.decode(ids[2:6]) != parted["llama.cpp 接着写"]
    assert parted["服务器给自己这个词元的对数概率"] == pytest.approx(-0.1)
    assert parted["服务器给 llama.cpp 这个词元的对数概率"] == pytest.approx(-2.4)
    assert parted["相差"] == pytest.approx(2.3)
    assert pd_isna(table.iloc[1]["服务器给 llama.cpp 这个词元的对数概率"])


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
