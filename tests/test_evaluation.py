"""helpers.evaluation: arms, the on-disk cache, the bounded pool, failures and the metrics table."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pandas as pd
import pytest

from helpers import evaluation

QUESTIONS = ["头疼怎么办？", "血压130/80正常吗？", "感冒发烧吃什么药？"]
REFERENCES = ["头疼可能与休息不好有关，注意休息。", "130/80属于正常高值，注意监测。", "感冒发烧可以多喝水，必要时用退烧药。"]


class FakeChat:
    """A chat endpoint that answers with the last user message reversed, counting requests and concurrency."""

    def __init__(self, delay: float = 0.0, fail_model: str | None = None) -> None:
        self.requests = 0
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.delay, self.fail_model = delay, fail_model

    def handler(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/chat/completions"):  # an OpenAI-compatible server with chat only
            return httpx.Response(404, json={"error": {"message": f"Not found: {request.url.path}"}})
        body = json.loads(request.read())
        with self.lock:
            self.requests += 1
            self.last_body = body
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
        if body["model"] == self.fail_model:
            return httpx.Response(400, json={"error": {"message": "model not found"}})
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        text = body["messages"][-1]["content"][::-1]
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_chars, "completion_tokens": len(text), "total_tokens": prompt_chars + len(text)},
        })

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=5,
                             http_client=httpx.Client(transport=httpx.MockTransport(self.handler)))


def _arms() -> list[evaluation.Arm]:
    examples = evaluation.few_shot_examples([{"questions": "问" * 5, "answers": "答" * 500}] * 3, k=3, max_answer_chars=100)
    return evaluation.make_arms("base", "ft:base:local:x:1", "你是医生。", examples)


def test_arms_build_the_expected_messages() -> None:
    base, few, tuned = _arms()
    assert [m["role"] for m in base.messages("q")] == ["system", "user"]
    assert [m["role"] for m in few.messages("q")] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert len(few.messages("q")[2]["content"]) == 100  # long answers are cut
    assert tuned.model.startswith("ft:")


def test_rerun_is_served_from_cache(tmp_path) -> None:
    fake = FakeChat()
    cache = evaluation.ResponseCache(tmp_path / "cache")
    first = evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=cache, workers=4)
    assert fake.requests == 9 and not any(a.cached for a in first)
    second = evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=cache, workers=4)
    assert fake.requests == 9 and all(a.cached for a in second)
    assert [a.text for a in first] == [a.text for a in second]
    evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=cache, max_tokens=7)
    assert fake.requests == 18  # a different request is a different cache entry
    evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=cache, frequency_penalty=0.5)
    assert fake.requests == 27 and fake.last_body["frequency_penalty"] == 0.5  # sent, and its own cache entry
    evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=cache, frequency_penalty=0.0)
    assert fake.requests == 27  # 0 is not sent: the first run's cache entries serve it


def test_pool_is_bounded_and_concurrent() -> None:
    fake = FakeChat(delay=0.05)
    evaluation.run_arms(fake.client(), _arms() * 3, QUESTIONS, base_url="u", cache=None, workers=4)
    assert 2 <= fake.max_active <= 4


def test_failures_are_reported_together_and_successes_cached(tmp_path) -> None:
    fake = FakeChat(fail_model="ft:base:local:x:1")
    cache = evaluation.ResponseCache(tmp_path / "cache")
    with pytest.raises(evaluation.EvaluationError, match="3 of 9 requests failed .*微调模型"):
        evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=cache)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 6


def test_tables_and_claims(tmp_path) -> None:
    fake = FakeChat()
    answers = evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=None)
    table = evaluation.side_by_side(answers, QUESTIONS, REFERENCES)
    assert list(table.columns) == [evaluation.QUESTION_COLUMN, evaluation.REFERENCE_LABEL, evaluation.BASE_ARM, evaluation.FEW_SHOT_ARM, evaluation.TUNED_ARM]
    assert table.loc[0, evaluation.BASE_ARM] == QUESTIONS[0][::-1]
    prices = {evaluation.BASE_ARM: (1.0, 2.0), evaluation.FEW_SHOT_ARM: (1.0, 2.0), evaluation.TUNED_ARM: (6.0, 12.0)}
    metrics = evaluation.arm_metrics(answers, REFERENCES, prices)
    base = metrics.loc[evaluation.BASE_ARM]
    assert metrics.loc[evaluation.FEW_SHOT_ARM, "提示词元（平均）"] > base["提示词元（平均）"]
    expected = 1000 * (base["提示词元（平均）"] * 1 + base["回答词元（平均）"] * 2) / 1e6
    assert base[evaluation.PRICED_COLUMN] == pytest.approx(expected)
    assert base["被截断占比"] == 0.0  # the fake answers all finish with "stop"
    claims = evaluation.claims_check(metrics)
    assert claims.iloc[0]["我们的数字"].startswith("少 ") and claims.iloc[0]["依据"].startswith("实测")
    assert claims.iloc[1]["我们的数字"] == "6.0×" and claims.iloc[1]["依据"].startswith("按价目表计算")


def test_intervals_paired_and_style_tables() -> None:
    fake = FakeChat()
    answers = evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=None)
    intervals = evaluation.metric_intervals(answers, REFERENCES, resamples=50, seed=1)
    assert len(intervals) == 3 * len(evaluation.INTERVAL_METRICS)
    pooled = intervals["指标"].isin(evaluation.POOLED_METRICS)
    boxed = intervals[~pooled]
    assert ((boxed["95% 区间下限"] <= boxed["值"] + 1e-9) & (boxed["值"] <= boxed["95% 区间上限"] + 1e-9)).all()
    # Distinct-n pools an arm's answers; a resample repeats answers and lowers it, so it gets no interval
    assert intervals[pooled]["95% 区间下限"].isna().all() and pooled.sum() == 3 * 2
    assert evaluation.interval_text(9.19, float("nan"), float("nan")) == "9.19（不给区间）"
    table = evaluation.metric_table(intervals)
    assert list(table.columns) == [evaluation.BASE_ARM, evaluation.FEW_SHOT_ARM, evaluation.TUNED_ARM]
    assert list(table.index) == list(evaluation.INTERVAL_METRICS)
    assert evaluation.interval_text(14.386, 12.1, 16.8) == "14.39 [12.10, 16.80]"
    paired = evaluation.paired_rouge_l(answers, REFERENCES, resamples=50, seed=1)
    # every arm answers with the reversed question, so each question is a tie: win rate exactly one half
    assert list(paired["平"]) == [3, 3] and list(paired["胜率（平局算半）"]) == [0.5, 0.5]
    assert paired["结论"].iloc[0].startswith("区间含 0.5")
    assert evaluation.verdict((0.6, 0.9)).startswith("区间不含 0.5：微调组更好")
    assert evaluation.verdict((0.1, 0.4)).startswith("区间不含 0.5：微调组更差")
    style = evaluation.style_table(answers, REFERENCES, resamples=50, seed=1)
    assert style.index[0] == evaluation.REFERENCE_LABEL and len(style) == 4
    assert style.loc[evaluation.REFERENCE_LABEL, "用 Markdown %"] == "0 [0, 0]"
    assert "陷入重复 %" in style.columns
    readable = evaluation.readability_table(answers, REFERENCES)
    assert list(readable.index) == list(style.index)
    assert (readable["回答数"] == len(QUESTIONS)).all() and (readable["空回答"] == 0).all()


class FakeCounting(FakeChat):
    """A provider with `/v1/responses/input_tokens`: its count is 5 template tokens plus the input's characters."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/responses/input_tokens"):
            return super().handler(request)
        body = json.loads(request.read())
        with self.lock:
            self.counts += 1
        chars = sum(len(item["content"]) for item in body["input"])
        return httpx.Response(200, json={"object": "response.input_tokens", "input_tokens": 5 + chars})


def test_token_counts_come_from_the_count_endpoint_and_budget_is_the_quantile(tmp_path) -> None:
    fake = FakeCounting()
    counts = evaluation.text_token_counts(fake.client(), "base", ["一二三", "一" * 10], base_url="u", cache=None, workers=2)
    assert counts == [3, 10]  # the template's 5 tokens cancel out
    assert fake.counts == 3 and fake.requests == 0  # the empty baseline plus one per text; nothing generated
    assert evaluation.token_budget(list(range(1, 101)), 0.9) == 90
    assert evaluation.token_budget([5, 1000], 0.9, cap=256) == 256
    with pytest.raises(evaluation.EvaluationError, match="no reference answers"):
        evaluation.token_budget([])


def test_token_counts_fall_back_to_usage_where_the_provider_cannot_count(tmp_path) -> None:
    fake = FakeChat()  # no count endpoint (the mock answers it 404); its prompt_tokens are the prompt's characters
    cache = evaluation.ResponseCache(tmp_path / "cache")
    counts = evaluation.text_token_counts(fake.client(), "base", ["一二三", "一" * 10], base_url="u", cache=cache, workers=2)
    assert counts == [3, 10]
    assert fake.requests == 3  # the empty baseline plus one per text
    evaluation.text_token_counts(fake.client(), "base", ["一二三", "一" * 10], base_url="u", cache=cache)
    assert fake.requests == 3  # cached
    assert evaluation.token_budget(list(range(1, 101)), 0.9) == 90
    assert evaluation.token_budget([5, 1000], 0.9, cap=256) == 256
    with pytest.raises(evaluation.EvaluationError, match="no reference answers"):
        evaluation.token_budget([])


def test_system_prompt_read_from_training_file_and_bad_lines_named(tmp_path) -> None:
    train = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    train.write_text(json.dumps(row, ensure_ascii=False) + "\n\n{oops\n", encoding="utf-8")
    with pytest.raises(evaluation.EvaluationError, match=r"train.jsonl:3: not valid JSON"):
        evaluation.training_system_prompt(train)
    train.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert evaluation.training_system_prompt(train) == "你是医生。"


def test_arm_prices_local_uses_walkthrough_model_remote_uses_configured(tmp_path, monkeypatch) -> None:
    import dataclasses

    from helpers.config import load_config

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path))
    cfg = load_config(env_file=tmp_path / "none.env")
    arms = _arms()
    prices, model = evaluation.arm_prices(cfg, arms)
    assert model == "gpt-3.5-turbo-0613"
    assert prices[evaluation.TUNED_ARM][0] / prices[evaluation.BASE_ARM][0] == 8.0  # the walkthrough's "6-8x"
    remote = dataclasses.replace(cfg, backend="remote", base_model="gpt-4o-mini-2024-07-18")
    prices, model = evaluation.arm_prices(remote, arms)
    assert model == "gpt-4o-mini-2024-07-18" and prices[evaluation.FEW_SHOT_ARM] == (0.15, 0.60)
    with pytest.raises(evaluation.EvaluationError, match="BASE_INFERENCE_PRICES"):
        evaluation.arm_prices(dataclasses.replace(remote, base_model="babbage-002"), arms)


def test_cost_table_and_break_even_follow_from_measured_tokens() -> None:
    """Dollars per 1,000 requests from the measured means; the break-even prompt length solves cost(few) = cost(tuned)."""
    fake = FakeChat()
    answers = evaluation.run_arms(fake.client(), _arms(), QUESTIONS, base_url="u", cache=None)
    prices = {evaluation.BASE_ARM: (1.5, 2.0), evaluation.FEW_SHOT_ARM: (1.5, 2.0), evaluation.TUNED_ARM: (12.0, 16.0)}
    priced = evaluation.arm_metrics(answers, REFERENCES, prices)
    costs = evaluation.cost_table(priced, prices)
    assert list(costs.index) == [evaluation.BASE_ARM, evaluation.FEW_SHOT_ARM, evaluation.TUNED_ARM]
    assert costs.loc[evaluation.TUNED_ARM, "每千次请求（美元，按价目表计算）"] == round(priced.loc[evaluation.TUNED_ARM, evaluation.PRICED_COLUMN], 3)
    even = evaluation.break_even(priced, prices, trained_tokens=50_000, training_price=8.0)
    few_answer = priced.loc[evaluation.FEW_SHOT_ARM, "回答词元（平均）"]
    at_break_even = (even.break_even_prompt_tokens * 1.5 + few_answer * 2.0) / 1e6
    assert at_break_even == pytest.approx(even.tuned_usd)  # a few-shot prompt that long costs what a tuned request does
    assert even.training_usd == pytest.approx(0.4)
    # The fake's few-shot prompts are long enough at these prices: each request saves money, training pays back.
    assert even.few_shot_prompt_tokens > even.break_even_prompt_tokens
    assert even.requests_to_recover_training == pytest.approx(0.4 / (even.few_shot_usd - even.tuned_usd))
    assert "抵消训练" in even.lines()[-1]
    dear = dict(prices, **{evaluation.TUNED_ARM: (100.0, 100.0)})
    never = evaluation.break_even(evaluation.arm_metrics(answers, REFERENCES, dear), dear,
                                  trained_tokens=50_000, training_price=8.0)
    assert never.few_shot_prompt_tokens < never.break_even_prompt_tokens and never.requests_to_recover_training is None
    assert "永远收不回来" in never.lines()[-1]


def test_cost_summary_is_chinese(tmp_path) -> None:
    from types import SimpleNamespace

    from helpers import workflow
    from helpers.files import write_json_atomic

    cfg = SimpleNamespace(work_dir=tmp_path)
    write_json_atomic(tmp_path / "train_stats.json", {"billed_tokens": 1000, "estimated_cost_usd": 0.0, "encoding": "o200k_base"})
    table = workflow.cost_summary(cfg, SimpleNamespace(trained_tokens=800))
    assert table.loc["实际 / 预计", "值"] == "0.80" and table.loc["作业报告的 trained_tokens", "值"] == "800"


def test_stage_arms_ask_the_base_model_then_each_checkpoint() -> None:
    checkpoints = pd.DataFrame({"step": [25, 50], "model": ["ft:m:ckpt-step-25", "ft:m:ckpt-step-50"]})
    arms = evaluation.stage_arms("base", checkpoints, "sys")
    assert [(a.name, a.model) for a in arms] == [("基础模型（训练前）", "base"), ("第 1 轮末（第 25 步）", "ft:m:ckpt-step-25"),
                                                 ("第 2 轮末（第 50 步）", "ft:m:ckpt-step-50")]
    assert all(a.system_prompt == "sys" and not a.examples for a in arms)


def test_best_checkpoint_is_a_fourth_arm_only_when_it_is_not_final() -> None:
    from helpers import workflow

    assert len(evaluation.make_arms("b", "ft:x", "s", ())) == 3
    arms = evaluation.make_arms("b", "ft:x", "s", (), best_checkpoint="ft:x:ckpt-step-25")
    assert arms[-1].name == evaluation.BEST_CHECKPOINT_ARM and arms[-1].model == "ft:x:ckpt-step-25"
    rising = pd.DataFrame({"step": [25, 50], "model": ["ft:x:ckpt-step-25", "ft:x:ckpt-step-50"], "full_valid_loss": [3.7, 3.8]})
    model, why = workflow.best_checkpoint_model(rising)
    assert model == "ft:x:ckpt-step-25" and "第 25 步" in why
    falling = rising.assign(full_valid_loss=[3.8, 3.7])
    assert workflow.best_checkpoint_model(falling)[0] is None


def test_decoding_table_counts_loops_per_penalty() -> None:
    def answer(text: str, reason: str = "stop") -> evaluation.Answer:
        return evaluation.Answer(evaluation.TUNED_ARM, 0, text, 10, 20, reason, False)

    looping = "你好，" + "胃复康颗粒，" * 6
    table = evaluation.decoding_table({0.0: [answer(looping, "length"), answer("多休息。")], 0.5: [answer("多休息。")] * 2})
    assert table.loc[0.0, "陷入重复"] == 1 and table.loc[0.0, "被截断（finish_reason=length）"] == 1
    assert "胃复康颗粒" in table.loc[0.0, "重复的短语（举例）"] and table.loc[0.5, "陷入重复"] == 0
