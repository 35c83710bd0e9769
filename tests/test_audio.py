import math
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from vivavoce.audio import AudioLimits, FrameChunker, float_to_pcm16, pcm16_to_float, read_audio, write_audio
from vivavoce.errors import AudioError

RATE = 22050


def tone(seconds=1.0, rate=RATE, freq=220.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("ext,fmt", [("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG")])
def test_reads_formats_resampled_to_mono(tmp_path, ext, fmt):
    path = tmp_path / f"x.{ext}"
    sf.write(path, tone(1.0, channels=2), RATE, format=fmt)
    audio = read_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - 16000) <= 1
    assert 0.4 < np.abs(audio).max() <= 1.0


def test_downmix_averages_channels(tmp_path):
    left = tone(0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, RATE)
    audio = read_audio(tmp_path / "s.wav", RATE)
    np.testing.assert_allclose(audio, left / 2, atol=1e-3)


def test_write_round_trip_and_permissions(tmp_path):
    x = tone(0.5, 16000)
    out = write_audio(tmp_path / "a" / "b.flac", x, 16000)
    back, rate = sf.read(out, dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(back, x, atol=1e-4)
    assert os.stat(out).st_mode & 0o044  # readable by others, not mkstemp's 0600
    assert [p.name for p in out.parent.iterdir()] == ["b.flac"]  # no temp file left behind


def test_write_refuses_nan_and_keeps_old_file(tmp_path):
    good = write_audio(tmp_path / "x.wav", tone(0.2, 16000), 16000)
    before = good.read_bytes()
    bad = tone(0.2, 16000)
    bad[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_audio(good, bad, 16000)
    assert good.read_bytes() == before


def _truncated_wav(path):
    sf.write(path, tone(1.0), RATE, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only_wav(path):
    sf.write(path, np.zeros(0, np.float32), RATE)


def _nan_wav(path):
    x = tone(1.0)
    x[100:200] = np.nan
    sf.write(path, x, RATE, subtype="FLOAT")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_text("this is not audio, just words\n" * 20), "not a readable audio file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (_header_only_wav, "empty audio"),
        (_truncated_wav, "truncated WAV"),
        (_nan_wav, "NaN or infinite"),
        (lambda p: sf.write(p, tone(3.0), RATE), "longer than the limit of 2 s"),
        (lambda p: sf.write(p, np.zeros(RATE, np.float32), RATE), "silent"),
    ],
    ids=["not-audio", "empty-file", "no-samples", "truncated", "nan", "too-long", "silence"],
)
def test_bad_input_is_one_clear_error(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        read_audio(path, 16000, AudioLimits(max_seconds=2.0))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_file():
    with pytest.raises(AudioError, match="no such file"):
        read_audio("/nonexistent/x.wav")


def test_pcm16_round_trip_and_malformed_frame():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0], np.float32)
    data = float_to_pcm16(x)
    assert len(data) == 10
    np.testing.assert_allclose(pcm16_to_float(data), x, atol=1 / 16000)
    with pytest.raises(AudioError, match="malformed PCM16"):
        pcm16_to_float(data[:-1])
    assert struct.unpack("<h", float_to_pcm16(np.array([np.nan], np.float32)))[0] == 0


def test_frame_chunker_recuts_a_stream():
    chunker = FrameChunker(320)
    x = np.arange(1000, dtype=np.float32) / 1000
    frames = chunker.push(x[:150]) + chunker.push(float_to_pcm16(x[150:700])) + chunker.push(x[700:])
    assert [f.shape[0] for f in frames] == [320, 320, 320]
    assert chunker.pending_samples == 40
    np.testing.assert_allclose(np.concatenate(frames), x[:960], atol=1 / 16000)
    tail = chunker.flush()
    assert len(tail) == 1 and tail[0].shape[0] == 320
    np.testing.assert_allclose(tail[0][:40], x[960:], atol=1e-6)
    assert not tail[0][40:].any() and chunker.flush() == []
