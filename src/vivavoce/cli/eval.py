"""`vivavoce eval`: score audio files, or run an engine over the built-in spoken prompts and score its answers."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="WER/CER, DNSMOS, speaker similarity, F0 and rate of audio files, or of an engine's answers",
        description="Give audio files (with --text references), or --engine to answer the built-in prompts.",
    )
    p.add_argument("files", nargs="*", help="audio files to score")
    p.add_argument("--text", action="append", default=[], help="reference text, once per file, in order")
    p.add_argument("--engine", help="run this engine over the built-in spoken prompts (e.g. cascade)")
    p.add_argument("--prompt-voice", choices=("piper", "espeak"), default="piper", help="voice of the prompts")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--speaker-ref", help="reference clip for speaker similarity")
    p.add_argument("--no-sphinx", action="store_true", help="skip the pocketsphinx second opinion")
    p.add_argument("--json", default="reports/eval.json", help="where to write the JSON report")
    p.add_argument("--plots", nargs="?", const="reports/plots", default=None, help="write PNG plots (to DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import soundfile as sf

    from vivavoce.audio import AudioLimits, read_audio
    from vivavoce.errors import VivavoceError
    from vivavoce.eval.report import Evaluator, format_table, plot, summarize, write_json

    if not args.files and not args.engine:
        raise VivavoceError("give audio files to score, or --engine NAME")
    if args.files and args.engine:
        raise VivavoceError("give audio files or --engine, not both")
    if args.text and len(args.text) != len(args.files):
        raise VivavoceError(f"{len(args.text)} --text references for {len(args.files)} files: give one per file")
    # Read every input before loading any model: a bad file fails fast, in one line.
    inputs = []
    for path in args.files:
        rate = sf.info(path).samplerate if Path(path).is_file() else 16000
        inputs.append((path, read_audio(path, rate, AudioLimits(max_seconds=600)), rate))
    ref = None
    if args.speaker_ref:
        ref = (read_audio(args.speaker_ref, 16000), 16000)

    evaluator = Evaluator(sphinx=not args.no_sphinx, speaker_ref=ref)
    if args.engine:
        from vivavoce.engine.registry import load_engine
        from vivavoce.eval.engine_run import evaluate_engine
        from vivavoce.eval.prompts import PROMPTS

        prompts = PROMPTS[: args.limit] if args.limit else PROMPTS
        items = evaluate_engine(load_engine(args.engine), evaluator, prompts, args.prompt_voice, args.plots)
    else:
        items = []
        for n, (path, audio, rate) in enumerate(inputs):
            reference = args.text[n] if args.text else None
            items.append(evaluator.score(Path(path).name, audio, rate, reference=reference))
            if args.plots:
                plot(audio, rate, Path(args.plots) / f"{Path(path).stem}.png", title=Path(path).name)
    summary = summarize(items)
    print(format_table(items, summary))
    out = write_json(args.json, items, summary, {"engine": args.engine, "prompt_voice": args.prompt_voice})
    print(f"report: {out}")
    return 0
