"""`vivavoce data build|check|stats`: synthesise the spoken-dialogue corpus and audit it."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="build and check the synthetic spoken-dialogue corpus")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    b = dsub.add_parser("build", help="synthesise a corpus (resumes an interrupted build in the same folder)")
    b.add_argument("--preset", default="tiny", help="tiny | small | default")
    b.add_argument("--out", required=True, help="corpus folder")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=2, help="synthesis processes (each uses one thread)")
    b.add_argument("--shard", default="0/1", help="I/N: build the I-th of N disjoint parts (0-based)")
    b.add_argument("--answers-cache", default=None, help="JSONL cache of backbone answers "
                   "(default: $VIVAVOCE_CACHE/data/answers-TEXTVERSION.jsonl)")  # fmt: skip
    b.set_defaults(func=run_build)
    c = dsub.add_parser("check", help="report missing, corrupt or mislabelled items (exit 1 if any)")
    c.add_argument("dir")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--no-audio", action="store_true", help="check manifests and labels only, do not read audio")
    c.add_argument("--max-lines", type=int, default=50, help="problem lines shown per category")
    c.set_defaults(func=run_check)
    s = dsub.add_parser("stats", help="hours and counts per split, voice, emotion")
    s.add_argument("dir")
    s.set_defaults(func=run_stats)


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vivavoce.data.corpus import PRESETS, build, parse_shard
    from vivavoce.errors import VivavoceError

    if args.preset not in PRESETS:
        raise VivavoceError(f"unknown preset {args.preset!r} (choose from {', '.join(PRESETS)})")
    if args.workers < 1:
        raise VivavoceError("--workers must be at least 1")
    cache = Path(args.answers_cache) if args.answers_cache else None
    result = build(PRESETS[args.preset], Path(args.out), args.seed, args.workers, parse_shard(args.shard), cache,
                   log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    print(f"built {result['built']}/{result['planned']} utterances in {args.out}")
    for line in result["errors"][:20]:
        print(f"  error: {line}", file=sys.stderr)
    if result["errors"]:
        print(f"{len(result['errors'])} utterances failed (listed in {args.out}/errors-*.txt); rerun to retry",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def run_check(args: argparse.Namespace) -> int:
    from vivavoce.data.check import check

    report = check(args.dir, read_audio_files=not args.no_audio)
    for category, lines in report.problems.items():
        for line in lines[: args.max_lines]:
            print(f"{category}: {line}")
        if len(lines) > args.max_lines:
            print(f"{category}: ... and {len(lines) - args.max_lines} more")
    if args.json:
        print(json.dumps(report.summary()))
    else:
        for note in report.notes:
            print(f"note: {note}")
        counts = ", ".join(f"{len(v)} {k}" for k, v in report.problems.items() if v) or "no problems"
        print(f"{args.dir}: {report.rows}/{report.planned} utterances, {counts}")
    return 0 if report.ok else 1


def run_stats(args: argparse.Namespace) -> int:
    from vivavoce.data.check import stats

    print(json.dumps(stats(args.dir), indent=1))
    return 0
