"""Reading diagnostic of the speech LM: does the speech branch say a given text? Training sentences against
held-out ones, so that memorising is told apart from learning to read.

Texts come from a token cache (`python -m vivavoce.train.lm_data tokenize`): `--train N` random training replies
of the alignment renderings and the dev/test assistant answers. Each is read in guided mode with the text given
(the tts task's layout: tts system prompt, the text as a written user turn); Whisper tiny.en transcribes it.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_reading.py --tokens cache/lm/tokens.jsonl \
        [--checkpoint CKPT] [--train 6] [--held-out 4] [--temperature 0.8] [--json reports/reading.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--checkpoint", default=None, help="speech LM checkpoint (default: the shipped one)")
    ap.add_argument("--train", type=int, default=6, help="training sentences to read")
    ap.add_argument("--held-out", type=int, default=4, help="dev/test assistant answers to read")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from speechlm import read_aloud  # benchmarks/speechlm.py, beside this script

    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig
    from vivavoce.eval import intelligibility
    from vivavoce.eval.report import Evaluator
    from vivavoce.train.lm_data import load_tokens

    rows = load_tokens(args.tokens)
    train = [r for r in rows if r["split"] == "train" and str(r["dialogue"]).startswith("turn-")]
    held = list({r["text"]: r for r in rows if r["split"] in ("dev", "test") and r["turn"] == "assistant"}.values())
    groups = {"train": random.Random(0).sample(train, min(args.train, len(train))), "held_out": held[: args.held_out]}
    engine = SpeechLMEngine(SpeechLMEngineConfig(checkpoint=args.checkpoint))
    torch.set_num_threads(args.threads)
    evaluator = Evaluator(sphinx=False)
    results = {}
    for name, group in groups.items():
        refs, hyps = [], []
        for r in group:
            ids, audio = read_aloud(engine, r["text"], guided=True, temperature=args.temperature)
            item = evaluator.score(f"{name}:{r['key']}", audio, engine.codec.sample_rate, reference=r["text"])
            refs.append(r["text"])
            hyps.append(item.transcript)
            print(f"{name}: {r['text'][:60]!r} -> {item.transcript[:80]!r} ({len(ids)} tokens; "
                  f"the recording: {len(r['speech_ids'])})", flush=True)  # fmt: skip
        results[name] = {"items": len(refs), "wer": intelligibility.corpus_wer(refs, hyps)}
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "temperature": args.temperature,
                                               "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
