import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vivavoce.audio import resample, write_audio
from vivavoce.eval import intelligibility
from vivavoce.eval.prosody import prosody
from vivavoce.eval.quality import dnsmos
from vivavoce.audio.speaker import speaker_similarity
from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize
from vivavoce.textnorm import normalize_for_wer, number_to_words, spell_numbers, split_sentences

QUESTION = Path(__file__).parents[1] / "examples" / "question.wav"
SENTENCE = "The quick brown fox jumps over the lazy dog."


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(42) == "forty two"
    assert number_to_words(1_000_001) == "one million one"
    assert spell_numbers("built in 1889 for 3 years") == "built in eighteen eighty nine for three years"
    assert normalize_for_wer("It's 20% off, Bob!") == "it's twenty percent off bob"


def test_sentences_end_at_marks_not_at_a_numbers_point():
    text = "He said 'I am going to the moon!' The next day he left. It is 3. 5 km? Yes"
    sentences = ["He said 'I am going to the moon!'", "The next day he left.", "It is 3. 5 km?", "Yes"]
    assert split_sentences(text) == sentences
    assert split_sentences("  ") == []
    # the cascade cuts streamed text for speech at the same ends, and at clauses
    from vivavoce.engine.cascade import _SPEAKABLE_END

    cuts = [m.end() for m in _SPEAKABLE_END.finditer('He said "hi." Then 3. left; ok: yes\nno')]
    assert cuts == [13, 27, 31, 36]


def test_wer_is_normalised_and_counts_errors():
    assert intelligibility.wer("It has 7 days.", "it has seven days") == 0.0
    assert intelligibility.wer("one two three four", "one two four") == pytest.approx(0.25)
    assert intelligibility.corpus_wer(["a b c d", "e f"], ["a b c d", "x y"]) == pytest.approx(2 / 6)
    # a right answer that goes on: every extra word is an insertion for the WER, none for the head WER
    ref, longer = "The immune system protects the body.", "The immune system protects the body. It is made of cells."
    assert intelligibility.corpus_wer([ref], [longer]) == pytest.approx(5 / 6)
    assert intelligibility.head_wer([ref], [longer]) == 0.0
    assert intelligibility.head_wer([ref, "a b"], ["The immune system", "x"]) == pytest.approx(5 / 8)
    assert intelligibility.keyword_hit(["eight", "8"], "A spider has 8 legs.")
    assert not intelligibility.keyword_hit(["paris"], "The capital is Lyon.")
    # word recall: in any place, each hypothesis word found once, optionally over a set of words only
    refs, hyps = ["What is the capital of Uruguay?", "the the cat"], ["Uruguay, what is its capital?", "the cat"]
    assert intelligibility.word_recall(refs, hyps) == (6, 9)  # of three "the", one is found; "of" is not
    assert intelligibility.word_recall(refs, hyps, only={"uruguay", "cat", "dog"}) == (2, 2)
    assert intelligibility.word_recall(refs, hyps, only={"of"}) == (0, 1)


def test_dnsmos_prefers_clean_speech_to_noise(piper):
    speech, rate = piper.synthesize(SENTENCE)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, speech.shape).astype(np.float32)
    clean, noisy = dnsmos(speech, rate), dnsmos(np.clip(speech + noise, -1, 1), rate)
    assert set(clean) == {"sig", "bak", "ovrl", "p808"}
    assert 1.0 <= noisy["ovrl"] < clean["ovrl"] <= 5.0
    assert clean["bak"] - noisy["bak"] > 1.0


def test_speaker_similarity_tells_voices_apart(piper):
    a, ra = piper.synthesize("I like to walk in the park on sunny days.")
    b, rb = piper.synthesize("Trains leave the station every hour.")
    c, rc = espeak_synthesize("Trains leave the station every hour.", EspeakSettings(voice="en-us+f3", pitch=70))
    same, other = speaker_similarity(a, ra, b, rb), speaker_similarity(a, ra, c, rc)
    assert same > 0.8 and same - other > 0.1


def test_prosody_follows_pitch_and_rate():
    low, r = espeak_synthesize(SENTENCE, EspeakSettings(pitch=20, rate=140))
    high, _ = espeak_synthesize(SENTENCE, EspeakSettings(pitch=80, rate=140))
    fast, _ = espeak_synthesize(SENTENCE, EspeakSettings(pitch=20, rate=260))
    p_low, p_high, p_fast = (prosody(x, r, words=9) for x in (low, high, fast))
    assert p_high.f0_mean_hz > 1.15 * p_low.f0_mean_hz
    assert p_fast.words_per_s > 1.4 * p_low.words_per_s


def test_eval_cli_scores_files_and_writes_report(tmp_path, piper):
    speech, rate = piper.synthesize(SENTENCE)
    path = write_audio(tmp_path / "fox.wav", resample(speech, rate, 16000), 16000)
    report = tmp_path / "r.json"
    run = subprocess.run(
        [sys.executable, "-m", "vivavoce.cli", "eval", str(path), "--text", SENTENCE, "--json", str(report),
         "--plots", str(tmp_path / "plots")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "OVRL" in run.stdout and "fox.wav" in run.stdout
    doc = json.loads(report.read_text())
    item = doc["items"][0]
    assert item["wer"] <= 0.2 and "fox" in item["transcript"].lower()
    assert doc["summary"]["dnsmos_ovrl"] > 2.5
    assert (tmp_path / "plots" / "fox.png").stat().st_size > 10_000


def test_eval_cli_needs_matching_references(tmp_path):
    run = subprocess.run([sys.executable, "-m", "vivavoce.cli", "eval", str(QUESTION), "--text", "a",
                          "--text", "b"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "one per file" in run.stderr and "Traceback" not in run.stderr
