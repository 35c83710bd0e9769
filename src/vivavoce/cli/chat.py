"""`vivavoce chat IN.wav -o OUT.wav`: answer one spoken question with speech."""

from __future__ import annotations

import argparse
import json

ENGINES = ("cascade", "speechlm")
DEFAULT_ENGINE = "cascade"  # "speechlm" once its answers are good enough (the lead's call)


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="answer a spoken question (audio file) with a spoken answer")
    p.add_argument("input", help="the question: WAV/FLAC/OGG/MP3")
    p.add_argument("-o", "--output", default="answer.wav", help="where to write the answer (.wav or .flac)")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    p.add_argument("--mode", choices=("true", "guided", "text"), default=None,
                   help="speechlm only: speech-only answer (true), text-guided speech (guided, its default) or the "
                   "written answer alone (text: S→T, printed, no audio file)")
    p.add_argument("--speed", type=float, default=1.0, help="speaking rate factor (>1 faster)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longest input accepted")
    p.add_argument("--max-answer-tokens", type=int, default=60)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vivavoce.audio import AudioLimits, read_audio, write_audio
    from vivavoce.engine import INPUT_RATE, ResponseOptions, collect
    from vivavoce.engine.registry import load_engine
    from vivavoce.errors import VivavoceError

    if not 0.5 <= args.speed <= 2.0:
        raise VivavoceError(f"--speed {args.speed} is outside 0.5..2.0")
    if args.mode == "text" and args.engine != "speechlm":
        raise VivavoceError("--mode text is the speechlm engine's (the cascade always speaks)")
    audio = read_audio(args.input, INPUT_RATE, AudioLimits(max_seconds=args.max_seconds))
    engine = load_engine(args.engine)
    options = ResponseOptions(speed=args.speed, max_answer_tokens=args.max_answer_tokens, mode=args.mode)
    response = collect(engine.respond(audio, [], options))
    written_only = args.mode == "text"
    if written_only:
        if not response.text:
            raise VivavoceError(f"{args.input}: the engine wrote no answer")
        result = {"heard": response.user_text, "answer": response.text}
    else:
        if response.audio.size == 0:
            raise VivavoceError(f"{args.input}: the engine produced no spoken answer")
        write_audio(args.output, response.audio, response.rate)
        result = {
            "heard": response.user_text,
            "answer": response.text,
            "output": args.output,
            "seconds": round(response.audio.size / response.rate, 2),
            "first_audio_s": round(response.first_audio_s or 0.0, 3),
        }
    if args.json:
        print(json.dumps(result))
    else:
        if response.user_text is not None:
            print(f"heard:  {response.user_text}")
        if response.text:
            print(f"answer: {response.text}")
        if not written_only:
            print(f"wrote {args.output} ({result['seconds']} s)")
    return 0
