"""Decode speed (tokens/s, one token per step after a prompt) of SmolLM2-135M and the speech LM on this CPU.

Rows, all in one run and on the same thread count:
  - transformers `generate` (greedy, KV cache), fp32 and bf16;
  - our lean loop (`vivavoce.model.fastdecode`) on the plain backbone, fp32 / bf16 / int8, with the text head;
  - speech-token decode of the split speech LM (random-init speech parts: speed does not depend on training):
    "true" = shared layers + speech branch + speech head (text branch skipped, as the engine does for one turn);
    "both" = both branches per step plus the speech head; "guided" = both branches and both heads;
    with `--adapter-rank R [--adapter-scope speech|heard]`, the same speech rows with speech-gated adapters of
    rank R on the shared layers;
  - llama.cpp (llama-cpp-python, built from source) on the same GGUF, its own decode timer.

    PYTHONPATH=src python benchmarks/decode.py [--threads 2] [--tokens 64] [--json reports/bench-decode.json]

Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

PROMPT = "What is the capital of France? Answer in one short sentence."


def timed(fn, tokens: int, repeats: int) -> float:
    """Best tokens/s over `repeats` runs of fn(tokens) (the best run is the least disturbed by other jobs)."""
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        fn(tokens)
        best = max(best, tokens / (time.perf_counter() - t))
    return best


def hf_generate(backbone, ids, dtype):
    model = backbone.model.to(dtype)
    prompt = torch.tensor([ids])

    def run(n):
        with torch.inference_mode():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=2)

    # generate's time includes the prompt: subtract a 1-token run to leave the per-token decode.
    def rate(tokens, repeats):
        t1 = min(_seconds(lambda: run(1)) for _ in range(repeats))
        tn = min(_seconds(lambda: run(tokens)) for _ in range(repeats))
        return (tokens - 1) / (tn - t1)

    return rate


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def lean_text(backbone, ids, dtype):
    from vivavoce.model.fastdecode import FastDecodeConfig, FastDecoder

    dec = FastDecoder.for_backbone(backbone, FastDecodeConfig(dtype, max_len=1024))
    dec.step(ids)
    start = dec.length

    def run(n):
        dec.truncate(start)
        tok = 504
        for _ in range(n):
            tl, _ = dec.step([tok], want_speech=False)
            tok = int(tl.argmax())

    return run


def lean_speech(model, proc, dtype, variant):
    from vivavoce.model.fastdecode import FastDecodeConfig, FastDecoder
    from vivavoce.model.processor import ChatTurn

    dec = FastDecoder.for_speechlm(model, FastDecodeConfig(dtype, max_len=1024))
    grid = proc.encode([ChatTurn("user", speech=list(range(100, 140)))], "s2s", add_generation_prompt=True)
    dec.step(grid.text_ids, grid.speech_ids, heard=[s >= 0 for s in grid.speech_ids])  # the user's codes
    start = dec.length

    def run(n):
        dec.truncate(start)
        code = 5
        for _ in range(n):
            tl, sl = dec.step([-1], [code], want_text=variant == "guided", text_branch=variant != "true",
                              heard=[False])  # fmt: skip
            code = int(sl[: model.config.sos].argmax())

    return run


def llama_cpp(gguf: Path, threads: int):
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False)
    ids = llm.tokenize(PROMPT.encode())

    def rate(tokens, repeats):
        best = 0.0
        for _ in range(repeats):
            llm.reset()
            llm.eval(ids)
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
            t = time.perf_counter()
            for _ in range(tokens):
                llm.eval([tok])
                tok = int(llm.scores[llm.n_tokens - 1].argmax())
            best = max(best, tokens / (time.perf_counter() - t))
        return best

    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated row prefixes to skip (hf,lean,speech,llama.cpp)")
    ap.add_argument("--adapter-rank", type=int, default=0, help="also speech rows with adapters of this rank")
    ap.add_argument("--adapter-scope", default="speech", choices=["speech", "heard"],
                    help="where they act: every code, or the user's only (then the reply's steps skip them)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vivavoce.model.backbone import load_backbone, smollm2_gguf
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import SpeechLM, SpeechLMConfig

    skip = tuple(s for s in args.skip.split(",") if s)
    backbone = load_backbone()
    ids = backbone.chat_ids([{"role": "user", "content": PROMPT}])
    model = SpeechLM(backbone).eval()
    proc = SpeechLMProcessor(backbone.tokenizer, model.config)
    rows: list[tuple[str, float]] = []

    def add(name, rate):
        if name.startswith(skip):
            return
        try:
            value = rate()
        except Exception as e:  # a missing optional row (llama.cpp not built) must not lose the others
            print(f"{name:40s} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return
        rows.append((name, value))
        print(f"{name:40s} {value:7.1f} tok/s", flush=True)

    add("llama.cpp (GGUF)", lambda: llama_cpp(smollm2_gguf(), args.threads)(args.tokens, args.repeats))
    for dtype in ("float32", "bfloat16", "int8"):
        add(f"lean text {dtype}", lambda: timed(lean_text(backbone, ids, dtype), args.tokens, args.repeats))
    for dtype in ("float32", "bfloat16", "int8"):
        for variant in ("true", "both", "guided"):
            add(f"speech {variant} {dtype}",
                lambda: timed(lean_speech(model, proc, dtype, variant), args.tokens, args.repeats))  # fmt: skip
    if args.adapter_rank:
        adapted = SpeechLM(backbone, SpeechLMConfig(speech_adapter_rank=args.adapter_rank,
                                                    speech_adapter_scope=args.adapter_scope)).eval()
        for dtype in ("bfloat16", "int8"):
            for variant in ("true", "guided"):
                add(f"speech {variant} {dtype} adapters r{args.adapter_rank} {args.adapter_scope}",
                    lambda: timed(lean_speech(adapted, proc, dtype, variant), args.tokens, args.repeats))  # fmt: skip
    for name, dtype in (("hf generate float32", torch.float32), ("hf generate bfloat16", torch.bfloat16)):
        add(name, lambda: hf_generate(backbone, ids, dtype)(args.tokens, args.repeats))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"threads": args.threads, "tokens": args.tokens,
                                               "tok_per_s": dict(rows)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
