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

Every problem is worded twice where it is found: in English (`Problem.message`: the command line, the server's API
errors) and in Simplified Chinese (`Problem.zh`: what notebooks show the learner, json's own reason translated).
`Problem.format`, `ValidationReport.lines` and `ValidationReport.summary` take `lang="en"` or `"zh"`; the command
line takes `--lang`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

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
LANGS = ("en", "zh")  # English (the command line's default, the server's API errors), Simplified Chinese (notebooks)
JSON_TYPES_ZH = {"string": "字符串", "number": "数字", "boolean": "布尔值", "array": "数组", "object": "对象", "null": "空值（null）"}
# json.JSONDecodeError.msg in Chinese (CPython's reasons; one not listed here is shown as it is, quoted)
JSON_ERRORS_ZH = {
    "Expecting value": "这里应该是一个值（字符串、数字、对象、数组、true、false 或 null），可能是这一行在中途断了",
    "Expecting ',' delimiter": "这里缺少分隔用的逗号 ','",
    "Expecting ':' delimiter": "键名后面缺少冒号 ':'",
    "Expecting property name enclosed in double quotes": "这里应该是用双引号括起来的键名（JSON 的键名不能用单引号，"
                                                          "最后一项后面也不能有逗号）",
    "Unterminated string starting at": "从这里开始的字符串没有结束（缺少右边的双引号）",
    "Invalid control character at": "字符串里有没转义的控制字符（换行、制表符要写成 \\n、\\t）",
    "Extra data": "一个完整的 JSON 值后面还有多余的内容（每行只能放一条样本）",
    "Invalid \\escape": "无效的转义：反斜杠 \\ 后面的字符不能转义（反斜杠本身要写成 \\\\）",
    "Invalid \\uXXXX escape": "无效的 \\uXXXX 转义：\\u 后面要跟 4 个十六进制数字",
    "Illegal trailing comma before end of object": "对象的最后一项后面多了一个逗号",
    "Illegal trailing comma before end of array": "数组的最后一项后面多了一个逗号",
}


class Issue(NamedTuple):
    """A problem of one example: a stable code and what is wrong, in English and in Simplified Chinese."""

    code: str
    message: str
    zh: str


def check_lang(lang: str) -> str:
    """`lang` itself when it is one of LANGS ("en", "zh"); ValueError otherwise."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, not {lang!r}")
    return lang


def json_type_zh(value: Any) -> str:
    """The Chinese name of a parsed value's JSON type ('数组', not 'array')."""
    name = json_type(value)
    return JSON_TYPES_ZH.get(name, name)


def json_error_zh(exc: json.JSONDecodeError) -> str:
    """json's reason for a parse error in Chinese, and its column (a reason not in JSON_ERRORS_ZH stays, quoted)."""
    return f"{JSON_ERRORS_ZH.get(exc.msg, f'“{exc.msg}”')}（第 {exc.colno} 列）"


def _within(issues: Iterable[Issue], en: str, zh: str) -> list[Issue]:
    """The issues of one part of an example, each prefixed with that part: `input: ...`, `input：...`."""
    return [Issue(i.code, f"{en}: {i.message}", f"{zh}：{i.zh}") for i in issues]


@dataclass(frozen=True)
class Problem:
    """One problem: the 1-based line (0 for the file as a whole) and what is wrong, in English and in Chinese."""

    line: int
    message: str  # English
    code: str  # a stable short name, e.g. "invalid_json", "duplicate", "over_token_limit"
    zh: str  # the same in Simplified Chinese

    def text(self, lang: str = "en") -> str:
        """What is wrong in `lang`: "en" (the English message) or "zh" (the Chinese one)."""
        return self.zh if check_lang(lang) == "zh" else self.message

    def format(self, file: str, lang: str = "en") -> str:
        """`FILE:LINE: problem` (just `FILE: problem` for file-level problems; `FILE：问题` in Chinese)."""
        if self.line:
            return f"{file}:{self.line}: {self.text(lang)}"
        return f"{file}：{self.zh}" if check_lang(lang) == "zh" else f"{file}: {self.message}"


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

    def lines(self, lang: str = "en") -> list[str]:
        """Every problem and warning as `FILE:LINE: ...` in `lang` ("en" or "zh"), in line order (file-level ones last)."""
        check_lang(lang)
        items = [(p.line, p.format(str(self.path), lang)) for p in self.problems]
        items += [(w.line, replace(w, message="warning: " + w.message, zh="警告：" + w.zh).format(str(self.path), lang))
                  for w in self.warnings]
        return [text for _, text in sorted(items, key=lambda item: item[0] or 10**12)]

    def summary(self, lang: str = "en") -> str:
        """One paragraph in `lang` ("en" or "zh"): examples, invalid examples, problems, tokens."""
        bad, n_problems, n_warnings = len(self.invalid_lines), len(self.problems), len(self.warnings)
        if check_lang(lang) == "zh":
            unit, what = ("条", "条样本") if self.method == "supervised" else ("个", "个偏好对（DPO）")
            enc = self.encoding + (f"，上限 {self.token_limit:,}" if self.token_limit else "")
            cut = (f"；其中 {len(self.cut_tokens)} {unit}在训练时会被截到 {self.training_length:,} 个 {self.model} 词元"
                   if self.training_length else "")
            return (f"{self.path}：{self.n_examples} {what}，{bad} {unit}无效，{n_problems} 个问题，{n_warnings} 个警告；"
                    f"{self.total_tokens:,} 个词元（{enc}）{cut}" + ("——合格" if self.ok else "——不合格"))
        enc = f"{self.encoding}" + (f", limit {self.token_limit:,}" if self.token_limit else "")
        what = "examples" if self.method == "supervised" else "preference pairs (DPO)"
        head = f"{self.path}: {self.n_examples} {what}, {bad} invalid, {n_problems} problems, {n_warnings} warnings"
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


def check_example(example: Any) -> list[Issue]:
    """Problems of one parsed example as Issue(code, message, zh) triples; empty when it is a valid chat example."""
    if not isinstance(example, dict):
        return [Issue("not_object", f"example must be a JSON object, got {json_type(example)}",
                      f"样本必须是 JSON 对象，实际是{json_type_zh(example)}")]
    if example_method(example) == "dpo":
        return [Issue("preference_example", "this is a preference (DPO) example ('input', 'preferred_output', "
                      "'non_preferred_output'), but supervised fine-tuning needs chat examples {\"messages\": [...]}: "
                      "create the job with method {\"type\": \"dpo\"} (validate with --method dpo)",
                      "这是一条偏好（DPO）样本（'input'、'preferred_output'、'non_preferred_output'），但监督微调需要聊天样本 "
                      "{\"messages\": [...]}：创建作业时用 method {\"type\": \"dpo\"}（校验时用 --method dpo）")]
    out: list[Issue] = []
    allowed = ", ".join(sorted(EXAMPLE_KEYS))
    for key in example:
        if key not in EXAMPLE_KEYS:
            out.append(Issue("unknown_key", f"unknown key {key!r} (allowed: {allowed})", f"未知的键 {key!r}（允许的键：{allowed}）"))
    if "messages" not in example:
        return out + [Issue("missing_messages", "missing key 'messages'", "缺少键 'messages'")]
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        got, got_zh = ("an empty array", "空数组") if messages == [] else (json_type(messages), json_type_zh(messages))
        return out + [Issue("bad_messages", f"'messages' must be a non-empty array, got {got}",
                            f"'messages' 必须是非空数组，实际是{got_zh}")]
    assistants, weighted = 0, 0
    for i, m in enumerate(messages, start=1):
        out += _check_message(i, m)
        if isinstance(m, dict) and m.get("role") == "assistant":
            assistants += 1
            weighted += m.get("weight", 1) != 0
    out += check_tool_use(example, messages)
    last = messages[-1]
    if assistants == 0:
        out.append(Issue("no_assistant", "no assistant message: there is nothing to train on",
                         "没有 assistant 消息：没有可以训练的内容（至少要有一条 assistant 的回答）"))
    elif not (isinstance(last, dict) and last.get("role") == "assistant"):
        role = last.get("role") if isinstance(last, dict) else None
        out.append(Issue("assistant_not_last", f"the last message must be the assistant's, got {role!r}",
                         f"最后一条消息必须是 assistant 的，实际是 {role!r} 的"))
    elif weighted == 0:
        out.append(Issue("all_weight_zero", "every assistant message has weight 0: nothing to train on",
                         "每条 assistant 消息的 weight 都是 0：没有可以训练的内容"))
    return out


def check_preference_example(example: Any) -> list[Issue]:
    """Problems of one parsed preference (DPO) example as Issue(code, message, zh) triples; empty when it is valid."""
    if not isinstance(example, dict):
        return [Issue("not_object", f"example must be a JSON object, got {json_type(example)}",
                      f"样本必须是 JSON 对象，实际是{json_type_zh(example)}")]
    if example_method(example) == "supervised":
        return [Issue("supervised_example", "this is a chat example {\"messages\": [...]} for supervised fine-tuning, but "
                      "DPO needs preference examples with 'input', 'preferred_output' and 'non_preferred_output': "
                      "create the job with method {\"type\": \"supervised\"} (validate with --method supervised)",
                      "这是一条监督微调用的聊天样本 {\"messages\": [...]}，但 DPO 需要带 'input'、'preferred_output' 和 "
                      "'non_preferred_output' 的偏好样本：创建作业时用 method {\"type\": \"supervised\"}"
                      "（校验时用 --method supervised）")]
    allowed = ", ".join(sorted(PREFERENCE_KEYS))
    out = [Issue("unknown_key", f"unknown key {key!r} (allowed: {allowed})", f"未知的键 {key!r}（允许的键：{allowed}）")
           for key in example if key not in PREFERENCE_KEYS]
    out += _check_input(example.get("input"), "input" in example)
    outputs = [_check_output(example, key) for key in OUTPUTS]
    for problems, _ in outputs:
        out += problems
    (_, preferred), (_, rejected) = outputs
    if preferred is not None and rejected is not None and _answer_key(preferred) == _answer_key(rejected):
        out.append(Issue("identical_outputs", "preferred_output and non_preferred_output are the same answer: the pair "
                                              "shows no preference to learn",
                         "preferred_output 和 non_preferred_output 是同一个回答：这个偏好对没有可学的偏好"))
    return out


def _check_input(value: Any, present: bool) -> list[Issue]:
    """Problems of a preference example's `input` (its messages, tools, and that it awaits the assistant's reply)."""
    if not present:
        return [Issue("missing_input", "missing key 'input' (the conversation the two outputs answer)",
                      "缺少键 'input'（两个输出所回答的那段对话）")]
    if not isinstance(value, dict):
        return [Issue("bad_input", f"'input' must be an object {{\"messages\": [...]}}, got {json_type(value)}",
                      f"'input' 必须是对象 {{\"messages\": [...]}}，实际是{json_type_zh(value)}")]
    allowed = ", ".join(sorted(INPUT_KEYS))
    out = [Issue("unknown_key", f"input: unknown key {key!r} (allowed: {allowed})", f"input：未知的键 {key!r}（允许的键：{allowed}）")
           for key in value if key not in INPUT_KEYS]
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        if "messages" not in value:
            got, zh = "missing", "input：缺少 'messages'（一个非空数组）"
        else:
            got = "an empty array" if messages == [] else json_type(messages)
            zh = f"input：'messages' 必须是非空数组，实际是{'空数组' if messages == [] else json_type_zh(messages)}"
        return out + [Issue("bad_messages", f"input: 'messages' must be a non-empty array, got {got}", zh)]
    for i, m in enumerate(messages, start=1):
        out += _within(_check_message(i, m), "input", "input")
    out += _within(check_tool_use(value, messages), "input", "input")
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        out.append(Issue("input_ends_with_assistant",
                         f"input: the last message ({len(messages)}) is the assistant's, but the input must end where "
                         "the assistant answers: the answers belong in preferred_output and non_preferred_output",
                         f"input：最后一条消息（第 {len(messages)} 条）是 assistant 的，但 input 必须停在 assistant "
                         "回答之前：回答应该放在 preferred_output 和 non_preferred_output 里"))
    return out


def _check_output(example: dict, key: str) -> tuple[list[Issue], dict | None]:
    """Problems of `preferred_output` or `non_preferred_output` (one assistant message), and that message if usable."""
    if key not in example:
        return [Issue("missing_output", f"missing key {key!r} (a list with one assistant message)",
                      f"缺少键 {key!r}（一个只含一条 assistant 消息的列表）")], None
    value = example[key]
    if not isinstance(value, list):
        return [Issue("bad_output", f"{key} must be a list with one assistant message, got {json_type(value)}",
                      f"{key} 必须是只含一条 assistant 消息的列表，实际是{json_type_zh(value)}")], None
    if not value:
        return [Issue("empty_output", f"{key} is empty: it needs one assistant message",
                      f"{key} 是空的：它需要一条 assistant 消息")], None
    if len(value) > 1:
        return [Issue("bad_output", f"{key} has {len(value)} messages: it must hold exactly one assistant message",
                      f"{key} 有 {len(value)} 条消息：它必须正好只有一条 assistant 消息")], None
    message = value[0]
    out = _within(_check_message(1, message), key, key)
    if not isinstance(message, dict):
        return out, None
    if message.get("role") != "assistant":
        out.append(Issue("output_not_assistant", f"{key}: the message's role is {message.get('role')!r}, but an output "
                                                 "is the assistant's answer (role 'assistant')",
                         f"{key}：消息的 role 是 {message.get('role')!r}，但输出是 assistant 的回答（role 应为 'assistant'）"))
    if "weight" in message:
        out.append(Issue("bad_weight", f"{key}: 'weight' is not allowed in an output (every output is learned from)",
                         f"{key}：输出里不允许有 'weight'（每个输出都要学习）"))
    tools = {k: v for k, v in example.get("input", {}).items() if k != "messages"} if isinstance(example.get("input"), dict) else {}
    if message.get("tool_calls") is not None:
        out += _within(check_tool_use(tools, [message]), key, key)
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


def declared_functions(tools: Any) -> tuple[set[str], list[Issue]]:
    """The function names a `tools` list declares, and its problems (OpenAI: type 'function', a valid unique name)."""
    if not isinstance(tools, list):
        return set(), [Issue("bad_tools", f"'tools' must be an array, got {json_type(tools)}",
                             f"'tools' 必须是数组，实际是{json_type_zh(tools)}")]
    names: set[str] = set()
    out: list[Issue] = []
    for t, tool in enumerate(tools, start=1):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            out.append(Issue("bad_tool", f"tool {t}: must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                             f"第 {t} 个工具：必须是 {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
            out.append(Issue("bad_tool", f"tool {t}: function name {name!r} must be 1-64 letters, digits, '_' or '-'",
                             f"第 {t} 个工具：函数名 {name!r} 必须由 1-64 个字母、数字、'_' 或 '-' 组成"))
        elif name in names:
            out.append(Issue("bad_tool", f"tool {t}: function {name!r} is declared twice", f"第 {t} 个工具：函数 {name!r} 声明了两次"))
        else:
            names.add(name)
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            params = fn["parameters"]
            out.append(Issue("bad_tool", f"tool {t} ({name}): 'parameters' must be a JSON schema object, got {json_type(params)}",
                             f"第 {t} 个工具（{name}）：'parameters' 必须是 JSON schema 对象，实际是{json_type_zh(params)}"))
    return names, out


def check_tool_use(example: dict, messages: list) -> list[Issue]:
    """OpenAI's checks of tool-calling data: calls name declared functions, arguments are JSON, tool messages answer a call."""
    uses = "tools" in example or any(isinstance(m, dict) and (m.get("tool_calls") is not None or m.get("role") == "tool")
                                     for m in messages)
    if not uses:
        return []
    names, out = declared_functions(example.get("tools", []))
    parallel = example.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        out.append(Issue("bad_parallel_tool_calls", f"'parallel_tool_calls' must be true or false, got {json.dumps(parallel)}",
                         f"'parallel_tool_calls' 必须是 true 或 false，实际是 {json.dumps(parallel, ensure_ascii=False)}"))
    open_ids: dict[str, int] = {}  # tool call id -> message number of the call, until a tool message answers it
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                out.append(Issue("missing_tool_call_id", f"message {i} (tool): needs the 'tool_call_id' of the call it answers",
                                 f"第 {i} 条消息（tool）：需要写上它所回答的那次调用的 'tool_call_id'"))
            elif call_id not in open_ids:
                out.append(Issue("unmatched_tool_call_id", f"message {i} (tool): tool_call_id {call_id!r} answers no earlier "
                                                           "assistant tool call",
                                 f"第 {i} 条消息（tool）：tool_call_id {call_id!r} 没有对应前面任何一次 assistant 的工具调用"))
            else:
                del open_ids[call_id]
            continue
        if open_ids and role != "tool":
            ids = ", ".join(repr(k) for k in open_ids)
            first = min(open_ids.values())
            out.append(Issue("unanswered_tool_call", f"message {i} ({role}): tool call {ids} of message "
                                                     f"{first} has no tool message before it",
                             f"第 {i} 条消息（{role}）：第 {first} 条消息的工具调用 {ids} 在它之前没有 tool 消息回答"))
            open_ids.clear()
        calls = m.get("tool_calls")
        if calls is None:
            continue
        where, where_zh = f"message {i} ({role})", f"第 {i} 条消息（{role}）"
        if role != "assistant":
            out.append(Issue("bad_tool_calls", f"{where}: only assistant messages may have 'tool_calls'",
                             f"{where_zh}：只有 assistant 消息可以有 'tool_calls'"))
            continue
        if not isinstance(calls, list) or not calls:
            out.append(Issue("bad_tool_calls", f"{where}: 'tool_calls' must be a non-empty array",
                             f"{where_zh}：'tool_calls' 必须是非空数组"))
            continue
        if parallel is False and len(calls) > 1:
            out.append(Issue("parallel_tool_calls", f"{where}: {len(calls)} tool calls, but 'parallel_tool_calls' is false",
                             f"{where_zh}：有 {len(calls)} 个工具调用，但 'parallel_tool_calls' 是 false（每条消息只能调用一次）"))
        if not names and "tools" not in example:
            out.append(Issue("undeclared_function", f"{where}: has tool_calls but the example declares no 'tools'",
                             f"{where_zh}：有 tool_calls，但这条样本没有声明 'tools'"))
        for c, call in enumerate(calls, start=1):
            fn = call.get("function") if isinstance(call, dict) else None
            at, at_zh = f"{where}, tool call {c}", f"{where_zh}，第 {c} 个工具调用"
            if not isinstance(call, dict) or not isinstance(fn, dict):
                shape = "{\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}"
                out.append(Issue("bad_tool_call", f"{at}: must be {shape}", f"{at_zh}：必须是 {shape}"))
                continue
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                out.append(Issue("bad_tool_call", f"{at}: needs a string 'id'", f"{at_zh}：需要一个字符串 'id'"))
            elif call_id in open_ids:
                out.append(Issue("bad_tool_call", f"{at}: id {call_id!r} is used twice", f"{at_zh}：id {call_id!r} 用了两次"))
            elif i < len(messages):  # the last message's calls are what the model learns to make: no answer follows
                open_ids[call_id] = i
            if call.get("type", "function") != "function":
                out.append(Issue("bad_tool_call", f"{at}: type must be 'function', got {call.get('type')!r}",
                                 f"{at_zh}：type 必须是 'function'，实际是 {call.get('type')!r}"))
            name = fn.get("name")
            if names and name not in names:
                declared = ", ".join(sorted(names))
                out.append(Issue("undeclared_function", f"{at}: function {name!r} is not declared in 'tools' "
                                                        f"(declared: {declared})",
                                 f"{at_zh}：函数 {name!r} 没有在 'tools' 里声明（已声明：{declared}）"))
            args = fn.get("arguments")
            if not isinstance(args, str):
                out.append(Issue("bad_arguments", f"{at} ({name}): 'arguments' must be a JSON string, got {json_type(args)}",
                                 f"{at_zh}（{name}）：'arguments' 必须是 JSON 字符串，实际是{json_type_zh(args)}"))
                continue
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError as exc:
                out.append(Issue("bad_arguments", f"{at} ({name}): arguments are not valid JSON: {exc.msg} "
                                                  f"(column {exc.colno})",
                                 f"{at_zh}（{name}）：arguments 不是合法的 JSON：{json_error_zh(exc)}"))
                continue
            if not isinstance(parsed, dict):
                out.append(Issue("bad_arguments", f"{at} ({name}): arguments must be a JSON object, got {json_type(parsed)}",
                                 f"{at_zh}（{name}）：arguments 必须是 JSON 对象，实际是{json_type_zh(parsed)}"))
    if open_ids:
        ids = ", ".join(repr(k) for k in open_ids)
        out.append(Issue("unanswered_tool_call", f"tool call {ids} has no tool message", f"工具调用 {ids} 没有 tool 消息回答"))
    return out


def _check_message(i: int, m: Any) -> list[Issue]:
    """Problems of message number i (1-based) of an example."""
    if not isinstance(m, dict):
        return [Issue("bad_message", f"message {i} must be an object, got {json_type(m)}",
                      f"第 {i} 条消息必须是对象，实际是{json_type_zh(m)}")]
    allowed = ", ".join(sorted(MESSAGE_KEYS))
    out = [Issue("unknown_message_key", f"message {i}: unknown key {k!r} (allowed: {allowed})",
                 f"第 {i} 条消息：未知的键 {k!r}（允许的键：{allowed}）") for k in m if k not in MESSAGE_KEYS]
    role = m.get("role")
    if "role" not in m:
        out.append(Issue("missing_role", f"message {i}: missing 'role'", f"第 {i} 条消息：缺少 'role'"))
    elif role not in ROLES:
        roles = ", ".join(sorted(ROLES))
        out.append(Issue("bad_role", f"message {i}: role {role!r} is not one of {roles}",
                         f"第 {i} 条消息：role {role!r} 不是 {roles} 之一"))
    where, where_zh = (f"message {i} ({role})", f"第 {i} 条消息（{role}）") if isinstance(role, str) else (f"message {i}", f"第 {i} 条消息")
    content = m.get("content")
    calls = m.get("function_call") is not None or m.get("tool_calls") is not None
    if "content" not in m and not calls:
        out.append(Issue("missing_content", f"{where}: missing 'content'", f"{where_zh}：缺少 'content'"))
    elif content is None and not calls:
        out.append(Issue("missing_content", f"{where}: content is null", f"{where_zh}：content 是 null"))
    elif content is not None and not isinstance(content, str):
        out.append(Issue("content_not_string", f"{where}: content must be a string, got {json_type(content)}",
                         f"{where_zh}：content 必须是字符串，实际是{json_type_zh(content)}"))
    elif isinstance(content, str) and not content.strip() and not calls:
        out.append(Issue("empty_content", f"{where}: content is {'empty' if not content else 'whitespace only'}",
                         f"{where_zh}：content {'是空的' if not content else '只有空白字符'}"))
    if "name" in m and not isinstance(m["name"], str):
        out.append(Issue("bad_name", f"{where}: name must be a string, got {json_type(m['name'])}",
                         f"{where_zh}：name 必须是字符串，实际是{json_type_zh(m['name'])}"))
    if "weight" in m:
        w = m["weight"]
        if role != "assistant":
            out.append(Issue("bad_weight", f"{where}: weight is only allowed on assistant messages",
                             f"{where_zh}：只有 assistant 消息可以有 weight"))
        elif isinstance(w, bool) or w not in (0, 1):
            out.append(Issue("bad_weight", f"{where}: weight must be 0 or 1, got {json.dumps(w)}",
                             f"{where_zh}：weight 只能是 0 或 1，实际是 {json.dumps(w, ensure_ascii=False)}"))
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


def _at(line: int, issue: Issue) -> Problem:
    """An example's issue as the problem of its line."""
    return Problem(line, issue.message, issue.code, issue.zh)


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


def _utf8_problem(raw: bytes) -> Issue:
    """Where a line stops being valid UTF-8."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte, at = f"0x{raw[exc.start]:02x}", exc.start + 1
        return Issue("invalid_utf8", f"not valid UTF-8 (byte {byte} at byte {at} of the line): save the file as UTF-8",
                     f"不是合法的 UTF-8（这一行的第 {at} 个字节 {byte}）：请把文件另存为 UTF-8 编码")
    return Issue("invalid_utf8", "not valid UTF-8", "不是合法的 UTF-8")


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
        problems.append(Problem(1, "file starts with a UTF-8 byte order mark (BOM): save it as UTF-8 without BOM", "bom",
                                zh="文件开头有 UTF-8 字节顺序标记（BOM）：请另存为不带 BOM 的 UTF-8"))
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
                problems.append(_at(n, _utf8_problem(text)))
                continue
            if text.endswith("\r"):
                text = text[:-1]
                crlf += 1
                if crlf == 1:
                    warnings.append(Problem(n, "line ends with CRLF (\\r\\n); accepted, but prefer LF line endings", "crlf",
                                            zh="这一行以 CRLF（\\r\\n）结尾；可以接受，但最好用 LF 换行"))
            if not text or text.isspace():
                problems.append(Problem(n, "blank line: every line must hold one JSON example", "blank_line",
                                        zh="空行：每一行都必须是一条 JSON 样本（删掉这一行）"))
                continue
            report.n_examples += 1
            try:
                example = loads(text)
            except json.JSONDecodeError as exc:
                problems.append(Problem(n, f"not valid JSON: {exc.msg} (column {exc.colno})", "invalid_json",
                                        zh=f"不是合法的 JSON：{json_error_zh(exc)}"))
                continue
            split = None
            if not dpo and _plain_valid(example):  # the common case: role/content messages, counted under the same rule as below
                messages = example["messages"]
                ids = tuple([put(v, len(index)) for m in messages for v in (m["role"], m["content"])])
                fixed, key, replies, roles = TOKENS_REPLY_PRIMING + fixed_per_message * len(messages), ids, None, None  # from ids
            elif dpo:
                found = check_preference_example(example)
                if found:
                    problems.extend(_at(n, issue) for issue in found)
                    continue
                sides = preference_sides(example)
                if training and not training.supports_tools and any(_uses_tools(side) for side in sides):
                    problems.append(_at(n, _tools_unsupported(training)))
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
                    problems.extend(_at(n, issue) for issue in found)
                    continue
                if training and not training.supports_tools and _uses_tools(example):
                    problems.append(_at(n, _tools_unsupported(training)))
                    continue
                fixed, ids = chat_text_ids(example["messages"], index)
                if "tools" in example:  # the declared functions are part of the prompt
                    ids += (put(json.dumps(example["tools"], ensure_ascii=False), len(index)),)
                replies = tuple(put(m["content"], len(index)) for m in example["messages"]
                                if m.get("role") == "assistant" and isinstance(m.get("content"), str))
                roles = {m["role"] for m in example["messages"]}
                key = json.dumps(example["messages"], sort_keys=True, ensure_ascii=False)
            if key in seen:
                problems.append(Problem(n, f"duplicate of line {seen[key]}", "duplicate",
                                        zh=f"与第 {seen[key]} 行重复（删掉其中一行）"))
                continue
            seen[key] = n
            plan.append((n, fixed, ids, replies, roles, split))
            if training:
                examples[n] = example
        counts = counter.finish(index)
    if crlf > 1:
        warnings.append(Problem(0, f"{crlf} lines end with CRLF (first reported above)", "crlf",
                                zh=f"共 {crlf} 行以 CRLF 结尾（第一行已在上面报告）"))
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
            where, where_zh = (f"for {model}", f" {model} ") if model else ("for any model", "任何模型")
            side, side_zh = (" (input and its longer output)", "（input 加上较长的那个输出）") if split is not None else ("", "")
            problems.append(Problem(n, f"{longest:,} tokens{side}, over the {limit:,}-token limit per example {where} "
                                       f"({choice.encoding})", "over_token_limit",
                                    zh=f"{longest:,} 个词元{side_zh}，超过了{where_zh}每条样本 {limit:,} 个词元的上限"
                                       f"（{choice.encoding}）：请缩短或删掉这条样本"))
        elif training:
            _predict_cut(report, n, examples[n], training, dpo)
    for lines, what, code in ((no_system, "system", "no_system"), (no_user, "user", "no_user")):  # the Cookbook's data warnings
        if lines:
            warnings.append(Problem(0, f"{len(lines)} examples have no {what} message (first: line {lines[0]})", code,
                                    zh=f"{len(lines)} 条样本没有 {what} 消息（第一条在第 {lines[0]} 行）"))
    if report.n_examples < min_examples:
        what, what_zh = ("preference pairs", "个偏好对") if dpo else ("examples", "条样本")
        problems.append(Problem(0, f"{report.n_examples} {what}: fine-tuning needs at least {min_examples}", "too_few_examples",
                                zh=f"只有 {report.n_examples} {what_zh}：微调至少需要 {min_examples} {what_zh[0]}"))
    problems.sort(key=lambda p: p.line or 10**12)
    return report


def _uses_tools(example: dict) -> bool:
    """True when an example declares tools or has tool calls or tool messages."""
    return "tools" in example or any(isinstance(m, dict) and (m.get("tool_calls") is not None or m.get("role") == "tool")
                                     for m in example.get("messages", []))


def _tools_unsupported(training: TrainingCounter) -> Issue:
    """The problem of tool-calling data for a local model whose chat template cannot render tools."""
    models = ", ".join(training.tool_models)
    return Issue("tools_unsupported",
                 f"tool calling: the chat template of {training.model} cannot render 'tools' or 'tool_calls', so it "
                 f"cannot be trained on them; base models that can: {models or 'none here'}",
                 f"工具调用：{training.model} 的聊天模板无法渲染 'tools' 或 'tool_calls'，所以不能用这类数据训练它；"
                 f"可以的基础模型：{models or '这里没有'}")


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
    what_zh = (f"{tokens:,} 个 {training.model} 词元{'（input 加上较长的那个输出）' if dpo else ''}：训练时会被截到 "
               f"{training.max_len:,} 个（最后 {cut:,} 个词元丢失）")
    if all(trainable for _, trainable in counted):
        report.warnings.append(Problem(line, what, "will_be_cut", zh=what_zh))
    else:
        report.problems.append(Problem(line, f"{what}, leaving no assistant token to learn from", "cut_to_nothing",
                                       zh=f"{what_zh}，没有剩下可以学习的 assistant 词元：请缩短这条样本"))


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
    name = Path(train_path).name
    return [Problem(n, f"same question as {name} line {train[key]}: train and validation overlap", "overlap",
                    zh=f"和 {name} 第 {train[key]} 行的问题相同：训练集和验证集重叠了")
            for key, n in _user_keys(Path(valid_path)).items() if key in train]


def _say(lang: str, en: str, zh: str) -> str:
    """One of the command line's own lines in `lang`: `zh` for "zh", else `en`."""
    return zh if lang == "zh" else en


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
    parser.add_argument("--lang", choices=LANGS, default="en",
                        help="language of the report: en (English, the default) or zh (Simplified Chinese, as notebooks show it)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    lang = args.lang
    status = 0
    model, training = args.model, None
    try:
        cfg = load_config()
    except ConfigError as exc:
        cfg = None
        print(_say(lang, f"note: no configured fine-tuning model ({exc}); checking the {MAX_EXAMPLE_TOKENS:,}-token limit of any model",
                   f"注意：没有配置微调模型（{exc}）；按任何模型都适用的每条样本 {MAX_EXAMPLE_TOKENS:,} 个词元的上限检查"))
    if model is None and cfg is not None:
        model = cfg.base_model
        print(_say(lang, f"model: {model} (the configured fine-tuning model; choose another with --model)",
                   f"模型：{model}（配置的微调模型；用 --model 换一个）"))
    try:
        if model and cfg is not None:
            training = local_training_counter(model, cfg.localapi_dir / "models", lang)
    except Exception as exc:  # no tokenizer on this machine: the tiktoken check still runs
        print(_say(lang, f"note: cannot count with {model}'s own tokenizer ({type(exc).__name__}: {exc}); tiktoken estimate only",
                   f"注意：无法用 {model} 自己的分词器计数（{type(exc).__name__}: {exc}）；只用 tiktoken 估计"))
    method = args.method
    for path in [args.file] + ([args.valid] if args.valid else []):
        if not path.is_file():
            print(_say(lang, f"{path}: no such file", f"{path}：文件不存在"), file=sys.stderr)
            return 2
        if method == "auto":
            method = detect_method(path.read_bytes())
            if method == "dpo":  # chat files, the usual case, are checked without a word
                print(_say(lang, "method: dpo (preference pairs, recognised from the first example; choose with --method)",
                           "方法：dpo（偏好对，根据第一条样本识别；用 --method 指定）"))
        report = validate_file(path, model=model, max_tokens=args.max_tokens, training=training, method=method)
        for line in report.lines(lang):
            print(line)
        print(report.summary(lang))
        status |= 0 if report.ok else 1
    if args.valid:
        overlap = check_overlap(args.file, args.valid)
        for p in overlap:
            print(p.format(str(args.valid), lang))
        if overlap:
            print(_say(lang, f"{args.valid}: {len(overlap)} examples overlap with {args.file}",
                       f"{args.valid}：{len(overlap)} 条样本与 {args.file} 重叠"))
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
