"""The loss-mask view of notebook 05: the trainer's own tokens and labels, grouped for reading, nothing lost."""

from __future__ import annotations

from helpers.localapi import models as M
from helpers.localapi import trainer as T
from helpers.loss_mask import loss_mask_view, pieces_of

MESSAGES = [
    {"role": "system", "content": "你是一名医生。"},
    {"role": "user", "content": "头疼两天了，怎么办？"},
    {"role": "assistant", "content": "你好，建议多休息，多喝水；持续不好转请就医。"},
]


def test_view_counts_match_the_trainers_example(engine_cache) -> None:
    view = loss_mask_view(MESSAGES, "tiny-test", engine_cache)
    tok = M.load_tokenizer("tiny-test", engine_cache)
    example = T.encode_example(tok, MESSAGES, M.get_spec("tiny-test").max_seq_len, M.stop_token_ids(tok))
    assert view.n_tokens == len(example.input_ids)
    assert view.n_learned == example.n_trainable  # exactly the tokens the trainer takes the loss on
    assert "".join(p.text for p in view.pieces) == tok.decode(example.input_ids)  # nothing dropped or doubled
    learned = "".join(p.text for p in view.pieces if p.learned)
    assert MESSAGES[2]["content"] in learned and MESSAGES[1]["content"] not in learned
    assert "【" in view.text() and "计入损失" in view._repr_html_() and f"{view.n_learned} 个" in view.summary()


def test_pieces_never_split_a_character_nor_mix_learned_and_not(engine_cache) -> None:
    tok = M.load_tokenizer("tiny-test", engine_cache)
    first = tok("医生说：", add_special_tokens=False)["input_ids"]
    ids = first + tok("多喝水，早点睡", add_special_tokens=False)["input_ids"]
    flags = [i >= len(first) for i in range(len(ids))]
    pieces = pieces_of(tok, ids, flags)
    assert sum(p.n_tokens for p in pieces) == len(ids)
    assert all("\ufffd" not in p.text for p in pieces)
    assert "".join(p.text for p in pieces) == "医生说：多喝水，早点睡"
    assert sum(p.n_tokens for p in pieces if not p.learned) == len(first)  # the flag changes exactly where the mask does
