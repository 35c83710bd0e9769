"""Training recipe of the speech LM over `loop.train`: `vivavoce train lm --config configs/lm/stage1.yaml`.

Stage 1 (text weights frozen) runs in one of two phases:
- "cached": the speech embedding is frozen too (warm-started from aligned text embeddings), so the shared
  layers' output is a fixed function of the data. It is computed once (and saved beside the run), and only the
  speech branch and head train on it: no forward or backward pass through the 26 shared layers per step. Only
  speech targets can teach anything here (text targets reach trainable weights only through the embedding).
- "full": everything of stage 1 trains, speech embedding included, by back-propagation through the frozen
  shared layers; text targets (asr, s2t) now teach the speech embedding.
Stage 2 (`model.train_shared: true`): the shared layers get a trainable copy; text-only replay (t2t on the
corpus's answers) keeps the text ability; the text perplexity on held-out answers is logged before and after.

Examples are packed into rows of `row_tokens` positions (position ids restart per example, so attention stays
within it: transformers builds the block-diagonal mask from the position ids).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from vivavoce.errors import VivavoceError
from vivavoce.model.processor import ChatTurn, ProcessorConfig, SpeechLMProcessor
from vivavoce.model.speechlm import IGNORE, NONE, SpeechLM, SpeechLMConfig, checkpoint_metadata, tuned_temperature
from vivavoce.train.lm_data import (Example, ExampleConfig, build_examples, load_answers, load_tokens, summarize,
                                    tokenize_corpora)
from vivavoce.train.loop import LoopConfig, Recipe

PHASES = ("cached", "full")


@dataclass
class LMTrainConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out_dir="runs/lm/stage1", lr=1e-4, batch_size=4,
                                                                 warmup=50, eval_every=100))  # fmt: skip
    model: SpeechLMConfig = field(default_factory=SpeechLMConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    examples: ExampleConfig = field(default_factory=ExampleConfig)
    tokens: str = "cache/lm/tokens.jsonl"  # token cache (`python -m vivavoce.train.lm_data tokenize`)
    corpora: list[str] = field(default_factory=list)  # tokenised into `tokens` first if missing there
    answers: str = ""  # JSONL of the frozen LLM's answers to the renderings' questions (`lm_data answers`): s2t
    backbone: str = "smollm2"
    stage: int = 1
    phase: str = "cached"  # stage 1: "cached" (speech branch on cached shared states) | "full"
    init_from: str = ""  # trainable weights to start from (e.g. the cached phase's model.safetensors)
    # A trained hearing encoder (`vivavoce train hearing`, round 26) for the model: its shape sets model.hearing_*.
    # It starts from these weights even where init_from holds an encoder too; `frozen: [speech_hearing]` keeps it.
    init_hearing: str = ""
    # Trainable modules held at their starting weights (names of `SpeechLM.trainable_modules`), e.g. all but
    # speech_adapters, to train understanding while the speech branch's reading stays exactly as it was.
    frozen: list[str] = field(default_factory=list)
    warm_start: str = "aligned"  # speech embedding: "aligned" (text embeddings under each code) | "init" (model's)
    row_tokens: int = 512  # packed row length
    text_weight: float = 1.0  # weight of the text loss beside the speech loss (full phase, stage 2)
    replay_weight: float = 1.0  # stage 2: weight of the text-only replay loss
    dev_rows: int = 16  # packed dev rows scored at each evaluation
    # s2t: weight of the KL from the frozen LLM's own next-token distribution, given the question as text, to the
    # model's, given it as speech, at every answer position (distillation, as DiVA does); 0 = hard targets only.
    # The teacher's `kd_top_k` most likely tokens per position are computed once and kept beside the run.
    kd_weight: float = 0.0
    kd_top_k: int = 32
    # Scheduled sampling in one parallel pass (Mihaylova & Liu, 2019): this share of the spoken inputs is replaced by
    # the speech branch's own codes, sampled at `self_feed_temperature` from its prediction given the true past, and
    # the true codes stay the targets. Generation feeds the branch its own codes; teacher forcing never does.
    self_feed: float = 0.0
    self_feed_temperature: float = 0.8
    # Text targets weighted by rarity: a token said n times among the training text targets weighs n^-text_rarity,
    # scaled to a mean of 1 over those targets and capped at `text_rarity_cap` (0: every target weighs 1). Why: the
    # text branch hears only words that training says often (round 23, `benchmarks/speechlm_hearing.py`: none of
    # the held-out questions' words said in fewer than 100 training utterances), so the slot words of a template
    # get more of the gradient than the template. Logged losses stay unweighted.
    text_rarity: float = 0.0
    text_rarity_cap: float = 10.0
    save_dtype: str = "float32"  # run checkpoints (exact resume); `export_checkpoint` writes the shipped bf16 copy


# ---- warm start --------------------------------------------------------------------------------------------------


@torch.no_grad()
def aligned_embedding_table(rows: list[dict], text_embed: torch.Tensor, speech_vocab: int) -> torch.Tensor:
    """Per code, the mean text embedding of the text tokens it co-occurs with under a uniform alignment (code i of
    n in an utterance of m text tokens lies under token i*m/n), minus the mean over all codes, rescaled to the text
    embeddings' mean norm. Codes never seen get the mean text embedding. The token cache's word onsets (round 4)
    would give a truer alignment than uniform; this table predates them and does not use them yet.

    Centring matters: each code's mean runs over thousands of tokens, so the raw means all sit near one vector
    (median cosine to the nearest other code 0.94 on the round-3 data) and a frozen embedding then hides which code
    came before. Centred, it is 0.75, and a 300-step A/B on the same data gave dev speech loss 4.76 against 5.10."""
    H = text_embed.shape[1]
    total = torch.zeros(speech_vocab, H, dtype=torch.float64)
    count = torch.zeros(speech_vocab, dtype=torch.float64)
    emb = text_embed.double()
    for r in rows:
        codes, text = r["speech_ids"], r["text_ids"]
        if not codes or not text:
            continue
        j = ((torch.arange(len(codes)) + 0.5) * len(text) / len(codes)).long().clamp(max=len(text) - 1)
        idx = torch.tensor(codes)
        total.index_add_(0, idx, emb[torch.tensor(text)[j]])
        count.index_add_(0, idx, torch.ones(len(codes), dtype=torch.float64))
    seen = count > 0
    centred = total / count.clamp(min=1)[:, None] - total.sum(0) / count.sum().clamp(min=1)  # unseen rows add 0
    norm = emb.norm(dim=1).mean()
    table = torch.where(seen[:, None], centred / centred.norm(dim=1, keepdim=True).clamp(min=1e-8) * norm, emb.mean(0))
    return table.float()


# ---- packing -----------------------------------------------------------------------------------------------------


@dataclass
class Rows:
    """Packed rows (N, T): ids, targets, position ids (restarting at each example)."""

    text_ids: torch.Tensor
    speech_ids: torch.Tensor
    text_targets: torch.Tensor
    speech_targets: torch.Tensor
    position_ids: torch.Tensor
    examples: int
    spelling_ids: torch.Tensor | None = None  # (N, T, WIDTH), for models with split_spelling (`with_spelling`)
    # (N, T, k) the teacher's top-k token ids (-1: no teacher here) and their log-probabilities (`kd_weight`)
    kd_ids: torch.Tensor | None = None
    kd_logp: torch.Tensor | None = None
    phone_index: torch.Tensor | None = None  # (N, T) measured phone indices (`Grid.phone_index`), -1 elsewhere

    def __len__(self) -> int:
        return self.text_ids.shape[0]

    def take(self, idx) -> "Rows":
        pick = lambda t: t[idx] if t is not None else None  # noqa: E731
        return Rows(self.text_ids[idx], self.speech_ids[idx], self.text_targets[idx], self.speech_targets[idx],
                    self.position_ids[idx], 0, pick(self.spelling_ids), pick(self.kd_ids), pick(self.kd_logp),
                    pick(self.phone_index))

    def with_spelling(self, processor, phonemes: bool = False, phone_track: bool = False) -> Rows:
        self.spelling_ids = processor.spelling_ids(self.text_ids, self.speech_ids, self.position_ids, phonemes,
                                                   phone_track, self.phone_index)  # fmt: skip
        return self


def pack(grids, row_tokens: int, seed: int = 0, soft: list | None = None) -> Rows:
    """First-fit-decreasing packing of grids into rows of `row_tokens`; longer grids are dropped. The rest of a
    row is one more "sequence" of empty positions (NONE ids, no targets). `soft`, per grid: None or a teacher's
    (ids, log-probs), each (n, k), for its n text targets in order (`teacher_top_k`)."""
    keep = [i for i, g in enumerate(grids) if len(g) <= row_tokens]
    grids = [grids[i] for i in keep]
    soft = [soft[i] for i in keep] if soft is not None else None
    if not grids:
        raise VivavoceError(f"no example fits in row_tokens={row_tokens}")
    order = sorted(range(len(grids)), key=lambda i: (-len(grids[i]), i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(grids[i])
        for b, room in enumerate(free):
            if room >= n:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(row_tokens - n)
    random.Random(seed).shuffle(bins)
    N = len(bins)
    out = [torch.full((N, row_tokens), v, dtype=torch.long) for v in (NONE, NONE, IGNORE, IGNORE, 0, -1)]
    for r, members in enumerate(bins):
        p = 0
        for i in members:
            g, n = grids[i], len(grids[i])
            for t, values in enumerate((g.text_ids, g.speech_ids, g.text_targets, g.speech_targets)):
                out[t][r, p : p + n] = torch.tensor(values)
            out[4][r, p : p + n] = torch.arange(n)
            out[5][r, p : p + n] = torch.tensor(g.phone_index)
            p += n
        out[4][r, p:] = torch.arange(row_tokens - p)
    rows = Rows(*out[:5], examples=len(grids), phone_index=out[5])
    if soft is not None:
        k = next((ids.shape[1] for ids, _ in filter(None, soft)), 1)
        rows.kd_ids = torch.full((N, row_tokens, k), -1, dtype=torch.int32)
        rows.kd_logp = torch.zeros((N, row_tokens, k), dtype=torch.float16)
        for r, members in enumerate(bins):
            p = 0
            for i in members:
                if soft[i] is not None:
                    at = p + torch.tensor([t for t, v in enumerate(grids[i].text_targets) if v != IGNORE])
                    rows.kd_ids[r, at], rows.kd_logp[r, at] = soft[i][0], soft[i][1]
                p += len(grids[i])
    return rows


@torch.no_grad()
def teacher_top_k(model: SpeechLM, processor: SpeechLMProcessor, pairs: list[tuple[str, str]], k: int,
                  batch_size: int = 16, bf16: bool = True,
                  device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per (question, answer): the frozen text model's k most likely next tokens and their log-probabilities at
    each of the answer's text targets, the question given as text in the s2t layout. With no speech in it the
    model is the bare backbone, so these are the LLM's own distributions: the targets of `kd_weight`. `device`:
    where the model is; the results come back on the CPU."""
    out = []
    for b in range(0, len(pairs), batch_size):
        grids = [processor.encode([ChatTurn("user", q), ChatTurn("assistant", a)], mode="s2t")
                 for q, a in pairs[b : b + batch_size]]  # fmt: skip
        batch = processor.collate(grids)
        mask = batch.attention_mask.to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            hidden = model.shared_hidden(batch.text_ids.to(device), batch.speech_ids.to(device), attention_mask=mask)
            th, _ = model.branches_from_hidden(hidden, attention_mask=mask, speech=False)
        for i in range(len(grids)):
            at = (batch.text_targets[i] != IGNORE).to(device)
            logp = model.text_head(th[i][at]).float().log_softmax(-1)
            top = logp.topk(k, dim=-1)
            out.append((top.indices.to("cpu", torch.int32), top.values.to("cpu", torch.float16)))
    return out


def kd_loss(logits: torch.Tensor, ids: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over k+1 outcomes: the teacher's top-k tokens and "any other token", so it is 0 only
    where the student puts the same mass on each of them (and the rest elsewhere)."""
    def with_rest(lp: torch.Tensor) -> torch.Tensor:
        mass = torch.logsumexp(lp, -1, keepdim=True).exp().clamp(max=1 - 1e-6)  # fp16 log-probs can sum past 1
        rest = torch.log1p(-mass)
        return torch.cat([lp, rest], -1)

    teacher = with_rest(logp.float())
    student = with_rest(logits.float().log_softmax(-1).gather(-1, ids.long()))
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


# ---- recipe ------------------------------------------------------------------------------------------------------


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets)


def rarity_weights(targets: torch.Tensor, vocab: int, power: float, cap: float) -> torch.Tensor:
    """Per text token id, n^-power for a token that is n of the `targets` (IGNORE skipped), scaled so that the
    targets' mean weight is 1, then capped at `cap` (`LMTrainConfig.text_rarity`)."""
    t = targets[targets != IGNORE].long()
    counts = torch.bincount(t, minlength=vocab).double()
    weight = counts.clamp(min=1).pow(-power)
    weight = weight * counts.sum() / (counts * weight).sum().clamp(min=1e-12)
    return weight.clamp(max=cap).float()


class LMRecipe(Recipe):
    kind = "speechlm"

    def __init__(self, cfg: LMTrainConfig, backbone=None, log=print):
        if cfg.stage not in (1, 2):
            raise VivavoceError(f"stage must be 1 or 2, not {cfg.stage}")
        if cfg.phase not in PHASES:
            raise VivavoceError(f"phase must be one of {', '.join(PHASES)}, not {cfg.phase!r}")
        if cfg.stage == 2 and not cfg.model.train_shared:
            raise VivavoceError("stage 2 trains the shared layers: set model.train_shared: true")
        if cfg.stage == 1 and cfg.model.train_shared:
            raise VivavoceError("stage 1 keeps the shared layers frozen: set model.train_shared: false")
        if not 0.0 <= cfg.self_feed <= 1.0 or cfg.self_feed_temperature <= 0:
            raise VivavoceError(f"self_feed must be in [0, 1] and self_feed_temperature > 0, not {cfg.self_feed} and "
                                f"{cfg.self_feed_temperature}")
        if cfg.kd_weight > 0 and cfg.stage != 1:  # stage 2's trainable copy would make the teacher a moving student
            raise VivavoceError("kd_weight distils the frozen LLM: stage 1 only")
        self.cfg, self.log = cfg, log
        self.device = "cpu"
        self.cached = cfg.stage == 1 and cfg.phase == "cached"
        if cfg.corpora:
            rows = tokenize_corpora(cfg.corpora, cfg.tokens, log=log)
        else:
            rows = load_tokens(cfg.tokens)
        if backbone is None:
            from vivavoce.model.backbone import BackboneConfig, load_backbone

            backbone = load_backbone(BackboneConfig(source=cfg.backbone))
        encoder = None
        if cfg.init_hearing:
            from vivavoce.train.hearing import load_encoder

            encoder = load_encoder(cfg.init_hearing, backbone.embed.weight)
            e = encoder.cfg
            cfg.model = replace(cfg.model, hearing_vocab=e.vocab, hearing_dim=e.dim, hearing_blocks=e.blocks,
                                hearing_kernel=e.kernel)  # fmt: skip
        self.model = SpeechLM(backbone, cfg.model)
        if cfg.init_from:
            self._init_from(cfg.init_from)
        if encoder is not None:
            self.model.attach_hearing(encoder)
            self.log(f"hearing encoder from {cfg.init_hearing}: {encoder.cfg.vocab} tokens")
        elif cfg.warm_start == "aligned":
            train_rows = [r for r in rows if r["split"] == "train"]
            self.model.warm_start_speech_embedding(
                aligned_embedding_table(train_rows, self.model.text_embed.weight, cfg.model.speech_vocab),
                torch.arange(cfg.model.speech_vocab))  # fmt: skip
        elif cfg.warm_start != "init":
            raise VivavoceError(f"warm_start must be aligned|init, not {cfg.warm_start!r}")
        modules = self.model.trainable_modules()
        for name in cfg.frozen:
            if name not in modules:
                raise VivavoceError(f"frozen: {name!r} is not a trainable module of this model "
                                    f"({', '.join(modules)})")
            modules[name].requires_grad_(False)
        if self.cached:  # everything below the speech branch must be fixed for its states to be cached
            self.model.speech_embed.weight.requires_grad_(False)
            if self.model.speech_adapters is not None:
                self.model.speech_adapters.requires_grad_(False)
            if self.model.speech_hearing is not None:
                self.model.speech_hearing.requires_grad_(False)
        self.processor = SpeechLMProcessor(backbone.tokenizer, cfg.model, cfg.processor)
        ex_cfg = cfg.examples
        if cfg.init_from:
            self._keep_onset_rule(cfg.init_from)
        if cfg.processor.guided_layout == "aligned" and (ex_cfg.tts or ex_cfg.s2s_guided):
            self._fit_onset_rule([r for r in rows if r["split"] == "train"])
        if self.cached:  # text targets cannot reach a trainable weight here: leave the text-only tasks out
            ex_cfg = ExampleConfig(**{**asdict(ex_cfg), "asr": False, "s2t": False})
        answers = load_answers(cfg.answers) if cfg.answers else None
        train_ex = build_examples(rows, ex_cfg, "train", answers)
        dev_ex = build_examples(rows, ex_cfg, "dev", answers)
        if not train_ex or not dev_ex:
            raise VivavoceError(f"{cfg.tokens}: no training or no dev examples (tokenise a corpus with both splits)")
        rate = rows[0].get("token_rate", 12.5)  # caches written before rows recorded it are all 12.5 Hz
        log(f"train {json.dumps(summarize(train_ex, rate))}\ndev {json.dumps(summarize(dev_ex, rate))}")
        train_soft = dev_soft = None
        if cfg.kd_weight > 0:
            train_soft, dev_soft = self._teacher(train_ex, "train"), self._teacher(dev_ex, "dev")
        self.train_rows = pack(self._grids(train_ex), cfg.row_tokens, cfg.loop.seed, train_soft)
        self.dev_rows = pack(self._grids(dev_ex), cfg.row_tokens, cfg.loop.seed, dev_soft).take(slice(0, cfg.dev_rows))
        if cfg.model.split_spelling:
            for rows_ in (self.train_rows, self.dev_rows):
                rows_.with_spelling(self.processor, cfg.model.split_phonemes, cfg.model.split_phone_track)
        log(f"packed {self.train_rows.examples} examples into {len(self.train_rows)} rows of {cfg.row_tokens}; "
            f"dev {len(self.dev_rows)} rows")  # fmt: skip
        self.text_token_weight = None
        if cfg.text_rarity > 0:
            self.text_token_weight = rarity_weights(self.train_rows.text_targets, self.model.text_vocab,
                                                    cfg.text_rarity, cfg.text_rarity_cap).to(self.device)  # fmt: skip
        self.replay = self.replay_dev = None
        if cfg.stage == 2:
            t2t = lambda split: [Example("t2t", "t2t", [ChatTurn("user", r["text"]),  # noqa: E731
                                                        ChatTurn("assistant", a["text"])], split)
                                 for r, a in _dialogue_pairs(rows, split)]  # fmt: skip
            self.replay = pack(self._grids(t2t("train")), cfg.row_tokens, cfg.loop.seed)
            self.replay_dev = pack(self._grids(t2t("dev") + t2t("test")), cfg.row_tokens, cfg.loop.seed)
            before = math.exp(self.held_out_text_loss())
            log(f"held-out text perplexity before stage 2: {before:.3f}")
            (Path(cfg.loop.out_dir)).mkdir(parents=True, exist_ok=True)
            (Path(cfg.loop.out_dir) / "text_ppl_before.json").write_text(json.dumps({"text_ppl": before}))
        self.hidden = self.dev_hidden = None
        if self.cached:
            self.hidden = self._cached_hidden(self.train_rows, "train")
            self.dev_hidden = self._cached_hidden(self.dev_rows, "dev")

    def _init_from(self, path: str) -> None:
        """Start from another run's trainable weights: the same model, or stage 1's for stage 2 (the shared layers'
        trainable copy then starts from the backbone's)."""
        self.model.load_trainable(path, across_stages=True)
        self.log(f"started from {path}")

    def _keep_onset_rule(self, path: str) -> None:
        """The speech branch of `path` learned to speak at its onset rule's pace: keep it, unless this run trains
        guided replies and can fit its own. (A run on text tasks alone, fitting the rule to whatever few replies its
        token cache holds, would move every guided word of a speech branch it never trained.)"""
        from vivavoce.model.speechlm import checkpoint_metadata

        saved = checkpoint_metadata(path).get("processor") or {}
        rule = {k: float(v) for k, v in saved.items() if k.startswith("onset_")}
        if saved.get("phone_tokens"):
            rule["phone_tokens"] = saved["phone_tokens"]
        if rule:
            self.processor.config = replace(self.processor.config, **rule)

    def _fit_onset_rule(self, rows: list[dict]) -> None:
        """Generation lays words out at onsets estimated from the text: fit the estimate's rates (or, for the phone
        track, its phoneme durations) to the measured onsets of this data (they travel in the checkpoint's
        processor config)."""
        from vivavoce.train.lm_align import fit_onset_rule, fit_phone_durations

        if self.cfg.model.split_phone_track and any(r.get("phone_onsets") for r in rows):
            table = fit_phone_durations(rows, self.processor)
            self.processor.config = replace(self.processor.config, phone_tokens=table)
            self.log(f"phone durations fitted: {len(table)} keys, any phoneme {table['*']} tokens")
        measured = [r for r in rows if r.get("word_onsets")]
        if len(measured) < 20:
            self.log(f"{len(measured)} replies with measured word onsets: the onset rule keeps its defaults")
            return
        rule = fit_onset_rule(measured, self.processor)
        self.processor.config = replace(self.processor.config, **rule)
        self.log(f"onset rule fitted on {len(measured)} replies: {rule}")

    def _grids(self, examples: list[Example]):
        return [self.processor.encode(e.turns, mode=e.mode) for e in examples]

    def _teacher(self, examples: list[Example], name: str) -> list:
        """`teacher_top_k` for each s2t example (None for the others), computed once per distinct (question,
        answer) and kept in the run folder under a hash of the pairs, so a resumed run reads it."""
        key = lambda e: (e.heard, e.turns[-1].text)  # noqa: E731
        pairs = sorted({key(e) for e in examples if e.task == "s2t" and e.heard})
        prompt = self.processor.system_turn("s2t").text  # the teacher's context: a changed prompt is a new teacher
        h = hashlib.sha1(json.dumps([pairs, prompt, self.cfg.kd_top_k, self.cfg.backbone]).encode()).hexdigest()[:12]

        def compute() -> dict[str, torch.Tensor]:
            # the recipe is built on the CPU and moved later: a GPU run lends the teacher its GPU for this pass
            dev = self.cfg.loop.device
            dev = dev if dev.startswith("cuda") and torch.cuda.is_available() else "cpu"
            self.log(f"teacher distributions of {len(pairs)} (question, answer) pairs ({name}, {dev})")
            self.model.to(dev)
            try:
                found = teacher_top_k(self.model, self.processor, pairs, self.cfg.kd_top_k, bf16=self.cfg.loop.bf16,
                                      device=dev)
            finally:
                self.model.to("cpu")
            return {"ids": torch.cat([i for i, _ in found]), "logp": torch.cat([v for _, v in found]),
                    "ends": torch.tensor([len(i) for i, _ in found]).cumsum(0)}  # fmt: skip

        saved = self._kept_in_run(f"teacher-{name}-{h}", "teacher distributions", compute)
        ends = saved["ends"].tolist()
        by = {pair: (saved["ids"][a:b], saved["logp"][a:b]) for pair, a, b in zip(pairs, [0, *ends], ends)}
        return [by[key(e)] if e.task == "s2t" and e.heard else None for e in examples]

    def _kept_in_run(self, name: str, what: str, compute) -> dict[str, torch.Tensor]:
        """Tensors that do not depend on trained weights, kept in the run folder as `name`.safetensors (the name
        hashes what they depend on): read back by a resumed run, else computed and written atomically."""
        from safetensors.torch import load_file, save_file

        path = Path(self.cfg.loop.out_dir) / f"{name}.safetensors"
        if path.is_file():
            self.log(f"reading cached {what} {path}")
            return load_file(str(path))
        tensors = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)
        return tensors

    # ---- the shared layers' output, once -------------------------------------------------------------------------

    def _cached_hidden(self, rows: Rows, name: str) -> torch.Tensor:
        """Shared-layer states of every row (bf16 to halve memory), saved as safetensors in the run folder and
        keyed by the data and the speech embedding, so a resumed run reads them instead of recomputing."""
        h = hashlib.sha1()
        fixed = [self.model.speech_embed.weight.detach()]
        if self.model.speech_adapters is not None:
            fixed += [p.detach() for p in self.model.speech_adapters.parameters()]
            h.update(self.model.config.speech_adapter_scope.encode())
        for t in (rows.text_ids, rows.speech_ids, rows.position_ids, *fixed):
            h.update(t.contiguous().float().numpy().tobytes())
        h.update(f"{self.model.num_shared}".encode())
        return self._kept_in_run(f"hidden-{name}-{h.hexdigest()[:12]}", "shared-layer states",
                                 lambda: {"hidden": self._shared_states(rows, name)})["hidden"]

    @torch.inference_mode()
    def _shared_states(self, rows: Rows, name: str) -> torch.Tensor:
        from tqdm import tqdm

        out = torch.empty(len(rows), rows.text_ids.shape[1], self.model.hidden_size, dtype=torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.loop.bf16):
            for i in tqdm(range(len(rows)), desc=f"shared states ({name})", mininterval=5):
                one = slice(i, i + 1)
                h = self.model.shared_hidden(rows.text_ids[one], rows.speech_ids[one],
                                             position_ids=rows.position_ids[one])
                out[i] = h[0].to(torch.bfloat16)
        return out

    # ---- losses ---------------------------------------------------------------------------------------------------

    def _branches(self, rows: Rows, hidden: torch.Tensor | None, text: bool, speech: bool):
        """(text branch, speech branch) states of `rows`, from their cached shared states where given."""
        dev = self.device
        pos, text_ids, speech_ids = rows.position_ids.to(dev), rows.text_ids.to(dev), rows.speech_ids.to(dev)
        if hidden is None:
            hidden = self.model.shared_hidden(text_ids, speech_ids, position_ids=pos)
        else:
            hidden = hidden.to(dev, torch.float32)
        spelling = rows.spelling_ids.to(dev) if rows.spelling_ids is not None else None
        return self.model.branches_from_hidden(hidden, position_ids=pos, text=text, speech=speech,
                                               speech_ids=speech_ids, text_ids=text_ids, spelling_ids=spelling)

    def _losses(self, rows: Rows, hidden: torch.Tensor | None) -> dict[str, torch.Tensor]:
        dev = self.device
        st, tt = rows.speech_targets.to(dev), rows.text_targets.to(dev)
        smask, tmask = st != IGNORE, tt != IGNORE
        want_text = not self.cached and bool(tmask.any())
        th, sh = self._branches(rows, hidden, text=want_text, speech=bool(smask.any()))
        out: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=dev)
        if sh is not None:
            logits = self.model.speech_head(sh[smask])
            out["speech"] = _ce(logits, st[smask])
            out["speech_acc"] = (logits.argmax(-1) == st[smask]).float().mean().detach()
            loss = loss + out["speech"]
        if th is not None:
            logits = self.model.text_head(th[tmask])
            if self.text_token_weight is None:
                out["text"] = text_loss = _ce(logits, tt[tmask])
            else:  # per-token losses once: their plain mean is logged, their weighted mean trains
                each = F.cross_entropy(logits.float(), tt[tmask], reduction="none")
                w = self.text_token_weight[tt[tmask]]
                out["text"], text_loss = each.mean(), (each * w).sum() / w.sum()
            loss = loss + self.cfg.text_weight * text_loss
            if rows.kd_ids is not None and (kmask := (rows.kd_ids[..., 0] >= 0).to(dev)[tmask]).any():
                ids, logp = rows.kd_ids.to(dev)[tmask][kmask], rows.kd_logp.to(dev)[tmask][kmask]
                out["kd"] = kd_loss(logits[kmask], ids, logp)
                loss = loss + self.cfg.kd_weight * out["kd"]
        out["loss"] = loss
        return out

    @torch.no_grad()
    def _self_fed(self, rows: Rows, hidden: torch.Tensor | None,
                  gen: torch.Generator) -> tuple[Rows, torch.Tensor | None]:  # fmt: skip
        """`rows` with a `self_feed` share of their spoken inputs (codes, not start/end of speech) replaced by codes the
        speech branch samples given the true past, and the shared states of the new inputs (cached phase). The
        target at position t is the input at t + 1, so a sample drawn at t goes in at t + 1."""
        dev, vocab = self.device, self.model.config.speech_vocab
        st = rows.speech_targets.to(dev)
        mask = st != IGNORE
        if not bool(mask.any()):
            return rows, hidden
        _, sh = self._branches(rows, hidden, text=False, speech=True)
        logits = self.model.speech_head(sh[mask]).float()[:, :vocab] / self.cfg.self_feed_temperature
        drawn = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=gen)[:, 0].to(dev)
        coin = torch.rand(drawn.shape, generator=gen).to(dev) < self.cfg.self_feed
        swap = torch.zeros_like(mask)
        swap[mask] = coin & (st[mask] < vocab)
        swap[:, -1] = False  # a row's last target has no input after it
        fed = st.clone()
        fed[mask] = drawn
        new_ids = rows.speech_ids.to(dev).clone()
        new_ids[:, 1:] = torch.where(swap[:, :-1], fed[:, :-1], new_ids[:, 1:])
        rows = replace(rows, speech_ids=new_ids.to(rows.speech_ids.device))
        if hidden is not None:  # the cached states were of the true inputs
            hidden = self.model.shared_hidden(rows.text_ids.to(dev), new_ids,
                                              position_ids=rows.position_ids.to(dev)).to(torch.bfloat16)
        return rows, hidden

    def _text_loss(self, rows: Rows) -> torch.Tensor:
        dev = self.device
        pos, tt = rows.position_ids.to(dev), rows.text_targets.to(dev)
        hidden = self.model.shared_hidden(rows.text_ids.to(dev), rows.speech_ids.to(dev), position_ids=pos)
        th, _ = self.model.branches_from_hidden(hidden, position_ids=pos, speech=False)
        mask = tt != IGNORE
        return _ce(self.model.text_head(th[mask]), tt[mask])

    def step_losses(self, rng: random.Random) -> dict[str, torch.Tensor]:
        idx = [rng.randrange(len(self.train_rows)) for _ in range(self.cfg.loop.batch_size)]
        rows, hidden = self.train_rows.take(idx), self.hidden[idx] if self.cached else None
        if self.cfg.self_feed > 0:
            rows, hidden = self._self_fed(rows, hidden, torch.Generator().manual_seed(rng.randrange(2**31)))
        out = self._losses(rows, hidden)
        if self.replay is not None:
            ridx = [rng.randrange(len(self.replay)) for _ in range(max(1, self.cfg.loop.batch_size // 2))]
            out["replay"] = self._text_loss(self.replay.take(ridx))
            out["loss"] = out["loss"] + self.cfg.replay_weight * out["replay"]
        return {k: (v if k == "loss" else v.detach()) for k, v in out.items()}

    @torch.no_grad()
    def eval_losses(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        n = len(self.dev_rows)
        for i in range(0, n, self.cfg.loop.batch_size):
            sl = slice(i, min(n, i + self.cfg.loop.batch_size))
            part = self._losses(self.dev_rows.take(sl), self.dev_hidden[sl] if self.cached else None)
            w = (sl.stop - sl.start) / n
            for k, v in part.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0.0) + float(v) * w
        if self.replay_dev is not None:
            sums["text_ppl"] = math.exp(self.held_out_text_loss())
        return sums

    @torch.no_grad()
    def held_out_text_loss(self) -> float:
        """Mean text loss of the backbone path on held-out answers (t2t, dev+test): stage 2's perplexity check."""
        rows = self.replay_dev
        if rows is None:
            return float("nan")
        total = 0.0
        with torch.autocast("cuda" if self.device.startswith("cuda") else "cpu", enabled=False):  # before == after
            for i in range(len(rows)):
                total += float(self._text_loss(rows.take(slice(i, i + 1))))
        return total / len(rows)

    # ---- checkpoints -----------------------------------------------------------------------------------------------

    def to(self, device: str) -> None:
        self.model.to(device)
        self.device = device

    def save(self, path: Path, step: int) -> None:
        dtype = {"bfloat16": torch.bfloat16, "float32": None}.get(self.cfg.save_dtype)
        self.model.save_trainable(path, dtype=dtype, extra={"step": step, "stage": self.cfg.stage,
                                                            "phase": self.cfg.phase,
                                                            "processor": asdict(self.processor.config)})  # fmt: skip

    def load(self, path: Path) -> None:
        self.model.load_trainable(path)


def export_checkpoint(src: str | Path, dst: str | Path, dtype: str = "bfloat16", voice: list[float] | None = None,
                      extra: dict | None = None) -> Path:
    """A run's trainable weights re-stored (bf16 by default) with the same metadata, plus the assistant's voice
    (`voice_dvector`, what the engine decodes with) and any `extra` JSON values: the file to ship."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vivavoce.model.speechlm import read_checkpoint

    read_checkpoint(src, weights=False)  # one-line error for a missing or foreign file
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    if voice is not None:
        meta["voice_dvector"] = json.dumps([round(float(v), 6) for v in voice])
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    to = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    save_file({k: v.to(to).contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    tmp.replace(dst)
    return dst


def assistant_dvector(corpus: str | Path, n: int = 8) -> list[float]:
    """Mean d-vector of the first `n` plain assistant (Piper joe) utterances of a corpus: the voice the speech
    branch was trained to speak in, given to the codec decoder."""
    import numpy as np

    from vivavoce.audio.io import read_audio
    from vivavoce.audio.speaker import speaker_embedding
    from vivavoce.data.voices import ASSISTANT
    from vivavoce.train.lm_data import corpus_rows

    rows = [r for r in corpus_rows(corpus) if r.get("voice") == ASSISTANT and r.get("emotion", "neutral") == "neutral"
            and not r.get("control")][:n]  # fmt: skip
    if not rows:
        raise VivavoceError(f"{corpus}: no plain assistant utterances to take the voice from")
    vec = np.mean([speaker_embedding(read_audio(r["audio"], 16000)) for r in rows], axis=0)
    return (vec / np.linalg.norm(vec)).tolist()


@torch.no_grad()
def evaluate_checkpoint(path: str | Path, tokens: str | Path, split: str = "dev", backbone=None,
                        row_tokens: int = 512) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per task: speech loss / accuracy and text loss of a checkpoint's model on the `split` examples (bf16)."""
    from vivavoce.model.speechlm import read_checkpoint

    if backbone is None:
        from vivavoce.model.backbone import load_backbone

        backbone = load_backbone()
    config, _ = read_checkpoint(path, weights=False)
    model = SpeechLM(backbone, config)
    model.load_trainable(path)
    model.eval()
    layout = ProcessorConfig.layout_of(checkpoint_metadata(path).get("processor"))
    proc = SpeechLMProcessor(backbone.tokenizer, config, layout)
    examples = build_examples(load_tokens(tokens), split=split)
    out: dict[str, dict[str, float]] = {}
    for task in sorted({e.task for e in examples}):
        rows = pack([proc.encode(e.turns, mode=e.mode) for e in examples if e.task == task], row_tokens)
        if config.split_spelling:
            rows.with_spelling(proc, config.split_phonemes, config.split_phone_track)
        sums = {"speech": 0.0, "speech_acc": 0.0, "text": 0.0, "speech_n": 0, "text_n": 0}
        counts = torch.zeros(config.speech_vocab + 2)
        for i in range(len(rows)):
            r = rows.take(slice(i, i + 1))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = model.shared_hidden(r.text_ids, r.speech_ids, position_ids=r.position_ids)
                sm, tm = r.speech_targets != IGNORE, r.text_targets != IGNORE
                th, sh = model.branches_from_hidden(h, position_ids=r.position_ids, text=bool(tm.any()),
                                                    speech=bool(sm.any()), speech_ids=r.speech_ids,
                                                    text_ids=r.text_ids, spelling_ids=r.spelling_ids)  # fmt: skip
                if sh is not None:
                    logits = model.speech_head(sh[sm]).float()
                    n = int(sm.sum())
                    sums["speech"] += float(F.cross_entropy(logits, r.speech_targets[sm], reduction="sum"))
                    sums["speech_acc"] += float((logits.argmax(-1) == r.speech_targets[sm]).sum())
                    sums["speech_n"] += n
                    counts += torch.bincount(r.speech_targets[sm], minlength=counts.numel())[: counts.numel()].float()
                if th is not None:
                    logits = model.text_head(th[tm]).float()
                    sums["text"] += float(F.cross_entropy(logits, r.text_targets[tm], reduction="sum"))
                    sums["text_n"] += int(tm.sum())
        res = {"examples": rows.examples}
        if sums["speech_n"]:
            # the loss a model would get that knows only how often each code occurs here (no context at all)
            p = counts[counts > 0] / counts.sum()
            res.update(speech=sums["speech"] / sums["speech_n"], speech_acc=sums["speech_acc"] / sums["speech_n"],
                       speech_targets=sums["speech_n"], speech_unigram_entropy=float(-(p * p.log()).sum()))  # fmt: skip
        if sums["text_n"]:
            res.update(text=sums["text"] / sums["text_n"], text_targets=sums["text_n"])
        out[task] = {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m vivavoce.train.lm_recipe export RUN/model.safetensors DST --voice-corpus CORPUS`
    `python -m vivavoce.train.lm_recipe evaluate CKPT --tokens TOKENS.jsonl [--split dev]`"""
    import argparse
    import sys

    p = argparse.ArgumentParser(description="export a speech LM run's weights as the shipped checkpoint")
    p.add_argument("action", choices=["export", "evaluate"])
    p.add_argument("src")
    p.add_argument("dst", nargs="?")
    p.add_argument("--tokens", help="evaluate: token cache")
    p.add_argument("--split", default="dev")
    p.add_argument("--voice-corpus", help="corpus whose assistant utterances give the voice d-vector")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--codec", help="export: codec checkpoint folder whose tokenizer made the training tokens "
                   "(default: the shipped one); its fingerprint is stored so the engine can check it")
    p.add_argument("--speech-temperature", type=float, default=None,
                   help="export: the speech sampling temperature the engine uses with this checkpoint (default: "
                   "the source's own, else 0.8)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if args.action == "evaluate":
            if not args.tokens:
                raise VivavoceError("evaluate needs --tokens")
            print(json.dumps(evaluate_checkpoint(args.src, args.tokens, args.split), indent=1))
            return 0
        if not args.dst:
            raise VivavoceError("export needs a destination path")
        from vivavoce.codec import Codec

        voice = assistant_dvector(args.voice_corpus) if args.voice_corpus else None
        extra: dict = {"codec_tokenizer": Codec.load(args.codec).tokenizer_fingerprint}
        if args.speech_temperature is not None:
            tuned_temperature({"generation": {"temperature": args.speech_temperature}}, "--speech-temperature")
            extra["generation"] = {"temperature": args.speech_temperature}
        path = export_checkpoint(args.src, args.dst, args.dtype, voice, extra=extra)
    except VivavoceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    return 0


def _dialogue_pairs(rows: list[dict], split: str) -> list[tuple[dict, dict]]:
    """(user row, plain answer row) per dialogue of `split`: the first user rendering of each."""
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["split"] == split and not r.get("control") and not str(r["dialogue"]).startswith("turn-"):
            d = by.setdefault(r["dialogue"], {})
            if r["turn"] == "assistant" and r["id"].endswith(".a"):
                d["a"] = r
            elif r["turn"] == "user":
                d.setdefault("u", r)
    return [(d["u"], d["a"]) for _, d in sorted(by.items()) if "u" in d and "a" in d]


if __name__ == "__main__":
    raise SystemExit(main())
