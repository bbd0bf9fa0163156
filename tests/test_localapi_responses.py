"""Issue 20 through the official SDK against a real server: `client.responses.create` (plain and streamed) on base and
fine-tuned tiny models, the fields it refuses, forced tool calls (tool_choice "required" / a named function) on a
tiny model whose chat template renders tools, errors that name their parameter; and, marked slow, the OpenAI
Cookbook's function-calling evaluation calls on Qwen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest
from openai.types.responses import Response

from tests.localapi_support import MODEL_CACHE, Server, free_port, write_chat_jsonl

TEMPLATE = Path(__file__).parent / "qwen2.5_chat_template.jinja"
QUESTION = "血压130/80算高吗？"
WEATHER = {"type": "function", "function": {"name": "get_current_weather", "description": "Get the current weather",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
EVENT_ORDER = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
EVENT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


@pytest.fixture(scope="module")
def tools_model(tmp_path_factory) -> str:
    """tiny-test's random weights with Qwen2.5's chat template (which renders tools): a LOCALAPI_EXTRA_MODELS folder."""
    from transformers import AutoTokenizer

    from helpers.localapi import models as M

    folder = tmp_path_factory.mktemp("tiny-tools") / "tiny-tools"
    shutil.copytree(M.ensure_converted(M.TINY_MODEL, MODEL_CACHE), folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE.read_text(encoding="utf-8")
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tools_model):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOCALAPI_EXTRA_MODELS", tools_model)
        srv = Server(tmp_path_factory.mktemp("localapi-responses") / "work", free_port()).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client(timeout=120.0)


def error_of(call) -> dict:
    """The OpenAI error body of a call that must fail."""
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return {"status": info.value.status_code, **info.value.body}


def test_responses_create_plain_and_streamed_through_the_sdk(client):
    plain = client.responses.create(model="tiny-test", input=QUESTION, max_output_tokens=16, temperature=0)
    assert isinstance(plain, Response) and plain.object == "response" and plain.id.startswith("resp_")
    assert plain.model == "tiny-test" and plain.output[0].type == "message" and plain.output[0].id.startswith("msg_")
    text = plain.output_text
    assert isinstance(text, str) and text == plain.output[0].content[0].text
    usage = plain.usage
    assert usage.output_tokens <= 16 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens >= 0 and usage.output_tokens_details.reasoning_tokens == 0
    if usage.output_tokens == 16:  # the random model rarely ends by itself: then the limit cut it, as OpenAI says
        assert plain.status == "incomplete" and plain.incomplete_details.reason == "max_output_tokens"

    events = list(client.responses.create(model="tiny-test", input=QUESTION, max_output_tokens=16, temperature=0,
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == EVENT_ORDER and kinds[-4:-1] == EVENT_END and kinds[-1] in ("response.completed",
                                                                                    "response.incomplete")
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text == text
    assert events[-4].text == text and final.usage.output_tokens == usage.output_tokens
    assert all(e.item_id == final.output[0].id for e in events if hasattr(e, "item_id"))

    # instructions are the system message the model reads: the same prompt as a developer message in the input
    told = client.responses.create(model="tiny-test", instructions="你是一名医生。", max_output_tokens=16, temperature=0,
                                   input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
    same = client.responses.create(model="tiny-test", max_output_tokens=16, temperature=0, input=[
        {"role": "developer", "content": "你是一名医生。"}, {"type": "message", "role": "user", "content": QUESTION}])
    assert told.instructions == "你是一名医生。" and same.instructions is None
    assert told.usage.input_tokens == same.usage.input_tokens != usage.input_tokens
    assert told.output_text == same.output_text


def test_unsupported_responses_fields_are_400s_naming_the_field(client):
    cases = {
        "store": dict(store=True), "previous_response_id": dict(previous_response_id="resp_123"),
        "tools": dict(tools=[{"type": "web_search"}]), "reasoning": dict(reasoning={"effort": "low"}),
        "include": dict(include=["message.output_text.logprobs"]), "text.format": dict(text={"format": {"type": "json_object"}}),
        "tool_choice": dict(tool_choice="required"), "background": dict(background=True),
        "input[0].type": dict(input=[{"type": "function_call_output", "call_id": "call_1", "output": "晴"}]),
        "input[0].content[1].type": dict(input=[{"role": "user", "content": [
            {"type": "input_text", "text": "看图"}, {"type": "input_image", "image_url": "https://example.com/x.png"}]}]),
        "input[0].role": dict(input=[{"role": "robot", "content": "hi"}]),
        "max_output_tokens": dict(max_output_tokens=15),
        "input": dict(input=""),
    }
    for param, fields in cases.items():
        body = error_of(lambda: client.responses.create(**{"model": "tiny-test", "input": "hi", **fields}))
        assert body["status"] == 400 and body["param"] == param, (param, body)
    assert error_of(lambda: client.responses.create(model="no-such-model", input="hi", store=True))["code"] == "model_not_found"
    assert error_of(lambda: client.responses.retrieve("resp_123"))["status"] == 404
    assert client.responses.create(model="tiny-test", input="hi", store=False, max_output_tokens=16).store is False


def test_input_tokens_count_the_prompt_the_model_reads_without_generating(server, client):
    """`client.responses.input_tokens.count` counts what `usage.input_tokens` / `prompt_tokens` report for the same
    input (chat template included), on a base and a fine-tuned model; bad requests are 400s naming the field."""
    messages = [{"role": "system", "content": "你是一名医生。"}, {"role": "user", "content": QUESTION}]
    counted = client.responses.input_tokens.count(model="tiny-test", instructions="你是一名医生。", input=QUESTION)
    assert counted.object == "response.input_tokens"
    chat = client.chat.completions.create(model="tiny-test", messages=messages, max_tokens=1)
    told = client.responses.create(model="tiny-test", instructions="你是一名医生。", input=QUESTION, max_output_tokens=16)
    assert counted.input_tokens == chat.usage.prompt_tokens == told.usage.input_tokens
    parts = client.responses.input_tokens.count(model="tiny-test", input=[
        {"role": "developer", "content": "你是一名医生。"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
    assert parts.input_tokens == counted.input_tokens
    empty = client.responses.input_tokens.count(model="tiny-test", input=[{"role": "user", "content": ""}]).input_tokens
    longer = client.responses.input_tokens.count(model="tiny-test", input=QUESTION * 3).input_tokens
    assert 0 < empty < longer

    cases = {"model": dict(input="hi"), "input": dict(model="tiny-test"),
             "tools": dict(model="tiny-test", input="hi", tools=[{"type": "web_search"}]),
             "previous_response_id": dict(model="tiny-test", input="hi", previous_response_id="resp_123"),
             "input[0].role": dict(model="tiny-test", input=[{"role": "robot", "content": "hi"}])}
    for param, fields in cases.items():
        body = error_of(lambda: client.responses.input_tokens.count(**fields))
        assert body["status"] == 400 and body["param"] == param, (param, body)
    assert error_of(lambda: client.responses.input_tokens.count(model="no-such", input="hi"))["code"] == "model_not_found"


def test_an_output_limit_beyond_the_context_is_a_400_naming_it(client):
    chat = [{"role": "user", "content": QUESTION}]
    for name in ("max_tokens", "max_completion_tokens"):
        body = error_of(lambda: client.chat.completions.create(model="tiny-test", messages=chat, **{name: 1_000_000_000}))
        assert body["param"] == name and body["code"] == "invalid_value" and "too large" in body["message"]
        body = error_of(lambda: client.chat.completions.create(model="tiny-test", messages=chat, **{name: 2040}))
        assert body["param"] == name and body["code"] == "context_length_exceeded", body  # 2040 + the prompt > 2048
    body = error_of(lambda: client.responses.create(model="tiny-test", input=QUESTION, max_output_tokens=1_000_000_000))
    assert body["param"] == "max_output_tokens" and "2047" in body["message"]
    long = error_of(lambda: client.responses.create(model="tiny-test", input="痛" * 3000))
    assert long["param"] == "input" and long["code"] == "context_length_exceeded"


def test_wrong_tool_choice_values_are_400s_naming_tool_choice_after_the_model(client, tools_model):
    chat = [{"role": "user", "content": "上海天气？"}]
    bad = ["always", {"type": "function"}, {"type": "function", "function": {"name": "get_time"}}, {"type": "web_search"}]
    for choice in bad:
        body = error_of(lambda: client.chat.completions.create(model=tools_model, messages=chat, tools=[WEATHER],
                                                               tool_choice=choice, max_tokens=4))
        assert body["status"] == 400 and body["param"] == "tool_choice", (choice, body)
    body = error_of(lambda: client.chat.completions.create(model=tools_model, messages=chat, tool_choice="required"))
    assert body["param"] == "tool_choice" and "only allowed when 'tools' are specified" in body["message"]
    body = error_of(lambda: client.chat.completions.create(model="no-such-model", messages=chat, tools=[WEATHER],
                                                           tool_choice="always"))
    assert body["status"] == 404 and body["code"] == "model_not_found"
    body = error_of(lambda: client.chat.completions.create(model="tiny-test", messages=chat, tools=[WEATHER],
                                                           tool_choice="required"))
    assert body["param"] == "tools" and "qwen2.5-coder-0.5b-instruct" in body["message"]  # names the models that can


def test_forced_tool_calls_return_a_call_of_a_declared_function_every_time(client, tools_model):
    """The random model writes garbage after the forced opening: the call still names the right function, and its
    `arguments` are what the model wrote (valid JSON or not), as OpenAI's API returns them."""
    chat = [{"role": "user", "content": "上海现在几点？天气怎样？"}]
    for seed in range(4):
        for choice, allowed in (("required", {"get_current_weather", "get_time"}),
                                ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})):
            out = client.chat.completions.create(model=tools_model, messages=chat, tools=[WEATHER, TIME],
                                                 tool_choice=choice, max_tokens=24, temperature=1, seed=seed)
            message, finish = out.choices[0].message, out.choices[0].finish_reason
            assert message.tool_calls and message.tool_calls[0].function.name in allowed, (seed, message)
            assert finish in ("tool_calls", "length") and message.tool_calls[0].id.startswith("call_")
            assert isinstance(message.tool_calls[0].function.arguments, str)
    # streamed: tool_calls deltas that add up to the call the same request gets without stream
    named = {"type": "function", "function": {"name": "get_current_weather"}}
    chunks = list(client.chat.completions.create(model=tools_model, messages=chat, tools=[WEATHER, TIME], max_tokens=24,
                                                 tool_choice=named, temperature=0, stream=True))
    deltas = [call for c in chunks for choice in c.choices for call in choice.delta.tool_calls or []]
    greedy = client.chat.completions.create(model=tools_model, messages=chat, tools=[WEATHER, TIME], max_tokens=24,
                                            tool_choice=named, temperature=0).choices[0]
    assert deltas[0].function.name == greedy.message.tool_calls[0].function.name == "get_current_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == greedy.message.tool_calls[0].function.arguments
    assert [choice.finish_reason for c in chunks for choice in c.choices if choice.finish_reason] == [greedy.finish_reason]


def test_forced_call_parsing_keeps_the_named_function_when_the_arguments_are_broken():
    from helpers.localapi.chat import completion_object
    from helpers.localapi.generate import Choice, Usage

    opening = '<tool_call>\n{"name": "get_time", "arguments": '
    cases = [(opening + '{"city": "上海"}}\n</tool_call>', "tool_calls", '{"city": "上海"}'),
             (opening + '{"city": 上海 ]]}\n</tool_call>', "tool_calls", '{"city": 上海 ]]'),
             (opening + '{"city": "上', "length", '{"city": "上')]
    for text, finish, arguments in cases:
        obj = completion_object("c", 0, "m", [Choice(0, text, "length" if finish == "length" else "stop", Usage(1, 1))],
                                [WEATHER, TIME], forced=True)
        choice = obj["choices"][0]
        assert choice["finish_reason"] == finish and choice["message"]["content"] is None
        (call,) = choice["message"]["tool_calls"]
        assert call["function"] == {"name": "get_time", "arguments": arguments}
    unforced = completion_object("c", 0, "m", [Choice(0, cases[1][0], "stop", Usage(1, 1))], [WEATHER, TIME])
    assert unforced["choices"][0]["finish_reason"] == "stop"  # without tool_choice a broken block stays text


def test_the_call_opening_is_read_from_the_template_and_generation_begins_with_it(engine_cache):
    import copy

    from helpers.localapi import generate as G
    from helpers.localapi import models as M

    tok = copy.deepcopy(M.load_tokenizer(M.TINY_MODEL, engine_cache))
    assert M.call_opening(tok, "f") == ""  # SmolLM2's template renders no tools
    assert not M.supports_tools(tok) and not M.get_spec(M.TINY_MODEL).renders_tools
    assert M.tool_model_ids() == [M.QWEN_MODEL]
    tok.chat_template = TEMPLATE.read_text(encoding="utf-8")
    opening = M.call_opening(tok, "get_time")
    assert opening == '<tool_call>\n{"name": "get_time", "arguments": '
    table = G.piece_table(tok)
    rest = '"get_time", '
    allowed = table.allowed(rest, tok)
    (first,) = tok(rest, add_special_tokens=False)["input_ids"][:1]
    assert first in allowed and all(rest.startswith(table.text[t]) or table.text[t].startswith(rest) for t in allowed)
    assert table.allowed(" ", tok) >= set(table.ids[" "]) | set(table.ids[" {"])  # a token may run past the opening


def test_responses_and_chat_share_the_generator_on_a_fine_tuned_model(server, client, tmp_path):
    from tests.test_localapi_jobs import TERMINAL, upload, wait_for

    train = upload(client, write_chat_jsonl(tmp_path / "train.jsonl", 10))
    valid = upload(client, write_chat_jsonl(tmp_path / "valid.jsonl", 3, offset=100))
    hp = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}
    job = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, validation_file=valid, method=hp,
                                         suffix="resp")
    job, _ = wait_for(client, job.id, lambda j: j.status in TERMINAL, timeout=300)
    assert job.status == "succeeded", (job.error, server.log()[-3000:])
    chat = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=16, temperature=0)
    response = client.responses.create(model=job.fine_tuned_model, input=QUESTION, max_output_tokens=16, temperature=0)
    assert response.model == job.fine_tuned_model and response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens == \
        client.responses.input_tokens.count(model=job.fine_tuned_model, input=QUESTION).input_tokens
    streamed = list(client.responses.create(model=job.fine_tuned_model, input=QUESTION, max_output_tokens=16,
                                            temperature=0, stream=True))
    assert streamed[-1].response.output_text == response.output_text
    # the small fixes: the last step's event names the full validation loss; a second cancel says it was cancelled
    last = next(e for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data if e.type == "metrics")
    assert last.data["step"] == last.data["total_steps"]
    assert last.message.endswith(f", full validation loss={last.data['full_valid_loss']:.4f}"), last.message
    second = client.fine_tuning.jobs.create(model="tiny-test", training_file=train, method=hp)
    client.fine_tuning.jobs.cancel(second.id)
    body = error_of(lambda: client.fine_tuning.jobs.cancel(second.id))
    assert body["message"] == f"Job has already been cancelled: {second.id}" and body["param"] == "fine_tuning_job_id"


# ---- Qwen: the Cookbook's function-calling evaluation (slow) ---------------------------------------------------
DRONE_PROMPT = ("You control a drone. For each command of the user, call the one function that carries it out; "
                "if none can, call reject_request.")


def drone_function(name: str, description: str, properties: dict | None = None) -> dict:
    """One function tool of the drone co-pilot (the Cookbook's example, in our words)."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties or {}, "required": list(properties or {})}}}


DRONE_FUNCTIONS = [
    drone_function("takeoff_drone", "Take off and climb to an altitude.", {"altitude": {"type": "integer"}}),
    drone_function("land_drone", "Land here or at the home base.",
                   {"location": {"type": "string", "enum": ["current", "home_base"]}}),
    drone_function("control_drone_movement", "Move in a direction by a distance in meters.",
                   {"direction": {"type": "string", "enum": ["forward", "backward", "left", "right", "up", "down"]},
                    "distance": {"type": "integer"}}),
    drone_function("set_drone_speed", "Set the speed in km/h.", {"speed": {"type": "integer"}}),
    drone_function("control_camera", "Take a photo or a video.", {"mode": {"type": "string", "enum": ["photo", "video"]}}),
    drone_function("reject_request", "Use when no other function can do what is asked."),
]


@pytest.mark.slow
def test_the_cookbooks_function_calling_evaluation_runs_on_qwen(tmp_path):
    """The evaluation calls of the Cookbook's Fine_tuning_for_function_calling.ipynb, only the model name changed:
    chat.completions.create(..., tools, tool_choice="required", temperature=0, seed=42, max_tokens=500, stop=None),
    then `message.tool_calls[0].function.name` and `usage.total_tokens`; every answer must be such a call."""
    from helpers.localapi import modelfiles as MF
    from helpers.localapi import models as M

    if MF.chunk_paths(MF.QWEN_GGUF) is None and not (MODEL_CACHE / M.QWEN_MODEL).is_dir():
        pytest.skip("the Qwen GGUF chunk packages are not installed")
    server = Server(tmp_path / "work", free_port()).start()
    try:
        client = server.client(timeout=600.0)
        names = {f["function"]["name"] for f in DRONE_FUNCTIONS}
        prompts = ["Take off to 30 meters", "Land at the home base", "Take a photo", "Sing me a song"]
        for prompt in prompts:
            completion = client.chat.completions.create(
                model=M.QWEN_MODEL, messages=[{"role": "system", "content": DRONE_PROMPT}, {"role": "user", "content": prompt}],
                max_tokens=500, temperature=0.0, stop=None, tools=DRONE_FUNCTIONS, seed=42, tool_choice="required")
            message = completion.choices[0].message
            print(prompt, "->", message.tool_calls[0].function.name, message.tool_calls[0].function.arguments)
            assert message.tool_calls[0].function.name in names and completion.usage.total_tokens > 0
        named = client.chat.completions.create(
            model=M.QWEN_MODEL, messages=[{"role": "user", "content": "Go forward 10 meters"}], max_tokens=500,
            temperature=0.0, tools=DRONE_FUNCTIONS, tool_choice={"type": "function", "function": {"name": "set_drone_speed"}})
        call = named.choices[0].message.tool_calls[0]
        assert call.function.name == "set_drone_speed" and named.choices[0].finish_reason == "tool_calls"
        print("named ->", call.function.arguments)
        assert isinstance(json.loads(call.function.arguments), dict)  # Qwen writes valid JSON arguments
        assert client.responses.create(model=M.QWEN_MODEL, input="用一句话介绍高血压。", max_output_tokens=32).output_text
        assert M.get_spec(M.QWEN_MODEL).renders_tools and M.supports_tools(M.load_tokenizer(M.QWEN_MODEL, MODEL_CACHE))
    finally:
        server.stop()
