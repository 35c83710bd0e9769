"""Decoder A/B on intelligibility alone: several token -> mel decoders over the same tokens, voices and vocoder,
scored by one deterministic Whisper (temperature 0, no fallback: the same audio always gives the same transcript,
so a difference between decoders is the decoders'). Also the share of tokens that the tokenizer reads back from
each decoder's mel (re-tokenisation agreement). Faster than benchmarks/codec.py, which adds DNSMOS, speaker
similarity, Griffin-Lim and timing.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/codec_ab.py v4=src/vivavoce/checkpoints/codec-lite-16k/decoder.safetensors \
        v5=runs/codec/decoder-v5/model.safetensors [--sets cache/codec-data:test cache/codec-extra:test] [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("decoders", nargs="+", help="NAME=PATH of decoder checkpoints over the shipped tokenizer")
    ap.add_argument("--sets", nargs="+", default=["cache/codec-data:test", "cache/codec-extra:test"],
                    help="CACHE_DIR:SPLIT: the manifest CACHE_DIR/SPLIT.jsonl, features cached in CACHE_DIR")
    ap.add_argument("--checkpoints", default=None, help="codec folder for the tokenizer and vocoder (shipped)")
    ap.add_argument("--ref", choices=["same", "other"], default="same",
                    help="voice reference: the clip itself, or another clip of its speaker (as cloning would)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from vivavoce.codec import Codec
    from vivavoce.codec.checkpoint import load_model
    from vivavoce.codec.decoder import Decoder, DecoderConfig, control_vector
    from vivavoce.eval.intelligibility import corpus_wer
    from vivavoce.speechtools.asr import WhisperASR
    from vivavoce.train.features import load_items

    codec = Codec.load(args.checkpoints)
    decoders = {}
    for spec in args.decoders:
        name, _, path = spec.partition("=")
        decoders[name] = load_model(path, Decoder, DecoderConfig, "decoder")
    asr = WhisperASR(threads=1, temperature=0.0)
    texts: dict[str, list[str]] = {}
    hyps: dict[str, dict[str, list[str]]] = {}
    agree: dict[str, list[float]] = {name: [] for name in decoders}
    for spec in args.sets:
        cache, _, split = spec.partition(":")
        items = load_items(Path(cache) / f"{split}.jsonl", cache, progress=False)
        texts[spec] = [it.text for it in items]
        hyps[spec] = {"original": [asr.transcribe(it.audio) for it in items]}
        tokens = [codec.encode(it.audio) for it in items]
        refs = items if args.ref == "same" else [
            next(o for o in items if o.speaker == it.speaker and o.id != it.id) for it in items]
        voices = [codec.speaker(r.audio) for r in refs]
        for name, dec in decoders.items():
            out = []
            for ids, voice in zip(tokens, voices):
                with torch.inference_mode():  # Codec.decode's steps, keeping the mel for the read-back
                    mel = dec(torch.from_numpy(ids)[None], voice[None], control_vector()[None])
                    out.append(asr.transcribe(codec.vocoder(mel)[0].numpy()))
                    back = codec.tokenizer.encode(mel)[2][0].numpy()  # the same codes, read from this mel?
                n = min(len(back), len(ids))
                agree[name].append(float(np.mean(back[:n] == ids[:n])))
            hyps[spec][name] = out
        print(spec, {k: round(corpus_wer(texts[spec], v), 3) for k, v in hyps[spec].items()}, flush=True)
    systems = ["original", *decoders]
    report = {"clips": sum(len(t) for t in texts.values()), "asr": "whisper tiny.en, temperature 0, no fallback",
              "voice_ref": args.ref,
              "per_set": {s: {k: round(corpus_wer(texts[s], hyps[s][k]), 3) for k in systems} for s in texts}}
    all_refs = [t for s in texts for t in texts[s]]
    report["all"] = {k: round(corpus_wer(all_refs, [h for s in texts for h in hyps[s][k]]), 3) for k in systems}
    report["ratio_to_original"] = {k: round(report["all"][k] / max(report["all"]["original"], 1e-9), 3) for k in decoders}
    report["retoken_agreement"] = {k: round(float(np.mean(v)), 3) for k, v in agree.items()}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
