"""Validate a fine-tuning JSONL before uploading it: `python -m helpers.validate FILE [--model M] [--method M]`.

Every check the OpenAI Cookbook's data-preparation notebook makes, plus what it misses: BOM, invalid
UTF-8, blank lines, duplicates, whitespace-only content, the last message must be the assistant's,
`weight` only 0 or 1 (without crashing on it), at least 10 examples, the chosen model's per-example
token limit (counted with the model's own encoding; MAX_EXAMPLE_TOKENS without a model) and train/validation
overlap. Tool-calling data in OpenAI's format is checked as OpenAI does (functions declared in `tools`, arguments
valid JSON objects, every `tool_call_id` answering an earlier call, `parallel_tool_calls`). With a local model's
TrainingCounter each example is also counted with that model's tokenizer, and the ones its trainer would cut are
named. Each problem names the file, the line and what is wrong (message numbers count from 1). Notebook 03 and the local server's `validating_files` phase use
the same `validate_file`.

Preference (DPO) files, OpenAI's `{"input": {"messages", "tools"?}, "preferred_output": [assistant message],
"non_preferred_output": [assistant message]}` lines, are checked with `method="dpo"` (the command line recognises
them from their first line, or takes `--method dpo`): each output one non-empty assistant message, the two
outputs different, an input that does not end with an assistant turn, the input's messages and tool use by the
chat rules; a chat line in a preference file, or a preference line in a chat file, is named as such.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import ConfigError, load_config
from helpers.data import BOM, json_type
from helpers.tokens import (MAX_EXAMPLE_TOKENS, TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMING, BackgroundCounter, TrainingCounter,
                            chat_text_ids, encoding_for_model, local_training_counter, token_limit)

MIN_EXAMPLES = 10
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"})
EXAMPLE_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
OUTPUTS = ("preferred_output", "non_preferred_output")
METHODS = ("supervised", "dpo")
loads = json.loads
_ROLE_CONTENT = {"role", "content"}
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names


@dataclass(frozen=True)
class Problem:
    """One problem: the 1-based line (0 for the file as a whole) and what is wrong."""

    line: int
    message: str
    code: str  # a stable short name, e.g. "invalid_json", "duplicate", "over_token_limit"

    def format(self, file: str) -> str:
        """`FILE:LINE: problem` (just `FILE: problem` for file-level problems)."""
        return f"{file}:{self.line}: {self.message}" if self.line else f"{file}: {self.message}"


@dataclass
class ValidationReport:
    """The result of validating one file: problems (errors), warnings, and token statistics of the valid examples."""

    path: Path
    model: str | None
    encoding: str
    token_limit: int | None
    n_examples: int = 0  # non-blank lines, each one example
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    token_counts: dict[int, int] = field(default_factory=dict)  # line -> chat tokens, for examples that parsed
    assistant_token_counts: dict[int, int] = field(default_factory=dict)  # line -> tokens of the assistant replies (what is trained on)
    training_length: int | None = None  # with a local model's tokenizer: the length the trainer cuts examples at
    cut_tokens: dict[int, int] = field(default_factory=dict)  # line -> tokens the trainer would cut off (local model)
    method: str = "supervised"  # "supervised" (chat examples) or "dpo" (preference pairs)

    @property
    def ok(self) -> bool:
        """True when no example is invalid (warnings allowed)."""
        return not self.problems

    @property
    def invalid_lines(self) -> set[int]:
        """Lines with at least one problem."""
        return {p.line for p in self.problems if p.line}

    @property
    def total_tokens(self) -> int:
        """Sum of the chat tokens of all examples that parsed."""
        return sum(self.token_counts.values())

    def token_stats(self) -> dict[str, float]:
        """min / mean / median / max tokens per example (zeros for an empty file)."""
        values = list(self.token_counts.values())
        if not values:
            return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
        return {"min": min(values), "mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}

    def lines(self) -> list[str]:
        """Every problem and warning as `FILE:LINE: ...`, in line order (file-level ones last)."""
        items = [(p.line, p.format(str(self.path))) for p in self.problems]
        items += [(w.line, Problem(w.line, "warning: " + w.message, w.code).format(str(self.path))) for w in self.warnings]
        return [text for _, text in sorted(items, key=lambda item: item[0] or 10**12)]

    def summary(self) -> str:
        """One paragraph: examples, invalid examples, problems, tokens."""
        bad = len(self.invalid_lines)
        enc = f"{self.encoding}" + (f", limit {self.token_limit:,}" if self.token_limit else "")
        what = "examples" if self.method == "supervised" else "preference pairs (DPO)"
        head = f"{self.path}: {self.n_examples} {what}, {bad} invalid, {len(self.problems)} problems, {len(self.warnings)} warnings"
        cut = ""
        if self.training_length:
            cut = f"; {len(self.cut_tokens)} would be cut to {self.training_length:,} {self.model} tokens in training"
        return f"{head}; {self.total_tokens:,} tokens ({enc}){cut}" + (" — OK" if self.ok else " — NOT OK")


def example_method(example: Any) -> str | None:
    """"dpo" for a line shaped like a preference example, "supervised" for a chat example, None for neither."""
    if not isinstance(example, dict):
        return None
    if not PREFERENCE_KEYS.isdisjoint(example):
        return "dpo"
    return "supervised" if "messages" in example else None


def check_example(example: Any) -> list[tuple[str, str]]:
    """Problems of one parsed example as (code, message) pairs; empty when it is a valid chat example."""
    if not isinstance(example, dict):
        return [("not_object", f"example must be a JSON object, got {json_type(example)}")]
    if example_method(example) == "dpo":
        return [("preference_example", "this is a preference (DPO) example ('input', 'preferred_output', "
                 "'non_preferred_output'), but supervised fine-tuning needs chat examples {\"messages\": [...]}: "
                 "create the job with method {\"type\": \"dpo\"} (validate with --method dpo)")]
    out: list[tuple[str, str]] = []
    for key in example:
        if key not in EXAMPLE_KEYS:
            out.append(("unknown_key", f"unknown key {key!r} (allowed: {', '.join(sorted(EXAMPLE_KEYS))})"))
    if "messages" not in example:
        return out + [("missing_messages", "missing key 'messages'")]
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        got = "an empty array" if messages == [] else json_type(messages)
        return out + [("bad_messages", f"'messages' must be a non-empty array, got {got}")]
    assistants, weighted = 0, 0
    for i, m in enumerate(messages, start=1):
        out += _check_message(i, m)
        if isinstance(m, dict) and m.get("role") == "assistant":
            assistants += 1
            weighted += m.get("weight", 1) != 0
    out += check_tool_use(example, messages)
    last = messages[-1]
    if assistants == 0:
        out.append(("no_assistant", "no assistant message: there is nothing to train on"))
    elif not (isinstance(last, dict) and last.get("role") == "assistant"):
        role = last.get("role") if isinstance(last, dict) else None
        out.append(("assistant_not_last", f"the last message must be the assistant's, got {role!r}"))
    elif weighted == 0:
        out.append(("all_weight_zero", "every assistant message has weight 0: nothing to train on"))
    return out


def check_preference_example(example: Any) -> list[tuple[str, str]]:
    """Problems of one parsed preference (DPO) example as (code, message) pairs; empty when it is valid."""
    if not isinstance(example, dict):
        return [("not_object", f"example must be a JSON object, got {json_type(example)}")]
    if example_method(example) == "supervised":
        return [("supervised_example", "this is a chat example {\"messages\": [...]} for supervised fine-tuning, but "
                 "DPO needs preference examples with 'input', 'preferred_output' and 'non_preferred_output': "
                 "create the job with method {\"type\": \"supervised\"} (validate with --method supervised)")]
    out = [("unknown_key", f"unknown key {key!r} (allowed: {', '.join(sorted(PREFERENCE_KEYS))})")
           for key in example if key not in PREFERENCE_KEYS]
    out += _check_input(example.get("input"), "input" in example)
    outputs = [_check_output(example, key) for key in OUTPUTS]
    for problems, _ in outputs:
        out += problems
    (_, preferred), (_, rejected) = outputs
    if preferred is not None and rejected is not None and _answer_key(preferred) == _answer_key(rejected):
        out.append(("identical_outputs", "preferred_output and non_preferred_output are the same answer: the pair "
                                         "shows no preference to learn"))
    return out


def _check_input(value: Any, present: bool) -> list[tuple[str, str]]:
    """Problems of a preference example's `input` (its messages, tools, and that it awaits the assistant's reply)."""
    if not present:
        return [("missing_input", "missing key 'input' (the conversation the two outputs answer)")]
    if not isinstance(value, dict):
        return [("bad_input", f"'input' must be an object {{\"messages\": [...]}}, got {json_type(value)}")]
    out = [("unknown_key", f"input: unknown key {key!r} (allowed: {', '.join(sorted(INPUT_KEYS))})")
           for key in value if key not in INPUT_KEYS]
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        got = "missing" if "messages" not in value else ("an empty array" if messages == [] else json_type(messages))
        return out + [("bad_messages", f"input: 'messages' must be a non-empty array, got {got}")]
    for i, m in enumerate(messages, start=1):
        out += [(code, f"input: {text}") for code, text in _check_message(i, m)]
    out += [(code, f"input: {text}") for code, text in check_tool_use(value, messages)]
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        out.append(("input_ends_with_assistant", f"input: the last message ({len(messages)}) is the assistant's, but "
                                                 "the input must end where the assistant answers: the answers belong "
                                                 "in preferred_output and non_preferred_output"))
    return out


def _check_output(example: dict, key: str) -> tuple[list[tuple[str, str]], dict | None]:
    """Problems of `preferred_output` or `non_preferred_output` (one assistant message), and that message if usable."""
    if key not in example:
        return [("missing_output", f"missing key {key!r} (a list with one assistant message)")], None
    value = example[key]
    if not isinstance(value, list):
        return [("bad_output", f"{key} must be a list with one assistant message, got {json_type(value)}")], None
    if not value:
        return [("empty_output", f"{key} is empty: it needs one assistant message")], None
    if len(value) > 1:
        return [("bad_output", f"{key} has {len(value)} messages: it must hold exactly one assistant message")], None
    message = value[0]
    out = [(code, f"{key}: {text}") for code, text in _check_message(1, message)]
    if not isinstance(message, dict):
        return out, None
    if message.get("role") != "assistant":
        out.append(("output_not_assistant", f"{key}: the message's role is {message.get('role')!r}, but an output "
                                            "is the assistant's answer (role 'assistant')"))
    if "weight" in message:
        out.append(("bad_weight", f"{key}: 'weight' is not allowed in an output (every output is learned from)"))
    tools = {k: v for k, v in example.get("input", {}).items() if k != "messages"} if isinstance(example.get("input"), dict) else {}
    if message.get("tool_calls") is not None:
        out += [(code, f"{key}: {text}") for code, text in check_tool_use(tools, [message])]
    return out, (message if not out else None)


def _answer_key(message: dict) -> str:
    """What makes two answers the same: their text (trimmed) and their tool calls."""
    content = message.get("content")
    text = content.strip() if isinstance(content, str) else ""
    return json.dumps([text, message.get("tool_calls")], sort_keys=True, ensure_ascii=False)


def preference_sides(example: dict) -> tuple[dict, dict]:
    """The two chat examples a preference example is trained as: the input's messages (earlier assistant turns as
    context only, weight 0) followed by the preferred, or the non-preferred, output."""
    data = example["input"]
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in data["messages"]]
    extra = {k: v for k, v in data.items() if k != "messages"}
    return tuple({"messages": context + [dict(example[key][0])], **extra} for key in OUTPUTS)  # type: ignore[return-value]


def declared_functions(tools: Any) -> tuple[set[str], list[tuple[str, str]]]:
    """The function names a `tools` list declares, and its problems (OpenAI: type 'function', a valid unique name)."""
    if not isinstance(tools, list):
        return set(), [("bad_tools", f"'tools' must be an array, got {json_type(tools)}")]
    names: set[str] = set()
    out: list[tuple[str, str]] = []
    for t, tool in enumerate(tools, start=1):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            out.append(("bad_tool", f"tool {t}: must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
            out.append(("bad_tool", f"tool {t}: function name {name!r} must be 1-64 letters, digits, '_' or '-'"))
        elif name in names:
            out.append(("bad_tool", f"tool {t}: function {name!r} is declared twice"))
        else:
            names.add(name)
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            out.append(("bad_tool", f"tool {t} ({name}): 'parameters' must be a JSON schema object, got {json_type(fn['parameters'])}"))
    return names, out


def check_tool_use(example: dict, messages: list) -> list[tuple[str, str]]:
    """OpenAI's checks of tool-calling data: calls name declared functions, arguments are JSON, tool messages answer a call."""
    uses = "tools" in example or any(isinstance(m, dict) and (m.get("tool_calls") is not None or m.get("role") == "tool")
                                     for m in messages)
    if not uses:
        return []
    names, out = declared_functions(example.get("tools", []))
    parallel = example.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        out.append(("bad_parallel_tool_calls", f"'parallel_tool_calls' must be true or false, got {json.dumps(parallel)}"))
    open_ids: dict[str, int] = {}  # tool call id -> message number of the call, until a tool message answers it
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                out.append(("missing_tool_call_id", f"message {i} (tool): needs the 'tool_call_id' of the call it answers"))
            elif call_id not in open_ids:
                out.append(("unmatched_tool_call_id", f"message {i} (tool): tool_call_id {call_id!r} answers no earlier "
                                                      "assistant tool call"))
            else:
                del open_ids[call_id]
            continue
        if open_ids and role != "tool":
            ids = ", ".join(repr(k) for k in open_ids)
            out.append(("unanswered_tool_call", f"message {i} ({role}): tool call {ids} of message "
                                                f"{min(open_ids.values())} has no tool message before it"))
            open_ids.clear()
        calls = m.get("tool_calls")
        if calls is None:
            continue
        where = f"message {i} ({role})"
        if role != "assistant":
            out.append(("bad_tool_calls", f"{where}: only assistant messages may have 'tool_calls'"))
            continue
        if not isinstance(calls, list) or not calls:
            out.append(("bad_tool_calls", f"{where}: 'tool_calls' must be a non-empty array"))
            continue
        if parallel is False and len(calls) > 1:
            out.append(("parallel_tool_calls", f"{where}: {len(calls)} tool calls, but 'parallel_tool_calls' is false"))
        if not names and "tools" not in example:
            out.append(("undeclared_function", f"{where}: has tool_calls but the example declares no 'tools'"))
        for c, call in enumerate(calls, start=1):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(call, dict) or not isinstance(fn, dict):
                out.append(("bad_tool_call", f"{where}, tool call {c}: must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}"))
                continue
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                out.append(("bad_tool_call", f"{where}, tool call {c}: needs a string 'id'"))
            elif call_id in open_ids:
                out.append(("bad_tool_call", f"{where}, tool call {c}: id {call_id!r} is used twice"))
            elif i < len(messages):  # the last message's calls are what the model learns to make: no answer follows
                open_ids[call_id] = i
            if call.get("type", "function") != "function":
                out.append(("bad_tool_call", f"{where}, tool call {c}: type must be 'function', got {call.get('type')!r}"))
            name = fn.get("name")
            if names and name not in names:
                out.append(("undeclared_function", f"{where}, tool call {c}: function {name!r} is not declared in 'tools' "
                                                   f"(declared: {', '.join(sorted(names))})"))
            args = fn.get("arguments")
            if not isinstance(args, str):
                out.append(("bad_arguments", f"{where}, tool call {c} ({name}): 'arguments' must be a JSON string, got {json_type(args)}"))
                continue
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError as exc:
                out.append(("bad_arguments", f"{where}, tool call {c} ({name}): arguments are not valid JSON: {exc.msg} "
                                             f"(column {exc.colno})"))
                continue
            if not isinstance(parsed, dict):
                out.append(("bad_arguments", f"{where}, tool call {c} ({name}): arguments must be a JSON object, got {json_type(parsed)}"))
    if open_ids:
        out.append(("unanswered_tool_call", f"tool call {', '.join(repr(k) for k in open_ids)} has no tool message"))
    return out


def _check_message(i: int, m: Any) -> list[tuple[str, str]]:
    """Problems of message number i (1-based) of an example."""
    if not isinstance(m, dict):
        return [("bad_message", f"message {i} must be an object, got {json_type(m)}")]
    allowed = ", ".join(sorted(MESSAGE_KEYS))
    out = [("unknown_message_key", f"message {i}: unknown key {k!r} (allowed: {allowed})") for k in m if k not in MESSAGE_KEYS]
    role = m.get("role")
    if "role" not in m:
        out.append(("missing_role", f"message {i}: missing 'role'"))
    elif role not in ROLES:
        out.append(("bad_role", f"message {i}: role {role!r} is not one of {', '.join(sorted(ROLES))}"))
    where = f"message {i} ({role})" if isinstance(role, str) else f"message {i}"
    content = m.get("content")
    calls = m.get("function_call") is not None or m.get("tool_calls") is not None
    if "content" not in m and not calls:
        out.append(("missing_content", f"{where}: missing 'content'"))
    elif content is None and not calls:
        out.append(("missing_content", f"{where}: content is null"))
    elif content is not None and not isinstance(content, str):
        out.append(("content_not_string", f"{where}: content must be a string, got {json_type(content)}"))
    elif isinstance(content, str) and not content.strip() and not calls:
        out.append(("empty_content", f"{where}: content is {'empty' if not content else 'whitespace only'}"))
    if "name" in m and not isinstance(m["name"], str):
        out.append(("bad_name", f"{where}: name must be a string, got {json_type(m['name'])}"))
    if "weight" in m:
        w = m["weight"]
        if role != "assistant":
            out.append(("bad_weight", f"{where}: weight is only allowed on assistant messages"))
        elif isinstance(w, bool) or w not in (0, 1):
            out.append(("bad_weight", f"{where}: weight must be 0 or 1, got {json.dumps(w)}"))
    return out


def _plain_valid(example: Any) -> bool:
    """Fast path: a dict with only 'messages', plain messages with non-blank string content, assistant last."""
    if type(example) is not dict or example.keys() != {"messages"}:
        return False
    messages = example["messages"]
    if type(messages) is not list or not messages:
        return False
    for m in messages:
        if type(m) is not dict or m.keys() != _ROLE_CONTENT or m["role"] not in ROLES:
            return False
        c = m["content"]
        if type(c) is not str or not c or c.isspace():
            return False
    return messages[-1]["role"] == "assistant"


def _lines(data: bytes) -> list[str | bytes]:
    """The file's lines as text; a line that is not valid UTF-8 stays bytes (so it can be reported)."""
    if data.endswith(b"\n"):
        data = data[:-1]  # the newline that ends the last line
    if not data:
        return []
    try:
        return data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        out: list[str | bytes] = []
        for raw in data.split(b"\n"):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(raw)
        return out


def _utf8_problem(raw: bytes) -> str:
    """Where a line stops being valid UTF-8."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line): save the file as UTF-8"
    return "not valid UTF-8"


def detect_method(data: bytes) -> str:
    """"dpo" when the first line that parses as a JSON object is a preference example, else "supervised"."""
    for text in _lines(data.removeprefix(BOM)):
        try:
            found = example_method(loads(text))
        except (ValueError, TypeError):
            continue
        if found:
            return found
    return "supervised"


def validate_bytes(data: bytes, path: Path | str = "<bytes>", model: str | None = None, max_tokens: int | None = None,
                   check_token_limit: bool = True, min_examples: int = MIN_EXAMPLES,
                   training: TrainingCounter | None = None, method: str = "supervised") -> ValidationReport:
    """Validate the content of a chat (or, with method="dpo", preference) JSONL given as bytes (see validate_file)."""
    if method == "auto":
        method = detect_method(data)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} or auto, not {method!r}")
    dpo = method == "dpo"
    choice = encoding_for_model(model or "")
    limit = (max_tokens or (token_limit(model) if model else None) or MAX_EXAMPLE_TOKENS) if check_token_limit else None
    report = ValidationReport(Path(path), model, choice.encoding, limit, method=method)
    report.training_length = training.max_len if training else None
    problems, warnings = report.problems, report.warnings
    if data.startswith(BOM):
        problems.append(Problem(1, "file starts with a UTF-8 byte order mark (BOM): save it as UTF-8 without BOM", "bom"))
        data = data[len(BOM):]
    index: dict[str, int] = {}  # every distinct string, token-counted once
    put = index.setdefault
    plan: list[tuple[int, int, tuple[int, ...], Any, Any, Any]] = []  # (line, fixed tokens, string ids, assistant ids, roles, DPO split)
    examples: dict[int, Any] = {}  # line -> example, kept only to count it with a local model's tokenizer
    seen: dict[Any, int] = {}
    crlf = 0
    fixed_per_message = TOKENS_PER_MESSAGE
    with BackgroundCounter(choice.encoding) as counter:  # distinct strings are token-counted in threads while the file is parsed
        for n, text in enumerate(_lines(data), start=1):
            if not n & 1023:
                counter.update(index)
            if isinstance(text, bytes):  # not valid UTF-8
                report.n_examples += 1
                problems.append(Problem(n, _utf8_problem(text), "invalid_utf8"))
                continue
            if text.endswith("\r"):
                text = text[:-1]
                crlf += 1
                if crlf == 1:
                    warnings.append(Problem(n, "line ends with CRLF (\\r\\n); accepted, but prefer LF line endings", "crlf"))
            if not text or text.isspace():
                problems.append(Problem(n, "blank line: every line must hold one JSON example", "blank_line"))
                continue
            report.n_examples += 1
            try:
                example = loads(text)
            except json.JSONDecodeError as exc:
                problems.append(Problem(n, f"not valid JSON: {exc.msg} (column {exc.colno})", "invalid_json"))
                continue
            split = None
            if not dpo and _plain_valid(example):  # the common case: role/content messages, counted under the same rule as below
                messages = example["messages"]
                ids = tuple([put(v, len(index)) for m in messages for v in (m["role"], m["content"])])
                fixed, key, replies, roles = TOKENS_REPLY_PRIMING + fixed_per_message * len(messages), ids, None, None  # from ids
            elif dpo:
                found = check_preference_example(example)
                if found:
                    problems.extend(Problem(n, msg, code) for code, msg in found)
                    continue
                sides = preference_sides(example)
                if training and not training.supports_tools and any(_uses_tools(side) for side in sides):
                    problems.append(Problem(n, _tools_unsupported(training), "tools_unsupported"))
                    continue
                fixed, ids = 0, ()
                for side in sides:  # the trainer runs the input twice: once with each output
                    side_fixed, side_ids = chat_text_ids(side["messages"], index)
                    if "tools" in side:
                        side_ids += (put(json.dumps(side["tools"], ensure_ascii=False), len(index)),)
                    split = split or (side_fixed, len(side_ids))
                    fixed, ids = fixed + side_fixed, ids + side_ids
                replies = tuple(put(example[k][0]["content"], len(index)) for k in OUTPUTS
                                if isinstance(example[k][0].get("content"), str))
                roles = {m["role"] for m in example["input"]["messages"]}
                key = json.dumps(example, sort_keys=True, ensure_ascii=False)
            else:
                found = check_example(example)
                if found:
                    problems.extend(Problem(n, msg, code) for code, msg in found)
                    continue
                if training and not training.supports_tools and _uses_tools(example):
                    problems.append(Problem(n, _tools_unsupported(training), "tools_unsupported"))
                    continue
                fixed, ids = chat_text_ids(example["messages"], index)
                if "tools" in example:  # the declared functions are part of the prompt
                    ids += (put(json.dumps(example["tools"], ensure_ascii=False), len(index)),)
                replies = tuple(put(m["content"], len(index)) for m in example["messages"]
                                if m.get("role") == "assistant" and isinstance(m.get("content"), str))
                roles = {m["role"] for m in example["messages"]}
                key = json.dumps(example["messages"], sort_keys=True, ensure_ascii=False)
            if key in seen:
                problems.append(Problem(n, f"duplicate of line {seen[key]}", "duplicate"))
                continue
            seen[key] = n
            plan.append((n, fixed, ids, replies, roles, split))
            if training:
                examples[n] = example
        counts = counter.finish(index)
    if crlf > 1:
        warnings.append(Problem(0, f"{crlf} lines end with CRLF (first reported above)", "crlf"))
    assistant, user = index.get("assistant"), index.get("user")
    system = {index.get("system"), index.get("developer")} - {None}
    no_system: list[int] = []
    no_user: list[int] = []
    for n, fixed, ids, replies, roles, split in plan:
        tokens = report.token_counts[n] = fixed + sum([counts[i] for i in ids])
        longest = tokens  # a preference pair is checked by its longer side (input + one output)
        if split is not None:
            first = split[0] + sum([counts[i] for i in ids[:split[1]]])
            longest = max(first, tokens - first)
        if replies is None:  # plain messages: ids alternate role, content
            role_ids = ids[0::2]
            replies = [ids[j + 1] for j in range(0, len(ids), 2) if ids[j] == assistant]
            has_system, has_user = not system.isdisjoint(role_ids), user in role_ids
        else:
            has_system, has_user = "system" in roles or "developer" in roles, "user" in roles
        report.assistant_token_counts[n] = sum([counts[i] for i in replies])
        if not has_system:
            no_system.append(n)
        if not has_user:
            no_user.append(n)
        if limit and longest > limit:
            where = f"for {model}" if model else "for any model"
            side = " (input and its longer output)" if split is not None else ""
            problems.append(Problem(n, f"{longest:,} tokens{side}, over the {limit:,}-token limit per example {where} "
                                       f"({choice.encoding})", "over_token_limit"))
        elif training:
            _predict_cut(report, n, examples[n], training, dpo)
    for lines, what, code in ((no_system, "system", "no_system"), (no_user, "user", "no_user")):  # the Cookbook's data warnings
        if lines:
            warnings.append(Problem(0, f"{len(lines)} examples have no {what} message (first: line {lines[0]})", code))
    if report.n_examples < min_examples:
        what = "preference pairs" if dpo else "examples"
        problems.append(Problem(0, f"{report.n_examples} {what}: fine-tuning needs at least {min_examples}", "too_few_examples"))
    problems.sort(key=lambda p: p.line or 10**12)
    return report


def _uses_tools(example: dict) -> bool:
    """True when an example declares tools or has tool calls or tool messages."""
    return "tools" in example or any(isinstance(m, dict) and (m.get("tool_calls") is not None or m.get("role") == "tool")
                                     for m in example.get("messages", []))


def _tools_unsupported(training: TrainingCounter) -> str:
    """The problem of tool-calling data for a local model whose chat template cannot render tools."""
    return (f"tool calling: the chat template of {training.model} cannot render 'tools' or 'tool_calls', so it "
            f"cannot be trained on them; base models that can: {', '.join(training.tool_models) or 'none here'}")


def _predict_cut(report: ValidationReport, line: int, example: dict, training: TrainingCounter, dpo: bool = False) -> None:
    """Count an example (each side of a preference pair) with the local model's tokenizer; warn when the trainer
    would cut it (error if nothing is left to learn)."""
    sides = preference_sides(example) if dpo else (example,)
    counted = [training.count(side) for side in sides]
    tokens = max(t for t, _ in counted)
    if tokens <= training.max_len:
        return
    cut = report.cut_tokens[line] = tokens - training.max_len
    unit = "tokens (input and its longer output)" if dpo else "tokens"
    what = (f"{tokens:,} {training.model} {unit}: training cuts it to {training.max_len:,} "
            f"(the last {cut:,} tokens are lost)")
    if all(trainable for _, trainable in counted):
        report.warnings.append(Problem(line, what, "will_be_cut"))
    else:
        report.problems.append(Problem(line, f"{what}, leaving no assistant token to learn from", "cut_to_nothing"))


def validate_file(path: Path | str, model: str | None = None, max_tokens: int | None = None,
                  check_token_limit: bool = True, min_examples: int = MIN_EXAMPLES,
                  training: TrainingCounter | None = None, method: str = "supervised") -> ValidationReport:
    """Validate a chat JSONL: format, content, duplicates, size, and (unless disabled) the model's per-example token limit.

    `method` is the fine-tuning method the file is for: "supervised" (chat examples), "dpo" (preference pairs) or
    "auto" (recognised from the first example).

    `model` picks the tiktoken encoding and the token limit (tokens.token_limit; without a model, MAX_EXAMPLE_TOKENS);
    `max_tokens` overrides the limit. `training` (tokens.local_training_counter) also counts each example with a local
    model's own tokenizer and warns about the ones its trainer would cut; without it the check stays tiktoken-only
    and fast. Never raises for bad content: everything wrong is in `report.problems` (a missing file raises
    FileNotFoundError).
    """
    path = Path(path)
    return validate_bytes(path.read_bytes(), path, model, max_tokens, check_token_limit, min_examples, training, method)


def _prompt_key(messages: Sequence[dict]) -> str:
    """What identifies an example's question: its user messages, whitespace-trimmed."""
    return "\n".join(m["content"].strip() for m in messages
                     if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str))


def _user_keys(path: Path) -> dict[str, int]:
    """Question → first line for every parseable example of a chat (or preference) JSONL."""
    keys: dict[str, int] = {}
    for n, raw in enumerate(path.read_bytes().removeprefix(BOM).split(b"\n"), start=1):
        try:
            example = json.loads(raw.decode("utf-8"))
            key = _prompt_key(example["input"]["messages"] if "input" in example else example["messages"])
        except (ValueError, KeyError, TypeError):
            continue
        if key:
            keys.setdefault(key, n)
    return keys


def check_overlap(train_path: Path | str, valid_path: Path | str) -> list[Problem]:
    """Lines of the validation file whose question also appears in the training file (the sets must be disjoint)."""
    train = _user_keys(Path(train_path))
    return [Problem(n, f"same question as {Path(train_path).name} line {train[key]}: train and validation overlap", "overlap")
            for key, n in _user_keys(Path(valid_path)).items() if key in train]


def main(argv: Iterable[str] | None = None) -> int:
    """The command line: print one line per problem and a summary; exit 1 if any example is invalid."""
    parser = argparse.ArgumentParser(prog="python -m helpers.validate",
                                     description="Validate a chat (or preference, DPO) fine-tuning JSONL file.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--method", choices=["auto", *METHODS], default="auto",
                        help="the fine-tuning method the file is for (default: recognised from its first example)")
    parser.add_argument("--model", help="model to fine-tune: picks the tokenizer and the per-example token limit")
    parser.add_argument("--max-tokens", type=int, help="override the per-example token limit")
    parser.add_argument("--valid", type=Path, help="a validation file: validated too, and checked for overlap with FILE")
    args = parser.parse_args(list(argv) if argv is not None else None)
    status = 0
    model, training = args.model, None
    try:
        cfg = load_config()
    except ConfigError as exc:
        cfg = None
        print(f"note: no configured fine-tuning model ({exc}); checking the {MAX_EXAMPLE_TOKENS:,}-token limit of any model")
    if model is None and cfg is not None:
        model = cfg.base_model
        print(f"model: {model} (the configured fine-tuning model; choose another with --model)")
    try:
        if model and cfg is not None:
            training = local_training_counter(model, cfg.localapi_dir / "models")
    except Exception as exc:  # no tokenizer on this machine: the tiktoken check still runs
        print(f"note: cannot count with {model}'s own tokenizer ({type(exc).__name__}: {exc}); tiktoken estimate only")
    method = args.method
    for path in [args.file] + ([args.valid] if args.valid else []):
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
        if method == "auto":
            method = detect_method(path.read_bytes())
            if method == "dpo":  # chat files, the usual case, are checked without a word
                print("method: dpo (preference pairs, recognised from the first example; choose with --method)")
        report = validate_file(path, model=model, max_tokens=args.max_tokens, training=training, method=method)
        for line in report.lines():
            print(line)
        print(report.summary())
        status |= 0 if report.ok else 1
    if args.valid:
        overlap = check_overlap(args.file, args.valid)
        for p in overlap:
            print(p.format(str(args.valid)))
        if overlap:
            print(f"{args.valid}: {len(overlap)} examples overlap with {args.file}")
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
