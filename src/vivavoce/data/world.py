"""Prosody and timbre edits with the WORLD vocoder: F0 mean and range, formant shift, time stretch, gain.

One analysis (Harvest F0, CheapTrick envelope, D4C aperiodicity) and one resynthesis per utterance: ~0.14x real
time on one core (DIO was ~0.05x), so WORLD voices cost a little more than their Piper source.

Harvest, not DIO: on Piper joe, whose harmonics sit ~100 Hz apart, DIO + StoneMask put F0 at 140-170 Hz in many
frames, and the resynthesis then mixed that pitch with the envelope's ripple at the true one (inharmonic peaks,
and Praat's median F0 of a styled take off its target by up to an octave; an emotion set's sad member measured
above its neutral one). From Harvest's F0 the vocoded audio keeps the source's harmonics.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
from dataclasses import dataclass

import numpy as np

FRAME_MS = 5.0
F0_FLOOR, F0_CEIL = 60.0, 500.0  # the sources: Piper joe (male) and espeak-ng voices


def _pyworld():
    # pyworld 0.3.x reads its version through pkg_resources, which new setuptools no longer ships.
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        sys.modules["pkg_resources"] = shim
    import pyworld

    return pyworld


@dataclass(frozen=True)
class WorldEdit:
    f0_scale: float = 1.0  # median F0 multiplier (2 ** (semitones / 12))
    f0_range: float = 1.0  # spread of log F0 around its median: >1 livelier, <1 flatter
    formant: float = 1.0  # spectral envelope warp: >1 moves formants up (a smaller vocal tract)
    speed: float = 1.0  # >1 faster
    gain_db: float = 0.0

    def is_identity(self) -> bool:
        return self == WorldEdit()


def f0_track(audio: np.ndarray, rate: int) -> np.ndarray:
    """F0 in Hz per 5 ms frame, 0 where unvoiced."""
    pw = _pyworld()
    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pw.dio(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    return pw.stonemask(x, f0, t, rate)


def _warp_envelope(sp: np.ndarray, alpha: float) -> np.ndarray:
    """Resample each frame's envelope along frequency: bin k takes the value at k / alpha."""
    bins = np.arange(sp.shape[1], dtype=np.float64)
    src = np.clip(bins / alpha, 0, sp.shape[1] - 1)
    return np.stack([np.interp(src, bins, frame) for frame in sp]).astype(np.float64)


def resynthesize(audio: np.ndarray, rate: int, edit: WorldEdit = WorldEdit()) -> np.ndarray:
    """`audio` analysed and resynthesised by WORLD with `edit` (the identity edit still vocodes)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < rate // 20:
        return audio.copy()
    pw = _pyworld()
    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pw.harvest(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    sp = pw.cheaptrick(x, f0, t, rate)
    ap = pw.d4c(x, f0, t, rate)
    voiced = f0 > 0
    if voiced.any():
        logf = np.log(f0[voiced])
        centre = float(np.median(logf))  # the range edit leaves the median where f0_scale puts it
        f0 = f0.copy()
        f0[voiced] = np.exp(centre + (logf - centre) * edit.f0_range) * edit.f0_scale
    if edit.formant != 1.0:
        sp = _warp_envelope(sp, edit.formant)
    # Synthesising the same frames at a shorter frame period plays them faster, pitch untouched.
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), rate,
                      FRAME_MS / edit.speed)  # fmt: skip
    return y.astype(np.float32) * np.float32(10 ** (edit.gain_db / 20))
