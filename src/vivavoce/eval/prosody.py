"""Pitch and rate: F0 track by Praat (parselmouth), its mean and range, and speaking rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Prosody:
    f0_mean_hz: float  # over voiced frames; nan if none
    f0_range_st: float  # 5th..95th percentile, in semitones
    voiced_s: float
    speech_s: float  # first to last voiced frame
    words_per_s: float | None  # given the words said

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in self.__dict__.items()}


def f0_track(audio: np.ndarray, rate: int, floor: float = 60.0,
             ceiling: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, F0 in Hz with 0 where unvoiced), 10 ms hop. The ceiling is high because the corpus's child and
    soprano voices reach 700 Hz when surprised: at 500 Praat halved those frames (an octave error)."""
    import parselmouth

    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    pitch = sound.to_pitch(time_step=0.01, pitch_floor=floor, pitch_ceiling=ceiling)
    return pitch.xs(), pitch.selected_array["frequency"]


def prosody(audio: np.ndarray, rate: int, words: int | None = None) -> Prosody:
    times, f0 = f0_track(audio, rate)
    voiced = f0 > 0
    if not voiced.any():
        return Prosody(float("nan"), float("nan"), 0.0, 0.0, None)
    hz = f0[voiced]
    lo, hi = np.percentile(hz, [5, 95])
    span = float(times[voiced][-1] - times[voiced][0]) + 0.01
    return Prosody(
        f0_mean_hz=float(hz.mean()),
        f0_range_st=float(12 * np.log2(hi / lo)),
        voiced_s=float(voiced.sum() * 0.01),
        speech_s=span,
        words_per_s=(words / span) if words else None,
    )
