"""Corpus synthesis: text tables and normaliser, planning, and a real tiny build audited by `data check`."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from conftest_data import tiny_corpus  # noqa: F401  (session fixture)
from vivavoce.cli import main
from vivavoce.data.check import check, stats
from vivavoce.data.corpus import PRESETS, Preset, plan, read_jsonl
from vivavoce.data.normalize import normalize_text, number_to_words, speakable_answer
from vivavoce.data.prompts import MAX_USER_WORDS, sample_turns, user_turns
from vivavoce.data.styles import CONTROL_COMMANDS, EMOTIONS, PITCH_RANGE, SPEED_RANGE
from vivavoce.data.voices import ASSISTANT, VOICES
from vivavoce.eval.prosody import f0_track


def _rows(root):
    rows = []
    for path in sorted((root / "manifests").glob("*.jsonl")):
        rows += read_jsonl(path)[0]
    return rows


def _run(capsys, *argv):
    rc = main(["--threads", "1", *argv])
    return rc, capsys.readouterr()


# ---- text ---------------------------------------------------------------------------------------------------


def test_number_words_and_normaliser():
    assert number_to_words(0) == "zero"
    assert number_to_words(1234) == "one thousand two hundred thirty four"
    assert number_to_words(1_000_005) == "one million five"
    text = normalize_text("In 1999, 3.5% of 1,200 people paid $12 on the 21st at 25°C & more.")
    assert text == ("In nineteen ninety nine, three point five percent of one thousand two hundred people paid "
                    "twelve dollars on the twenty first at twenty five degrees Celsius and more.")  # fmt: skip
    assert not any(ch.isdigit() for ch in text)


def test_speakable_filter():
    assert speakable_answer("Paris is the capital. It has about 2 million people.") == (
        "Paris is the capital. It has about two million people.", "")
    assert speakable_answer("Paris is the capital. It has many") == ("Paris is the capital.", "")  # cut-off tail
    assert speakable_answer("First part.\n\nSecond part.") == ("First part. Second part.", "")
    quoted = "He said, 'I am going to the moon!' The next day he left."
    assert speakable_answer(quoted) == (quoted, "")  # a sentence may end inside closing quotes
    assert speakable_answer("Steps:\n1. Boil water\n2. Add rice")[0] is None
    assert speakable_answer("**Paris** is nice.")[0] is None
    long = " ".join(["word"] * 45) + "."
    assert speakable_answer(long)[0] is None
    text, _ = speakable_answer("One two three. " * 20)
    assert len(text.split()) <= 40


def test_user_turns_many_distinct_short_and_seeded():
    turns = user_turns()
    assert len(turns) >= 3000
    assert len({t.text for t in turns}) == len(turns) and len({t.id for t in turns}) == len(turns)
    assert all(len(t.text.split()) <= MAX_USER_WORDS for t in turns)
    assert {"question", "request", "chitchat", "instruction", "follow_up"} <= {t.kind for t in turns}
    assert all(not any(ch.isdigit() for ch in t.text) for t in turns)
    assert sample_turns(50, seed=1) == sample_turns(50, seed=1)
    assert sample_turns(50, seed=1) != sample_turns(50, seed=2)


def test_control_commands_and_voices():
    assert len({p for p, _ in CONTROL_COMMANDS}) >= 40
    for phrase, c in CONTROL_COMMANDS:
        assert SPEED_RANGE[0] <= c.speed <= SPEED_RANGE[1] and PITCH_RANGE[0] <= c.pitch_shift <= PITCH_RANGE[1]
        assert c.emotion in EMOTIONS and 0 <= c.intensity <= 1
    users = [v for v in VOICES if v.name != ASSISTANT]
    assert len(users) >= 20
    assert {v.engine for v in users} == {"espeak", "piper", "world"}
    assert {v.split for v in users} == {"train", "dev", "test"}


def _fake_answers(turns):
    return {t.text: "That is a good question." for t in turns}


def test_plan_deterministic_sharded_and_disjoint():
    preset = Preset("t", 120, emotion_sets=0.2, assistant_emotion_sets=0.1, control=0.3)
    turns = sample_turns(preset.n_prompts, seed=3)
    answers = _fake_answers(turns)
    full = plan(preset, 3, answers, turns)
    assert [u.labels() for u in full] == [u.labels() for u in plan(preset, 3, answers, turns)]
    other = plan(preset, 4, answers, sample_turns(preset.n_prompts, seed=4))
    assert [u.labels() for u in full] != [u.labels() for u in other]
    parts = [plan(preset, 3, answers, turns, (i, 3)) for i in range(3)]
    ids = [u.id for p in parts for u in p]
    assert len(ids) == len(set(ids)) and set(ids) == {u.id for u in full}
    split_of_prompt, split_of_voice = defaultdict(set), defaultdict(set)
    for u in full:
        split_of_prompt[u.prompt_id].add(u.split)
        if u.voice != ASSISTANT:
            split_of_voice[u.voice].add(u.split)
    assert all(len(s) == 1 for s in split_of_prompt.values())
    assert all(len(s) == 1 for s in split_of_voice.values())
    held_out = {v.name for v in VOICES if v.held_out}
    assert {u.voice for u in full if u.split != "test"}.isdisjoint(held_out)
    assert held_out & {u.voice for u in full if u.split == "test"}
    controls = [u for u in full if u.control and u.turn == "assistant"]
    assert controls and all(u.speed == pytest.approx(u.control["speed"] * _emo_speed(u), rel=1e-3) for u in controls)


def _emo_speed(u):
    from vivavoce.data.styles import EMOTION_PROSODY

    return EMOTION_PROSODY[u.emotion].speed ** u.intensity


# ---- a real build -------------------------------------------------------------------------------------------


def test_tiny_build_passes_check(tiny_corpus, capsys):
    root, cache = tiny_corpus
    rc, out = _run(capsys, "data", "check", str(root), "--json")
    assert rc == 0, out.out
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["ok"] and summary["rows"] == summary["planned"] > 0
    rows = _rows(root)
    assert {r["turn"] for r in rows} == {"user", "assistant"}
    for r in rows:
        assert r["phonemes"] and r["native_rate"] == 22050
        assert sf.info(str(root / r["audio_16k"])).samplerate == 16000
    assistant = [r for r in rows if r["turn"] == "assistant"]
    assert {r["voice"] for r in assistant} == {ASSISTANT}
    assert all(len(r["text"].split()) <= 40 and not any(ch.isdigit() for ch in r["text"]) for r in assistant)
    assert len(read_jsonl(cache)[0]) == PRESETS["tiny"].n_prompts  # answers really written by the backbone
    st = stats(root)
    assert st["hours"] > 0 and set(st["per_emotion"]) == set(EMOTIONS)


def test_splits_disjoint_and_held_out_voices(tiny_corpus):
    rows = _rows(tiny_corpus[0])
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    for key in ("prompt_id", "voice"):
        splits = defaultdict(set)
        for r in rows:
            if r["voice"] != ASSISTANT:
                splits[r[key]].add(r["split"])
        assert all(len(s) == 1 for s in splits.values()), key
    held_out = {v.name for v in VOICES if v.held_out}
    users = [r for r in rows if r["turn"] == "user"]
    assert any(r["voice"] in held_out for r in users if r["split"] == "test")
    assert not any(r["voice"] in held_out for r in users if r["split"] != "test")


def test_same_sentence_in_several_emotions_differs_in_pitch_and_rate(tiny_corpus):
    root = tiny_corpus[0]
    groups = defaultdict(dict)
    for r in _rows(root):
        if r["control"] is None and r["vocoded"] == (r["engine"] != "espeak"):  # an emotion set: vocoded alike
            groups[(r["text"], r["voice"])][r["emotion"]] = r
    full = [g for g in groups.values() if set(g) == set(EMOTIONS)]
    assert full, "the tiny corpus must hold one sentence in every emotion"
    for g in full:
        f0, dur = {}, {}
        for emotion, r in g.items():
            audio, rate = sf.read(str(root / r["audio_native"]), dtype="float32")
            track = f0_track(audio, rate)[1]  # Praat's pitch, not the WORLD that made the audio
            f0[emotion] = float(np.median(track[track > 0]))
            dur[emotion] = r["duration"]
        assert f0["happy"] > f0["neutral"] * 1.05 and f0["surprised"] > f0["neutral"] * 1.1
        assert f0["sad"] < f0["neutral"] * 0.97
        assert dur["sad"] > dur["neutral"] * 1.08 and dur["angry"] < dur["neutral"] * 0.95


def test_resume_restores_deleted_file_and_check_reports_damage(tiny_corpus, tmp_path, capsys):
    src, cache = tiny_corpus
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    rows = _rows(root)
    victim, other = rows[0], rows[1]
    (root / victim["audio_16k"]).unlink()
    other_mtime = (root / other["audio_native"]).stat().st_mtime_ns
    rc, out = _run(capsys, "data", "check", str(root))
    assert rc == 1 and f"missing: {victim['id']}" in out.out
    # A kill mid-append leaves half a row: the rebuild drops it and redoes only what is missing.
    manifest = sorted((root / "manifests").glob("*.jsonl"))[0]
    with manifest.open("a") as f:
        f.write('{"id": "half a ro')
    rc, out = _run(capsys, "data", "build", "--preset", "tiny", "--out", str(root), "--answers-cache", str(cache),
                   "--workers", "1")  # fmt: skip
    assert rc == 0, out.err
    assert "1 to synthesise" in out.err
    assert (root / victim["audio_16k"]).is_file()
    assert (root / other["audio_native"]).stat().st_mtime_ns == other_mtime
    assert check(root).ok

    # Damage of each kind is reported, with a nonzero exit.
    (root / rows[1]["audio_native"]).write_bytes(b"not a flac file")
    sf.write(str(root / rows[2]["audio_16k"]), np.zeros(16000, dtype=np.float32), 16000)
    lines = manifest.read_text().splitlines()
    bad = json.loads(lines[-1])
    bad["emotion"] = "bored"
    lines[-1] = json.dumps(bad)
    manifest.write_text("\n".join(lines) + "\n")
    rc, out = _run(capsys, "data", "check", str(root))
    assert rc == 1
    assert f"corrupt: {rows[1]['id']}" in out.out and "unreadable" in out.out
    assert f"corrupt: {rows[2]['id']}" in out.out and "silent" in out.out
    assert f"mislabelled: {bad['id']}: emotion 'bored'" in out.out


def test_duration_mismatch_is_mislabelled(tiny_corpus, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_corpus[0], root)
    r = _rows(root)[0]
    audio, rate = sf.read(str(root / r["audio_16k"]), dtype="float32")
    sf.write(str(root / r["audio_16k"]), audio[: len(audio) // 2], rate)
    report = check(root)
    assert any(r["id"] in line and "lasts" in line for line in report.problems["mislabelled"])


def test_bad_cli_input_is_one_line_error(tmp_path, capsys):
    rc, out = _run(capsys, "data", "check", str(tmp_path))
    assert rc == 2 and "not a corpus" in out.err and len(out.err.strip().splitlines()) == 1
    rc, out = _run(capsys, "data", "build", "--out", str(tmp_path / "x"), "--shard", "3/2")
    assert rc == 2 and "--shard" in out.err
    rc, out = _run(capsys, "data", "build", "--out", str(tmp_path / "x"), "--preset", "huge")
    assert rc == 2 and "unknown preset" in out.err


def test_control_replies_are_rendered_with_the_control(tiny_corpus):
    rows = {r["id"]: r for r in _rows(tiny_corpus[0])}
    replies = [r for r in rows.values() if r["control"] and r["turn"] == "assistant"]
    assert replies
    for r in replies:
        command = rows[r["dialogue"] + ".cu"]
        asked = {u["text"] for u in rows.values() if u["dialogue"] == r["dialogue"] and u["turn"] == "user"
                 and u["control"] is None}  # fmt: skip
        assert command["control"] == r["control"] and any(command["text"].endswith(" " + t) for t in asked)
        plain = rows[r["dialogue"] + ".a"]
        assert plain["text"] == r["text"]
        # Same words, same voice: the reply lasts 1/speed as long as the plain answer (Piper's own timing varies).
        assert plain["duration"] / r["duration"] == pytest.approx(r["speed"], rel=0.12)
