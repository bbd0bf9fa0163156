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


# ---------------------------------------------------------------- bootstrap intervals, paired comparison, style


def test_stats_path_gives_the_same_scores_as_the_texts() -> None:
    direct = {"BLEU-1": metrics.corpus_bleu(HYPS, REFS, 1), "BLEU-4": metrics.corpus_bleu(HYPS, REFS, 4),
              "GLEU": metrics.corpus_gleu(HYPS, REFS), "Distinct-2": metrics.distinct_n(HYPS, 2)}
    scores = metrics.score_answers(HYPS, REFS).as_dict()
    for name, value in direct.items():
        assert scores[name] == pytest.approx(value, abs=1e-9)


def test_resamples_are_deterministic_and_seed_dependent() -> None:
    a = metrics.resample_indices(5, 20, seed=1)
    assert a.shape == (20, 5) and a.min() >= 0 and a.max() <= 4
    assert (a == metrics.resample_indices(5, 20, seed=1)).all()
    assert not (a == metrics.resample_indices(5, 20, seed=2)).all()


def test_mean_interval_known_cases() -> None:
    # every value the same: every resample has the same mean, the interval is that point
    assert metrics.mean_interval([0.3] * 10) == pytest.approx((0.3, 0.3))
    # half zeros, half ones: the interval brackets 0.5, lies inside [0, 1], and is not degenerate
    low, high = metrics.mean_interval([0.0, 1.0] * 25)
    assert 0 <= low < 0.5 < high <= 1
    assert metrics.mean_interval([0.0, 1.0] * 25) == (low, high)  # deterministic


def test_bootstrap_interval_of_a_corpus_metric_contains_the_point_estimate() -> None:
    hyps, refs = HYPS * 4, REFS[1:] + REFS[:1] + REFS * 3
    stats = [metrics.answer_stats(h, r) for h, r in zip(hyps, refs)]
    point = metrics.scores_from_stats(stats).as_dict()
    intervals = metrics.score_intervals(stats, resamples=300, seed=3)
    assert set(intervals) == set(point)
    for name, (low, high) in intervals.items():
        assert low <= point[name] + 1e-9 and point[name] - 1e-9 <= high, name
    assert intervals == metrics.score_intervals(stats, resamples=300, seed=3)
    assert metrics.bootstrap_interval(stats, lambda s: metrics.scores_from_stats(s).rouge_l, resamples=300, seed=3) == \
        pytest.approx(intervals["ROUGE-L"])


def test_paired_comparison_counts_ties_as_half() -> None:
    result = metrics.paired_comparison([0.5, 0.2, 0.3, 0.0], [0.1, 0.2, 0.4, 0.0], resamples=200, seed=0)
    assert (result.wins, result.ties, result.losses, result.n) == (1, 2, 1, 4)
    assert result.win_rate == pytest.approx((1 + 2 / 2) / 4)
    assert result.mean_difference == pytest.approx((0.4 + 0 - 0.1 + 0) / 4)
    assert result.win_rate_ci[0] <= result.win_rate <= result.win_rate_ci[1]
    assert result.mean_difference_ci[0] <= result.mean_difference <= result.mean_difference_ci[1]
    assert result == metrics.paired_comparison([0.5, 0.2, 0.3, 0.0], [0.1, 0.2, 0.4, 0.0], resamples=200, seed=0)


def test_paired_comparison_all_wins_and_mismatch() -> None:
    result = metrics.paired_comparison([1.0] * 6, [0.0] * 6)
    assert result.win_rate == 1.0 and result.win_rate_ci == (1.0, 1.0)
    with pytest.raises(metrics.MetricsError, match="3 scores for arm A but 2 for arm B"):
        metrics.paired_comparison([1, 2, 3], [1, 2])


def test_markdown_greeting_and_closing_detectors() -> None:
    assert metrics.has_markdown("可能原因：\n- 感冒\n- 过敏")
    assert metrics.has_markdown("1. 多喝水\n2. 休息")
    assert metrics.has_markdown("**注意**：及时就医")
    assert metrics.has_markdown("## 建议\n多休息")
    assert not metrics.has_markdown("你好，考虑是感冒。建议多喝水，1、注意休息。")
    assert metrics.opens_with_greeting("你好，根据你的描述……")
    assert metrics.opens_with_greeting("病情分析：您好，这种情况……")
    assert not metrics.opens_with_greeting("这种情况多见于感冒，一般一周左右会好。你好")
    assert metrics.last_sentence("考虑是感冒。建议多喝水！") == "建议多喝水！"
    assert metrics.closes_with_advice("考虑是感冒。建议多喝水。")
    assert metrics.closes_with_advice("考虑是感冒。祝早日康复！")
    assert not metrics.closes_with_advice("建议多喝水。这是病毒引起的。")
    assert metrics.last_sentence("   ") == ""


def test_style_measures_by_hand() -> None:
    texts = ["你好，考虑是感冒。建议多喝水。", "- 感冒\n- 过敏", "这是" + "长" * 98]
    style = metrics.style_measures(texts, resamples=100, seed=0)
    assert style.markdown == pytest.approx(1 / 3)
    assert style.greeting == pytest.approx(1 / 3)
    assert style.closing == pytest.approx(1 / 3)
    assert style.length_median == pytest.approx(15)  # lengths 15, 6 (spaces and line breaks not counted) and 100
    assert style.stuck == pytest.approx(1 / 3)  # "长" x 98 is one character repeated: stuck
    assert style.markdown_ci[0] <= style.markdown <= style.markdown_ci[1]
    with pytest.raises(metrics.MetricsError):
        metrics.style_measures([])


def test_stuck_answers_are_phrases_repeated_three_times_in_a_row() -> None:
    looping = "血压高，是肾虚的表现，表现为头晕、耳鸣、耳鸣、耳鸣、耳鸣、耳鸣、耳鸣、耳"
    assert "耳鸣、耳鸣、耳鸣、" in metrics.repeated_phrase(looping)
    assert metrics.is_stuck("注意个人卫生，避免性生活，" * 3)  # a 13-character phrase three times
    assert metrics.is_stuck("。" * 12)
    assert not metrics.is_stuck("注意个人卫生，避免性生活，" * 2)  # twice is not a loop
    assert not metrics.is_stuck("哈哈哈，好的")  # too short to count (6 characters)
    assert not metrics.is_stuck("你好，根据你的描述，考虑是感冒引起的，建议多喝水，注意休息，必要时就医。")


def test_readability_counts_broken_answers_and_the_share_of_chinese() -> None:
    texts = ["你好，考虑是感冒。", "", "啊啊啊啊", "服用 ABC 片\ufffd"]
    r = metrics.readability(texts)
    assert (r.n, r.empty, r.one_character, r.replacement_character) == (4, 1, 1, 1)
    # ideographs: 7 + 0 + 4 + 3 = 14 of 9 + 0 + 4 + 7 = 20 non-space characters
    assert r.cjk_share == pytest.approx(14 / 20)
    assert r.cjk_share_lowest == 0.0  # the empty answer
    assert metrics.cjk_counts("Qwen 说：你好！") == (3, 9)  # Q w e n 说 ： 你 好 ！
    with pytest.raises(metrics.MetricsError):
        metrics.readability([])
