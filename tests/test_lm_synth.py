"""Heard speech without audio (train/lm_synth.py): phone units, timing, the code synthesiser, texts, the command."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch

from conftest_train import one_torch_thread  # noqa: F401  (module fixture)
from vivavoce.train.lm_synth import (Durations, aligned_tracks, carrier_templates, phone_units, synth_texts,
                                     track_of, train_synth)  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_phone_units_mark_word_ends_and_pauses():
    said = {"hello": [5, 6, 7], "world": [8, 9]}
    units = phone_units("Hello, world.", said.get)
    assert units == [(5, 0, 0), (6, 0, 0), (7, 1, 1), (8, 0, 0), (9, 1, 2)]
    assert phone_units("Hello, zyxxy.", lambda w: said.get(w, [])) is None  # a word with no phonemes: no text


def test_track_of_follows_the_starts():
    units = [(5, 0, 0), (6, 1, 0), (7, 1, 2)]
    track = track_of(units, [2.0, 4.0, 7.0], 10)
    assert track.shape == (10, 9)
    assert list(track[:2, 8]) == [1, 1] and list(track[2:, 8]) == [0] * 8  # before speech, then in it
    assert list(track[:, 0]) == [0, 0, 5, 5, 6, 6, 6, 7, 7, 7]
    assert list(track[3]) == [5, 0, 6, 7, 1, 1, 0, 0, 0]  # phone, before, two after, age, left, end, pause, lead
    assert list(track[5, 4:6]) == [1, 2] and track[9, 7] == 2


def test_durations_draw_gives_back_a_timing_always_measured_so():
    d = Durations()
    units = [(5, 0, 0), (6, 1, 0), (7, 1, 2)]
    for _ in range(5):
        d.add("v1", units, [2.0, 4.0, 7.0], 12)
    starts, n = d.draw("v1", units, random.Random(0))
    assert starts == [2.0, 4.0, 7.0] and n == 12
    # Another voice and an unseen word end: any voice's lengths, then the phoneme's, then any phoneme's.
    starts, n = d.draw("v2", [(6, 0, 0), (5, 1, 2), (9, 1, 0)], random.Random(0))
    assert starts == [3.0, 6.0, 8.0] and n > 8
    # Stored as each key's quantiles and count: the medians and the keys' counts come back.
    for _ in range(20):
        d.add("v1", [(5, 0, 0), (6, 1, 0), (7, 1, 2)], [1.0, 4.0, 5.0], 9)
    back = Durations.from_json(json.loads(json.dumps(d.to_json())))
    assert back.seen("*|5") == d.seen("*|5") == 25 and back.seen("v2|lead") == 0
    assert back.draw("v1", units, random.Random(0), 0.0)[0][1:] == d.draw("v1", units, random.Random(0), 0.0)[0][1:]


def test_synth_learns_codes_from_phones_and_voice():
    """Codes that are a function of the phoneme and the voice: after a short fit the synthesiser's argmax says a
    new order of those phonemes in each voice with the right codes."""
    rng = random.Random(0)
    code = {(v, p): (7 * p + 31 * i) % 64 for i, v in enumerate(("a", "b")) for p in range(1, 9)}
    tracks = []
    for _ in range(60):
        voice = rng.choice("ab")
        units = [(rng.randint(1, 8), 0, 0) for _ in range(6)]
        starts = [1.0 + 3 * k for k in range(6)]
        codes = [0] + [code[voice, u[0]] for u in units for _ in range(3)] + [0]
        tracks.append((voice, units, starts, codes))
    model = train_synth(tracks, 64, minutes=0, steps=150, log=lambda _: None)
    units = [(p, 0, 0) for p in (8, 3, 1, 6)]
    for voice in "ab":
        said = model.say(units, [1.0, 4.0, 7.0, 10.0], 14, voice, 0, torch.Generator())
        want = [0] + [code[voice, u[0]] for u in units for _ in range(3)] + [0]
        assert np.mean(np.array(said) == np.array(want)) >= 0.9, (voice, said, want)


def test_aligned_tracks_of_real_speech_hold_every_phoneme_in_order():
    from vivavoce.audio.io import resample
    from vivavoce.codec import Codec
    from vivavoce.model.spelling import Phonemizer
    from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize

    codec = Codec.load()
    audio, rate = espeak_synthesize("Yesterday morning in London", EspeakSettings("en-us", 160, 50))
    ids = [int(i) for i in codec.encode(resample(audio, rate, 16000))]
    rows = [{"text": "Yesterday morning in London.", "speech_ids": ids, "voice": "v"},
            {"text": "Yesterday morning in London.", "speech_ids": ids[:3], "voice": "v"}]  # too short to align
    tracks = aligned_tracks(rows, codec.tokenizer, Phonemizer(), log=lambda _: None)
    assert len(tracks) == 1
    voice, units, starts, codes = tracks[0]
    assert voice == "v" and codes == ids and len(units) == len(starts) > 15
    assert starts == sorted(starts) and starts[-1] < len(ids) and units[-1][1:] == (1, 2)


def test_synth_texts_say_every_word_before_any_twice_and_never_an_excluded_text():
    carriers = carrier_templates()
    assert "What is the capital of {x}?" in carriers and all("{x}" in c for c in carriers)
    words = ["gravel", "Quito", "walrus", "lantern"]
    texts = synth_texts(40, words, [], seed=1)
    said = [w for t in texts[:4] for w in words if w in t.replace("?", " ").replace(".", " ").split()]
    assert len(texts) == 40 and sorted(said) == sorted(words)
    again = synth_texts(40, words, [], seed=1, exclude={texts[0]})
    assert len(again) == 40 and texts[0] not in again
    mixed = synth_texts(200, words, ["The sea is calm today."], seed=1, share_sentences=0.3)
    assert 30 < mixed.count("The sea is calm today.") < 90


def test_command_writes_rows_that_make_asr_examples(tmp_path, backbone):
    from vivavoce.audio.io import resample
    from vivavoce.codec import Codec
    from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize
    from vivavoce.train.lm_data import ExampleConfig, build_examples, load_tokens
    from vivavoce.train.lm_synth import main

    codec = Codec.load()
    tokens = tmp_path / "tokens.jsonl"
    with tokens.open("w") as f:
        for i, (text, voice) in enumerate([("Tell me about the ocean.", "en-us"), ("What do owls eat?", "en-gb")]):
            audio, rate = espeak_synthesize(text, EspeakSettings(voice, 160, 50))
            ids = [int(x) for x in codec.encode(resample(audio, rate, 16000))]
            f.write(json.dumps({"key": f"t/{i}", "turn": "user", "split": "train", "voice": voice, "text": text,
                                "text_ids": [1], "speech_ids": ids}) + "\n")  # fmt: skip
    out = tmp_path / "synth.jsonl"
    args = ["--tokens", str(tokens), "--out", str(out), "--work", str(tmp_path / "w"), "--steps", "3",
            "--rows", "6", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    rows = load_tokens(out)
    assert len(rows) == 6 and {r["voice"] for r in rows} == {"en-us", "en-gb"}
    assert all(r["codec"] == codec.tokenizer_fingerprint and 0 < len(r["speech_ids"]) < 200 for r in rows)
    assert all(backbone.tokenizer.decode(r["text_ids"]) == r["text"] for r in rows)
    examples = build_examples(rows, ExampleConfig(tts=False, tts_true=False, s2s=False, s2s_guided=False, s2t=False))
    assert [e.task for e in examples] == ["asr"] * 6
    assert main(args) == 0  # a second run reuses the fitted synthesiser
    assert (tmp_path / "w" / "synth.safetensors").is_file() and len(load_tokens(out)) == 6
