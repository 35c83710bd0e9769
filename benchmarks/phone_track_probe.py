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
from pathlib import Path

import numpy as np


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

    torch.set_num_threads(args.threads)
    from vivavoce.codec import Codec
    from vivavoce.eval import intelligibility
    from vivavoce.eval.report import Evaluator
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import SpeechLMConfig
    from vivavoce.model.spelling import PhoneTiming
    from vivavoce.train.lm_align import fit_phone_durations
    from vivavoce.train.lm_data import load_tokens
    from vivavoce.train.lm_synth import train_synth, word_units

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
            phones += word_units(ph, letters)
            measured += onsets
            table += [at + s for s in timing(ph, letters)]
            at += sum(timing.durations(ph, letters))
        return (phones, measured, table, int(np.ceil(at))) if phones else None

    tracks = []
    for r in train:
        found = phonemes(r)
        if found:
            tracks.append(("joe", found[0], found[1], r["speech_ids"]))
    print(f"{len(tracks)} training texts, {len(held)} held out", flush=True)
    # The heard-speech synthesiser (train/lm_synth.py) with one voice is this probe.
    probe = train_synth(tracks, codec.tokenizer.codebook_size, args.minutes, log=lambda m: print(m, flush=True))
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
            by_measure = torch.tensor(probe.say(phones, measured, len(r["speech_ids"]), "joe", 0, None))
            codes = {"recording": r["speech_ids"], "measured": by_measure.tolist()}
            for key, timing in timings.items():
                _, _, table, length = phonemes(r, timing)
                codes[key] = probe.say(phones, table, length + 2, "joe", 0, None)
        right += int((by_measure == torch.tensor(r["speech_ids"])).sum())
        n += len(r["speech_ids"])
        refs.append(r["text"])
        for key, ids in codes.items():
            audio = codec.decode(ids, voice)
            hyps[key].append(evaluator.score(key, audio, codec.sample_rate, reference=r["text"]).transcript)
        print(f"{r['text'][:50]!r} -> {hyps['table'][-1][:60]!r}", flush=True)
    result = {"minutes": args.minutes, "held_out": len(refs), "code_acc_measured": right / max(n, 1),
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
