"""Token -> mel decoder: code ids + speaker d-vector + control vector -> 80-bin log-mel at 100 frames/s.

Two stages, each a stack of ConvNeXt blocks with a bounded receptive field (so streaming can decode a window and
get what offline decoding gets): a token-rate stage, then a length regulator that repeats each token's latent
for frames_per_token / speed frames (speed changes how many frames a token lasts, never the spectrum's pitch),
then a frame-rate stage. Frame j always takes token floor(j * speed / frames_per_token), whatever the length, so
chunks of a stream line up with the whole.

Control vector: [speed, pitch shift in semitones, energy shift in dB] relative to the reference clip's voice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from vivavoce.codec.layers import ConvNeXtBlock, lookaheads, receptive_field
from vivavoce.codec.tokenizer import FSQ

SPEAKER_DIM = 256  # Resemblyzer d-vector


@dataclass
class DecoderConfig:
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 4, 4])  # must match the tokenizer's
    frames_per_token: int = 8
    n_mels: int = 80
    dim: int = 192
    token_layers: int = 4
    token_kernel: int = 5
    token_lookahead: int = 1  # tokens, in all
    frame_layers: int = 4
    frame_kernel: int = 7
    frame_lookahead: int = 4  # frames, in all


def control_vector(speed: float = 1.0, pitch: float = 0.0, energy: float = 0.0) -> torch.Tensor:
    """The decoder's control input, scaled to about unit range."""
    return torch.tensor([math.log(speed), pitch / 12.0, energy / 20.0], dtype=torch.float32)


def frame_token_index(start: int, stop: int, speed: float, frames_per_token: int) -> torch.Tensor:
    """Token feeding each output frame in [start, stop), and the frame's phase inside that token (0..1)."""
    pos = torch.arange(start, stop, dtype=torch.float64) * speed / frames_per_token
    idx = torch.floor(pos + 1e-9)
    return idx.long(), (pos - idx).float()


def num_frames(tokens: int, speed: float, frames_per_token: int) -> int:
    return math.ceil(tokens * frames_per_token / speed - 1e-9)


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.fsq = FSQ(cfg.fsq_levels)
        self.embed = nn.Sequential(nn.Linear(len(cfg.fsq_levels), d), nn.GELU(), nn.Linear(d, d))
        self.cond_tok = nn.Linear(SPEAKER_DIM + 3, d)
        self.cond_frame = nn.Linear(SPEAKER_DIM + 3, d)
        tl = lookaheads(cfg.token_lookahead, cfg.token_layers)
        self.token_net = nn.Sequential(*(ConvNeXtBlock(d, cfg.token_kernel, r) for r in tl))
        self.phase = nn.Linear(3, d)
        fl = lookaheads(cfg.frame_lookahead, cfg.frame_layers)
        self.frame_net = nn.Sequential(*(ConvNeXtBlock(d, cfg.frame_kernel, r) for r in fl))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.n_mels)

    @property
    def token_rf(self) -> tuple[int, int]:
        return receptive_field(self.token_net)

    @property
    def frame_rf(self) -> tuple[int, int]:
        return receptive_field(self.frame_net)

    def token_latents(self, ids: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ids (B, n), cond (B, 259) -> (B, dim, n)."""
        x = self.embed(self.fsq.codes(ids)) + self.cond_tok(cond)[:, None]
        return self.token_net(x.transpose(1, 2))

    def frames(self, latents: torch.Tensor, token_offset: int, start: int, stop: int, speed: float,
               cond: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Mel frames [start, stop) from token latents that begin at token `token_offset` -> (B, n_mels, frames)."""
        idx, phase = frame_token_index(start, stop, speed, self.cfg.frames_per_token)
        idx = (idx - token_offset).clamp(0, latents.shape[-1] - 1)
        x = latents[..., idx]
        ph = torch.stack([torch.sin(2 * math.pi * phase), torch.cos(2 * math.pi * phase), phase], -1)
        x = x + (self.phase(ph)[None] + self.cond_frame(cond)[:, None]).transpose(1, 2)
        x = self.frame_net(x)
        return self.out(self.norm(x.transpose(1, 2))).transpose(1, 2)

    def forward(self, ids: torch.Tensor, speaker: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """Whole-utterance decode: ids (B, n), speaker (B, 256), control (B, 3) -> mel (B, n_mels, frames).

        Speed is taken from control[:, 0] and must be the same across the batch (it sets the length).
        """
        speed = float(torch.exp(control[0, 0]))
        cond = torch.cat([speaker, control], -1)
        lat = self.token_latents(ids, cond)
        return self.frames(lat, 0, 0, num_frames(ids.shape[1], speed, self.cfg.frames_per_token), speed, cond)
