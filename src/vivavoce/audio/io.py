"""Read any audio file soundfile can decode into mono float32 at a chosen rate; write WAV/FLAC.

Every way an input can be unusable ends in one `AudioError` line naming the file and the problem.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from vivavoce.errors import AudioError


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = 60.0
    # Peak below this (about -70 dBFS) counts as silence: nothing to listen to.
    silence_peak: float = 3e-4
    reject_silence: bool = True


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,), averaging channels."""
    return audio if audio.ndim == 1 else audio.mean(axis=1)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, target, quality="HQ").astype(np.float32, copy=False)


def check_audio(audio: np.ndarray, rate: int, name: str = "audio", limits: AudioLimits = AudioLimits()) -> None:
    """Raise AudioError if `audio` (mono float) is empty, non-finite, too long or silent."""
    if audio.size == 0:
        raise AudioError(f"{name}: empty audio (no samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    seconds = audio.shape[0] / rate
    if seconds > limits.max_seconds:
        raise AudioError(f"{name}: {seconds:.1f} s of audio is longer than the limit of {limits.max_seconds:g} s")
    if limits.reject_silence and float(np.max(np.abs(audio))) < limits.silence_peak:
        raise AudioError(f"{name}: audio is silent (peak below {20 * np.log10(limits.silence_peak):.0f} dBFS)")


def read_audio(path: str | os.PathLike, rate: int = 16000, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at `rate` Hz, after every check in `check_audio`."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise AudioError(f"{name}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile says "Format not recognised" and the like
        raise AudioError(f"{name}: not a readable audio file ({_reason(e)})") from None
    if info.frames == 0:
        raise AudioError(f"{name}: empty audio (no samples)")
    if info.duration > limits.max_seconds:
        raise AudioError(f"{name}: {info.duration:.1f} s of audio is longer than the limit of {limits.max_seconds:g} s")
    if info.format == "WAV":
        _check_wav_complete(path)
    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{name}: truncated or corrupt audio ({_reason(e)})") from None
    audio = to_mono(audio)
    check_audio(audio, file_rate, name, AudioLimits(limits.max_seconds, limits.silence_peak, reject_silence=False))
    audio = np.clip(resample(audio, file_rate, rate), -1.0, 1.0)
    check_audio(audio, rate, name, limits)
    return audio


def write_audio(path: str | os.PathLike, audio: np.ndarray, rate: int) -> Path:
    """Write mono float audio as 16-bit WAV or FLAC (by extension), atomically: a crash leaves no half file."""
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: can only write .wav or .flac")
    audio = np.asarray(audio, dtype=np.float32)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an answer file should read like any other
    try:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), rate, format=fmt, subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_wav_complete(path: Path) -> None:
    """libsndfile quietly reads what is there of a cut-off WAV; compare the data chunk's size with the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:12] != b"WAVE":
            return  # RF64/W64 and friends: leave to libsndfile
        endian = "<" if header[:4] == b"RIFF" else ">"
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            cid, csize = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if cid == b"data":
                if csize != 0xFFFFFFFF and f.tell() + csize > size:
                    have = size - f.tell()
                    raise AudioError(f"{path}: truncated WAV (header promises {csize} data bytes, file holds {have})")
                return
            f.seek(csize + (csize & 1), os.SEEK_CUR)


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else e.__class__.__name__
