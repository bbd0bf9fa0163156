"""LoRA trainer on the tiny test model: masking, weights, batching, events, checkpoints, seeding, cancellation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from helpers.localapi import models as M
from helpers.localapi import trainer as T

SYSTEM = "你是一名专业的医生。"
QA = [
    ("高血压怎么治疗？", "你好，高血压需要长期规律服药，低盐饮食，适当运动，定期监测血压。"),
    ("感冒发烧吃什么药？", "你好，体温超过38.5度可以服用退烧药，多喝水，注意休息。"),
    ("失眠怎么办？", "你好，建议规律作息，睡前不要玩手机，必要时在医生指导下用药。"),
    ("胃疼是什么原因？", "你好，胃疼常见于胃炎、胃溃疡，建议做胃镜检查明确病因。"),
    ("孩子咳嗽老不好怎么办？", "你好，孩子长期咳嗽要排除过敏和支气管炎，建议儿科就诊。"),
    ("腰疼应该挂什么科？", "你好，腰疼可以先挂骨科，如果伴有尿频尿痛，需要看泌尿科。"),
]


@pytest.fixture(scope="session")
def tok(engine_cache):
    return M.load_tokenizer("tiny-test", engine_cache)


def chat(q: str, a: str, **extra) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                         {"role": "assistant", "content": a, **extra}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def labelled_text(tok, ex: T.Example) -> str:
    return tok.decode([t for t in ex.labels if t != T.IGNORE])


def test_only_assistant_tokens_are_labelled(tok):
    stop = M.stop_token_ids(tok)
    ex = T.encode_example(tok, chat(*QA[0])["messages"], 1024, stop)
    assert labelled_text(tok, ex) == QA[0][1] + "<|im_end|>"
    # the tokens are exactly the template's rendering of the conversation
    full = M.render_chat(tok, chat(*QA[0])["messages"], False)
    assert tok.decode(ex.input_ids) == full
    # the prompt up to the assistant header is never labelled
    prompt = M.encode_prompt(tok, chat(*QA[0])["messages"][:2])
    assert ex.input_ids[: len(prompt)] == prompt and set(ex.labels[: len(prompt)]) == {T.IGNORE}


def test_weight_zero_assistant_turns_are_not_learned(tok):
    stop = M.stop_token_ids(tok)
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "错误的回答", "weight": 0},
                {"role": "user", "content": "再说一次"}, {"role": "assistant", "content": "正确的回答", "weight": 1}]
    ex = T.encode_example(tok, messages, 1024, stop)
    assert labelled_text(tok, ex) == "正确的回答<|im_end|>"
    messages[-1]["weight"] = 0
    assert T.encode_example(tok, messages, 1024, stop).n_trainable == 0


@pytest.mark.parametrize("line, problem", [
    ("{not json", "invalid JSON"),
    ('{"messages": []}', "non-empty 'messages'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "role of system, user or assistant"),
    ('{"messages": [{"role": "assistant", "content": "hi", "weight": 0.5}]}', "only 0 and 1"),
])
def test_bad_lines_are_named(tmp_path, line, problem):
    path = write_jsonl(tmp_path / "t.jsonl", [chat(*QA[0]), line])
    with pytest.raises(T.TrainDataError, match=rf"t\.jsonl:2: .*{problem}"):
        T.read_chat_jsonl(path)


def test_length_grouping_covers_every_example_once_and_pads_less():
    rng = random.Random(0)
    lengths = [rng.randint(20, 600) for _ in range(100)]
    grouped = T.length_grouped_batches(lengths, 4, random.Random(1))
    plain = T.random_batches(len(lengths), 4, random.Random(1))
    assert sorted(i for b in grouped for i in b) == list(range(100))
    assert all(len(b) == 4 for b in grouped)
    padded = lambda batches: sum(max(lengths[i] for i in b) * len(b) for b in batches)  # noqa: E731
    assert padded(grouped) < 0.8 * padded(plain)
    assert T.length_grouped_batches(lengths, 4, random.Random(1)) == grouped  # seeded


def test_micro_batches_respect_the_token_budget():
    lengths = [1000, 900, 100, 100, 100, 50]
    groups = T.micro_batches(list(range(6)), lengths, max_tokens=2000)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert all(max(lengths[i] for i in g) * len(g) <= 2000 for g in groups)


def test_resolve_hyperparameters_fills_auto_values():
    hp = T.resolve_hyperparameters("tiny-test", 100)
    assert (hp["n_epochs"], hp["batch_size"], hp["learning_rate_multiplier"]) == (3, 4, 1.0)
    assert T.resolve_hyperparameters("tiny-test", 10)["n_epochs"] == 10  # small files see ~100 examples
    assert T.resolve_hyperparameters("tiny-test", 2, batch_size=8)["batch_size"] == 2
    assert T.resolve_hyperparameters("tiny-test", 100, 5, 2, 0.5)["learning_rate"] == pytest.approx(T.DEFAULT_LEARNING_RATE / 2)
    with pytest.raises(M.UnknownModelError):
        T.resolve_hyperparameters("nope", 10)


def test_auto_learning_rate_is_each_models_own():
    for model_id in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "tiny-test"):
        rate = M.get_spec(model_id).learning_rate
        assert T.resolve_hyperparameters(model_id, 100)["learning_rate"] == rate
        assert T.resolve_hyperparameters(model_id, 100, lr_mult=0.5)["learning_rate"] == pytest.approx(rate / 2)
        assert T.TrainSpec(model_id, Path("t.jsonl"), None, Path("out")).learning_rate == rate
    assert T.TrainSpec("tiny-test", Path("t.jsonl"), None, Path("out"), learning_rate=2e-4).learning_rate == 2e-4


def _spec(tmp_path: Path, cache: Path, **kw) -> T.TrainSpec:
    train = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in QA])
    valid = write_jsonl(tmp_path / "valid.jsonl", [chat(q, a) for q, a in QA[:2]])
    args = dict(base_model="tiny-test", train_path=train, valid_path=valid, output_dir=tmp_path / "out", n_epochs=2,
                batch_size=2, learning_rate_multiplier=20.0, seed=7, cache_dir=cache, eval_every=2)
    args.update(kw)
    return T.TrainSpec(**args)


def test_training_reports_metrics_checkpoints_and_a_loadable_adapter(tmp_path, engine_cache, tok):
    events: list[dict] = []
    result = T.train(_spec(tmp_path, engine_cache), events.append, lambda: False)
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 7)) and {m["total_steps"] for m in metrics} == {6}
    assert all(0 <= m["train_mean_token_accuracy"] <= 1 and m["train_loss"] > 0 for m in metrics)
    assert [m["step"] for m in metrics if "valid_loss" in m] == [2, 3, 4, 6]  # every 2 steps and at epoch ends
    assert result.final_valid_loss == metrics[-1]["full_valid_loss"]
    assert [m["step"] for m in metrics if "full_valid_loss" in m] == [3, 6]
    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert [(c["epoch"], c["step"]) for c in checkpoints] == [(1, 3), (2, 6)]
    assert all((Path(c["path"]) / "adapter_config.json").is_file() for c in checkpoints)
    assert result.checkpoints == [{k: c[k] for k in ("epoch", "step", "path", "metrics")} for c in checkpoints]
    # trained tokens: every token of every example (no padding), once per epoch
    stop = M.stop_token_ids(tok)
    per_epoch = sum(len(T.encode_example(tok, chat(q, a)["messages"], 512, stop).input_ids) for q, a in QA)
    assert result.trained_tokens == 2 * per_epoch and not result.cancelled and result.steps == 6
    assert metrics[-1]["valid_loss"] < result.initial_valid_loss  # it learned (lr x20 on the random tiny model)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    meta = json.loads((result.adapter_dir / "train_meta.json").read_text())
    assert meta["base_model"] == "tiny-test" and meta["trained_tokens"] == result.trained_tokens
    tuned = M.load_model("tiny-test", engine_cache, result.adapter_dir)
    base = M.load_model("tiny-test", engine_cache)
    ids = torch.tensor([M.encode_prompt(tok, chat(*QA[0])["messages"][:2])])
    with torch.no_grad():
        assert not torch.allclose(tuned.model(input_ids=ids).logits, base.model(input_ids=ids).logits)


def test_training_is_seeded(tmp_path, engine_cache):
    def losses(sub: str, seed: int) -> list[float]:
        events: list[dict] = []
        (tmp_path / sub).mkdir()
        T.train(_spec(tmp_path / sub, engine_cache, n_epochs=1, valid_path=None, seed=seed, save_checkpoints=False),
                events.append, lambda: False)
        return [e["train_loss"] for e in events if e["type"] == "metrics"]

    first = losses("a", 1)
    assert losses("b", 1) == first
    assert losses("c", 2) != first


def test_should_stop_cancels_between_steps(tmp_path, engine_cache):
    events: list[dict] = []
    result = T.train(_spec(tmp_path, engine_cache, valid_path=None), events.append,
                     lambda: sum(e["type"] == "metrics" for e in events) >= 2)
    assert result.cancelled and result.steps == 2 and result.adapter_dir is None
    assert result.trained_tokens > 0 and not (tmp_path / "out" / "adapter").exists()


def test_cut_and_skipped_examples_are_reported(tmp_path, engine_cache):
    rows = [chat("头痛", "多休息"), chat("很长的问题" * 80, "回答"), chat("问题", "不学这个回答", weight=0)]
    spec = _spec(tmp_path, engine_cache, train_path=write_jsonl(tmp_path / "long.jsonl", rows), valid_path=None,
                 n_epochs=1, max_seq_len=64, save_checkpoints=False)
    events: list[dict] = []
    result = T.train(spec, events.append, lambda: False)
    warnings = [e["message"] for e in events if e["type"] == "message" and e["level"] == "warn"]
    assert warnings and "1 of 3 examples cut to 64 tokens; 2 skipped" in warnings[0]
    assert result.n_examples == 1


def test_no_learnable_example_is_an_error(tmp_path, engine_cache):
    spec = _spec(tmp_path, engine_cache, train_path=write_jsonl(tmp_path / "w.jsonl", [chat("问", "答", weight=0)]))
    with pytest.raises(T.TrainDataError, match="no example has an assistant token"):
        T.train(spec, lambda e: None, lambda: False)


def test_shared_prefix_pass_gives_the_same_loss(engine_cache, tok):
    loaded = M.load_model("tiny-test", engine_cache)
    stop = M.stop_token_ids(tok)
    examples = [T.encode_example(tok, chat(q, a)["messages"], 512, stop) for q, a in QA[:4]]
    batch = T.collate(examples, tok.pad_token_id, "cpu")
    prefix = T.shared_prefix_length(batch)
    assert prefix > 16  # the system prompt and the user header
    assert (batch["targets"][:, :prefix] == T.IGNORE).all()
    with torch.no_grad():
        shared = T.batch_loss(loaded.model, batch, "cpu", "fp32", share_prefix=True)
        plain = T.batch_loss(loaded.model, batch, "cpu", "fp32", share_prefix=False)
    assert shared[2] == plain[2] and shared[1] == plain[1]
    assert float(shared[0]) == pytest.approx(float(plain[0]), rel=1e-5)
    single = T.collate(examples[:1], tok.pad_token_id, "cpu")
    assert T.shared_prefix_length(single) == 0
