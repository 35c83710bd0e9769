"""Causal semantic speech tokenizer: log-mel (100 frames/s) -> causal encoder -> tokens (12.5 or 25 Hz) -> FSQ ids.

Trained with CTC on espeak-ng phonemes (the head reads only the quantised codes), so the codes carry content more
than voice. Everything is causal with explicit state: `encode(mel, state)` on consecutive pieces of a stream gives
the same codes as one call on the whole (the frame convs keep their last inputs, the attention keeps a sliding
window of keys/values, frames short of a whole token wait in `pending`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vivavoce.codec.layers import CausalConv1d, ConvNeXtBlock
from vivavoce.codec.phonemes import vocab_size

FRAME_RATE = 100.0  # log-mel frames per second (mel.HOP = 10 ms)
FRAME_RANGE = 8.0  # nats of log-mel power (35 dB) kept below each frame's peak when frame_norm is on


@dataclass
class TokenizerConfig:
    n_mels: int = 80
    token_rate: float = 12.5  # tokens/s; 100 / token_rate mel frames are pooled into one token
    conv_dim: int = 128
    conv_kernel: int = 5
    dim: int = 192
    layers: int = 3
    heads: int = 4
    window: int = 64  # attention span in tokens (5.1 s at 12.5 Hz)
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 4, 4])
    ctc_upsample: int = 4  # CTC frames per token: phonemes come faster than 12.5 Hz
    dropout: float = 0.1
    # Each frame relative to its loudest bin, floored FRAME_RANGE below it: a louder or quieter recording then gives
    # the same input (exactly, for frames whose loudest bin is FRAME_RANGE above the mel's absolute floor), so
    # codes cannot depend on level. Per frame, so it stays causal and streamable.
    frame_norm: bool = False

    @property
    def frames_per_token(self) -> int:
        n = FRAME_RATE / self.token_rate
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"token_rate {self.token_rate} must divide {FRAME_RATE} frames/s")
        return int(round(n))


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): bound each dim, round to `levels[i]` values."""

    def __init__(self, levels: list[int]):
        super().__init__()
        self.levels = list(levels)
        lv = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1]), 0)
        self.register_buffer("lv", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    @property
    def codebook_size(self) -> int:
        return int(torch.prod(torch.tensor(self.levels)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        half = (self.lv - 1) * (1 - 1e-3) / 2
        offset = torch.where(self.lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., D) -> (codes in [-1, 1] with straight-through gradient, ids (...))."""
        b = self.bound(z)
        q = b + (torch.round(b) - b).detach()
        half_width = (self.lv // 2)
        ids = ((torch.round(b) + half_width).long() * self.basis).sum(-1)
        return q / half_width, ids

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> normalised code vectors (..., D)."""
        half_width = self.lv // 2
        digits = (ids[..., None] // self.basis) % self.lv.long()
        return (digits - half_width) / half_width


@dataclass
class EncoderState:
    """Per-stream state of `Tokenizer.encode`."""

    conv1: torch.Tensor
    conv2: torch.Tensor
    pending: torch.Tensor  # (B, conv_dim, frames) short of a whole token
    tok_conv: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class Block(nn.Module):
    """Pre-norm causal Transformer block with sliding-window attention; no positional encoding: the causal
    convolutions before it give order, and a window of relative context needs no absolute positions."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.heads, self.window = heads, window
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, keys, values):
        B, n, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, n, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        k, v = torch.cat([keys, k], 2), torch.cat([values, v], 2)
        L = k.shape[2]
        qpos = torch.arange(L - n, L)[:, None]
        kpos = torch.arange(L)[None]
        mask = (kpos <= qpos) & (kpos > qpos - self.window)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, n, D)))
        x = x + self.drop(self.mlp(self.ln2(x)))
        keep = self.window - 1
        return x, k[:, :, -keep:], v[:, :, -keep:]


class Tokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig = TokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        c, d, k = cfg.conv_dim, cfg.dim, cfg.conv_kernel
        self.conv1 = CausalConv1d(cfg.n_mels, c, k)
        self.conv2 = CausalConv1d(c, c, k)
        self.pool = nn.Linear(c * cfg.frames_per_token, d)
        self.tok_conv = CausalConv1d(d, d, 3)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.window, cfg.dropout) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(d)
        self.to_fsq = nn.Linear(d, len(cfg.fsq_levels))
        self.fsq = FSQ(cfg.fsq_levels)
        # CTC head: reads the quantised codes only, with two tokens of past context, emits ctc_upsample frames each.
        self.ctc_in = nn.Linear(len(cfg.fsq_levels), d)
        self.ctc_blocks = nn.Sequential(ConvNeXtBlock(d, 3), ConvNeXtBlock(d, 3))
        self.ctc_out = nn.Linear(d, cfg.ctc_upsample * vocab_size())

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    def initial_state(self, batch: int = 1) -> EncoderState:
        c, d, k = self.cfg.conv_dim, self.cfg.dim, self.cfg.conv_kernel
        kv = torch.zeros(batch, self.cfg.heads, 0, d // self.cfg.heads)
        return EncoderState(
            conv1=torch.zeros(batch, self.cfg.n_mels, k - 1), conv2=torch.zeros(batch, c, k - 1),
            pending=torch.zeros(batch, c, 0), tok_conv=torch.zeros(batch, d, 2),
            keys=[kv] * self.cfg.layers, values=[kv] * self.cfg.layers,
        )  # fmt: skip

    @staticmethod
    def _conv(conv: CausalConv1d, x: torch.Tensor, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([buf, x], dim=-1)
        return nn.Conv1d.forward(conv, x), x[..., x.shape[-1] - buf.shape[-1] :]

    def encode(self, mel: torch.Tensor, state: EncoderState | None = None):
        """mel (B, n_mels, T) -> (z (B, n, D) pre-quantisation, codes (B, n, D), ids (B, n), new state)."""
        st = state or self.initial_state(mel.shape[0])
        if self.cfg.frame_norm:
            rel = (mel - mel.amax(dim=1, keepdim=True)).clamp_min(-FRAME_RANGE)
            x = (rel + FRAME_RANGE / 2) / (FRAME_RANGE / 2)
        else:
            x = (mel + 5.0) / 4.0  # log-mel of speech lies roughly in -11..3
        x, c1 = self._conv(self.conv1, x, st.conv1)
        x, c2 = self._conv(self.conv2, F.gelu(x), st.conv2)
        x = torch.cat([st.pending, F.gelu(x)], dim=-1)
        fpt = self.cfg.frames_per_token
        n = x.shape[-1] // fpt
        pending = x[..., n * fpt :]
        B, C = x.shape[:2]
        if n == 0:  # not a whole token yet: only the frame-level state moves on
            empty = x.new_zeros(B, 0, len(self.cfg.fsq_levels))
            return empty, empty, torch.zeros(B, 0, dtype=torch.long), EncoderState(
                c1, c2, pending, st.tok_conv, st.keys, st.values)
        x = x[..., : n * fpt].reshape(B, C, n, fpt).permute(0, 2, 3, 1).reshape(B, n, fpt * C)
        x = self.pool(x).transpose(1, 2)
        y, tc = self._conv(self.tok_conv, x, st.tok_conv)
        x = (x + F.gelu(y)).transpose(1, 2)
        keys, values = [], []
        for block, k, v in zip(self.blocks, st.keys, st.values):
            x, k, v = block(x, k, v)
            keys.append(k)
            values.append(v)
        z = self.to_fsq(self.ln(x))
        codes, ids = self.fsq(z)
        return z, codes, ids, EncoderState(c1, c2, pending, tc, keys, values)

    def ctc_logits(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n, D) -> CTC log-probabilities (B, n * ctc_upsample, vocab)."""
        x = self.ctc_blocks(self.ctc_in(codes).transpose(1, 2)).transpose(1, 2)
        B, n, _ = x.shape
        return self.ctc_out(x).view(B, n * self.cfg.ctc_upsample, -1).log_softmax(-1)

    def phone_log_probs(self, ids) -> torch.Tensor:
        """Token ids (n,) or (B, n), any int sequence -> the phone head's CTC log-probabilities (B, n * ctc_upsample,
        vocab): what the tokens themselves say (forced alignment, phone error rate, CTC loss of a tokenizer)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        return self.ctc_logits(self.fsq.codes(ids[None] if ids.dim() == 1 else ids).float())

    @torch.no_grad()
    def phone_ctc_nats(self, ids, phones: list[int]) -> float:
        """CTC loss in nats (summed) of phoneme ids `phones` given one sequence of token ids: how surely the tokens
        say those phonemes (divide by len(phones) for nats per phoneme)."""
        logp = self.phone_log_probs(ids)
        return F.ctc_loss(logp.transpose(0, 1), torch.tensor([phones]), torch.tensor([logp.shape[1]]),
                          torch.tensor([len(phones)]), reduction="sum", zero_infinity=True).item()
