"""The one log-mel front end of vivavoce: 16 kHz, 80 bins, 10 ms hop, causal framing.

Frame t covers the `n_fft` samples that end at sample (t + 1) * hop (zeros before the start), so N samples give
exactly N // hop frames and a stream can be framed chunk by chunk: `MelStream` keeps the last n_fft - hop samples.
The vocoder's iSTFT uses the same framing, mirrored (`istft_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
HOP = 160  # 10 ms: 100 frames/s; one 25 Hz token = 4 frames = 640 samples (12.5 Hz: 8 frames)
N_FFT = 640
N_MELS = 80
LOG_FLOOR = 1e-5


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop: int = HOP
    n_mels: int = N_MELS
    fmin: float = 0.0
    fmax: float = 8000.0


def mel_filterbank(cfg: MelConfig = MelConfig()) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters on the HTK mel scale, area-normalised (Slaney style)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (upper - lower))
    return fb.T.astype(np.float32)


class LogMel(torch.nn.Module):
    """audio (B, N) float in [-1, 1] -> log-mel (B, n_mels, N // hop)."""

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)
        self.register_buffer("basis", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def forward(self, audio: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """`history`: the n_fft - hop samples before `audio` (zeros at the start of a stream)."""
        cfg = self.cfg
        if audio.dim() == 1:
            audio = audio[None]
        if history is None:
            history = audio.new_zeros(audio.shape[0], cfg.n_fft - cfg.hop)
        n = audio.shape[-1] // cfg.hop * cfg.hop
        if n == 0:
            return audio.new_zeros(audio.shape[0], cfg.n_mels, 0)
        x = torch.cat([history, audio[..., :n]], dim=-1)
        frames = x.unfold(-1, cfg.n_fft, cfg.hop) * self.window  # (B, T, n_fft)
        power = torch.fft.rfft(frames, dim=-1).abs().pow(2)
        mel = power @ self.basis
        return torch.log(mel.clamp_min(LOG_FLOOR)).transpose(1, 2)


_DEFAULT: LogMel | None = None


def log_mel(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whole-clip log-mel of 16 kHz mono audio -> (n_mels, frames)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LogMel()
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    with torch.no_grad():
        return _DEFAULT(x[None])[0]


class MelStream:
    """Per-stream framing state: feed any number of samples, get the frames they complete."""

    def __init__(self, mel: LogMel):
        self.mel = mel
        self.history = torch.zeros(1, mel.cfg.n_fft - mel.cfg.hop)
        self.pending = torch.zeros(1, 0)

    def push(self, audio: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.pending, audio.reshape(1, -1)], dim=-1)
        hop = self.mel.cfg.hop
        n = x.shape[-1] // hop * hop
        out = self.mel(x[:, :n], self.history)
        keep = self.mel.cfg.n_fft - hop
        self.history = torch.cat([self.history, x[:, :n]], dim=-1)[:, -keep:]
        self.pending = x[:, n:]
        return out[0]


def istft_frames(spec: torch.Tensor, window: torch.Tensor, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex spectra (B, F, T) -> (overlap-added samples (B, (T - 1) * hop + n_fft), window-square envelope).

    Frame t's samples land at [t * hop, t * hop + n_fft); with the causal analysis framing they belong to output
    positions shifted left by n_fft - hop, which callers drop (see vocoder.Vocoder.synthesise).
    """
    n_fft = window.shape[0]
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # (B, n_fft, T)
    T = spec.shape[-1]
    out_len = (T - 1) * hop + n_fft
    fold = torch.nn.functional.fold
    audio = fold(frames, (1, out_len), (1, n_fft), stride=(1, hop))[:, 0, 0]
    env = fold(window.pow(2)[None, :, None].expand(1, n_fft, T), (1, out_len), (1, n_fft), stride=(1, hop))[:, 0, 0]
    return audio, env
