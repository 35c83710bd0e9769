"""Seconds per packed 512-position row of the speech-LM training options, fp32 vs bf16 autocast, on 1 thread.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/lm_train_speed.py --tokens cache/lm/tokens.jsonl

- shared forward: the 26 frozen shared layers, no gradient (what caching the shared states costs, once per row)
- cached step: speech branch (top 4 layers) + head forward and backward on cached shared states
- full step: the whole model forward and backward into the speech embedding (through the frozen shared layers)
Options are interleaved, rep by rep, so a change in the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="cache/lm/tokens.jsonl")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2, help="rows per step")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import IGNORE, SpeechLM
    from vivavoce.train.lm_data import build_examples, load_tokens
    from vivavoce.train.lm_recipe import pack

    bb = load_backbone()
    model = SpeechLM(bb)
    proc = SpeechLMProcessor(bb.tokenizer, model.config)
    examples = build_examples(load_tokens(args.tokens), split="train")[:400]
    rows = pack([proc.encode(e.turns, mode=e.mode) for e in examples], 512).take(slice(0, args.rows))
    tid, sid, pos, st = rows.text_ids, rows.speech_ids, rows.position_ids, rows.speech_targets
    mask = st != IGNORE

    def shared():
        with torch.no_grad():
            return model.shared_hidden(tid, sid, position_ids=pos)

    hidden = shared().detach()

    def cached():
        _, sh = model.branches_from_hidden(hidden, position_ids=pos, text=False, speech_ids=sid)
        torch.nn.functional.cross_entropy(model.speech_head(sh[mask]).float(), st[mask]).backward()

    def full():
        h = model.shared_hidden(tid, sid, position_ids=pos)
        _, sh = model.branches_from_hidden(h, position_ids=pos, text=False, speech_ids=sid)
        torch.nn.functional.cross_entropy(model.speech_head(sh[mask]).float(), st[mask]).backward()

    times: dict[str, list[float]] = {}
    for rep in range(args.reps + 1):  # rep 0 warms up
        for name, fn in (("shared forward", shared), ("cached step", cached), ("full step", full)):
            for bf16 in (False, True):
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    fn()
                model.zero_grad(set_to_none=True)
                if rep:
                    times.setdefault(f"{name} {'bf16' if bf16 else 'fp32'}", []).append(time.perf_counter() - t0)
    out = {k: round(min(v) / args.rows, 3) for k, v in times.items()}
    print(json.dumps({"seconds_per_512_row (min over reps)": out, "rows_per_step": args.rows}, indent=1))


if __name__ == "__main__":
    main()
