"""Recipe: the hearing encoder (`model/hearing.py`) by CTC over the LLM's text tokens, with no LLM in the loop.

Its data is the speech LM's token cache(s): every utterance (the users' and joe's by default) with its text ids,
and rows of heard speech without audio (`train/lm_synth.py`) where given. The emitted tokens are the ones the
training text says; the LLM's embedding rows of them are looked up once. Dev: the cache's dev rows (loss, and the
word error rate of the encoder's own best path, which tells how much of a heard question it carries to the LLM).

    vivavoce train hearing --config configs/lm/hearing-encoder.yaml
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vivavoce.codec.checkpoint import load_model
from vivavoce.errors import VivavoceError
from vivavoce.model.hearing import HearingConfig, HearingEncoder
from vivavoce.train.loop import LoopConfig, Recipe


@dataclass
class HearingTrainConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out_dir="runs/hearing", lr=2e-3, batch_size=48,
                                                                warmup=100, eval_every=250, checkpoint_every=250))
    model: HearingConfig = field(default_factory=HearingConfig)  # its vocab is set from the data
    tokens: list[str] = field(default_factory=lambda: ["cache/lm/tokens.jsonl"])  # token caches, joined
    backbone: str = "smollm2"
    turns: str = "all"  # "all" | "user": whose utterances to learn from
    max_codes: int = 400  # longer utterances are left out (32 s)
    dev_rows: int = 200  # dev utterances scored at each evaluation
    # The softmax of a training step runs over the batch's own tokens and this many drawn at random (0: over all of
    # them; evaluation always does). Round 26: 2,048 of 24,982 made a step ~8x cheaper on the CPU.
    negatives: int = 2048


class HearingRecipe(Recipe):
    kind = "hearing"
    model_cls = HearingEncoder
    config_cls = HearingConfig

    def __init__(self, cfg: HearingTrainConfig, backbone=None, log=print):
        from vivavoce.train.lm_data import load_tokens

        if cfg.turns not in ("all", "user"):
            raise VivavoceError(f"turns must be all|user, not {cfg.turns!r}")
        rows = [r for path in cfg.tokens for r in load_tokens(path)]
        rows = [r for r in rows if 0 < len(r["speech_ids"]) <= cfg.max_codes and r["text_ids"]
                and (cfg.turns == "all" or r["turn"] == "user")]  # fmt: skip
        train = [r for r in rows if r["split"] == "train"]
        dev = [r for r in rows if r["split"] == "dev"][: cfg.dev_rows]
        if not train or not dev:
            raise VivavoceError(f"{', '.join(cfg.tokens)}: no training or no dev utterances to hear")
        if backbone is None:
            from vivavoce.model.backbone import BackboneConfig, load_backbone

            backbone = load_backbone(BackboneConfig(source=cfg.backbone))
        self.tokenizer = backbone.tokenizer
        vocab = sorted({t for r in train for t in r["text_ids"]})
        cfg.model.vocab, cfg.model.hidden = len(vocab), backbone.hidden_size
        self.cfg = cfg
        self.embedding = backbone.embed.weight
        self.model = HearingEncoder(cfg.model)
        self.model.attach(self.embedding, torch.tensor(vocab))
        self.index = {t: i for i, t in enumerate(vocab)}
        self.train, self.dev = train, dev
        log(f"hearing: {len(train)} train utterances, {len(dev)} dev; {len(vocab)} text tokens; receptive field "
            f"{self.model.receptive_field} codes")

    def _batch(self, rows: list[dict]):
        codes = [r["speech_ids"] for r in rows]
        longest = max(map(len, codes))
        x = torch.tensor([c + [0] * (longest - len(c)) for c in codes])
        targets = [[self.index[t] for t in r["text_ids"] if t in self.index] for r in rows]
        return x, torch.tensor([len(c) for c in codes]), targets

    def step_losses(self, rng: random.Random) -> dict[str, torch.Tensor]:
        x, lengths, targets = self._batch(rng.sample(self.train, min(self.cfg.loop.batch_size, len(self.train))))
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        return {"loss": self.model.ctc_loss(x, lengths, targets, self.cfg.negatives, g)}

    def eval_losses(self) -> dict[str, float]:
        from vivavoce.eval.intelligibility import corpus_wer

        losses, refs, hyps = [], [], []
        for i in range(0, len(self.dev), 50):
            chunk = self.dev[i : i + 50]
            x, lengths, targets = self._batch(chunk)
            losses.append(float(self.model.ctc_loss(x, lengths, targets)) * len(chunk))
            for r in chunk:
                refs.append(r["text"])
                hyps.append(self.tokenizer.decode(self.model.greedy(torch.tensor(r["speech_ids"]))))
        return {"ctc": sum(losses) / len(self.dev), "wer": corpus_wer(refs, hyps)}

    def load(self, path: Path) -> None:
        loaded = load_model(path, HearingEncoder, HearingConfig, self.kind)
        if loaded.cfg != self.model.cfg:
            raise VivavoceError(f"{path}: an encoder of {loaded.cfg}, not this run's {self.model.cfg}")
        self.model.load_state_dict(loaded.state_dict())
        self.model.attach(self.embedding)


def load_encoder(path: str | Path, text_embedding: torch.Tensor) -> HearingEncoder:
    """A trained encoder (`vivavoce train hearing`'s model.safetensors) over the LLM's text embedding."""
    encoder = load_model(path, HearingEncoder, HearingConfig, HearingRecipe.kind)
    encoder.attach(text_embedding)
    return encoder
