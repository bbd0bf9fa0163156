"""Tool-calling fine-tuning end to end on a real model, through the official SDK against a local server.

    .venv/bin/python benchmarks/check_tool_calling.py [--model qwen2.5-coder-0.5b-instruct] [--n-train 16] [--epochs 2]

Writes a training file in OpenAI's documented function-calling format (a top-level `tools` list, assistant
messages with `tool_calls` and no `content`, `parallel_tool_calls`), validates it with `helpers.validate`,
starts a local server of its own (`helpers.local_backend`, a temporary work folder and port, the
repository's converted-model cache), uploads the
file, fine-tunes `--model` on it, then asks base and fine-tuned model held-out questions with the same `tools`,
without and with `stream=True` (the SDK accumulates the streamed `tool_calls` deltas). Prints each answer and
the share of answers that are a call of the declared function with valid JSON arguments naming the right city;
exit 1 if the job does not succeed or the fine-tuned model never answers with OpenAI-shaped `tool_calls`.
For a base model whose chat template cannot render tools (smollm2-135m-instruct, tiny-test) the job must fail
in validation with a line-numbered error instead; the script checks that too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from helpers.config import REPO_ROOT, load_config
from helpers.local_backend import ensure_server, stop_server
from helpers.net import free_port

WEATHER = {"type": "function", "function": {
    "name": "get_current_weather", "description": "查询一个城市当前的天气 / Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "城市名，例如 上海"},
        "format": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location", "format"]}}}
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "天津", "苏州", "长沙",
          "郑州", "青岛", "沈阳", "大连", "厦门", "昆明", "哈尔滨", "兰州", "贵阳", "南宁", "拉萨"]
ASKS = ["{c}今天天气怎么样？", "帮我查一下{c}现在的气温（摄氏度）。", "{c}现在冷不冷？", "我明天去{c}出差，那边天气如何？"]
HELD_OUT = ["乌鲁木齐现在天气如何？", "查一下海口的气温。", "福州冷不冷？", "我要去合肥，那边天气怎么样？"]


def training_line(i: int) -> str:
    """One example in OpenAI's function-calling format: the user asks, the assistant calls get_current_weather."""
    city = CITIES[i % len(CITIES)]
    call = {"id": f"call_{i:03d}", "type": "function",
            "function": {"name": "get_current_weather", "arguments": json.dumps({"location": city, "format": "celsius"},
                                                                               ensure_ascii=False)}}
    return json.dumps({"messages": [{"role": "user", "content": ASKS[i % len(ASKS)].format(c=city)},
                                    {"role": "assistant", "tool_calls": [call]}],
                       "tools": [WEATHER], "parallel_tool_calls": False}, ensure_ascii=False)


def is_right_call(message, question: str) -> bool:
    """True when the answer calls get_current_weather with JSON arguments naming the question's city."""
    calls = message.tool_calls or []
    if len(calls) != 1 or calls[0].function.name != "get_current_weather":
        return False
    try:
        args = json.loads(calls[0].function.arguments)
    except json.JSONDecodeError:
        return False
    return isinstance(args, dict) and isinstance(args.get("location"), str) and args["location"] in question


def ask(client, model: str) -> list[bool]:
    """Ask every held-out question without and with streaming; print the answers; True per right call."""
    results = []
    for question in HELD_OUT:
        messages = [{"role": "user", "content": question}]
        plain = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], max_tokens=80,
                                               temperature=0, seed=1)
        with client.chat.completions.stream(model=model, messages=messages, tools=[WEATHER], max_tokens=80,
                                            temperature=0, seed=1) as stream:
            streamed = stream.get_final_completion()
        for how, out in (("plain", plain), ("stream", streamed)):
            choice = out.choices[0]
            calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
            print(f"  [{how:6}] {question} -> finish_reason={choice.finish_reason} tool_calls={calls} "
                  f"content={choice.message.content!r}")
            results.append(is_right_call(choice.message, question))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weather.jsonl"
        path.write_text("".join(training_line(i) + "\n" for i in range(args.n_train)), encoding="utf-8")
        check = subprocess.run([sys.executable, "-m", "helpers.validate", str(path), "--model", args.model],
                               capture_output=True, text=True, cwd=REPO_ROOT)
        print(f"python -m helpers.validate weather.jsonl --model {args.model}: exit {check.returncode}")
        print("  " + (check.stdout + check.stderr).strip().replace("\n", "\n  "))
        # a server of its own: a temporary work folder and port, the repository's converted models
        os.environ.update({"WORKBOOK_WORK_DIR": str(Path(tmp) / "work"), "LOCALAPI_PORT": str(free_port()),
                           "LOCALAPI_MODEL_CACHE": str(REPO_ROOT / "data" / "work" / "localapi" / "models")})
        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND"):
            os.environ.pop(name, None)
        cfg = load_config()
        ensure_server(cfg, timeout=180)
        try:
            client = OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, timeout=600.0, max_retries=0)
            upload = client.files.create(file=path, purpose="fine-tune")
            client.files.wait_for_processing(upload.id, poll_interval=0.5, max_wait_seconds=120)
            job = client.fine_tuning.jobs.create(model=args.model, training_file=upload.id,
                                                 method={"type": "supervised", "supervised": {
                                                     "hyperparameters": {"n_epochs": args.epochs}}})
            while job.status not in ("succeeded", "failed", "cancelled"):
                time.sleep(2)
                job = client.fine_tuning.jobs.retrieve(job.id)
            print(f"job {job.id}: {job.status} ({time.perf_counter() - started:.0f} s since start)"
                  + (f": {job.error.message}" if job.error and job.error.message else ""))
            if check.returncode != 0:  # a template that cannot render tools: validation must have refused the job
                refused = job.status == "failed" and job.error.code == "invalid_training_file" and ", line 1:" in job.error.message
                print("OK: refused at validation, line-numbered" if refused else "FAIL: not refused at validation")
                return 0 if refused else 1
            if job.status != "succeeded":
                return 1
            print(f"base model {args.model}:")
            base = ask(client, args.model)
            print(f"fine-tuned {job.fine_tuned_model}:")
            tuned = ask(client, job.fine_tuned_model)
        finally:
            stop_server(cfg)
    print(f"right calls (plain + stream, {len(HELD_OUT)} held-out questions each): base {sum(base)}/{len(base)}, "
          f"fine-tuned {sum(tuned)}/{len(tuned)}; {time.perf_counter() - started:.0f} s; "
          f"load {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return 0 if any(tuned) else 1


if __name__ == "__main__":
    sys.exit(main())
