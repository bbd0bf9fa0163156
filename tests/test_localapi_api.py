"""The local API's files, auth, errors, models and fault mode, driven through the official SDK against a real server."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import httpx
import openai
import pytest

from tests.localapi_support import KEY, Server, chat_line, free_port, write_chat_jsonl

MAX_UPLOAD = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("localapi-api") / "work", free_port(), ["--max-upload-bytes", str(MAX_UPLOAD)])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def error_body(exc: openai.APIStatusError) -> dict:
    """The `error` object of an SDK exception, checked to have OpenAI's four keys."""
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# ---- auth ---------------------------------------------------------------------------------------
def test_health_is_open_but_api_needs_the_key(server):
    assert httpx.get(server.base_url.replace("/v1", "/health"), timeout=5).json() == {"status": "ok"}
    r = httpx.get(server.base_url + "/models", timeout=5)
    assert r.status_code == 401
    assert "didn't provide an API key" in r.json()["error"]["message"]


def test_wrong_key_is_401(server):
    bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    err = error_body(info.value)
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):  # uploads too, without storing anything
        bad.files.create(file=("a.jsonl", b"{}\n"), purpose="fine-tune")


def test_every_response_has_a_request_id(server, client):
    auth = {"Authorization": f"Bearer {KEY}"}
    responses = [httpx.get(server.base_url.replace("/v1", "/health"), timeout=5),  # open route
                 httpx.get(server.base_url + "/models", timeout=5),  # 401
                 httpx.get(server.base_url + "/models", headers=auth, timeout=5),  # 200
                 httpx.get(server.base_url + "/nowhere", headers=auth, timeout=5),  # 404
                 httpx.post(server.base_url + "/fine_tuning/jobs", headers=auth, json={}, timeout=5)]  # 400
    ids = [r.headers.get("x-request-id") for r in responses]
    assert [r.status_code for r in responses] == [200, 401, 200, 404, 400]
    assert all(i and i.startswith("req_") for i in ids) and len(set(ids)) == len(ids)
    assert client.models.with_raw_response.list().request_id.startswith("req_")  # what the SDK reads


# ---- files --------------------------------------------------------------------------------------
def test_upload_wait_list_content_delete(client, tmp_path):
    path = write_chat_jsonl(tmp_path / "train.jsonl", 3)
    first = client.files.create(file=path, purpose="fine-tune")
    assert first.id.startswith("file-") and first.filename == "train.jsonl"
    assert first.bytes == path.stat().st_size and first.purpose == "fine-tune"
    done = client.files.wait_for_processing(first.id, poll_interval=0.1, max_wait_seconds=120)
    assert done.status == "processed"
    second = client.files.create(file=("valid.jsonl", chat_line("问", "答").encode() + b"\n"), purpose="fine-tune")
    other = client.files.create(file=("notes.jsonl", b'{"x": 1}\n'), purpose="batch")

    assert client.files.content(first.id).content == path.read_bytes()
    ids = [f.id for f in client.files.list(purpose="fine-tune")]
    assert ids.index(second.id) < ids.index(first.id)  # newest first by default
    assert other.id not in ids
    asc = [f.id for f in client.files.list(order="asc") if f.id in {first.id, second.id}]
    assert asc == [first.id, second.id]

    page = client.files.list(limit=1, order="asc")
    assert len(page.data) == 1 and page.has_more is True
    raw = client.files.with_raw_response.list(limit=1, order="asc").http_response.json()
    assert raw["object"] == "list" and raw["first_id"] == raw["last_id"] == page.data[0].id
    walked = [f.id for f in client.files.list(limit=1, order="asc")]  # auto-pagination via `after`
    assert walked[:2] == asc[:2] or set(asc) <= set(walked)

    deleted = client.files.delete(second.id)
    assert deleted.deleted is True and deleted.id == second.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(second.id)


def test_path_traversal_filename_is_cut_to_its_last_component(server, client):
    outside = server.work_dir.parent
    f = client.files.create(file=("../../evil.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
    assert f.filename == "evil.jsonl"
    g = client.files.create(file=("..\\..\\windows.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
    assert g.filename == "windows.jsonl"
    assert not (outside / "evil.jsonl").exists() and not (server.work_dir / "evil.jsonl").exists()
    stored = sorted(p.name for p in (server.work_dir / "localapi" / "files").iterdir())
    assert f.id in stored and g.id in stored and all(name.startswith("file-") for name in stored)
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("..", b'{"a": 1}\n'), purpose="fine-tune")
    assert error_body(info.value)["param"] == "file"


def test_oversized_upload_is_refused_and_leaves_nothing(server, client):
    before = {f.id for f in client.files.list()}
    big = b"x" * (MAX_UPLOAD * 3)
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert info.value.status_code == 413
    err = error_body(info.value)
    assert err["code"] == "file_too_large" and str(MAX_UPLOAD) in err["message"]
    assert {f.id for f in client.files.list()} == before
    assert not [p for p in (server.work_dir / "localapi" / "files").iterdir() if p.name.startswith(".upload")]


def test_upload_bad_requests_are_400(server, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="nonsense")
    assert error_body(info.value)["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.txt", b"{}\n"), purpose="fine-tune")
    assert ".jsonl" in error_body(info.value)["message"]
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("empty.jsonl", b""), purpose="fine-tune")
    r = httpx.post(server.base_url + "/files", headers={"Authorization": f"Bearer {KEY}"},
                   files={"x": ("a.jsonl", io.BytesIO(b"{}"))}, data={"purpose": "fine-tune"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(server.base_url + "/files", headers={"Authorization": f"Bearer {KEY}"}, json={"purpose": "fine-tune"},
                   timeout=10)
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


# ---- 404 and 400 ------------------------------------------------------------------------------------
def test_unknown_ids_are_404(server, client):
    for call in (lambda: client.files.retrieve("file-nope"), lambda: client.files.delete("file-nope"),
                 lambda: client.fine_tuning.jobs.retrieve("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.cancel("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.list_events("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.checkpoints.list("ftjob-nope"),
                 lambda: client.models.retrieve("ft:tiny-test:local::nope"),
                 lambda: client.models.delete("no-such-model")):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert "nope" in error_body(info.value)["message"] or "no-such-model" in error_body(info.value)["message"]
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert error_body(info.value)["code"] == "model_not_found"
    r = httpx.get(server.base_url + "/no/such/route", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/no/such/route)"


def test_job_requests_are_checked(client, tmp_path):
    train = client.files.create(file=write_chat_jsonl(tmp_path / "t.jsonl", 2), purpose="fine-tune")
    batch = client.files.create(file=("b.jsonl", b'{"a": 1}\n'), purpose="batch")
    cases = [
        (dict(model="gpt-4o-mini", training_file=train.id), "model"),
        (dict(model="tiny-test", training_file="file-missing"), "training_file"),
        (dict(model="tiny-test", training_file=train.id, validation_file=batch.id), "validation_file"),
        (dict(model="tiny-test", training_file=train.id, method={"type": "supervised", "supervised": {
            "hyperparameters": {"n_epochs": 0}}}), "method.supervised.hyperparameters.n_epochs"),
        (dict(model="tiny-test", training_file=train.id, method={"type": "reinforcement"}), "method.type"),
        (dict(model="tiny-test", training_file=train.id, method={"type": "dpo", "dpo": {
            "hyperparameters": {"beta": 2.5}}}), "method.dpo.hyperparameters.beta"),
        (dict(model="tiny-test", training_file=train.id, method={"type": "dpo", "supervised": {}}), "method.supervised"),
        (dict(model="tiny-test", training_file=train.id, method={"type": "supervised"},
              hyperparameters={"n_epochs": 2}), "hyperparameters"),
        (dict(model="tiny-test", training_file=train.id, suffix="x" * 65), "suffix"),
        (dict(model="tiny-test", training_file=train.id, metadata={f"k{i}": "v" for i in range(17)}), "metadata"),
        (dict(model="tiny-test", training_file=train.id, hyperparameters={"batch_size": "big"}),
         "hyperparameters.batch_size"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.fine_tuning.jobs.create(**kwargs)
        assert error_body(info.value)["param"] is not None
        assert error_body(info.value)["param"].startswith(param), (kwargs, error_body(info.value))
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tiny-test", training_file=train.id, extra_body={"bogus": 1})
    assert error_body(info.value)["message"] == "Unrecognized request argument supplied: bogus"
    assert not client.fine_tuning.jobs.list().data  # nothing was created by refused requests


def test_chat_requests_are_checked(client):
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        (dict(messages=[]), "messages"),
        (dict(messages=msgs, temperature=3), "temperature"),
        (dict(messages=msgs, n=99), "n"),
        (dict(messages=msgs, top_p=0), "top_p"),
        (dict(messages=msgs, max_tokens=0), "max_tokens"),
        (dict(messages=msgs, stop=["a", "b", "c", "d", "e"]), "stop"),
        (dict(messages=msgs, frequency_penalty=2.5), "frequency_penalty"),
        (dict(messages=msgs, presence_penalty=-3), "presence_penalty"),
        (dict(messages=msgs, logit_bias={"abc": 1}), "logit_bias"),
        (dict(messages=msgs, logit_bias={"5": 101}), "logit_bias"),
        (dict(messages=[{"role": "wizard", "content": "hi"}]), "messages.[0].role"),
        (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
         "messages.[0].content"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="tiny-test", **kwargs)
        assert error_body(info.value)["param"] == param, kwargs


def test_malformed_json_is_400(server):
    r = httpx.post(server.base_url + "/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "parse the JSON body" in r.json()["error"]["message"]
    r = httpx.post(server.base_url + "/fine_tuning/jobs", json={"model": "tiny-test"},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"


# ---- models -------------------------------------------------------------------------------------
def test_models_list_and_get(client):
    ids = [m.id for m in client.models.list()]
    assert {"smollm2-135m-instruct", "tiny-test", "qwen2.5-coder-0.5b-instruct"} <= set(ids)
    tiny = client.models.retrieve("tiny-test")
    assert tiny.object == "model" and tiny.id == "tiny-test" and tiny.created > 0
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("tiny-test")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_speaks_to_the_server(server):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", server.base_url + "/models", "-H", f"Authorization: Bearer {KEY}"],
                         capture_output=True, text=True, check=True, timeout=180).stdout
    assert {"tiny-test"} <= {m["id"] for m in json.loads(out)["data"]}
    code = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", server.base_url + "/models"],
                          capture_output=True, text=True, timeout=180).stdout
    assert code == "401"


# ---- fault mode -----------------------------------------------------------------------------------
def _statuses(srv: Server, n: int) -> list[int]:
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as http:
        out = []
        for _ in range(n):
            r = http.get(srv.base_url + "/models")
            if r.status_code == 429:
                assert float(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after-ms"]) > 0
            if r.status_code != 200:
                assert r.json()["error"]["type"] in {"requests", "server_error"}
            out.append(r.status_code)
        return out


def test_fault_mode_is_seeded_and_the_sdk_gets_through(tmp_path):
    args = ["--faults", "0.5", "--fault-seed", "7", "--fault-slow", "0.2"]
    srv = Server(tmp_path / "work", free_port(), args).start()
    try:
        first = _statuses(srv, 40)
        assert {429, 500} <= set(first) and first.count(200) >= 10
    finally:
        srv.stop()
    again = Server(tmp_path / "work2", free_port(), args).start()
    try:
        assert _statuses(again, 40) == first  # same seed, same faults
        client = again.client(max_retries=10)
        uploaded = client.files.create(file=("t.jsonl", chat_line("问", "答").encode() + b"\n"), purpose="fine-tune")
        for _ in range(3):
            assert client.files.retrieve(uploaded.id).id == uploaded.id
        assert len(client.files.list().data) == 1  # retries never duplicate an upload
        job = client.fine_tuning.jobs.create(model="tiny-test", training_file=uploaded.id)  # 1 example: fails validation
        assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]  # ... nor a job
    finally:
        again.stop()


def test_usage_reports_the_prompt_tokens_a_cached_prefix_saved(client):
    system = {"role": "system", "content": "你是一名耐心、严谨的全科医生，在线回答患者的健康咨询。先分析原因，再给出建议。"}
    first = client.chat.completions.create(model="tiny-test", max_tokens=2, temperature=0,
                                           messages=[system, {"role": "user", "content": "头痛怎么办？"}])
    again = client.chat.completions.create(model="tiny-test", max_tokens=2, temperature=0,
                                           messages=[system, {"role": "user", "content": "失眠多梦怎么办？"}])
    stream = client.chat.completions.create(model="tiny-test", max_tokens=2, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[system, {"role": "user", "content": "胃疼吃什么？"}])
    streamed = list(stream)[-1].usage
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    for usage in (again.usage, streamed):
        cached = usage.prompt_tokens_details.cached_tokens
        assert 32 <= cached < usage.prompt_tokens  # the system prompt, not the question
