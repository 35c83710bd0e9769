"""Voice activity with Silero VAD (its weights ship inside the `silero-vad` package)."""

from __future__ import annotations

import threading

import numpy as np
import torch

VAD_RATE = 16000
_model = None
_lock = threading.Lock()


def load_vad():
    """The Silero VAD model, loaded once per process."""
    global _model
    with _lock:
        if _model is None:
            threads = torch.get_num_threads()
            from silero_vad import load_silero_vad

            _model = load_silero_vad(onnx=True)  # onnxruntime: no torch.jit, and fast per frame
            torch.set_num_threads(threads)  # importing silero_vad drops the process to 1 thread
    return _model


def speech_spans(audio: np.ndarray, threshold: float = 0.5, min_silence_ms: int = 100) -> list[tuple[int, int]]:
    """(start, end) sample indices of speech in mono float32 audio at 16 kHz."""
    from silero_vad import get_speech_timestamps

    model = load_vad()
    with _lock, torch.inference_mode():
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), model,
            sampling_rate=VAD_RATE, threshold=threshold, min_silence_duration_ms=min_silence_ms,
        )  # fmt: skip
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def trim_to_speech(audio: np.ndarray, pad_s: float = 0.15) -> np.ndarray:
    """Audio cut to its first..last speech, with a little padding; empty if there is no speech."""
    spans = speech_spans(audio)
    if not spans:
        return audio[:0]
    pad = int(pad_s * VAD_RATE)
    return audio[max(0, spans[0][0] - pad) : min(audio.shape[0], spans[-1][1] + pad)]


class StreamingVAD:
    """Speech probability per 32 ms frame (512 samples at 16 kHz), carrying the model's state across calls."""

    FRAME = 512

    def __init__(self):
        self.model = load_vad()
        self.model.reset_states()

    def reset(self) -> None:
        self.model.reset_states()

    def __call__(self, frame: np.ndarray) -> float:
        with torch.inference_mode():
            return float(self.model(torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)), VAD_RATE))
