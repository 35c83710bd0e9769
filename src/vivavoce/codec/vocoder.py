"""Vocos-style neural vocoder: log-mel (100 frames/s) -> ConvNeXt backbone -> STFT magnitude and phase -> iSTFT.

The output rate is a config value: `lite-16k` (hop 160 at 16 kHz) and `hq-48k` (hop 480 at 48 kHz, a bigger
backbone) read the same 16 kHz mel, so hq-48k can only invent what lies above 8 kHz. The iSTFT uses the causal
framing of `mel.py`: frame t ends at sample (t + 1) * hop, so a sample is final once the next
n_fft / hop - 1 frames are in (`VocoderStream` keeps that overlap-add tail).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vivavoce.codec.layers import CausalConv1d, ChannelNorm, ConvNeXtBlock, lookaheads, receptive_field
from vivavoce.codec.mel import istft_frames


@dataclass
class VocoderConfig:
    profile: str = "lite-16k"
    sample_rate: int = 16000
    hop: int = 160  # samples per mel frame at sample_rate (10 ms)
    n_fft: int = 640
    n_mels: int = 80
    dim: int = 128
    layers: int = 4
    kernel: int = 7
    lookahead: int = 2  # frames, in all
    mult: int = 3


PROFILES = {
    "lite-16k": VocoderConfig(),
    # the lite backbone widened to 6 layers (so it can start from a trained lite-16k) and a 3x wider iSTFT head
    "hq-48k": VocoderConfig(profile="hq-48k", sample_rate=48000, hop=480, n_fft=1920, dim=128, layers=6, lookahead=2),
}


class Vocoder(nn.Module):
    def __init__(self, cfg: VocoderConfig = VocoderConfig()):
        super().__init__()
        self.cfg = cfg
        la = lookaheads(cfg.lookahead, cfg.layers + 1)
        self.embed = CausalConv1d(cfg.n_mels, cfg.dim, cfg.kernel, la[0])
        self.norm_in = ChannelNorm(cfg.dim)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(cfg.dim, cfg.kernel, r, cfg.mult) for r in la[1:]))
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.n_fft + 2)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    @property
    def rf(self) -> tuple[int, int]:
        return receptive_field([self.embed, self.blocks])

    @property
    def tail_frames(self) -> int:
        """Frames after frame t whose windows still overlap its last hop of samples."""
        return self.cfg.n_fft // self.cfg.hop - 1

    def spectra(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T) -> complex STFT frames (B, n_fft // 2 + 1, T)."""
        x = self.blocks(self.norm_in(self.embed((mel + 5.0) / 4.0)))
        x = self.head(self.norm_out(x.transpose(1, 2))).transpose(1, 2).float()
        logmag, phase = x.chunk(2, dim=1)
        mag = torch.exp(logmag.clamp(max=6.0))
        return torch.polar(mag, phase)

    def overlap_add(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectra -> (summed windowed frames, window-square envelope), frame 0's first sample at index 0."""
        return istft_frames(spec, self.window, self.cfg.hop)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T) -> audio (B, T * hop)."""
        audio, env = self.overlap_add(self.spectra(mel))
        lead = self.cfg.n_fft - self.cfg.hop  # samples before time 0 in the causal framing
        return (audio / env.clamp_min(1e-3))[:, lead:]
