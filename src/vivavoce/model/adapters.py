"""Speech-gated low-rank adapters on the frozen shared layers.

With the shared layers frozen (stage 1) the speech embedding alone must make a spoken question look, to layers
tuned on text, like the written one; measured, it teaches the reply's style but hardly the question's content
(docs/speechlm-training.md, rounds 5-10). MOSS-Speech trains its shared layers on speech instead. Here every
projection of every shared layer (q, k, v, o, gate, up, down) gets a low-rank update B·A·x that is applied only at
positions holding a speech token:

    y = W·x                     at text-only positions (the backbone's own computation, bit for bit)
    y = W·x + B·(A·x)           at positions with a speech token

so text-only conversations run the backbone exactly, while the text after a spoken turn reads keys and values
that the adapters have re-mapped. B starts at zero: a model with adapters begins as the model without them.
Rank 16 on SmolLM2-135M's 26 shared layers is 4.2 M weights (8.5 MB in bf16), against 105 M for the layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


class SpeechGate:
    """Which positions of the running forward hold a speech token: (B, T, 1) bool, or None (no speech at all,
    every adapter is skipped). The model sets it around its shared layers; a plain object, not a module."""

    def __init__(self):
        self.mask: torch.Tensor | None = None


class LowRank(nn.Module):
    """x → B·(A·x), A (rank, in) random, B (out, rank) zero."""

    def __init__(self, d_in: int, d_out: int, rank: int, dtype: torch.dtype, generator: torch.Generator):
        super().__init__()
        self.down = nn.Parameter((torch.randn(rank, d_in, generator=generator) * d_in**-0.5).to(dtype))
        self.up = nn.Parameter(torch.zeros(d_out, rank, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up)


class LayerAdapter(nn.Module):
    """The low-rank updates of one decoder layer, keyed by projection name."""

    def __init__(self, layer: nn.Module, rank: int, dtype: torch.dtype, generator: torch.Generator):
        super().__init__()
        self.parts = nn.ModuleDict({
            name: LowRank(lin.in_features, lin.out_features, rank, dtype, generator)
            for name, lin in projections(layer)
        })  # fmt: skip


class _GatedLinear(nn.Module):
    """A frozen linear plus its low-rank update at the gated positions."""

    def __init__(self, base: nn.Linear, update: LowRank, gate: SpeechGate):
        super().__init__()
        self.base, self.update, self.gate = base, update, gate

    @property
    def weight(self) -> torch.Tensor:  # the frozen weight, for code that reads layers (e.g. the fast decoder)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        mask = self.gate.mask
        if mask is None:
            return y
        delta = self.update(x).to(y.dtype)
        return y + torch.where(mask, delta, delta.new_zeros(()))  # exact y where the gate is off


def projections(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """A decoder layer's 7 projections, (name, linear), attention's then the MLP's."""
    return [(n, getattr(layer.self_attn, n)) for n in ATTENTION] + [(n, getattr(layer.mlp, n)) for n in MLP]


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object over the same parameters and submodules, whose child list can be changed alone."""
    new = copy.copy(module)
    new._modules = dict(module._modules)
    new._parameters = dict(module._parameters)
    return new


def adapted_layer(layer: nn.Module, adapter: LayerAdapter, gate: SpeechGate) -> nn.Module:
    """The decoder layer with each projection gated-adapted. The original layer object is left as it was (the
    backbone, and the text path through it, never see the adapters); weights are shared, not copied."""
    new, att, mlp = _shallow(layer), _shallow(layer.self_attn), _shallow(layer.mlp)
    for name in ATTENTION:
        att._modules[name] = _GatedLinear(getattr(layer.self_attn, name), adapter.parts[name], gate)
    for name in MLP:
        mlp._modules[name] = _GatedLinear(getattr(layer.mlp, name), adapter.parts[name], gate)
    new._modules["self_attn"], new._modules["mlp"] = att, mlp
    return new
