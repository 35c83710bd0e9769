"""Benchmark of the speech LM (true and text-guided mode) beside the cascade, on the corpus's held-out questions.

For each spoken test question of a corpus built by `vivavoce data build` (test split: held-out prompts said by
held-out voices), each engine answers; Whisper tiny.en transcribes the spoken answer, which is compared with the
frozen LLM's own text answer to the same question (the corpus's assistant text: WER and keyword hit rate, keywords =
the reference's three longest content words). Also, where the engine writes a text: the spoken answer's WER against
it (does the speech say what the text says?) and its WER against the LLM's answer (text_wer: the understanding
alone). The answers run to a token limit and the references are cut to whole sentences (<= 40 words), so a right
answer that goes on is scored worse by the WER than a short wrong one (the cascade's two right sentences against
a one-sentence reference: WER 2.0): `wer_head` and `text_wer_head` count only as many words of each answer as its
reference has. `--heard-through-codec`: every engine hears the codec's resynthesis of the question, so the cascade
answers from what the speech tokens keep. DNSMOS, time to first audio after the end of the question (the question
is given whole, so this is all compute) and speech tokens per second (the codec's token rate times the seconds of
answer audio, over the compute time of the whole answer, codec decoding included).

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/speechlm.py --corpus corpus/small \
        [--checkpoint src/vivavoce/checkpoints/speechlm/speechlm.safetensors] [--codec DIR] [--threads 2] [--limit N] \
        [--engines true guided cascade] [--seed 0 1 2] [--json reports/bench-speechlm.json]

Time it alone on the machine. Several seeds: each speech LM engine answers every question once per seed; its figures
pool the seeds (12 questions sample one seed's luck: round 21 found self WER 0.62-0.78 for one checkpoint across
three seeds), and `by_seed` keeps each seed's WERs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

STOPWORDS = set("""the a an and or but of to in on at for with from by is are was were be been it its this that
these those there their they them you your i me my we our he she his her as not no yes so very can will would could
should about into than then also just more most some any all each which what when where who how why do does did has
have had""".split())


def keywords(reference: str, n: int = 3) -> tuple[str, ...]:
    words = [w for w in re.findall(r"[a-z']+", reference.lower()) if len(w) >= 4 and w not in STOPWORDS]
    return tuple(sorted(set(words), key=lambda w: (-len(w), w))[:n])


def test_questions(corpus: Path, split: str) -> list[dict]:
    """User turns of `split` (or "test,dev") with the reference answer (the dialogue's plain assistant text)."""
    from vivavoce.train.lm_data import corpus_rows

    rows = [r for r in corpus_rows(corpus) if r["split"] in split.split(",")]
    answers = {r["dialogue"]: r["text"] for r in rows if r["turn"] == "assistant" and r["id"].endswith(".a")}
    return [dict(id=r["id"], question=r["text"], voice=r["voice"], emotion=r.get("emotion"), audio=r["audio"],
                 reference=answers[r["dialogue"]])
            for r in rows if r["turn"] == "user" and r["dialogue"] in answers]  # fmt: skip


def load(engine: str, checkpoint: str | None, seed: int | None = None, codec: str | None = None,
         temperature: float | None = None):
    if engine == "cascade":
        from vivavoce.engine.registry import load_engine

        return load_engine("cascade"), None
    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig
    from vivavoce.model.generate import GenerationConfig

    generation = GenerationConfig(seed=seed)  # a seed: each answer is sampled the same way in every run
    if temperature is not None:
        generation.temperature = temperature
    config = SpeechLMEngineConfig(checkpoint=checkpoint, codec=codec, mode=engine, generation=generation)
    return SpeechLMEngine(config), engine


def run_engine(name: str, engine, mode, questions, evaluator, hear=None) -> tuple[list, dict]:
    """`hear`: audio (16 kHz) -> what the engine is given instead (None: the recording itself)."""
    from vivavoce.audio.io import read_audio
    from vivavoce.engine.base import ResponseOptions
    from vivavoce.eval import intelligibility
    from vivavoce.eval.engine_run import timed_response
    from vivavoce.eval.report import ItemResult, summarize

    items, self_refs, self_hyps, rates = [], [], [], []
    token_rate = getattr(getattr(engine, "codec", None), "token_rate", None)
    answered = 0
    for q in questions:
        audio = read_audio(q["audio"], 16000)
        if hear is not None:
            audio = hear(audio)
        options = ResponseOptions(mode=mode) if mode else ResponseOptions()
        response, compute_s = timed_response(engine, audio, options)
        label = f"{name}:{q['id']}"
        if response.audio.size < 0.3 * max(1, response.rate):  # no answer to score (e.g. E at once)
            item = ItemResult(name=label, seconds=0.0, transcript="", reference=q["reference"], wer=1.0,
                              keyword_hit=False, first_audio_s=response.first_audio_s)  # fmt: skip
        else:
            item = evaluator.score(label, response.audio, response.rate, reference=q["reference"],
                                   keywords=keywords(q["reference"]), first_audio_s=response.first_audio_s,
                                   compute_s=compute_s)  # fmt: skip
            answered += 1
            if token_rate:  # speech LM engines only
                rates.append(token_rate * response.audio.size / response.rate / compute_s)
        if response.text:
            self_refs.append(response.text)
            self_hyps.append(item.transcript)
        items.append(item)
        print(f"{label}: {item.transcript!r} (wer {item.wer:.2f}, first audio {item.first_audio_s})", flush=True)
        if response.text:
            print(f"    wrote: {response.text!r}", flush=True)
    summary = summarize(items)
    ttfa = sorted(i.first_audio_s for i in items if i.first_audio_s is not None)
    summary["first_audio_p50_s"] = ttfa[len(ttfa) // 2] if ttfa else None
    summary["self_wer"] = intelligibility.corpus_wer(self_refs, self_hyps) if self_refs else None
    if len(self_refs) == len(questions):  # the written answers against the LLM's: understanding, apart from speaking
        summary["text_wer"] = intelligibility.corpus_wer([q["reference"] for q in questions], self_refs)
        summary["text_wer_head"] = intelligibility.head_wer([q["reference"] for q in questions], self_refs)
    summary["speech_tokens_per_s"] = float(np.mean(rates)) if rates else None
    summary["answered"] = answered
    return items, summary


def read_aloud(engine, text: str, guided: bool, temperature: float | None = None,
               seed: int = 0) -> tuple[list[int], np.ndarray]:
    """The speech branch reads `text` (tts system prompt, the text as a written user turn, a fresh session on the
    reference cache): guided by the same text, given (the tts task), or as a true-mode reply (the tts_true task).
    Its codes and their audio. `temperature` None: the checkpoint's own."""
    from vivavoce.model.generate import GenerationConfig, SpeechSession

    session = SpeechSession(engine.model, engine.processor, None, mode="tts")
    session.push_text(text)
    config = GenerationConfig(mode="guided" if guided else "true", seed=seed, temperature=temperature)
    ids = [t for kind, t in session.respond(config, text=text if guided else None) if kind == "speech"]
    audio = engine.codec.decode(ids, engine._voice()) if ids else np.zeros(0, dtype=np.float32)
    return ids, audio


def run_reading(engine, questions, evaluator, guided: bool = False) -> tuple[list, dict]:
    """Diagnostic, not a mode: the speech branch reads each reference answer aloud (`read_aloud`), so its speaking
    is scored apart from its understanding."""
    from vivavoce.eval.report import summarize

    items = []
    for ref in dict.fromkeys(q["reference"] for q in questions):
        _, audio = read_aloud(engine, ref, guided)
        if audio.size < 0.3 * engine.codec.sample_rate:
            continue
        item = evaluator.score(f"read{'-guided' * guided}:{ref[:30]}", audio, engine.codec.sample_rate, reference=ref,
                               keywords=keywords(ref))  # fmt: skip
        print(f"read: {item.transcript!r} (wer {item.wer:.2f})", flush=True)
        items.append(item)
    return items, summarize(items) if items else {}


def pool_seeds(runs: list[tuple[int, list, dict]]) -> tuple[list, dict]:
    """One engine's passes over the same questions, one per seed: the items of all, their summary (a corpus WER over
    all answers is the mean of the passes' WERs, each pass having the same references), the per-pass figures
    averaged, and each seed's WERs under `by_seed`."""
    from vivavoce.eval.report import summarize

    items = [i for _, run_items, _ in runs for i in run_items]
    summary = summarize(items)
    for key in ("self_wer", "text_wer", "text_wer_head", "first_audio_p50_s", "speech_tokens_per_s"):
        values = [s[key] for _, _, s in runs if s.get(key) is not None]
        summary[key] = float(np.mean(values)) if values else None
    summary["answered"] = sum(s["answered"] for _, _, s in runs)
    per_seed = ("wer", "wer_head", "keyword_hit_rate", "self_wer", "text_wer", "text_wer_head")
    summary["by_seed"] = {str(seed): {k: s.get(k) for k in per_seed}
                          for seed, _, s in runs}  # fmt: skip
    return items, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="corpus/small")
    ap.add_argument("--split", default="test", help="corpus split(s) of the questions, e.g. test or test,dev")
    ap.add_argument("--checkpoint", default=None, help="speech LM checkpoint (default: the shipped one)")
    ap.add_argument("--codec", default=None, help="codec folder the checkpoint's tokens are of (default: the shipped one)")
    ap.add_argument("--engines", nargs="+", default=["true", "guided", "cascade"])
    ap.add_argument("--reading", action="store_true", help="also: the speech branch reads the reference answers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, nargs="+", default=None,
                    help="sample every answer from this seed, so that runs differ only by the model or codec (A/B); "
                    "several: one pass per seed, pooled")
    ap.add_argument("--temperature", type=float, default=None, help="speech sampling temperature (default: the checkpoint's own, else 0.8)")
    ap.add_argument("--heard-through-codec", action="store_true",
                    help="every engine hears the codec's resynthesis of each question (its own voice as reference): "
                    "the cascade then answers from what the speech tokens keep, an upper mark for understanding "
                    "from them")
    ap.add_argument("--json", default="reports/bench-speechlm.json")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vivavoce.eval.report import Evaluator, format_table, write_json

    questions = test_questions(Path(args.corpus), args.split)[: args.limit]
    evaluator = Evaluator(sphinx=False)
    results, all_items = {}, []
    speech_temperature = args.temperature
    seeds = args.seed or [None]
    hear = None
    if args.heard_through_codec:
        from vivavoce.audio.io import resample
        from vivavoce.codec import Codec

        codec = Codec.load(args.codec)

        def hear(audio):
            return resample(codec.resynth(audio), codec.sample_rate, 16000)
    for name in args.engines:
        t0 = time.perf_counter()
        engine, mode = load(name, args.checkpoint, seeds[0], args.codec, args.temperature)
        load_s = time.perf_counter() - t0
        if mode is not None and speech_temperature is None:
            speech_temperature = engine.model.speech_temperature
        torch.set_num_threads(args.threads)  # some loaders reset it
        runs = []
        for seed in seeds if mode else seeds[:1]:  # the cascade's answers are greedy: one pass
            if mode:  # one engine for every seed: a second one loaded beside it slowed decoding ~1.5x
                engine.config.generation = replace(engine.config.generation, seed=seed)
            label = name if len(seeds) == 1 or not mode else f"{name}@{seed}"
            runs.append((seed, *run_engine(label, engine, mode, questions, evaluator, hear)))
        items, summary = runs[0][1:] if len(runs) == 1 else pool_seeds(runs)
        summary["engine_load_s"] = load_s
        print(format_table(items, summary))
        results[name] = summary
        all_items += items
        for guided in (False, True) if args.reading and name in ("true", "guided") else ():
            key = "reading_guided" if guided else "reading"
            if key in results:
                continue
            try:
                items, summary = run_reading(engine, questions, evaluator, guided)
            except Exception as e:  # a diagnostic must not cost the main figures
                print(f"{key} diagnostic failed: {e.__class__.__name__}: {e}")
                items, summary = [], {"error": str(e)}
            results[key] = summary
            all_items += items
    keys = ("items", "answered", "wer", "wer_head", "keyword_hit_rate", "self_wer", "text_wer", "text_wer_head",
            "dnsmos_ovrl", "first_audio_s",
            "first_audio_p50_s", "speech_tokens_per_s", "seconds")  # fmt: skip
    print(f"{'':<10}" + "".join(f"{k[:12]:>13}" for k in keys))
    for name, s in results.items():
        cells = "".join(f"{'-' if s.get(k) is None else round(s[k], 3):>13}" for k in keys)
        print(f"{name:<10}{cells}")
    env = {"threads": args.threads, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "corpus": str(args.corpus), "split": args.split, "questions": len(questions),
           "checkpoint": args.checkpoint, "codec": args.codec, "temperature": args.temperature, "seeds": args.seed,
           "speech_temperature": speech_temperature, "heard_through_codec": args.heard_through_codec}  # fmt: skip
    path = write_json(args.json, all_items, {"by_engine": results}, {"environment": env})
    print("report:", path)
    print(json.dumps(results, indent=1, default=float)[:4000])


if __name__ == "__main__":
    main()
