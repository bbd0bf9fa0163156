"""Fine-tuning end to end through the official SDK against a real server with the tiny model: upload, validate,
train (real LoRA steps in a worker process), events, checkpoints, result CSV, chat with the result, cancel,
delete, an invalid file, and a server killed in the middle of a job (its job queued again; resuming it is
tests/test_localapi_resume.py)."""

from __future__ import annotations

import base64
import csv
import io
import os
import signal
import time

import httpx
import openai
import pytest

from tests.localapi_support import KEY, Server, chat_line, free_port, write_chat_jsonl

TERMINAL = {"succeeded", "failed", "cancelled"}
CHAT = [{"role": "system", "content": "你是一名医生。"}, {"role": "user", "content": "血压130/80算高吗？"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("localapi-jobs") / "work", free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client(timeout=120.0)


def wait_for(client: openai.OpenAI, job_id: str, until, timeout: float = 600.0):
    """Poll a job until `until(job)` holds; return the job and the statuses seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if until(job):
            return job, seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck in {seen}")


def upload(client: openai.OpenAI, path) -> str:
    f = client.files.create(file=path, purpose="fine-tune")
    return client.files.wait_for_processing(f.id, poll_interval=0.2, max_wait_seconds=120).id


def test_fine_tune_then_chat_with_the_result(server, client, tmp_path):
    train = upload(client, write_chat_jsonl(tmp_path / "train.jsonl", 12))
    valid = upload(client, write_chat_jsonl(tmp_path / "valid.jsonl", 10, offset=100))
    job = client.fine_tuning.jobs.create(
        model="tiny-test", training_file=train, validation_file=valid, suffix="demo", seed=7,
        metadata={"run": "flow"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}})
    assert job.status == "validating_files" and job.fine_tuned_model is None
    assert job.method.type == "supervised" and job.seed == 7 and job.metadata == {"run": "flow"}

    job, seen = wait_for(client, job.id, lambda j: j.status in TERMINAL)
    assert job.status == "succeeded", (job.error, server.log()[-3000:])
    assert seen[-1] == "succeeded" and set(seen) <= {"validating_files", "queued", "running", "succeeded"}
    hp = job.hyperparameters
    assert (hp.n_epochs, hp.batch_size) == (2, 4) and isinstance(hp.learning_rate_multiplier, float)
    assert job.method.supervised.hyperparameters.learning_rate_multiplier == hp.learning_rate_multiplier
    assert job.fine_tuned_model == f"ft:tiny-test:local:demo:{job.id[-8:]}"
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.error is None
    assert job.estimated_finish is None and len(job.result_files) == 1

    # events: newest first, paginated with `after`, one metrics event per step with validation metrics
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=5))
    assert len({e.id for e in events}) == len(events)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    messages = [e.message for e in reversed(events)]
    assert messages[0] == f"Created fine-tuning job: {job.id}"
    assert messages[-1] == "The job has successfully completed"
    metrics = [e for e in reversed(events) if e.type == "metrics"]
    total = metrics[0].data["total_steps"]
    assert [m.data["step"] for m in metrics] == list(range(1, total + 1))
    assert total == 2 * 3  # 12 examples / batch 4 x 2 epochs
    assert all(m.data["train_loss"] > 0 and 0 <= m.data["train_mean_token_accuracy"] <= 1 for m in metrics)
    assert any("valid_loss" in m.data for m in metrics)
    assert sum("Checkpoint created" in m for m in messages) == 2
    every = client.fine_tuning.jobs.list_events(job.id, limit=100).data  # notebook 06 prints them in Chinese
    from helpers.event_text import zh
    from tests.language import english_phrases
    assert [e.message for e in every if english_phrases(zh(e.message))] == []
    from helpers.workflow import base_validation  # notebook 06 reads the step-0 point of its curve from the event's data
    loss, accuracy = base_validation(events)
    assert loss > 0 and 0 <= accuracy <= 1

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [6, 3]  # newest first, one per epoch
    for c in checkpoints:
        assert c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert c.fine_tuning_job_id == job.id and c.metrics.train_loss > 0 and c.metrics.step == c.step_number

    # the result file: OpenAI's columns, one row per step, the same losses as the events
    result = client.files.retrieve(job.result_files[0])
    assert result.purpose == "fine-tune-results"
    # served base64-encoded as on OpenAI: the Cookbook's `base64.b64decode(client.files.content(id).read())` works
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(client.files.content(result.id).read()).decode("utf-8"))))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(1, total + 1))
    assert [round(float(r["train_loss"]), 4) for r in rows] == [round(m.data["train_loss"], 4) for m in metrics]
    assert any(r["valid_loss"] for r in rows)

    # the fine-tuned model and its checkpoints are models
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(job.fine_tuned_model).owned_by == "user-local"
    assert client.fine_tuning.jobs.list(metadata={"run": "flow"}).data[0].id == job.id
    assert client.fine_tuning.jobs.list(metadata={"run": "other"}).data == []

    # chat: greedy, so the streamed text must equal the non-streamed one
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=CHAT, max_tokens=12, temperature=0)
    text = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.model == job.fine_tuned_model
    assert reply.choices[0].finish_reason in {"stop", "length"} and reply.choices[0].message.role == "assistant"
    usage = reply.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    stream = client.chat.completions.create(model=job.fine_tuned_model, messages=CHAT, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [reply.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == usage.prompt_tokens

    several = client.chat.completions.create(model=checkpoints[-1].fine_tuned_model_checkpoint, messages=CHAT,
                                             max_tokens=6, n=2, seed=3)
    assert [c.index for c in several.choices] == [0, 1]
    base = client.chat.completions.create(model="tiny-test", messages=CHAT, max_tokens=4, temperature=0)
    assert base.usage.prompt_tokens == usage.prompt_tokens  # same tokenizer and template
    with pytest.raises(openai.BadRequestError) as info:  # longer than the model's context
        client.chat.completions.create(model="tiny-test", messages=[{"role": "user", "content": "血压" * 3000}],
                                       max_tokens=4, stream=True)
    assert info.value.body["code"] == "context_length_exceeded"

    # delete: the model is gone everywhere
    assert client.models.delete(job.fine_tuned_model).deleted is True
    assert job.fine_tuned_model not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=CHAT, max_tokens=2)
    for file_id in (train, valid, result.id):
        assert client.files.delete(file_id).deleted


def test_the_chat_models_are_unloaded_before_a_job_trains(server, client, tmp_path):
    """The server holds no generation weights beside the training worker's (the course's peak is in 09: chat, then DPO)."""
    client.chat.completions.create(model="tiny-test", messages=[{"role": "user", "content": "头疼"}], max_tokens=2)
    train = upload(client, write_chat_jsonl(tmp_path / "train.jsonl", 10, offset=300))
    job = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, suffix="unload", seed=3,
                                         method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}})
    job, _ = wait_for(client, job.id, lambda j: j.status in TERMINAL)
    assert job.status == "succeeded", job.error
    assert f"unloaded 1 generation model(s) before training job {job.id}" in server.log()
    assert client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "头疼"}],
                                          max_tokens=2).choices[0].message.content is not None  # loads again on use


def test_one_job_at_a_time_and_cancel(client, tmp_path):
    train = upload(client, write_chat_jsonl(tmp_path / "big.jsonl", 120))
    hp = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 10, "batch_size": 1}}}
    first = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, method=hp, suffix="first")
    second = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, method=hp, suffix="second")

    def first_is_training(job) -> bool:
        return job.status == "running" and any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=3))

    wait_for(client, first.id, first_is_training)
    assert client.fine_tuning.jobs.retrieve(second.id).status == "queued"  # FIFO, one at a time
    cancelled = client.fine_tuning.jobs.cancel(second.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    running = client.fine_tuning.jobs.cancel(first.id)
    assert running.status == "cancelled"
    time.sleep(1.5)  # the worker stops; nothing it sends afterwards may change the job
    for job_id in (first.id, second.id):
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status == "cancelled" and job.fine_tuned_model is None and job.result_files == []
        assert client.fine_tuning.jobs.list_events(job_id, limit=1).data[0].message == "Fine-tuning job cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(first.id)
    assert client.files.delete(train).deleted


def test_invalid_training_file_fails_in_validating_files(client, tmp_path):
    lines = [chat_line(f"问题{i}", f"回答{i}") for i in range(12)]
    lines[2] = '{"messages": [{"role": "user", "content": "没有回答"}'  # line 3: broken JSON
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = client.fine_tuning.jobs.create(model="tiny-test", training_file=upload(client, bad))
    job, seen = wait_for(client, job.id, lambda j: j.status in TERMINAL, timeout=300)
    assert seen == ["validating_files", "failed"] or seen == ["failed"]
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert "line 3" in job.error.message and "bad.jsonl" in job.error.message
    assert job.fine_tuned_model is None and job.trained_tokens is None
    assert client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].level == "error"


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie child of ours does not count as running
            if open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # two server starts and a 120-row job killed mid-way: the longest API test
def test_restart_in_the_middle_of_a_job(tmp_path):
    srv = Server(tmp_path / "work", free_port()).start()
    try:
        client = srv.client(timeout=60.0)
        big = upload(client, write_chat_jsonl(tmp_path / "big.jsonl", 120))
        small = upload(client, write_chat_jsonl(tmp_path / "small.jsonl", 12))
        hp = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 10, "batch_size": 1}}}
        long_job = client.fine_tuning.jobs.create(model="tiny-test", training_file=big, method=hp)
        wait_for(client, long_job.id, lambda j: j.status == "running" and
                 any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(j.id, limit=3)))
        queued = client.fine_tuning.jobs.create(model="tiny-test", training_file=small, seed=1,
                                                hyperparameters={"n_epochs": 1})  # the deprecated form still works
        wait_for(client, queued.id, lambda j: j.status == "queued", timeout=300)
        info = httpx.get(srv.base_url.replace("/v1", "/local/info"), headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
        assert info["training"]["job_id"] == long_job.id
        worker = info["training"]["pid"]
        srv.stop(signal.SIGKILL)  # a crash: no shutdown handler runs
        assert _gone(worker, 30), "the training worker outlived its server"
    finally:
        srv.stop(signal.SIGKILL)

    srv.start()
    try:
        client = srv.client(timeout=60.0)
        job = client.fine_tuning.jobs.retrieve(long_job.id)  # queued again, to resume (tests/test_localapi_resume.py)
        assert job.status in {"queued", "running"} and job.error is None
        assert any("restarted while this job was running" in e.message
                   for e in client.fine_tuning.jobs.list_events(long_job.id, limit=10))
        client.fine_tuning.jobs.cancel(long_job.id)  # let the queued job have its turn
        assert {big, small} <= {f.id for f in client.files.list()}  # files survive
        assert client.files.content(small).content == (tmp_path / "small.jsonl").read_bytes()
        done, _ = wait_for(client, queued.id, lambda j: j.status in TERMINAL)  # the queue carries on
        assert done.status == "succeeded", done.error
        assert done.hyperparameters.n_epochs == 1 == done.method.supervised.hyperparameters.n_epochs
        assert client.chat.completions.create(model=done.fine_tuned_model, messages=CHAT, max_tokens=3).choices
    finally:
        srv.stop()


@pytest.mark.parametrize("args, bf16_base", [([], True), (["--train-base-weights", "fp32"], False)])
def test_a_float32_trainer_keeps_the_base_in_bf16_unless_told_fp32(tmp_path, monkeypatch, args, bf16_base):
    """On a CPU training in float32 (held to AVX2 here) the job keeps the frozen base in bf16 and widens it layer by
    layer, says so in its events, and trains to a usable model; `serve --train-base-weights fp32`
    (LOCALAPI_TRAIN_BASE_WEIGHTS) keeps it in float32 (issue 17)."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # models.cpu_supports_bf16() answers no: the trainer uses fp32
    srv = Server(tmp_path / "work", free_port(), args=args).start()
    try:
        client = srv.client(timeout=120.0)
        train = upload(client, write_chat_jsonl(tmp_path / "t.jsonl", 10))
        job = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, seed=3,
                                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                                 "n_epochs": 1, "batch_size": 5}}})
        job, _ = wait_for(client, job.id, lambda j: j.status in TERMINAL)
        assert job.status == "succeeded", (job.error, srv.log()[-3000:])
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert any(m.startswith("the base model's weights are kept in bf16") for m in messages) == bf16_base, messages
        assert any("fp32 on cpu" in m for m in messages), messages
        reply = client.chat.completions.create(model=job.fine_tuned_model, messages=CHAT, max_tokens=4)
        assert reply.choices[0].message.content is not None
    finally:
        srv.stop()
