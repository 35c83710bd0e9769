"""Best-of-N guided reading, reranked by the codec tokenizer's own CTC phone head: can a verifier that needs no ASR
pick the intelligible take among N sampled ones?

Each held-out answer of a token cache is read N times in guided mode (seeds 0..N-1, `speechlm.read_aloud`). Each
take is scored by the CTC loss per phoneme of the text's phonemes (the processor's, in the phone head's ids) under
the tokenizer's phone head over its codes (`phone_ctc_nats`), and transcribed by Whisper tiny.en. Reported WERs:
seed 0 alone, the mean over single seeds, the take the CTC score picks, and the oracle (the take Whisper likes
best: the ceiling of any reranker).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/reading_rerank.py --tokens cache/lm/tokens.jsonl \
        [--checkpoint CKPT] [--n 4] [--held-out 12] [--temperature T] [--json reports/reading-rerank.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--checkpoint", default=None, help="speech LM checkpoint (default: the shipped one)")
    ap.add_argument("--n", type=int, default=4, help="takes per text")
    ap.add_argument("--held-out", type=int, default=12, help="dev/test assistant answers to read")
    ap.add_argument("--temperature", type=float, default=None, help="speech sampling (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from speechlm import read_aloud  # benchmarks/speechlm.py, beside this script
    from speechlm_reading import held_out_answers  # the reading benchmark's held-out texts, in its order

    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig
    from vivavoce.eval import intelligibility
    from vivavoce.eval.report import Evaluator
    from vivavoce.train.lm_data import load_tokens

    held = held_out_answers(load_tokens(args.tokens))
    engine = SpeechLMEngine(SpeechLMEngineConfig(checkpoint=args.checkpoint))
    torch.set_num_threads(args.threads)
    proc, evaluator = engine.processor, Evaluator(sphinx=False)
    refs, takes = [], []  # takes[i][seed] = (ctc nll, wer, transcript)
    for r in held[: args.held_out]:
        phones = [p for _, word in proc.words(proc.text_ids(r["text"])) for p in proc.phones_of(word)[0]]
        found = []
        for seed in range(args.n):
            ids, audio = read_aloud(engine, r["text"], guided=True, temperature=args.temperature, seed=seed)
            hyp = evaluator.score(f"{seed}", audio, engine.codec.sample_rate, reference=r["text"]).transcript
            nll = engine.codec.tokenizer.phone_ctc_nats(ids, phones) / len(phones) if ids and phones else float("inf")
            found.append((nll, intelligibility.corpus_wer([r["text"]], [hyp]), hyp))
        refs.append(r["text"])
        takes.append(found)
        print(f"{r['text'][:50]!r}: (ctc nll, wer) {[(round(t[0], 2), round(t[1], 2)) for t in found]}", flush=True)
    wer = lambda hyps: intelligibility.corpus_wer(refs, hyps)  # noqa: E731
    result = {
        "n": args.n, "items": len(refs),
        "temperature": engine.model.speech_temperature if args.temperature is None else args.temperature,
        "seed0_wer": wer([t[0][2] for t in takes]),
        "single_seed_mean_wer": float(np.mean([wer([t[s][2] for t in takes]) for s in range(args.n)])),
        "ctc_pick_wer": wer([min(t, key=lambda x: x[0])[2] for t in takes]),
        "oracle_wer": wer([min(t, key=lambda x: x[1])[2] for t in takes]),
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "results": result}, indent=1))


if __name__ == "__main__":
    main()
