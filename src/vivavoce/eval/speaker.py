"""Speaker similarity: cosine of Resemblyzer d-vectors (its GE2E weights ship inside the package)."""

from __future__ import annotations

import threading

import numpy as np

_encoder = None
_lock = threading.Lock()


def _voice_encoder():
    global _encoder
    with _lock:
        if _encoder is None:
            from resemblyzer import VoiceEncoder

            _encoder = VoiceEncoder(device="cpu", verbose=False)
    return _encoder


def speaker_embedding(audio: np.ndarray, rate: int) -> np.ndarray:
    """256-d unit-norm d-vector of an utterance."""
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(audio, dtype=np.float32), source_sr=rate)
    if wav.size == 0:  # all trimmed as silence: embed the raw clip rather than fail
        wav = np.asarray(audio, dtype=np.float32)
    return _voice_encoder().embed_utterance(wav)


def speaker_similarity(a: np.ndarray, rate_a: int, b: np.ndarray, rate_b: int) -> float:
    ea, eb = speaker_embedding(a, rate_a), speaker_embedding(b, rate_b)
    return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))
