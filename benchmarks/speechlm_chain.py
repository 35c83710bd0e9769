"""Chain of modality, offline: would guided mode's text agree more with the frozen LLM if the text branch wrote the
transcript first and the LLM answered that as text (SpeechGPT's chain), instead of answering from the codes?

Reads the held-out transcripts and answers that `speechlm_understanding.py --written --json F` wrote, answers
each transcript with the frozen LLM (batched greedy, 64 tokens), and scores three texts against the LLM's answer to
the true question: the transcript (against the question), the direct s2t answer and the chained answer.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_chain.py reports/understanding.json [...]

Reports written before the transcripts carried their question need `--tokens` (the token cache they read), from
which the held-out questions are rebuilt in the understanding benchmark's order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="JSON of speechlm_understanding.py --written")
    ap.add_argument("--tokens", help="older reports: the token cache they read (its dev/test questions)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from vivavoce.eval.intelligibility import corpus_wer
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.textgen import TextGenConfig, answer_batch
    from vivavoce.train.lm_data import ExampleConfig, build_examples, load_tokens

    torch.set_num_threads(args.threads)
    rebuilt = None
    if args.tokens:
        rows = load_tokens(args.tokens)
        text_of = {r["key"]: r["text"] for r in rows}
        only_s2t = ExampleConfig(tts=False, tts_true=False, asr=False, s2s=False, s2s_guided=False)
        held_out = [e for s in ("dev", "test") for e in build_examples(rows, only_s2t, s) if e.task == "s2t"]
        rebuilt = [text_of[e.source.split(">")[0]] for e in held_out]  # the understanding benchmark's order
    backbone = load_backbone()
    config = TextGenConfig(max_new_tokens=64)
    truths: dict[tuple[str, ...], list[str]] = {}  # the LLM's answers, once per question list
    for path in args.reports:
        for checkpoint, result in json.loads(Path(path).read_text()).items():
            written = result["held_out"]["written"]
            questions = [w["question"] for w in written] if all("question" in w for w in written) else rebuilt
            if questions is None:
                raise SystemExit(f"{path}: its transcripts do not carry their questions: pass --tokens")
            if len(written) != len(questions):
                raise SystemExit(f"{path}: {len(written)} transcripts for {len(questions)} held-out questions")
            if tuple(questions) not in truths:
                truths[tuple(questions)] = answer_batch(backbone, questions, config, batch_size=16)
            truth = truths[tuple(questions)]
            heard = [w["heard"] for w in written]
            chained = answer_batch(backbone, heard, config, batch_size=16)
            print(json.dumps({"checkpoint": checkpoint, "asr_wer": round(corpus_wer(questions, heard), 4),
                              "s2t_wer": round(corpus_wer(truth, [w["wrote"] for w in written]), 4),
                              "chain_wer": round(corpus_wer(truth, chained), 4)}))  # fmt: skip
            for q, h, a in zip(questions, heard, chained):
                print(f"  {q!r}\n    heard: {h!r}\n    chain: {a!r}")


if __name__ == "__main__":
    main()
