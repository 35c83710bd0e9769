"""Does the codec keep the words of speech it was not built around? For the utterances of manifests (the corpus's
or the codec trainers', `train.features.read_manifest`: audio, text, espeak phonemes): Whisper WER of the
recording itself, of the codec's resynthesis (encode → decode, the recording's own voice as reference), and the
phone error rate of the tokenizer's CTC head reading the codes alone (greedy, against the manifest's phonemes) and
its CTC loss in nats a phone, per manifest. Compare tokenizers on the loss: a better-trained head grows more
blank-heavy under uncertainty, and its greedy reading drops phones its loss still scores (codec round 7).

Round 8 of docs/speechlm-training.md ran it on joe reading the LLM's answers against joe reading the alignment
questions: the speech LM can say no more than the codes it writes keep.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/codec_new_text.py \
        corpus/answers-align/manifests/train-align-answers.jsonl corpus/joe-align/manifests/train-align.jsonl \
        [--limit 20] [--codec CHECKPOINT_DIR] [--json reports/codec-new-text.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifests", nargs="+")
    ap.add_argument("--limit", type=int, default=20, help="utterances per manifest (a seeded sample)")
    ap.add_argument("--codec", default=None, help="codec checkpoint folder (default: the shipped lite-16k)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import jiwer
    import torch

    torch.set_num_threads(1)
    from vivavoce.audio.io import read_audio
    from vivavoce.codec import Codec
    from vivavoce.codec.phonemes import ctc_greedy, encode_phonemes
    from vivavoce.eval import intelligibility
    from vivavoce.eval.report import Evaluator
    from vivavoce.train.features import read_manifest

    codec = Codec.load(args.codec)
    tok = codec.tokenizer
    evaluator = Evaluator(sphinx=False)
    results = {}
    for manifest in args.manifests:
        rows = read_manifest(manifest)  # corpus or codec manifests; every row has audio (16 kHz), text, phonemes
        rows = random.Random(0).sample(rows, min(args.limit, len(rows)))
        refs, original, resynth, phones, heard, seconds = [], [], [], [], [], 0.0
        ctc_nats, n_phones = 0.0, 0
        for r in rows:
            audio = read_audio(r["audio"], 16000)
            seconds += audio.size / 16000
            ids = codec.encode(audio)
            back = codec.decode(ids, audio)  # = codec.resynth(audio), keeping the ids for the CTC head
            refs.append(r["text"])
            original.append(evaluator.score("original", audio, 16000, reference=r["text"]).transcript)
            resynth.append(evaluator.score("resynthesis", back, codec.sample_rate, reference=r["text"]).transcript)
            with torch.no_grad():
                greedy = ctc_greedy(tok.phone_log_probs(ids)[0].argmax(-1).tolist())
            target = encode_phonemes(r["phonemes"])
            ctc_nats += tok.phone_ctc_nats(ids, target)
            n_phones += len(target)
            phones.append(" ".join(map(str, target)))
            heard.append(" ".join(map(str, greedy)))
        name = Path(manifest).parent.parent.name + "/" + Path(manifest).stem
        results[name] = {"items": len(rows), "seconds": round(seconds, 1),
                         "wer_original": intelligibility.corpus_wer(refs, original),
                         "wer_resynthesis": intelligibility.corpus_wer(refs, resynth),
                         "ctc_phone_error_rate": float(jiwer.wer(phones, heard)),
                         "ctc_nats_per_phone": ctc_nats / max(n_phones, 1)}  # fmt: skip
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
