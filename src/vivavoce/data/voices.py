"""The voice registry: the assistant's one voice (Piper joe) and the users' voices, each assigned to one split.

User voices come from three engines: espeak-ng (English accents and variants, pitch and rate), Piper joe with
other length/noise scales, and new timbres made from Piper joe by WORLD pitch and formant shifting. Voices whose
split is "test" are held out: no train or dev utterance uses them.
"""

from __future__ import annotations

import fcntl
import html
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from vivavoce.data import world
from vivavoce.data.styles import Style
from vivavoce.errors import VivavoceError
from vivavoce.speechtools.tts import EspeakSettings, PiperSettings, PiperTTS

ASSISTANT = "assistant-joe"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # "piper" | "espeak" | "world" (Piper joe, re-timbred with WORLD)
    split: str  # "train" | "dev" | "test" ("all" for the assistant)
    espeak: EspeakSettings | None = None
    piper: PiperSettings = field(default_factory=PiperSettings)
    timbre: world.WorldEdit = field(default_factory=world.WorldEdit)  # WORLD voices: F0 scale and formant warp
    phoneme_voice: str = "en-us"  # espeak-ng voice for the phoneme labels

    @property
    def held_out(self) -> bool:
        return self.split == "test"


def _es(name, voice, split, rate=165, pitch=50, ph="en-us"):
    return Voice(name, "espeak", split, espeak=EspeakSettings(voice, rate, pitch), phoneme_voice=ph)


def _pp(name, split, length, noise, noise_w):
    return Voice(name, "piper", split, piper=PiperSettings(length, noise, noise_w))


def _ww(name, split, f0, formant, length=1.0):
    return Voice(name, "world", split, piper=PiperSettings(length_scale=length),
                 timbre=world.WorldEdit(f0_scale=f0, formant=formant))  # fmt: skip


VOICES: tuple[Voice, ...] = (
    Voice(ASSISTANT, "piper", "all"),
    # espeak-ng: accents x variants (male/female/whisper-free), pitch and rate
    _es("es-us-m1", "en-us+m1", "train", 160, 45), _es("es-us-f2", "en-us+f2", "train", 170, 60),
    _es("es-gb-m3", "en-gb+m3", "train", 155, 40, "en-gb"), _es("es-gb-f3", "en-gb+f3", "train", 165, 55, "en-gb"),
    _es("es-sc-m2", "en-gb-scotland+m2", "train", 160, 50, "en-gb-scotland"),
    _es("es-029-f1", "en-029+f1", "train", 150, 55, "en-029"),
    _es("es-rp-m4", "en-gb-x-rp+m4", "train", 175, 45, "en-gb-x-rp"),
    _es("es-us-f4", "en-us+f4", "train", 180, 65),
    _es("es-lanc-m5", "en-gb-x-gbclan+m5", "dev", 165, 48, "en-gb-x-gbclan"),
    _es("es-nyc-f5", "en-us-nyc+f5", "test", 170, 58, "en-us-nyc"),
    _es("es-wm-m6", "en-gb-x-gbcwmd+m6", "test", 150, 42, "en-gb-x-gbcwmd"),
    # Piper joe with other length/noise scales: same timbre, different rhythm and variability
    _pp("piper-slow", "train", 1.15, 0.6, 0.7), _pp("piper-fast", "train", 0.88, 0.7, 0.9),
    _pp("piper-lively", "train", 1.0, 0.9, 1.0), _pp("piper-flat", "dev", 1.05, 0.4, 0.5),
    _pp("piper-brisk", "test", 0.92, 0.8, 0.6),
    # WORLD re-timbred joe: F0 and formant scale together, as between speakers
    _ww("world-high1", "train", 1.55, 1.12), _ww("world-high2", "train", 1.75, 1.16, 1.05),
    _ww("world-deep1", "train", 0.8, 0.93), _ww("world-deep2", "train", 0.7, 0.9, 1.08),
    _ww("world-mid1", "train", 1.2, 1.05, 0.95), _ww("world-child", "train", 2.0, 1.25, 1.1),
    _ww("world-alto", "dev", 1.4, 1.1), _ww("world-bass", "test", 0.75, 0.88, 1.05),
    _ww("world-soprano", "test", 1.9, 1.2),
)
VOICE_BY_NAME = {v.name: v for v in VOICES}


def user_voices(split: str) -> list[Voice]:
    return [v for v in VOICES if v.split == split]


def get_voice(name: str) -> Voice:
    try:
        return VOICE_BY_NAME[name]
    except KeyError:
        raise VivavoceError(f"unknown voice {name!r}") from None


class Renderer:
    """Speaks text in a voice and style. Holds Piper processes, so keep one per worker process."""

    def __init__(self):
        self._piper: PiperTTS | None = None
        self._lock = threading.Lock()

    @property
    def piper(self) -> PiperTTS:
        with self._lock:
            if self._piper is None:
                self._piper = PiperTTS()
            return self._piper

    def render(self, voice: Voice, text: str, style: Style, vocode: bool = False,
               shared_base: Path | None = None) -> tuple[np.ndarray, int, bool]:  # fmt: skip
        """(mono float32 audio at the engine's native rate, 22.05 kHz for both engines, whether it went through
        WORLD). Loudness-normalised, so that the style's gain is what is heard (engines differ by 10 dB or more).

        Piper audio is resynthesised by WORLD whenever its style or voice needs it, or `vocode` asks: a set of
        one sentence in every emotion is then all vocoded alike, so vocoder artefacts cannot give the label away.
        espeak-ng does every emotion itself (rate, SSML pitch and range) and is never vocoded.

        `shared_base`: a file that keeps the Piper rendering for the other members of the set. Piper samples its
        rhythm and intonation afresh on every call, by ±7 % in median F0 between calls; from one base, the members
        differ by their style alone. The base is Piper without its sampling noise (`steady`), so a sentence's set is
        the same in every build instead of resting on one random take."""
        p = style.prosody()
        if voice.engine == "espeak":
            audio, sr = espeak_styled(text, voice.espeak, style)
            return level(audio, p.gain_db), sr, False
        audio, sr = self._piper_base(text, voice.piper, shared_base)
        edit = style.world_edit()
        if voice.engine == "world":
            t = voice.timbre
            edit = world.WorldEdit(edit.f0_scale * t.f0_scale, edit.f0_range, t.formant, edit.speed, edit.gain_db)
        vocoded = vocode or not world.WorldEdit(edit.f0_scale, edit.f0_range, edit.formant, edit.speed).is_identity()
        if vocoded:
            audio = world.resynthesize(audio, sr, edit)
        return level(audio, p.gain_db), sr, vocoded

    def _piper_base(self, text: str, settings: PiperSettings, path: Path | None) -> tuple[np.ndarray, int]:
        if path is None:
            return self.piper.synthesize(text, settings)
        from vivavoce.audio.io import write_audio

        settings = settings.steady()  # the set's one take: the same in every build, not a random draw
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:  # the first member renders, the others wait and read
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                write_audio(path, *self.piper.synthesize(text, settings))
            audio, sr = sf.read(str(path), dtype="float32")
        return audio, sr

    def close(self) -> None:
        if self._piper is not None:
            self._piper.close()


def espeak_styled(text: str, settings: EspeakSettings, style: Style) -> tuple[np.ndarray, int]:
    """espeak-ng in a separate process, the style as its own rate and SSML prosody (pitch and range in %)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VivavoceError("espeak-ng is not installed (apt-get install espeak-ng)")
    p = style.prosody()
    rate = int(round(settings.rate * p.speed))
    pitch = (2 ** (p.semitones / 12) - 1) * 100
    # espeak's range is relative to its own (narrow) one; stretch it twice as much so that it is heard.
    spread = (p.f0_range**2 - 1) * 100
    # espeak-ng 1.51 speaks about 12 % slower inside any <prosody> that changes something, so a neutral utterance
    # (pitch and range +0) came out faster than its emotional set-mates: angry then was no faster than neutral.
    # The +1 % volume keeps every style inside an effective <prosody>; `level` undoes the volume.
    ssml = (f'<speak><prosody volume="+1%" pitch="{pitch:+.0f}%" range="{spread:+.0f}%">{html.escape(text)}'
            "</prosody></speak>")
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = [exe, "-m", "-v", settings.voice, "-s", str(rate), "-p", str(settings.pitch), "-w", tmp.name, "--", ssml]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise VivavoceError(f"espeak-ng failed: {run.stderr.strip()[-200:] or run.returncode}")
        audio, sr = sf.read(tmp.name, dtype="float32")
    return audio, sr


REFERENCE_RMS_DB = -24.0  # neutral speech level; +6 dB of emotion headroom before the peak limit


def level(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale to REFERENCE_RMS_DB + gain_db (RMS over the louder half of 20 ms frames, so pauses do not count),
    lowered if needed to keep the peak under 0.99."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio
    hop = 441
    frames = audio[: audio.size // hop * hop].reshape(-1, hop) if audio.size >= hop else audio[None]
    energy = np.sort((frames.astype(np.float64) ** 2).mean(axis=1))
    rms = float(np.sqrt(energy[len(energy) // 2 :].mean()))
    if rms <= 1e-7:
        return audio
    y = audio * np.float32(10 ** ((REFERENCE_RMS_DB + gain_db) / 20) / rms)
    peak = float(np.max(np.abs(y)))
    return y * np.float32(0.99 / peak) if peak > 0.99 else y
