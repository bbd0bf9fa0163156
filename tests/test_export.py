"""Export of fine-tuned models (helpers/localapi/export.py) on the tiny model: peft and merged folders load in plain
transformers (+ peft) and compute what the server computes; bad input is named and leaves nothing behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from helpers.chatfmt import SYSTEM_PROMPT, to_chat
from helpers.config import REPO_ROOT
from helpers.data import read_jsonl
from helpers.localapi import export as E
from helpers.localapi import models as M
from helpers.localapi import trainer as T
from helpers.localapi.__main__ import main as cli_main
from helpers.localapi.storage import Storage, now

JOB = "ftjob-exporttest0000000000000"
FT = f"ft:tiny-test:local:export:{JOB}"
TRAIN_SYSTEM = "你是一名只用一句话回答的医生。"


def fixture_rows(start: int, n: int) -> list[dict]:
    """Rows of the synthetic Huatuo fixture as chat examples."""
    rows = read_jsonl(REPO_ROOT / "data" / "huatuo_fixture.jsonl")[start:start + n]
    return [to_chat(r, TRAIN_SYSTEM) for r in rows]


@pytest.fixture(scope="module")
def server_state(tmp_path_factory, engine_cache) -> dict:
    """A local server's state with one real (tiny) fine-tune, its checkpoint and its job with a training file."""
    work = tmp_path_factory.mktemp("export-work")
    storage = Storage(work / "localapi", engine_cache)
    file_id = "file-exporttrain"
    storage.blob_path(file_id).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fixture_rows(0, 8)),
                                          encoding="utf-8")
    spec = T.TrainSpec("tiny-test", storage.blob_path(file_id), None, storage.jobs_dir / JOB, n_epochs=1, batch_size=4,
                       cache_dir=engine_cache, learning_rate=2e-2, max_seq_len=128, precision="fp32")
    result = T.train(spec, lambda event: None, lambda: False)
    storage.add_job({"id": JOB, "created_at": now(), "model": "tiny-test", "training_file": file_id, "seed": 42,
                     "hyperparameters": {}, "status": "succeeded"})
    storage.add_model({"id": FT, "created": now(), "kind": "fine-tune", "base_model": "tiny-test",
                       "adapter_dir": str(result.adapter_dir), "job_id": JOB})
    ckpt = result.checkpoints[0]
    ckpt_id = f"{FT}:ckpt-step-{ckpt['step']}"
    storage.add_model({"id": ckpt_id, "created": now(), "kind": "checkpoint", "base_model": "tiny-test",
                       "adapter_dir": ckpt["path"], "job_id": JOB})
    yield {"storage": storage, "work": work, "cache": engine_cache, "adapter": result.adapter_dir, "checkpoint": ckpt_id}
    storage.close()


def prompt_batch(tok, rows: list[dict]) -> list[list[int]]:
    """Token ids of whole conversations (prompt and answer), as the trainer sees them."""
    return [tok(M.render_chat(tok, r["messages"], False), add_special_tokens=False)["input_ids"] for r in rows]


def logits_of(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def test_peft_export_loads_with_peft_names_its_base_portably_and_computes_what_the_server_does(server_state, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "peft"
    result = E.export_model(server_state["storage"], FT, "peft", out)
    assert result.out == out and {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                                  "chat_template.jinja", "training.json", "README.md"} <= set(result.files)
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == "tiny-test"
    assert "/" not in json.dumps(config["base_model_name_or_path"]) and str(server_state["work"]) not in (out / "adapter_config.json").read_text(encoding="utf-8")
    assert json.loads((out / "training.json").read_text(encoding="utf-8"))["hyperparameters"]["lora_rank"] == 16

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    base = AutoModelForCausalLM.from_pretrained(M.ensure_converted("tiny-test", server_state["cache"]), dtype=torch.float32)
    exported = PeftModel.from_pretrained(base, str(out)).eval()
    served = M.load_model("tiny-test", server_state["cache"], server_state["adapter"], device="cpu")
    for ids in prompt_batch(tok, fixture_rows(20, 2)):
        assert torch.equal(logits_of(exported, ids), logits_of(served.model, ids))


def test_merged_export_loads_without_peft_and_matches_base_plus_adapter(server_state, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = tmp_path / "merged"
    result = E.export_model(server_state["storage"], FT, "merged", out)
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja",
            "README.md"} <= set(result.files)
    assert not any(name.startswith("adapter") for name in result.files)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not hasattr(merged, "peft_config")
    tok = AutoTokenizer.from_pretrained(out)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert GenerationConfig.from_pretrained(out).eos_token_id[0] == eot

    served = M.load_model("tiny-test", server_state["cache"], server_state["adapter"], device="cpu")
    rows = prompt_batch(tok, fixture_rows(20, 3))  # held-out rows of the fixture (trained on 0-7)
    biggest_change = 0.0
    for ids in rows:
        want = logits_of(served.model, ids)
        got = logits_of(merged, ids)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        with served.model.disable_adapter():
            biggest_change = max(biggest_change, float((logits_of(served.model, ids) - want).abs().max()))
    assert biggest_change > 1e-2  # the adapter is not a no-op, so the comparison above means something


def test_a_checkpoint_exports_its_own_weights(server_state, tmp_path):
    from safetensors.torch import load_file

    state = server_state
    out = tmp_path / "ckpt"
    E.export_model(state["storage"], state["checkpoint"], "peft", out)
    source = E.find_source(state["storage"], state["checkpoint"])
    assert source.kind == "checkpoint"
    got, want = load_file(out / "adapter_model.safetensors"), load_file(source.adapter_dir / "adapter_model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_the_training_system_prompt_is_the_default(server_state):
    source = E.find_source(server_state["storage"], FT)
    assert E.training_system_prompt(server_state["storage"], source) == TRAIN_SYSTEM
    orphan = E.ExportSource("x", "fine-tune", "tiny-test", source.adapter_dir, None)
    assert E.training_system_prompt(server_state["storage"], orphan) == SYSTEM_PROMPT


def test_the_ollama_modelfile_has_base_adapter_template_stops_and_system():
    text = E.modelfile_text("/models/base.gguf", '系统提示"""', ["<|im_end|>", "<|endoftext|>"])
    lines = text.splitlines()
    assert lines[0] == "FROM /models/base.gguf" and lines[1] == "ADAPTER ./adapter.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'PARAMETER stop "<|endoftext|>"' in lines
    assert text.rstrip().endswith("SYSTEM \"\"\"系统提示'''\"\"\"")
    assert "<|im_start|>{{ .Role }}" in text and text.count('TEMPLATE """') == 1


# ---- bad input ------------------------------------------------------------------------------------------------
def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_unknown_model_is_named(server_state, tmp_path):
    with pytest.raises(E.UnknownModelError, match=r"no model 'ft:tiny-test:local:nope:ftjob-x'.*" + FT.replace(":", ".")):
        E.export_model(server_state["storage"], "ft:tiny-test:local:nope:ftjob-x", "peft", tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_a_base_model_is_not_fine_tuned(server_state, tmp_path):
    with pytest.raises(E.NotFineTunedError, match="tiny-test is a base model"):
        E.export_model(server_state["storage"], "tiny-test", "merged", tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_a_base_without_gguf_is_named(server_state, tmp_path):
    with pytest.raises(E.NoBaseGGUFError, match="the base model tiny-test has no GGUF file.*--format peft or merged"):
        E.export_model(server_state["storage"], FT, "gguf", tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_an_existing_output_folder_is_never_touched(server_state, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(E.OutputExistsError, match=f"{out} already exists"):
        E.export_model(server_state["storage"], FT, "peft", out)
    assert leftovers(tmp_path) == ["mine"] and leftovers(out) == ["notes.txt"]


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_a_full_disk_leaves_nothing_behind(server_state, tmp_path, monkeypatch, fmt):
    def full(path, text, mode=0o644):
        if Path(path).name == "README.md":  # the last file: the weights are already written by then
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text, mode)

    real = E.write_text_atomic
    monkeypatch.setattr(E, "write_text_atomic", full)
    with pytest.raises(E.DiskFullError, match=f"disk is full: the export to {tmp_path / 'out'} could not be written"):
        E.export_model(server_state["storage"], FT, fmt, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_the_command_exports_and_reports_errors_in_one_line(server_state, tmp_path, capsys):
    args = ["--work-dir", str(server_state["work"]), "--model-cache", str(server_state["cache"])]
    with pytest.raises(SystemExit) as done:
        cli_main(["export", FT, "--format", "peft", "--out", str(tmp_path / "cli"), *args])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert f"exported {FT} as peft to {tmp_path / 'cli'}" in printed and "adapter_model.safetensors" in printed
    with pytest.raises(SystemExit) as done:
        cli_main(["export", FT, "--format", "peft", "--out", str(tmp_path / "cli"), *args])
    assert done.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: the output folder {tmp_path / 'cli'} already exists; choose a new folder (an export never overwrites one)"
    with pytest.raises(SystemExit) as done:
        cli_main(["export", FT, "--format", "peft", "--out", str(tmp_path / "x"), "--work-dir", str(tmp_path / "empty")])
    assert done.value.code == 1 and "no local server state" in capsys.readouterr().err


def test_the_gguf_adapter_is_in_llama_cpps_lora_layout(server_state, tmp_path):
    from gguf import GGUFReader
    from safetensors.torch import load_file
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    # the tiny model is a Llama (4 heads, 2 key/value heads): llama.cpp's q/k row order applies to LoRA B
    arch = E.GGUFArch("llama", blocks=2, heads=4, kv_heads=2)
    count = E.write_gguf_adapter(server_state["adapter"], arch, tmp_path / "adapter.gguf")
    reader = GGUFReader(str(tmp_path / "adapter.gguf"))
    meta = {k: reader.get_field(k).contents() for k in ("general.architecture", "general.type", "adapter.type", "adapter.lora.alpha")}
    assert meta == {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": 32.0}
    tensors = {t.name: t.data for t in reader.tensors}
    kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    assert count == len(tensors) == 2 * 7 * 2
    assert set(tensors) == {f"blk.{b}.{k}.weight.lora_{ab}" for b in range(2) for k in kinds for ab in "ab"}

    peft = load_file(server_state["adapter"] / "adapter_model.safetensors")
    hf = "base_model.model.model.layers.1.self_attn.{}_proj.lora_{}.weight"
    unpermute = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    for short, gguf_name in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v")):
        assert (tensors[f"blk.1.{gguf_name}.weight.lora_a"] == peft[hf.format(short, "A")].numpy()).all()
        lora_b = tensors[f"blk.1.{gguf_name}.weight.lora_b"]
        if short != "v":  # transformers' GGUF loader undoes llama.cpp's reordering: it must give PEFT's B back
            lora_b = unpermute.process(lora_b, f"blk.1.{gguf_name}.weight").weights
        assert (lora_b == peft[hf.format(short, "B")].numpy()).all()


def test_the_server_exports_over_http_with_openai_shaped_errors(server_state, tmp_path):
    import openai

    from tests.localapi_support import Server, free_port

    server = Server(server_state["work"], free_port()).start()
    try:
        client = server.client(timeout=300.0)
        out = tmp_path / "http-peft"
        answer = client.post("/local/export", body={"model": FT, "format": "peft", "out": str(out)}, cast_to=object)
        assert answer["object"] == "local.export" and answer["out"] == str(out) and answer["base_gguf"] is None
        assert answer["files"]["adapter_model.safetensors"] == (out / "adapter_model.safetensors").stat().st_size
        with pytest.raises(openai.ConflictError) as conflict:
            client.post("/local/export", body={"model": FT, "format": "peft", "out": str(out)}, cast_to=object)
        assert conflict.value.code == "output_exists" and str(out) in conflict.value.message
        with pytest.raises(openai.NotFoundError) as missing:
            client.post("/local/export", body={"model": "ft:nope", "format": "gguf", "out": str(tmp_path / "x")}, cast_to=object)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as no_gguf:
            client.post("/local/export", body={"model": FT, "format": "gguf", "out": str(tmp_path / "x")}, cast_to=object)
        assert no_gguf.value.code == "no_base_gguf" and "tiny-test has no GGUF" in no_gguf.value.message
        with pytest.raises(openai.BadRequestError) as relative:
            client.post("/local/export", body={"model": FT, "format": "peft", "out": "mine"}, cast_to=object)
        assert relative.value.param == "out"
    finally:
        server.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["http-peft"]


def test_the_llama_cpp_runner_names_a_missing_file(tmp_path):
    from helpers import llamacpp

    if llamacpp.runtime_problem():
        with pytest.raises(llamacpp.LlamaCppError, match="not installed"):
            llamacpp.greedy(tmp_path / "base.gguf", ["hi"])
        return
    with pytest.raises(llamacpp.LlamaCppError, match="the model file base.gguf does not exist"):
        llamacpp.greedy(tmp_path / "base.gguf", ["hi"])
