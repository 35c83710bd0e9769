"""Do codes follow from the phonemes when their timing is known? A probe for the speech branch's phone track.

A small convolution (no autoregression, no LLM) learns codes from the phone track alone: at each code, the phoneme
being said, the one before, the two after, how long it has lasted and how long it has left, and whether it ends a
word or a clause. Held-out texts (the dev/test answers of the cache) are then decoded from its argmax codes and
transcribed by Whisper, with the phonemes timed three ways:
- `measured`: the forced alignment of the recording (`phone_onsets` of the token cache);
- `table`: the duration table generation uses (`lm_align.fit_phone_durations`, `spelling.PhoneTiming`), the words
  one after another; `table_3keys` the same without the phoneme before (round 19's table), `table_median` with
  medians instead of means;
- and the recording's own codes, the codec's ceiling.
Round 19 ran the first version of this probe (CTC-frame timing) before building `split_phone_track`.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/phone_track_probe.py --tokens cache/lm/tokens.jsonl \
        [--minutes 8] [--held-out 24] [--threads 2] [--json reports/phone-track-probe.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np


def track_of(phones: list[tuple[int, int, int]], starts: list[float], n: int) -> np.ndarray:
    """(n, 9) features of each code from the phonemes (id, ends a word, pause class) and their starts (codes)."""
    none = 0
    out = np.zeros((n, 9), dtype=np.int64)
    k = -1
    for t in range(n):
        while k + 1 < len(phones) and starts[k + 1] <= t:
            k += 1
        get = lambda j: phones[j][0] if 0 <= j < len(phones) else none  # noqa: E731
        if k < 0:
            out[t] = [none, none, get(0), get(1), 0, min(15, int(starts[0] - t)), 0, 0, 1]
            continue
        left = int(starts[k + 1] - t) if k + 1 < len(phones) else 15
        out[t] = [get(k), get(k - 1), get(k + 1), get(k + 2), min(15, int(t - starts[k])), min(15, max(left, 0)),
                  phones[k][1], phones[k][2], 0]  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True, help="token cache with phone onsets (lm_data tokenize)")
    ap.add_argument("--codec", default=None)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--held-out", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(args.threads)
    from vivavoce.codec import Codec
    from vivavoce.codec.phonemes import vocab_size
    from vivavoce.eval import intelligibility
    from vivavoce.eval.report import Evaluator
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import SpeechLMConfig
    from vivavoce.model.spelling import PhoneTiming, pause_class
    from vivavoce.train.lm_align import fit_phone_durations
    from vivavoce.train.lm_data import load_tokens

    codec = Codec.load(args.codec)
    config = SpeechLMConfig(split_spelling=True, split_phonemes=True, split_phone_track=True)
    proc = SpeechLMProcessor(load_backbone().tokenizer, config)
    rows = [r for r in load_tokens(args.tokens) if r["turn"] == "assistant" and r.get("phone_onsets")]
    train = [r for r in rows if r["split"] == "train"]
    held = random.Random(0).sample([r for r in rows if r["split"] != "train"], args.held_out)
    timings = {"table": PhoneTiming(fit_phone_durations(train, proc)),
               "table_3keys": PhoneTiming(fit_phone_durations(train, proc, before=False)),
               "table_median": PhoneTiming(fit_phone_durations(train, proc, stat="median"))}

    def phonemes(r, timing=timings["table"]):
        """[(phoneme, ends a word, pause class)], measured starts, the table's starts; None if espeak disagrees."""
        phones, measured, table, at = [], [], [], 0.0
        for a, word in proc.words(r["text_ids"]):
            onsets = r["phone_onsets"][a]
            if not onsets:
                continue
            ph, letters = proc.phones_of(word)
            if len(ph) != len(onsets):
                return None
            pause = pause_class(letters)
            phones += [(p, int(i == len(ph) - 1), pause if i == len(ph) - 1 else 0) for i, p in enumerate(ph)]
            measured += onsets
            table += [at + s for s in timing(ph, letters)]
            at += sum(timing.durations(ph, letters))
        return (phones, measured, table, int(np.ceil(at))) if phones else None

    V = vocab_size() + 1

    class Probe(nn.Module):
        def __init__(self, d: int = 256):
            super().__init__()
            self.phones = nn.ModuleList([nn.Embedding(V, d) for _ in range(4)])
            self.ages = nn.ModuleList([nn.Embedding(16, d) for _ in range(2)])
            self.flags = nn.Embedding(2 * 3 * 2, d)
            self.convs = nn.ModuleList([nn.Conv1d(d, d, 5, padding=2) for _ in range(4)])
            self.out = nn.Linear(d, codec.tokenizer.codebook_size)

        def forward(self, f):
            x = sum(e(f[..., i]) for i, e in enumerate(self.phones))
            x = x + self.ages[0](f[..., 4]) + self.ages[1](f[..., 5]) + self.flags(f[..., 6] * 6 + f[..., 7] * 2 + f[..., 8])
            x = x.transpose(1, 2)
            for conv in self.convs:
                x = x + F.gelu(conv(x))
            return self.out(x.transpose(1, 2))

    data = []
    for r in train:
        found = phonemes(r)
        if found:
            data.append((torch.from_numpy(track_of(found[0], found[1], len(r["speech_ids"]))),
                         torch.tensor(r["speech_ids"])))  # fmt: skip
    print(f"{len(data)} training texts, {len(held)} held out", flush=True)
    probe = Probe()
    opt = torch.optim.AdamW(probe.parameters(), 2e-3, weight_decay=0.01)
    t0, step, gen = time.time(), 0, random.Random(0)
    while time.time() - t0 < args.minutes * 60:
        batch = gen.sample(data, 16)
        T = max(len(y) for _, y in batch)
        f = torch.stack([F.pad(x, (0, 0, 0, T - len(x))) for x, _ in batch])
        y = torch.stack([F.pad(y, (0, T - len(y)), value=-100) for _, y in batch])
        with torch.autocast("cpu", torch.bfloat16):
            logits = probe(f)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    probe.eval()
    evaluator = Evaluator(sphinx=False)
    voice = joe_voice()
    refs, hyps, right, n = [], {"recording": [], "measured": [], **{k: [] for k in timings}}, 0, 0
    for r in held:
        found = phonemes(r)
        if not found:
            continue
        phones, measured, _, _ = found
        with torch.no_grad():
            by_measure = probe(torch.from_numpy(track_of(phones, measured, len(r["speech_ids"])))[None])[0].argmax(-1)
            codes = {"recording": r["speech_ids"], "measured": by_measure.tolist()}
            for key, timing in timings.items():
                _, _, table, length = phonemes(r, timing)
                codes[key] = probe(torch.from_numpy(track_of(phones, table, length + 2))[None])[0].argmax(-1).tolist()
        right += int((by_measure == torch.tensor(r["speech_ids"])).sum())
        n += len(r["speech_ids"])
        refs.append(r["text"])
        for key, ids in codes.items():
            audio = codec.decode(ids, voice)
            hyps[key].append(evaluator.score(key, audio, codec.sample_rate, reference=r["text"]).transcript)
        print(f"{r['text'][:50]!r} -> {hyps['table'][-1][:60]!r}", flush=True)
    result = {"steps": step, "held_out": len(refs), "code_acc_measured": right / max(n, 1),
              **{f"wer_{k}": intelligibility.corpus_wer(refs, v) for k, v in hyps.items()}}  # fmt: skip
    print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


def joe_voice() -> np.ndarray:
    """The assistant's voice as the shipped speech LM checkpoint records it (a d-vector)."""
    from vivavoce.model.speechlm import checkpoint_metadata

    path = Path(__file__).resolve().parents[1] / "src/vivavoce/checkpoints/speechlm/speechlm.safetensors"
    return np.asarray(checkpoint_metadata(path)["voice_dvector"], dtype=np.float32)


if __name__ == "__main__":
    main()
