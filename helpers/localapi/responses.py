"""The Responses API (`POST /v1/responses`) on the local engine: OpenAI's `response` object and its streamed events.

The router (`routers/responses.py`) parses the body and calls `prepare`: the sampling parameters and the output
limit are checked by chat.py's own functions (`sampling`, `output_limit`), then the model is looked up, then the
fields this server does not support are refused, each with a 400 naming it (`param`), and `instructions` and `input`
become the chat messages the model's template renders. Generation is the chat path's: `engine.complete` /
`engine.stream`, the same generator, queue and limits. `response_object` shapes a finished answer (status
"incomplete" with reason "max_output_tokens" when the limit cut it, as OpenAI does); `sse_events` streams OpenAI's
semantic events (`response.created` ... `response.completed`, each with its `sequence_number`).
`POST /v1/responses/input_tokens` (`count_request`) counts the prompt those messages render to with the model's own
tokenizer, without generating (notebook 07 sizes its answers' token budget with it).

Not supported (400): stored responses (`store: true`, `previous_response_id`, `conversation`, `background`;
`GET /v1/responses/{id}` answers 404), tools of any kind (function calling is on `/v1/chat/completions`),
`reasoning`, `include`, `top_logprobs`, `prompt` templates, structured output (`text.format` other than "text"),
`truncation: "auto"`, and input items other than messages with text content.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from helpers.localapi import chat, schemas
from helpers.localapi.errors import APIError, bad_request, not_found

MIN_OUTPUT_TOKENS = 16  # OpenAI refuses max_output_tokens below 16
ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")  # output_text: an earlier assistant answer passed back as input


@dataclass
class ResponsesRequest:
    """A checked Responses request: the chat messages and sampling parameters for the engine, and what the
    `response` object repeats of the request."""

    model: str
    resolved: Any  # engine.ResolvedModel
    messages: list[dict]
    params: dict[str, Any]
    stream: bool
    echo: dict[str, Any] = field(default_factory=dict)


def prepare(body: schemas.ResponseCreate, default_max_tokens: int, resolve: Callable[[str], Any]) -> ResponsesRequest:
    """Check a Responses request (parameters, then the model, then the features it asks for and its input)."""
    temperature, top_p = chat.sampling(body.temperature, body.top_p)
    limit = chat.output_limit(body.max_output_tokens, "max_output_tokens", default_max_tokens, MIN_OUTPUT_TOKENS)
    if not has_input(body.input):
        raise bad_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    resolved = resolve(body.model)
    refuse_unsupported(body)
    messages = request_messages(body.instructions, body.input)
    params = {**limit, "temperature": temperature, "top_p": top_p, "seed": None, "stop": [], "n": 1,
              "tools": None, "forced": None, "top_logprobs": None}
    echo = {"instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": temperature, "top_p": top_p, "metadata": body.metadata or {},
            "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
            "max_tool_calls": body.max_tool_calls, "prompt_cache_key": body.prompt_cache_key,
            "safety_identifier": body.safety_identifier, "user": body.user,
            "tool_choice": body.tool_choice or "auto"}
    return ResponsesRequest(body.model, resolved, messages, params, bool(body.stream), echo)


def count_request(body: schemas.InputTokensCount, resolve: Callable[[str], Any]) -> tuple[Any, list[dict]]:
    """Check a token-count request (`/v1/responses/input_tokens`): the model whose tokenizer counts, and the chat
    messages whose rendered prompt is counted (the same messages `prepare` would give the model)."""
    if not body.model:
        raise bad_request("Missing required parameter: 'model' (the local server counts with the model's own tokenizer).",
                          param="model", code="missing_required_parameter")
    if not has_input(body.input) and not body.instructions:
        raise bad_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    resolved = resolve(body.model)
    refuse_unsupported(body)
    return resolved, request_messages(body.instructions, body.input)


def input_tokens_object(count: int) -> dict:
    """OpenAI's answer to `/v1/responses/input_tokens`."""
    return {"object": "response.input_tokens", "input_tokens": count}


def refuse_unsupported(body: schemas.ResponseCreate | schemas.InputTokensCount) -> None:
    """A 400 naming the first field that asks for something the local server does not do (a field the request type
    lacks counts as unset)."""
    def field(name: str) -> Any:
        return getattr(body, name, None)

    stored = "the local server does not store responses"
    text = field("text") or {}
    checks: list[tuple[str, bool, str]] = [
        ("store", field("store") is True, f"{stored}; leave store unset or false"),
        ("previous_response_id", field("previous_response_id") is not None,
         f"{stored}, so it cannot continue one; send the earlier turns in 'input'"),
        ("conversation", field("conversation") is not None, f"{stored} or conversations; send the turns in 'input'"),
        ("background", bool(field("background")), "background responses are not supported by the local server"),
        ("prompt", field("prompt") is not None, "stored prompt templates are not supported by the local server"),
        ("tools", bool(field("tools")), "tools (built-in or function) are not supported on /v1/responses by the local "
                                        "server; function calling works on /v1/chat/completions"),
        ("tool_choice", field("tool_choice") not in (None, "auto", "none"),
         "'tool_choice' is only allowed when 'tools' are specified"),
        ("include", bool(field("include")), "the local server returns no extra output data ('include')"),
        ("reasoning", bool(field("reasoning")), "the local models are not reasoning models"),
        ("personality", field("personality") is not None, "the local models have no personality presets"),
        ("top_logprobs", bool(field("top_logprobs")), "logprobs are supported on /v1/chat/completions only"),
        ("truncation", field("truncation") not in (None, "disabled"),
         "only truncation 'disabled' is supported: an input longer than the context is an error"),
        ("text.format", (text.get("format") or {}).get("type", "text") != "text",
         "only text output is supported by the local server (no structured output)"),
        ("text.verbosity", text.get("verbosity") not in (None, "medium"),
         "the local models have one verbosity ('medium')"),
        ("context_management", field("context_management") is not None, "not supported by the local server"),
        ("moderation", field("moderation") is not None, "not supported by the local server"),
        ("image", field("image") is not None, "not supported by the local server"),
        ("prompt_cache_options", field("prompt_cache_options") is not None,
         "prompt caching is automatic on the local server"),
    ]
    for param, refused, why in checks:
        if refused:
            raise bad_request(f"Unsupported parameter: '{param}': {why}.", param=param, code="unsupported_parameter")


def has_input(raw: str | list[Any] | None) -> bool:
    """Whether a request's `input` holds anything (None, "" and [] do not)."""
    return raw not in (None, "", [])


def request_messages(instructions: str | None, raw: str | list[Any] | None) -> list[dict]:
    """The chat messages a Responses request gives the model: `instructions` as the system message, then `input`."""
    return ([{"role": "system", "content": instructions}] if instructions else []) + \
        (input_messages(raw) if has_input(raw) else [])


def input_messages(raw: str | list[Any]) -> list[dict]:
    """`input` as chat messages: a string is one user message; a list holds messages (EasyInputMessage or type
    "message") whose content is a string or text parts."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad_request(f"Invalid type for 'input[{i}]': expected an object, but got "
                              f"{type(item).__name__} instead.", param=f"input[{i}]", code="invalid_type")
        kind = item.get("type", "message")
        if kind != "message":
            raise bad_request(f"Input items of type '{kind}' are not supported by the local server: only messages "
                              "with text content.", param=f"input[{i}].type", code="invalid_value")
        role = item.get("role")
        if role not in ROLES:
            raise bad_request(f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system' and "
                              "'developer'.", param=f"input[{i}].role", code="invalid_value")
        messages.append({"role": "system" if role == "developer" else role, "content": message_text(item, i)})
    return messages


def message_text(item: dict, index: int) -> str:
    """The text of one input message: its string content, or its text parts joined; other parts are refused."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"Missing required parameter: 'input[{index}].content'.", param=f"input[{index}].content",
                          code="missing_required_parameter")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise bad_request(f"Only text content parts ('input_text') are supported by the local server "
                              f"(input[{index}].content[{j}] has type {kind!r}).",
                              param=f"input[{index}].content[{j}].type", code="invalid_value")
        texts.append(part["text"])
    return "".join(texts)


def input_error(exc: APIError) -> APIError:
    """An engine error about the prompt, naming `input` (the chat path's name for it is `messages`)."""
    if exc.param == "messages":
        exc.param = "input"
    return exc


def not_stored(response_id: str) -> APIError:
    """404 for a stored response: the local server stores none."""
    return not_found(f"Response with id '{response_id}' not found. The local server does not store responses.",
                     param="response_id")


def new_id(prefix: str) -> str:
    """An id in OpenAI's form for Responses objects (`resp_…`, `msg_…`: 50 hex digits)."""
    return prefix + secrets.token_hex(25)


def usage_object(prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> dict:
    """The Responses API's usage block (cached_tokens: prompt tokens the generator's prefix cache saved)."""
    return {"input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output_tokens}


def text_part(text: str) -> dict:
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(message_id: str, text: str | None, status: str) -> dict:
    """The assistant `message` output item (no content while it is in progress)."""
    return {"id": message_id, "type": "message", "status": status, "role": "assistant",
            "content": [] if text is None else [text_part(text)]}


def response_object(request: ResponsesRequest, response_id: str, created: int, *, status: str,
                    output: list[dict] | None = None, usage: dict | None = None, error: dict | None = None) -> dict:
    """OpenAI's `response` object (status in_progress, completed, incomplete or failed)."""
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status, "background": False,
        "completed_at": int(time.time()) if status == "completed" else None, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": request.model, "output": output or [], "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": False,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tools": [], "top_logprobs": 0,
        "truncation": "disabled", "usage": usage, **request.echo,
    }


def finished(request: ResponsesRequest, response_id: str, message_id: str, created: int, text: str,
             finish_reason: str, usage: dict) -> dict:
    """The `response` object of a finished answer: "incomplete" when the output limit cut it."""
    status = "incomplete" if finish_reason == "length" else "completed"
    return response_object(request, response_id, created, status=status,
                           output=[message_item(message_id, text, status)], usage=usage)


def completed_response(request: ResponsesRequest, response_id: str, message_id: str, created: int, choice: Any) -> dict:
    """The `response` object for the engine's finished choice (generate.Choice)."""
    usage = usage_object(choice.usage.prompt_tokens, choice.usage.completion_tokens, choice.usage.cached_tokens)
    return finished(request, response_id, message_id, created, choice.text, choice.finish_reason, usage)


def sse_events(request: ResponsesRequest, response_id: str, message_id: str, created: int,
               pieces: Iterator[dict]) -> Iterator[bytes]:
    """OpenAI's streamed Responses events, as server-sent events `event: TYPE` / `data: {...}`, numbered by
    `sequence_number`: created, in_progress, output_item.added, content_part.added, output_text.delta per piece,
    output_text.done, content_part.done, output_item.done, then completed (or incomplete); a generation failure
    is an `error` event followed by response.failed."""
    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        body = {"type": kind, **fields, "sequence_number": next(sequence)}
        return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n".encode("utf-8")

    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    started = response_object(request, response_id, created, status="in_progress")
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    yield event("response.output_item.added", output_index=0, item=message_item(message_id, None, "in_progress"))
    yield event("response.content_part.added", **where, part=text_part(""))
    text, last = "", {}
    try:
        for piece in pieces:
            if piece.get("text"):
                text += piece["text"]
                yield event("response.output_text.delta", **where, delta=piece["text"], logprobs=[])
            if piece.get("finish_reason"):
                last = piece
    except Exception as exc:  # the answer began: report the failure in the stream, as OpenAI does
        message = chat.stream_failure(exc)
        yield event("error", code="server_error", message=message, param=None)
        failed = response_object(request, response_id, created, status="failed",
                                 error={"code": "server_error", "message": message})
        yield event("response.failed", response=failed)
        return
    usage = usage_object(last.get("prompt_tokens", 0), last.get("completion_tokens", 0), last.get("cached_tokens", 0))
    done = finished(request, response_id, message_id, created, text, last.get("finish_reason", "stop"), usage)
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event("response.content_part.done", **where, part=text_part(text))
    yield event("response.output_item.done", output_index=0, item=done["output"][0])
    yield event(f"response.{done['status']}", response=done)
