"""Issue 10 through the official SDK against a real server (tiny model): tool-calling data, logprobs, and a
fine-tuned model as the base of a new job; plus the tool-call response builder on the text a template produces."""

from __future__ import annotations

import base64
import csv
import io
import json

import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.localapi_support import write_chat_jsonl
from tests.test_localapi_jobs import TERMINAL, client, server, upload, wait_for  # noqa: F401 (module-scoped fixtures: a server of its own)

WEATHER = {"type": "function", "function": {"name": "get_current_weather", "description": "Get the current weather",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                           "format": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                          "required": ["location", "format"]}}}


def cookbook_tool_line(i: int) -> str:
    """A training line in OpenAI's documented function-calling format (assistant tool_calls with no content)."""
    call = {"id": f"call_{i}", "type": "function", "function": {
        "name": "get_current_weather", "arguments": json.dumps({"location": f"City {i}", "format": "celsius"})}}
    return json.dumps({"messages": [{"role": "user", "content": f"What is the weather in City {i}?"},
                                    {"role": "assistant", "tool_calls": [call]}],
                       "parallel_tool_calls": False, "tools": [WEATHER]})


def test_cookbook_tool_file_is_rejected_at_validation_when_the_template_cannot_render_tools(server, client, tmp_path):
    path = tmp_path / "weather.jsonl"
    path.write_text("\n".join(cookbook_tool_line(i) for i in range(12)) + "\n", encoding="utf-8")
    file_id = upload(client, path)
    job = client.fine_tuning.jobs.create(model="tiny-test", training_file=file_id)
    job, seen = wait_for(client, job.id, lambda j: j.status in TERMINAL, timeout=60)
    assert job.status == "failed" and "queued" not in seen and "running" not in seen
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    message = job.error.message
    assert f"{file_id} (weather.jsonl), line 1: tool calling: the chat template of tiny-test cannot render" in message
    assert str(server.work_dir) not in message and "/" not in message.split("(weather.jsonl)")[1]


def test_tools_in_chat_need_a_template_that_renders_them(client):
    msgs = [{"role": "user", "content": "weather?"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-test", messages=msgs, tools=[WEATHER], max_tokens=2)
    assert info.value.body["code"] == "tools_not_supported" and info.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=2,
                                       tools=[{"type": "function", "function": {"name": "no spaces allowed"}}])
    assert info.value.body["param"] == "tools" and "no spaces allowed" in info.value.body["message"]


def test_logprobs_in_openai_shape_through_the_sdk(client):
    msgs = [{"role": "user", "content": "血压130/80算高吗？"}]
    out = client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=6, temperature=0, seed=1,
                                         logprobs=True, top_logprobs=3)
    choice = out.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == out.usage.completion_tokens == 6
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3 and isinstance(e.bytes, list)
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)  # greedy
    assert bytes(b for e in entries for b in e.bytes).decode("utf-8", errors="replace") == choice.message.content
    plain = client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None
    none_top = client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=2, temperature=0, logprobs=True)
    assert all(e.top_logprobs == [] for e in none_top.choices[0].logprobs.content)
    streamed = list(client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=6, temperature=0, seed=1,
                                                   logprobs=True, top_logprobs=3, stream=True))
    got = [e for chunk in streamed for c in chunk.choices if c.logprobs for e in c.logprobs.content or []]
    assert [e.token for e in got] == [e.token for e in entries]
    assert [e.logprob for e in got] == pytest.approx([e.logprob for e in entries], abs=1e-4)
    for bad in (dict(top_logprobs=3), dict(logprobs=True, top_logprobs=21)):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=2, **bad)


def test_logit_bias_and_penalties_through_the_sdk(client, engine_cache):
    from helpers.localapi import models as M

    (token,) = M.load_tokenizer("tiny-test", engine_cache).encode("ok", add_special_tokens=False)
    msgs = [{"role": "user", "content": "胃疼怎么办？"}]
    out = client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=4, temperature=0,
                                         logit_bias={str(token): 100}, frequency_penalty=0.5)
    assert out.choices[0].message.content == "ok" * 4  # a bias of 100 outweighs 4 x 0.5
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-test", messages=msgs, max_tokens=2, logit_bias={"1000000000": 5})
    assert info.value.body["param"] == "logit_bias" and "token ids 0 to" in info.value.body["message"]


def _step_losses(client: openai.OpenAI, job) -> list[float]:
    content = base64.b64decode(client.files.content(job.result_files[0]).read()).decode("utf-8")  # as OpenAI serves it
    return [float(r["train_loss"]) for r in csv.DictReader(io.StringIO(content))]


def test_a_fine_tuned_model_is_the_base_of_a_new_job_and_training_continues_from_its_adapter(server, client, tmp_path):
    train = upload(client, write_chat_jsonl(tmp_path / "train.jsonl", 12))
    hp = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 4,
                                                                   "learning_rate_multiplier": 10}}}
    first = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, method=hp, seed=3, suffix="sft")
    first, _ = wait_for(client, first.id, lambda j: j.status in TERMINAL, timeout=300)
    assert first.status == "succeeded", (first.error, server.log()[-3000:])
    second = client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=train, method=hp, seed=3, suffix="more")
    assert second.model == first.fine_tuned_model
    second, _ = wait_for(client, second.id, lambda j: j.status in TERMINAL, timeout=300)
    assert second.status == "succeeded", (second.error, server.log()[-3000:])
    assert second.fine_tuned_model == f"ft:tiny-test:local:more:{second.id[-8:]}"
    a, b = _step_losses(client, first), _step_losses(client, second)
    print(f"step losses, first job: {a}; second job (from its adapter): {b}")
    # the random tiny model starts near ln(49152) = 10.8; after 12 steps at lr x10 the adapter has learned this data
    assert b[0] < a[0] - 0.5 and b[0] <= a[-1] + 0.5, (a, b)  # measured: 10.82 -> 9.75 (first), 9.74 (second, step 1)
    events = [e.message for e in client.fine_tuning.jobs.list_events(second.id, limit=50).data]
    assert any("continuing from the fine-tuned model's LoRA adapter" in m for m in events)
    checkpoint = client.fine_tuning.jobs.checkpoints.list(first.id).data[0].fine_tuned_model_checkpoint
    third = client.fine_tuning.jobs.create(model=checkpoint, training_file=train, method=hp)
    assert third.model == checkpoint
    client.fine_tuning.jobs.cancel(third.id)


def test_response_builder_turns_the_templates_call_syntax_into_openai_tool_calls():
    from helpers.localapi.chat import completion_object as chat_completion_object
    from helpers.localapi.generate import Choice, Usage

    text = ('<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "上海", "format": "celsius"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "北京", "format": "celsius"}}\n</tool_call>')
    obj = chat_completion_object("chatcmpl-x", 0, "ft:qwen:local::x", [Choice(0, text, "stop", Usage(10, 30))], [WEATHER])
    parsed = ChatCompletion.model_validate(obj)  # the SDK's own model of the response
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_current_weather"] * 2 and len({c.id for c in calls}) == 2
    assert json.loads(calls[1].function.arguments) == {"location": "北京", "format": "celsius"}
    # without tools in the request, or text that is no valid call, the answer stays text
    for tools, answer in ((None, text), ([WEATHER], "<tool_call>\n{not json}\n</tool_call>"), ([WEATHER], "晴天")):
        plain = ChatCompletion.model_validate(chat_completion_object("c", 0, "m", [Choice(0, answer, "stop", Usage(1, 1))], tools))
        assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.content == answer
        assert plain.choices[0].message.tool_calls is None


def test_parser_reads_what_the_qwen_template_renders(engine_cache):
    """The call syntax the parser reads is the one the template teaches: render an assistant call, parse it back."""
    import copy
    from pathlib import Path

    from helpers.localapi import models as M
    from helpers.localapi.toolcalls import parse_tool_calls

    tok = copy.deepcopy(M.load_tokenizer("tiny-test", engine_cache))
    tok.chat_template = (Path(__file__).parent / "qwen2.5_chat_template.jinja").read_text(encoding="utf-8")
    args = {"location": "上海", "format": "celsius"}
    call = {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": json.dumps(args)}}
    messages = [{"role": "user", "content": "上海天气？"}, {"role": "assistant", "content": "我查一下。", "tool_calls": [call]}]
    prompt = M.render_chat(tok, messages[:1], True, [WEATHER])
    answer = M.render_chat(tok, messages, False, [WEATHER])[len(prompt):].removesuffix("<|im_end|>\n")
    content, calls = parse_tool_calls(answer)
    assert content == "我查一下。" and len(calls) == 1
    assert calls[0]["function"]["name"] == "get_current_weather" and json.loads(calls[0]["function"]["arguments"]) == args


def _streamed(text: str, tools: list | None, step: int) -> "ChatCompletion":
    """The SDK's accumulated completion of `sse_chunks` fed `text` in pieces of `step` characters."""
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    from helpers.localapi.chat import sse_chunks

    pieces = [{"index": 0, "text": text[k:k + step]} for k in range(0, len(text), step)]
    pieces.append({"index": 0, "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": len(pieces)})
    state = ChatCompletionStreamState(input_tools=tools or openai.omit)
    for event in sse_chunks("chatcmpl-s", 0, "m", iter(pieces), False, 1, tools):
        data = event.decode("utf-8").removeprefix("data: ").strip()
        if data != "[DONE]":
            state.handle_chunk(ChatCompletionChunk.model_validate(json.loads(data)))
    return state.get_final_completion()


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_streamed_tool_calls_accumulate_to_the_same_calls_as_the_answer_without_stream(step):
    text = ('<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "上海", "format": "celsius"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "北京", "format": "celsius"}}\n</tool_call>')
    choice = _streamed(text, [WEATHER], step).choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    calls = choice.message.tool_calls
    assert [json.loads(c.function.arguments)["location"] for c in calls] == ["上海", "北京"]
    assert all(c.id.startswith("call_") and c.function.name == "get_current_weather" for c in calls)
    # text before a call is streamed as content; text that only looks like a call's start is released
    mixed = _streamed("我查一下。\n" + text.split("\n<tool_call>")[0], [WEATHER], step).choices[0]
    assert mixed.message.content == "我查一下。" and len(mixed.message.tool_calls) == 1
    for answer in ("晴天 <tool 不是调用", "<tool_call>\n{not json}\n</tool_call>", "结尾是 <tool_c"):
        plain = _streamed(answer, [WEATHER], step).choices[0]
        assert plain.finish_reason == "stop" and plain.message.content == answer and not plain.message.tool_calls
    assert _streamed(text, None, step).choices[0].message.content == text  # no tools asked: the text as it is


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_an_answer_that_is_only_a_json_call_of_a_declared_function_is_a_tool_call(step):
    """Small models often answer a tools request with the bare JSON object (no <tool_call> tags), sometimes fenced."""
    from helpers.localapi.chat import completion_object as chat_completion_object
    from helpers.localapi.generate import Choice, Usage

    call = '{"name": "get_current_weather", "arguments": {"location": "乌鲁木齐", "format": "celsius"}}'
    for answer in (call, f"\n{call}\n", f"```json\n{call}\n```", f"[{call}, {call.replace('乌鲁木齐', '海口')}]"):
        for choice in (_streamed(answer, [WEATHER], step).choices[0],
                       ChatCompletion.model_validate(chat_completion_object(
                           "c", 0, "m", [Choice(0, answer, "stop", Usage(1, 1))], [WEATHER])).choices[0]):
            assert choice.finish_reason == "tool_calls" and not choice.message.content, answer
            assert json.loads(choice.message.tool_calls[0].function.arguments)["location"] == "乌鲁木齐"
    # not a call: an undeclared name, no arguments, JSON with text around it, or no tools in the request
    undeclared = call.replace("get_current_weather", "get_weather")
    for tools, answer in (([WEATHER], undeclared), ([WEATHER], '{"name": "get_current_weather"}'),
                          ([WEATHER], f"好的：{call}"), (None, call), ([WEATHER], "{不是 JSON"), ([WEATHER], "`ls`")):
        plain = _streamed(answer, tools, step).choices[0]
        assert plain.finish_reason == "stop" and plain.message.content == answer and not plain.message.tool_calls
