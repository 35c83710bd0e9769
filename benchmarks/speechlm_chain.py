"""Chain of modality, offline: would guided mode's text agree more with the frozen LLM if the text branch wrote the
transcript first and the LLM answered that as text (SpeechGPT's chain), instead of answering from the codes?

Reads the held-out transcripts and answers that `speechlm_understanding.py --written --json F` wrote, answers
each transcript with the frozen LLM (batched greedy, 64 tokens), and scores three texts against the LLM's answer to
the true question: the transcript (against the question), the direct s2t answer and the chained answer.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_chain.py --tokens cache/lm/tokens.jsonl \
        reports/understanding.json [more reports]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="JSON of speechlm_understanding.py --written")
    ap.add_argument("--tokens", required=True, help="the token cache those reports read (its dev/test questions)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from vivavoce.eval.intelligibility import corpus_wer
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.textgen import TextGenConfig, answer_batch
    from vivavoce.train.lm_data import ExampleConfig, build_examples, load_tokens

    torch.set_num_threads(args.threads)
    rows = load_tokens(args.tokens)
    text_of = {r["key"]: r["text"] for r in rows}
    only_s2t = ExampleConfig(tts=False, tts_true=False, asr=False, s2s=False, s2s_guided=False)
    held_out = [e for s in ("dev", "test") for e in build_examples(rows, only_s2t, s) if e.task == "s2t"]
    questions = [text_of[e.source.split(">")[0]] for e in held_out]  # the order the understanding benchmark uses
    backbone = load_backbone()
    config = TextGenConfig(max_new_tokens=64)
    truth = answer_batch(backbone, questions, config, batch_size=16)
    for path in args.reports:
        for checkpoint, result in json.loads(Path(path).read_text()).items():
            written = result["held_out"]["written"]
            if len(written) != len(questions):
                raise SystemExit(f"{path}: {len(written)} transcripts for {len(questions)} held-out questions")
            heard = [w["heard"] for w in written]
            chained = answer_batch(backbone, heard, config, batch_size=16)
            print(json.dumps({"checkpoint": checkpoint, "asr_wer": round(corpus_wer(questions, heard), 4),
                              "s2t_wer": round(corpus_wer(truth, [w["wrote"] for w in written]), 4),
                              "chain_wer": round(corpus_wer(truth, chained), 4)}))  # fmt: skip
            for q, h, a in zip(questions, heard, chained):
                print(f"  {q!r}\n    heard: {h!r}\n    chain: {a!r}")


if __name__ == "__main__":
    main()
