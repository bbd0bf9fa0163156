"""Request bodies (pydantic) and response objects, shaped like OpenAI's API reference."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

ORGANIZATION_ID = "org-local"
OWNER = "user-local"

Auto = Literal["auto"]


class Strict(BaseModel):
    """A request body that rejects unknown fields (OpenAI answers 400 'Unrecognized request argument')."""

    model_config = ConfigDict(extra="forbid")


class Hyperparameters(Strict):
    """Supervised hyperparameters; "auto" resolves when the job starts."""

    n_epochs: Union[Auto, int] = Field("auto")
    batch_size: Union[Auto, int] = Field("auto")
    learning_rate_multiplier: Union[Auto, float] = Field("auto")


class SupervisedMethod(Strict):
    """`method.supervised`."""

    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    """DPO hyperparameters: the supervised ones and `beta` (OpenAI: a number in (0, 2], or "auto")."""

    beta: Union[Auto, float] = Field("auto")


class DpoMethod(Strict):
    """`method.dpo`."""

    hyperparameters: DpoHyperparameters | None = None


class Method(Strict):
    """`method`: `supervised` and `dpo` are implemented by the local server (`reinforcement` is not)."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict | None = None


class JobCreate(Strict):
    """POST /v1/fine_tuning/jobs."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    integrations: list[dict] | None = None


class StreamOptions(Strict):
    """`stream_options`."""

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatMessage(BaseModel):
    """One message; `content` is a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict], None] = None
    name: str | None = None


class ChatCreate(Strict):
    """POST /v1/chat/completions. Sampling knobs the local engine cannot honour are accepted and ignored
    only when they are at their neutral value (see app.py)."""

    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None


class ResponseCreate(Strict):
    """POST /v1/responses: every field of OpenAI's request, so that those the local server does not support get a
    400 naming them (responses.py) rather than 'Unrecognized request argument'."""

    model: str
    input: Union[str, list[Any], None] = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    stream_options: dict | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    prompt: Any = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: Any = None
    reasoning: dict | None = None
    safety_identifier: str | None = None
    user: str | None = None
    service_tier: str | None = None
    text: dict | None = None
    tool_choice: Any = None
    tools: list[dict] | None = None
    top_logprobs: int | None = None
    truncation: str | None = None
    context_management: Any = None
    moderation: Any = None
    image: Any = None
    access_programs: Any = None


class InputTokensCount(Strict):
    """POST /v1/responses/input_tokens: every field of OpenAI's request (responses.py refuses those it cannot count)."""

    model: str | None = None
    input: Union[str, list[Any], None] = None
    instructions: str | None = None
    conversation: Any = None
    previous_response_id: str | None = None
    parallel_tool_calls: bool | None = None
    personality: str | None = None
    reasoning: dict | None = None
    text: dict | None = None
    tool_choice: Any = None
    tools: list[dict] | None = None
    truncation: str | None = None

# ---- response objects -------------------------------------------------------------------
def page(data: list[dict], has_more: bool) -> dict:
    """OpenAI's cursor page: object list, data, first_id, last_id, has_more."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def file_object(row: dict) -> dict:
    """The `file` object."""
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "expires_at": None,
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": row["status"],
        "status_details": row["status_details"],
    }


def job_object(row: dict) -> dict:
    """The `fine_tuning.job` object; a DPO job's hyperparameters are in `method.dpo` only (top level null, as on OpenAI)."""
    hp = dict(row["hyperparameters"])
    method = row.get("method") or "supervised"
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "error": row["error"],
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": row["finished_at"],
        "hyperparameters": hp if method == "supervised" else None,
        "method": {"type": method, method: {"hyperparameters": dict(hp)}},
        "model": row["model"],
        "organization_id": ORGANIZATION_ID,
        "result_files": row["result_files"],
        "seed": row["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "estimated_finish": row["estimated_finish"] if row["status"] == "running" else None,
        "integrations": [],
        "metadata": row["metadata"],
        "user_provided_suffix": row["suffix"],
        "usage_metrics": None,
        "shared_with_openai": False,
        "eval_id": None,
    }


def event_object(row: dict) -> dict:
    """The `fine_tuning.job.event` object."""
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "data": row["data"] if row["data"] is not None else {},
        "type": row["type"],
    }


def checkpoint_object(row: dict) -> dict:
    """The `fine_tuning.job.checkpoint` object."""
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": row["model_id"],
        "fine_tuning_job_id": row["job_id"],
        "metrics": row["metrics"],
        "step_number": row["step_number"],
    }


def model_object(model_id: str, created: int, owned_by: str) -> dict:
    """The `model` object."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
