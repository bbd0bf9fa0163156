"""Offline tiktoken: cache seeding, model → encoding, chat token counting."""

from __future__ import annotations

import hashlib

import pytest

from helpers import tokens


def test_seed_writes_files_tiktoken_accepts(tmp_path):
    paths = tokens.seed_tiktoken_cache(tmp_path)
    assert len(paths) == 2
    for name, (url, sha) in tokens.ENCODING_FILES.items():
        target = tmp_path / hashlib.sha1(url.encode()).hexdigest()
        assert target in paths
        assert hashlib.sha256(target.read_bytes()).hexdigest() == sha


def test_seed_is_idempotent_and_repairs_a_corrupt_file(tmp_path):
    first = tokens.seed_tiktoken_cache(tmp_path)
    mtimes = [p.stat().st_mtime_ns for p in first]
    assert [p.stat().st_mtime_ns for p in tokens.seed_tiktoken_cache(tmp_path)] == mtimes
    first[0].write_bytes(b"garbage")
    tokens.seed_tiktoken_cache(tmp_path)
    url, sha = tokens.ENCODING_FILES["cl100k_base"]
    assert hashlib.sha256((tmp_path / tokens.cache_file_name(url)).read_bytes()).hexdigest() == sha


def test_user_cache_dir_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "mine"))
    assert tokens.tiktoken_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    assert tokens.tiktoken_cache_dir() == tokens.DEFAULT_CACHE_DIR


def test_tiktoken_loads_from_seeded_cache_without_network(tmp_path, monkeypatch):
    import tiktoken.load

    def no_network(url):
        raise AssertionError(f"tried to download {url}")

    tokens.seed_tiktoken_cache(tmp_path)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    url, sha = tokens.ENCODING_FILES["o200k_base"]
    assert len(tiktoken.load.read_file_cached(url, sha)) > 1_000_000


@pytest.mark.parametrize("model, encoding, estimate", [
    ("gpt-4o-mini-2024-07-18", "o200k_base", False),
    ("gpt-4o", "o200k_base", False),
    ("gpt-4.1-nano-2025-04-14", "o200k_base", False),
    ("o3-mini", "o200k_base", False),
    ("ft:gpt-4o-mini-2024-07-18:org::abc123", "o200k_base", False),
    ("gpt-3.5-turbo-0613", "cl100k_base", False),
    ("gpt-4-0613", "cl100k_base", False),
    ("ft:gpt-3.5-turbo-0125:org:x:abc", "cl100k_base", False),
    ("smollm2-135m-instruct", "o200k_base", True),
    ("ft:tiny-test:local:huatuo:abcd1234", "o200k_base", True),
])
def test_encoding_for_model(model, encoding, estimate):
    choice = tokens.encoding_for_model(model)
    assert (choice.encoding, choice.estimate) == (encoding, estimate)
    assert ("估计值" in choice.label()) == estimate


def test_chinese_costs_fewer_tokens_in_o200k():
    text = "我在体检是正常的，但是去献血医生说我的血压高，不能献。"
    assert tokens.count_text_tokens(text, "o200k_base") < tokens.count_text_tokens(text, "cl100k_base")


def test_chat_count_follows_openai_rule():
    enc = tokens.get_encoding("cl100k_base")
    messages = [{"role": "system", "content": "你是医生"}, {"role": "user", "content": "头疼", "name": "li"},
                {"role": "assistant", "content": "多休息", "weight": 1}]
    expected = 3 + sum(3 + sum(len(enc.encode(v)) for k, v in m.items() if k != "weight") for m in messages) + 1
    assert tokens.count_chat_tokens(messages, "cl100k_base") == expected


def test_special_token_text_is_counted_not_rejected():
    assert tokens.count_chat_tokens([{"role": "user", "content": "<|endoftext|>"}]) > 6


def test_count_many_matches_single_and_reuses_strings():
    convs = [[{"role": "system", "content": "同一个系统提示词"}, {"role": "user", "content": f"问题{i}"},
              {"role": "assistant", "content": f"答案{i}" * (i + 1)}] for i in range(30)]
    assert tokens.count_many_chats(convs) == [tokens.count_chat_tokens(c) for c in convs]


def test_count_unique_texts_threaded_equals_serial():
    texts = [f"第{i}条：血压{i % 50}/80" for i in range(300)]
    assert tokens.count_unique_texts(texts, min_parallel=10) == tokens.count_unique_texts(texts, min_parallel=10**9)


def test_token_limits():
    assert tokens.token_limit("gpt-3.5-turbo-0613") == 4096
    assert tokens.token_limit("gpt-3.5-turbo-0125") == 16385
    assert tokens.token_limit("gpt-4o-mini-2024-07-18") == 65536
    assert tokens.token_limit("smollm2-135m-instruct") == tokens.token_limit("tiny-test") == tokens.LOCAL_TOKEN_LIMIT


def test_unknown_encoding_is_a_clear_error():
    with pytest.raises(tokens.TokenizerUnavailable, match="not available offline"):
        tokens.get_encoding("r50k_base")


def test_setup_offline_main_seeds_and_reports(tmp_path, monkeypatch, capsys):
    from helpers import setup_offline

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert setup_offline.main() == 0
    assert len(list(tmp_path.iterdir())) == 2
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "o200k_base" in out and "CJK font" in out


def test_batched_counts_equal_encode_ordinary_on_awkward_strings():
    enc = tokens.get_encoding("o200k_base")
    texts = ["", " ", "\n\n", "结尾有空格  ", "  开头有空格", "a<|endoftext|>b", "<|endofprompt|>", "你好。\n", "12345。",
             "don't", "\r\n", "😀" * 3, "第1条：血压120/80 mmHg"]
    expected = [len(enc.encode_ordinary(t)) for t in texts]
    assert tokens.count_unique_texts(texts, min_parallel=2) == expected
    without_separator = [t for t in texts if tokens.BATCH_SEPARATOR not in t]  # the one-call path
    assert tokens._count_batch(enc, without_separator) == [len(enc.encode_ordinary(t)) for t in without_separator]


def test_background_counter_counts_in_order_while_strings_arrive():
    enc = tokens.get_encoding("o200k_base")
    strings: dict[str, int] = {}
    with tokens.BackgroundCounter("o200k_base", batch=7, workers=2) as counter:
        for i in range(100):
            strings.setdefault(f"第{i}个问题：头痛{i % 9}天了 " * (i % 4), len(strings))
            counter.update(strings)
        counts = counter.finish(strings)
    assert counts == [len(enc.encode_ordinary(s)) for s in strings]
    with tokens.BackgroundCounter("o200k_base", workers=1) as counter:
        assert counter.finish({"头痛": 0, "": 1}) == [len(enc.encode_ordinary("头痛")), 0]
