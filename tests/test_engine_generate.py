"""Batched generation on the tiny test model: equality with model.generate, batching, seeds, stop, streaming."""

from __future__ import annotations

import threading

import pytest

from helpers.localapi import generate as G
from helpers.localapi import models as M


@pytest.fixture(scope="module")
def pool(engine_cache):
    return M.ModelPool(engine_cache, dtype="float32")


@pytest.fixture(scope="module")
def gen(pool):
    generator = G.Generator(pool, window=0.05, max_batch=8)
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def view(pool):
    return pool.get("tiny-test")


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": "你是一名医生。"}, {"role": "user", "content": question}]


QUESTIONS = ["头痛怎么办？", "高血压能喝酒吗？", "孩子发烧三天了", "失眠多梦", "胃疼", "腰疼挂什么科？"]


def test_greedy_answers_match_model_generate_one_at_a_time(gen, view):
    choices = gen.complete_many(view, [ask(q) for q in QUESTIONS], max_tokens=12, temperature=0)
    for q, (choice,) in zip(QUESTIONS, choices):
        assert choice.text == G.naive_generate(view, ask(q), 12)
        assert choice.usage.prompt_tokens == M.count_chat_tokens("tiny-test", ask(q), gen.pool.cache_dir)
        assert choice.finish_reason in {"stop", "length"} and 1 <= choice.usage.completion_tokens <= 12
        if choice.finish_reason == "length":
            assert choice.usage.completion_tokens == 12


def test_concurrent_requests_share_batches(pool, view):
    generator = G.Generator(pool, window=0.5, max_batch=16)
    try:
        results: dict[int, list[G.Choice]] = {}
        barrier = threading.Barrier(len(QUESTIONS))

        def work(i: int) -> None:
            barrier.wait()
            results[i] = generator.complete(view, ask(QUESTIONS[i]), max_tokens=8, temperature=0)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == list(range(len(QUESTIONS)))
        assert generator.batches_run < len(QUESTIONS) and generator.largest_batch > 1
        for i, q in enumerate(QUESTIONS):
            assert results[i][0].text == G.naive_generate(view, ask(q), 8)
    finally:
        generator.close()


def test_requests_join_a_running_batch_and_get_the_answers_they_would_get_alone(pool, view):
    """Continuous batching: requests that arrive while a batch decodes join it between steps (longer and shorter
    prompts than the running row's, so both caches get left-padded), and each answer is its one-at-a-time answer."""
    generator = G.Generator(pool, window=0.0, max_batch=4)
    long_question = "我最近三个月经常头痛，尤其是下午，伴有恶心，血压偏高，需要做哪些检查？" * 3
    try:
        first = generator.stream(view, ask("胃疼"), max_tokens=64, temperature=0)
        pieces = [next(first)]  # the first row is decoding now
        later = [(q, n) for q, n in ((long_question, 9), ("失眠", 16), ("腰疼挂什么科？", 5), ("发烧", 7))]
        results: dict[int, str] = {}
        threads = [threading.Thread(target=lambda i=i, q=q, n=n: results.__setitem__(
            i, generator.complete(view, ask(q), max_tokens=n, temperature=0)[0].text)) for i, (q, n) in enumerate(later)]
        for t in threads:
            t.start()
        pieces += list(first)
        for t in threads:
            t.join(60)
        text = "".join(p.get("text", "") for p in pieces)
        assert text == G.naive_generate(view, ask("胃疼"), 64)
        for i, (q, n) in enumerate(later):
            assert results[i] == G.naive_generate(view, ask(q), n), q
        assert generator.rows_joined >= 1 and generator.batches_run < 1 + len(later)
        assert 1 < generator.largest_batch <= 4  # never more rows than max_batch
    finally:
        generator.close()


def test_seeded_sampling_is_reproducible_and_n_gives_distinct_choices(gen, view):
    params = dict(max_tokens=10, temperature=1.0, top_p=0.95, seed=123)
    first = gen.complete(view, ask("头痛"), n=3, **params)
    again = gen.complete(view, ask("头痛"), n=3, **params)
    assert [c.index for c in first] == [0, 1, 2]
    assert [c.text for c in first] == [c.text for c in again]
    assert len({c.text for c in first}) == 3
    other = gen.complete(view, ask("头痛"), **{**params, "seed": 124})
    assert other[0].text != first[0].text


def test_tiny_top_p_is_greedy(gen, view):
    greedy = gen.complete(view, ask("胃疼"), max_tokens=10, temperature=0)[0].text
    assert gen.complete(view, ask("胃疼"), max_tokens=10, temperature=1.5, top_p=1e-9, seed=5)[0].text == greedy


def test_stop_strings_cut_the_answer(gen, view):
    params = dict(max_tokens=20, temperature=1.0, seed=11)
    full = gen.complete(view, ask("失眠"), **params)[0].text
    stop = next(full[i:i + 2] for i in range(len(full) // 2, len(full) - 1) if full.find(full[i:i + 2]) > 0)
    choice = gen.complete(view, ask("失眠"), **params, stop=["never-there", stop])[0]
    assert choice.text == full[: full.find(stop)] and choice.finish_reason == "stop"


def test_stream_pieces_add_up_to_the_answer(gen, view):
    stop = "。"
    full = gen.complete(view, ask("发烧"), max_tokens=16, temperature=0, n=1)[0]
    pieces = list(gen.stream(view, ask("发烧"), max_tokens=16, temperature=0, n=2, stop=[stop]))
    finals = [p for p in pieces if "finish_reason" in p]
    assert sorted(p["index"] for p in finals) == [0, 1]
    for i in (0, 1):
        text = "".join(p["text"] for p in pieces if p.get("index") == i and "text" in p)
        assert text == full.text.split(stop)[0]
        assert "\ufffd" not in text
    assert finals[0]["prompt_tokens"] == full.usage.prompt_tokens
    assert pieces.index(finals[-1]) == len(pieces) - 1


def test_abandoned_stream_does_not_block_later_requests(gen, view):
    stream = gen.stream(view, ask("咳嗽"), max_tokens=200, temperature=0)
    next(stream)
    stream.close()  # the consumer went away (e.g. the HTTP client disconnected)
    assert gen.complete(view, ask("咳嗽"), max_tokens=4, temperature=0)[0].usage.completion_tokens <= 4


def test_base_and_adapter_requests_do_not_mix(engine_cache, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    fresh = M.load_model("tiny-test", engine_cache)
    get_peft_model(fresh.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False)).save_pretrained(tmp_path / "ad")
    pool = M.ModelPool(engine_cache, dtype="float32")
    base, tuned = pool.get("tiny-test"), pool.get("tiny-test", tmp_path / "ad")
    alone = M.load_model("tiny-test", engine_cache, tmp_path / "ad")
    generator = G.Generator(pool, window=0.2)
    try:
        results: dict[str, str] = {}
        threads = [threading.Thread(target=lambda k=k, v=v: results.__setitem__(
            k, generator.complete(v, ask("头痛"), max_tokens=10, temperature=0)[0].text))
            for k, v in (("base", base), ("tuned", tuned))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results["base"] == G.naive_generate(base, ask("头痛"), 10)
        assert results["tuned"] == G.naive_generate(alone, ask("头痛"), 10)
        assert results["base"] != results["tuned"]
        assert generator.batches_run == 2
    finally:
        generator.close()


def test_prompt_longer_than_the_context_is_a_clear_error(gen, view):
    with pytest.raises(G.GenerationError, match="reads at most 2047"):
        gen.complete(view, ask("头痛" * 3000), max_tokens=5)
    with pytest.raises(G.GenerationError, match="at least 1"):
        gen.complete(view, ask("头痛"), max_tokens=0)


def test_logit_bias_and_penalties_change_the_sampled_tokens_by_openais_formula(gen, view):
    """logit_bias adds per token id; frequency/presence penalties subtract count x f + p for generated tokens."""
    import torch

    (token,) = view.tokenizer.encode("ok", add_special_tokens=False)  # one token in SmolLM2's vocabulary
    forced = gen.complete(view, ask("胃疼"), max_tokens=5, temperature=0, logit_bias={token: 100.0}, top_logprobs=0)[0]
    assert forced.text == "ok" * 5 and forced.usage.completion_tokens == 5
    assert all(e["logprob"] < -1 for e in forced.logprobs)  # logprobs are the model's own, not the biased ones
    # the same bias with a presence penalty (2 per seen token) still wins
    assert gen.complete(view, ask("胃疼"), max_tokens=3, temperature=0, logit_bias={token: 100.0},
                        presence_penalty=2.0)[0].text == "ok" * 3
    request = G._Request(view, [1], 0.0, 1.0, [], None, frequency_penalty=0.5, presence_penalty=0.25, logit_bias={3: 2.0})
    row = G._Row(request, 0, 10, None, ids=[4, 4, 5])
    plain = G._Row(G._Request(view, [1], 0.0, 1.0, []), 0, 10, None, ids=[4])
    logits = torch.zeros(2, 8)
    out = G.Generator._penalised(logits, [row, plain])
    assert out[0].tolist() == [0, 0, 0, 2.0, -(2 * 0.5 + 0.25), -(0.5 + 0.25), 0, 0]
    assert out[1].tolist() == [0] * 8 and logits.abs().sum() == 0  # other rows and the input are untouched
    assert G.Generator._penalised(logits, [plain]) is logits  # nothing asked: no copy


def test_logit_bias_outside_the_vocabulary_is_a_clear_error(gen, view):
    with pytest.raises(G.GenerationError, match="token ids 0 to") as info:
        gen.complete(view, ask("头痛"), max_tokens=2, logit_bias={10**9: 1.0})
    assert info.value.param == "logit_bias"


def test_prefill_groups_pad_little_and_keep_every_row():
    from types import SimpleNamespace

    rows = [SimpleNamespace(request=SimpleNamespace(prompt=[0] * n)) for n in (100, 12, 700, 105, 98, 650, 10)]
    groups = G.length_groups(rows)
    assert sorted(id(r) for g in groups for r in g) == sorted(id(r) for r in rows)
    assert [[len(r.request.prompt) for r in g] for g in groups] == [[10, 12], [98, 100, 105], [650, 700]]
    for group in groups:
        real = sum(len(r.request.prompt) for r in group)
        assert len(group[-1].request.prompt) * len(group) <= 1.1 * real
    assert [len(g) for g in G.length_groups(rows, slack=10.0)] == [7]  # no limit: one prefill, as before


FEW_SHOT = [{"role": "system", "content": "你是一名耐心、严谨的全科医生，在线回答患者的健康咨询。"},
            {"role": "user", "content": "头痛两天了，吃什么药？"}, {"role": "assistant", "content": "先休息，多喝水，必要时吃布洛芬。"},
            {"role": "user", "content": "咳嗽有痰怎么办？"}, {"role": "assistant", "content": "多喝水，可以用化痰药，发烧要就医。"}]


def test_prompts_that_open_alike_reuse_the_cached_prefix_and_answer_the_same(pool, view):
    conversations = [FEW_SHOT + [{"role": "user", "content": q}] for q in QUESTIONS]
    cached, plain = G.Generator(pool), G.Generator(pool, prefix_cache=False)
    try:
        with_cache = [cached.complete(view, c, max_tokens=10, temperature=0, top_logprobs=0)[0] for c in conversations]
        without = [plain.complete(view, c, max_tokens=10, temperature=0, top_logprobs=0)[0] for c in conversations]
    finally:
        cached.close()
        plain.close()
    shared = G.common_prefix(M.encode_prompt(view.tokenizer, conversations[0]), M.encode_prompt(view.tokenizer, conversations[1]))
    assert shared >= G.PREFIX_MIN_TOKENS
    assert cached.prefixes.tokens_reused >= shared * (len(QUESTIONS) - 1)  # every prompt after the first
    assert plain.prefixes is None
    assert [c.text for c in with_cache] == [c.text for c in without]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in with_cache] == \
        [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in without]
    assert with_cache[0].usage.cached_tokens == 0 and all(c.usage.cached_tokens >= shared for c in with_cache[1:])
    assert all(c.usage.cached_tokens == 0 for c in without)
    for a, b in zip(with_cache, without):
        assert [e["logprob"] for e in a.logprobs] == pytest.approx([e["logprob"] for e in b.logprobs], abs=1e-4)


def test_prefix_cache_reuses_at_most_all_but_the_last_token_and_forgets_the_oldest():
    cache = G.PrefixCache(max_tokens=100, min_tokens=4)
    first = list(range(40))
    assert cache.wants("m", first)
    cache.store("m", first, [])
    assert cache.lookup("m", first) == (cache._entries[-1], 39)  # the last token is run again for its logits
    assert cache.lookup("m", first[:10] + [999]) [1] == 10
    assert cache.lookup("m", first[:3] + [999]) == (None, 0)  # under min_tokens
    assert cache.lookup("other-weights", first) == (None, 0)
    assert not cache.wants("m", first[:30] + [7] * 10)  # covered by more than half
    assert cache.wants("m", first[:10] + [7] * 30)
    cache.store("m", [7] * 70, [])
    assert [len(e.tokens) for e in cache._entries] == [70]  # 40 + 70 > 100: the least recently used went


def test_the_engine_unloading_its_models_also_drops_the_cached_prompts(engine_cache, tmp_path):
    """POST /local/release (notebooks 08 and 09, before they load a model of their own) must free the prompts'
    KV caches too: they are the unloaded models' (issue 17: 200 MB kept in the server after release)."""
    from helpers.localapi.engine import Engine
    from helpers.localapi.storage import Storage

    storage = Storage(tmp_path / "state", models_dir=engine_cache)
    engine = Engine(storage)
    _, generator = engine._engine()
    try:
        resolved = engine.resolve("tiny-test")
        engine.complete(resolved, FEW_SHOT + [{"role": "user", "content": "失眠"}], {"max_tokens": 2, "temperature": 0})
        assert len(generator.prefixes) == 1
        assert engine.release_models() == 1
        assert len(generator.prefixes) == 0
    finally:
        generator.close()
        storage.close()


def test_cache_layers_append_in_place_and_hold_what_concatenation_would(view):
    import torch

    cache = G.new_cache(view.model.config)
    layer = cache.layers[0]
    assert type(layer).__name__ == "GrowingLayer"
    torch.manual_seed(0)
    parts = [torch.randn(2, 3, n, 4) for n in (5, 1, 1)]
    for part in parts:
        keys, values = cache.update(part, -part, 0)
    assert torch.equal(keys, torch.cat(parts, dim=2)) and torch.equal(values, -keys)
    before = keys.data_ptr()
    keys, _ = cache.update(torch.ones(2, 3, 1, 4), torch.ones(2, 3, 1, 4), 0)
    assert keys.data_ptr() == before and keys.shape == (2, 3, 8, 4)  # written into the room, not copied
    cache.batch_select_indices(torch.tensor([1]))  # the generator drops a finished row: the layer rebuilds its room
    keys, _ = cache.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4), 0)
    assert torch.equal(keys[0, :, :7], torch.cat(parts, dim=2)[1, :, :7]) and keys.shape == (1, 3, 9, 4)


def test_a_released_model_is_freed_once_its_answers_are_done(engine_cache):
    """The generator's worker must not keep the last batch (and so its model) alive while it waits: the server
    releases its models before training, and a model still referenced would stay in memory (issue 17)."""
    import gc
    import time
    import weakref

    pool = M.ModelPool(engine_cache, dtype="float32")
    generator = G.Generator(pool, window=0.01)
    try:
        view = pool.get("tiny-test")
        generator.complete(view, ask("头痛"), max_tokens=4, temperature=0)
        model = weakref.ref(view.model)
        del view
        pool.release()
        deadline = time.monotonic() + 10  # the worker drops its batch just after it hands the answer over
        while model() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
            gc.collect()
        assert model() is None
    finally:
        generator.close()
