"""Character-level generation metrics for Chinese answers, as in the Huatuo-26M paper.

The paper (Li et al., 2023, arXiv:2305.01526, Table 7) scores generated answers against the
reference answers with BLEU-1..4, GLEU, ROUGE-1/2/L and Distinct-1/2. Chinese has no spaces, so
every metric here works on characters: a text becomes the list of its non-whitespace characters.

- BLEU-n: corpus-level BLEU with uniform weights over 1..n-grams and the brevity penalty
  (Papineni et al., 2002), no smoothing; equals sacrebleu with `tokenize="char"`.
- GLEU: corpus-level Google-BLEU (Wu et al., 2016) over 1..4-grams; equals `nltk.translate.gleu_score.corpus_gleu`.
- ROUGE-1/2/L: per-answer F1 of n-gram overlap / longest common subsequence, averaged over answers.
- Distinct-1/2: distinct n-grams divided by all n-grams over all answers of one arm (Li et al., 2016).

All scores are percentages (0–100), the scale the paper reports.

Notebook 07 also uses the statistics below: a 95% percentile-bootstrap interval over questions for every
metric (seeded, so the same answers always give the same interval), a paired per-question comparison of two
arms (win rate on ROUGE-L, ties counted as half a win), style measures chosen from the real references (including
answers stuck repeating a phrase), and readability counts (empty answers, U+FFFD, the share of Chinese characters).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


class MetricsError(ValueError):
    """The inputs to a metric do not fit together (for example different lengths)."""


def char_tokens(text: str) -> list[str]:
    """The characters of a text without whitespace: the unit of every metric here."""
    return [c for c in text if not c.isspace()]


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the n-grams (as tuples) in a token list."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    """Raise MetricsError unless there is one reference per hypothesis and at least one pair."""
    if len(hypotheses) != len(references):
        raise MetricsError(f"{len(hypotheses)} hypotheses but {len(references)} references: give one reference per answer")
    if not hypotheses:
        raise MetricsError("no answers to score")


def bleu_counts(hypothesis: str, reference: str, max_n: int = 4) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
    """One answer's clipped n-gram matches and n-gram totals for n = 1..max_n, and its (hypothesis, reference) lengths."""
    h, r = char_tokens(hypothesis), char_tokens(reference)
    matches, totals = [], []
    for n in range(1, max_n + 1):
        hc, rc = ngrams(h, n), ngrams(r, n)
        matches.append(sum(min(c, rc[g]) for g, c in hc.items()))
        totals.append(max(len(h) - n + 1, 0))
    return tuple(matches), tuple(totals), len(h), len(r)


def bleu_from_counts(matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int) -> float:
    """Corpus BLEU (uniform weights over the given orders, brevity penalty) from pooled counts, 0–100."""
    if hyp_len == 0 or any(m == 0 for m in matches):
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / len(matches)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100.0 * brevity * math.exp(log_precision)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus-level character BLEU-max_n (uniform weights, brevity penalty), 0–100."""
    _check_pairs(hypotheses, references)
    counts = [bleu_counts(h, r, max_n) for h, r in zip(hypotheses, references)]
    return bleu_from_counts([sum(c[0][i] for c in counts) for i in range(max_n)],
                            [sum(c[1][i] for c in counts) for i in range(max_n)],
                            sum(c[2] for c in counts), sum(c[3] for c in counts))


def gleu_counts(hypothesis: str, reference: str, min_n: int = 1, max_n: int = 4) -> tuple[int, int]:
    """One answer's GLEU numerator (matched min_n..max_n-grams) and denominator (the larger side's n-gram count)."""
    h, r = char_tokens(hypothesis), char_tokens(reference)
    hc: Counter = Counter()
    rc: Counter = Counter()
    for n in range(min_n, max_n + 1):
        hc.update(ngrams(h, n))
        rc.update(ngrams(r, n))
    return sum((hc & rc).values()), max(sum(hc.values()), sum(rc.values()))


def corpus_gleu(hypotheses: Sequence[str], references: Sequence[str], min_n: int = 1, max_n: int = 4) -> float:
    """Corpus-level character GLEU (Google-BLEU): matched n-grams / per-answer max(hyp, ref) n-grams, pooled, 0–100."""
    _check_pairs(hypotheses, references)
    counts = [gleu_counts(h, r, min_n, max_n) for h, r in zip(hypotheses, references)]
    denominator = sum(d for _, d in counts)
    return 100.0 * sum(m for m, _ in counts) / denominator if denominator else 0.0


def _f1(overlap: int, hyp_count: int, ref_count: int) -> float:
    """F1 of an overlap count given the hypothesis and reference counts (0 when either is empty)."""
    if overlap == 0 or hyp_count == 0 or ref_count == 0:
        return 0.0
    p, r = overlap / hyp_count, overlap / ref_count
    return 2 * p * r / (p + r)


def rouge_n(hypothesis: str, reference: str, n: int) -> float:
    """Character ROUGE-n F1 of one answer, 0–1."""
    hc, rc = ngrams(char_tokens(hypothesis), n), ngrams(char_tokens(reference), n)
    return _f1(sum((hc & rc).values()), sum(hc.values()), sum(rc.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a)·len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    """Character ROUGE-L F1 (longest common subsequence) of one answer, 0–1."""
    h, r = char_tokens(hypothesis), char_tokens(reference)
    return _f1(lcs_length(h, r), len(h), len(r))


def distinct_from_counts(counts: Counter) -> float:
    """Distinct-n from pooled n-gram counts: unique n-grams / all n-grams, 0–100."""
    total = sum(counts.values())
    return 100.0 * len(counts) / total if total else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n over a set of answers: unique character n-grams / all n-grams, 0–100."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(ngrams(char_tokens(text), n))
    return distinct_from_counts(counts)


@dataclass
class GenerationScores:
    """The Huatuo-26M generation metrics of one arm, in percent, plus the mean answer length in characters."""

    bleu_1: float
    bleu_2: float
    bleu_3: float
    bleu_4: float
    gleu: float
    rouge_1: float
    rouge_2: float
    rouge_l: float
    distinct_1: float
    distinct_2: float
    mean_answer_chars: float

    def as_dict(self) -> dict[str, float]:
        """The scores as a plain dict with the paper's column names."""
        names = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "GLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Distinct-1", "Distinct-2", "answer chars"]
        return dict(zip(names, asdict(self).values()))


@dataclass(frozen=True)
class AnswerStats:
    """Everything the metrics need from one (answer, reference) pair, so a resample of questions is only sums."""

    bleu_matches: tuple[int, ...]
    bleu_totals: tuple[int, ...]
    hyp_len: int
    ref_len: int
    gleu_matches: int
    gleu_denominator: int
    rouge_1: float
    rouge_2: float
    rouge_l: float
    unigrams: Counter = field(compare=False)
    bigrams: Counter = field(compare=False)


def answer_stats(hypothesis: str, reference: str) -> AnswerStats:
    """The per-answer counts and scores of one answer against its reference."""
    matches, totals, hyp_len, ref_len = bleu_counts(hypothesis, reference, 4)
    gleu_m, gleu_d = gleu_counts(hypothesis, reference)
    tokens = char_tokens(hypothesis)
    return AnswerStats(matches, totals, hyp_len, ref_len, gleu_m, gleu_d, rouge_n(hypothesis, reference, 1),
                       rouge_n(hypothesis, reference, 2), rouge_l(hypothesis, reference), ngrams(tokens, 1), ngrams(tokens, 2))


def scores_from_stats(stats: Sequence[AnswerStats]) -> GenerationScores:
    """All metrics of one arm from its answers' statistics (the same numbers as scoring the texts directly)."""
    if not stats:
        raise MetricsError("no answers to score")
    matches = [sum(s.bleu_matches[i] for s in stats) for i in range(4)]
    totals = [sum(s.bleu_totals[i] for s in stats) for i in range(4)]
    hyp_len, ref_len = sum(s.hyp_len for s in stats), sum(s.ref_len for s in stats)
    gleu_d = sum(s.gleu_denominator for s in stats)
    unigrams: Counter = Counter()
    bigrams: Counter = Counter()
    for s in stats:
        unigrams.update(s.unigrams)
        bigrams.update(s.bigrams)
    n = len(stats)
    return GenerationScores(
        bleu_1=bleu_from_counts(matches[:1], totals[:1], hyp_len, ref_len),
        bleu_2=bleu_from_counts(matches[:2], totals[:2], hyp_len, ref_len),
        bleu_3=bleu_from_counts(matches[:3], totals[:3], hyp_len, ref_len),
        bleu_4=bleu_from_counts(matches, totals, hyp_len, ref_len),
        gleu=100.0 * sum(s.gleu_matches for s in stats) / gleu_d if gleu_d else 0.0,
        rouge_1=100.0 * sum(s.rouge_1 for s in stats) / n,
        rouge_2=100.0 * sum(s.rouge_2 for s in stats) / n,
        rouge_l=100.0 * sum(s.rouge_l for s in stats) / n,
        distinct_1=distinct_from_counts(unigrams),
        distinct_2=distinct_from_counts(bigrams),
        mean_answer_chars=hyp_len / n,
    )


def score_answers(hypotheses: Sequence[str], references: Sequence[str]) -> GenerationScores:
    """All metrics for one arm: generated answers against the reference answers, same order."""
    _check_pairs(hypotheses, references)
    return scores_from_stats([answer_stats(h, r) for h, r in zip(hypotheses, references)])


# ---------------------------------------------------------------- bootstrap intervals over questions (notebook 07)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 2023


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """`resamples` rows of n question indices drawn with replacement; the same (n, resamples, seed) gives the same rows."""
    if n < 1:
        raise MetricsError("no questions to resample")
    if resamples < 1:
        raise MetricsError(f"resamples must be at least 1 (got {resamples})")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap values (percentile method)."""
    if not 0 < level < 1:
        raise MetricsError(f"level must be between 0 and 1 (got {level})")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(items: Sequence, statistic: Callable[[list], float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """95% (by default) percentile-bootstrap interval of statistic(items) over resamples of the items (questions)."""
    rows = resample_indices(len(items), resamples, seed)
    return percentile_interval([statistic([items[i] for i in row]) for row in rows], level)


def mean_interval(values: Sequence[float], **kwargs) -> tuple[float, float]:
    """Bootstrap interval of the mean of per-question values (same resamples as bootstrap_interval)."""
    array = np.asarray(values, dtype=float)
    rows = resample_indices(len(array), kwargs.get("resamples", BOOTSTRAP_RESAMPLES), kwargs.get("seed", BOOTSTRAP_SEED))
    return percentile_interval(array[rows].mean(axis=1), kwargs.get("level", 0.95))


def score_intervals(stats: Sequence[AnswerStats], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Bootstrap interval of every metric of score_answers, resampling questions (one resample scores all metrics)."""
    rows = resample_indices(len(stats), resamples, seed)
    draws = [scores_from_stats([stats[i] for i in row]).as_dict() for row in rows]
    return {name: percentile_interval([d[name] for d in draws], level) for name in draws[0]}


@dataclass(frozen=True)
class PairedComparison:
    """Arm A against arm B, question by question: wins, ties, losses of A, its win rate and their intervals."""

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    win_rate_ci: tuple[float, float]
    mean_difference: float
    mean_difference_ci: tuple[float, float]


def paired_comparison(a: Sequence[float], b: Sequence[float], *, tie_tolerance: float = 1e-9,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> PairedComparison:
    """Per-question comparison of scores a[i] vs b[i]: a tie (|a-b| <= tie_tolerance) counts as half a win.

    win rate = (wins + ties / 2) / n, so 0.5 means "no better, no worse"; its interval and that of the mean
    difference a - b come from the same seeded bootstrap over questions.
    """
    if len(a) != len(b):
        raise MetricsError(f"{len(a)} scores for arm A but {len(b)} for arm B: compare the same questions")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        raise MetricsError("no questions to compare")
    points = np.where(diff > tie_tolerance, 1.0, np.where(diff < -tie_tolerance, 0.0, 0.5))
    rows = resample_indices(len(diff), resamples, seed)
    return PairedComparison(
        n=len(diff), wins=int((points == 1).sum()), ties=int((points == 0.5).sum()), losses=int((points == 0).sum()),
        win_rate=float(points.mean()), win_rate_ci=percentile_interval(points[rows].mean(axis=1), level),
        mean_difference=float(diff.mean()), mean_difference_ci=percentile_interval(diff[rows].mean(axis=1), level),
    )


# ---------------------------------------------------------------- style measures (notebook 07)
# Chosen from the 6,000 real references of the Huatuo-26M test set: one uses Markdown (a bold "*** 特别提示***"; no
# lists, no headings), 44% greet (你好/您好) within their first 15 characters, 46% end on a sentence with advice or a
# wish (建议/注意/祝/希望).

MARKDOWN = re.compile(r"(?m)^\s*(?:[-*+•]|\d+[.)])\s+\S|\*\*[^*\n]+\*\*|^\s*#{1,6}\s")
GREETING = re.compile(r"你好|您好")
GREETING_WITHIN = 15
CLOSING = re.compile(r"建议|注意|祝|希望")
SENTENCE_END = re.compile(r"(?<=[。！!？?；;\n])")
# A phrase of 2-40 characters said 3 or more times in a row, 12 characters at least: "耳鸣、耳鸣、耳鸣、耳鸣、…".
# 2 of the 6,000 real references have one (both a row of "。"), none of the 50 held-out ones.
LOOP = re.compile(r"(.{2,40}?)\1{2,}", re.S)
LOOP_MIN_CHARS = 12
CJK_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_markdown(text: str) -> bool:
    """True if the text uses Markdown: a list item, **bold** or a # heading."""
    return MARKDOWN.search(text) is not None


def opens_with_greeting(text: str, within: int = GREETING_WITHIN) -> bool:
    """True if 你好 or 您好 appears in the first `within` characters (also after a "病情分析：" label)."""
    return GREETING.search(text.strip()[:within]) is not None


def last_sentence(text: str) -> str:
    """The last non-empty sentence (split after 。！？；, their ASCII forms, and line breaks)."""
    parts = [p.strip() for p in SENTENCE_END.split(text.strip()) if p.strip()]
    return parts[-1] if parts else ""


def closes_with_advice(text: str) -> bool:
    """True if the last sentence gives advice or a wish (建议/注意/祝/希望), the way many doctors end."""
    return CLOSING.search(last_sentence(text)) is not None


def repeated_phrase(text: str, min_chars: int = LOOP_MIN_CHARS) -> str:
    """The first stretch where one phrase (2-40 characters) repeats 3+ times in a row, at least `min_chars` long; else ""."""
    for match in LOOP.finditer(text):
        if len(match.group(0)) >= min_chars:
            return match.group(0)
    return ""


def is_stuck(text: str) -> bool:
    """True if the answer got stuck repeating one phrase (see `repeated_phrase`), as greedy decoding of small models does."""
    return bool(repeated_phrase(text))


def cjk_counts(text: str) -> tuple[int, int]:
    """(CJK ideographs, all non-space characters) of a text; punctuation, digits and Latin letters are not ideographs."""
    chars = char_tokens(text)
    return sum(1 for c in chars if CJK_IDEOGRAPH.match(c)), len(chars)


@dataclass(frozen=True)
class Readability:
    """Can a Chinese reader read a set of answers at all: counts of broken answers and the share of Chinese characters."""

    n: int
    empty: int  # nothing but white space
    one_character: int  # one character repeated (or a single character)
    replacement_character: int  # contain U+FFFD, a byte sequence that did not decode
    cjk_share: float  # CJK ideographs / non-space characters, over all answers together
    cjk_share_lowest: float  # the lowest share of one answer (0 for an empty one)


def readability(texts: Sequence[str]) -> Readability:
    """Readability counts of a set of answers (notebook 07; issue 11's bar: Chinese, no U+FFFD, none empty)."""
    if not texts:
        raise MetricsError("no answers to measure")
    counts = [cjk_counts(t) for t in texts]
    chars = sum(total for _, total in counts)
    return Readability(
        n=len(texts), empty=sum(1 for t in texts if not t.strip()),
        one_character=sum(1 for t in texts if len(set(char_tokens(t))) == 1),
        replacement_character=sum(1 for t in texts if "\ufffd" in t),
        cjk_share=sum(cjk for cjk, _ in counts) / chars if chars else 0.0,
        cjk_share_lowest=min(cjk / total if total else 0.0 for cjk, total in counts))


@dataclass(frozen=True)
class StyleMeasures:
    """Style of a set of answers: shares (0–1) with their bootstrap intervals, and the length distribution in characters."""

    markdown: float
    markdown_ci: tuple[float, float]
    greeting: float
    greeting_ci: tuple[float, float]
    closing: float
    closing_ci: tuple[float, float]
    stuck: float
    stuck_ci: tuple[float, float]
    length_p10: float
    length_median: float
    length_p90: float


def style_measures(texts: Sequence[str], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> StyleMeasures:
    """The style measures of a set of answers (or of the references themselves)."""
    if not texts:
        raise MetricsError("no answers to measure")
    shares = {}
    for name, test in [("markdown", has_markdown), ("greeting", opens_with_greeting), ("closing", closes_with_advice),
                       ("stuck", is_stuck)]:
        flags = [float(test(t)) for t in texts]
        shares[name] = sum(flags) / len(flags)
        shares[name + "_ci"] = mean_interval(flags, resamples=resamples, seed=seed)
    p10, median, p90 = np.percentile([len(char_tokens(t)) for t in texts], [10, 50, 90])
    return StyleMeasures(**shares, length_p10=float(p10), length_median=float(median), length_p90=float(p90))
