"""Turn-taking pieces of a live session, each with explicit state: a per-session VAD, the end-of-turn detector,
and the echo guard. The session (`vivavoce.engine.session`) wires them together.

Rules, all in one place so they can be documented and tested:
- end of turn: speech (Silero probability >= threshold) followed by `silence_ms` of non-speech;
- speech shorter than `min_speech_ms` is noise, never a turn;
- echo guard: while our answer is playing, an input window that correlates (normalised cross-correlation
  >= `echo_correlation`) with the audio we played in the last `echo_delay_ms`, and is not louder than that audio
  by more than `echo_louder_db`, is our own echo: its VAD probability counts as 0.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

from vivavoce.audio.vad import VAD_RATE


@dataclass
class TurnConfig:
    threshold: float = 0.5  # Silero speech probability
    silence_ms: int = 500  # this much non-speech after speech ends the turn
    prefix_padding_ms: int = 300  # audio kept from before the detected start of speech
    min_speech_ms: int = 150  # shorter speech is noise
    max_turn_s: float = 30.0  # a turn this long is ended by force
    # Start computing the answer after this much silence, out of sight until silence_ms confirms the turn (0: off).
    speculative_ms: int = 0
    # User speech during an answer shorter than this is a backchannel ("mm-hm"): it does not cancel the answer.
    backchannel_max_ms: int = 600
    echo_guard: bool = True
    echo_correlation: float = 0.5
    echo_louder_db: float = 6.0
    echo_delay_ms: int = 600  # longest playback -> microphone delay the guard looks back over


class SessionVAD:
    """Silero VAD with state of its own: the process-wide model in `audio.vad` has one state, sessions need many."""

    FRAME = 512

    def __init__(self):
        from silero_vad import load_silero_vad

        try:
            import onnxruntime  # noqa: F401  (the ONNX build is ~2x faster per frame than the TorchScript one)

            self.model = load_silero_vad(onnx=True)
        except ImportError:
            self.model = load_silero_vad()
        self.model.reset_states()

    def __call__(self, frame: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            return float(self.model(torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)), VAD_RATE))

    def reset(self) -> None:
        self.model.reset_states()


class PlaybackClock:
    """Where the client is in playing our answer, assuming it plays each chunk as soon as it has it, in real time.

    Keeps the last few seconds of what we sent (at 16 kHz) with the wall time each piece starts playing, so the
    echo guard can look up what the microphone may be hearing now.
    """

    def __init__(self, keep_s: float = 4.0):
        self.keep_s = keep_s
        self.end = 0.0  # wall time the audio sent so far finishes playing
        self._pieces: collections.deque[tuple[float, np.ndarray]] = collections.deque()

    def add(self, samples16k: np.ndarray, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        start = max(now, self.end)
        self._pieces.append((start, samples16k))
        self.end = start + samples16k.size / VAD_RATE
        while self._pieces and self._pieces[0][0] + self._pieces[0][1].size / VAD_RATE < now - self.keep_s:
            self._pieces.popleft()

    def playing(self, now: float | None = None, tail_s: float = 0.3) -> bool:
        """True while sent audio is still playing (plus a short tail for the echo to die away)."""
        return (time.monotonic() if now is None else now) < self.end + tail_s

    def stop(self) -> None:
        """The client was told to stop: nothing more is playing."""
        self.end = 0.0
        self._pieces.clear()

    def window(self, start: float, end: float) -> np.ndarray:
        """What was playing between wall times `start` and `end`, at 16 kHz (zeros where nothing was)."""
        out = np.zeros(max(0, int((end - start) * VAD_RATE)), dtype=np.float32)
        for t0, samples in self._pieces:
            a = int(round((t0 - start) * VAD_RATE))
            lo, hi = max(0, a), min(out.size, a + samples.size)
            if hi > lo:
                out[lo:hi] = samples[lo - a : hi - a]
        return out


def is_echo(mic: np.ndarray, reference: np.ndarray, config: TurnConfig) -> bool:
    """True if `mic` looks like a (delayed, scaled) copy of some part of `reference`, and is not much louder."""
    n = mic.size
    if n == 0 or reference.size < n:
        return False
    mic = mic - mic.mean()
    mic_energy = float(np.dot(mic, mic))
    if mic_energy < 1e-8:
        return False
    size = 1 << int(np.ceil(np.log2(reference.size + n)))
    num = np.fft.irfft(np.fft.rfft(reference, size) * np.conj(np.fft.rfft(mic, size)), size)[: reference.size - n + 1]
    sq = np.concatenate([[0.0], np.cumsum(reference.astype(np.float64) ** 2)])
    ref_energy = sq[n:] - sq[:-n]
    ncc = num / np.sqrt(mic_energy * np.maximum(ref_energy, 1e-8))
    ncc[ref_energy < 1e-6 * n] = 0.0  # silence in the reference matches nothing
    best = int(np.argmax(ncc))
    if ncc[best] < config.echo_correlation:
        return False
    louder = 10 * np.log10(mic_energy / max(ref_energy[best], 1e-12))
    return louder <= config.echo_louder_db
