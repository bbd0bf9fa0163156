"""Chat completions: what a request may ask of the local engine, and the `chat.completion` objects it answers with.

The router (`routers/chat.py`) parses the body and calls `prepare` (validation: sampling ranges, unsupported
features, then the model, then what depends on it: tools and tool_choice, roles and content parts), then
`engine.complete`/`engine.stream`, then `completion_object` or `sse_chunks` to shape the answer. Everything a chat
request can do on this server is in this file; the Responses API (responses.py) reuses its checks
(`sampling`, `output_limit`), the same engine calls and `stream_failure`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from helpers.localapi import schemas, toolcalls
from helpers.localapi.errors import bad_request

log = logging.getLogger("helpers.localapi.chat")

MAX_N = 8


@dataclass
class ChatRequest:
    """A checked chat request: the flattened messages and the sampling parameters for the engine."""

    model: str
    resolved: Any  # engine.ResolvedModel
    messages: list[dict]
    params: dict[str, Any]
    stream: bool
    include_usage: bool


def prepare(body: schemas.ChatCreate, default_max_tokens: int, resolve: Callable[[str], Any]) -> ChatRequest:
    """Check a chat request as OpenAI checks it (parameters, then the model, then tools and the messages)."""
    params = chat_params(body, default_max_tokens)
    resolved = resolve(body.model)
    params.update(tool_params(body.tools, body.tool_choice))
    messages = [flatten_message(m, i) for i, m in enumerate(body.messages)]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ChatRequest(body.model, resolved, messages, params, bool(body.stream), include_usage)


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


def chat_params(body: schemas.ChatCreate, default_max_tokens: int) -> dict:
    """The sampling parameters of a chat request, checked as OpenAI checks them."""
    if not body.messages:
        raise bad_request("[] is too short - 'messages'", param="messages")
    n = 1 if body.n is None else body.n
    if not 1 <= n <= MAX_N:
        raise bad_request(f"n must be between 1 and {MAX_N} on the local server.", param="n")
    temperature, top_p = sampling(body.temperature, body.top_p)
    limit_param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    limit = output_limit(getattr(body, limit_param), limit_param, default_max_tokens)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise bad_request("stop may hold at most 4 sequences.", param="stop")
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("logprobs must be true when top_logprobs is set.", param="logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= 20:
        raise bad_request(f"{body.top_logprobs} is not in [0, 20] - 'top_logprobs'", param="top_logprobs")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise bad_request("Only response_format type 'text' is supported by the local server.", param="response_format")
    penalties = {name: float(value) for name in ("frequency_penalty", "presence_penalty")
                 if (value := getattr(body, name)) is not None}
    for name, value in penalties.items():
        if not -2 <= value <= 2:
            raise bad_request(f"{value} is not in [-2, 2] - '{name}'", param=name)
    return {**limit, "temperature": temperature, "top_p": top_p,
            "seed": body.seed, "stop": [s for s in stop if s], "n": n,
            "top_logprobs": (body.top_logprobs or 0) if body.logprobs else None,
            **penalties, **({"logit_bias": logit_bias(body.logit_bias)} if body.logit_bias else {})}


def sampling(temperature: float | None, top_p: float | None) -> tuple[float, float]:
    """temperature and top_p (OpenAI's defaults 1 and 1), checked against OpenAI's ranges."""
    temperature = 1.0 if temperature is None else temperature
    if not 0 <= temperature <= 2:
        raise bad_request(f"{temperature} is not in [0, 2] - 'temperature'", param="temperature")
    top_p = 1.0 if top_p is None else top_p
    if not 0 < top_p <= 1:
        raise bad_request(f"{top_p} is not in (0, 1] - 'top_p'", param="top_p")
    return temperature, top_p


def output_limit(value: int | None, param: str, default: int, minimum: int = 1) -> dict[str, Any]:
    """The generator's output limit: {"max_tokens", "max_tokens_param"}. An explicit limit keeps its parameter's name,
    so that one the model's context cannot hold is a 400 naming it (generate.py); the default is cut to what fits."""
    if value is None:
        return {"max_tokens": default, "max_tokens_param": None}
    if value < minimum:
        raise bad_request(f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, but got "
                          f"{value} instead.", param=param, code="integer_below_min_value")
    return {"max_tokens": value, "max_tokens_param": param}


def tool_params(tools: list[dict] | None, tool_choice: Any) -> dict[str, Any]:
    """{"tools": the declared tools or None, "forced": the functions tool_choice makes the answer call, or None};
    checked after the model is known, each problem a 400 naming its parameter."""
    try:
        checked = toolcalls.request_tools(tools, tool_choice)
    except ValueError as exc:
        raise bad_request(f"Invalid 'tools': {exc}.", param="tools") from None
    try:
        forced = toolcalls.forced_functions(checked, tool_choice)
    except ValueError as exc:
        raise bad_request(str(exc), param="tool_choice", code="invalid_value") from None
    return {"tools": checked, "forced": forced}


def stream_failure(exc: Exception) -> str:
    """The message a stream sends when generation fails after the answer began (logged with its traceback)."""
    log.error("generation failed while streaming", exc_info=exc)
    return f"Generation failed: {type(exc).__name__}: {exc}"


def logit_bias(raw: dict[str, float]) -> dict[int, float]:
    """OpenAI's logit_bias ({"token id": bias in [-100, 100]}; the schema made the biases floats) as {int: float};
    the model's vocabulary is checked by the generator."""
    for key, value in raw.items():
        if not key.isdigit():
            raise bad_request(f"Invalid key in 'logit_bias': {key}. You should only be submitting non-negative "
                              "integers (token ids of the model's own tokenizer).", param="logit_bias", code="invalid_value")
        if not -100 <= value <= 100:
            raise bad_request(f"Invalid value for 'logit_bias' token {key}: {value}; it must be in [-100, 100].",
                              param="logit_bias", code="invalid_value")
    return {int(key): value for key, value in raw.items()}


def completion_object(completion_id: str, created: int, model: str, choices: list, tools: list | None = None,
                      forced: bool = False) -> dict:
    """The `chat.completion` object for finished choices (tool calls parsed when the request had tools; `forced`:
    tool_choice made each answer begin with a call)."""
    prompt_tokens = choices[0].usage.prompt_tokens if choices else 0
    completion_tokens = sum(c.usage.completion_tokens for c in choices)
    cached_tokens = choices[0].usage.cached_tokens if choices else 0
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": i, **dict(zip(("message", "finish_reason"), toolcalls.assistant_message(c.text, c.finish_reason, tools, forced))),
                     "logprobs": logprobs_object(c.logprobs)} for i, c in enumerate(choices)],
        "usage": usage_object(prompt_tokens, completion_tokens, cached_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_local",
    }


def logprobs_object(entries: list | None) -> dict | None:
    """OpenAI's `logprobs` of a choice or chunk: {"content": [...], "refusal": None}, or None when not asked for."""
    return None if entries is None else {"content": entries, "refusal": None}


def usage_object(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    """OpenAI's usage block (cached_tokens: prompt tokens whose prefill the generator's prefix cache saved)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def sse_chunks(completion_id: str, created: int, model: str, pieces: Iterator[dict], include_usage: bool,
               n: int, tools: list | None = None, forced: bool = False) -> Iterator[bytes]:
    """Server-sent events in OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`.

    With `tools`, a choice's text that may be a call is held back and sent as `tool_calls` deltas when it ends
    (toolcalls.StreamSplitter); logprobs of held tokens come with the choice's last chunk.
    """

    def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
        obj = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "service_tier": "default", "system_fingerprint": "fp_local", "choices": choices}
        if include_usage:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

    def delta(i: int, body: dict, logprobs: list | None = None, finish_reason: str | None = None) -> bytes:
        return chunk([{"index": i, "delta": body, "logprobs": logprobs_object(logprobs), "finish_reason": finish_reason}])

    names = toolcalls.declared_names(tools)
    splitters = {i: toolcalls.StreamSplitter(names, forced) for i in range(n)} if tools else {}
    held_logprobs: dict[int, list] = {i: [] for i in range(n)}
    for i in range(n):
        yield delta(i, {"role": "assistant", "content": "", "refusal": None})
    prompt_tokens, completion_tokens, cached_tokens = 0, 0, 0
    try:
        for piece in pieces:
            i = piece.get("index", 0)
            logprobs = piece.get("logprobs")
            if piece.get("text"):
                text = splitters[i].feed(piece["text"]) if i in splitters else piece["text"]
                if text:
                    entries = held_logprobs[i] + (logprobs or []) if logprobs is not None else None
                    held_logprobs[i] = []
                    yield delta(i, {"content": text}, entries)
                elif logprobs:
                    held_logprobs[i] += logprobs
                logprobs = None
            if piece.get("finish_reason"):
                finish_reason = piece["finish_reason"]
                rest = held_logprobs[i] + (logprobs or [])  # tokens held back, or whose text a stop string cut
                if i in splitters:
                    text, calls = splitters[i].finish()
                    if text:
                        yield delta(i, {"content": text})
                    for body in toolcalls.stream_deltas(calls):
                        yield delta(i, body)
                    finish_reason = finish_reason if not calls or (forced and finish_reason == "length") else "tool_calls"
                yield delta(i, {}, rest or None, finish_reason)
                prompt_tokens = piece.get("prompt_tokens", prompt_tokens)
                if i == 0:  # the prompt is counted once, as in prompt_tokens
                    cached_tokens = piece.get("cached_tokens", 0)
                completion_tokens += piece.get("completion_tokens", 0)
    except Exception as exc:  # the SDK raises an APIError for an `error` event in the stream
        err = {"error": {"message": stream_failure(exc), "type": "server_error", "param": None, "code": None}}
        yield b"data: " + json.dumps(err).encode() + b"\n\n"
        return
    if include_usage:
        yield chunk([], usage_object(prompt_tokens, completion_tokens, cached_tokens))
    yield b"data: [DONE]\n\n"
