"""Speaker embeddings: Resemblyzer's 256-d d-vector (unit norm; its GE2E weights ship inside the package),
loaded once per process. The codec conditions on it; the evaluation compares voices with it."""

from __future__ import annotations

import threading

import numpy as np

from vivavoce.audio.io import resample
from vivavoce.errors import VivavoceError

_encoder = None
_lock = threading.Lock()


def voice_encoder():
    global _encoder
    with _lock:
        if _encoder is None:
            try:
                from resemblyzer import VoiceEncoder
            except ImportError:
                raise VivavoceError("speaker embeddings need `resemblyzer` (run `make install`)") from None
            _encoder = VoiceEncoder("cpu", verbose=False)
        return _encoder


def speaker_embedding(audio: np.ndarray, rate: int = 16000) -> np.ndarray:
    """d-vector (256,) float32 of mono speech at `rate`."""
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(audio, dtype=np.float32), source_sr=rate)
    if wav.size < 1600:  # its VAD trimmed nearly everything: embed the clip as it is rather than fail
        wav = resample(np.asarray(audio, dtype=np.float32), rate, 16000)
    if wav.size < 1600:
        raise VivavoceError("voice clip is too short for a speaker embedding (need at least 0.1 s of speech)")
    return voice_encoder().embed_utterance(wav).astype(np.float32)


def speaker_similarity(a: np.ndarray, rate_a: int, b: np.ndarray, rate_b: int) -> float:
    """Cosine similarity of two clips' d-vectors."""
    ea, eb = speaker_embedding(a, rate_a), speaker_embedding(b, rate_b)
    return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))
