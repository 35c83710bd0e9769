"""Corpus-synthesis throughput: hours of speech per CPU-minute for Piper, espeak-ng and WORLD voices (neutral and
emotional), the tiny preset's build time and counts, and the planned size and build time of every preset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synthesis.py [--sentences 12] [--answers 3] [--no-build]
        [--json reports/bench-synthesis.json]

CPU time counts this process and its children (Piper runs as a persistent subprocess, so its CPU time is read
from the process itself, not from wait()). Hours of the presets are estimates: each planned utterance's words
times the measured seconds per word of its engine, with the mean answer length of the answers cache.
Run it alone on the machine: other jobs skew the wall times (CPU times much less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def cpu_seconds() -> float:
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2]) + me.cpu_times().children_user + me.cpu_times().children_system
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(renderer, voice, style, texts, vocode=False) -> dict:
    renderer.render(voice, "Warm up.", style, vocode)  # process start-up is not throughput
    c0, w0 = cpu_seconds(), time.perf_counter()
    seconds = words = 0.0
    for text in texts:
        audio, rate, _ = renderer.render(voice, text, style, vocode)
        seconds += audio.size / rate
        words += len(text.split())
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
    return {"speech_s": round(seconds, 2), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "hours_per_cpu_min": round(seconds / 3600 / (cpu / 60), 4), "rtf_cpu": round(cpu / seconds, 3),
            "s_per_word": round(seconds / words, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=12, help="sentences per engine")
    ap.add_argument("--answers", type=int, default=3, help="backbone answers to time (0: skip)")
    ap.add_argument("--no-build", action="store_true", help="skip the tiny preset build")
    ap.add_argument("--wer", default=None, metavar="DIR", help="also: Whisper tiny.en WER of a built corpus's "
                    "utterances per engine, turn and emotion (at most --wer-max of each engine)")
    ap.add_argument("--wer-max", type=int, default=40)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from vivavoce.data.answers import AnswerCache
    from vivavoce.data.corpus import PRESETS, build, default_answers_cache, plan
    from vivavoce.data.prompts import sample_turns
    from vivavoce.data.styles import NEUTRAL, Style
    from vivavoce.data.voices import Renderer, get_voice

    # Sentences of answer length, from the built-in turns (the spoken mix: questions and requests).
    texts = [t.text + " " + u.text for t, u in zip(sample_turns(args.sentences, 7), sample_turns(args.sentences, 8))]
    r = Renderer()
    engines = {
        "piper (assistant joe, neutral)": measure(r, get_voice("assistant-joe"), NEUTRAL, texts),
        "piper + WORLD emotion (joe, happy)": measure(r, get_voice("assistant-joe"), Style("happy", 0.9), texts),
        "WORLD re-timbred voice (world-high1)": measure(r, get_voice("world-high1"), NEUTRAL, texts),
        "espeak-ng (es-gb-f3, neutral)": measure(r, get_voice("es-gb-f3"), NEUTRAL, texts),
        "espeak-ng SSML emotion (es-gb-f3, sad)": measure(r, get_voice("es-gb-f3"), Style("sad", 0.9), texts),
    }
    r.close()
    for name, m in engines.items():
        print(f"{name:40s} {m['hours_per_cpu_min']:.4f} h speech / CPU-min  (CPU RTF {m['rtf_cpu']}, "
              f"{m['speech_s']} s speech in {m['cpu_s']} CPU-s, {m['wall_s']} s wall)")  # fmt: skip

    answer_s = None
    if args.answers > 0:
        from vivavoce.model.backbone import load_backbone
        from vivavoce.model.textgen import TextGenConfig, answer

        bb = load_backbone()
        t0 = time.perf_counter()
        for t in sample_turns(args.answers, 9):
            answer(bb, t.text, TextGenConfig(max_new_tokens=PRESETS["default"].max_answer_tokens))
        answer_s = (time.perf_counter() - t0) / args.answers
        print(f"backbone answer: {answer_s:.1f} s each (max {PRESETS['default'].max_answer_tokens} tokens)")
        del bb

    cache = AnswerCache(default_answers_cache())
    from vivavoce.data.normalize import speakable_answer

    lengths = [len(a.split()) for e in cache.entries.values() if (a := speakable_answer(e["raw"])[0])]
    mean_words = statistics.mean(lengths) if len(lengths) >= 10 else 25.0
    s_word = {"piper": engines["piper (assistant joe, neutral)"]["s_per_word"],
              "espeak": engines["espeak-ng (es-gb-f3, neutral)"]["s_per_word"]}  # fmt: skip
    cost = {"piper": engines["piper (assistant joe, neutral)"]["rtf_cpu"],
            "vocoded": engines["piper + WORLD emotion (joe, happy)"]["rtf_cpu"],
            "espeak": engines["espeak-ng (es-gb-f3, neutral)"]["rtf_cpu"]}  # fmt: skip
    presets = {}
    for name, preset in PRESETS.items():
        turns = sample_turns(preset.n_prompts, 0, preset.kinds)
        filler = " ".join(["word"] * round(mean_words))
        utts = plan(preset, 0, {t.text: filler for t in turns}, turns)
        from vivavoce.data.voices import get_voice as gv

        secs = cpu = 0.0
        for u in utts:
            engine = gv(u.voice).engine
            s = len(u.text.split()) * s_word["espeak" if engine == "espeak" else "piper"] / u.speed
            secs += s
            vocoded = engine == "world" or u.vocode or u.emotion != "neutral" or u.control is not None
            cpu += s * (cost["espeak"] if engine == "espeak" else cost["vocoded"] if vocoded else cost["piper"])
        presets[name] = {
            "dialogues": len(turns), "utterances": len(utts), "est_hours": round(secs / 3600, 2),
            "est_synthesis_cpu_h": round(cpu / 3600, 2),
            "est_answers_cpu_h": round(len(turns) * answer_s / 3600, 2) if answer_s else None,
            "est_flac_gb": round(secs * (22050 + 16000) * 2 * 0.6 / 1e9, 2),  # 16-bit, FLAC ~60 % of PCM
            "per_split": dict(Counter(u.split for u in utts)), "per_emotion": dict(Counter(u.emotion for u in utts)),
            "per_turn": dict(Counter(u.turn for u in utts)),
            "per_engine": dict(Counter(gv(u.voice).engine for u in utts)),
            "per_voice": dict(sorted(Counter(u.voice for u in utts).items())),
            "control_replies": sum(1 for u in utts if u.control and u.turn == "assistant"),
            "voices": len({u.voice for u in utts}),
        }  # fmt: skip
        print(f"preset {name}: {json.dumps(presets[name])}")
    print(f"(estimates use {mean_words:.1f} words per answer, from {len(lengths)} cached answers)")

    tiny = None
    if not args.no_build:
        from vivavoce.data.check import check, stats

        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = build(PRESETS["tiny"], Path(tmp) / "tiny", 0, 2, log=lambda m: None)
            wall = time.perf_counter() - t0
            st = stats(Path(tmp) / "tiny")
            ok = check(Path(tmp) / "tiny").ok
        tiny = {"wall_s": round(wall, 1), "ok": ok, "built": result["built"], "stats": st}
        print(f"tiny build (2 workers, answers cached): {wall:.1f} s wall, check ok={ok}, {json.dumps(st)}")

    intelligibility = corpus_wer(Path(args.wer), args.wer_max) if args.wer else None
    report = {"intelligibility": intelligibility, "machine": platform.platform(), "cpus": os.cpu_count(),
              "threads": torch.get_num_threads(), "engines": engines, "answer_s": answer_s, "presets": presets,
              "tiny_build": tiny}  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


def corpus_wer(root: Path, per_engine: int) -> dict:
    """Whisper tiny.en corpus WER of built utterances, grouped by engine, turn and emotion."""
    import random

    from vivavoce.audio.io import read_audio
    from vivavoce.data.corpus import read_jsonl
    from vivavoce.eval.intelligibility import corpus_wer as cwer
    from vivavoce.speechtools.asr import WhisperASR

    rows = [r for p in sorted((root / "manifests").glob("*.jsonl")) for r in read_jsonl(p)[0]]
    random.Random(0).shuffle(rows)
    chosen, seen = [], Counter()
    for r in rows:
        key = r["engine"] if r["turn"] == "user" else "assistant"
        if seen[key] < per_engine:
            seen[key] += 1
            chosen.append(r)
    asr = WhisperASR(threads=1)
    hyps = [asr.transcribe(read_audio(root / r["audio_16k"], 16000)) for r in chosen]
    out = {}
    for group in ("engine", "emotion", "turn"):
        out[group] = {}
        for k in sorted({r[group] for r in chosen}):
            pairs = [(r["text"], h) for r, h in zip(chosen, hyps) if r[group] == k]
            out[group][k] = {"n": len(pairs), "wer": round(cwer(*map(list, zip(*pairs))), 3)}
    print(f"Whisper tiny.en WER on {len(chosen)} utterances of {root}: {json.dumps(out)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
