"""Perceived quality without a reference: DNSMOS P.835 (SIG/BAK/OVRL) and P.808, from `speechmos`'s ONNX models."""

from __future__ import annotations

import numpy as np

from vivavoce.audio.io import resample

DNSMOS_RATE = 16000


def dnsmos(audio: np.ndarray, rate: int) -> dict[str, float]:
    from speechmos import dnsmos as _dnsmos

    audio = np.clip(resample(np.asarray(audio, dtype=np.float32), rate, DNSMOS_RATE), -1.0, 1.0)
    scores = _dnsmos.run(audio, sr=DNSMOS_RATE)
    return {
        "sig": float(scores["sig_mos"]),
        "bak": float(scores["bak_mos"]),
        "ovrl": float(scores["ovrl_mos"]),
        "p808": float(scores["p808_mos"]),
    }
