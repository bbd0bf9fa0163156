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
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass


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


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus-level character BLEU-max_n (uniform weights, brevity penalty), 0–100."""
    _check_pairs(hypotheses, references)
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = char_tokens(hyp), char_tokens(ref)
        hyp_len += len(h)
        ref_len += len(r)
        for n in range(1, max_n + 1):
            hc, rc = ngrams(h, n), ngrams(r, n)
            matches[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or any(m == 0 for m in matches):
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100.0 * brevity * math.exp(log_precision)


def corpus_gleu(hypotheses: Sequence[str], references: Sequence[str], min_n: int = 1, max_n: int = 4) -> float:
    """Corpus-level character GLEU (Google-BLEU): matched n-grams / per-answer max(hyp, ref) n-grams, pooled, 0–100."""
    _check_pairs(hypotheses, references)
    matches = denominator = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = char_tokens(hyp), char_tokens(ref)
        hc: Counter = Counter()
        rc: Counter = Counter()
        for n in range(min_n, max_n + 1):
            hc.update(ngrams(h, n))
            rc.update(ngrams(r, n))
        matches += sum((hc & rc).values())
        denominator += max(sum(hc.values()), sum(rc.values()))
    return 100.0 * matches / denominator if denominator else 0.0


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


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n over a set of answers: unique character n-grams / all n-grams, 0–100."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(ngrams(char_tokens(text), n))
    total = sum(counts.values())
    return 100.0 * len(counts) / total if total else 0.0


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


def score_answers(hypotheses: Sequence[str], references: Sequence[str]) -> GenerationScores:
    """All metrics for one arm: generated answers against the reference answers, same order."""
    _check_pairs(hypotheses, references)
    mean = lambda values: 100.0 * sum(values) / len(values)  # noqa: E731
    return GenerationScores(
        bleu_1=corpus_bleu(hypotheses, references, 1),
        bleu_2=corpus_bleu(hypotheses, references, 2),
        bleu_3=corpus_bleu(hypotheses, references, 3),
        bleu_4=corpus_bleu(hypotheses, references, 4),
        gleu=corpus_gleu(hypotheses, references),
        rouge_1=mean([rouge_n(h, r, 1) for h, r in zip(hypotheses, references)]),
        rouge_2=mean([rouge_n(h, r, 2) for h, r in zip(hypotheses, references)]),
        rouge_l=mean([rouge_l(h, r) for h, r in zip(hypotheses, references)]),
        distinct_1=distinct_n(hypotheses, 1),
        distinct_2=distinct_n(hypotheses, 2),
        mean_answer_chars=sum(len(char_tokens(h)) for h in hypotheses) / len(hypotheses),
    )
