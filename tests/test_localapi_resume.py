"""A job survives interruptions (tiny model, real training): the server killed with SIGKILL after the first
checkpoint, the training worker killed, and pause -> server restart -> resume. Each time the job ends
`succeeded`, its result file has every planned step exactly once, its events say "resumed from step N" once,
and its losses are those of an uninterrupted run with the same seed (measured difference: 0, see
benchmarks/README.md "Resume")."""

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

from tests.localapi_support import KEY, Server, free_port, write_chat_jsonl, write_preference_jsonl
from tests.test_localapi_jobs import _gone, upload, wait_for

pytestmark = pytest.mark.slow  # four tiny-model jobs, minutes: `make test` (and CI) runs them, `make test-fast` does not

N_EXAMPLES, BATCH, EPOCHS, SEED = 16, 2, 4, 5
STEPS = N_EXAMPLES // BATCH * EPOCHS  # 32; a checkpoint every 8
HP = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": EPOCHS, "batch_size": BATCH}}}
DPO = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": EPOCHS, "batch_size": BATCH, "learning_rate_multiplier": 5}}}
TOLERANCE = 0.0  # |final train loss, resumed - uninterrupted|, measured (bf16 autocast on AMD EPYC, fp32 elsewhere)


def result_rows(client: openai.OpenAI, job) -> list[dict]:
    """The rows of a job's result file, decoded as the Cookbook decodes it."""
    text = base64.b64decode(client.files.content(job.result_files[0]).read()).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def start_job(client: openai.OpenAI, tmp_path, method: dict = HP) -> str:
    """Upload the training file and create the job every test runs (a preference file for a DPO job)."""
    write = write_preference_jsonl if method["type"] == "dpo" else write_chat_jsonl
    train = upload(client, write(tmp_path / "train.jsonl", N_EXAMPLES))
    return client.fine_tuning.jobs.create(model="tiny-test", training_file=train, seed=SEED, method=method).id


def wait_first_checkpoint(client: openai.OpenAI, job_id: str, count: int = 1) -> None:
    """Until the job has its first (or `count`-th) checkpoint; it must still be training (the test interrupts it next)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if len(client.fine_tuning.jobs.checkpoints.list(job_id).data) >= count:
            job = client.fine_tuning.jobs.retrieve(job_id)
            assert job.status == "running", f"the job ended ({job.status}) before it could be interrupted"
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint within 240 s")


def worker_pid(srv: Server) -> int:
    """The pid of the training worker, from /local/info."""
    info = httpx.get(srv.base_url.replace("/v1", "/local/info"), headers={"Authorization": f"Bearer {KEY}"},
                     timeout=10).json()
    assert info["training"], "no job is training"
    return int(info["training"]["pid"])


def check_finished(client: openai.OpenAI, job_id: str, reference: list[dict], resumes: int = 1) -> int:
    """The job succeeded with every step once, `resumes` resume events, the reference's losses; the last resumed step."""
    job, _ = wait_for(client, job_id, lambda j: j.status in {"succeeded", "failed", "cancelled"}, timeout=300)
    assert job.status == "succeeded", job.error
    rows = result_rows(client, job)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
    resumed = [m for m in messages if "resumed from step" in m]
    assert len(resumed) == resumes, resumed
    assert abs(float(rows[-1]["train_loss"]) - float(reference[-1]["train_loss"])) <= TOLERANCE
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in reference]
    metrics = [e for e in client.fine_tuning.jobs.list_events(job_id, limit=100) if e.type == "metrics"]
    assert sorted(e.data["step"] for e in metrics) == list(range(1, STEPS + 1))  # no step reported twice
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id).data]
    assert sorted(steps) == list(range(STEPS // EPOCHS, STEPS + 1, STEPS // EPOCHS))
    return int(resumed[0].rsplit(" ", 1)[-1])  # events come newest first: the last resume


def uninterrupted_rows(tmp, method: dict) -> list[dict]:
    """The result rows of the job run without interruption."""
    srv = Server(tmp / "work", free_port()).start()
    try:
        client = srv.client(timeout=60.0)
        job_id = start_job(client, tmp, method)
        job, _ = wait_for(client, job_id, lambda j: j.status in {"succeeded", "failed", "cancelled"}, timeout=300)
        assert job.status == "succeeded", job.error
        rows = result_rows(client, job)
        assert len(rows) == STEPS
        return rows
    finally:
        srv.stop()


def kill_server_with_its_worker(srv: Server) -> None:
    """SIGKILL the server mid-job and check that its training worker dies with it (then start it again yourself)."""
    worker = worker_pid(srv)
    srv.stop(signal.SIGKILL)
    assert _gone(worker, 60), "the training worker outlived its server"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    """The result rows of the same job run without interruption."""
    return uninterrupted_rows(tmp_path_factory.mktemp("resume-reference"), HP)


def test_server_killed_after_a_checkpoint_resumes(tmp_path, reference):
    srv = Server(tmp_path / "work", free_port()).start()
    try:
        client = srv.client(timeout=60.0)
        job_id = start_job(client, tmp_path)
        wait_first_checkpoint(client, job_id)
        kill_server_with_its_worker(srv)
    finally:
        srv.stop(signal.SIGKILL)
    srv.start()
    try:
        client = srv.client(timeout=60.0)
        assert client.fine_tuning.jobs.retrieve(job_id).status in {"queued", "running"}
        assert check_finished(client, job_id, reference) >= STEPS // EPOCHS
    finally:
        srv.stop()


def test_worker_killed_is_retried_from_its_saved_state(tmp_path, reference):
    srv = Server(tmp_path / "work", free_port()).start()
    try:
        client = srv.client(timeout=60.0)
        job_id = start_job(client, tmp_path)
        wait_first_checkpoint(client, job_id)
        os.kill(worker_pid(srv), signal.SIGKILL)
        assert check_finished(client, job_id, reference) >= STEPS // EPOCHS
        events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
        assert any("killed by SIGKILL" in m and "retrying" in m for m in events)
    finally:
        srv.stop()


def test_pause_survives_a_restart_and_resume_finishes(tmp_path, reference):
    srv = Server(tmp_path / "work", free_port()).start()
    try:
        client = srv.client(timeout=60.0)
        job_id = start_job(client, tmp_path)
        wait_first_checkpoint(client, job_id)
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.resume(job_id)  # only a paused job resumes
        assert client.fine_tuning.jobs.pause(job_id).status == "paused"
        wait_for(client, job_id, lambda j: httpx.get(srv.base_url.replace("/v1", "/local/info"), timeout=10,
                 headers={"Authorization": f"Bearer {KEY}"}).json()["training"] is None, timeout=60)
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.pause(job_id)  # already paused
    finally:
        srv.stop()
    srv.start()
    try:
        client = srv.client(timeout=60.0)
        time.sleep(1.0)  # the scheduler has run once: a paused job stays paused
        assert client.fine_tuning.jobs.retrieve(job_id).status == "paused"
        assert client.fine_tuning.jobs.resume(job_id).status == "queued"
        assert check_finished(client, job_id, reference) >= STEPS // EPOCHS
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.pause(job_id)  # a finished job cannot be paused
    finally:
        srv.stop()


def test_dpo_job_paused_resumed_then_killed_ends_with_the_uninterrupted_numbers(tmp_path, tmp_path_factory):
    """A DPO job pauses and resumes, then survives its server's SIGKILL: its reference log-probabilities come back
    from the saved state, so every step's loss is the uninterrupted run's (the first one ln 2)."""
    import math

    reference = uninterrupted_rows(tmp_path_factory.mktemp("dpo-reference"), DPO)
    assert abs(float(reference[0]["train_loss"]) - math.log(2)) < 1e-3 and "train_reward_margin" in reference[0]
    srv = Server(tmp_path / "work", free_port()).start()
    try:
        client = srv.client(timeout=60.0)
        job_id = start_job(client, tmp_path, DPO)
        wait_first_checkpoint(client, job_id)
        assert client.fine_tuning.jobs.pause(job_id).status == "paused"
        wait_for(client, job_id, lambda j: httpx.get(srv.base_url.replace("/v1", "/local/info"), timeout=10,
                 headers={"Authorization": f"Bearer {KEY}"}).json()["training"] is None, timeout=60)
        assert client.fine_tuning.jobs.resume(job_id).status == "queued"
        wait_first_checkpoint(client, job_id, count=2)
        kill_server_with_its_worker(srv)
    finally:
        srv.stop(signal.SIGKILL)
    srv.start()
    try:
        client = srv.client(timeout=60.0)
        assert check_finished(client, job_id, reference, resumes=2) >= 2 * STEPS // EPOCHS
    finally:
        srv.stop()
