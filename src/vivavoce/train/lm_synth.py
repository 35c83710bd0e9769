"""Heard speech without audio: codec codes for any text, drawn from a small model of the codes given the phones.

Why: the text branch hears only the words that many training utterances say (rounds 23-24 of
docs/speechlm-training.md: no word said by fewer than 10 is ever heard), and rendering recordings of tens of
thousands of words takes days on this machine. The codec tokenizer was trained to carry phonemes (its CTC head reads
them from the codes alone), and round 19's probe found that a small convolution over the phone track (the phoneme
being said, its neighbours, how long it has lasted) gives codes that Whisper reads at WER 0.22. `CodeSynth` is that
convolution with the speaker's voice as one more input, trained on the users' own utterances: any text in any train
voice becomes codes in milliseconds, so the hearing adapters can meet as many distinct words as the lexicon holds.

Data flow: `aligned_tracks` force-aligns each utterance's phonemes (the shipped lexicon, espeak-ng for other words)
against its codes' own CTC head (`lm_align.ctc_viterbi_starts`) and keeps the phone track and its durations;
`train_synth` fits `CodeSynth`; `Durations` draws a new text's timing from the voice's measured phone lengths;
`CodeSynth.say` samples the codes. `python -m vivavoce.train.lm_synth` runs it all and writes token-cache rows.

Measured (round 25): Whisper reads the codes it says for the hearing benchmark's held-out texts at WER 0.73
(recordings' codes: 0.34; `benchmarks/synth_heard.py`), and the text branch hears them as it hears real speech.
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vivavoce.codec.phonemes import vocab_size
from vivavoce.errors import VivavoceError
from vivavoce.train.lm_align import ctc_viterbi_starts

NONE = 0  # no phoneme (before the first, after the last)
HORIZON = 16  # ages and times-left are capped here (codes)
FEATURES = 9


def phone_units(text: str, phonemizer) -> list[tuple[int, int, int]] | None:
    """The phonemes of a text as (phoneme, ends a word, pause class of a word-final one: 0 none, 1 clause,
    2 sentence); None where a word has no phonemes (outside the lexicon without espeak-ng), so no partial text is
    ever said."""
    from vivavoce.model.spelling import letters_of, word_of

    out = []
    for word in text.split():
        letters = letters_of(word)
        key = word_of(letters)
        if not key:
            continue
        phones = phonemizer(key)
        if not phones:
            return None
        out += word_units(phones, letters)
    return out or None


def word_units(phones: list[int], letters: list[int]) -> list[tuple[int, int, int]]:
    """One word's phonemes as units: the last ends the word and carries the word's pause class."""
    from vivavoce.model.spelling import pause_class

    last, pause = len(phones) - 1, pause_class(letters)
    return [(p, int(i == last), pause if i == last else 0) for i, p in enumerate(phones)]


def track_of(units: list[tuple[int, int, int]], starts: list[float], n: int) -> np.ndarray:
    """(n, FEATURES) ints per code: the phoneme being said, the one before, the two after, how long it has lasted
    and how long it has left (codes), its word-end and pause flags, and whether speech has not begun yet."""
    out = np.zeros((n, FEATURES), dtype=np.int64)
    cap = HORIZON - 1
    k = -1
    for t in range(n):
        while k + 1 < len(units) and starts[k + 1] <= t:
            k += 1
        get = lambda j: units[j][0] if 0 <= j < len(units) else NONE  # noqa: E731
        if k < 0:
            out[t] = [NONE, NONE, get(0), get(1), 0, min(cap, int(starts[0] - t)), 0, 0, 1]
            continue
        left = int(starts[k + 1] - t) if k + 1 < len(units) else cap
        out[t] = [get(k), get(k - 1), get(k + 1), get(k + 2), min(cap, int(t - starts[k])), min(cap, max(left, 0)),
                  units[k][1], units[k][2], 0]  # fmt: skip
    return out


class CodeSynth(nn.Module):
    """Codes from the phone track and the voice: embeddings summed, a stack of residual 5-wide convolutions (about
    ±0.4 s of context), a codebook-wide softmax. Not causal: it sees the whole utterance's track."""

    def __init__(self, voices: list[str], codebook: int, dim: int = 256, layers: int = 4):
        super().__init__()
        self.voices = list(voices)
        n_phones = vocab_size() + 1
        self.phones = nn.ModuleList([nn.Embedding(n_phones, dim) for _ in range(4)])
        self.ages = nn.ModuleList([nn.Embedding(HORIZON, dim) for _ in range(2)])
        self.flags = nn.Embedding(2 * 3 * 2, dim)
        self.voice = nn.Embedding(len(self.voices), dim)
        self.convs = nn.ModuleList([nn.Conv1d(dim, dim, 5, padding=2) for _ in range(layers)])
        self.out = nn.Linear(dim, codebook)

    def forward(self, track: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        """track (B, T, FEATURES), voice (B,) -> logits (B, T, codebook)."""
        f = track
        x = sum(e(f[..., i]) for i, e in enumerate(self.phones)) + self.ages[0](f[..., 4]) + self.ages[1](f[..., 5])
        x = x + self.flags(f[..., 6] * 6 + f[..., 7] * 2 + f[..., 8])
        x = (x + self.voice(voice)[:, None]).transpose(1, 2)
        for conv in self.convs:
            x = x + F.gelu(conv(x))
        return self.out(x.transpose(1, 2))

    @torch.no_grad()
    def say(self, units, starts: list[float], n: int, voice: str, temperature: float, gen: torch.Generator):
        """Codes of one utterance: sampled at `temperature` (0: argmax)."""
        track = torch.from_numpy(track_of(units, starts, n))[None]
        logits = self(track, torch.tensor([self.voices.index(voice)]))[0].float()
        if temperature <= 0:
            return logits.argmax(-1).tolist()
        return torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen)[:, 0].tolist()


@dataclass
class Durations:
    """Measured phone lengths (codes, from one start to the next) per voice and phoneme context, and the silent
    lead before the first phoneme and tail after the last one's start, per voice. A new text's timing takes each
    phone's median under its finest key seen at least `min_count` times. Why medians of fine keys: the aligned
    lengths are two-humped (a phone either shares its code with the next, 0.5, or holds for 2-8), and which hump
    depends on the phones around it; a mean, or a draw from a coarse key, blurs that rhythm, and codes said to a
    blurred rhythm are babble (a synthesiser that Whisper reads at 0.44 on measured timing: 0.81 with means)."""

    lengths: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    min_count: int = 5
    counts: dict[str, int] = field(default_factory=dict)  # where `lengths` holds a summary (`to_json`)

    def seen(self, key: str) -> int:
        return self.counts.get(key, len(self.lengths.get(key, ())))

    def to_json(self, quantiles: int = 17) -> dict:
        """The keys a draw can use (seen `min_count` times, the lead and tail lengths, "*"), each with its count and
        at most `quantiles` evenly spaced quantiles of its lengths: the median and the spread survive, in a small
        fraction of the size of every measured length."""
        out = {}
        for k, v in self.lengths.items():
            if v and (self.seen(k) >= self.min_count or k == "*" or k.endswith(("|lead", "|tail"))):
                q = np.quantile(v, np.linspace(0, 1, min(quantiles, len(v))))
                out[k] = {"n": self.seen(k), "q": [round(float(x), 2) for x in q]}
        return out

    @classmethod
    def from_json(cls, data: dict) -> Durations:
        out = cls()
        for k, v in data.items():
            out.lengths[k], out.counts[k] = list(v["q"]), int(v["n"])
        return out

    @staticmethod
    def keys(voice: str, before: int, unit: tuple[int, int, int], after: int) -> list[str]:
        p, end, pause = unit
        ctx = f"{before}<{p}>{after}|{end}|{pause}"
        return [f"{voice}|{ctx}", f"*|{ctx}", f"*|{p}>{after}|{end}|{pause}", f"{voice}|{p}|{end}|{pause}",
                f"*|{p}|{end}|{pause}", f"*|{p}", "*"]  # fmt: skip

    def _context(self, units):
        phones = [NONE, *(u[0] for u in units), NONE]
        return [(phones[i], u, phones[i + 2]) for i, u in enumerate(units)]

    def add(self, voice: str, units, starts: list[float], n: int) -> None:
        for (before, unit, after), a, b in zip(self._context(units), starts, starts[1:]):
            for k in self.keys(voice, before, unit, after):
                self.lengths[k].append(b - a)
        self.lengths[f"{voice}|lead"].append(starts[0])
        self.lengths[f"{voice}|tail"].append(n - starts[-1])

    def draw(self, voice: str, units, rng: random.Random, spread: float = 0.0) -> tuple[list[float], int]:
        """Starts (codes) of each unit and the utterance's length in codes: each phone lasts its key's median, moved
        `spread` of the way to a length drawn at random from the key's (1: a drawn length)."""
        at = rng.choice(self.lengths.get(f"{voice}|lead") or [3.0])
        starts = []
        for before, unit, after in self._context(units)[:-1]:
            starts.append(at)
            key = next(k for k in self.keys(voice, before, unit, after) if self.seen(k) >= self.min_count or k == "*")
            pool = self.lengths.get(key) or [2.0]
            mid = float(np.median(pool))
            at += mid + spread * (rng.choice(pool) - mid)
        starts.append(at)
        return starts, int(np.ceil(at + rng.choice(self.lengths.get(f"{voice}|tail") or [12.0])))


def aligned_tracks(rows: list[dict], codec_tokenizer, phonemizer, log=print) -> list[tuple]:
    """(voice, units, starts in codes, codes) of each user utterance of `rows` (token-cache rows) whose phonemes
    align with its codes (CTC Viterbi on the codes' own phone head)."""
    up = codec_tokenizer.cfg.ctc_upsample
    out = []
    with torch.no_grad():
        for n, r in enumerate(rows, 1):
            units = phone_units(r["text"], phonemizer) if r["speech_ids"] else None
            if units is not None:
                log_probs = codec_tokenizer.phone_log_probs(r["speech_ids"])[0].numpy()
                found = ctc_viterbi_starts(log_probs, [u[0] for u in units])
                if found is not None:
                    out.append((r["voice"], units, [s / up for s in found], r["speech_ids"]))
            if n % 5000 == 0:
                log(f"  {n}/{len(rows)} utterances, {len(out)} aligned")
    return out


def train_synth(tracks: list[tuple], codebook: int, minutes: float, batch: int = 16, seed: int = 0,
                steps: int | None = None, log=print) -> CodeSynth:  # fmt: skip
    """Fit a `CodeSynth` to aligned utterances for `minutes` of wall time, or `steps` (AdamW, bf16 autocast)."""
    import time

    voices = sorted({t[0] for t in tracks})
    torch.manual_seed(seed)
    model = CodeSynth(voices, codebook)
    data = [(torch.from_numpy(track_of(u, s, len(c))), voices.index(v), torch.tensor(c)) for v, u, s, c in tracks]
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=0.01)
    rng, t0, step = random.Random(seed), time.time(), 0
    while (step < steps) if steps is not None else (time.time() - t0 < minutes * 60):
        part = [rng.choice(data) for _ in range(batch)]
        T = max(len(c) for _, _, c in part)
        f = torch.stack([F.pad(x, (0, 0, 0, T - len(x))) for x, _, _ in part])
        y = torch.stack([F.pad(c, (0, T - len(c)), value=-100) for _, _, c in part])
        with torch.autocast("cpu", torch.bfloat16):
            logits = model(f, torch.tensor([v for _, v, _ in part]))
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            log(f"step {step}: loss {loss.item():.3f}")
    return model.eval()


def save_synth(work, model: CodeSynth, durations: Durations) -> None:
    """The fitted synthesiser (safetensors, its voices in the metadata) and its timing summary into folder `work`."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(work / "synth.safetensors"), metadata={"voices": json.dumps(model.voices)})
    (work / "durations.json").write_text(json.dumps(durations.to_json()))


def load_synth(work, codebook: int) -> tuple[CodeSynth, Durations] | None:
    """What `save_synth` wrote into `work` (None where it has not), ready to say texts."""
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    model_path, timing_path = Path(work) / "synth.safetensors", Path(work) / "durations.json"
    if not (model_path.is_file() and timing_path.is_file()):
        return None
    with safe_open(str(model_path), "pt") as f:
        voices = json.loads(f.metadata()["voices"])
    model = CodeSynth(voices, codebook)
    model.load_state_dict(load_file(model_path))
    return model.eval(), Durations.from_json(json.loads(timing_path.read_text()))


# ---- texts ------------------------------------------------------------------------------------------------------


def lexicon_words(tokenizer=None, min_letters: int = 3) -> list[str]:
    """The shipped lexicon's alphabetic words; with the backbone's `tokenizer`, a word is capitalised where only its
    capitalised form is one of the vocabulary's whole words (names: " Mongolia", not " mongolia")."""
    from vivavoce.model.spelling import load_lexicon

    words = sorted(w for w in load_lexicon() if w.isalpha() and w.isascii() and len(w) >= min_letters)
    if tokenizer is None:
        return words
    vocab = tokenizer.get_vocab()
    return [w.capitalize() if f"Ġ{w}" not in vocab and f"Ġ{w.capitalize()}" in vocab else w for w in words]


def carrier_templates() -> list[str]:
    """The question bank's one-slot phrasings (data/text/tables.py) with the slot named {x}, and its drills'."""
    from string import Formatter

    from vivavoce.data.text import tables as T

    found = []
    for name in dir(T):
        if name.endswith("_TEMPLATES") or name in ("FOLLOW_UPS", "DRILL_CARRIERS"):
            for t in getattr(T, name):
                slots = {field for _, field, _, _ in Formatter().parse(t) if field}
                if len(slots) == 1:
                    found.append(t.replace("{" + slots.pop() + "}", "{x}"))
    return sorted(set(found))


def synth_texts(n: int, words: list[str], sentences: list[str], seed: int = 0, share_sentences: float = 0.3,
                exclude: set[str] = frozenset()) -> list[str]:  # fmt: skip
    """`n` texts: the bank's carriers (an opener before a third of them) with a lexicon word in the slot, each
    word in turn over a shuffled list so all are said before any twice, and a `share_sentences` of `sentences`
    (such as the frozen LLM's answers, one sentence each). None in `exclude` (held-out benchmark questions)."""
    from vivavoce.data.normalize import normalize_text
    from vivavoce.data.text import tables as T

    rng = random.Random(seed)
    carriers, order = carrier_templates(), list(words)
    rng.shuffle(order)
    out: list[str] = []
    k = 0
    while len(out) < n:
        if sentences and rng.random() < share_sentences:
            text = rng.choice(sentences)
        else:
            text = rng.choice(carriers).format(x=order[k % len(order)])
            k += 1
            if rng.random() < 1 / 3:
                text = f"{rng.choice(T.OPENERS)} {text[0].lower()}{text[1:]}"
        text = normalize_text(text)
        if text not in exclude:
            out.append(text)
    return out


def answer_sentences(answers_path, min_words: int = 3, max_words: int = 25) -> list[str]:
    """The sentences of the frozen LLM's cached answers (`lm_data answers`) that a user might say back."""
    from vivavoce.textnorm import split_sentences
    from vivavoce.train.lm_data import load_answers

    found = (s.strip() for a in load_answers(answers_path).values() for s in split_sentences(a))
    return sorted({s for s in found if min_words <= len(s.split()) <= max_words and s.isascii()})


# ---- command line -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vivavoce.train.lm_synth", description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True, help="token cache of real utterances (lm_data tokenize)")
    ap.add_argument("--out", required=True, help="token cache to write the synthetic user utterances to (JSONL)")
    ap.add_argument("--rows", type=int, default=40000)
    ap.add_argument("--work", required=True, help="folder for the fitted synthesiser and timing (reused if there)")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall time to fit the synthesiser")
    ap.add_argument("--steps", type=int, default=None, help="fit for this many steps instead")
    ap.add_argument("--answers", default=None, help="the LLM's cached answers: their sentences are said too")
    ap.add_argument("--codec", default=None, help="codec folder (default: the shipped one)")
    ap.add_argument("--exclude", default="benchmarks/data/hearing-heldout.txt", help="texts never to say")
    ap.add_argument("--temperature", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        return _synthesise(args)
    except VivavoceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _synthesise(args) -> int:
    import json
    from pathlib import Path

    from vivavoce.codec import Codec
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.spelling import Phonemizer
    from vivavoce.train.lm_data import load_tokens

    torch.set_num_threads(args.threads)

    sentences = answer_sentences(args.answers) if args.answers else []  # a bad path fails before the fit
    codec, phonemizer = Codec.load(args.codec), Phonemizer()
    if load_synth(args.work, codec.tokenizer.codebook_size) is None:
        fingerprint = codec.tokenizer_fingerprint  # rows of another codec's codes would teach the wrong codes
        rows = [r for r in load_tokens(args.tokens) if r["turn"] == "user" and r["split"] == "train"
                and r.get("codec", fingerprint) == fingerprint]  # fmt: skip
        tracks = aligned_tracks(rows, codec.tokenizer, phonemizer)
        print(f"{len(tracks)} of {len(rows)} train user utterances aligned", flush=True)
        if not tracks:
            raise VivavoceError(f"{args.tokens}: no train user utterance aligns with its phonemes")
        durations = Durations()
        for voice, units, starts, codes in tracks:
            durations.add(voice, units, starts, len(codes))
        save_synth(args.work, train_synth(tracks, codec.tokenizer.codebook_size, args.minutes, steps=args.steps),
                   durations)  # fmt: skip
    # Read back even after a fit, so a first run and a rerun say the same rows from the same stored summary.
    model, durations = load_synth(args.work, codec.tokenizer.codebook_size)

    tokenizer = load_backbone().tokenizer
    exclude = set()
    if args.exclude and Path(args.exclude).is_file():
        exclude = {t.strip() for t in Path(args.exclude).read_text().splitlines() if t.strip()}
    texts = synth_texts(args.rows, lexicon_words(tokenizer), sentences, args.seed, exclude=exclude)
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    written, out = 0, Path(args.out)
    tmp = out.with_name(out.name + ".tmp")  # a kill leaves no half-written cache
    with tmp.open("w") as f:
        for i, text in enumerate(texts):
            units = phone_units(text, phonemizer)
            if units is None:
                continue
            voice = model.voices[i % len(model.voices)]
            starts, n = durations.draw(voice, units, rng)
            codes = model.say(units, starts, n, voice, args.temperature, gen)
            key = f"synth/{args.seed}.{i}"
            f.write(json.dumps({"key": key, "corpus": "synth", "id": key, "dialogue": f"turn-synth-{i}", "turn": "user",
                                "split": "train", "voice": voice, "emotion": "neutral", "control": None, "text": text,
                                "prompt_id": None, "text_ids": tokenizer.encode(text, add_special_tokens=False),
                                "speech_ids": codes, "codec": codec.tokenizer_fingerprint,
                                "token_rate": codec.token_rate, "word_onsets": None, "phone_onsets": None}) + "\n")
            written += 1
    tmp.replace(out)
    print(f"wrote {written} synthetic user utterances to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
