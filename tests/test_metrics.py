"""The character-level metrics agree with nltk and sacrebleu, and with hand-worked examples."""

from __future__ import annotations

import pytest
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from nltk.translate.gleu_score import corpus_gleu as nltk_corpus_gleu
from sacrebleu.metrics import BLEU

from helpers import metrics

HYPS = [
    "血压130/80是正常血压，但献血要求更严格，所以不能献血。",
    "建议进行胃镜检查，排除胃炎等疾病，注意饮食清淡。",
    "这种情况可能是感冒引起的，多喝水，注意休息。",
]
REFS = [
    "献血时会出现生理性的兴奋，反射性地引起血压升高。一般小于140/90mmHg是允许献血的。",
    "建议做胃镜检查，明确是否有胃炎或者胃溃疡等疾病。",
    "考虑是感冒引起的咳嗽，多喝水，注意休息，必要时就医。",
]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_sacrebleu_char_tokenizer(n: int) -> None:
    expected = BLEU(tokenize="char", max_ngram_order=n, smooth_method="none").corpus_score(HYPS, [REFS]).score
    assert metrics.corpus_bleu(HYPS, REFS, n) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_nltk_on_characters(n: int) -> None:
    refs = [[metrics.char_tokens(r)] for r in REFS]
    hyps = [metrics.char_tokens(h) for h in HYPS]
    expected = 100 * nltk_corpus_bleu(refs, hyps, weights=tuple([1 / n] * n))
    assert metrics.corpus_bleu(HYPS, REFS, n) == pytest.approx(expected, abs=1e-6)


def test_gleu_matches_nltk_on_characters() -> None:
    refs = [[metrics.char_tokens(r)] for r in REFS]
    hyps = [metrics.char_tokens(h) for h in HYPS]
    assert metrics.corpus_gleu(HYPS, REFS) == pytest.approx(100 * nltk_corpus_gleu(refs, hyps), abs=1e-6)


def test_identical_answers_score_100_and_disjoint_score_0() -> None:
    assert metrics.corpus_bleu(REFS, REFS) == pytest.approx(100)
    assert metrics.corpus_gleu(REFS, REFS) == pytest.approx(100)
    assert metrics.corpus_bleu(["甲乙丙丁"], ["子丑寅卯"], 1) == 0.0
    assert metrics.rouge_l("甲乙丙丁", "子丑寅卯") == 0.0


def test_bleu_brevity_penalty_by_hand() -> None:
    # hypothesis "血压" against "血压高": unigram precision 1, BP = exp(1 - 3/2)
    assert metrics.corpus_bleu(["血压"], ["血压高"], 1) == pytest.approx(100 * 2.718281828 ** -0.5, rel=1e-6)


def test_rouge_by_hand() -> None:
    hyp, ref = "血压偏高", "血压高了"
    # unigrams: 血 压 高 shared -> P = 3/4, R = 3/4
    assert metrics.rouge_n(hyp, ref, 1) == pytest.approx(0.75)
    # bigrams: hyp {血压, 压偏, 偏高}, ref {血压, 压高, 高了}: 1 shared -> F1 = 1/3
    assert metrics.rouge_n(hyp, ref, 2) == pytest.approx(1 / 3)
    # LCS 血压高 = 3 -> F1 = 0.75
    assert metrics.rouge_l(hyp, ref) == pytest.approx(0.75)


def test_lcs_ignores_whitespace_and_handles_order() -> None:
    assert metrics.lcs_length(metrics.char_tokens("a b c d"), metrics.char_tokens("acbd")) == 3
    assert metrics.lcs_length([], list("abc")) == 0


def test_distinct_by_hand() -> None:
    # characters 好好好学: 2 distinct of 4; bigrams 好好 好好 好学: 2 distinct of 3
    assert metrics.distinct_n(["好好好学"], 1) == pytest.approx(50.0)
    assert metrics.distinct_n(["好好好学"], 2) == pytest.approx(200 / 3)


def test_score_answers_collects_everything() -> None:
    scores = metrics.score_answers(HYPS, REFS).as_dict()
    assert list(scores)[:8] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "GLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
    assert scores["BLEU-1"] > scores["BLEU-4"] > 0
    assert 0 < scores["ROUGE-L"] < 100


def test_mismatched_lengths_raise_clear_error() -> None:
    with pytest.raises(metrics.MetricsError, match="2 hypotheses but 1 references"):
        metrics.corpus_bleu(["a", "b"], ["a"])
