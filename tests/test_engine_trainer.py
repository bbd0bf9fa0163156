"""LoRA trainer on the tiny test model: masking, weights, batching, events, checkpoints, seeding, cancellation."""

from __future__ import annotations

import json
import math
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
    ('{"messages": []}', "'messages' must be a non-empty array"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ('{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}', "role 'robot' is not one of"),
    ('{"messages": [{"role": "assistant", "content": "hi", "weight": 0.5}]}', "weight must be 0 or 1"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}', "message 2 \\(assistant\\): missing 'content'"),
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
    # OpenAI's rule: 3; min(25, 100 // n) below 100/3 examples; max(1, 25000 // n) above 25000/3
    assert [T.resolve_hyperparameters("tiny-test", n)["n_epochs"] for n in (5, 10, 50, 100, 20000)] == [20, 10, 3, 3, 1]
    assert T.resolve_hyperparameters("tiny-test", 2, batch_size=8)["batch_size"] == 2
    assert T.resolve_hyperparameters("tiny-test", 100, 5, 2, 0.5)["learning_rate"] == pytest.approx(T.DEFAULT_LEARNING_RATE / 2)
    with pytest.raises(M.UnknownModelError):
        T.resolve_hyperparameters("nope", 10)


def test_errors_name_the_file_by_the_name_given_not_its_path(tmp_path):
    path = write_jsonl(tmp_path / "blob-on-disk", [chat(*QA[0]), '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}'])
    with pytest.raises(T.TrainDataError) as caught:
        T.read_chat_jsonl(path, "file-abc (train.jsonl)")
    assert str(caught.value) == "file-abc (train.jsonl):2: message 2 (assistant): missing 'content'"
    assert str(tmp_path) not in str(caught.value)


WEATHER_TOOL = {"type": "function", "function": {"name": "get_current_weather", "description": "Get the current weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def tool_example() -> dict:
    """OpenAI's documented tool-calling training example, with the tool's answer and a final reply."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_current_weather", "arguments": json.dumps({"location": "上海"}, ensure_ascii=False)}}
    return {"messages": [{"role": "user", "content": "上海天气怎么样？"},
                         {"role": "assistant", "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 22}"},
                         {"role": "assistant", "content": "上海现在22度。"}],
            "tools": [WEATHER_TOOL], "parallel_tool_calls": False}


@pytest.fixture
def tool_tok(tok):
    """The tiny model's tokenizer with Qwen2.5's chat template (which renders tools) instead of SmolLM2's (which does not)."""
    import copy

    other = copy.deepcopy(tok)
    other.chat_template = (Path(__file__).parent / "qwen2.5_chat_template.jinja").read_text(encoding="utf-8")
    return other


def test_smollm2_template_cannot_render_tools_and_qwen_template_can(tok, tool_tok):
    assert not M.supports_tools(tok) and M.supports_tools(tool_tok)
    with pytest.raises(T.TrainDataError, match="cannot render tools"):
        T.encode_example(tok, tool_example()["messages"], 1024, M.stop_token_ids(tok), [WEATHER_TOOL])


def test_tool_example_is_rendered_with_the_template_and_the_calls_are_learned(tool_tok):
    ex_row = tool_example()
    stop = M.stop_token_ids(tool_tok)
    ex = T.encode_example(tool_tok, ex_row["messages"], 1024, stop, ex_row["tools"])
    assert tool_tok.decode(ex.input_ids) == M.render_chat(tool_tok, ex_row["messages"], False, ex_row["tools"])
    assert '"name": "get_current_weather", "description"' in tool_tok.decode(ex.input_ids)  # the declared tool, in the system turn
    learned = labelled_text(tool_tok, ex)
    # the tool call in the template's syntax (arguments as a JSON object, not a string) and the final answer
    assert learned == ('<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "上海"}}\n</tool_call><|im_end|>'
                       "上海现在22度。<|im_end|>")
    assert "tool_response" not in learned and ex.full_length == len(ex.input_ids)


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
    # lr x5: at x20 the random tiny model's loss oscillates, and whether it ends below its start then depends on the
    # CPU's bf16 rounding (it did not on an AMD EPYC); at x5 it falls steadily by ~0.2 nats in bf16 and fp32 alike.
    result = T.train(_spec(tmp_path, engine_cache, learning_rate_multiplier=5.0), events.append, lambda: False)
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
    # it learned: the validation rows are training rows, so their loss falls well beyond rounding noise (~0.2 measured)
    assert metrics[-1]["valid_loss"] < result.initial_valid_loss - 0.05
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.05
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
    rows = [chat("头痛", "多休息"), chat("很长的问题" * 80, "回答"), chat("另一个很长的问题" * 60, "回答")]
    spec = _spec(tmp_path, engine_cache, train_path=write_jsonl(tmp_path / "long.jsonl", rows), valid_path=None,
                 n_epochs=1, max_seq_len=64, save_checkpoints=False)
    events: list[dict] = []
    result = T.train(spec, events.append, lambda: False)
    warnings = [e["message"] for e in events if e["type"] == "message" and e["level"] == "warn"]
    assert warnings and "2 of 3 examples cut to 64 tokens; 2 skipped" in warnings[0]
    assert result.n_examples == 1


def test_no_learnable_example_is_an_error(tmp_path, engine_cache):
    spec = _spec(tmp_path, engine_cache, train_path=write_jsonl(tmp_path / "w.jsonl", [chat("问", "答", weight=0)]))
    with pytest.raises(T.TrainDataError, match="w.jsonl:1: every assistant message has weight 0"):  # the validator's rule
        T.train(spec, lambda e: None, lambda: False)
    spec = _spec(tmp_path, engine_cache, train_path=write_jsonl(tmp_path / "c.jsonl", [chat("长问题" * 80, "答")]), max_seq_len=32)
    with pytest.raises(T.TrainDataError, match="c.jsonl: no example has an assistant token"):
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


def test_head_loss_equals_cross_entropy_and_its_gradient():
    """The output layer + loss a vocabulary slice at a time (trainer.head_loss) computes F.cross_entropy's value,
    gradient and argmax, whatever the slice size (one slice, slices with a short last one, a slice per row)."""
    torch.manual_seed(3)
    head = torch.nn.Linear(16, 97, bias=True).requires_grad_(False)
    hidden = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 97, (300,))
    reference_hidden = hidden.detach().clone().requires_grad_(True)
    logits = head(reference_hidden)
    reference = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    reference.backward()
    for rows in (97, 20, 1):  # one slice; 5 slices, the last one short; 97 slices
        hidden.grad = None
        loss, correct = T.head_loss(hidden, head, targets, torch.float32, rows=rows)
        loss.backward()
        assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
        assert correct == int((logits.argmax(-1) == targets).sum())
        torch.testing.assert_close(hidden.grad, reference_hidden.grad, rtol=1e-5, atol=1e-6)
        with torch.no_grad():  # scoring without gradients keeps no gradient buffer and gives the same value
            assert float(T.head_loss(hidden, head, targets, torch.float32, rows=rows)[0]) == pytest.approx(
                float(reference), rel=1e-6)


def test_head_loss_argmax_takes_the_first_of_tied_logits_across_slices():
    """Tied top logits in different vocabulary slices: the prediction is the first, as torch's argmax picks."""
    head = torch.nn.Linear(2, 6, bias=False).requires_grad_(False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
    hidden = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # rows 1 and 4 tie at 2.0
    _, correct = T.head_loss(hidden, head, torch.tensor([1, 4]), torch.float32, rows=3)
    assert correct == 1  # row 1 (first slice) is the prediction, not row 4 (second slice)


def test_head_loss_on_a_bf16_head_in_float32_equals_the_widened_head():
    """A head stored in bf16 and computed in float32 (a bf16 base on a CPU without native bf16), widened a slice
    at a time, gives what the whole head widened at once gives."""
    torch.manual_seed(5)
    head = torch.nn.Linear(16, 97, bias=False).requires_grad_(False).to(torch.bfloat16)
    wide = torch.nn.Linear(16, 97, bias=False).requires_grad_(False)
    with torch.no_grad():
        wide.weight.copy_(head.weight.float())
    hidden = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 97, (40,))
    loss, _ = T.head_loss(hidden, head, targets, torch.float32, rows=16)
    loss.backward()
    other = hidden.detach().clone().requires_grad_(True)
    reference, _ = T.head_loss(other, wide, targets, torch.float32, rows=97)
    reference.backward()
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    torch.testing.assert_close(hidden.grad, other.grad, rtol=1e-5, atol=1e-6)


def _three_examples(tok) -> dict:
    """A micro-batch of three real-looking conversations."""
    stop = M.stop_token_ids(tok)
    return T.collate([T.encode_example(tok, chat(q, a)["messages"], 512, stop) for q, a in QA[:3]], tok.pad_token_id, "cpu")


def _loss_and_grads(model, batch: dict, lora: str, checkpointing: bool, **kw) -> tuple:
    """(loss, correct, labelled, LoRA gradients) of one micro-batch, after giving the LoRA weights whose names contain
    `lora` seeded random values (a trained-looking adapter: B != 0, so every LoRA weight gets a gradient)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if lora in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.02)
    T.set_checkpointing(model, checkpointing)
    model.train()
    loss, correct, n = T.batch_loss(model, batch, "cpu", "fp32", **kw)
    loss.backward()
    return float(loss.detach()), correct, n, torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("share_prefix", [True, False])
def test_checkpointing_and_chunked_head_keep_the_loss_and_gradients(engine_cache, tok, share_prefix):
    """Issue 17's memory savings change where numbers are kept, not what is computed (fp32: equal to rounding)."""
    batch = _three_examples(tok)
    results = []
    for checkpointing, fused in ((False, False), (True, True)):
        model = T.add_lora(M.load_model("tiny-test", engine_cache).model, T.DEFAULT_LORA_RANK, 42, "fp32")
        results.append(_loss_and_grads(model, batch, "lora_B", checkpointing, share_prefix=share_prefix, fused_head=fused))
    (old_loss, old_correct, old_n, old_grads), (new_loss, new_correct, new_n, new_grads) = results
    assert (new_correct, new_n) == (old_correct, old_n)
    assert new_loss == pytest.approx(old_loss, rel=1e-6)
    assert float((new_grads - old_grads).norm() / old_grads.norm()) < 1e-5  # measured 1.4e-7 to 2.7e-7


@pytest.mark.parametrize("checkpointing", [True, False])
def test_a_bf16_base_computed_in_fp32_equals_fp32_on_the_rounded_weights(engine_cache, tok, checkpointing):
    """base_weights="bf16" with fp32 compute (issue 17, a laptop without native bf16): half the base's memory, and the
    arithmetic of float32 on the bf16-rounded weights (the conversions are exact), gradients included, with and
    without checkpointing (the layers widen into shared buffers: a layer that used another's would show here)."""
    batch = _three_examples(tok)
    results = []
    for stored in ("bfloat16", "rounded"):
        base = M.load_model("tiny-test", engine_cache, dtype="bfloat16" if stored == "bfloat16" else "float32").model
        if stored == "rounded":
            base.to(torch.bfloat16).to(torch.float32)
        model = T.add_lora(base, T.DEFAULT_LORA_RANK, 42, "fp32")
        if stored == "bfloat16":
            assert T.upcast_base_layers(model) > 0
            assert all(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
        # the same adapter in both (peft initialises A in the base's dtype: bf16-rounded there)
        results.append(_loss_and_grads(model, batch, "lora_", checkpointing))
    (got_loss, got_correct, got_n, got_grads), (want_loss, want_correct, want_n, want_grads) = results
    assert (got_correct, got_n) == (want_correct, want_n)
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    # equal up to float32 rounding (measured 4.1e-5 on an AMD EPYC; the fp32-only reorderings above: ~2e-7)
    assert float((got_grads - want_grads).norm() / want_grads.norm()) < 2e-4


def test_widened_layers_of_one_shape_share_one_buffer(engine_cache):
    """A bf16 base's layers widen their weights into one float32 buffer per weight shape, per model (the gradients
    test above shows the sharing does not mix layers up: q and o, gate and up have the same shapes)."""
    buffers = []
    for _ in range(2):
        model = T.add_lora(M.load_model("tiny-test", engine_cache, dtype="bfloat16").model, T.DEFAULT_LORA_RANK, 42,
                           "fp32")
        T.upcast_base_layers(model)
        layers = [m for m in model.modules() if hasattr(m, "scratch")]
        assert len({id(m.scratch) for m in layers}) == 1
        model(input_ids=torch.tensor([[1, 2, 3]]))  # every layer runs once (the output layer too, here)
        shapes = {tuple(m.weight.shape) for m in layers}
        assert len(layers) > len(shapes)  # layers share shapes ...
        assert {key[0] for key in layers[0].scratch} == shapes  # ... and a shape's buffer
        buffers.append(layers[0].scratch)
    assert buffers[0] is not buffers[1]  # each model its own


def test_init_adapter_starts_from_the_saved_lora_weights_exactly(tmp_path, engine_cache):
    from safetensors.torch import load_file

    first = T.train(_spec(tmp_path, engine_cache, n_epochs=1, valid_path=None, save_checkpoints=False),
                    lambda e: None, lambda: False)
    saved = load_file(str(first.adapter_dir / "adapter_model.safetensors"))
    loaded = M.load_model("tiny-test", engine_cache)
    model = T.add_lora(loaded.model, T.DEFAULT_LORA_RANK, 99, "fp32", first.adapter_dir)
    state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(state) == len(saved) > 0
    for name, tensor in saved.items():
        live = next(v for k, v in state.items() if k.replace(".default", "") == name)
        assert torch.equal(live.float(), tensor.float()), name
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # trainable, not frozen
    fresh = T.add_lora(M.load_model("tiny-test", engine_cache).model, T.DEFAULT_LORA_RANK, 99, "fp32")
    b_fresh = [v for k, v in fresh.state_dict().items() if "lora_B" in k]
    assert all(float(v.abs().sum()) == 0 for v in b_fresh)  # a new adapter starts at zero: the loaded one did not


def _train_events(spec: T.TrainSpec, stop_after: int | None = None) -> tuple[T.TrainResult, list[dict]]:
    """Run the trainer; with `stop_after`, stop once that many steps are done (as a pause or shutdown does)."""
    events: list[dict] = []
    stop = (lambda: False) if stop_after is None else (lambda: sum(e["type"] == "metrics" for e in events) >= stop_after)
    return T.train(spec, events.append, stop), events


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto: bf16 autocast where the CPU has native bf16
def test_a_stopped_run_resumes_to_the_same_weights_and_losses(tmp_path, engine_cache, precision):
    """Stopped after 5 of 9 steps (mid-epoch 2), then resumed: the same batches, losses and adapter as one run."""
    opts = dict(n_epochs=3, batch_size=2, seed=11, state_every_seconds=0.0, precision=precision)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole, whole_events = _train_events(_spec(tmp_path / "a", engine_cache, **opts))
    spec = _spec(tmp_path / "b", engine_cache, **opts)
    stopped, first_events = _train_events(spec, stop_after=5)
    assert stopped.cancelled and (spec.output_dir / T.STATE_FILE).exists()
    resumed, second_events = _train_events(T.TrainSpec(**{**vars(spec), "resume": True}))
    [marker] = [e for e in second_events if e["type"] == "resumed"]
    assert marker["step"] == 5 and [m["step"] for m in marker["metrics"]] == [1, 2, 3, 4, 5]
    steps = lambda evs: [e["step"] for e in evs if e["type"] == "metrics"]  # noqa: E731
    assert steps(second_events) == [6, 7, 8, 9] and steps(whole_events) == list(range(1, 10))
    loss = lambda evs: [e["train_loss"] for e in evs if e["type"] == "metrics"]  # noqa: E731
    # the measured difference is 0 (fp32 and bf16 alike, on AMD EPYC): the resumed run computes the same numbers
    assert loss(first_events)[:5] + loss(second_events) == loss(whole_events)
    assert [c["step"] for c in resumed.checkpoints] == [c["step"] for c in whole.checkpoints]
    assert resumed.trained_tokens == whole.trained_tokens and resumed.final_valid_loss == whole.final_valid_loss
    a = M.load_model("tiny-test", engine_cache, whole.adapter_dir).model.state_dict()
    b = M.load_model("tiny-test", engine_cache, resumed.adapter_dir).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unusable_saved_state_is_refused_without_its_path(tmp_path, engine_cache):
    spec = T.TrainSpec(**{**vars(_spec(tmp_path, engine_cache, n_epochs=1)), "resume": True})
    with pytest.raises(T.ResumeStateError, match="missing"):
        T.train(spec, lambda e: None, lambda: False)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    (spec.output_dir / T.STATE_FILE).write_bytes(b"not a state")
    with pytest.raises(T.ResumeStateError, match="corrupt") as info:
        T.train(spec, lambda e: None, lambda: False)
    assert str(tmp_path) not in str(info.value)


# ---- DPO (objectives.Dpo) ------------------------------------------------------------------------

def preference(q: str, good: str, bad: str, **extra) -> dict:
    return {"input": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}], **extra},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


PAIRS = [preference(q, a, "不知道。") for q, a in QA]


def test_dpo_loss_is_ln2_for_the_reference_and_falls_as_the_preferred_answer_gains():
    from helpers.localapi.objectives import dpo_loss

    ref_c, ref_r = torch.tensor([-20.0, -35.0]), torch.tensor([-25.0, -30.0])
    loss, margin = dpo_loss(ref_c, ref_r, ref_c, ref_r, beta=0.1)
    assert torch.allclose(loss, torch.full((2,), float(torch.log(torch.tensor(2.0))))) and not margin.any()
    # the policy raises the preferred answer by 5 nats and lowers the other by 5: margin 0.1 * 10 = 1
    loss, margin = dpo_loss(ref_c + 5, ref_r - 5, ref_c, ref_r, beta=0.1)
    assert torch.allclose(margin, torch.ones(2)) and torch.allclose(loss, -torch.nn.functional.logsigmoid(torch.ones(2)))


def test_a_pair_is_two_chat_examples_that_learn_only_their_output(tok, tmp_path):
    row = preference("头痛怎么办？", "多休息，必要时就医。", "不知道。")
    row["input"]["messages"] += [{"role": "assistant", "content": "请问头痛多久了？"}, {"role": "user", "content": "三天"}]
    pairs, stats = T.encode_preference_file(write_jsonl(tmp_path / "p.jsonl", [row]), tok, 512, M.stop_token_ids(tok))
    assert stats == {"examples": 1, "truncated": 0, "skipped_no_trainable_tokens": 0} and pairs[0].line == 1
    chosen, rejected = pairs[0].chosen, pairs[0].rejected
    assert "多休息，必要时就医。" in labelled_text(tok, chosen) and "请问头痛多久了" not in labelled_text(tok, chosen)
    assert labelled_text(tok, rejected).startswith("不知道。")
    n = len(chosen.input_ids) - chosen.n_trainable - 1  # the shared input: the same tokens on both sides
    assert chosen.input_ids[:n] == rejected.input_ids[:n]
    with pytest.raises(T.TrainDataError, match="c.jsonl:1: this is a chat example"):
        T.encode_preference_file(write_jsonl(tmp_path / "c.jsonl", [chat("问", "答")]), tok, 512, M.stop_token_ids(tok))


def test_dpo_auto_hyperparameters():
    hp = T.resolve_hyperparameters("tiny-test", 100, method="dpo")
    assert (hp["n_epochs"], hp["batch_size"], hp["beta"]) == (3, 4, 0.1)
    assert hp["learning_rate"] == pytest.approx(T.resolve_hyperparameters("tiny-test", 100)["learning_rate"] / 10)
    assert T.resolve_hyperparameters("tiny-test", 100, method="dpo", beta=0.5)["beta"] == 0.5
    assert "beta" not in T.resolve_hyperparameters("tiny-test", 100)


def _dpo_spec(tmp_path: Path, cache: Path, **kw) -> T.TrainSpec:
    train = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    valid = write_jsonl(tmp_path / "valid_pairs.jsonl", PAIRS[:2])
    args = dict(base_model="tiny-test", train_path=train, valid_path=valid, output_dir=tmp_path / "out", n_epochs=3,
                batch_size=2, learning_rate_multiplier=10.0, seed=3, cache_dir=cache, method="dpo", beta=0.1,
                state_every_seconds=0.0)
    args.update(kw)
    return T.TrainSpec(**args)


def test_dpo_starts_at_ln2_learns_the_preference_and_resumes_to_the_same_numbers(tmp_path, engine_cache):
    """The first step scores the policy before any update: it is the reference, so the loss is ln 2 (to 1e-3; measured
    2e-9 in fp32 and bf16); the preferred answers then gain; a run stopped after 4 of 9 steps and resumed computes
    what the uninterrupted run did (its reference log-probabilities come back from the saved state)."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole, events = _train_events(_dpo_spec(tmp_path / "a", engine_cache))
    metrics = [e for e in events if e["type"] == "metrics"]
    assert abs(metrics[0]["train_loss"] - math.log(2)) < 1e-3
    assert metrics[0]["train_reward_margin"] == pytest.approx(0.0, abs=1e-4) and metrics[0]["train_accuracy"] == 0.0
    assert whole.initial_valid_loss == pytest.approx(math.log(2), abs=1e-6)
    assert whole.final_valid_loss < math.log(2) - 0.05 and metrics[-1]["full_valid_accuracy"] == 1.0  # measured 0.50
    assert [c["step"] for c in whole.checkpoints] == [3, 6, 9] and whole.hyperparameters["beta"] == 0.1
    spec = _dpo_spec(tmp_path / "b", engine_cache)
    stopped, first = _train_events(spec, stop_after=4)
    assert stopped.cancelled
    resumed, second = _train_events(T.TrainSpec(**{**vars(spec), "resume": True}))
    loss = lambda evs: [e["train_loss"] for e in evs if e["type"] == "metrics"]  # noqa: E731
    assert loss(first)[:4] + loss(second) == loss(events)
    assert resumed.final_valid_loss == whole.final_valid_loss
    a = M.load_model("tiny-test", engine_cache, whole.adapter_dir).model.state_dict()
    b = M.load_model("tiny-test", engine_cache, resumed.adapter_dir).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_line_counts_the_adapters_parameters(engine_cache) -> None:
    loaded = M.load_model("tiny-test", engine_cache)
    model = T.add_lora(loaded.model, 4, seed=1, precision="fp32")
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    line = T.lora_line(model, 4)
    assert f" {adapters:,} trainable parameters of " in line and "alpha=8" in line
    assert f"{sum(p.numel() for p in model.parameters()):,}" in line
