"""Tool calls in chat completions: the model's call syntax parsed into OpenAI's `tool_calls`, and logprobs in OpenAI's shape.

Models whose chat template renders tools (Qwen2.5's, see models.supports_tools) are told to answer a call as
`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (one block per call). `assistant_message` turns a
finished answer into OpenAI's assistant message: `content` (text outside the blocks, or None) and `tool_calls`
with `arguments` as a JSON string, and finish_reason "tool_calls" when there is at least one call. A block that
is not valid JSON with a string `name` stays text: nothing the model wrote is dropped. An answer without blocks
that is nothing but such a JSON object (or a list of them, or one in a ```json fence) naming a declared function
is a call too: small models often answer that way (Qwen2.5-Coder-0.5B does; benchmarks/README.md).

Forced calls (`tool_choice` "required" or a named function, `forced_functions`): the generator makes the answer
begin with the template's call opening for an allowed function (generate.py, `openings`), so the first block
names a declared function by construction; the model writes the arguments. When they are not valid JSON (a
small or random model), the call is still returned, its `arguments` the text the model wrote — as OpenAI's API
does, whose documentation tells callers to validate arguments (`forced_calls`).

Streaming (`StreamSplitter`): text is sent as `content` deltas as it comes, except what may be the start of a
call block; from the first `<tool_call>` on, the rest is held and, when the choice ends, sent as OpenAI's
`tool_calls` deltas (`stream_deltas`), so the SDK's accumulated message equals the non-streamed one.
"""

from __future__ import annotations

import json
import re
import secrets
from functools import lru_cache
from typing import Any

CALL_OPEN = "<tool_call>"
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
FORCED_BODY = re.compile(r'\{\s*"name"\s*:\s*"([^"]+)"\s*,\s*"arguments"\s*:\s*(.*)$', re.DOTALL)


def _call(name: str, args: Any) -> dict[str, Any]:
    """One OpenAI-shaped tool call, `arguments` as a JSON string."""
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return {"id": "call_" + secrets.token_hex(12), "type": "function", "function": {"name": name, "arguments": arguments}}


def bare_calls(text: str, names: set[str]) -> list[dict[str, Any]]:
    """Calls of an answer that is only a JSON call object (or a list of them, or one in a ```json fence), each naming
    one of `names` and holding `arguments`; [] for anything else."""
    body = text.strip()
    fenced = FENCE.match(body)
    body = fenced.group(1) if fenced else body
    if not body.startswith(("{", "[")):
        return []
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return []
    items = obj if isinstance(obj, list) else [obj]
    if not items or not all(isinstance(i, dict) and i.get("name") in names and "arguments" in i for i in items):
        return []
    return [_call(i["name"], i["arguments"]) for i in items]


def parse_tool_calls(text: str, names: set[str] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """(content left outside the call blocks or None, OpenAI-shaped tool calls) of a model's answer; with the declared
    function `names`, an answer that is only a JSON call object is a call too."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    pos = 0
    for match in CALL_BLOCK.finditer(text):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        name, args = (call.get("name"), call.get("arguments", {})) if isinstance(call, dict) else (None, None)
        if not isinstance(name, str) or not name:
            continue
        kept.append(text[pos:match.start()])
        pos = match.end()
        calls.append(_call(name, args))
    kept.append(text[pos:])
    if not calls and names:
        calls = bare_calls(text, names)
        return (None if calls else (text or None)), calls
    content = "".join(kept).strip() if calls else text
    return (content or None), calls


def forced_calls(text: str, names: set[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, calls) of an answer the generator made begin with a call of one of `names`: as parse_tool_calls, but
    a first block whose JSON is broken is still a call of the function it names, with the arguments as written."""
    first = CALL_BLOCK.match(text.lstrip())
    body = FORCED_BODY.match(first.group(1)) if first else None
    if first is None or body is None or body.group(1) not in names:
        return parse_tool_calls(text, names)
    try:
        json.loads(first.group(1))
        return parse_tool_calls(text, names)
    except json.JSONDecodeError:
        pass
    content, calls = parse_tool_calls(text.lstrip()[first.end():], names)
    return content, [_call(body.group(1), raw_arguments(body.group(2)))] + calls


def raw_arguments(written: str) -> str:
    """The arguments a model wrote after `"arguments": ` in a call block, without the block's closing brace."""
    text = written.strip()
    inner = text[:-1].rstrip() if text.endswith("}") else text
    for candidate in (text, inner):
        try:
            json.loads(candidate)
            return candidate
        except json.JSONDecodeError:
            continue
    return inner


def declared_names(tools: list[dict[str, Any]] | None) -> set[str]:
    """The function names a request's `tools` declare (the validator's reading of them)."""
    from helpers.validate import declared_functions

    return declared_functions(tools)[0] if tools else set()


def assistant_message(text: str, finish_reason: str, tools: list[dict[str, Any]] | None,
                      forced: bool = False) -> tuple[dict[str, Any], str]:
    """OpenAI's assistant message for an answer, and its finish_reason ("tool_calls" when the model called a tool;
    "length" stays when a forced call was cut off); `forced`: tool_choice made the answer begin with a call."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if not tools:
        return message, finish_reason
    content, calls = (forced_calls if forced else parse_tool_calls)(text, declared_names(tools))
    if not calls:
        return message, finish_reason
    message["content"] = content
    message["tool_calls"] = calls
    return message, "length" if forced and finish_reason == "length" else "tool_calls"


class StreamSplitter:
    """One streamed choice's text split into content to send now and a held tail that may hold tool calls."""

    def __init__(self, names: set[str] | None = None, forced: bool = False) -> None:
        self.names = names or set()
        self.forced = forced
        self.held = ""
        self.in_call = False
        self.sent_content = False

    def feed(self, text: str) -> str:
        """The part of `text` that is surely content (may be ""); a possible call block is held back."""
        self.held += text
        if self.in_call:
            return ""
        start = self.held.lstrip()
        if self.names and not self.sent_content and (start.startswith(("{", "[", "```")) or "```".startswith(start)):
            return ""  # the answer may be a bare JSON call: hold it until it ends (or stops looking like one)
        at = self.held.find(CALL_OPEN)
        if at >= 0:  # a call block starts: send what comes before it (its trailing whitespace is layout)
            out, self.held, self.in_call = self.held[:at].rstrip(), self.held[at:], True
            return self._sent(out)
        keep = next((size for size in range(min(len(CALL_OPEN) - 1, len(self.held)), 0, -1)
                     if self.held.endswith(CALL_OPEN[:size])), 0)  # what may be the start of `<tool_call>`
        before = self.held[:len(self.held) - keep]
        cut = len(before.rstrip())  # and the whitespace before it, which would precede a call
        out, self.held = self.held[:cut], self.held[cut:]
        return self._sent(out)

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """(the rest of the content, the tool calls) once the choice has ended."""
        held, self.held = self.held, ""
        content, calls = (forced_calls if self.forced else parse_tool_calls)(held, self.names)
        if not calls:
            return self._sent(held), []
        rest = content or ""
        return self._sent(("\n" + rest) if rest and self.sent_content else rest), calls

    def _sent(self, text: str) -> str:
        self.sent_content = self.sent_content or bool(text)
        return text


def stream_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's streamed `tool_calls` deltas for finished calls: per call, its id and name, then its arguments."""
    deltas: list[dict[str, Any]] = []
    for k, call in enumerate(calls):
        deltas.append({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas.append({"tool_calls": [{"index": k, "function": {"arguments": call["function"]["arguments"]}}]})
    return deltas


def request_tools(tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[dict[str, Any]] | None:
    """The `tools` of a chat request, checked as the training data is (ValueError names the problem); None for none
    (or when tool_choice is "none": then the model is not shown them)."""
    from helpers.validate import declared_functions  # the same rules as the validator's

    if not tools or tool_choice == "none":
        return None
    _, problems = declared_functions(tools)
    if problems:
        raise ValueError(problems[0][1])
    return tools


def forced_functions(tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[str] | None:
    """The functions a chat request's `tool_choice` makes the answer call, one of them ("required": any declared one;
    {"type": "function", "function": {"name": ...}}: that one); None when the model chooses ("auto", "none",
    absent). ValueError says what is wrong with tool_choice."""
    if tool_choice in (None, "auto", "none"):
        return None
    named = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if tool_choice != "required" and not (isinstance(tool_choice, dict) and tool_choice.get("type") == "function"
                                          and isinstance(named, dict) and isinstance(named.get("name"), str)):
        raise ValueError(f"Invalid value for 'tool_choice': {json.dumps(tool_choice, ensure_ascii=False)}. Expected "
                         "'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.")
    if not tools:
        raise ValueError("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
    names = declared_names(tools)
    if tool_choice == "required":
        return sorted(names)
    if named["name"] not in names:
        raise ValueError(f"Invalid value for 'tool_choice': function '{named['name']}' is not among the functions "
                         f"'tools' declares ({', '.join(sorted(names))}).")
    return [named["name"]]


def request_message(message: dict[str, Any], index: int) -> dict[str, Any]:
    """The tool fields of one chat request message (assistant `tool_calls`, a tool message's `tool_call_id`), checked."""
    out: dict[str, Any] = {}
    if message.get("tool_calls"):
        calls = message["tool_calls"]
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError(f"messages[{index}].tool_calls: each call needs function.name and function.arguments")
            try:
                json.loads(fn.get("arguments") or "{}")
            except (TypeError, json.JSONDecodeError):
                raise ValueError(f"messages[{index}].tool_calls: arguments of {fn['name']!r} are not valid JSON") from None
        out["tool_calls"] = calls
    if message.get("role") == "tool":
        if not isinstance(message.get("tool_call_id"), str):
            raise ValueError(f"messages[{index}] has role 'tool' but no tool_call_id")
        out["tool_call_id"] = message["tool_call_id"]
    return out


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes-to-unicode table (byte-level BPE vocabularies: SmolLM2's, Qwen's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer: Any, token_id: int) -> list[int]:
    """The UTF-8 bytes of one token (a token may hold part of a character, as OpenAI's `bytes` field shows)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    table = _byte_decoder()
    if isinstance(piece, str) and piece and all(ch in table for ch in piece):
        return [table[ch] for ch in piece]
    return list(tokenizer.decode([int(token_id)]).encode("utf-8"))


def logprob_entry(tokenizer: Any, token_id: int, logprob: float, top: list[tuple[int, float]]) -> dict[str, Any]:
    """One element of OpenAI's `choices[].logprobs.content`: token, logprob, bytes, top_logprobs."""

    def one(tid: int, lp: float) -> dict[str, Any]:
        raw = token_bytes(tokenizer, tid)
        return {"token": bytes(raw).decode("utf-8", errors="replace"), "logprob": float(lp), "bytes": raw}

    return {**one(token_id, logprob), "top_logprobs": [one(t, lp) for t, lp in top]}
