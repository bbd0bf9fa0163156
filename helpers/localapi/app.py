"""The HTTP API of the local server: OpenAI's files, fine-tuning, models and chat endpoints under `/v1`.

Built with FastAPI; `create_app(settings)` returns the ASGI app and `__main__.py` runs it with uvicorn.
Every request needs `Authorization: Bearer <key>` except `GET /health`. Errors use OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`. Two endpoints outside OpenAI's API, for the helpers:
`GET /local/info` (work folder, pid, version) and `POST /local/shutdown`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from helpers.localapi import schemas, toolcalls
from helpers.localapi.engine import Engine
from helpers.localapi.errors import APIError, bad_request, not_found, unauthorized
from helpers.localapi.faults import FaultMiddleware, FaultSettings
from helpers.localapi.jobs import ACTIVE, JobManager
from helpers.localapi.storage import Storage, new_id, now
from helpers.localapi.uploads import discard, parse_upload, safe_filename

log = logging.getLogger("helpers.localapi")

VERSION = "1.0"
UPLOAD_PURPOSES = {"fine-tune", "assistants", "batch", "vision", "user_data", "evals"}
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # OpenAI's per-file limit
MAX_SUFFIX = 64
MAX_N = 8


@dataclass
class ServerSettings:
    """Everything the app needs to know about its environment."""

    work_dir: Path
    api_key: str = field(repr=False)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    faults: FaultSettings = field(default_factory=FaultSettings)
    default_max_tokens: int = 512  # when a chat request sets no limit
    model_cache: Path | None = None  # converted base models; default <work_dir>/localapi/models
    request_shutdown: Callable[[], None] | None = None

    @property
    def root(self) -> Path:
        """`<work_dir>/localapi`: the database, blobs, adapters and model cache."""
        return self.work_dir / "localapi"


class AuthMiddleware:
    """ASGI middleware: 401 in OpenAI's shape unless the bearer key matches (only /health is open)."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        error = None
        if not auth:
            error = unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization "
                                 "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). The local server's "
                                 "key is in LOCALAPI_KEY or in the work folder (localapi/api_key).")
        else:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                error = unauthorized("Incorrect API key provided. The local server's key is in LOCALAPI_KEY or in "
                                     "the work folder (localapi/api_key).", code="invalid_api_key")
        if error is None:
            await self.app(scope, receive, send)
            return
        while True:  # read the body so the client gets our answer, not a reset connection
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await error.response()(scope, receive, send)


def create_app(settings: ServerSettings) -> FastAPI:
    """The FastAPI app of the local server (storage, job manager and engine start with it)."""
    storage = Storage(settings.root, settings.model_cache)
    engine = Engine(storage)
    manager = JobManager(storage)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        engine.warm_up()
        log.info("local API ready: work folder %s", settings.work_dir)
        try:
            yield
        finally:
            manager.close()
            storage.close()

    app = FastAPI(title="微调实战 local OpenAI-compatible API", version=VERSION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.storage, app.state.manager, app.state.engine, app.state.settings = storage, manager, engine, settings

    # ---- errors ------------------------------------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return request_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return not_found(f"Invalid URL ({request.method} {request.url.path})").response()
        if exc.status_code == 405:
            return APIError(405, f"Method not allowed ({request.method} {request.url.path})").response()
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return APIError(500, f"The local server had an error while processing your request: {type(exc).__name__}: "
                             f"{exc}. See server.log in its work folder.", type_="server_error").response()

    # ---- service endpoints -------------------------------------------------------------------------
    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/local/info")
    def info() -> dict:
        return {"object": "local.info", "version": VERSION, "pid": os.getpid(), "work_dir": str(settings.work_dir),
                "max_upload_bytes": settings.max_upload_bytes, "faults": {"rate": settings.faults.rate,
                "seed": settings.faults.seed, "latency": settings.faults.latency},
                "training": manager.training()}

    @app.post("/local/shutdown")
    def shutdown() -> dict:
        if settings.request_shutdown is None:
            raise APIError(501, "This server was not started by `python -m helpers.localapi serve`.")
        settings.request_shutdown()
        return {"object": "local.shutdown", "stopping": True}

    # ---- files -------------------------------------------------------------------------------------
    @app.post("/v1/files")
    async def create_file(request: Request) -> dict:
        content_type = request.headers.get("content-type", "")
        up = await parse_upload(request.stream(), content_type, storage.files_dir, settings.max_upload_bytes)
        try:
            purpose = up.fields.get("purpose", "").strip()
            if up.tmp_path is None:
                raise bad_request("Missing required parameter: 'file'.", param="file")
            if not purpose:
                raise bad_request("Missing required parameter: 'purpose'.", param="purpose")
            if purpose not in UPLOAD_PURPOSES:
                raise bad_request(f"'{purpose}' is not one of {sorted(UPLOAD_PURPOSES)} - 'purpose'", param="purpose")
            filename = safe_filename(up.filename or "")
            if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
                raise bad_request(f"Invalid file format for Fine-Tuning API. Must be .jsonl (got {filename!r}).",
                                  param="file")
            if up.size == 0:
                raise bad_request("File is empty.", param="file")
            file_id = new_id("file-", 22)
            os.replace(up.tmp_path, storage.blob_path(file_id))
            up.tmp_path = None
            row = storage.add_file({"id": file_id, "created_at": now(), "bytes": up.size, "filename": filename,
                                    "purpose": purpose, "status": "processed", "status_details": None,
                                    "sha256": up.sha256})
            return schemas.file_object(row)
        finally:
            discard(up)

    @app.get("/v1/files")
    def list_files(purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc") -> dict:
        if not 1 <= limit <= 10000:
            raise bad_request("limit must be between 1 and 10000.", param="limit")
        if order not in ("asc", "desc"):
            raise bad_request(f"'{order}' is not one of ['asc', 'desc'] - 'order'", param="order")
        got = storage.list_files(purpose=purpose, after=after, limit=limit, desc=order == "desc")
        if got is None:
            raise bad_request(f"No such File object: {after} (the 'after' cursor).", param="after")
        rows, more = got
        return schemas.page([schemas.file_object(r) for r in rows], more)

    def get_file_row(file_id: str) -> dict:
        row = storage.get_file(file_id)
        if row is None:
            raise not_found(f"No such File object: {file_id}", param="id")
        return row

    @app.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> dict:
        return schemas.file_object(get_file_row(file_id))

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str) -> FileResponse:
        row = get_file_row(file_id)
        media = "text/csv" if row["filename"].endswith(".csv") else "application/octet-stream"
        return FileResponse(storage.blob_path(file_id), media_type=media, filename=row["filename"])

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> dict:
        get_file_row(file_id)
        storage.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # ---- fine-tuning jobs --------------------------------------------------------------------------
    @app.post("/v1/fine_tuning/jobs")
    def create_job(body: schemas.JobCreate) -> dict:
        row = new_job_row(body, storage, engine)
        storage.add_job(row)
        storage.add_event(row["id"], f"Created fine-tuning job: {row['id']}")
        manager.submit(row["id"])
        return schemas.job_object(storage.get_job(row["id"]))

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict:
        check_limit(limit)
        metadata, null_only = metadata_filter(request)
        got = (storage.list_jobs_null_metadata(after=after, limit=limit) if null_only
               else storage.list_jobs(metadata=metadata, after=after, limit=limit))
        if got is None:
            raise bad_request(f"Could not find fine-tuning job {after} (the 'after' cursor).", param="after")
        rows, more = got
        return schemas.page([schemas.job_object(r) for r in rows], more)

    def get_job_row(job_id: str) -> dict:
        row = storage.get_job(job_id)
        if row is None:
            raise not_found(f"Could not find fine-tuning job {job_id}.", param="fine_tuning_job_id",
                            code="fine_tuning_job_not_found")
        return row

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str) -> dict:
        return schemas.job_object(get_job_row(job_id))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict:
        row = get_job_row(job_id)
        if row["status"] not in ACTIVE:
            raise bad_request(f"Job {job_id} has already {row['status']} and cannot be cancelled.",
                              param="fine_tuning_job_id")
        manager.cancel(job_id)
        return schemas.job_object(get_job_row(job_id))

    def job_page(job_id: str, after: str | None, limit: int, lister: Callable[..., Any], to_object: Callable[[Any], dict], what: str) -> dict:
        """One page of a job's events or checkpoints, newest first, continuing after the `after` cursor."""
        check_limit(limit)
        get_job_row(job_id)
        got = lister(job_id, after=after, limit=limit)
        if got is None:
            raise bad_request(f"No such {what} {after} for job {job_id} (the 'after' cursor).", param="after")
        rows, more = got
        return schemas.page([to_object(r) for r in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(job_id: str, after: str | None = None, limit: int = 20) -> dict:
        return job_page(job_id, after, limit, storage.list_events, schemas.event_object, "event")

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(job_id: str, after: str | None = None, limit: int = 10) -> dict:
        return job_page(job_id, after, limit, storage.list_checkpoints, schemas.checkpoint_object, "checkpoint")

    # ---- models ------------------------------------------------------------------------------------
    @app.get("/v1/models")
    def list_models() -> dict:
        return {"object": "list", "data": engine.list_models()}

    @app.get("/v1/models/{model_id:path}")
    def retrieve_model(model_id: str) -> dict:
        return engine.resolve(model_id).object()

    @app.delete("/v1/models/{model_id:path}")
    def delete_model(model_id: str) -> dict:
        resolved = engine.resolve(model_id)
        if resolved.kind == "base":
            raise APIError(403, f"The model '{model_id}' is a base model of the local server and cannot be deleted; "
                                "only fine-tuned models can.", type_="invalid_request_error", param="model",
                           code="model_not_deletable")
        engine.delete(resolved)
        return {"id": model_id, "object": "model", "deleted": True}

    # ---- chat --------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(body: schemas.ChatCreate):
        params = chat_params(body, settings)
        resolved = engine.resolve(body.model)
        messages = [flatten_message(m, i) for i, m in enumerate(body.messages)]
        completion_id = "chatcmpl-" + new_id("", 29)
        created = now()
        if not body.stream:
            choices = await run_in_threadpool(engine.complete, resolved, messages, params)
            return chat_completion_object(completion_id, created, body.model, choices, params.get("tools"))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # start the generation before answering, so a bad request still gets a proper error status
        pieces = await run_in_threadpool(engine.stream, resolved, messages, params)
        return StreamingResponse(sse_chunks(completion_id, created, body.model, pieces, include_usage, params["n"]),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})

    app.add_middleware(FaultMiddleware, settings=settings.faults)
    app.add_middleware(AuthMiddleware, api_key=settings.api_key)
    return app


# ---- request helpers ----------------------------------------------------------------------------------
def request_error(errors: list[dict]) -> APIError:
    """A pydantic validation failure as OpenAI's 400."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return bad_request("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                           "using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param=param)
    return bad_request(f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param,
                       code="invalid_value")


def check_limit(limit: int) -> None:
    """`limit` of a list endpoint must lie in 1..100."""
    if not 1 <= limit <= 100:
        raise bad_request("limit must be between 1 and 100.", param="limit")


def metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """`metadata[k]=v` query pairs (the SDK's deep-object form), and whether `metadata=null` was sent."""
    pairs = {}
    null_only = False
    for key, value in request.query_params.multi_items():
        m = re.fullmatch(r"metadata\[(.+)\]", key)
        if m:
            pairs[m.group(1)] = value
        elif key == "metadata" and value == "null":
            null_only = True
    if null_only and pairs:
        raise bad_request("Use either metadata=null or metadata[key]=value filters, not both.", param="metadata")
    return pairs, null_only


def check_metadata(metadata: dict[str, str] | None) -> None:
    """OpenAI's metadata limits: 16 pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return
    if len(metadata) > 16:
        raise bad_request("metadata may have at most 16 key-value pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad_request(f"metadata key {key[:70]!r} is longer than 64 characters.", param="metadata")
        if len(value) > 512:
            raise bad_request(f"metadata value of {key!r} is longer than 512 characters.", param="metadata")


def check_hyperparameters(hp: schemas.Hyperparameters, where: str) -> dict:
    """Range checks of supervised hyperparameters; returns them as a dict ("auto" kept)."""
    if hp.n_epochs != "auto" and not 1 <= hp.n_epochs <= 50:
        raise bad_request(f"{where}.n_epochs must be 'auto' or between 1 and 50.", param=f"{where}.n_epochs")
    if hp.batch_size != "auto" and not 1 <= hp.batch_size <= 256:
        raise bad_request(f"{where}.batch_size must be 'auto' or between 1 and 256.", param=f"{where}.batch_size")
    if hp.learning_rate_multiplier != "auto" and not 0 < hp.learning_rate_multiplier <= 10:
        raise bad_request(f"{where}.learning_rate_multiplier must be 'auto' or in (0, 10].",
                          param=f"{where}.learning_rate_multiplier")
    return {"n_epochs": hp.n_epochs, "batch_size": hp.batch_size, "learning_rate_multiplier": hp.learning_rate_multiplier}


def new_job_row(body: schemas.JobCreate, storage: Storage, engine: Engine) -> dict:
    """Validate a job request against what the server has; the new row in `validating_files`."""
    if body.model not in engine.base_model_ids() and storage.get_model(body.model) is None:  # ft: models continue training
        raise bad_request(f"Model {body.model} is not available for fine-tuning on the local server; use one of: "
                          f"{', '.join(engine.base_model_ids())}, or a fine-tuned model or checkpoint of this server.",
                          param="model", code="model_not_available")
    for param in ("training_file", "validation_file"):
        file_id = getattr(body, param)
        if file_id is None:
            continue
        row = storage.get_file(file_id)
        if row is None:
            raise bad_request(f"invalid {param}: {file_id} (no such file)", param=param, code="invalid_file_id")
        if row["purpose"] != "fine-tune":
            raise bad_request(f"File {file_id} has purpose '{row['purpose']}'; fine-tuning needs purpose 'fine-tune'.",
                              param=param, code="invalid_file_purpose")
    if body.suffix is not None and (len(body.suffix) > MAX_SUFFIX or not re.fullmatch(r"[A-Za-z0-9_.\-]*", body.suffix)):
        raise bad_request(f"suffix must be at most {MAX_SUFFIX} characters of letters, digits, '-', '_' and '.'.",
                          param="suffix")
    check_metadata(body.metadata)
    if body.integrations:
        raise bad_request("Integrations (e.g. wandb) are not supported by the local server.", param="integrations")
    if body.method is not None and body.hyperparameters is not None:
        raise bad_request("Specify hyperparameters inside 'method' only; the top-level 'hyperparameters' is deprecated "
                          "and cannot be combined with 'method'.", param="hyperparameters")
    hp = schemas.Hyperparameters()
    where = "hyperparameters"
    if body.method is not None:
        if body.method.type != "supervised":
            raise bad_request(f"Fine-tuning method '{body.method.type}' is not supported by the local server; use "
                              "'supervised'.", param="method.type")
        where = "method.supervised.hyperparameters"
        if body.method.supervised is not None and body.method.supervised.hyperparameters is not None:
            hp = body.method.supervised.hyperparameters
    elif body.hyperparameters is not None:
        hp = body.hyperparameters
    hyper = check_hyperparameters(hp, where)
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return {"id": new_id("ftjob-"), "created_at": now(), "model": body.model, "training_file": body.training_file,
            "validation_file": body.validation_file, "suffix": body.suffix, "seed": seed, "metadata": body.metadata,
            "hyperparameters": hyper, "status": "validating_files", "result_files": []}


def flatten_message(message: schemas.ChatMessage, index: int) -> dict:
    """A chat message as {role, content: str} (plus tool calls / tool_call_id); text parts are joined, others refused."""
    role = message.role
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise bad_request(f"Invalid value: '{role}'. Supported roles on the local server are 'system', 'developer', "
                          "'user', 'assistant' and 'tool'.", param=f"messages.[{index}].role", code="invalid_value")
    try:
        tool_fields = toolcalls.request_message(message.model_dump(), index)
    except ValueError as exc:
        raise bad_request(f"{exc}.", param=f"messages.[{index}]") from None
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"Only text content parts are supported by the local server "
                                  f"(messages[{index}] has type {part.get('type')!r}).",
                                  param=f"messages.[{index}].content")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None and "tool_calls" not in tool_fields:
        raise bad_request(f"messages[{index}].content is required.", param=f"messages.[{index}].content")
    return {"role": "system" if role == "developer" else role, "content": content, **tool_fields}


def chat_params(body: schemas.ChatCreate, settings: ServerSettings) -> dict:
    """The sampling parameters of a chat request, checked as OpenAI checks them."""
    if not body.messages:
        raise bad_request("[] is too short - 'messages'", param="messages")
    n = 1 if body.n is None else body.n
    if not 1 <= n <= MAX_N:
        raise bad_request(f"n must be between 1 and {MAX_N} on the local server.", param="n")
    temperature = 1.0 if body.temperature is None else body.temperature
    if not 0 <= temperature <= 2:
        raise bad_request(f"{temperature} is not in [0, 2] - 'temperature'", param="temperature")
    top_p = 1.0 if body.top_p is None else body.top_p
    if not 0 < top_p <= 1:
        raise bad_request(f"{top_p} is not in (0, 1] - 'top_p'", param="top_p")
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if limit is not None and limit < 1:
        raise bad_request(f"max_tokens must be at least 1 (got {limit}).", param="max_tokens")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise bad_request("stop may hold at most 4 sequences.", param="stop")
    try:
        tools = toolcalls.request_tools(body.tools, body.tool_choice)
    except ValueError as exc:
        raise bad_request(f"Invalid 'tools': {exc}.", param="tools") from None
    if tools and body.stream:
        raise bad_request("Streaming with tools is not supported by the local server; use stream=false.", param="stream")
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("logprobs must be true when top_logprobs is set.", param="logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= 20:
        raise bad_request(f"{body.top_logprobs} is not in [0, 20] - 'top_logprobs'", param="top_logprobs")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise bad_request("Only response_format type 'text' is supported by the local server.", param="response_format")
    return {"max_tokens": limit or settings.default_max_tokens, "temperature": temperature, "top_p": top_p,
            "seed": body.seed, "stop": [s for s in stop if s], "n": n, "tools": tools,
            "top_logprobs": (body.top_logprobs or 0) if body.logprobs else None}


def chat_completion_object(completion_id: str, created: int, model: str, choices: list, tools: list | None = None) -> dict:
    """The `chat.completion` object for finished choices (tool calls parsed when the request had tools)."""
    prompt_tokens = choices[0].usage.prompt_tokens if choices else 0
    completion_tokens = sum(c.usage.completion_tokens for c in choices)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": i, **dict(zip(("message", "finish_reason"), toolcalls.assistant_message(c.text, c.finish_reason, tools))),
                     "logprobs": logprobs_object(c.logprobs)} for i, c in enumerate(choices)],
        "usage": usage_object(prompt_tokens, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_local",
    }


def logprobs_object(entries: list | None) -> dict | None:
    """OpenAI's `logprobs` of a choice or chunk: {"content": [...], "refusal": None}, or None when not asked for."""
    return None if entries is None else {"content": entries, "refusal": None}


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's usage block."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def sse_chunks(completion_id: str, created: int, model: str, pieces: Iterator[dict], include_usage: bool,
               n: int) -> Iterator[bytes]:
    """Server-sent events in OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`."""

    def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
        obj = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "service_tier": "default", "system_fingerprint": "fp_local", "choices": choices}
        if include_usage:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

    for i in range(n):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}])
    prompt_tokens, completion_tokens = 0, 0
    try:
        for piece in pieces:
            i = piece.get("index", 0)
            if piece.get("text"):
                yield chunk([{"index": i, "delta": {"content": piece["text"]}, "logprobs": logprobs_object(piece.get("logprobs")),
                              "finish_reason": None}])
            if piece.get("finish_reason"):
                rest = piece.get("logprobs") or None  # entries of tokens whose text was cut by a stop string
                yield chunk([{"index": i, "delta": {}, "logprobs": logprobs_object(rest), "finish_reason": piece["finish_reason"]}])
                prompt_tokens = piece.get("prompt_tokens", prompt_tokens)
                completion_tokens += piece.get("completion_tokens", 0)
    except Exception as exc:  # the SDK raises an APIError for an `error` event in the stream
        log.exception("generation failed while streaming")
        err = {"error": {"message": f"Generation failed: {type(exc).__name__}: {exc}", "type": "server_error",
                         "param": None, "code": None}}
        yield b"data: " + json.dumps(err).encode() + b"\n\n"
        return
    if include_usage:
        yield chunk([], usage_object(prompt_tokens, completion_tokens))
    yield b"data: [DONE]\n\n"
