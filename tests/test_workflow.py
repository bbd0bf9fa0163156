"""Client-side logic of helpers.workflow against a scripted HTTP transport (the real server is tested in test_course.py).

The transport below answers the few OpenAI endpoints the workflow uses, from in-memory lists, so
each test can set up the exact situation it checks (a lost upload answer, a failed job, events on
several pages) without starting the server.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import httpx
import openai
import pytest

from helpers import workflow
from helpers.config import load_config


class FakeAPI:
    """Just enough of the files and fine-tuning endpoints, with hooks to inject failures."""

    def __init__(self) -> None:
        self.files: list[dict] = []
        self.jobs: list[dict] = []
        self.events: dict[str, list[dict]] = {}
        self.fail_next: list[int] = []  # status codes to answer the next POSTs with (after doing the work)
        self.posts = 0
        self.clock = 1_700_000_000

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        self.clock += 1
        if request.method == "POST":
            self.posts += 1
        if request.method == "POST" and path == "/files":
            body = request.read()
            name = body.split(b'filename="')[1].split(b'"')[0].decode()
            content = body.split(b"\r\n\r\n", 2)[-1].rsplit(b"\r\n--", 1)[0]
            f = {"id": f"file-{len(self.files)}abcdef", "object": "file", "bytes": len(content), "created_at": self.clock,
                 "filename": name, "purpose": "fine-tune", "status": "processed"}
            self.files.append(f)
            return self._answer(f)
        if request.method == "GET" and path == "/files":
            return httpx.Response(200, json={"object": "list", "data": self.files, "has_more": False})
        if request.method == "GET" and path.startswith("/files/") and path.endswith("/content"):
            return httpx.Response(200, content=self.content)
        if request.method == "GET" and path.startswith("/files/"):
            return httpx.Response(200, json=next(f for f in self.files if f["id"] == path.split("/")[2]))
        if request.method == "POST" and path == "/fine_tuning/jobs":
            body = json.loads(request.read())
            job = {"id": f"ftjob-{len(self.jobs)}abcdef", "object": "fine_tuning.job", "created_at": self.clock,
                   "model": body["model"], "training_file": body["training_file"], "validation_file": body.get("validation_file"),
                   "metadata": body.get("metadata"), "status": "queued", "hyperparameters": {}, "organization_id": "org",
                   "result_files": [], "seed": body.get("seed", 0), "fine_tuned_model": None, "error": None}
            self.jobs.append(job)
            return self._answer(job)
        if request.method == "GET" and path == "/fine_tuning/jobs":
            return httpx.Response(200, json={"object": "list", "data": self.jobs[::-1], "has_more": False})
        if request.method == "GET" and path.endswith("/events"):
            return self._events(path.split("/")[3], request.url.params)
        if request.method == "GET" and path.startswith("/fine_tuning/jobs/"):
            job = next(j for j in self.jobs if j["id"] == path.split("/")[3])
            if job.get("script"):
                job.update(job["script"].pop(0))
            return httpx.Response(200, json=job)
        return httpx.Response(404, json={"error": {"message": f"no route {request.method} {path}"}})

    def _answer(self, obj: dict) -> httpx.Response:
        if self.fail_next:
            return httpx.Response(self.fail_next.pop(0), json={"error": {"message": "injected"}})
        return httpx.Response(200, json=obj)

    def _events(self, job_id: str, params: httpx.QueryParams) -> httpx.Response:
        events = self.events.get(job_id, [])[::-1]  # newest first, like OpenAI
        limit = int(params.get("limit", 20))
        start = next((i + 1 for i, e in enumerate(events) if e["id"] == params.get("after")), 0)
        page = events[start : start + limit]
        return httpx.Response(200, json={"object": "list", "data": page, "has_more": start + limit < len(events)})

    def add_event(self, job_id: str, message: str, data: dict | None = None) -> None:
        events = self.events.setdefault(job_id, [])
        events.append({"id": f"ftevent-{job_id}-{len(events)}", "object": "fine_tuning.job.event", "created_at": self.clock,
                       "level": "info", "message": message, "type": "metrics" if data else "message", "data": data})


@pytest.fixture()
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture()
def client(api: FakeAPI) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=5,
                         http_client=httpx.Client(transport=httpx.MockTransport(api.handler)))


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ["OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "FINETUNE_NEW_JOB", "FINETUNE_CONFIRM"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setattr(workflow.time, "sleep", lambda s: None)
    return load_config(env_file=tmp_path / "no.env")


def _jsonl(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_upload_is_reused_by_content_hash(api, client, cfg, tmp_path) -> None:
    path = _jsonl(tmp_path, "train.jsonl", '{"messages": []}\n')
    first = workflow.upload_file(client, cfg, path)
    second = workflow.upload_file(client, cfg, path)
    assert (first.reused, second.reused) == (False, True)
    assert second.file_id == first.file_id and len(api.files) == 1
    assert first.filename == f"train-{first.sha256[:12]}.jsonl"
    path.write_text('{"messages": [1]}\n', encoding="utf-8")  # new content: a new upload
    assert workflow.upload_file(client, cfg, path).file_id != first.file_id and len(api.files) == 2


def test_upload_found_by_hashed_name_when_state_is_lost(api, client, cfg, tmp_path) -> None:
    path = _jsonl(tmp_path, "valid.jsonl", "x\n")
    first = workflow.upload_file(client, cfg, path)
    (cfg.work_dir / workflow.STATE_FILE).unlink()
    assert workflow.upload_file(client, cfg, path).file_id == first.file_id and len(api.files) == 1


def test_upload_whose_answer_was_lost_is_not_sent_twice(api, client, cfg, tmp_path) -> None:
    api.fail_next = [500]  # the server stores the file, then the answer is an error
    up = workflow.upload_file(client, cfg, _jsonl(tmp_path, "train.jsonl", "y\n"))
    assert len(api.files) == 1 and up.file_id == api.files[0]["id"]


def _plan(cfg, client, tmp_path, **kw) -> workflow.JobPlan:
    train = workflow.upload_file(client, cfg, _jsonl(tmp_path, "train.jsonl", "t\n"))
    valid = workflow.upload_file(client, cfg, _jsonl(tmp_path, "valid.jsonl", "v\n"))
    return workflow.plan_job(cfg, train, valid, **kw)


def test_job_identity_depends_on_data_and_parameters(api, client, cfg, tmp_path) -> None:
    a, b = _plan(cfg, client, tmp_path), _plan(cfg, client, tmp_path)
    assert a.run_id == b.run_id
    assert _plan(cfg, client, tmp_path, n_epochs=7).run_id != a.run_id
    assert a.create_kwargs()["method"]["supervised"]["hyperparameters"]["n_epochs"] == cfg.n_epochs
    assert all(len(v) <= 512 for v in a.metadata.values())


def test_job_is_reused_unless_failed_or_flag_set(api, client, cfg, tmp_path) -> None:
    plan = _plan(cfg, client, tmp_path)
    first = workflow.find_or_create_job(client, cfg, plan)
    again = workflow.find_or_create_job(client, cfg, plan)
    assert (first.reused, again.reused, again.job.id, len(api.jobs)) == (False, True, first.job.id, 1)
    api.jobs[0]["status"] = "failed"
    retry = workflow.find_or_create_job(client, cfg, plan)
    assert not retry.reused and len(api.jobs) == 2
    forced = workflow.find_or_create_job(client, dataclasses.replace(cfg, allow_new_job=True), plan)
    assert not forced.reused and len(api.jobs) == 3


def test_job_whose_answer_was_lost_is_not_created_twice(api, client, cfg, tmp_path) -> None:
    plan = _plan(cfg, client, tmp_path)
    api.fail_next = [500]
    launched = workflow.find_or_create_job(client, cfg, plan)
    assert len(api.jobs) == 1 and launched.job.id == api.jobs[0]["id"]


def test_remote_job_needs_confirmation(api, client, cfg, tmp_path) -> None:
    remote = dataclasses.replace(cfg, backend="remote")
    plan = _plan(remote, client, tmp_path)
    with pytest.raises(workflow.CostNotConfirmed, match="FINETUNE_CONFIRM=1"):
        workflow.find_or_create_job(client, remote, plan, estimate_usd=1.5, ask=lambda q: "no")
    assert api.jobs == []
    asked = []
    workflow.find_or_create_job(client, remote, plan, estimate_usd=1.5, ask=lambda q: asked.append(q) or "yes")
    assert "$1.50" in asked[0] and len(api.jobs) == 1


def test_remote_job_refused_headless_without_flag(cfg, monkeypatch) -> None:
    remote = dataclasses.replace(cfg, backend="remote")
    monkeypatch.setattr(workflow, "_stdin_available", lambda: False)
    with pytest.raises(workflow.CostNotConfirmed, match="无法询问你"):
        workflow.confirm_cost(remote, 2.0)
    workflow.confirm_cost(dataclasses.replace(remote, confirm_cost=True), 2.0)  # the headless flag


def test_poll_prints_each_event_once_across_pages_and_stops_on_success(api, client, cfg, tmp_path) -> None:
    job = workflow.find_or_create_job(client, cfg, _plan(cfg, client, tmp_path)).job
    jid = job.id
    for i in range(5):
        api.add_event(jid, f"early {i}")
    script = [{"status": "validating_files"}, {"status": "running"}, {"status": "running"},
              {"status": "succeeded", "fine_tuned_model": "ft:m:local:huatuo:abc", "trained_tokens": 99}]
    api.jobs[0]["script"] = script

    def more_events() -> None:
        for i in range(3):
            api.add_event(jid, f"Step {i + 1}/3", {"step": i + 1, "total_steps": 3, "train_loss": 1.0})

    lines: list[str] = []
    orig = api.handler

    def handler(request):  # new events arrive while the job runs
        if request.url.path.endswith(jid) and len(script) == 2:
            more_events()
        return orig(request)

    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=5,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    final = workflow.poll_job(client, jid, interval=0, print_fn=lines.append, page_size=2)  # several pages per poll
    messages = [line.split("] ", 1)[1] for line in lines if "] " in line]
    assert messages == [f"early {i}" for i in range(5)] + ["Step 1/3", "Step 2/3", "Step 3/3"]
    assert final.status == "succeeded"
    assert "进度：validating_files，还没有训练步" in lines
    assert any(line.startswith("进度：succeeded，第 3/3 步（100%）") for line in lines)


def test_plain_progress_prints_status_changes_and_tenths() -> None:
    lines: list[str] = []
    progress = workflow.PlainProgress(lines.append)
    progress.update("queued", None, None)
    progress.update("queued", None, None)
    for step in range(1, 101):
        progress.update("running", step, 100)
    assert lines[0] == "进度：queued，还没有训练步"
    assert len(lines) == 1 + 11  # steps 1 (status change), 10, 20, ..., 100


@pytest.mark.parametrize("status, error, exc, text", [
    ("failed", {"code": "invalid_training_file", "message": "line 3: no assistant message"}, workflow.JobFailed,
     "invalid_training_file: line 3: no assistant message"),
    ("cancelled", None, workflow.JobCancelled, "was cancelled"),
])
def test_poll_stops_clearly_on_failed_or_cancelled(api, client, cfg, tmp_path, status, error, exc, text) -> None:
    job = workflow.find_or_create_job(client, cfg, _plan(cfg, client, tmp_path)).job
    api.jobs[0]["script"] = [{"status": "running"}, {"status": status, "error": error}]
    with pytest.raises(exc, match=text):
        workflow.poll_job(client, job.id, interval=0, print_fn=lambda s: None)


def test_poll_times_out_with_advice(api, client, cfg, tmp_path) -> None:
    job = workflow.find_or_create_job(client, cfg, _plan(cfg, client, tmp_path)).job
    with pytest.raises(workflow.PollTimeout, match="re-run this cell"):
        workflow.poll_job(client, job.id, timeout=-1, interval=0, print_fn=lambda s: None)


def test_result_csv_plain_or_base64() -> None:
    csv = "step,train_loss,valid_loss\n1,2.5,\n2,2.0,2.1\n"
    assert workflow.decode_result_bytes(csv.encode()) == csv
    assert workflow.decode_result_bytes(base64.b64encode(csv.encode())) == csv
    with pytest.raises(workflow.WorkflowError, match="neither CSV nor base64"):
        workflow.decode_result_bytes("<html>oops</html>".encode())


def test_download_results_saves_csv(api, client, cfg, tmp_path) -> None:
    csv = "step,train_loss,train_accuracy\n1,2.5,0.1\n2,2.0,0.2\n"
    api.content = base64.b64encode(csv.encode())
    job = workflow.find_or_create_job(client, cfg, _plan(cfg, client, tmp_path)).job
    job.result_files = ["file-res"]
    frame = workflow.download_results(client, cfg, job)
    assert list(frame["train_loss"]) == [2.5, 2.0]
    assert (cfg.work_dir / workflow.RESULTS_CSV).read_text(encoding="utf-8") == csv


def test_fine_tuned_model_stored_for_notebook_07(api, client, cfg, tmp_path) -> None:
    with pytest.raises(workflow.WorkflowError, match="run notebook 06 first"):
        workflow.load_fine_tuned_model(cfg)
    job = workflow.find_or_create_job(client, cfg, _plan(cfg, client, tmp_path)).job
    job.fine_tuned_model, job.trained_tokens = "ft:tiny-test:local:huatuo:abc", 1234
    workflow.store_fine_tuned_model(cfg, job)
    assert workflow.load_fine_tuned_model(cfg) == "ft:tiny-test:local:huatuo:abc"
    assert workflow.current_job(client, cfg).id == job.id


def test_find_or_create_here_as_notebook_04_writes_it(api, client, cfg, tmp_path) -> None:
    """The notebook's own cell: find_upload, else files.create through create_once (lost answer looked up), record_upload."""
    path = _jsonl(tmp_path, "train.jsonl", '{"messages": []}\n')
    assert workflow.find_upload(client, cfg, path) is None
    api.fail_next = [500]  # the server stores the file, then the answer is lost
    f = workflow.create_once(client, lambda client: client.files.create(file=(workflow.upload_name(path), path.read_bytes(),
                             "application/jsonl"), purpose="fine-tune"),
                             find=lambda: workflow.find_upload(client, cfg, path), what="uploading train.jsonl")
    up = workflow.record_upload(cfg, path, f, reused=False)
    assert len(api.files) == 1 and up.file_id == api.files[0]["id"] and up.filename == workflow.upload_name(path)
    assert workflow.find_upload(client, cfg, path).id == up.file_id  # the second run finds it


def test_create_once_gives_up_with_advice(api, client, cfg) -> None:
    def always_down(c):
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1/files"))

    with pytest.raises(workflow.WorkflowError, match="上传 x失败了 3 次.*请重新运行这一格"):
        workflow.create_once(client, always_down, find=lambda: None, what="上传 x", retries=2)


def test_job_find_or_create_here_as_notebook_05_writes_it(api, client, cfg, tmp_path) -> None:
    job_plan = _plan(cfg, client, tmp_path)
    plan = job_plan.create_kwargs()
    lookup = workflow.find_job(client, cfg, job_plan)
    assert lookup.job is None and lookup.existing == []
    api.fail_next = [502]
    job = workflow.create_once(client, lambda client: client.fine_tuning.jobs.create(**plan),
                               find=lambda: workflow.find_new_job(client, lookup), what="creating the job")
    workflow.record_job(cfg, job, job_plan.run_id)
    assert len(api.jobs) == 1 and job.id == api.jobs[0]["id"] and workflow.recorded_job_id(cfg) == job.id
    assert workflow.find_job(client, cfg, job_plan).job.id == job.id
    assert workflow.find_job(client, dataclasses.replace(cfg, allow_new_job=True), job_plan).job is None


def _event(step: int, total: int = 75, level: str = "info", **data):
    return type("E", (), {"type": "metrics", "level": level, "data": {"step": step, "total_steps": total, **data}})()


def test_log_shows_every_fifth_step_and_every_validation_and_warning() -> None:
    shown = [s for s in range(1, 76) if workflow.event_worth_printing(_event(s), 5)]
    assert shown == [1] + list(range(5, 76, 5))
    assert workflow.event_worth_printing(_event(13, valid_loss=1.9), 5)
    assert workflow.event_worth_printing(_event(13, level="warn"), 5)
    message = type("E", (), {"type": "message", "level": "info", "data": None})()
    assert workflow.event_worth_printing(message, 5)
    assert all(workflow.event_worth_printing(_event(s), 1) for s in range(1, 76))


def test_full_validation_merged_from_checkpoints_and_summarised(capsys) -> None:
    import pandas as pd

    results = pd.DataFrame({"step": [1, 2, 3, 4], "train_loss": [2.0, 1.5, 1.25, 1.0], "valid_loss": [None, 1.9, None, 1.7]})
    checkpoints = pd.DataFrame({"step": [2, 4], "model": ["m:ckpt-step-2", "m:ckpt-step-4"], "full_valid_loss": [1.8, 1.6],
                                "full_valid_mean_token_accuracy": [0.5, 0.6]})
    merged = workflow.with_full_validation(results, checkpoints)
    assert list(merged["full_valid_loss"].fillna(-1)) == [-1, 1.8, -1, 1.6]
    assert list(merged["valid_loss"].fillna(-1)) == [-1, 1.9, -1, 1.7]  # the batch loss is kept apart
    assert "full_valid_loss" not in results.columns
    summary = workflow.training_summary(merged)
    assert (summary.first_train_loss, summary.last_train_loss, summary.full_valid_loss) == (2.0, 1.0, [(2, 1.8), (4, 1.6)])
    out = capsys.readouterr().out
    assert "第 1 步 2.000 → 第 4 步 1.000（最后 5 步平均 1.438）" in out
    assert "第 1 轮末（第 2 步）1.800，第 2 轮末（第 4 步）1.600" in out
    assert workflow.best_checkpoint(checkpoints)["model"] == "m:ckpt-step-4"


def test_the_base_models_validation_loss_starts_the_curve_at_step_0(capsys) -> None:
    import pandas as pd

    event = lambda text, data=None: type("E", (), {"message": text, "data": data})()  # noqa: E731
    events = [event("Step 1/4: training loss=2.0", {"step": 1, "train_loss": 2.0}),
              event("validation loss before training: 2.3150 (token accuracy 0.281)",
                    {"step": 0, "full_valid_loss": 2.315, "full_valid_mean_token_accuracy": 0.281})]
    before = workflow.base_validation(events)
    assert before == (2.315, 0.281) and workflow.base_validation(events[:1]) is None  # OpenAI sends no such event
    assert workflow.base_validation([event("validation loss before training: 2.3150 (token accuracy 0.281)")]) is None
    results = pd.DataFrame({"step": [1, 2], "train_loss": [2.0, 1.5]})
    checkpoints = pd.DataFrame({"step": [2], "model": ["m:ckpt-step-2"], "full_valid_loss": [1.8],
                                "full_valid_mean_token_accuracy": [0.5]})
    merged = workflow.with_full_validation(results, checkpoints, before)
    assert list(merged["step"]) == [0, 1, 2] and merged["full_valid_loss"].iloc[0] == 2.315
    summary = workflow.training_summary(merged)
    assert summary.first_step == 1 and summary.full_valid_loss == [(0, 2.315), (2, 1.8)]
    assert "完整验证集损失：训练前（第 0 步）2.315，第 1 轮末（第 2 步）1.800" in capsys.readouterr().out


def test_training_curves_draw_full_and_batch_validation_apart() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from helpers.fonts import setup_cjk_font
    from helpers.plots import plot_training_curves

    setup_cjk_font()
    results = pd.DataFrame({"step": [1, 2, 3, 4], "train_loss": [2.0, 1.5, 1.25, 1.0], "valid_loss": [None, 1.9, None, 1.7],
                            "full_valid_loss": [None, 1.8, None, 1.6], "train_accuracy": [0.1, 0.2, 0.3, 0.4]})
    fig = plot_training_curves(results)
    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in loss_ax.get_lines()}
    assert lines == {"训练损失（每步一个批次）": [2.0, 1.5, 1.25, 1.0], "批次验证损失（一个批次）": [1.9, 1.7],
                     "完整验证集损失（训练前和每轮末）": [1.8, 1.6]}
    assert loss_ax.get_xlabel() == "训练步" and loss_ax.get_ylabel() == "损失" and fig._suptitle.get_text() == "微调作业：损失与词元准确率"
    assert [line.get_label() for line in acc_ax.get_lines()] == ["训练词元准确率"]
