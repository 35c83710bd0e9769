"""End to end: a spoken question in, a spoken answer out, through the CLI and the engine."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vivavoce.audio import read_audio, write_audio
from vivavoce.engine import AudioChunk, ResponseOptions, TextDelta, UserTranscript, collect

CLI = [sys.executable, "-m", "vivavoce.cli"]


@pytest.fixture(scope="module")
def cascade():
    from vivavoce.engine.registry import load_engine

    return load_engine("cascade")


def test_chat_cli_answers_paris(tmp_path, question_16k, whisper):
    question = write_audio(tmp_path / "question.wav", question_16k, 16000)
    out = tmp_path / "answer.wav"
    run = subprocess.run(CLI + ["chat", str(question), "-o", str(out), "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "capital" in result["heard"].lower()
    answer = read_audio(out, 16000)
    assert answer.shape[0] > 16000 * 0.5
    assert "paris" in whisper.transcribe(answer).lower()


def test_engine_streams_text_before_all_audio_and_honours_speed(cascade, question_16k):
    events = list(cascade.respond(question_16k, [], ResponseOptions()))
    assert isinstance(events[0], UserTranscript) and "france" in events[0].text.lower()
    kinds = [type(e) for e in events]
    assert kinds.index(TextDelta) < kinds.index(AudioChunk)
    normal = collect(iter(events))
    fast = collect(cascade.respond(question_16k, [], ResponseOptions(speed=1.5)))
    assert normal.text == fast.text
    assert fast.audio.size < 0.85 * normal.audio.size  # same words, spoken faster


def test_engine_answers_no_speech_politely(cascade):
    noise = (np.random.default_rng(0).standard_normal(16000) * 0.003).astype(np.float32)
    response = collect(cascade.respond(noise, [], ResponseOptions()))
    assert response.user_text == "" and "did not catch" in response.text and response.audio.size > 0


def test_cancel_by_closing_the_stream(cascade, question_16k):
    stream = cascade.respond(question_16k, [], ResponseOptions())
    assert isinstance(next(stream), UserTranscript)
    stream.close()  # must not raise, and the engine must still answer the next turn
    assert collect(cascade.respond(question_16k, [], ResponseOptions())).audio.size > 0


def _bad_files(tmp_path):
    rate = 16000
    t = np.arange(rate * 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    import soundfile as sf

    (tmp_path / "text.wav").write_text("hello, I am not a sound file\n" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(rate, np.float32), rate)
    nan = tone.copy()
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, rate, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", np.tile(tone, 31), rate)  # 62 s, over the 60 s default
    sf.write(tmp_path / "cut.wav", tone, rate)
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 3])
    return {
        "text.wav": "not a readable audio file",
        "empty.wav": "empty file",
        "silent.wav": "silent",
        "nan.wav": "NaN",
        "long.wav": "longer than the limit of 60 s",
        "cut.wav": "truncated",
        "missing.wav": "no such file",
    }


def test_chat_cli_bad_inputs_one_line_no_traceback(tmp_path):
    cases = _bad_files(tmp_path)
    for name, message in cases.items():
        out = tmp_path / f"{name}.answer.wav"
        run = subprocess.run(CLI + ["chat", str(tmp_path / name), "-o", str(out)], capture_output=True, text=True)
        assert run.returncode == 2, (name, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in run.stderr, (name, run.stderr)
        assert lines[0].startswith("vivavoce: error: ") and message in lines[0] and name in lines[0]
        assert not out.exists()


def test_chat_cli_rejects_out_of_range_speed(tmp_path):
    run = subprocess.run(CLI + ["chat", "examples/question.wav", "--speed", "9"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fmt: skip
    assert run.returncode == 2 and "--speed 9" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(CLI + ["chat", "examples/question.wav", "--mode", "text"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fmt: skip
    assert run.returncode == 2 and "--mode text" in run.stderr and "Traceback" not in run.stderr
