"""How far does one Piper take of a text agree with another, code by code? The ceiling of the speech branch's
teacher-forced code accuracy on an unseen recording: a reader that knows the text exactly still cannot know which
of Piper's takes it is scored against.

For each text (the assistant answers of a token cache), two takes in joe's voice with Piper's sampling on (the
corpus's setting) and one with it off (noise 0: every run is the same audio). Each pair is aligned by dynamic time
warping over the tokens' mean log-mel frames, and the share of tokens whose code equals the aligned token's code
is reported: sampled take against sampled take, and sampled take against the steady one.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/codec_takes.py --tokens cache/lm/tokens.jsonl \
        [--limit 16] [--codec DIR] [--json reports/codec-takes.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np


def dtw_path(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Monotone alignment of frames a (n, d) and b (m, d) minimising the summed squared distance."""
    cost = ((a[:, None] - b[None]) ** 2).sum(-1)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def agreement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[int, int]:
    """(tokens of take a whose code equals that of the first b token aligned to it, tokens of a)."""
    (ids_a, mel_a), (ids_b, mel_b) = a, b
    first: dict[int, int] = {}
    for i, j in dtw_path(mel_a, mel_b):
        first.setdefault(i, j)
    return sum(int(ids_a[i] == ids_b[j]) for i, j in first.items()), len(first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", required=True, help="token cache: its assistant answers are the texts")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--codec", default=None, help="codec checkpoint folder (default: the shipped lite-16k)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vivavoce.audio.io import resample
    from vivavoce.codec import Codec
    from vivavoce.codec.mel import log_mel
    from vivavoce.speechtools.tts import PiperSettings, PiperTTS
    from vivavoce.train.lm_data import load_tokens

    codec = Codec.load(args.codec)
    per_token = codec.tokenizer.cfg.frames_per_token
    texts = sorted({r["text"] for r in load_tokens(args.tokens) if r["turn"] == "assistant"})
    texts = random.Random(0).sample(texts, min(args.limit, len(texts)))
    tts = PiperTTS()

    def take(text: str, settings: PiperSettings) -> tuple[np.ndarray, np.ndarray]:
        audio, rate = tts.synthesize(text, settings)
        audio = resample(audio, rate, 16000)
        ids = codec.encode(audio)
        mel = log_mel(audio).squeeze(0).T.numpy()  # (frames, mels)
        mel = np.pad(mel, ((0, max(0, len(ids) * per_token - len(mel))), (0, 0)), mode="edge")
        return ids, mel[: len(ids) * per_token].reshape(len(ids), per_token, -1).mean(1)

    pairs = {"sampled_vs_sampled": [0, 0], "sampled_vs_steady": [0, 0]}
    for text in texts:
        first, second = take(text, PiperSettings()), take(text, PiperSettings())
        one_take = take(text, PiperSettings().steady())
        for name, other in (("sampled_vs_sampled", second), ("sampled_vs_steady", one_take)):
            same, n = agreement(first, other)
            pairs[name][0] += same
            pairs[name][1] += n
        print(f"{len(first[0])} codes: {text[:60]!r}", flush=True)
    results = {name: {"codes": n, "agreement": same / max(n, 1)} for name, (same, n) in pairs.items()}
    print(json.dumps(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"texts": len(texts), "results": results}, indent=1))


if __name__ == "__main__":
    main()
