"""How well does heard speech without audio (train/lm_synth.py) say new text? Whisper on the codes' resynthesis.

The hearing benchmark's 40 held-out questions (`benchmarks/data/hearing-heldout.txt`, never said in training) are
said as codes by a fitted synthesiser (`--work`: the folder `python -m vivavoce.train.lm_synth` wrote) in each train
voice in turn, with its timing drawn from the voice's measured phone lengths, at each `--temperature` (0: argmax);
the codec decodes them and Whisper tiny.en transcribes. Beside them: the same texts' recordings in the held-out
voices (the hearing benchmark's cache) encoded and decoded by the codec, the ceiling a real utterance's codes give.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/synth_heard.py --work /work/r27 \
        --cache /work/cache-hearing [--temperature 0 0.4 0.7] [--json reports/synth-heard.json]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder with synth.safetensors and durations.json")
    ap.add_argument("--cache", default=None, help="the hearing benchmark's rendering cache (for the codec ceiling)")
    ap.add_argument("--texts", default=str(HERE / "data" / "hearing-heldout.txt"))
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.0, 0.4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vivavoce.audio.io import read_audio
    from vivavoce.codec import Codec
    from vivavoce.eval.intelligibility import corpus_wer
    from vivavoce.model.spelling import Phonemizer
    from vivavoce.speechtools.asr import WhisperASR
    from vivavoce.train.lm_synth import load_synth, phone_units

    codec, phonemizer, asr = Codec.load(), Phonemizer(), WhisperASR(threads=args.threads)
    found = load_synth(args.work, codec.tokenizer.codebook_size)
    if found is None:
        raise SystemExit(f"{args.work}: no fitted synthesiser (write one with `python -m vivavoce.train.lm_synth`)")
    model, durations = found
    voices = model.voices
    texts = [t.strip() for t in Path(args.texts).read_text().splitlines() if t.strip() and not t.startswith("#")]
    recordings = sorted(Path(args.cache).glob("*/*.wav")) if args.cache else []
    if recordings:  # any clip: it sets the decoder's timbre only
        ref = read_audio(recordings[0], 16000)
    else:  # the assistant's d-vector, as the shipped speech LM checkpoint records it
        import numpy as np

        from vivavoce.model.speechlm import checkpoint_metadata

        shipped = HERE.parent / "src/vivavoce/checkpoints/speechlm/speechlm.safetensors"
        ref = np.asarray(checkpoint_metadata(shipped)["voice_dvector"], dtype=np.float32)

    hyps: dict[str, list[str]] = defaultdict(list)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for i, text in enumerate(texts):
        units = phone_units(text, phonemizer)
        voice = voices[i % len(voices)]
        starts, n = durations.draw(voice, units, rng)
        for t in args.temperature:
            codes = model.say(units, starts, n, voice, t, gen)
            hyps[f"synth T{t:g}"].append(asr.transcribe(codec.decode(codes, ref)))
        print(f"{text!r} -> {hyps[f'synth T{args.temperature[0]:g}'][-1]!r}", flush=True)
    result = {"texts": len(texts), **{k: round(corpus_wer(texts, v), 3) for k, v in hyps.items()}}
    if recordings:  # the same texts' recordings (held-out voices), their codes decoded: what real codes keep
        import hashlib

        by_hash = {p.stem: p for p in recordings}
        refs, back = [], []
        for text in texts:
            path = by_hash.get(hashlib.sha1(text.encode()).hexdigest()[:12])
            if path is not None:
                audio = read_audio(path, 16000)
                refs.append(text)
                back.append(asr.transcribe(codec.decode(codec.encode(audio), audio)))
        result["recordings' codes"] = round(corpus_wer(refs, back), 3)
    print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
