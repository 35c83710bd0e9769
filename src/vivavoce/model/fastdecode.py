"""A lean decode loop for the backbone and the speech LM: static KV cache, fused projections, fp32 / bf16 / int8.

Decoding one token reads every weight once, so it is memory-bound: what counts is bytes per token and Python per
layer. Here each layer is 5 matmuls (fused q|k|v, o, fused gate|up, down) and a handful of ops, the KV cache is
preallocated (no concatenation, and rewinding to a prefix is just moving `length` back), and weights are stored as
  - "float32": as loaded;
  - "bfloat16": bf16 weights and activations (norms in fp32);
  - "int8": int8 per-output-channel weights, fp32 activations quantised on the fly (fbgemm's dynamic linear, which
    uses the CPU's VNNI dot products): a quarter of fp32's bytes.
The result follows the reference model (`SpeechLM.forward` / the HF backbone) within the dtype's rounding; the
tests check greedy tokens agree.

One `FastDecoder` serves both: the plain backbone is a stack of shared layers with a text head only; the speech
LM adds the speech branch. Both branches keep their own KV slots.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vivavoce.errors import VivavoceError
from vivavoce.model.adapters import projections
from vivavoce.model.hearing import carried_codes, heard_input

DTYPES = ("float32", "bfloat16", "int8")
RESCORE = 16  # int8/bf16 heads: candidates re-scored exactly


@dataclass
class FastDecodeConfig:
    dtype: str = "int8"  # float32 | bfloat16 | int8
    max_len: int = 2048  # positions of the static KV cache


def _activation_dtype(dtype: str) -> torch.dtype:
    """Hidden states and KV cache: bf16 with bf16 weights; fp32 otherwise (int8 quantises activations itself)."""
    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


def _linear(weight: torch.Tensor, dtype: str):
    """x → x @ weight.T in the chosen storage."""
    w = weight.detach().float()
    if dtype == "float32":
        w = w.contiguous()
        return lambda x: F.linear(x, w)
    if dtype == "bfloat16":
        w = w.to(torch.bfloat16).contiguous()
        return lambda x: F.linear(x.to(torch.bfloat16), w)
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    with warnings.catch_warnings():  # quantized tensors are deprecated in name, still the fast CPU int8 path
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(q, None)
    op = torch.ops.quantized.linear_dynamic
    return lambda x: op(x, packed, True)  # reduce_range: without it fbgemm's int16 sums overflow (garbage)


class _Layer:
    """One Llama decoder layer, fused and with its own preallocated K/V.

    Folded into the weights, to save per-step dispatches: each RMSNorm's gain (and the sqrt(hidden) that turns
    `F.normalize` into an RMS normalisation) into the projection after it, the attention's 1/sqrt(head_dim) into
    the query rows; q and k rows are reordered so that each rotary pair (j, j + head_dim/2) sits side by side and
    the rotation is one complex multiply (a permutation shared by q and k leaves every q.k unchanged)."""

    def __init__(self, layer, cfg, dtype: str, max_len: int, adapter=None):
        self.heads, self.kv_heads, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        H, KV, hd, hidden = self.heads, self.kv_heads, self.hd, cfg.hidden_size
        half = hd // 2
        pairs = torch.stack([torch.arange(half), torch.arange(half) + half], -1).flatten()  # 0, 32, 1, 33, ...
        gain1 = layer.input_layernorm.weight.detach().float() * hidden**0.5
        gain2 = layer.post_attention_layernorm.weight.detach().float() * hidden**0.5

        def fold(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            """The 7 projections' weights (fp32) → the 4 fused, folded matrices this layer multiplies by."""
            q = w["q_proj"].view(H, hd, hidden)[:, pairs].reshape(H * hd, hidden) * hd**-0.5
            k = w["k_proj"].view(KV, hd, hidden)[:, pairs].reshape(KV * hd, hidden)
            return {
                "qkv": torch.cat([q, k, w["v_proj"]]) * gain1,
                "o": w["o_proj"],
                "gate_up": torch.cat([w["gate_proj"], w["up_proj"]]) * gain2,
                "down": w["down_proj"],
            }  # fmt: skip

        weights = {name: lin.weight.detach().float() for name, lin in projections(layer)}
        self.proj = {name: _linear(w, dtype) for name, w in fold(weights).items()}
        self.proj_speech = None
        if adapter is not None:
            # Speech-gated low-rank updates merged into a second copy of the weights: a decode step of one speech
            # position then costs what it costs without adapters.
            merged = {n: w + adapter.parts[n].up.detach().float() @ adapter.parts[n].down.detach().float()
                      for n, w in weights.items()}  # fmt: skip
            self.proj_speech = {name: _linear(w, dtype) for name, w in fold(merged).items()}
        self.act = _activation_dtype(dtype)
        self.inter = cfg.intermediate_size
        self.k = torch.zeros(KV, max_len, hd, dtype=self.act)
        self.v = torch.zeros_like(self.k)

    def _project(self, name: str, x, gate):
        """The projection `name` of x, with the speech weights at the rows `gate` marks: (T, 1) bool, True (every
        row) or None (none)."""
        if gate is None or self.proj_speech is None:
            return self.proj[name](x)
        if gate is True:
            return self.proj_speech[name](x)
        return torch.where(gate, self.proj_speech[name](x), self.proj[name](x))

    def __call__(self, x, pos: int, rot, mask, gate=None):
        T, H, KV, hd = x.shape[0], self.heads, self.kv_heads, self.hd
        qkv = self._project("qkv", _normalize(x), gate)
        qk = torch.view_as_complex(qkv[:, : (H + KV) * hd].float().view(T, H + KV, hd // 2, 2)) * rot
        qk = torch.view_as_real(qk).to(self.act).view(T, H + KV, hd).transpose(0, 1)  # (H+KV, T, hd)
        self.k[:, pos : pos + T] = qk[H:]
        self.v[:, pos : pos + T] = qkv[:, (H + KV) * hd :].view(T, KV, hd).transpose(0, 1)
        k, v = self.k[:, : pos + T], self.v[:, : pos + T]
        if T == 1:  # one query: grouped matmuls beat the fused kernel's set-up at this size
            scores = torch.matmul(qk[:H].reshape(KV, H // KV, hd), k.transpose(1, 2))
            a = torch.matmul(torch.softmax(scores.float(), -1).to(v.dtype), v).reshape(1, H * hd)
        else:
            a = F.scaled_dot_product_attention(qk[None, :H], k[None], v[None], attn_mask=mask, enable_gqa=True,
                                               scale=1.0)  # fmt: skip
            a = a[0].transpose(0, 1).reshape(T, H * hd)
        x = x + self._project("o", a, gate)
        gu = self._project("gate_up", _normalize(x), gate)
        return x + self._project("down", F.silu(gu[:, : self.inter]) * gu[:, self.inter :], gate)


def _normalize(x):
    """x / |x| (in fp32): with the gain times sqrt(hidden) folded into the next weights, Llama's RMSNorm. Its eps
    (1e-5 on the mean square) is dropped: hidden states are never that small."""
    return F.normalize(x.float(), dim=-1).to(x.dtype)


def _rms(x, weight, eps: float):
    """Llama's RMSNorm (in fp32, as the reference), in fewer dispatches than F.rms_norm takes on CPU."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class _Branch:
    def __init__(self, layers, cfg, dtype, max_len, norm=None, head=None, adapters=None):
        adapters = adapters if adapters is not None else [None] * len(layers)
        self.layers = [_Layer(layer, cfg, dtype, max_len, a) for layer, a in zip(layers, adapters)]
        if norm is not None:
            self.norm, self.eps = norm.weight.detach().to(_activation_dtype(dtype)), norm.variance_epsilon
            self.head = _linear(head.weight, dtype)
            # Below fp32 the head's top candidates are re-scored exactly (fp32 rows of the original weight): int8
            # logits flipped near-ties such as "." vs <|im_end|>, bf16 logits (0.125 apart near 25) tie outright.
            self.exact = head.weight.detach() if dtype != "float32" else None

    def hidden(self, x, pos, rot, mask, gate=None):
        for layer in self.layers:
            x = layer(x, pos, rot, mask, gate)
        return x

    def logits(self, x):
        h = _rms(x, self.norm, self.eps)
        out = self.head(h).float()
        if self.exact is not None:
            top = out[0].topk(RESCORE).indices
            out[0, top] = self.exact[top] @ h[0].float()
        return out


class FastDecoder:
    """Incremental decoding with a static cache. `step(text_ids, speech_ids)` appends positions and returns the
    last position's (text logits, speech logits) as 1-D fp32 tensors, None where not asked for."""

    def __init__(self, cfg, text_embed, speech_embed, shared, text_branch, speech_branch, rotary, config,
                 split_embed=None, split_text=None, split_spelling=None, adapters=None,
                 adapter_scope: str = "speech", hearing=None):  # fmt: skip
        if config.dtype not in DTYPES:
            raise VivavoceError(f"fast decode dtype must be one of {', '.join(DTYPES)}, not {config.dtype!r}")
        self.config = config
        self.max_len = config.max_len
        self.act = _activation_dtype(config.dtype)
        self.text_embed = text_embed.weight.detach()
        self.speech_embed = speech_embed.weight.detach() if speech_embed is not None else None
        self.split_embed = split_embed.weight.detach() if split_embed is not None else None
        self.split_text = split_text.weight.detach().t().contiguous() if split_text is not None else None
        self.split_spelling = split_spelling  # a small module (model/spelling.py), called as it is
        self.shared = _Branch(shared, cfg, config.dtype, config.max_len, adapters=adapters)
        self.heard_only = adapter_scope == "heard"  # the adapters act on the user's codes only
        self.hearing = hearing  # a hearing encoder (model/hearing.py), called as it is, and its stream state:
        self.heard_codes: list[int] = []  # the open user turn's last codes
        layers, norm, head = text_branch
        self.text = _Branch(layers, cfg, config.dtype, config.max_len, norm, head)
        self.speech = None
        if speech_branch is not None:
            layers, norm, head = speech_branch
            self.speech = _Branch(layers, cfg, config.dtype, config.max_len, norm, head)
        with torch.no_grad():
            pos = torch.arange(config.max_len).unsqueeze(0)
            cos, sin = rotary(torch.zeros(1, dtype=torch.float32), pos)
        half = cos.shape[-1] // 2  # HF repeats each frequency in both halves
        self.rot = torch.complex(cos[0, :, None, :half], sin[0, :, None, :half])  # (max_len, 1, head_dim/2)
        self.length = 0

    @classmethod
    def for_backbone(cls, backbone, config: FastDecodeConfig | None = None) -> "FastDecoder":
        """The plain text LM: all layers shared, text head only."""
        return cls(
            backbone.config, backbone.embed, None, list(backbone.layers), ([], backbone.norm, backbone.head), None,
            backbone.rotary, config or FastDecodeConfig(),
        )

    @classmethod
    def for_speechlm(cls, model, config: FastDecodeConfig | None = None) -> "FastDecoder":
        return cls(
            model.backbone_config, model.text_embed, model.speech_embed, list(model.shared_layers),
            (list(model.text_layers), model.text_norm, model.text_head),
            (list(model.speech_layers), model.speech_norm, model.speech_head), model.rotary,
            config or FastDecodeConfig(), model.speech_split_embed, model.speech_split_text, model.speech_split_spelling,
            list(model.speech_adapters) if model.speech_adapters is not None else None,
            model.config.speech_adapter_scope, model.speech_hearing,
        )

    def truncate(self, length: int) -> None:
        """Forget positions from `length` on (a cached prefix stays valid: later steps overwrite the rest)."""
        if not 0 <= length <= self.length:
            raise VivavoceError(f"cannot truncate a {self.length}-position cache to {length}")
        self.length = length

    def _layers(self) -> list[_Layer]:
        return [*self.shared.layers, *self.text.layers, *(self.speech.layers if self.speech is not None else [])]

    def save(self, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of every layer's K/V at positions [start, end): a lane of the conversation to come back to
        (guided mode writes its text in one lane and speaks it in another over the same positions)."""
        return [(layer.k[:, start:end].clone(), layer.v[:, start:end].clone()) for layer in self._layers()]

    def restore(self, saved: list[tuple[torch.Tensor, torch.Tensor]], start: int, length: int | None = None) -> None:
        """Put a saved lane back at `start`. The cache then ends where the saved part ends, or at `length` when
        the positions after it still hold the lane (saving only what the other lane overwrote)."""
        n = saved[0][0].shape[1] if saved else 0
        length = start + n if length is None else length
        if not start + n <= length <= self.max_len:
            raise VivavoceError(f"cannot restore {n} positions at {start} into a cache of length {length}")
        for layer, (k, v) in zip(self._layers(), saved):
            layer.k[:, start : start + n] = k
            layer.v[:, start : start + n] = v
        self.length = length

    @staticmethod
    def _rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Rows of `table` for `ids`, zero where an id is NONE (-1)."""
        return table[ids.clamp(min=0)] * (ids >= 0).unsqueeze(-1).to(table.dtype)

    def _embed(self, text_ids, speech_ids):
        x = self._rows(self.text_embed, torch.as_tensor(text_ids, dtype=torch.long))
        if speech_ids is not None:
            s = torch.as_tensor(speech_ids, dtype=torch.long)
            if bool((s >= 0).any()):
                if self.speech_embed is None:
                    raise VivavoceError("this decoder has no speech embedding (a plain backbone)")
                x = x + self._rows(self.speech_embed, s)
        return x.to(self.act)

    def _heard(self, speech_ids, heard) -> torch.Tensor:
        """The hearing encoder's input at the user's codes (T, H), the turn's earlier chunks before them."""
        s = torch.as_tensor(speech_ids, dtype=torch.long)
        codes = (s >= 0) & (s < self.hearing.cfg.speech_vocab)
        if bool(codes.any()) and heard is None:
            raise VivavoceError("this model hears the user's speech with its own encoder: pass `heard`")
        mask = codes & torch.as_tensor(heard, dtype=torch.bool) if heard is not None else codes
        out = heard_input(self.hearing, s[None], mask[None], [self.heard_codes])[0]
        self.heard_codes = carried_codes(self.heard_codes, s.tolist(), mask.tolist(), self.hearing.receptive_field - 1)
        return out

    @torch.inference_mode()
    def step(self, text_ids, speech_ids=None, want_text: bool = True, want_speech: bool = True, text_branch=None,
             spelling_ids=None, heard=None):  # fmt: skip
        """Append positions (lists of ids, -1 = none) and decode. The text branch's layers run when `want_text`
        or `text_branch` (keep its cache whole for later text); the speech branch's when there is one.
        `spelling_ids`: a row per position, for a model with the spelling input. `heard`: a bool per position,
        the user's codes, for adapters of scope "heard"."""
        T = len(text_ids)
        pos = self.length
        if pos + T > self.max_len:
            raise VivavoceError(f"the conversation outgrew the decode cache ({self.max_len} positions)")
        x = self._embed(text_ids, speech_ids)
        if self.hearing is not None and speech_ids is not None:
            x = x + self._heard(speech_ids, heard).to(x.dtype)
        rot = self.rot[pos : pos + T]
        mask = None
        if T > 1:  # a chunk attends to the whole past and causally within itself
            mask = torch.arange(pos + T).unsqueeze(0) <= torch.arange(pos, pos + T).unsqueeze(1)
        gate = None  # the shared layers' speech adapters act where a position holds a code (the user's code)
        if speech_ids is not None:
            has = torch.as_tensor(speech_ids, dtype=torch.long) >= 0
            if self.heard_only and bool(has.any()):
                if heard is None:
                    raise VivavoceError("this model's adapters act on the user's speech: pass `heard`")
                has = has & torch.as_tensor(heard, dtype=torch.bool)
            gate = True if bool(has.all()) else has[:, None] if bool(has.any()) else None
        h = self.shared.hidden(x, pos, rot, mask, gate)
        self.length = pos + T
        text_logits = speech_logits = None
        if want_text or (text_branch if text_branch is not None else True):
            th = self.text.hidden(h, pos, rot, mask)
            if want_text:
                text_logits = self.text.logits(th[-1:])[0]
        if self.speech is not None:
            if self.split_embed is not None and speech_ids is not None:  # the speech branch's own code input
                h = h + self._rows(self.split_embed, torch.as_tensor(speech_ids, dtype=torch.long)).to(h.dtype)
            if self.split_text is not None:  # ...and its own view of the text token
                emb = self._rows(self.text_embed, torch.as_tensor(text_ids, dtype=torch.long))
                h = h + (emb.to(self.split_text.dtype) @ self.split_text).to(h.dtype)
            if self.split_spelling is not None:  # ...and the letters of the word it says
                if spelling_ids is None:
                    raise VivavoceError("this model's speech branch reads the spelling ids too: pass them")
                h = h + self.split_spelling(torch.as_tensor(spelling_ids, dtype=torch.long)).to(h.dtype)
            sh = self.speech.hidden(h, pos, rot, mask)
            if want_speech:
                speech_logits = self.speech.logits(sh[-1:])[0]
        return text_logits, speech_logits
