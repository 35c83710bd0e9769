"""Word onsets for the aligned guided layout: CTC forced alignment, on real speech, and the onset rule's fit."""

from __future__ import annotations

import numpy as np
import pytest

from conftest_train import one_torch_thread  # noqa: F401  (module fixture)
from vivavoce.model.processor import ProcessorConfig, SpeechLMProcessor
from vivavoce.model.speechlm import SpeechLMConfig
from vivavoce.train.lm_align import ctc_viterbi_starts, fit_onset_rule, fit_phone_durations, word_onsets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_viterbi_finds_each_label_where_it_peaks():
    log_probs = np.full((14, 6), np.log(0.02))
    log_probs[:, 0] = np.log(0.9)  # blank
    for t, label in ((2, 3), (3, 3), (6, 5), (10, 5)):  # the repeated 5 needs the blank between
        log_probs[t] = np.log(0.02)
        log_probs[t, label] = np.log(0.9)
    assert ctc_viterbi_starts(log_probs, [3, 5, 5]) == [2, 6, 10]
    assert ctc_viterbi_starts(log_probs[:3], [3, 5, 5]) is None  # too short to hold the labels


def test_onsets_of_real_speech_find_the_word_after_a_pause(backbone):
    from vivavoce.audio.io import resample
    from vivavoce.codec import Codec
    from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize

    codec = Codec.load()
    proc = SpeechLMProcessor(backbone.tokenizer)
    first, rate = espeak_synthesize("Yesterday morning", EspeakSettings("en-us", 160, 50))
    second, _ = espeak_synthesize("London", EspeakSettings("en-us", 160, 50))
    audio = resample(np.concatenate([first, np.zeros(int(1.2 * rate), np.float32), second]), rate, 16000)
    ids = [int(i) for i in codec.encode(audio)]
    text = proc.text_ids("Yesterday morning London")
    onsets = word_onsets(ids, proc.words(text), len(text), codec.tokenizer)
    assert onsets is not None
    starts = [o for o in onsets if o is not None]
    assert len(starts) == 3 and starts[0] < starts[1] < starts[2]
    london_at = (first.size + 1.2 * rate) / rate * codec.token_rate  # where "London" begins, in tokens
    assert abs(starts[2] - london_at) <= 4 and starts[1] < first.size / rate * codec.token_rate
    same, phones = word_onsets(ids, proc.words(text), len(text), codec.tokenizer, phones=True)
    assert same == onsets
    timed = [p for p in phones if p is not None]
    assert [p[0] for p in timed] == starts and [len(p) for p in timed] == [7, 6, 6]  # j ɛ s t ɚ d eɪ ...
    flat = [o for p in timed for o in p]
    assert flat == sorted(flat) and flat[-1] < len(ids)


def test_onset_rule_fit_recovers_its_rates(backbone):
    truth = ProcessorConfig(onset_first=3.0, onset_per_word=2.5, onset_per_char=1.5, onset_pause=6.0)
    proc = SpeechLMProcessor(backbone.tokenizer, config=truth)
    texts = ["The capital of France is Paris.", "Well, spiders have eight legs, and insects six.",
             "A clear sky is blue; at sunset it turns red.", "Whales are mammals, not fish."]  # fmt: skip
    rows = [{"text_ids": proc.text_ids(t), "word_onsets": proc.estimate_onsets(proc.text_ids(t))} for t in texts]
    fit = fit_onset_rule(rows, proc)
    assert fit["onset_first"] == 3.0
    # The estimate rounds each onset to a whole token, so the rates come back to within rounding.
    assert abs(fit["onset_per_char"] - 1.5) < 0.15 and abs(fit["onset_pause"] - 6.0) < 1.0
    refit = SpeechLMProcessor(backbone.tokenizer, config=ProcessorConfig(**fit))
    for r in rows:
        a = [o for o in r["word_onsets"] if o is not None]
        b = [o for o in refit.estimate_onsets(r["text_ids"]) if o is not None]
        assert np.abs(np.subtract(a, b)).max() <= 2


def test_phone_durations_fit_gives_back_the_measured_onsets(backbone):
    """Rows whose phonemes last 2 codes each, a word's last 4 (6 before a comma or full stop): the fitted table
    gives each its measured duration, and the onsets it estimates are the measured ones."""
    config = SpeechLMConfig(split_spelling=True, split_phonemes=True, split_phone_track=True)
    proc = SpeechLMProcessor(backbone.tokenizer, config)
    texts = ["The capital of France is Paris.", "Well, spiders have eight legs, and insects six.",
             "A clear sky is blue, at sunset it turns red.", "Whales are mammals, not fish."]  # fmt: skip
    rows = []
    for t in texts:
        ids = proc.text_ids(t)
        onsets, phone_onsets, at = [None] * len(ids), [None] * len(ids), 0
        for a, w in proc.words(ids):
            phones = proc.phones_of(w)[0]
            onsets[a], phone_onsets[a] = at, [at + 2 * i for i in range(len(phones))]
            at += 2 * len(phones) + (4 if w[-1] in ",." else 2)
        rows.append({"text_ids": ids, "speech_ids": [0] * at, "word_onsets": onsets, "phone_onsets": phone_onsets})
    table = fit_phone_durations(rows, proc, min_count=1)
    ae = proc.phones_of("are")[0]
    assert table[f"{ae[0]} {ae[1]} 0"] == 2.0 and table[f"{ae[-1]} end 0"] == 4.0
    assert table[f"{proc.phones_of('France')[0][-1]} end 0"] == 4.0
    fitted = SpeechLMProcessor(backbone.tokenizer, config, ProcessorConfig(phone_tokens=table))
    for r in rows:
        assert fitted.estimate_onsets(r["text_ids"]) == r["word_onsets"]


def test_phone_durations_depend_on_the_phoneme_before(backbone):
    """A phoneme that lasts 6 codes after /f/ and 2 after /s/ (same phoneme after it, same pause): the table keeps
    them apart by the phoneme before, where one without it would give both their mean, 4."""
    from vivavoce.model.spelling import PhoneTiming

    proc = SpeechLMProcessor(backbone.tokenizer, SpeechLMConfig(split_spelling=True, split_phonemes=True,
                                                                split_phone_track=True))  # fmt: skip
    f = proc.phones_of("fit")[0]
    s = proc.phones_of("sit")[0]
    assert f[1:] == s[1:] and f[0] != s[0]
    rows = []
    for text in ["fit sit fit sit", "sit fit sit fit"]:
        ids = proc.text_ids(text)
        onsets, phone_onsets, at = [None] * len(ids), [None] * len(ids), 0
        for a, w in proc.words(ids):
            phones = proc.phones_of(w)[0]
            lasts = [6 if i == 1 and phones[0] == f[0] else 2 for i in range(len(phones))]
            onsets[a], phone_onsets[a] = at, [at + sum(lasts[:i]) for i in range(len(phones))]
            at += sum(lasts)
        rows.append({"text_ids": ids, "speech_ids": [0] * at, "word_onsets": onsets, "phone_onsets": phone_onsets})
    table = fit_phone_durations(rows, proc, min_count=1)
    timing = PhoneTiming(table)
    assert timing.durations(f, [5, 8, 19]) == [2.0, 6.0, 2.0] and timing.durations(s, [18, 8, 19]) == [2.0] * 3
    without = PhoneTiming(fit_phone_durations(rows, proc, min_count=1, before=False))
    assert without.durations(f, [5, 8, 19])[1] == without.durations(s, [18, 8, 19])[1] == 4.0
