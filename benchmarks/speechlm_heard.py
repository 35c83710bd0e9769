"""What the text branch makes of the end-to-end benchmark's spoken questions, in writing (text mode, no speech):
the transcript it writes under the asr prompt (scored against the question), its direct written answer (S→T,
scored against the corpus answer) and the chain of modality (SpeechGPT's: the frozen LLM answers the transcript),
beside the cascade's text (the frozen LLM answering Whisper's transcript). Answers are scored by WER, head WER
(each answer cut to its reference's length, `intelligibility.head_wer`) and keyword hits, as in
`benchmarks/speechlm.py`; the speech branch is not involved, so this separates hearing from speaking.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/speechlm_heard.py --corpus corpus/small \
        --split test,dev [--checkpoint CKPT] [--json reports/heard.json]

Round 22 (docs/speechlm-training.md): the shipped checkpoint hears the 12 questions at WER 0.68 (Whisper: 0.08),
and answering its transcript scores no better than its direct answer (head WER 0.96 against 0.93; Whisper's
transcript: 0.60).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="corpus/small")
    ap.add_argument("--split", default="test,dev")
    ap.add_argument("--checkpoint", default=None, help="speech LM checkpoint (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from speechlm import keywords, test_questions

    from vivavoce.audio.io import read_audio
    from vivavoce.audio.vad import trim_to_speech
    from vivavoce.codec import Codec
    from vivavoce.engine.speechlm import default_checkpoint
    from vivavoce.eval import intelligibility
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.generate import SpeechSession, written_reply
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import SpeechLM
    from vivavoce.model.textgen import TextGenConfig, answer
    from vivavoce.speechtools.asr import WhisperASR

    questions = test_questions(Path(args.corpus), args.split)
    backbone = load_backbone()
    model = SpeechLM.load(args.checkpoint or str(default_checkpoint()), backbone).eval()
    proc = SpeechLMProcessor(backbone.tokenizer, model.config)
    sessions = {mode: SpeechSession(model, proc, mode=mode) for mode in ("asr", "s2t")}
    codec, whisper = Codec.load(), WhisperASR()
    rows = []
    for q in questions:
        audio = trim_to_speech(read_audio(q["audio"], 16000))
        ids = codec.encode(audio).tolist()
        heard = written_reply(sessions["asr"], ids, 40)
        whisper_heard = whisper.transcribe(audio)
        row = dict(id=q["id"], question=q["question"], reference=q["reference"], heard=heard,
                   whisper=whisper_heard, direct=written_reply(sessions["s2t"], ids, 60),
                   chain=answer(backbone, heard, TextGenConfig()),
                   cascade=answer(backbone, whisper_heard, TextGenConfig()))  # fmt: skip
        rows.append(row)
        print(f"{q['id']}: {q['question']!r}\n    heard: {heard!r}\n    direct: {row['direct'][:100]!r}", flush=True)
    refs = [r["reference"] for r in rows]
    summary = {
        "questions": len(rows),
        "heard_wer": intelligibility.corpus_wer([r["question"] for r in rows], [r["heard"] for r in rows]),
        "whisper_wer": intelligibility.corpus_wer([r["question"] for r in rows], [r["whisper"] for r in rows]),
    }
    for key in ("direct", "chain", "cascade"):
        hyps = [r[key] for r in rows]
        hits = [intelligibility.keyword_hit(list(keywords(r["reference"])), r[key]) for r in rows]
        summary[key] = {"wer": intelligibility.corpus_wer(refs, hyps), "wer_head": intelligibility.head_wer(refs, hyps),
                        "keyword_hit_rate": sum(hits) / len(hits)}  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows,
                                               "checkpoint": args.checkpoint}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
