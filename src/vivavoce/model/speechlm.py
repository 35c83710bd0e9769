"""The speech language model: a frozen text LLM with a modality-based layer split (after MOSS-Speech).

Every position holds a (text token, speech token) pair. Its input embedding is the text embedding plus the speech
embedding, either one a zero vector where that stream is absent (id NONE = -1). The lower L-K layers are shared;
the top K layers exist twice:

    text ids ──embed──┐                     ┌─ text branch: original top K layers + norm + LM head (frozen)
                      + ── shared layers ──┤
    speech ids ─embed─┘   0 .. L-K-1        └─ speech branch: copy of the top K layers + own norm + speech head

The text branch *is* the backbone's own modules, so with no speech tokens the text logits are the backbone's,
bit for bit. Speech ids: the codec's codes 0..speech_vocab-1, then SOS and EOS (start/end of a spoken span).

Caching: one transformers DynamicCache holds every layer; the speech branch's copies use layer indices L..L+K-1
so both branches decode incrementally from the same cache object. Run both branches at every step when decoding
with a cache (skipping one leaves its cache layers behind).

Optional speech-gated low-rank adapters on the shared layers (`model/adapters.py`) act only at positions holding a
speech token, so the text-only guarantee above holds with them too.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from vivavoce.errors import VivavoceError
from vivavoce.model.adapters import LayerAdapter, SpeechGate, adapted_layer
from vivavoce.model.backbone import Backbone
from vivavoce.model.hearing import HearingConfig, HearingEncoder, heard_input

ADAPTER_SCOPES = ("speech", "heard")
HEARING_FIELDS = ("hearing_vocab", "hearing_dim", "hearing_blocks", "hearing_kernel")
NONE = -1  # "no token in this stream at this position" (zero embedding), in both streams
IGNORE = -100  # target positions that carry no loss

CHECKPOINT_KIND = "vivavoce-speechlm"
# Speech sampling temperature of a checkpoint that names none (its metadata's "generation": {"temperature": T}).
# A branch that reads from the phone track speaks its text best near 0.4, an older one near 0.8 (round 19).
SPEECH_TEMPERATURE = 0.8


@dataclass
class SpeechLMConfig:
    split_layers: int = 4  # K: the top K layers are duplicated into a speech branch
    speech_vocab: int = 1024  # codes of the speech tokenizer (vivavoce.codec: 1,024)
    speech_embed_init: str = "mean"  # "mean" (mean text embedding + noise) | "random"
    speech_head_init: str = "random"  # "random" | "embed" (tied start: the speech embedding's rows)
    init_std: float = 0.02
    train_shared: bool = False  # stage 2: the shared layers get their own trainable copy (saved with the rest)
    # A second, trainable speech embedding added to the speech branch's input at the split point: the branch then
    # sees exactly which code came before, even where the first embedding is frozen and the shared-layer states
    # are cached (stage 1, cached phase). Zero at the start, so it begins as the model without it.
    split_embed: bool = False
    # The same for the text stream: a trainable projection (zero at the start) of the position's text embedding
    # (the frozen table), so the speech branch reads the word it is saying directly, not only through the frozen
    # layers, whose states at a word are tuned to predict the next text token.
    split_text: bool = False
    # And the letters of the word being said, with its age in positions (`model/spelling.py`): spelling → sound
    # can then be learnt across words, not one BPE token at a time. Zero at the start.
    split_spelling: bool = False
    # And the word's phonemes (espeak-ng's, in the codec tokenizer's units) in the same rows: sound without English
    # spelling's detours (round 18). Needs split_spelling. Zero at the start.
    split_phonemes: bool = False
    # And the phone track (round 19): the phoneme being said, its neighbours and its age, from measured phone
    # onsets in training and from a table of phoneme durations in generation, as a TTS duration model gives
    # them; the words' onsets then follow the same table. Needs split_phonemes. Zero at the start.
    split_phone_track: bool = False
    # Speech-gated low-rank adapters on every shared layer (`model/adapters.py`), this rank (0: none). They act
    # only at positions holding a speech token, so text-only input still runs the backbone bit for bit; they let
    # the frozen shared layers re-map speech (understanding) without stage 2's full copy. Zero at the start.
    speech_adapter_rank: int = 0
    # Where they act: "speech" (every position holding a code) or "heard" (the codes of user turns only, so the
    # model's own speech, its reading, runs the frozen layers as without adapters and a decode step of it costs
    # nothing extra).
    speech_adapter_scope: str = "speech"
    # A hearing encoder (`model/hearing.py`, round 26): a causal convolution over the user's codes, trained alone by
    # CTC over the LLM's text tokens (`vivavoce train hearing`), whose expected text embedding is added to the input
    # at every heard position, so that sounds → words is learnt outside the frozen LLM. hearing_vocab: the number
    # of tokens it emits (0: no encoder); the rest its shape.
    hearing_vocab: int = 0
    hearing_dim: int = 256
    hearing_blocks: int = 6
    hearing_kernel: int = 9
    seed: int = 0

    @property
    def sos(self) -> int:
        return self.speech_vocab

    @property
    def eos(self) -> int:
        return self.speech_vocab + 1

    @property
    def speech_tokens(self) -> int:
        """Size of the speech embedding table and speech head: codes + SOS + EOS."""
        return self.speech_vocab + 2

    @classmethod
    def from_dict(cls, d: dict) -> "SpeechLMConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class SpeechLMOutput:
    text_logits: torch.Tensor | None  # (B, T, text vocab)
    speech_logits: torch.Tensor | None  # (B, T, speech_tokens)
    cache: object | None = None


class SpeechLM(nn.Module):
    def __init__(self, backbone: Backbone, config: SpeechLMConfig | None = None):
        super().__init__()
        config = config or SpeechLMConfig()
        L, K = backbone.num_layers, config.split_layers
        if not 1 <= K < L:
            raise VivavoceError(f"split_layers must be in 1..{L - 1}, not {K}")
        if config.split_phonemes and not config.split_spelling:
            raise VivavoceError("split_phonemes rides on the spelling input: set split_spelling too")
        if config.split_phone_track and not config.split_phonemes:
            raise VivavoceError("split_phone_track follows the word's phonemes: set split_phonemes too")
        self.config = config
        self.speech_temperature = SPEECH_TEMPERATURE  # what `load` reads from the checkpoint
        self.backbone_config = backbone.config
        self.tokenizer = backbone.tokenizer
        self.num_layers, self.num_shared = L, L - K
        self.hidden_size = backbone.hidden_size
        self.text_vocab = backbone.vocab_size

        # The backbone's own modules (shared by reference: the text branch stays the backbone itself).
        self.text_embed = backbone.embed
        self.rotary = backbone.rotary
        shared = list(backbone.layers[: L - K])
        if config.train_shared:
            if config.speech_adapter_rank:
                raise VivavoceError("speech adapters adapt frozen shared layers; stage 2 trains them outright: "
                                    "set speech_adapter_rank: 0 or train_shared: false")
            shared = [copy.deepcopy(layer) for layer in shared]
        self.speech_adapters, self._gate = None, SpeechGate()
        if config.speech_adapter_scope not in ADAPTER_SCOPES:
            raise VivavoceError(f"speech_adapter_scope must be one of {', '.join(ADAPTER_SCOPES)}, "
                                f"not {config.speech_adapter_scope!r}")
        self._user_header: tuple[int, int] | None = None  # "<|im_start|>", "user" (`heard_speech`), when needed
        if config.speech_adapter_rank:
            g = torch.Generator().manual_seed(config.seed + 1)
            self.speech_adapters = nn.ModuleList(
                LayerAdapter(layer, config.speech_adapter_rank, backbone.dtype, g) for layer in shared)
            shared = [adapted_layer(layer, a, self._gate) for layer, a in zip(shared, self.speech_adapters)]
        self.shared_layers = nn.ModuleList(shared)
        self.text_layers = nn.ModuleList(backbone.layers[L - K :])
        self.text_norm = backbone.norm
        self.text_head = backbone.head

        # The speech branch: a copy of the top K layers and norm, its own embedding and head.
        self.speech_layers = nn.ModuleList(copy.deepcopy(layer) for layer in backbone.layers[L - K :])
        for i, layer in enumerate(self.speech_layers):
            layer.self_attn.layer_idx = L + i  # its own slots in the shared cache object
        self.speech_norm = copy.deepcopy(backbone.norm)
        dtype = backbone.dtype
        self.speech_embed = nn.Embedding(config.speech_tokens, self.hidden_size, dtype=dtype)
        self.speech_head = nn.Linear(self.hidden_size, config.speech_tokens, bias=False, dtype=dtype)
        self.speech_split_embed = self.speech_split_text = self.speech_split_spelling = None
        if config.split_embed:
            self.speech_split_embed = nn.Embedding(config.speech_tokens, self.hidden_size, dtype=dtype)
            nn.init.zeros_(self.speech_split_embed.weight)
        if config.split_text:
            self.speech_split_text = nn.Linear(self.hidden_size, self.hidden_size, bias=False, dtype=dtype)
            nn.init.zeros_(self.speech_split_text.weight)
        if config.split_spelling:
            from vivavoce.model.spelling import SpellingEmbedding  # it imports this module's NONE

            self.speech_split_spelling = SpellingEmbedding(self.hidden_size, dtype, config.split_phonemes,
                                                           config.split_phone_track)
        self.speech_hearing = None
        if config.hearing_vocab:
            self.speech_hearing = HearingEncoder(HearingConfig(
                config.speech_vocab, config.hearing_vocab, self.hidden_size, config.hearing_dim,
                config.hearing_blocks, config.hearing_kernel))  # fmt: skip
        self._init_speech(config)

        self.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    # ---- parameters -------------------------------------------------------------------------------------------

    def _init_speech(self, config: SpeechLMConfig) -> None:
        g = torch.Generator().manual_seed(config.seed)
        std = config.init_std
        with torch.no_grad():
            w = torch.randn(self.speech_embed.weight.shape, generator=g) * std
            if config.speech_embed_init == "mean":
                # Start where text inputs live: the mean text embedding, told apart by small noise.
                w += self.text_embed.weight.float().mean(0)
            elif config.speech_embed_init != "random":
                raise VivavoceError(f"speech_embed_init must be mean|random, not {config.speech_embed_init!r}")
            self.speech_embed.weight.copy_(w)
            if config.speech_head_init == "embed":
                self.speech_head.weight.copy_(w)
            elif config.speech_head_init == "random":
                self.speech_head.weight.copy_(torch.randn(self.speech_head.weight.shape, generator=g) * std)
            else:
                raise VivavoceError(f"speech_head_init must be random|embed, not {config.speech_head_init!r}")

    @torch.no_grad()
    def warm_start_speech_embedding(self, table: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Set speech embedding rows (all, or `rows`) from `table`, e.g. per code the mean text embedding of the
        text tokens aligned with it."""
        target = self.speech_embed.weight
        if rows is None:
            target.copy_(table.to(target.dtype))
        else:
            target[rows] = table.to(target.dtype)

    def trainable_modules(self) -> dict[str, nn.Module]:
        mods = {
            "speech_embed": self.speech_embed,
            "speech_layers": self.speech_layers,
            "speech_norm": self.speech_norm,
            "speech_head": self.speech_head,
        }
        if self.speech_split_embed is not None:
            mods["speech_split_embed"] = self.speech_split_embed
        if self.speech_split_text is not None:
            mods["speech_split_text"] = self.speech_split_text
        if self.speech_split_spelling is not None:
            mods["speech_split_spelling"] = self.speech_split_spelling
        if self.speech_adapters is not None:
            mods["speech_adapters"] = self.speech_adapters
        if self.speech_hearing is not None:
            mods["speech_hearing"] = self.speech_hearing
        if self.config.train_shared:
            mods["shared_layers"] = self.shared_layers
        return mods

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trainable_modules().values() for p in m.parameters()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, m in self.trainable_modules().items() for k, v in m.state_dict().items()}

    def save_trainable(self, path: str | Path, dtype: torch.dtype | None = None, extra: dict | None = None) -> None:
        """Trainable weights only (safetensors), the config in the metadata; `dtype` e.g. bfloat16 to halve it."""
        from safetensors.torch import save_file

        state = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous()
                 for k, v in self.trainable_state_dict().items()}  # the hearing encoder's token ids stay integers
        meta = {"kind": CHECKPOINT_KIND, "config": json.dumps(asdict(self.config))}
        meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=meta)

    def load_trainable(self, path: str | Path, across_stages: bool = False) -> None:
        """Trainable weights from a checkpoint of this same model. `across_stages`: train_shared may differ, e.g. a
        stage-1 checkpoint into a stage-2 model, whose shared layers' trainable copy then keeps the backbone's
        weights (and a stage-2 checkpoint's shared layers are left out of a stage-1 model); and this model may have
        split inputs the checkpoint lacks (they start at zero, so it begins as the checkpoint's model)."""
        config, state = read_checkpoint(path)
        optional: tuple[str, ...] = ()
        if across_stages:
            config = replace(config, train_shared=self.config.train_shared)
            optional = ("shared_layers.",)
            for flag in ("split_embed", "split_text", "split_spelling"):
                if getattr(self.config, flag) and not getattr(config, flag):
                    config = replace(config, **{flag: True})
                    optional += (f"speech_{flag}.",)
            for flag, weights in (("split_phonemes", "phones"), ("split_phone_track", "track")):
                if getattr(self.config, flag) and not getattr(config, flag):
                    config = replace(config, **{flag: True})
                    optional += (f"speech_split_spelling.{weights}.",)
            if self.config.speech_adapter_rank and not config.speech_adapter_rank:
                config = replace(config, speech_adapter_rank=self.config.speech_adapter_rank,
                                 speech_adapter_scope=self.config.speech_adapter_scope)
                optional += ("speech_adapters.",)
            if self.config.hearing_vocab and not config.hearing_vocab:  # `attach_hearing` gives it its weights
                config = replace(config, **{f: getattr(self.config, f) for f in HEARING_FIELDS})
                optional += ("speech_hearing.",)
        if config != self.config:
            raise VivavoceError(f"{path}: made for {config}, not this model's {self.config}")
        own = self.trainable_state_dict()
        missing = sorted(k for k in own if k not in state and not k.startswith(optional))
        if missing:
            raise VivavoceError(f"{path}: lacks {len(missing)} weights (first: {missing[0]})")
        with torch.no_grad():
            for name, module in self.trainable_modules().items():
                prefix = name + "."
                sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if sub:  # absent only where allowed above: those keep their starting values
                    start = {k[len(prefix) :]: v for k, v in own.items() if k.startswith(prefix)}
                    module.load_state_dict(start | {k: v.to(own[prefix + k].dtype) for k, v in sub.items()})
        if self.speech_hearing is not None:
            self.speech_hearing.attach(self.text_embed.weight)  # its tokens' embedding rows, for the loaded ids

    @torch.no_grad()
    def attach_hearing(self, encoder: HearingEncoder) -> None:
        """Take a separately trained hearing encoder's weights (`vivavoce train hearing`)."""
        if self.speech_hearing is None or encoder.cfg != self.speech_hearing.cfg:
            raise VivavoceError(f"this model's hearing encoder ({self.speech_hearing and self.speech_hearing.cfg}) "
                                f"is not of the given one's shape ({encoder.cfg}): set the model's hearing_* fields")
        self.speech_hearing.load_state_dict(encoder.state_dict())
        self.speech_hearing.attach(self.text_embed.weight)

    @classmethod
    def load(cls, path: str | Path, backbone: Backbone) -> "SpeechLM":
        config, _ = read_checkpoint(path, weights=False)
        model = cls(backbone, config)
        model.load_trainable(path)
        model.speech_temperature = tuned_temperature(checkpoint_metadata(path), path)
        return model.eval()

    # ---- forward ----------------------------------------------------------------------------------------------

    def embed(self, text_ids: torch.Tensor, speech_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) text ids and (B, T) speech ids (NONE where absent) → (B, T, H) input embeddings."""
        has_text = text_ids != NONE
        x = self.text_embed(text_ids.clamp(min=0))
        if not bool(has_text.all()):
            x = torch.where(has_text[..., None], x, x.new_zeros(()))
        has_speech = speech_ids != NONE
        if bool(has_speech.any()):  # no speech: leave the text embedding untouched, bit for bit
            s = self.speech_embed(speech_ids.clamp(min=0))
            x = x + torch.where(has_speech[..., None], s, s.new_zeros(()))
        return x

    def context(self, x, attention_mask=None, position_ids=None, cache=None) -> dict:
        """What every layer needs besides the hidden states: the causal (and padding) mask, positions, rotary
        embeddings. Built once per step, before the cache grows."""
        from transformers.masking_utils import create_causal_mask

        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(x.shape[1], device=x.device) + past).unsqueeze(0)
        mask = create_causal_mask(
            config=self.backbone_config, inputs_embeds=x, attention_mask=attention_mask, cache=cache,
            position_ids=position_ids,
        )
        return dict(attention_mask=mask, position_ids=position_ids, position_embeddings=self.rotary(x, position_ids))

    def shared_hidden(self, text_ids, speech_ids, attention_mask=None, position_ids=None, ctx=None, cache=None,
                      heard=None):  # fmt: skip
        """Output of the shared layers (B, T, H). Where the speech embedding is frozen, this is a fixed function of
        the ids: a trainer may cache it and train the speech branch with `branches_from_hidden`. `heard`: see
        `forward`."""
        x = self.embed(text_ids, speech_ids)
        ctx = ctx or self.context(x, attention_mask, position_ids, cache)
        x = x + self._hearing(text_ids, speech_ids, cache, heard)
        return self._shared(x, text_ids, speech_ids, ctx, cache, heard)

    def heard_speech(self, text_ids: torch.Tensor, speech_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: positions holding a code inside a user turn, for grids that start at a turn's start (whole
        conversations, packed rows of them). A turn runs from one "<|im_start|>" to the next; its role is the
        token after it."""
        if self._user_header is None:
            self._user_header = (tokenizer_id(self.tokenizer, "<|im_start|>"),
                                 self.tokenizer.encode("user", add_special_tokens=False)[0])
        start, user = self._user_header
        T = text_ids.shape[1]
        steps = torch.arange(T, device=text_ids.device).expand_as(text_ids)
        last_start = torch.where(text_ids == start, steps, torch.full_like(steps, -1)).cummax(dim=1).values
        role = text_ids.gather(1, (last_start + 1).clamp(max=T - 1))
        return (speech_ids != NONE) & (last_start >= 0) & (role == user)

    def _heard_mask(self, text_ids, speech_ids, cache, heard) -> torch.Tensor:
        """(B, T) bool: the codes the user said."""
        if heard is None:
            if cache is not None and cache.get_seq_length() > 0:
                raise VivavoceError("this model treats the user's speech apart: pass `heard` when decoding on from a "
                                    "cache")
            heard = self.heard_speech(text_ids, speech_ids)
        return (speech_ids != NONE) & heard

    def hearing_mask(self, text_ids, speech_ids, cache=None, heard=None) -> torch.Tensor:
        """(B, T) bool: the codes the hearing encoder reads (the user's, not the SOS/EOS around them)."""
        return self._heard_mask(text_ids, speech_ids, cache, heard) & (speech_ids < self.config.speech_vocab)

    def _hearing(self, text_ids, speech_ids, cache, heard, heard_before=None) -> torch.Tensor | float:
        """What the hearing encoder adds to the input embeddings (0 without one, or with no heard code)."""
        if self.speech_hearing is None or not bool((speech_ids != NONE).any()):
            return 0.0
        mask = self.hearing_mask(text_ids, speech_ids, cache, heard)
        if not bool(mask.any()):
            return 0.0
        return heard_input(self.speech_hearing, speech_ids, mask, heard_before).to(self.text_embed.weight.dtype)

    def _adapter_mask(self, text_ids, speech_ids, cache, heard) -> torch.Tensor | None:
        """Where the speech adapters act (B, T, 1), or None for nowhere."""
        has = speech_ids != NONE
        if self.config.speech_adapter_scope == "heard" and bool(has.any()):
            has = self._heard_mask(text_ids, speech_ids, cache, heard)
        return has[..., None] if bool(has.any()) else None

    def _shared(self, x, text_ids, speech_ids, ctx, cache, heard=None):
        """The shared layers over input embeddings; the speech adapters (if any) act where `speech_ids` has a code
        (scope "speech") or a code the user said (scope "heard")."""
        if self.speech_adapters is not None:
            self._gate.mask = self._adapter_mask(text_ids, speech_ids, cache, heard)
        try:
            for layer in self.shared_layers:
                x = layer(x, cache=cache, use_cache=cache is not None, **ctx)
        finally:
            self._gate.mask = None  # never left over for a later forward
        return x

    def split_input(self, speech_ids: torch.Tensor | None, text_ids: torch.Tensor | None = None,
                    spelling_ids: torch.Tensor | None = None):  # fmt: skip
        """What the split inputs add to the speech branch's input (B, T, H); None without any."""
        out = None
        if self.speech_split_embed is not None and speech_ids is not None:
            has = (speech_ids != NONE)[..., None].to(self.speech_split_embed.weight.dtype)
            out = self.speech_split_embed(speech_ids.clamp(min=0)) * has
        if self.speech_split_text is not None and text_ids is not None:
            has = (text_ids != NONE)[..., None].to(self.speech_split_text.weight.dtype)
            t = self.speech_split_text(self.text_embed(text_ids.clamp(min=0)) * has)
            out = t if out is None else out + t
        if self.speech_split_spelling is not None and spelling_ids is not None:
            t = self.speech_split_spelling(spelling_ids)
            out = t if out is None else out + t
        return out

    def branches_from_hidden(
        self, hidden, attention_mask=None, position_ids=None, ctx=None, cache=None, text: bool = True,
        speech: bool = True, speech_ids: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
        spelling_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Shared-layer output → (text branch hidden, speech branch hidden), each after its final norm (B, T, H),
        None for a branch not asked for; apply `text_head` / `speech_head` where logits are needed. `speech_ids`,
        `text_ids`, `spelling_ids`: the positions' ids, for the split inputs (models with `split_embed` /
        `split_text` / `split_spelling`; spelling ids from `SpeechLMProcessor.spelling_ids`)."""
        if speech and ((self.speech_split_embed is not None and speech_ids is None)
                       or (self.speech_split_text is not None and text_ids is None)
                       or (self.speech_split_spelling is not None and spelling_ids is None)):  # fmt: skip
            raise VivavoceError("this model's speech branch reads the ids too (split_embed/text/spelling): pass them")
        ctx = ctx or self.context(hidden, attention_mask, position_ids, None)
        outs = []
        branches = ((text, self.text_layers, self.text_norm), (speech, self.speech_layers, self.speech_norm))
        for on, layers, norm in branches:
            if not on:
                outs.append(None)
                continue
            h = hidden
            if layers is self.speech_layers and (
                extra := self.split_input(speech_ids, text_ids, spelling_ids)) is not None:  # fmt: skip
                h = h + extra
            for layer in layers:
                h = layer(h, cache=cache, use_cache=cache is not None, **ctx)
            outs.append(norm(h))
        return outs[0], outs[1]

    def forward(
        self, text_ids, speech_ids, attention_mask=None, position_ids=None, cache=None, use_cache: bool = False,
        text: bool = True, speech: bool = True, logits_to_keep: int = 0, spelling_ids: torch.Tensor | None = None,
        heard: torch.Tensor | None = None, heard_before: list[list[int]] | None = None,
    ) -> SpeechLMOutput:
        """Both branches over (B, T) id grids. `use_cache` starts a cache if none is given (a transformers
        DynamicCache; pass it back for the next step); `logits_to_keep` = n: logits of the last n positions only.
        `heard` (B, T) bool: which codes the user said, for adapters of scope "heard"; found from the turn headers
        when not given, which needs the ids from a conversation's start. `heard_before[b]`: for a hearing encoder,
        the codes of row b's user turn fed before these positions (a turn pushed in pieces)."""
        from transformers import DynamicCache

        if use_cache and cache is None:
            cache = DynamicCache()
        x = self.embed(text_ids, speech_ids)
        ctx = self.context(x, attention_mask, position_ids, cache)
        x = x + self._hearing(text_ids, speech_ids, cache, heard, heard_before)
        x = self._shared(x, text_ids, speech_ids, ctx, cache, heard)
        th, sh = self.branches_from_hidden(x, ctx=ctx, cache=cache, text=text, speech=speech, speech_ids=speech_ids,
                                           text_ids=text_ids, spelling_ids=spelling_ids)  # fmt: skip
        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        return SpeechLMOutput(
            text_logits=self.text_head(th[:, keep]) if th is not None else None,
            speech_logits=self.speech_head(sh[:, keep]) if sh is not None else None,
            cache=cache,
        )


def tokenizer_id(tokenizer, token: str) -> int:
    """The id of a special token, e.g. ChatML's "<|im_start|>"; a one-line error where the tokenizer lacks it."""
    i = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(i, int) or i == tokenizer.unk_token_id:
        raise VivavoceError(f"the backbone's tokenizer has no {token} (ChatML) token")
    return i


def read_checkpoint(path: str | Path, weights: bool = True) -> tuple[SpeechLMConfig, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VivavoceError(f"{path}: no speech LM checkpoint there")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()} if weights else {}
    except Exception as e:  # safetensors raises its own error types for junk files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VivavoceError(f"{path}: not a safetensors file ({reason})") from None
    if meta.get("kind") != CHECKPOINT_KIND:
        raise VivavoceError(f"{path}: not a speech LM checkpoint (kind {meta.get('kind')!r})")
    return SpeechLMConfig.from_dict(json.loads(meta["config"])), state


def tuned_temperature(meta: dict, path: str | Path) -> float:
    """The speech sampling temperature a checkpoint was measured best at (export's `--speech-temperature`)."""
    tuned = meta.get("generation") or {}
    value = tuned.get("temperature", SPEECH_TEMPERATURE) if isinstance(tuned, dict) else tuned
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 5:
        raise VivavoceError(f"{path}: its generation temperature must be a number in [0, 5], not {value!r}")
    return float(value)


def checkpoint_metadata(path: str | Path) -> dict:
    """The JSON values stored beside the weights (config, and e.g. "processor" given as `extra` when saved)."""
    from safetensors import safe_open

    read_checkpoint(path, weights=False)  # one-line errors for a missing or wrong file
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out
