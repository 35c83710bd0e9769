"""How well speech says what it should: ASR transcripts scored against reference text (WER/CER, keywords)."""

from __future__ import annotations

import jiwer

from vivavoce.textnorm import normalize_for_wer


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize_for_wer(reference), normalize_for_wer(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize_for_wer(reference), normalize_for_wer(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.cer(ref, hyp))


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Word errors over all pairs divided by all reference words (not a mean of per-item WERs)."""
    refs = [normalize_for_wer(r) for r in references]
    hyps = [normalize_for_wer(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        return 0.0
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def head_wer(references: list[str], hypotheses: list[str]) -> float:
    """`corpus_wer` with each hypothesis cut to as many words as its reference: words said after the reference's
    length are not counted, so a right answer that goes on is not scored worse than a short wrong one (answer
    agreement, where the reference is an answer cut to whole sentences and the engine's runs to a token limit)."""
    refs = [normalize_for_wer(r) for r in references]
    hyps = [" ".join(normalize_for_wer(h).split()[: len(r.split())]) for r, h in zip(refs, hypotheses)]
    return corpus_wer(refs, hyps)


def word_recall(references: list[str], hypotheses: list[str], only: set[str] | None = None) -> tuple[int, int]:
    """(reference words found in their hypothesis, reference words), over all pairs and counting only the words in
    `only` (normalised, as `normalize_for_wer` writes them) when it is given. A word is found as often as the
    hypothesis holds it, in any place: it tells which words are heard at all, where WER also counts order and
    insertions (e.g. words seen in training against words never seen)."""
    import collections

    found = total = 0
    for ref, hyp in zip(references, hypotheses):
        have = collections.Counter(normalize_for_wer(hyp).split())
        for w in normalize_for_wer(ref).split():
            if only is not None and w not in only:
                continue
            total += 1
            if have[w] > 0:
                have[w] -= 1
                found += 1
    return found, total


def keyword_hit(keywords: list[str], hypothesis: str) -> bool:
    """True if any of the keywords (each possibly several words) occurs in the hypothesis."""
    hyp = f" {normalize_for_wer(hypothesis)} "
    return any(f" {normalize_for_wer(k)} " in hyp for k in keywords)
