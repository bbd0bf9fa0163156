"""The chat JSONL validator: a corpus of bad inputs, each with its specific error and line; the CLI; overlap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import validate
from helpers.config import REPO_ROOT
from helpers.tokens import TrainingCounter


def example(q: str = "头疼怎么办？", a: str = "多休息。", system: str | None = "你是医生") -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs}


def good_lines(n: int = 12) -> list[str]:
    return [json.dumps(example(f"问题{i}", f"答案{i}"), ensure_ascii=False) for i in range(n)]


def write(tmp_path, lines: list[str] | bytes, name: str = "f.jsonl"):
    path = tmp_path / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def test_clean_file_is_ok(tmp_path):
    report = validate.validate_file(write(tmp_path, good_lines()), model="gpt-4o-mini-2024-07-18")
    assert report.ok and report.n_examples == 12 and not report.warnings
    assert report.encoding == "o200k_base" and report.token_limit == 65536
    assert len(report.token_counts) == 12 and report.total_tokens == sum(report.token_counts.values())


BAD = {  # name: (line 6 replaced by this JSON text, expected code, words in the message)
    "malformed_json": ('{"messages": [', "invalid_json", "not valid JSON"),
    "not_object": ('["a", "b"]', "not_object", "JSON object"),
    "missing_messages": ('{}', "missing_messages", "missing key 'messages'"),
    "empty_messages": ('{"messages": []}', "bad_messages", "non-empty"),
    "unknown_top_key": (json.dumps({**example(), "extra": 1}), "unknown_key", "'extra'"),
    "wrong_role": (json.dumps({"messages": [{"role": "doctor", "content": "x"}, {"role": "assistant", "content": "y"}]}), "bad_role", "'doctor'"),
    "missing_role": (json.dumps({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}), "missing_role", "missing 'role'"),
    "unknown_message_key": (json.dumps({"messages": [{"role": "user", "content": "x", "mood": "ok"}, {"role": "assistant", "content": "y"}]}), "unknown_message_key", "'mood'"),
    "content_not_string": (json.dumps({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "y"}]}), "content_not_string", "got number"),
    "content_missing": (json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}), "missing_content", "missing 'content'"),
    "empty_content": (json.dumps(example(a="")), "empty_content", "empty"),
    "whitespace_content": (json.dumps(example(q=" \n\t　")), "empty_content", "whitespace only"),
    "no_assistant": (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no_assistant", "no assistant message"),
    "assistant_not_last": (json.dumps({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}), "assistant_not_last", "last message"),
    "bad_weight": (json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0.5}]}), "bad_weight", "0 or 1"),
    "bool_weight": (json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": True}]}), "bad_weight", "got true"),
    "weight_on_user": (json.dumps({"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]}), "bad_weight", "only allowed on assistant"),
    "all_weight_zero": (json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}), "all_weight_zero", "weight 0"),
    "message_not_object": (json.dumps({"messages": ["hi", {"role": "assistant", "content": "y"}]}), "bad_message", "message 1"),
    "duplicate": (None, "duplicate", "duplicate of line 2"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_line_reports_its_problem_and_line(tmp_path, name):
    text, code, words = BAD[name]
    lines = good_lines()
    lines[5] = lines[1] if text is None else text
    report = validate.validate_file(write(tmp_path, lines), model="gpt-4o-mini")
    assert not report.ok
    assert [(p.line, p.code) for p in report.problems] == [(6, code)], report.problems
    assert words in report.problems[0].message
    assert report.lines()[0].startswith(f"{tmp_path / 'f.jsonl'}:6: ")


def test_valid_weights_and_multi_turn_are_accepted(tmp_path):
    lines = good_lines()
    lines[3] = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
                                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "weight": 1}]})
    report = validate.validate_file(write(tmp_path, lines))
    assert report.ok, report.problems


def test_bom_is_reported_on_line_1(tmp_path):
    path = write(tmp_path, validate.BOM + ("\n".join(good_lines()) + "\n").encode())
    report = validate.validate_file(path)
    assert [(p.line, p.code) for p in report.problems] == [(1, "bom")]
    assert report.n_examples == 12  # the rest is still checked


def test_crlf_is_a_warning_with_its_line(tmp_path):
    path = write(tmp_path, ("\r\n".join(good_lines()) + "\r\n").encode())
    report = validate.validate_file(path)
    assert report.ok and report.n_examples == 12
    assert report.warnings[0].line == 1 and report.warnings[0].code == "crlf"
    assert any("warning: line ends with CRLF" in line for line in report.lines())


def test_invalid_utf8_names_the_line(tmp_path):
    raw = [line.encode() for line in good_lines()]
    raw[3] = raw[3].replace("问题3".encode(), b"\xff\xfe")
    report = validate.validate_file(write(tmp_path, b"\n".join(raw) + b"\n"))
    assert [(p.line, p.code) for p in report.problems] == [(4, "invalid_utf8")]
    assert "0xff" in report.problems[0].message


def test_blank_line(tmp_path):
    lines = good_lines()
    lines.insert(4, "   ")
    report = validate.validate_file(write(tmp_path, lines))
    assert [(p.line, p.code) for p in report.problems] == [(5, "blank_line")]
    assert report.n_examples == 12


def test_over_long_example_against_model_limit(tmp_path):
    lines = good_lines()
    lines[7] = json.dumps(example(a="血压" * 5000), ensure_ascii=False)
    path = write(tmp_path, lines)
    report = validate.validate_file(path, model="gpt-3.5-turbo-0613")
    assert [(p.line, p.code) for p in report.problems] == [(8, "over_token_limit")]
    assert "4,096-token limit" in report.problems[0].message
    assert validate.validate_file(path, model="gpt-4o-mini").ok
    assert not validate.validate_file(path, max_tokens=100).ok
    assert validate.validate_file(path, model="gpt-3.5-turbo-0613", check_token_limit=False).ok


def test_too_few_examples_is_a_file_level_problem(tmp_path):
    report = validate.validate_file(write(tmp_path, good_lines(9)))
    assert [(p.line, p.code) for p in report.problems] == [(0, "too_few_examples")]
    assert report.lines() == [f"{tmp_path / 'f.jsonl'}: 9 examples: fine-tuning needs at least 10"]
    assert validate.validate_file(write(tmp_path, good_lines(3)), min_examples=1).ok


def test_garbage_never_crashes(tmp_path):
    junk = [b"\x00\x01", b"null", b"1e999", b'{"messages": null}', b'{"messages": [null]}', b'{"messages": [{"role": 5, "content": "x"}]}',
            b'{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}]}', b"\xef\xbb\xbf{}", b"[[[", b'"\\ud800"']
    report = validate.validate_file(write(tmp_path, b"\n".join(junk)))
    assert report.invalid_lines == set(range(1, 11))  # line 7's tool call names no function and no tools are declared


def test_overlap_between_train_and_valid(tmp_path):
    train = write(tmp_path, good_lines(), "train.jsonl")
    valid_lines = [json.dumps(example(f"新问题{i}", "答"), ensure_ascii=False) for i in range(3)]
    valid_lines.append(json.dumps(example(" 问题5 ", "另一个答案"), ensure_ascii=False))  # same question, whitespace aside
    problems = validate.check_overlap(train, write(tmp_path, valid_lines, "valid.jsonl"))
    assert [(p.line, p.code) for p in problems] == [(4, "overlap")]
    assert "train.jsonl line 6" in problems[0].message


def run_cli(*args, work_dir=None):
    env = dict(os.environ)
    if work_dir is not None:  # a work folder whose model cache is the tests' one (the tokenizer is converted once)
        env["WORKBOOK_WORK_DIR"] = str(work_dir)
    return subprocess.run([sys.executable, "-m", "helpers.validate", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def work_dir(tmp_path, engine_cache):
    folder = tmp_path / "work"
    (folder / "localapi").mkdir(parents=True)
    (folder / "localapi" / "models").symlink_to(engine_cache)
    return folder


def test_cli_clean_file_exits_0(tmp_path):
    out = run_cli(write(tmp_path, good_lines()), "--model", "gpt-4o-mini")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK") and "12 examples, 0 invalid" in out.stdout


def test_cli_reports_file_line_problem_and_exits_1(tmp_path):
    lines = good_lines()
    lines[2] = "{oops"
    lines[9] = lines[0]
    path = write(tmp_path, lines)
    out = run_cli(path, "--model", "gpt-4o-mini")
    assert out.returncode == 1
    printed = out.stdout.splitlines()
    assert printed[0].startswith(f"{path}:3: not valid JSON")
    assert printed[1] == f"{path}:10: duplicate of line 1"
    assert "2 invalid" in printed[-1] and "NOT OK" in printed[-1]


def test_cli_overlap_and_missing_file(tmp_path):
    train = write(tmp_path, good_lines(), "train.jsonl")
    valid = write(tmp_path, good_lines(), "valid.jsonl")
    out = run_cli(train, "--valid", valid, "--model", "gpt-4o-mini")  # an OpenAI model: no local tokenizer to convert
    assert out.returncode == 1 and f"{valid}:1: same question" in out.stdout
    assert run_cli(tmp_path / "nope.jsonl", "--model", "gpt-4o-mini").returncode == 2


def test_assistant_tokens_are_counted_per_example(tmp_path):
    from helpers.tokens import count_text_tokens

    lines = good_lines()
    lines[0] = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "血压高", "weight": 0},
                                        {"role": "user", "content": "b"}, {"role": "assistant", "content": "多休息"}]}, ensure_ascii=False)
    report = validate.validate_file(write(tmp_path, lines))
    assert report.assistant_token_counts[1] == count_text_tokens("血压高") + count_text_tokens("多休息")
    assert report.assistant_token_counts[2] == count_text_tokens("答案1")


def test_missing_system_or_user_messages_are_warnings(tmp_path):
    lines = good_lines()
    lines[3] = json.dumps(example(q="问题3", system=None), ensure_ascii=False)
    lines[5] = json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a", "weight": 1}]})
    report = validate.validate_file(write(tmp_path, lines))
    assert report.ok
    assert [(w.code, w.message) for w in report.warnings] == [
        ("no_system", "1 examples have no system message (first: line 4)"), ("no_user", "1 examples have no user message (first: line 6)")]


def test_counts_while_parsing_match_counting_each_example(tmp_path, monkeypatch):
    """Strings handed to the encoder threads during parsing (every 1,024 lines) give the same counts as one by one."""
    import functools

    from helpers.tokens import BackgroundCounter, count_chat_tokens

    monkeypatch.setattr(validate, "BackgroundCounter", functools.partial(BackgroundCounter, batch=50, workers=2))
    examples = [example(f"第{i}个问题：咳嗽{i % 7}天 ", f"答案{i}，多喝水。" * (i % 5 + 1)) for i in range(2_500)]
    report = validate.validate_file(write(tmp_path, [json.dumps(e, ensure_ascii=False) for e in examples]))
    assert report.ok and report.n_examples == 2_500
    assert [report.token_counts[n] for n in range(1, 2_501)] == [count_chat_tokens(e["messages"]) for e in examples]


# ---- tool-calling data (OpenAI's documented format) ------------------------------------------------
WEATHER = {"type": "function", "function": {"name": "get_current_weather", "description": "Get the current weather",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def tool_example(i: int = 0, name: str = "get_current_weather", arguments: str | None = None, answer_id: str = "call_1") -> dict:
    """A tool call, the tool's answer, and the assistant's reply (as the OpenAI Cookbook's function-calling data)."""
    args = arguments if arguments is not None else json.dumps({"location": f"城市{i}"}, ensure_ascii=False)
    return {"messages": [{"role": "system", "content": "你是天气助手"}, {"role": "user", "content": f"城市{i}天气？"},
                         {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                               "function": {"name": name, "arguments": args}}]},
                         {"role": "tool", "tool_call_id": answer_id, "content": "{\"temperature\": 22}"},
                         {"role": "assistant", "content": f"城市{i}现在22度。"}],
            "tools": [WEATHER], "parallel_tool_calls": False}


def tool_lines(n: int = 12) -> list[str]:
    lines = [json.dumps(tool_example(i), ensure_ascii=False) for i in range(n - 1)]
    call_last = {"messages": [{"role": "user", "content": "北京天气？"},  # OpenAI's minimal example: the call is the answer
                              {"role": "assistant", "tool_calls": [{"id": "call_x", "type": "function", "function": {
                                  "name": "get_current_weather", "arguments": "{\"location\": \"北京\"}"}}]}],
                 "tools": [WEATHER]}
    return lines + [json.dumps(call_last, ensure_ascii=False)]


def test_valid_tool_calling_file_passes(tmp_path):
    report = validate.validate_file(write(tmp_path, tool_lines()), model="gpt-4o-mini-2024-07-18")
    assert report.ok, report.lines()
    plain = validate.validate_file(write(tmp_path, [json.dumps({"messages": json.loads(line)["messages"][:2] + [
        {"role": "assistant", "content": "x"}]}, ensure_ascii=False) for line in tool_lines()], "plain.jsonl"))
    assert report.token_counts[1] > plain.token_counts[1]  # tools and calls are counted too


@pytest.mark.parametrize("bad, code, words", [
    (tool_example(name="get_weather"), "undeclared_function", "message 3 (assistant), tool call 1: function 'get_weather' is not declared"),
    (tool_example(arguments="{location: 上海"), "bad_arguments", "message 3 (assistant), tool call 1 (get_current_weather): arguments are not valid JSON"),
    (tool_example(arguments="[1, 2]"), "bad_arguments", "arguments must be a JSON object, got array"),
    (tool_example(answer_id="call_9"), "unmatched_tool_call_id", "message 4 (tool): tool_call_id 'call_9' answers no earlier assistant tool call"),
    ({**tool_example(), "tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "bad_tool", "tool 1: function name 'bad name!'"),
    ({"messages": tool_example()["messages"][:3] + [{"role": "assistant", "content": "x"}], "tools": [WEATHER]},
     "unanswered_tool_call", "message 4 (assistant): tool call 'call_1' of message 3 has no tool message"),
])
def test_tool_calling_mistakes_are_named_with_their_line(tmp_path, bad, code, words):
    lines = tool_lines()
    lines[4] = json.dumps(bad, ensure_ascii=False)
    report = validate.validate_file(write(tmp_path, lines), model="gpt-4o-mini")
    assert {p.line for p in report.problems} == {5} and report.problems[0].code == code, report.lines()
    assert words in report.problems[0].message
    assert report.lines()[0].startswith(f"{tmp_path / 'f.jsonl'}:5: ")


def test_parallel_tool_calls_false_allows_one_call_per_message(tmp_path):
    two = tool_example()
    call = two["messages"][2]["tool_calls"][0]
    two["messages"][2]["tool_calls"] = [call, {**call, "id": "call_2"}]
    two["messages"].insert(4, {"role": "tool", "tool_call_id": "call_2", "content": "{}"})
    lines = tool_lines()
    lines[0] = json.dumps(two, ensure_ascii=False)
    report = validate.validate_file(write(tmp_path, lines))
    assert [(p.line, p.code) for p in report.problems] == [(1, "parallel_tool_calls")]
    two["parallel_tool_calls"] = True
    lines[0] = json.dumps(two, ensure_ascii=False)
    assert validate.validate_file(write(tmp_path, lines)).ok


def huge_lines() -> list[str]:
    lines = good_lines()
    lines[6] = json.dumps(example("病" * 200_000, "答"), ensure_ascii=False)  # ~200,000 o200k tokens
    return lines


def test_200k_token_example_is_an_error_for_every_model(tmp_path):
    path = write(tmp_path, huge_lines())
    for model in (None, "gpt-4o-mini", "gpt-4.1-2025-04-14", "smollm2-135m-instruct", "some-unknown-model"):
        report = validate.validate_file(path, model=model)
        assert [(p.line, p.code) for p in report.problems] == [(7, "over_token_limit")], model


def test_cli_200k_token_example_exits_1_with_and_without_model(tmp_path, work_dir, monkeypatch):
    monkeypatch.setenv("FINETUNE_BASE_MODEL", "tiny-test")  # the configured model, with a tokenizer converted in seconds
    path = write(tmp_path, huge_lines())
    for args in ((), ("--model", "gpt-4o-mini")):
        out = run_cli(path, *args, work_dir=work_dir)
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"{path}:7: " in out.stdout and "over the" in out.stdout
    assert "model: tiny-test (the configured fine-tuning model" in run_cli(path, work_dir=work_dir).stdout


def test_local_model_predicts_what_the_trainer_cuts(tmp_path, engine_cache):
    from helpers.localapi import models as M
    from helpers.localapi import trainer as T
    from helpers.tokens import local_training_counter

    lines = good_lines()
    lines[3] = json.dumps(example("问题", "很长的回答" * 120), ensure_ascii=False)  # over tiny-test's 512 tokens, under 4,096 o200k
    path = write(tmp_path, lines)
    counter = local_training_counter("tiny-test", engine_cache)
    assert counter.max_len == M.get_spec("tiny-test").max_seq_len == 512 and not counter.supports_tools
    report = validate.validate_file(path, model="tiny-test", training=counter)
    tok = M.load_tokenizer("tiny-test", engine_cache)
    real = T.encode_example(tok, json.loads(lines[3])["messages"], 512, M.stop_token_ids(tok))
    assert real.truncated and report.cut_tokens == {4: real.full_length - 512}
    assert [(w.line, w.code) for w in report.warnings if w.code == "will_be_cut"] == [(4, "will_be_cut")]
    assert report.ok and "1 would be cut to 512 tiny-test tokens" in report.summary()
    assert not validate.validate_file(path, model="tiny-test").cut_tokens  # without a counter: the fast tiktoken check only


def test_local_model_whose_template_cannot_render_tools_rejects_tool_data(tmp_path, engine_cache):
    from helpers.tokens import local_training_counter

    counter = local_training_counter("ft:tiny-test:local::abcd1234", engine_cache)
    report = validate.validate_file(write(tmp_path, tool_lines()), model="tiny-test", training=counter)
    assert {p.code for p in report.problems} == {"tools_unsupported"} and report.problems[0].line == 1
    assert "tiny-test cannot render 'tools'" in report.problems[0].message
    assert report.problems[0].message.endswith("base models that can: qwen2.5-coder-0.5b-instruct")


# ---- preference (DPO) files ---------------------------------------------------------------------

def pair(q: str = "头疼怎么办？", good: str = "多休息，必要时就医。", bad: str = "不知道。", system: str | None = "你是医生") -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
    return {"input": {"messages": msgs}, "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def pair_lines(n: int = 12) -> list[str]:
    return [json.dumps(pair(f"问题{i}", f"好的答案{i}", f"差的答案{i}"), ensure_ascii=False) for i in range(n)]


def _with(**changes) -> str:
    row = pair()
    for key, value in changes.items():
        if value is None:
            row.pop(key)
        else:
            row[key] = value
    return json.dumps(row, ensure_ascii=False)


USER = {"role": "user", "content": "头疼怎么办？"}
BAD_PAIRS = {  # name: (line 6 replaced by this JSON text, expected code, words in the message)
    "missing_preferred": (_with(preferred_output=None), "missing_output", "missing key 'preferred_output'"),
    "missing_non_preferred": (_with(non_preferred_output=None), "missing_output", "missing key 'non_preferred_output'"),
    "empty_preferred": (_with(preferred_output=[]), "empty_output", "preferred_output is empty"),
    "empty_answer": (_with(non_preferred_output=[{"role": "assistant", "content": " "}]), "empty_content",
                     "non_preferred_output: message 1 (assistant): content is whitespace only"),
    "two_answers": (_with(preferred_output=[{"role": "assistant", "content": "a"}] * 2), "bad_output", "exactly one"),
    "not_a_list": (_with(preferred_output={"role": "assistant", "content": "a"}), "bad_output", "must be a list"),
    "identical": (_with(non_preferred_output=[{"role": "assistant", "content": "多休息，必要时就医。 "}]),
                  "identical_outputs", "the same answer"),
    "user_output": (_with(preferred_output=[{"role": "user", "content": "a"}]), "output_not_assistant", "role is 'user'"),
    "ends_with_assistant": (_with(input={"messages": [USER, {"role": "assistant", "content": "好的"}]}),
                            "input_ends_with_assistant", "input: the last message (2) is the assistant's"),
    "missing_input": (_with(input=None), "missing_input", "missing key 'input'"),
    "empty_input": (_with(input={"messages": []}), "bad_messages", "input: 'messages' must be a non-empty array"),
    "bad_input_message": (_with(input={"messages": [{"role": "doctor", "content": "x"}]}), "bad_role",
                          "input: message 1: role 'doctor'"),
    "chat_line": (json.dumps(example(), ensure_ascii=False), "supervised_example", "this is a chat example"),
    "undeclared_call": (_with(preferred_output=[{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "f", "arguments": "{}"}}]}]), "undeclared_function", "preferred_output: message 1 (assistant)"),
    "duplicate": (None, "duplicate", "duplicate of line 2"),
}


@pytest.mark.parametrize("name", sorted(BAD_PAIRS))
def test_bad_preference_line_reports_its_problem_and_line(tmp_path, name):
    text, code, words = BAD_PAIRS[name]
    lines = pair_lines()
    lines[5] = lines[1] if text is None else text
    report = validate.validate_file(write(tmp_path, lines), model="gpt-4.1-mini-2025-04-14", method="dpo")
    assert report.method == "dpo" and not report.ok
    assert [(p.line, p.code) for p in report.problems] == [(6, code)], report.problems
    assert words in report.problems[0].message, report.problems[0].message


def test_clean_preference_file_is_ok_and_counts_both_sides(tmp_path):
    report = validate.validate_file(write(tmp_path, pair_lines()), model="gpt-4.1-mini-2025-04-14", method="auto")
    assert report.ok and report.method == "dpo" and report.n_examples == 12, report.problems
    from helpers.tokens import count_chat_tokens

    side = lambda out: count_chat_tokens(pair("问题0")["input"]["messages"] + [{"role": "assistant", "content": out}])  # noqa: E731
    assert report.token_counts[1] == side("好的答案0") + side("差的答案0")
    assert "12 preference pairs (DPO), 0 invalid" in report.summary()


def test_a_preference_file_sent_as_supervised_data_names_the_method(tmp_path):
    report = validate.validate_file(write(tmp_path, pair_lines()), method="supervised")
    assert {p.code for p in report.problems} == {"preference_example"} and report.problems[0].line == 1
    assert 'method {"type": "dpo"}' in report.problems[0].message


def test_cli_recognises_a_preference_file_and_takes_method(tmp_path):
    lines = pair_lines()
    lines[2] = _with(non_preferred_output=[])
    path = write(tmp_path, lines)
    out = run_cli(path, "--model", "gpt-4o-mini")
    assert out.returncode == 1 and "method: dpo (preference pairs" in out.stdout
    assert f"{path}:3: non_preferred_output is empty" in out.stdout and "1 invalid" in out.stdout
    out = run_cli(path, "--model", "gpt-4o-mini", "--method", "supervised")
    assert out.returncode == 1 and f"{path}:1: this is a preference (DPO) example" in out.stdout


def test_local_model_predicts_cut_preference_pairs(tmp_path, engine_cache):
    from helpers.tokens import local_training_counter

    lines = pair_lines()
    lines[3] = json.dumps(pair("问题", "短", "很长的回答" * 120), ensure_ascii=False)  # one side over tiny-test's 512 tokens
    lines[4] = json.dumps(pair("很长的问题" * 120, "短", "也短"), ensure_ascii=False)  # the input alone fills 512
    counter = local_training_counter("tiny-test", engine_cache)
    report = validate.validate_file(write(tmp_path, lines), model="tiny-test", training=counter, method="dpo")
    assert [(w.line, w.code) for w in report.warnings if w.code == "will_be_cut"] == [(4, "will_be_cut")]
    assert [(p.line, p.code) for p in report.problems] == [(5, "cut_to_nothing")]
    assert "tokens (input and its longer output)" in report.problems[0].message


# ---- the Chinese wording (what notebooks show the learner) ------------------------------------------

CJK = re.compile(r"[\u4e00-\u9fff]")
SOURCE = (REPO_ROOT / "helpers" / "validate.py").read_text(encoding="utf-8")
# Every code the validator emits: Issue("code", ...), Problem(line, message, "code", zh=...), and the warnings' table.
EMITTED = (set(re.findall(r'Issue\(\s*"([a-z0-9_]+)"', SOURCE)) | set(re.findall(r'"([a-z0-9_]+)",\s*zh=', SOURCE))
           | set(re.findall(r'\(\w+, "\w+", "([a-z0-9_]+)"\)', SOURCE)))


def fake_counter(supports_tools: bool = False) -> TrainingCounter:
    """A local model's counter without a tokenizer: one token per character, a 40-token window, the prompt first."""

    def count(example: dict) -> tuple[int, int]:
        prompt = sum(len(m.get("content") or "") for m in example["messages"] if m.get("role") != "assistant")
        answer = sum(len(m.get("content") or "") for m in example["messages"] if m.get("role") == "assistant")
        return prompt + answer, max(0, min(answer, 40 - prompt))

    return TrainingCounter("tiny-fake", 40, supports_tools, count, ("tool-model",))


def _line6(text: str, dpo: bool = False) -> list[str]:
    lines = pair_lines() if dpo else good_lines()
    lines[5] = text
    return lines


def _tool_line(bad: dict) -> list[str]:
    lines = tool_lines()
    lines[4] = json.dumps(bad, ensure_ascii=False)
    return lines


def _call(**call) -> dict:
    return {"messages": [USER, {"role": "assistant", "tool_calls": [call]}], "tools": [WEATHER]}


GOOD_CALL = {"id": "c1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{}"}}
LONG_ANSWER, LONG_QUESTION = json.dumps(example("问", "长" * 60), ensure_ascii=False), json.dumps(example("长" * 60, "答"), ensure_ascii=False)
# code: (the file's lines, or its bytes; validate_file's arguments); "overlap" is check_overlap's
EVERY_CODE = {
    **{code: (_line6(text), {}) for text, code, _ in BAD.values() if text is not None},
    **{code: (_line6(text, dpo=True), {"method": "dpo"}) for text, code, _ in BAD_PAIRS.values() if text is not None},
    "duplicate": (_line6(good_lines()[1]), {}),
    "unknown_key": (_line6(json.dumps({**example(), "extra": 1})), {}),
    "bad_name": (_line6(json.dumps({"messages": [{"role": "user", "content": "x", "name": 3}, {"role": "assistant", "content": "y"}]})), {}),
    "bad_input": (_line6(_with(input=5), dpo=True), {"method": "dpo"}),
    "preference_example": (_line6(pair_lines()[0]), {}),
    "bom": (validate.BOM + "\n".join(good_lines()).encode(), {}),
    "crlf": ("\r\n".join(good_lines()).encode(), {}),
    "blank_line": (_line6(" "), {}),
    "invalid_utf8": (b"\n".join([line.encode() for line in good_lines()[:5]] + [b'{"messages": "\xff"}'] + [line.encode() for line in good_lines()[6:]]), {}),
    "over_token_limit": (_line6(LONG_ANSWER), {"max_tokens": 50}),
    "too_few_examples": (good_lines(3), {}),
    "no_system": (_line6(json.dumps(example(system=None), ensure_ascii=False)), {}),
    "no_user": (_line6(json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})), {}),
    "will_be_cut": (_line6(LONG_ANSWER), {"training": fake_counter()}),
    "cut_to_nothing": (_line6(LONG_QUESTION), {"training": fake_counter()}),
    "tools_unsupported": (tool_lines(), {"training": fake_counter()}),
    "undeclared_function": (_tool_line(tool_example(name="get_weather")), {}),
    "bad_arguments": (_tool_line(tool_example(arguments="{location: 上海")), {}),
    "unmatched_tool_call_id": (_tool_line(tool_example(answer_id="call_9")), {}),
    "missing_tool_call_id": (_tool_line(tool_example(answer_id="")), {}),
    "unanswered_tool_call": (_tool_line({"messages": tool_example()["messages"][:3] + [{"role": "assistant", "content": "x"}], "tools": [WEATHER]}), {}),
    "bad_tool": (_tool_line({**tool_example(), "tools": [{"type": "function", "function": {"name": "bad name!"}}]}), {}),
    "bad_tools": (_tool_line({**tool_example(), "tools": "weather"}), {}),
    "bad_parallel_tool_calls": (_tool_line({**tool_example(), "parallel_tool_calls": "no"}), {}),
    "parallel_tool_calls": (_tool_line({**_call(**GOOD_CALL), "parallel_tool_calls": False,
                                        "messages": [USER, {"role": "assistant", "tool_calls": [GOOD_CALL, {**GOOD_CALL, "id": "c2"}]}]}), {}),
    "bad_tool_calls": (_tool_line({"messages": [{**USER, "tool_calls": [GOOD_CALL]}, {"role": "assistant", "content": "y"}]}), {}),
    "bad_tool_call": (_tool_line(_call(type="function", function=GOOD_CALL["function"])), {}),
    "overlap": (good_lines(), {}),
}
FORMATTED = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+): |: |：)")


def test_every_code_the_validator_emits_has_a_case_below():
    assert len(EMITTED) > 40 and EMITTED == set(EVERY_CODE), (EMITTED ^ set(EVERY_CODE))


@pytest.mark.parametrize("code", sorted(EVERY_CODE))
def test_every_problem_is_worded_in_chinese_with_the_same_file_and_line(tmp_path, code):
    data, kwargs = EVERY_CODE[code]
    path = write(tmp_path, data)
    if code == "overlap":
        found = validate.check_overlap(write(tmp_path, good_lines(), "train.jsonl"), path)
        english, chinese = [p.format(str(path)) for p in found], [p.format(str(path), "zh") for p in found]
    else:
        report = validate.validate_file(path, **kwargs)
        found = [p for p in report.problems + report.warnings if p.code == code]
        english, chinese = report.lines(), report.lines("zh")
    assert found, f"no {code} problem"
    for p in found:
        assert CJK.search(p.zh) and p.zh != p.message, p
        assert p.text("zh") == p.zh and p.text() == p.text("en") == p.message
    assert len(chinese) == len(english)
    for en, zh in zip(english, chinese):  # the same problem on the same line of the same file, in order
        where_en, where_zh = FORMATTED.match(en), FORMATTED.match(zh)
        assert where_en and where_zh and (where_en["file"], where_en["line"]) == (where_zh["file"], where_zh["line"]), (en, zh)
        assert where_zh["file"] == str(path) and CJK.search(zh)
        assert en[where_en.end():].startswith("warning: ") == zh[where_zh.end():].startswith("警告：")


def test_chinese_lines_of_the_notebook_example(tmp_path):
    lines = good_lines()[:12]
    lines[2] = '{"messages": ['
    lines[4] = json.dumps({"messages": [{"role": "assistant", "content": "你好"}, {"role": "user", "content": "头疼"}]})
    lines[6] = lines[0]
    lines[8] = lines[8].replace('"role": "assistant"', '"role": "assistant", "weight": 2')
    lines[10] = "  "
    report = validate.validate_bytes("\n".join(lines).encode("utf-8"), path="broken.jsonl", model="gpt-4o-mini")
    assert report.lines("zh") == [
        "broken.jsonl:3: 不是合法的 JSON：这里应该是一个值（字符串、数字、对象、数组、true、false 或 null），可能是这一行在中途断了（第 15 列）",
        "broken.jsonl:5: 最后一条消息必须是 assistant 的，实际是 'user' 的",
        "broken.jsonl:7: 与第 1 行重复（删掉其中一行）",
        "broken.jsonl:9: 第 3 条消息（assistant）：weight 只能是 0 或 1，实际是 2",
        "broken.jsonl:11: 空行：每一行都必须是一条 JSON 样本（删掉这一行）",
    ]
    assert report.lines() == [  # the English wording is unchanged
        "broken.jsonl:3: not valid JSON: Expecting value (column 15)",
        "broken.jsonl:5: the last message must be the assistant's, got 'user'",
        "broken.jsonl:7: duplicate of line 1",
        "broken.jsonl:9: message 3 (assistant): weight must be 0 or 1, got 2",
        "broken.jsonl:11: blank line: every line must hold one JSON example",
    ]
    tokens = f"{report.total_tokens:,}"
    assert report.summary("zh") == f"broken.jsonl：11 条样本，5 条无效，5 个问题，0 个警告；{tokens} 个词元（o200k_base，上限 65,536）——不合格"
    assert report.summary() == report.summary("en") == (
        f"broken.jsonl: 11 examples, 5 invalid, 5 problems, 0 warnings; {tokens} tokens (o200k_base, limit 65,536) — NOT OK")


def test_chinese_summary_of_a_clean_file_a_preference_file_and_a_cut(tmp_path):
    report = validate.validate_file(write(tmp_path, good_lines()))
    assert report.summary("zh") == (f"{tmp_path / 'f.jsonl'}：12 条样本，0 条无效，0 个问题，0 个警告；"
                                    f"{report.total_tokens:,} 个词元（o200k_base，上限 {validate.MAX_EXAMPLE_TOKENS:,}）——合格")
    pairs = validate.validate_file(write(tmp_path, pair_lines(9), "p.jsonl"), method="dpo", check_token_limit=False)
    assert pairs.summary("zh").startswith(f"{tmp_path / 'p.jsonl'}：9 个偏好对（DPO），0 个无效，1 个问题，0 个警告；")
    assert pairs.summary("zh").endswith("个词元（o200k_base）——不合格")
    assert pairs.lines("zh") == [f"{tmp_path / 'p.jsonl'}：只有 9 个偏好对：微调至少需要 10 个"]
    cut = validate.validate_file(write(tmp_path, _line6(LONG_ANSWER), "c.jsonl"), model="tiny-fake", training=fake_counter())
    assert "；其中 1 条在训练时会被截到 40 个 tiny-fake 词元——合格" in cut.summary("zh")
    assert [line for line in cut.lines("zh") if ":6: " in line] == [
        f"{tmp_path / 'c.jsonl'}:6: 警告：65 个 tiny-fake 词元：训练时会被截到 40 个（最后 25 个词元丢失）"]
    with pytest.raises(ValueError, match="lang"):
        report.summary("fr")
    with pytest.raises(ValueError, match="lang"):
        report.lines("en_US")


@pytest.mark.parametrize("text, reason", [
    ('{"messages": [', "这里应该是一个值"),
    ('{"messages": [] "x": 1}', "缺少分隔用的逗号 ','"),
    ('{"messages" []}', "缺少冒号 ':'"),
    ("{'messages': []}", "用双引号括起来的键名"),
    ('{"messages": [{"role": "user', "字符串没有结束"),
    ('{"messages": "a\tb"}', "没转义的控制字符"),
    ('{"messages": []} {}', "多余的内容"),
    ('{"messages": "\\q"}', "无效的转义"),
    ('{"messages": "\\u12"}', "\\uXXXX"),
])
def test_json_errors_are_explained_in_chinese(tmp_path, text, reason):
    report = validate.validate_file(write(tmp_path, _line6(text)))
    (problem,) = report.problems
    assert problem.code == "invalid_json" and reason in problem.zh, problem.zh
    assert problem.zh.startswith("不是合法的 JSON：") and re.search(r"（第 \d+ 列）$", problem.zh)
    english_reason = re.fullmatch(r"not valid JSON: (.+) \(column \d+\)", problem.message)[1]
    assert english_reason in validate.JSON_ERRORS_ZH and english_reason not in problem.zh  # json's own reason translated
    unknown = json.JSONDecodeError("Some new reason", "x", 0)
    assert validate.json_error_zh(unknown) == "“Some new reason”（第 1 列）"


def test_cli_speaks_chinese_with_lang_zh(tmp_path):
    lines = good_lines()
    lines[2] = "{oops"
    lines[9] = lines[0]
    path = write(tmp_path, lines)
    out = run_cli(path, "--model", "gpt-4o-mini", "--lang", "zh")
    assert out.returncode == 1
    printed = out.stdout.splitlines()
    assert printed[0].startswith(f"{path}:3: 不是合法的 JSON：这里应该是用双引号括起来的键名")
    assert printed[1] == f"{path}:10: 与第 1 行重复（删掉其中一行）"
    assert printed[-1].startswith(f"{path}：12 条样本，2 条无效，2 个问题，0 个警告；") and printed[-1].endswith("——不合格")
    english = run_cli(path, "--model", "gpt-4o-mini")
    assert english.stdout == run_cli(path, "--model", "gpt-4o-mini", "--lang", "en").stdout
    assert english.stdout.splitlines()[1] == f"{path}:10: duplicate of line 1"


def test_cli_lang_zh_for_the_configured_model_a_preference_file_and_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_BASE_MODEL", "gpt-4o-mini")  # an OpenAI model: no local tokenizer to load
    pairs = _line6(_with(non_preferred_output=[]), dpo=True)
    out = run_cli(write(tmp_path, pairs, "p.jsonl"), "--lang", "zh", work_dir=tmp_path / "work")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines()[:2] == ["模型：gpt-4o-mini（配置的微调模型；用 --model 换一个）",
                                           "方法：dpo（偏好对，根据第一条样本识别；用 --method 指定）"]
    assert f"{tmp_path / 'p.jsonl'}:6: non_preferred_output 是空的：它需要一条 assistant 消息" in out.stdout
    train, valid = write(tmp_path, good_lines(), "train.jsonl"), write(tmp_path, good_lines(), "valid.jsonl")
    out = run_cli(train, "--valid", valid, "--lang", "zh", work_dir=tmp_path / "work")
    assert f"{valid}:1: 和 train.jsonl 第 1 行的问题相同：训练集和验证集重叠了" in out.stdout
    assert out.stdout.splitlines()[-1] == f"{valid}：12 条样本与 {train} 重叠"
    assert run_cli(tmp_path / "nope.jsonl", "--lang", "zh").stderr.strip() == f"{tmp_path / 'nope.jsonl'}：文件不存在"
