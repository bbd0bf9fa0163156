"""The chat JSONL validator: a corpus of bad inputs, each with its specific error and line; the CLI; overlap."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import validate
from helpers.config import REPO_ROOT


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
    out = run_cli(train, "--valid", valid)
    assert out.returncode == 1 and f"{valid}:1: same question" in out.stdout
    assert run_cli(tmp_path / "nope.jsonl").returncode == 2


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
