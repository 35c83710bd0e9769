"""Does the speech LM's text branch hear words it was not trained on? Transcripts of new held-out questions.

The end-to-end benchmark's held-out questions are 6 distinct texts (the question bank holds 3,102 and training
uses the rest), too few to tell two checkpoints' hearing apart. This one speaks the questions of a text file
(default `benchmarks/data/hearing-heldout.txt`: 40 questions in the bank's phrasing with slot words chosen afresh,
none in the bank) in the held-out user voices (`data/voices.py`, split "test"), `--voices-per-text` of them per
question in turn, and scores what each checkpoint's text branch writes under the asr prompt
(`generate.written_reply`, greedy), beside Whisper tiny.en on the same audio (the ceiling) and on the codec's
resynthesis (what the codes keep); `--encoder` scores hearing encoders' own best paths (round 26). With `--tokens`
(the training token cache), word recall (reference words found anywhere in the transcript) is split by how many
training utterances say the word: never, 1-9, 10-99, 100 or more.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_hearing.py \
        [--checkpoint CKPT ...] [--tokens /work/data/tokens-u.jsonl] [--json reports/hearing.json]

The renderings are cached (`--cache`, keyed by voice and text), so checkpoints compared in later runs hear the
same audio. Needs piper-tts and espeak-ng (the held-out voices are both).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def questions(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def spoken(texts: list[str], per_text: int, cache: Path) -> list[dict]:
    """Each text in `per_text` held-out voices (in turn over the voices), as 16 kHz audio cached under `cache`."""
    import numpy as np

    from vivavoce.audio.io import read_audio, resample, write_audio
    from vivavoce.data.styles import Style
    from vivavoce.data.voices import Renderer, user_voices

    voices = user_voices("test")
    renderer = None
    out = []
    try:
        for i, text in enumerate(texts):
            for j in range(per_text):
                voice = voices[(i * per_text + j) % len(voices)]
                path = cache / voice.name / f"{hashlib.sha1(text.encode()).hexdigest()[:12]}.wav"
                if not path.is_file():
                    renderer = renderer or Renderer()
                    audio, rate, _ = renderer.render(voice, text, Style())
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_audio(path, resample(np.asarray(audio, np.float32), rate, 16000), 16000)
                out.append({"text": text, "voice": voice.name, "audio": read_audio(path, 16000)})
    finally:
        if renderer is not None:
            renderer.close()
    return out


def training_words(tokens: Path) -> collections.Counter:
    """How many training utterances of the token cache say each word (normalised as the WER normalises)."""
    from vivavoce.textnorm import normalize_for_wer
    from vivavoce.train.lm_data import load_tokens

    counts: collections.Counter = collections.Counter()
    for row in load_tokens(tokens):
        if row["split"] == "train":
            counts.update(set(normalize_for_wer(row.get("text", "")).split()))
    return counts


# Word recall by how many training utterances say the word: hearing that only recalls frequent words grows down
# the buckets, hearing that reads the sounds is level across them.
BUCKETS = (("unseen", 0, 0), ("seen_1_9", 1, 9), ("seen_10_99", 10, 99), ("seen_100_up", 100, None))


def scores(refs: list[str], hyps: list[str], seen: collections.Counter | None) -> dict:
    from vivavoce.eval import intelligibility
    from vivavoce.textnorm import normalize_for_wer

    out = {"wer": round(intelligibility.corpus_wer(refs, hyps), 4)}
    found, total = intelligibility.word_recall(refs, hyps)
    out["word_recall"] = round(found / max(1, total), 4)
    if seen is not None:
        words = {w for r in refs for w in normalize_for_wer(r).split()}
        for name, lo, hi in BUCKETS:
            only = {w for w in words if seen[w] >= lo and (hi is None or seen[w] <= hi)}
            found, total = intelligibility.word_recall(refs, hyps, only)
            out[f"recall_{name}"] = f"{found / max(1, total):.3f} of {total}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", default=str(HERE / "data" / "hearing-heldout.txt"))
    ap.add_argument("--voices-per-text", type=int, default=2, help="held-out voices saying each question")
    ap.add_argument("--checkpoint", nargs="*", default=[None],
                    help="speech LM checkpoints (default: the shipped one; none given: none)")
    ap.add_argument("--encoder", nargs="*", default=[], help="hearing encoders (`vivavoce train hearing`): their own "
                    "best paths scored too, what each can carry to the LLM")
    ap.add_argument("--tokens", default=None, help="training token cache: word recall by how often training says each word")
    ap.add_argument("--cache", default="cache/hearing", help="folder of the rendered questions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vivavoce.audio.io import resample
    from vivavoce.audio.vad import trim_to_speech
    from vivavoce.codec import Codec
    from vivavoce.engine.speechlm import default_checkpoint
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.generate import SpeechSession, written_reply
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import SpeechLM
    from vivavoce.speechtools.asr import WhisperASR

    items = spoken(questions(Path(args.texts)), args.voices_per_text, Path(args.cache))
    seen = training_words(Path(args.tokens)) if args.tokens else None
    codec, whisper = Codec.load(), WhisperASR(temperature=0.0)
    refs = [it["text"] for it in items]
    for it in items:
        audio = trim_to_speech(it["audio"])
        it["ids"] = codec.encode(audio).tolist()
        it["whisper"] = whisper.transcribe(audio)
        it["whisper_codes"] = whisper.transcribe(resample(codec.decode(it["ids"], audio), codec.sample_rate, 16000))
    report = {"questions": len(set(refs)), "utterances": len(items),
              "whisper": scores(refs, [it["whisper"] for it in items], seen),
              "whisper_codes": scores(refs, [it["whisper_codes"] for it in items], seen), "checkpoints": {}}  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "checkpoints"}), flush=True)
    backbone = load_backbone()
    for path in args.encoder:
        from vivavoce.train.hearing import load_encoder

        encoder = load_encoder(path, backbone.embed.weight)
        heard = [backbone.tokenizer.decode(encoder.greedy(torch.tensor(it["ids"]))).strip() for it in items]
        report.setdefault("encoders", {})[path] = {**scores(refs, heard, seen), "heard": heard}
        print(path, json.dumps({k: v for k, v in report["encoders"][path].items() if k != "heard"}), flush=True)
    for path in args.checkpoint:
        path = path or str(default_checkpoint())
        model = SpeechLM.load(path, backbone).eval()
        session = SpeechSession(model, SpeechLMProcessor(backbone.tokenizer, model.config), mode="asr")
        with torch.no_grad():
            heard = [written_reply(session, it["ids"], 40) for it in items]
        for it, h in zip(items, heard):
            print(f"  [{it['voice']}] {it['text']!r} -> {h!r}")
        report["checkpoints"][path] = scores(refs, heard, seen)
        report["checkpoints"][path]["heard"] = heard
        print(path, json.dumps({k: v for k, v in report["checkpoints"][path].items() if k != "heard"}), flush=True)
    if args.json:
        rows = [{k: it[k] for k in ("text", "voice", "whisper", "whisper_codes")} for it in items]
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**report, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
