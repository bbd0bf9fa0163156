"""Pre-packed linear layers (helpers/localapi/prepack.py): the same numbers as nn.Linear, adapters on top, the pool's default."""

from __future__ import annotations

import sys

import pytest
import torch

from helpers.localapi import generate as G
from helpers.localapi import models as M
from helpers.localapi import prepack

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 64), (8, 64), (3, 5, 64)])
def test_packed_linear_computes_what_the_linear_computes(bias, shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=bias)
    packed = prepack.PackedLinear(linear)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected, got = linear(x), packed(x)
    assert got.shape == expected.shape == (*shape[:-1], 48)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert isinstance(packed, torch.nn.Linear) and (packed.in_features, packed.out_features) == (64, 48)
    assert not any(p.requires_grad for p in packed.parameters())


def test_bfloat16_weights_pack_too():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        expected, got = linear(x).float(), prepack.PackedLinear(linear)(x).float()
    assert torch.allclose(got, expected, atol=0.05, rtol=0.02)


def _prompt_ids(view: M.LoadedModel) -> torch.Tensor:
    return torch.tensor([M.encode_prompt(view.tokenizer, [{"role": "user", "content": "头痛怎么办"}])])


def test_a_packed_model_gives_the_plain_models_logits_and_answers(engine_cache):
    plain = M.load_model("tiny-test", engine_cache)
    packed = M.load_model("tiny-test", engine_cache)
    n = prepack.prepack_linears(packed.model)
    layers = packed.model.config.num_hidden_layers
    assert n == layers * 7 + 1  # q k v o gate up down in every block, and the output layer
    assert not [m for m in packed.model.modules() if type(m) is torch.nn.Linear]
    # tiny-test ties its embedding to the output layer: the file pages released after packing the output layer
    # are read again for the embedding, never lost
    assert plain.model.config.tie_word_embeddings
    assert torch.equal(packed.model.get_input_embeddings().weight, plain.model.get_input_embeddings().weight)
    ids = _prompt_ids(plain)
    with torch.no_grad():
        assert torch.allclose(packed.model(input_ids=ids).logits, plain.model(input_ids=ids).logits, atol=1e-4)
    questions = [[{"role": "user", "content": q}] for q in ("头痛怎么办", "高血压吃什么药", "失眠")]
    generator = G.Generator()
    try:
        a = [c[0].text for c in generator.complete_many(plain, questions, max_tokens=12, temperature=0)]
        b = [c[0].text for c in generator.complete_many(packed, questions, max_tokens=12, temperature=0)]
    finally:
        generator.close()
    assert a == b


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the mapped weights file in /proc/self/maps")
def test_the_embedding_stays_on_the_mapped_weights_file_and_the_rest_is_copied_off_it(engine_cache):
    """The embedding is read a row per token: left on the file, only the rows of tokens seen are ever in memory
    (Qwen in float32: 0.55 GB less in the server; issue 17). Everything else must be off the file."""
    view = M.load_model("tiny-test", engine_cache)
    prepack.prepack_linears(view.model)
    ranges = prepack._mapped_weight_files()

    def on_file(tensor: torch.Tensor) -> bool:
        return any(a <= tensor.data_ptr() < b for a, b in ranges)

    embedding = view.model.get_input_embeddings().weight
    assert on_file(embedding)
    others = [p for p in view.model.parameters() if p is not embedding] + list(view.model.buffers())
    assert others and not any(on_file(t) for t in others)


def test_the_pool_packs_on_a_cpu_unless_told_not_to(engine_cache):
    packed = M.ModelPool(engine_cache, dtype="float32", device="cpu").get("tiny-test")
    assert isinstance(packed.model.lm_head, prepack.PackedLinear)
    plain = M.ModelPool(engine_cache, dtype="float32", device="cpu", prepack=False).get("tiny-test")
    assert type(plain.model.lm_head) is torch.nn.Linear
