"""`vivavoce codec resynth IN.wav -o OUT.wav [--voice REF.wav] [--speed 1.3]`: encode to tokens and decode back."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("codec", help="speech codec tools")
    csub = p.add_subparsers(dest="codec_command", required=True, metavar="ACTION")
    r = csub.add_parser("resynth", help="tokenize speech and decode it again (optionally another voice / speed)")
    r.add_argument("input", help="speech: WAV/FLAC/OGG/MP3")
    r.add_argument("-o", "--output", default="resynth.wav", help="where to write (.wav or .flac)")
    r.add_argument("--voice", help="reference clip of the voice to speak in (default: the input's voice)")
    r.add_argument("--speed", type=float, default=1.0, help="speaking rate factor, 0.5..2.0 (>1 faster)")
    r.add_argument("--pitch", type=float, default=0.0, help="pitch shift in semitones (weakly trained)")
    r.add_argument("--checkpoints", help="directory with tokenizer/decoder/vocoder .safetensors")
    r.add_argument("--profile", default="lite-16k", choices=["lite-16k", "hq-48k"],
                   help="hq-48k: 48 kHz output (real content up to 11 kHz: it was trained on 22.05 kHz speech)")
    r.add_argument("--max-seconds", type=float, default=60.0, help="longest input accepted")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=resynth)


def resynth(args: argparse.Namespace) -> int:
    from vivavoce.audio import AudioLimits, read_audio, write_audio
    from vivavoce.codec import Codec
    from vivavoce.errors import VivavoceError

    if not 0.5 <= args.speed <= 2.0:
        raise VivavoceError(f"--speed {args.speed} is outside 0.5..2.0")
    audio = read_audio(args.input, 16000, AudioLimits(max_seconds=args.max_seconds))
    voice = read_audio(args.voice, 16000, AudioLimits(max_seconds=args.max_seconds)) if args.voice else audio
    codec = Codec.load(args.checkpoints, args.profile)
    ids = codec.encode(audio)
    out = codec.decode(ids, voice, speed=args.speed, pitch=args.pitch)
    write_audio(args.output, out, codec.sample_rate)
    result = {"input_seconds": round(audio.size / 16000, 2), "tokens": int(ids.size), "bitrate_bps": codec.bitrate,
              "output": args.output, "seconds": round(out.size / codec.sample_rate, 2)}  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{ids.size} tokens ({codec.bitrate:.0f} bit/s) -> wrote {args.output} ({result['seconds']} s)")
    return 0
