"""`vivavoce` command line: a thin layer; each subcommand lives in its own module here.

A module in COMMANDS exposes `add_parser(subparsers)`, which registers its parser and sets `func` (args -> int).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vivavoce.errors import VivavoceError

COMMANDS = [
    "vivavoce.cli.chat",
    "vivavoce.cli.eval",
    "vivavoce.cli.codec",
    "vivavoce.cli.train",
    "vivavoce.cli.serve",
    "vivavoce.cli.data",
]


def build_parser() -> argparse.ArgumentParser:
    from vivavoce import __version__

    parser = argparse.ArgumentParser(prog="vivavoce", description="True speech-to-speech dialogue.")
    parser.add_argument("--version", action="version", version=f"vivavoce {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or 2)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.threads or int(os.environ.get("OMP_NUM_THREADS", "2")))
        return int(args.func(args) or 0)
    except VivavoceError as e:
        print(f"vivavoce: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vivavoce: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("VIVAVOCE_DEBUG"):
            raise
        print(f"vivavoce: internal error: {e.__class__.__name__}: {e} (VIVAVOCE_DEBUG=1 shows the traceback)",
              file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
