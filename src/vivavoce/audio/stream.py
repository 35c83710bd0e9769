"""PCM16 framing for streams: bytes from a socket in, fixed-size float frames out."""

from __future__ import annotations

import numpy as np

from vivavoce.errors import AudioError


def pcm16_to_float(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise AudioError(f"malformed PCM16 frame: {len(data)} bytes is not a whole number of 16-bit samples")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> bytes:
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class FrameChunker:
    """Re-cuts a stream of arbitrary-length pieces into frames of exactly `frame_samples` samples.

    State is one partial frame; `flush` returns it zero-padded (or nothing if empty).
    """

    def __init__(self, frame_samples: int):
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.frame_samples = frame_samples
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, piece: np.ndarray | bytes) -> list[np.ndarray]:
        samples = pcm16_to_float(piece) if isinstance(piece, (bytes, bytearray, memoryview)) else piece
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._pending, samples])
        n = buf.shape[0] // self.frame_samples
        frames = [buf[i * self.frame_samples : (i + 1) * self.frame_samples] for i in range(n)]
        self._pending = buf[n * self.frame_samples :]
        return frames

    def flush(self) -> list[np.ndarray]:
        if self._pending.size == 0:
            return []
        frame = np.zeros(self.frame_samples, dtype=np.float32)
        frame[: self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return [frame]

    @property
    def pending_samples(self) -> int:
        return int(self._pending.size)
