"""Benchmark of the cascaded baseline (VAD -> Whisper tiny.en -> SmolLM2 -> Piper) on the built-in prompts.

Reports per prompt and overall: time to first audio after the end of the question (the question is given
whole, so this is all compute), real-time factor, the answers' WER against the text the LLM wrote (Whisper and
pocketsphinx), keyword hit rate, DNSMOS, and peak memory.

    .venv/bin/python benchmarks/cascade.py [--prompt-voice piper|espeak] [--threads 2] [--json reports/bench-cascade.json]

Run it alone on the machine: another CPU job beside it skews every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time


def rss_mb(pid: int | None = None) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-voice", choices=("piper", "espeak"), default="piper")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default="reports/bench-cascade.json")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vivavoce.engine.cascade import CascadeEngine
    from vivavoce.eval.engine_run import evaluate_engine
    from vivavoce.eval.prompts import PROMPTS
    from vivavoce.eval.report import Evaluator, format_table, summarize, write_json

    t0 = time.perf_counter()
    engine = CascadeEngine()
    load_s = time.perf_counter() - t0
    engine_mb = rss_mb()
    evaluator = Evaluator()
    prompts = PROMPTS[: args.limit] if args.limit else PROMPTS
    items = evaluate_engine(engine, evaluator, prompts, voice=args.prompt_voice)
    summary = summarize(items)
    ttfa = sorted(i.first_audio_s for i in items if i.first_audio_s is not None)
    summary["first_audio_p50_s"] = ttfa[len(ttfa) // 2]
    summary["first_audio_p95_s"] = ttfa[min(len(ttfa) - 1, int(round(0.95 * (len(ttfa) - 1))))]
    summary["engine_load_s"] = load_s
    summary["engine_rss_mb"] = engine_mb  # engine + its Piper process, before the scoring models load
    summary["peak_rss_mb_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(format_table(items, summary))
    print(json.dumps({k: summary[k] for k in ("first_audio_p50_s", "first_audio_p95_s", "engine_load_s",
                                              "engine_rss_mb", "peak_rss_mb_this_process")}, indent=1))  # fmt: skip
    env = {"threads": args.threads, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "prompt_voice": args.prompt_voice}  # fmt: skip
    print("report:", write_json(args.json, items, summary, {"environment": env}))


if __name__ == "__main__":
    main()
