"""Small building blocks shared by the tokenizer, decoder and vocoder.

Every convolution here has an explicit look-ahead `r` (frames it may see to the right; the rest of its kernel sees
the past), so each module's receptive field is known exactly and streaming can be checked against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Conv1d):
    """Conv1d padded k-1-r on the left and r on the right: output t sees inputs t-(k-1-r) .. t+r."""

    def __init__(self, cin: int, cout: int, kernel: int, lookahead: int = 0, groups: int = 1):
        assert 0 <= lookahead < kernel
        super().__init__(cin, cout, kernel, groups=groups)
        self.left, self.right = kernel - 1 - lookahead, lookahead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, self.right)))


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """Vocos/ConvNeXt block: depthwise conv -> LayerNorm -> pointwise MLP, residual, layer-scaled."""

    def __init__(self, dim: int, kernel: int = 7, lookahead: int = 0, mult: int = 3):
        super().__init__()
        self.dw = CausalConv1d(dim, dim, kernel, lookahead, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, dim * mult)
        self.pw2 = nn.Linear(dim * mult, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).transpose(1, 2)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.scale * y).transpose(1, 2)


def receptive_field(modules) -> tuple[int, int]:
    """(past, future) frames seen by a stack of CausalConv1d / ConvNeXtBlock applied in sequence."""
    left = right = 0
    for m in modules:
        for conv in m.modules():
            if isinstance(conv, CausalConv1d):
                left, right = left + conv.left, right + conv.right
    return left, right


def lookaheads(total: int, layers: int) -> list[int]:
    """Spread `total` frames of look-ahead over `layers` convs, earliest first."""
    base, extra = divmod(total, layers)
    return [base + (1 if i < extra else 0) for i in range(layers)]
