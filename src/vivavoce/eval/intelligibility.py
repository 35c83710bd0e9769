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


def keyword_hit(keywords: list[str], hypothesis: str) -> bool:
    """True if any of the keywords (each possibly several words) occurs in the hypothesis."""
    hyp = f" {normalize_for_wer(hypothesis)} "
    return any(f" {normalize_for_wer(k)} " in hyp for k in keywords)
