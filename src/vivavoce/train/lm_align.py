"""Word onsets of spoken utterances: at which codec token each word of the text starts.

The speech LM's word-aligned guided layout (`model/processor.py`) places each word's text tokens where its speech
starts, so the speech branch reads the word it is saying from a few positions back instead of searching a text
that runs ever further ahead. The onsets come from a forced alignment (CTC Viterbi) of the text's phonemes against
the codec tokenizer's own CTC head, which reads the tokens alone: no audio is needed. espeak-ng (GPL) gives the
phonemes, as a separate process and at data-preparation time only; at inference the layout estimates onsets from
the text (`processor.estimate_onsets`), whose rate constants `fit_onset_rule` fits to these alignments.
"""

from __future__ import annotations

import numpy as np
import torch

from vivavoce.codec.phonemes import encode_phonemes
from vivavoce.errors import VivavoceError
from vivavoce.model.processor import SPEAKABLE
from vivavoce.speechtools.tts import espeak_words


def ctc_viterbi_starts(log_probs: np.ndarray, labels: list[int]) -> list[int] | None:
    """Forced CTC alignment (blank 0): the first frame of each label on the best path; None if it cannot fit."""
    T, S = log_probs.shape[0], 2 * len(labels) + 1
    ext = np.zeros(S, dtype=np.int64)
    ext[1::2] = labels
    # A skip over a blank is allowed into a label that differs from the label two back.
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    score = np.full(S, -np.inf)
    score[:2] = log_probs[0, ext[:2]]
    back = np.zeros((T, S), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, T):
        one = np.concatenate([[-np.inf], score[:-1]])
        two = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        stacked = np.stack([score, one, two])
        back[t] = stacked.argmax(0)
        score = stacked.max(0) + log_probs[t, ext]
    end = S - 1 if score[S - 1] >= score[S - 2] else S - 2
    if not np.isfinite(score[end]):
        return None
    state_at = np.empty(T, dtype=np.int64)
    s = end
    for t in range(T - 1, -1, -1):
        state_at[t] = s
        s -= int(back[t, s])
    starts = []
    for k in range(len(labels)):
        frames = np.flatnonzero(state_at == 2 * k + 1)
        if frames.size == 0:
            return None
        starts.append(int(frames[0]))
    return starts


@torch.no_grad()
def word_onsets(speech_ids: list[int], words: list[tuple[int, str]], n_text: int, codec_tokenizer,
                phones: bool = False):  # fmt: skip
    """Per text token (of `n_text`; `words` from `SpeechLMProcessor.words`): the codec token at which its word
    starts (None on a word's later tokens, and on words with nothing to say, such as a lone dash); None when the
    alignment fails. `phones`: also, per text token, the codec tokens at which each of its word's phonemes starts
    (espeak-ng's, in the CTC head's units; the speech branch's phone track), as a pair (words, phones)."""
    said = [(a, w) for a, w in words if SPEAKABLE.search(w)]
    if not said or not speech_ids:
        return None
    ipa = espeak_words([w for _, w in said])
    if ipa is None:
        return None
    units = [encode_phonemes(p) for p in ipa]
    if not all(units):
        return None
    log_probs = codec_tokenizer.phone_log_probs(speech_ids)[0].numpy()
    starts = ctc_viterbi_starts(log_probs, [p for ph in units for p in ph])
    if starts is None:
        return None
    up = codec_tokenizer.cfg.ctc_upsample
    out: list[int | None] = [None] * n_text
    per_phone: list[list[int] | None] = [None] * n_text
    k = 0
    for (a, _), ph in zip(said, units):
        out[a] = starts[k] // up
        per_phone[a] = [s // up for s in starts[k : k + len(ph)]]
        k += len(ph)
    return (out, per_phone) if phones else out


def fit_onset_rule(rows: list[dict], processor) -> dict[str, float]:
    """Least-squares rate constants of `processor.estimate_onsets` from aligned rows (`word_onsets`): a word's
    duration in tokens = per_word + per_char * its letters + pause * (it ends in , . ; : ! ?), and the first
    word's onset. Returned as ProcessorConfig fields."""
    X, y, first = [], [], []
    for r in rows:
        onsets = r.get("word_onsets")
        if not onsets:
            continue
        words = processor.words(r["text_ids"])
        timed = [(onsets[a], w) for a, w in words if onsets[a] is not None]
        if timed:
            first.append(timed[0][0])
        for (t0, w), (t1, _) in zip(timed, timed[1:]):
            X.append([1.0, len(SPEAKABLE.findall(w)), float(w[-1:] in ",.;:!?")])
            y.append(t1 - t0)
    if len(y) < 10:
        raise VivavoceError(f"only {len(y)} aligned word pairs: too few to fit the onset rule")
    coef, *_ = np.linalg.lstsq(np.array(X), np.array(y, dtype=float), rcond=None)
    return {"onset_first": round(float(np.median(first)), 2), "onset_per_word": round(float(coef[0]), 3),
            "onset_per_char": round(float(coef[1]), 3), "onset_pause": round(float(coef[2]), 3)}  # fmt: skip


def fit_phone_durations(rows: list[dict], processor, min_count: int = 3, before: bool = True,
                        stat: str = "mean") -> dict[str, float]:
    """The phone track's duration table (`spelling.PhoneTiming`) from rows with measured phone onsets: the mean
    duration in codec tokens of each phoneme (to the next phoneme's start, so a clause's last one holds its pause)
    by (phoneme, next phoneme or 0 at the word's end, pause class), by (phoneme, at the word's end, pause class), by
    phoneme, and over all ("*"); keys seen fewer than `min_count` times are left to the next. All are scaled so
    that the estimated onset of a reply's last word falls where it was measured, on average."""
    from vivavoce.model.spelling import PhoneTiming, pause_class, word_duration_keys

    replies = []  # per reply with phone onsets: its words' (phone onsets, text), and its length in codes
    for r in rows:
        onsets = r.get("phone_onsets")
        if onsets:
            timed = [(onsets[a], w) for a, w in processor.words(r["text_ids"]) if onsets[a]]
            replies.append((timed, len(r["speech_ids"])))
    processor.prime_phonemes(w for timed, _ in replies for _, w in timed)
    found: dict[str, list[float]] = {}
    for timed, length in replies:
        ends = [t[0] for t, _ in timed[1:]] + [length]
        for (starts, word), end in zip(timed, ends):
            phones, letters = processor.phones_of(word)
            if len(phones) != len(starts):  # espeak said the word otherwise in a sentence: leave it out
                continue
            for i, keys in enumerate(word_duration_keys(phones, pause_class(letters), before)):
                d = float((starts[i + 1] if i + 1 < len(phones) else end) - starts[i])
                for key in keys:
                    found.setdefault(key, []).append(d)
    if "*" not in found:
        raise VivavoceError("no measured phone onsets: too few to fit the phone durations")
    average = {"mean": np.mean, "median": np.median}[stat]
    table = {k: float(average(v)) for k, v in found.items() if len(v) >= min_count or k == "*"}
    # Words whose phonemes were left out above, and a reply's first word (which holds any silence before it),
    # still take their time: scale the table so that the replies' words end where they were measured to.
    timing, said, estimated = PhoneTiming(table), 0.0, 0.0
    for timed, _ in replies:
        if len(timed) > 1:
            said += timed[-1][0][0] - timed[0][0][0]
            estimated += sum(sum(timing.durations(*processor.phones_of(w))) for _, w in timed[:-1])
    scale = said / estimated if estimated else 1.0
    return {k: round(v * scale, 3) for k, v in table.items()}
