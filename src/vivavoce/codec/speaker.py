"""Speaker embedding of a reference clip: Resemblyzer's 256-d d-vector (unit norm), loaded once per process."""

from __future__ import annotations

import threading

import numpy as np

from vivavoce.errors import VivavoceError

_ENCODER = None
_LOCK = threading.Lock()


def voice_encoder():
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            try:
                from resemblyzer import VoiceEncoder
            except ImportError:
                raise VivavoceError("speaker embeddings need `resemblyzer` (run `make install`)") from None
            _ENCODER = VoiceEncoder("cpu", verbose=False)
        return _ENCODER


def speaker_embedding(audio16k: np.ndarray) -> np.ndarray:
    """d-vector (256,) float32 of 16 kHz mono speech."""
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(audio16k, dtype=np.float32), source_sr=16000)
    if wav.size < 1600:  # VAD trimmed nearly everything: embed the clip as it is
        wav = np.asarray(audio16k, dtype=np.float32)
    if wav.size < 1600:
        raise VivavoceError("reference voice clip is too short (need at least 0.1 s of speech)")
    return voice_encoder().embed_utterance(wav).astype(np.float32)
