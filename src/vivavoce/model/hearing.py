"""The hearing encoder: the user's codes → what the LLM reads, in the LLM's own text-embedding space.

Rounds 23-25 (docs/speechlm-training.md) found that the text branch hears only the words that training says often:
the speech embedding is one vector per code, so sounds → words must be learnt inside the frozen LLM's adapters,
word by word, at ~3 s a training step on this CPU. This module moves that mapping out of the LLM into a small
causal convolution over the codes that is trained on its own, with no LLM in the loop (thousands of utterances a
minute), by CTC over the LLM's text tokens. Its logits are tied to the frozen text embedding table:

    codes ─embed─ ConvNeXt blocks (causal) ─ norm ─ linear → h (hidden size of the LLM)
    logits(v) = scale · ⟨h, E[v]⟩ + bias[v]   over the tokens training says, and one blank

What the LLM gets, added to the speech embedding at each heard position, is the expected text embedding
Σ_v p(v) E[v] (the blank adds nothing): at a word's last code it looks like that word's token, so the text branch
reads a spoken word through the embedding it already understands, including words its adapters never heard.
It is not a transcript: nothing is decoded, the distribution stays soft and the LLM sees every code.

Causal with a finite receptive field (`receptive_field` codes), so a streamed turn gives the same input as a whole
one when each chunk is run after the codes before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vivavoce.codec.layers import ConvNeXtBlock, receptive_field


@dataclass
class HearingConfig:
    speech_vocab: int = 1024  # codes of the speech tokenizer
    vocab: int = 0  # text tokens it can emit (their ids are the `vocab_ids` buffer), besides the blank
    hidden: int = 576  # the LLM's hidden size (its text embedding's width)
    dim: int = 256
    blocks: int = 6
    kernel: int = 9


class HearingEncoder(nn.Module):
    def __init__(self, cfg: HearingConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.speech_vocab, cfg.dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.kernel) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.hidden)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab + 1))  # the last is the blank's
        self.blank = nn.Parameter(torch.randn(cfg.hidden) * cfg.hidden**-0.5)
        self.register_buffer("vocab_ids", torch.zeros(cfg.vocab, dtype=torch.long))
        # the LLM's text embeddings of vocab_ids: frozen, never saved (`attach` takes them from the backbone)
        self.register_buffer("table", torch.zeros(cfg.vocab, cfg.hidden), persistent=False)

    @property
    def receptive_field(self) -> int:
        """Codes each output sees: itself and this many minus one before it."""
        return receptive_field(self.blocks)[0] + 1

    @torch.no_grad()
    def attach(self, text_embedding: torch.Tensor, vocab_ids: torch.Tensor | None = None) -> None:
        """Take the emitted tokens' rows of the LLM's (frozen) text embedding; `vocab_ids` sets which tokens (a new
        encoder), else the stored ones are used (a loaded encoder)."""
        if vocab_ids is not None:
            self.vocab_ids.copy_(vocab_ids.to(torch.long))
        self.table = text_embedding[self.vocab_ids].detach().float().to(self.vocab_ids.device)

    def hidden(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T) codes → (B, T, hidden)."""
        x = self.embed(codes).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x.transpose(1, 2)))

    def logits(self, codes: torch.Tensor, among: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) codes → (B, T, vocab + 1): the tokens of `vocab_ids`, then the blank; `among`: only these
        positions of vocab_ids (then the blank)."""
        h = self.hidden(codes).float()
        rows, bias = (self.table, self.bias[:-1]) if among is None else (self.table[among], self.bias[among])
        table = torch.cat([rows, self.blank.float()[None]])
        return h @ table.T * self.log_scale.exp() + torch.cat([bias, self.bias[-1:]])

    def soft_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T) codes → (B, T, hidden): the expected text embedding under the emitted distribution (blank: 0)."""
        p = self.logits(codes).softmax(-1)
        return p[..., :-1] @ self.table

    def ctc_loss(self, codes: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]],
                 negatives: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Mean CTC loss per target token; `targets` are positions in `vocab_ids`. `negatives` > 0: normalise over
        the batch's target tokens and that many others drawn at random (a sampled softmax), not all `vocab`: with
        ~25,000 tokens the full softmax and its gradient are 10x the rest of a CPU step."""
        among = None
        if negatives > 0:
            said = torch.tensor(sorted({t for ts in targets for t in ts}), dtype=torch.long)
            drawn = torch.randint(0, self.cfg.vocab, (negatives,), generator=generator)
            among = torch.unique(torch.cat([said, drawn]))  # sorted
            targets = [torch.searchsorted(among, torch.tensor(ts, dtype=torch.long)).tolist() for ts in targets]
        logp = self.logits(codes, among).log_softmax(-1).transpose(0, 1)  # (T, B, V'+1)
        flat = torch.tensor([t for ts in targets for t in ts], dtype=torch.long)
        target_lengths = torch.tensor([len(ts) for ts in targets], dtype=torch.long)
        loss = F.ctc_loss(logp, flat, lengths, target_lengths, blank=logp.shape[-1] - 1, reduction="sum",
                          zero_infinity=True)  # fmt: skip
        return loss / max(1, int(target_lengths.sum()))

    @torch.no_grad()
    def greedy(self, codes: torch.Tensor) -> list[int]:
        """One utterance's (T,) codes → the text token ids of the best path (repeats merged, blanks dropped): for
        measuring the encoder alone, not what the LLM is given."""
        best = self.logits(codes[None])[0].argmax(-1).tolist()
        out, last = [], None
        for b in best:
            if b != last and b != self.cfg.vocab:
                out.append(int(self.vocab_ids[b]))
            last = b
        return out


def heard_spans(mask: torch.Tensor) -> list[tuple[int, int, int]]:
    """(B, T) bool → (row, start, end) of each run of True: the user turns' codes, one encoder input each."""
    spans = []
    m = mask.to(torch.int8)
    edges = torch.diff(F.pad(m, (1, 1)), dim=1)
    for b in range(mask.shape[0]):
        starts = (edges[b] == 1).nonzero().flatten().tolist()
        ends = (edges[b] == -1).nonzero().flatten().tolist()
        spans += [(b, s, e) for s, e in zip(starts, ends)]
    return spans


def heard_input(encoder: HearingEncoder, speech_ids: torch.Tensor, mask: torch.Tensor,
                history: list[list[int]] | None = None) -> torch.Tensor:  # fmt: skip
    """(B, T, hidden): the encoder's soft embedding at the positions of `mask` (each run of them one turn), zero
    elsewhere. `history[b]`: row b's codes heard before this call in the same turn (a streamed turn), prepended to
    its first run so the chunk's outputs equal a whole turn's."""
    out = torch.zeros(*speech_ids.shape, encoder.cfg.hidden, dtype=encoder.table.dtype, device=speech_ids.device)
    spans = heard_spans(mask)
    if not spans:
        return out
    keep = encoder.receptive_field - 1
    seqs, skip = [], []
    for b, s, e in spans:
        before = (history[b][-keep:] if keep else []) if history and s == 0 and history[b] else []
        seqs.append(before + speech_ids[b, s:e].tolist())
        skip.append(len(before))
    longest = max(map(len, seqs))
    codes = torch.tensor([q + [0] * (longest - len(q)) for q in seqs], device=speech_ids.device)
    emb = encoder.soft_embedding(codes)  # causal: the padding after a run changes none of its outputs
    for (b, s, e), k, row in zip(spans, skip, emb):
        out[b, s:e] = row[k : k + e - s].to(out.dtype)
    return out


def carried_codes(before: list[int], speech_ids: list[int], mask: list[bool], keep: int) -> list[int]:
    """A streamed turn's state after one chunk: the last `keep` codes of the run of heard codes the chunk ends in
    (continuing `before` where the whole chunk is that run), or none where it ends on anything else."""
    if not mask or not mask[-1] or keep <= 0:
        return []
    start = len(mask)
    while start > 0 and mask[start - 1]:
        start -= 1
    return ((before if start == 0 else []) + list(speech_ids[start:]))[-keep:]
